"""URL semantics of the inter-firm graph (CONTRACT.md section 5), in one place.

* registered domain: the Public Suffix List's registrable domain, ICANN section only,
  lower case, offline (the list ships inside the ``publicsuffixlist`` wheel); IP
  addresses and bare public suffixes have none.
* link URL: resolved against the page's base, fragment removed, scheme and host lower
  case, default port removed; kept only if http(s) with a registrable host.
"""

from __future__ import annotations

import ipaddress
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


def normalize_url(url: str, base: str | None = None) -> tuple[str, str, str] | None:
    """Resolve ``url`` against ``base``; return ``(url, host, registered_domain)``, or None
    when the result is not an http(s) URL with a registrable host."""
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
