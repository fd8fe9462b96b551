"""URL semantics of the inter-firm graph (CONTRACT.md section 5), in one place.

* registered domain: the Public Suffix List's registrable domain, ICANN section only,
  lower case, offline (the list ships inside the ``publicsuffixlist`` wheel); IP
  addresses and bare public suffixes have none.
* link URL: resolved against the page's base, fragment removed, scheme and host lower
  case, default port removed; kept only if http(s) with a registrable host.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import urljoin, urlsplit, urlunsplit

from publicsuffixlist import PublicSuffixList

_PSL = PublicSuffixList(only_icann=True)
_DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=1 << 17)
def registered_domain(host: str | None) -> str | None:
    """``shop.Example.co.uk`` -> ``example.co.uk``; None for IPs, suffixes and junk."""
    if not host:
        return None
    host = host.strip().rstrip(".").lower()
    if not host or _is_ip(host):
        return None
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return _PSL.privatesuffix(host)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# Fast paths for the two shapes most links have, each giving exactly what the general
# path (urljoin + urlsplit) gives; anything unusual (userinfo, IPv6, whitespace, control
# characters, dot segments) takes the general path. tests/test_urls.py checks the two agree.
_ABSOLUTE = re.compile(r"(https?)://([A-Za-z0-9.-]+)(?::(\d{1,5}))?([/?][^\x00-\x20#]*)?(?:#.*)?", re.DOTALL)
_ROOTED = re.compile(r"/(?!/)[^\x00-\x20#]*(?:#.*)?", re.DOTALL)


def _tail(rest: str) -> str:
    # urlsplit/urlunsplit drop a lone trailing "?" (an empty query)
    return rest[:-1] if rest.endswith("?") and rest.count("?") == 1 else rest


def normalize_url(url: str, base: str | None = None) -> tuple[str, str, str] | None:
    """Resolve ``url`` against ``base``; return ``(url, host, registered_domain)``, or None
    when the result is not an http(s) URL with a registrable host."""
    match = _ABSOLUTE.fullmatch(url) if url else None
    if match is not None:
        scheme, host, port, rest = match.groups()
        host = host.lower()
        domain = registered_domain(host)
        if domain is None:
            return None
        keep_port = port is not None and int(port) != _DEFAULT_PORTS[scheme]
        if keep_port and int(port) > 65535:
            return None
        netloc = f"{host}:{int(port)}" if keep_port else host
        return f"{scheme}://{netloc}{_tail(rest or '')}", host, domain
    return _normalize_general(url, base)


_RELATIVE = re.compile(r"[^\x00-\x20#?/.:][^\x00-\x20#?:]*(?:[?#].*)?", re.DOTALL)
_QUERY = re.compile(r"\?[^\x00-\x20#]+(?:#.*)?", re.DOTALL)


class PageLinks:
    """Resolves one page's links. Root-relative, query-only, fragment-only and plain relative
    links are prefixed with what urljoin would produce for this base (found once per page by
    resolving a probe link the general way); repeated links (menus, footers) resolve once."""

    def __init__(self, base: str) -> None:
        self.base = base
        self._seen: dict[str, tuple[str, str, str] | None] = {}
        self._probes: dict[str, tuple[str, str, str] | None] = {}

    def _prefix(self, probe: str) -> tuple[str, str, str] | None:
        """``probe`` resolved the general way, minus its final ``x`` (kept whole for ``#x``,
        which resolves to the base itself): origin + "/", base path + "?", or base dir."""
        if probe not in self._probes:
            resolved = _normalize_general(probe, self.base)
            if resolved is None or "@" in resolved[0]:
                self._probes[probe] = None
            elif probe == "#x":
                self._probes[probe] = resolved
            elif resolved[0].endswith(probe[-1]):
                self._probes[probe] = (resolved[0][:-1], resolved[1], resolved[2])
            else:
                self._probes[probe] = None
        return self._probes[probe]

    def resolve(self, url: str) -> tuple[str, str, str] | None:
        try:
            return self._seen[url]
        except KeyError:
            pass
        result = self._fast(url)
        if result is False:
            result = normalize_url(url, self.base)
        self._seen[url] = result
        return result

    def _fast(self, url: str):
        if not url:
            return False
        first = url[0]
        if first == "#":
            return self._prefix("#x") or False  # the base itself, fragment dropped
        if first == "/" and _ROOTED.fullmatch(url):
            shape, path = "/x", url
        elif first == "?" and _QUERY.fullmatch(url):
            shape, path = "?x", url
        elif _RELATIVE.fullmatch(url):
            shape, path = "x", url
        else:
            return False
        path = path.split("#", 1)[0]
        segments = path.split("?", 1)[0]
        if "/." in "/" + segments or "//" in segments:
            return False  # dot segments and empty segments are urljoin's to handle
        prefix = self._prefix(shape)
        if prefix is None:
            return False
        if shape == "x":
            return (prefix[0] + _tail(path), prefix[1], prefix[2])
        # "/x" -> prefix ends with "/", "?x" -> with "?": the link brings its own
        return (prefix[0][:-1] + (_tail(path) if shape == "/x" else path), prefix[1], prefix[2])


def _normalize_general(url: str, base: str | None = None) -> tuple[str, str, str] | None:
    if not url:
        return None
    try:
        parts = urlsplit(urljoin(base, url.strip()) if base else url.strip())
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            return None
        host = parts.hostname  # lower-cased by urlsplit
        port = parts.port
    except ValueError:  # bad port, bad IPv6 literal
        return None
    domain = registered_domain(host)
    if domain is None:
        return None
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urlunsplit((scheme, netloc, parts.path, parts.query, "")), host, domain


def host_of(url: str) -> str | None:
    try:
        return urlsplit(url.strip()).hostname
    except ValueError:
        return None


@lru_cache(maxsize=1 << 17)
def _authority_domain(authority: str) -> str | None:
    return registered_domain(host_of(f"http://{authority}/"))


def page_domain(target: str) -> str | None:
    """Registered domain of a page URI (a WARC-Target-URI), cached per authority. Runs for
    every record of a crawl, so the authority is cut out with one split, not a URL parse."""
    start = target.find("://")
    if 0 < start < 12:  # after a scheme; the cached parse drops any userinfo, port, ?query, #fragment
        end = target.find("/", start + 3)
        return _authority_domain(target[start + 3 : end] if end > 0 else target[start + 3 :])
    return registered_domain(host_of(target))


def seed_host(url: str | None) -> tuple[str, str] | None:
    """(host, registered domain) of a seed URL, or None for an invalid seed: empty, not
    http(s), or a host without a registrable domain (IP addresses included)."""
    if not url or not url.strip():
        return None
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        return None
    domain = registered_domain(host)
    return (host, domain) if domain else None
