"""The URL semantics of docs/pipeline.md, case by case."""

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
     "http://localhost/x", "http://co.uk/", "https://x.com:99999/"],
)
def test_links_that_are_not_kept(url):
    assert normalize_url(url, BASE) is None


def test_host_and_domain_come_back_with_the_url():
    assert normalize_url("https://Shop.ACME-steel.co.uk:443/a#b") == (
        "https://shop.acme-steel.co.uk/a",
        "shop.acme-steel.co.uk",
        "acme-steel.co.uk",
    )


# The link rules of an HTML attribute value (docs/pipeline.md), one test per rule. Each
# case goes through both public paths: PageLinks (the hot loop) and normalize_url.
def _resolved(link, base=BASE):
    from jobs.common.urls import PageLinks

    by_page = PageLinks(base).resolve(link)
    assert by_page == normalize_url(link, base), link
    return by_page[0] if by_page else None


@pytest.mark.parametrize("link", ["", " ", "\t", "\r\n", "#", "#frag"])
def test_an_empty_or_blank_link_is_the_page_itself(link):
    assert _resolved(link) == "http://www.acme.com/products/steel/index.html"
    assert _resolved(link, "https://Acme.com:443/a?q=1#top") == "https://acme.com/a?q=1"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("\n/x\n", "http://www.acme.com/x"),
        ("\f \t/x \r", "http://www.acme.com/x"),
        (" https://x.com/a\t", "https://x.com/a"),
    ],
)
def test_ascii_whitespace_around_a_link_is_stripped(link, expected):
    assert _resolved(link) == expected


def test_unicode_whitespace_is_part_of_the_link():
    # NBSP is not ASCII whitespace: the link is the relative path "\u00a0/x"
    assert _resolved("\u00a0/x") == "http://www.acme.com/products/steel/\u00a0/x"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        # as written in a CC-MAIN-2014-35 WAT record
        ("/index.php?a=1&amp;b=2", "http://www.acme.com/index.php?a=1&b=2"),
        ("/p?a=1&#38;b=2", "http://www.acme.com/p?a=1&b=2"),
        ("/p?a=1&#x26;b=2", "http://www.acme.com/p?a=1&b=2"),
        ("/p?a=1&#X26;b=2", "http://www.acme.com/p?a=1&b=2"),
        ("/p?a=1&#38b=2", "http://www.acme.com/p?a=1&b=2"),  # numeric: the ";" may be missing
        ("/p?x=&notin;", "http://www.acme.com/p?x=\u2209"),
        ("/p?x=&copy", "http://www.acme.com/p?x=\u00a9"),  # legacy name at the end
        ("/p?x=&amp;amp;", "http://www.acme.com/p?x=&amp;"),  # decoded once
        ("/p?x=&copy;&amp-1", "http://www.acme.com/p?x=\u00a9&-1"),  # legacy name before "-"
        ("/p?a&amp b", "http://www.acme.com/p?a& b"),
        ("/a&sol;b", "http://www.acme.com/a/b"),
        ("&#47;x", "http://www.acme.com/x"),  # decoding comes before resolution
        ("&#32;/x", "http://www.acme.com/x"),  # ... and before stripping
    ],
)
def test_character_references_are_decoded(link, expected):
    assert _resolved(link) == expected


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("/p?a=1&copy=2", "http://www.acme.com/p?a=1&copy=2"),  # legacy name before "="
        ("/p?x&ampx", "http://www.acme.com/p?x&ampx"),  # ... before an alphanumeric
        ("/p?x=&notit;", "http://www.acme.com/p?x=&notit;"),  # "&not" before "i"
        ("/p?x=&foo;", "http://www.acme.com/p?x=&foo;"),  # no such name
        ("/p?a=1&b=2", "http://www.acme.com/p?a=1&b=2"),
        ("/p?x=&#;", "http://www.acme.com/p?x=&"),  # no digits: "#" starts the fragment
    ],
)
def test_references_an_attribute_keeps_literal(link, expected):
    assert _resolved(link) == expected


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("/p?x=&#0;", "http://www.acme.com/p?x=\ufffd"),
        ("/p?x=&#x110000;", "http://www.acme.com/p?x=\ufffd"),
        ("/p?x=&#99999999999999999999;", "http://www.acme.com/p?x=\ufffd"),
        ("/p?x=&#xD800;", "http://www.acme.com/p?x=\ufffd"),  # a surrogate
        ("/p?x=&#x80;", "http://www.acme.com/p?x=\u20ac"),  # 0x80-0x9F read as windows-1252
        ("/p?x=&#150;", "http://www.acme.com/p?x=\u2013"),
        ("/p?x=&#x81;", "http://www.acme.com/p?x=\x81"),  # windows-1252 has no 0x81
    ],
)
def test_numeric_references_the_html_parser_replaces(link, expected):
    assert _resolved(link) == expected


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        # leading C0 controls: Python 3.9 before 3.9.17 kept them and read a relative path
        ("\x01https://x.com/a", "https://x.com/a"),
        ("\x00/x\x1f", "http://www.acme.com/x"),
        # tabs and newlines inside: removed (before 3.9.5 urlsplit kept them)
        ("ht\ttp://x.com/a\nb", "http://x.com/ab"),
        ("/a\r\nb", "http://www.acme.com/ab"),
    ],
)
def test_url_preprocessing_is_the_whatwg_one_on_every_python(link, expected):
    assert _resolved(link) == expected


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        # a scheme starts with a letter: before 3.11 urlsplit read the scheme "192.0.2.7"
        ("192.0.2.7:80/a", "http://www.acme.com/products/steel/192.0.2.7:80/a"),
        ("+x:y", "http://www.acme.com/products/steel/+x:y"),
        # not an IPv6 address: 3.9 urlsplit read the host "x.com"
        ("http://[x.com]/a", None),
        # a port is ASCII digits: 3.9 urlsplit read port 80
        ("http://x.com:+80/", None),
        ("http://x.com:\u0668\u0660/", None),
    ],
)
def test_what_urllib_reads_differently_by_version_is_read_the_whatwg_way(link, expected):
    assert _resolved(link) == expected


