"""The URL semantics of CONTRACT.md section 5, case by case."""

from __future__ import annotations

import pytest

from jobs.common.urls import normalize_url, registered_domain


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("shop.Example.co.uk", "example.co.uk"),
        ("www.example.com", "example.com"),
        ("example.com.", "example.com"),
        ("a.b.example.com.au", "example.com.au"),
        ("x.github.io", "github.io"),  # github.io is in the PRIVATE section: ICANN only
        ("co.uk", None),  # a public suffix has no registrable domain
        ("192.0.2.7", None),
        ("[2001:db8::1]", None),
        ("2001:db8::1", None),
        ("localhost", None),
        ("", None),
        (None, None),
        ("bücher.de", "xn--bcher-kva.de"),
    ],
)
def test_registered_domain(host, expected):
    assert registered_domain(host) == expected


BASE = "http://www.acme.com/products/steel/index.html"


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("/about", BASE, "http://www.acme.com/about"),
        ("../x", BASE, "http://www.acme.com/products/x"),
        ("page.html", BASE, "http://www.acme.com/products/steel/page.html"),
        ("?q=1", BASE, "http://www.acme.com/products/steel/index.html?q=1"),
        ("//cdn.example.net/x", BASE, "http://cdn.example.net/x"),
        ("#top", BASE, "http://www.acme.com/products/steel/index.html"),
        ("https://x.com/a#frag", BASE, "https://x.com/a"),
        ("HTTP://WWW.Example.COM/Path", BASE, "http://www.example.com/Path"),
        ("http://x.com:80/", BASE, "http://x.com/"),
        ("https://x.com:443/a", BASE, "https://x.com/a"),
        ("http://x.com:443/a", BASE, "http://x.com:443/a"),
        ("https://x.com:8080/a", BASE, "https://x.com:8080/a"),
        ("  https://x.com/a  ", BASE, "https://x.com/a"),
    ],
)
def test_links_are_resolved_and_normalised(url, base, expected):
    assert normalize_url(url, base)[0] == expected


@pytest.mark.parametrize(
    "url",
    ["mailto:sales@acme.com", "javascript:void(0)", "tel:+4312345", "ftp://acme.com/f", "http://192.0.2.7/x",
     "http://localhost/x", "http://co.uk/", "https://x.com:99999/", ""],
)
def test_links_that_are_not_kept(url):
    assert normalize_url(url, BASE) is None


def test_host_and_domain_come_back_with_the_url():
    assert normalize_url("https://Shop.ACME-steel.co.uk:443/a#b") == (
        "https://shop.acme-steel.co.uk/a",
        "shop.acme-steel.co.uk",
        "acme-steel.co.uk",
    )
