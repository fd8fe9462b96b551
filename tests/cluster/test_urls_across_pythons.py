"""The URL semantics are the same on every Python the jobs run on: urllib.parse reads some URLs
differently on Python 3.9 (EMR 7.x's python3) than on 3.11+, and jobs.common.urls reads them
the 3.11+ way everywhere. Each case here came out differently on 3.9 before that (found by
comparing 60,000 generated URLs under 3.9 and 3.11)."""

from __future__ import annotations

import pytest

from jobs.common.urls import host_of, normalize_url, page_base, page_domain, seed_host

PAGE = "https://www.acme.com/a/b"


CASES = [
    # a host in brackets must be an IPv6 literal (3.9 read "[acme.com]" as the host acme.com)
    (host_of, ("http://[acme.com]/x",), None),
    (page_domain, ("http://[acme.com]/x",), None),
    (seed_host, ("http://[acme.com]/",), None),
    (seed_host, ("https://[acme.com]co.uk/",), None),
    (normalize_url, ("//u[x]@acme.com/", PAGE), None),  # ... anywhere in the authority
    (normalize_url, ("https://acme.com/", "http://[acme.com]/"), None),  # a base with one
    (page_base, (PAGE, "http://[acme.com]/"), PAGE),  # such a base is no URL: the page's own
    (page_base, ("http://[acme.com]/", "x"), "http://[acme.com]/"),
    (host_of, ("http://[2001:db8::1]/",), "2001:db8::1"),  # a real one stays
    (host_of, ("http://[v1.x]/",), "v1.x"),
    # a scheme starts with a letter (3.9 read the scheme "1http" and the host acme.com)
    (host_of, ("1http://acme.com/",), None),
    (host_of, ("-https://acme.com/",), None),
    (page_domain, ("0123456789ab+http://acme.com/",), None),
    (host_of, ("http://acme.com/",), "acme.com"),
]


@pytest.mark.parametrize(("function", "args", "expected"), CASES,
                         ids=[f"{f.__name__}({', '.join(map(repr, a))})" for f, a, _ in CASES])
def test_urllib_is_read_the_python_3_11_way(function, args, expected):
    assert function(*args) == expected