def test_head_base_is_an_attribute_value_too():
    from jobs.common.urls import PageLinks, page_base

    base = page_base("http://www.acme.com/a/b", " /x/?s=1&amp;t=2\n")
    assert base == "http://www.acme.com/x/?s=1&t=2"
    assert PageLinks(base).resolve("c")[0] == "http://www.acme.com/x/c"
    assert page_base("http://www.acme.com/a/b", "https://static.acme.com/r/") == "https://static.acme.com/r/"


@pytest.mark.parametrize("base", [None, "", " \t"])
def test_an_absent_or_empty_base_means_the_target(base):
    from jobs.common.urls import page_base

    assert page_base("http://www.acme.com/a/b?q=1", base) == "http://www.acme.com/a/b?q=1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<http://a.com/x>", "http://a.com/x"),  # WARC 1.0
        (" <http://a.com/x> ", "http://a.com/x"),
        ("http://a.com/x", "http://a.com/x"),
        ("http://a.com/x?<b>", "http://a.com/x?<b>"),
    ],
)
def test_target_uri_drops_angle_brackets(raw, expected):
    from jobs.common.urls import target_uri

    assert target_uri(raw) == expected


def test_relative_links_on_a_page_whose_target_had_angle_brackets():
    from jobs.common.urls import PageLinks, page_base, page_domain, target_uri

    target = target_uri("<http://www.acme.com/a/b.html>")
    assert page_domain(target) == "acme.com"
    links = PageLinks(page_base(target, None))
    assert links.resolve("c.html")[0] == "http://www.acme.com/a/c.html"
    assert links.resolve("")[0] == "http://www.acme.com/a/b.html"
    bare = PageLinks(page_base(target_uri("<http://www.acme.com>"), None))
    assert bare.resolve("x")[0] == "http://www.acme.com/x"


