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


def _corpus():
    """Links from the shipped sample plus generated awkward shapes, with the page base."""
    import itertools
    import json
    import random

    from conftest import ROOT

    pairs = []
    for truth in (ROOT / "sample_data" / "ground_truth").glob("CC-MAIN-*.json"):
        for entry in json.loads(truth.read_text())["files"]:
            for rec in entry["records"]:
                for link in rec.get("links") or []:
                    if isinstance(link, dict) and isinstance(link.get("url"), str):
                        pairs.append((link["url"], rec["target_uri"]))
    rng = random.Random(5)
    schemes = ["http://", "https://", "HTTP://", "Https://", "ftp://", "//", ""]
    hosts = ["x.com", "WWW.X.Com", "x.co.uk", "x.com.", "192.0.2.7", "[::1]", "u:p@x.com", "co.uk", "x_y.com", ""]
    ports = ["", ":80", ":443", ":8080", ":080", ":99999", ":", ":abc"]
    paths = ["", "/", "/a/b", "/a/./b", "/a/../b", "/a b", "/a\tb", "/ä", "/a?", "/a?q=1", "/a??", "/a?q#f", "#f", "?q"]
    bases = ["http://Www.Base.com:80/d/e/f.html", "https://base.co.uk/x/", "http://192.0.2.7/p", "http://b.com"]
    for scheme, host, port, path in itertools.product(schemes, hosts, ports, paths):
        if rng.random() < 0.3:
            pairs.append((scheme + host + port + path, rng.choice(bases)))
    relative = ["a//b", "a/./b", "a/b/", "p;x", "p?q", "p?", "p?#f", "re:x", "x:y/z", ".hidden", "a/.b", "?", "?#x",
                "#", "", "~user/x", "%41/b", "..", ".", "a/..", "a?b?c", "a#b#c", "/x", "/x/", "/x?y", "/.a",
                "/x#/..", "//x.com/y", "/x/..", " /x", "/a;p?q", "/a//b"]
    bases += ["http://b.com/a;p/b;q?z=1#frag", "https://b.com/a//b/c.html", "https://b.com/a/../b/c", "http://u@b.com/x"]
    for path in paths + relative:
        for base in bases:
            pairs.append((path, base))
    return pairs


def test_fast_paths_agree_with_the_general_path():
    from jobs.common.urls import PageLinks, _normalize_general

    corpus = _corpus()
    assert len(corpus) > 3000
    for url, base in corpus:
        expected = _normalize_general(url, base)
        assert normalize_url(url, base) == expected, (url, base)
        links = PageLinks(base)
        assert links.resolve(url) == expected, (url, base)
        assert links.resolve(url) == expected, (url, base)  # memoised answer too


def test_page_domain_matches_registered_domain_of_the_host():
    from jobs.common.urls import host_of, page_domain

    for url, _ in _corpus():
        if "://" in url:
            assert page_domain(url) == registered_domain(host_of(url)), url