def _corpus():
    """Links from the shipped sample plus generated awkward shapes, with the page base."""
    import itertools
    import json
    import random

    from .support import ROOT

    pairs = []
    for truth in (ROOT / "sample_data" / "ground_truth").glob("CC-MAIN-*.json"):
        for entry in json.loads(truth.read_text())["files"]:
            for rec in entry["records"]:
                for link in rec.get("links") or []:
                    if isinstance(link, dict) and isinstance(link.get("url"), str):
                        pairs.append((link["url"], rec["target_uri"]))
    rng = random.Random(5)
    schemes = ["http://", "https://", "HTTP://", "Https://", "ftp://", "//", ""]
    hosts = ["x.com", "WWW.X.Com", "x.co.uk", "x.com.", "192.0.2.7", "[::1]", "[x.com]", "u:p@x.com", "co.uk",
             "x_y.com", "",
             # hosts no browser accepts (forbidden domain code points) and a backslash ending the host
             "a b.com", "ex%41mple.com", "exa^mple.com", "exa|mple.com", "exa<mple.com", "x.com\\y", "u\\v@x.com"]
    ports = ["", ":80", ":443", ":8080", ":080", ":99999", ":", ":abc", ":+80", ":\u0668\u0660"]
    paths = ["", "/", "/a/b", "/a/./b", "/a/../b", "/a b", "/a\tb", "/ä", "/a?", "/a?q=1", "/a??", "/a?q#f", "#f", "?q",
             "/a?q=1&amp;r=2", "/a&#9;b", "&#47;a", " ", "/a;", "/a;?q",
             "?", "?#f", "/a\\b", "\\a", "/a?b\\c", "\\\\y.com\\z", "/a#b\\c"]
    bases = ["http://Www.Base.com:80/d/e/f.html", "https://base.co.uk/x/", "http://192.0.2.7/p", "http://b.com"]
    for scheme, host, port, path in itertools.product(schemes, hosts, ports, paths):
        if rng.random() < 0.3:
            pairs.append((scheme + host + port + path, rng.choice(bases)))
    relative = ["a//b", "a/./b", "a/b/", "p;x", "p?q", "p?", "p?#f", "re:x", "x:y/z", ".hidden", "a/.b", "?", "?#x",
                "#", "", "~user/x", "%41/b", "..", ".", "a/..", "a?b?c", "a#b#c", "/x", "/x/", "/x?y", "/.a",
                "/x#/..", "//x.com/y", "/x/..", " /x", "/a;p?q", "/a//b",
                # character references, whitespace and controls, empty ";params", paths that look like a scheme
                " ", "\t", "\n/x\n", " #f", "\x00/x", "\u00a0/x", "a\u00a0", "&amp;", "?a=1&amp;b=2", "/p?a&copy=2",
                "a&#38;b", "&#x26;", "x&ampx", "&notin;", "&notit;", "&copy", "&foo;", "/a&#9;b", "&#35;f", "&#47;x",
                "&#63;q", "&#x2e;&#x2e;/x", "&sol;&sol;x.com/y", "http&colon;//x.com/", "&#0;/x", "&#x80;",
                "ht\ttp://x.com/", "a;", "a;b;", "/a;?q", "&notit;?q", "+x:y", "1x:", "-x:/y",
                # empty queries, and backslashes (a slash before the query in http(s))
                "??", "?#", " ?", "&#63;", "&#63;#x", "http:?", "https:?", "http:", "https:", "p?#", "/?", "/x?#y",
                "/\\evil.com/x", "\\\\evil.com\\x", "\\x", "a\\b", "a\\..\\b", "a/.\\b", "a?b\\c", "?b\\c",
                "#b\\c", "/a?b\\c", "/a\\?b", "http:\\\\x.com\\y", "HTTPS:\\\\x.com\\y", "https:/\\x.com",
                "http://x.com\\y", "http://x.com:8080\\y", "http://a\\b@x.com/", "\\x:y", "1x:\\y", "x.com:80\\y",
                "&#92;&#92;evil.com/x", "mailto:a\\b", "//x.com\\y?z\\w"]
    bases += ["http://b.com/a;p/b;q?z=1#frag", "https://b.com/a//b/c.html", "https://b.com/a/../b/c",
              "http://u@b.com/x", "http://b.com/a&b/c?d=1&e=2", "https://b.com/d/f.html?p=1",
              "https://b.com/a\\b/c?z=1", "http://a b.com/x/", "https://exa^mple.com/p?q=1", "ftp://b.com/d/f"]
    for path in paths + relative:
        for base in bases:
            pairs.append((path, base))
    return pairs


def test_fast_paths_agree_with_the_general_path():
    from jobs.common.urls import PageLinks

    corpus = _corpus()
    assert len(corpus) > 3000
    for url, base in corpus:
        expected = normalize_url(url, base)  # the general path: urljoin + urlsplit
        links = PageLinks(base)
        assert links.resolve(url) == expected, (url, base)
        assert links.resolve(url) == expected, (url, base)  # memoised answer too


def test_page_domain_matches_registered_domain_of_the_host():
    from jobs.common.urls import host_of, page_domain

    for url, _ in _corpus():
        if "://" in url:
            assert page_domain(url) == registered_domain(host_of(url)), url


PAGE = "https://www.example.com/dir/page.html?p=1"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        # an empty query replaces the base's (RFC 3986 section 5.2.2, WHATWG); the lone "?" is dropped
        ("?", "https://www.example.com/dir/page.html"),
        ("?#x", "https://www.example.com/dir/page.html"),
        (" ?\t", "https://www.example.com/dir/page.html"),
        ("&#63;", "https://www.example.com/dir/page.html"),
        ("https:?", "https://www.example.com/dir/page.html"),  # same scheme: relative, as "?"
        ("p?", "https://www.example.com/dir/p"),
        ("?q", "https://www.example.com/dir/page.html?q"),
        ("??", "https://www.example.com/dir/page.html??"),  # the query "?" is not empty
        # a fragment alone keeps the base's query
        ("#x", "https://www.example.com/dir/page.html?p=1"),
        ("#", "https://www.example.com/dir/page.html?p=1"),
        ("", "https://www.example.com/dir/page.html?p=1"),
    ],
)
def test_an_empty_query_replaces_the_base_query(link, expected):
    assert _resolved(link, PAGE) == expected


def test_an_empty_query_as_head_base():
    from jobs.common.urls import page_base

    assert page_base(PAGE, "?") == "https://www.example.com/dir/page.html"
    assert page_base(PAGE, "#top") == PAGE + "#top"  # a fragment alone keeps the query (and is dropped later)


@pytest.mark.parametrize(
    "host",
    ["a b.com", "ex%41mple.com", "exa<mple.com", "exa>mple.com", "exa^mple.com", "exa|mple.com", "x.com\\y",
     "exa\x01mple.com", "exa\x7fmple.com", " x.com", "x.com ", "exa]mple.com", "exa[mple.com"],
)
def test_a_host_with_a_forbidden_domain_code_point_has_no_registered_domain(host):
    assert registered_domain(host) is None


@pytest.mark.parametrize(
    "link",
    ["http://a b.com/", "http://ex%41mple.com/", "http://exa<mple.com/", "http://exa>mple.com/",
     "http://exa^mple.com/x", "http://exa|mple.com/", "http://exa\x01mple.com/", "http://exa\x7fmple.com/",
     "http:// x.com/", "http://x.com /", "//a b.com/x", "http://u:p@a b.com/", "http://a b.com:8080/",
     "http://exa^mple.com?q", "http://exa|mple.com#f"],
)
def test_links_to_a_host_no_browser_accepts_are_not_kept(link):
    # a browser percent-decodes "%41" in a host ("example.com"); dropping it is the conservative choice
    assert _resolved(link) is None


def test_an_underscore_in_a_host_is_kept():
    assert _resolved("http://exa_mple.com/x") == "http://exa_mple.com/x"
    assert registered_domain("exa_mple.com") == "exa_mple.com"


def test_a_base_with_a_forbidden_host_resolves_no_link():
    from jobs.common.urls import PageLinks, page_base

    base = page_base("http://www.acme.com/a", "http://a b.com/x/")
    for link in ["c", "/c", "?c", "#c", ""]:
        assert PageLinks(base).resolve(link) is None, link
        assert normalize_url(link, base) is None, link


@pytest.mark.parametrize(
    ("url", "expected"),
    [("http://a b.com/", None), ("http://exa^mple.com/", None), ("https://www.exa_mple.com/",
                                                                  ("www.exa_mple.com", "exa_mple.com"))],
)
def test_a_seed_host_no_browser_accepts_is_invalid(url, expected):
    from jobs.common.urls import seed_host

    assert seed_host(url) == expected


def test_page_domain_of_a_target_with_a_forbidden_host():
    from jobs.common.urls import page_domain

    assert page_domain("http://a b.com/x") is None
    assert page_domain("http://exa|mple.com") is None


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("/\\evil.com/x", "https://evil.com/x"),
        ("\\\\evil.com\\x", "https://evil.com/x"),
        ("\\x", "https://www.example.com/x"),
        ("a\\b", "https://www.example.com/dir/a/b"),
        ("a\\..\\b", "https://www.example.com/dir/b"),
        ("http:\\\\x.com\\y", "http://x.com/y"),
        ("HTTPS:\\\\x.com\\y", "https://x.com/y"),
        ("http://x.com\\y", "http://x.com/y"),
        ("https://x.com\\y\\z?a\\b#c\\d", "https://x.com/y/z?a\\b"),  # in the query a backslash stays
        ("/a?b\\c", "https://www.example.com/a?b\\c"),
        ("a?b\\c", "https://www.example.com/dir/a?b\\c"),
        ("?b\\c", "https://www.example.com/dir/page.html?b\\c"),
        ("#b\\c", "https://www.example.com/dir/page.html?p=1"),
        ("http://x.com:8080\\y", "http://x.com:8080/y"),
        ("http://a\\b@x.com/", None),  # "\" ends the host "a"
        ("\\x:y", "https://www.example.com/x:y"),
        ("&#92;&#92;evil.com/x", "https://evil.com/x"),
    ],
)
def test_a_backslash_is_a_slash_before_the_query_in_http_urls(link, expected):
    assert _resolved(link, PAGE) == expected


def test_a_backslash_in_head_base():
    from jobs.common.urls import PageLinks, page_base

    base = page_base(PAGE, "\\\\static.example.com\\r\\")
    assert base == "https://static.example.com/r/"
    assert PageLinks(base).resolve("c")[0] == "https://static.example.com/r/c"
