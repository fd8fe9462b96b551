"""URL semantics of the inter-firm graph (docs/pipeline.md, "Semantics"), in one place.

* registered domain: the Public Suffix List's registrable domain, ICANN section only,
  lower case, offline (the list ships inside the ``publicsuffixlist`` wheel); IP
  addresses, bare public suffixes and hosts no browser accepts have none.
* link URL: the href taken as an HTML parser takes an attribute value (character
  references decoded, ASCII whitespace around it stripped, an empty one is the page itself),
  resolved against the page's base (``page_base``) as a browser does (WHATWG URL), fragment
  removed, scheme and host lower case, default port removed; kept only if http(s) with a
  registrable host.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from html.entities import html5
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

from publicsuffixlist import PublicSuffixList

_PSL = PublicSuffixList(only_icann=True)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# The WHATWG URL standard's "forbidden domain code points": a browser refuses a host with any of
# them (C0 controls, space, # % / : < > ? @ [ \ ] ^ | and U+007F; "_" is allowed). A browser
# percent-decodes a host first ("ex%41mple.com" is "example.com"); here a host with "%" simply
# has no registered domain, the conservative choice (such hosts are junk or evasion, not firms).
_FORBIDDEN_IN_HOST = re.compile(r"[\x00-\x20#%/:<>?@\[\\\]^|\x7f]")


@lru_cache(maxsize=1 << 17)
def registered_domain(host: str | None) -> str | None:
    """``shop.Example.co.uk`` -> ``example.co.uk``; None for IPs, suffixes and junk (a host
    no browser accepts, ``_FORBIDDEN_IN_HOST``, included)."""
    if not host or _FORBIDDEN_IN_HOST.search(host):
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


# Character references as the HTML tokenizer decodes them in an attribute value (WHATWG HTML,
# "character reference state"); html.unescape follows the text rules, which decode "&copy=2".
_REFERENCE = re.compile(r"&(?:#(?:[xX]([0-9A-Fa-f]+)|([0-9]+));?|([A-Za-z0-9]+)([;=]?))")
_LEGACY_NAMES = {name: text for name, text in html5.items() if not name.endswith(";")}  # valid without ";"
_LONGEST_LEGACY_NAME = max(map(len, _LEGACY_NAMES))
# numeric references to C1 controls mean the windows-1252 character, where there is one
_C1_AS_WINDOWS_1252 = {
    code: char
    for code, char in zip(range(0x80, 0xA0), bytes(range(0x80, 0xA0)).decode("cp1252", "replace"))
    if char != "\ufffd"
}


def _decode_references(link: str) -> str:
    return _REFERENCE.sub(_decode_reference, link)


def _decode_reference(match: re.Match) -> str:
    hex_digits, decimal_digits, name, after = match.groups()
    if name is None:
        return _numeric_reference(int(hex_digits, 16) if hex_digits else _capped_decimal(decimal_digits))
    if after == ";" and name + ";" in html5:
        return html5[name + ";"]
    for length in range(min(len(name), _LONGEST_LEGACY_NAME), 0, -1):
        text = _LEGACY_NAMES.get(name[:length])
        if text is not None:
            # in an attribute, a name without ";" before "=" or an alphanumeric is not a reference
            return match.group() if length < len(name) or after == "=" else text + after
    return match.group()


def _capped_decimal(digits: str) -> int:
    # int() may refuse over 4300 decimal digits (the CVE-2020-10735 limit); over 8 is past U+10FFFF
    digits = digits.lstrip("0")
    return int(digits or "0") if len(digits) <= 8 else 0x110000


def _numeric_reference(code: int) -> str:
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    return _C1_AS_WINDOWS_1252.get(code) or chr(code)


# urllib.parse reads some URLs differently by version, so what it gets is made unambiguous
# first, the WHATWG URL parser's way (which is also what 3.11+ does):
# * C0 controls and spaces stripped from both ends, tabs and newlines removed everywhere (3.9 does
#   the latter from 3.9.5, bpo-43882, the former from 3.9.17, CVE-2023-24329); this strips the
#   ASCII whitespace the HTML rule strips too;
# * in an http(s) URL (its own scheme, else its base's) a backslash before the query or fragment
#   is a slash ("/\evil.com/x" is "//evil.com/x", "http:\\x.com\y" is "http://x.com/y");
#   urllib reads it as a path character; in the query and fragment it stays;
# * a scheme starts with a letter: before 3.11 "192.0.2.7:80/a" has the scheme "192.0.2.7", so
#   such a path gets "./" in front (RFC 3986 section 4.2), which resolution removes.
_C0_CONTROL_OR_SPACE = "".join(map(chr, range(0x21)))
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")
_PATH_LIKE_A_SCHEME = re.compile(r"[^A-Za-z/?#][^/?#]*:")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_QUERY_OR_FRAGMENT = re.compile(r"[?#]")


def _url_input(text: str, base: str | None = None) -> str:
    """``text`` made unambiguous for urllib; ``base``: the URL it will be resolved against."""
    url = text.strip(_C0_CONTROL_OR_SPACE).translate(_TAB_OR_NEWLINE)
    if "\\" in url:
        url = _backslashes_as_slashes(url, base)
    return "./" + url if _PATH_LIKE_A_SCHEME.match(url) else url


def _backslashes_as_slashes(url: str, base: str | None) -> str:
    scheme = _SCHEME.match(url)
    scheme = scheme.group() if scheme else (base or "").partition(":")[0] + ":"
    if scheme.lower() not in ("http:", "https:"):
        return url
    end = _QUERY_OR_FRAGMENT.search(url)
    end = end.start() if end else len(url)
    return url[:end].replace("\\", "/") + url[end:]


_NOT_A_SCHEME = re.compile(r"[0-9+.-][A-Za-z0-9+.-]*:")  # one Python < 3.11 reads as a scheme


def _split(url: str) -> SplitResult:
    """``urlsplit`` as Python 3.11.4+ has it, on every Python (3.9 is EMR 7.x's):
    * a bracketed host must be an IPv6 (or IPvFuture) literal, else ValueError (3.9 reads
      "http://[x.com]/" as the host x.com, and its ``urljoin`` resolves against such a base);
    * a scheme starts with a letter ("1http://x.com/" is a path, not the scheme "1http");
    * leading C0 controls and spaces are stripped, tabs and newlines removed (3.9 from 3.9.17
      and 3.9.5 only: an EMR node's 3.9 may predate them)."""
    url = url.lstrip(_C0_CONTROL_OR_SPACE).translate(_TAB_OR_NEWLINE)
    if _NOT_A_SCHEME.match(url):
        rest, _, fragment = url.partition("#")
        path, _, query = rest.partition("?")
        return SplitResult("", "", path, query, fragment)
    parts = urlsplit(url)
    if "[" in parts.netloc and "]" in parts.netloc:
        _check_bracketed_host(parts.netloc.partition("[")[2].partition("]")[0])
    return parts


def _check_bracketed_host(host: str) -> None:  # as urllib.parse's of Python 3.11.4+
    if host.startswith("v"):
        if not re.match(r"\Av[a-fA-F0-9]+\..+\Z", host):
            raise ValueError("IPvFuture address is invalid")
    elif isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address):  # ValueError if no IP at all
        raise ValueError("An IPv4 address cannot be in brackets")


def _join(base: str, url: str) -> str:
    """``urljoin``, except that an empty query replaces the base's, as in a browser (and RFC 3986
    section 5.2.2): urljoin reads "?" and "?#x" as no query and keeps the base's (a fragment
    alone, "#x", does keep it). ValueError for a base or URL with a host in brackets that is no
    IP literal, as urljoin raises on Python 3.11.4+."""
    for part in (base, url):
        if "[" in part:
            _split(part)
    joined = urljoin(base, url)
    if "?" in url:
        before_fragment = url.partition("#")[0]
        if before_fragment.endswith("?") and before_fragment.count("?") == 1:  # the query is empty
            # the first "?" of an absolute URL starts its query (urlsplit ends a netloc at "?")
            return joined.partition("#")[0].partition("?")[0]
    return joined


def _plain_host_and_port(netloc: str) -> bool:
    # 3.9 urlsplit reads the host "x.com" in "[x.com]" and port 80 in ":+80"; 3.11+ and the WHATWG
    # parser reject both (and a bracketed host is an IP literal: never a registrable domain)
    host_and_port = netloc.rpartition("@")[2]
    port = host_and_port.partition(":")[2]
    return "[" not in host_and_port and (not port or (port.isascii() and port.isdigit()))


def target_uri(raw: str) -> str:
    """The page URI of a ``WARC-Target-URI`` header value (WARC 1.0 writers put it in ``<...>``)."""
    uri = raw.strip(" \t\n\r\f")
    return uri[1:-1] if uri.startswith("<") and uri.endswith(">") else uri


def page_base(target: str, base: str | None) -> str:
    """The URL a page's links resolve against: its ``Head.Base``, an attribute value like any
    href, resolved against its target URI; the target itself when the base is absent, empty or
    not a URL (as a browser falls back to the document's URL)."""
    page = _url_input(target)
    if not base:
        return page
    try:
        return _join(page, _url_input(_decode_references(base), page))
    except ValueError:  # e.g. "http://[x.com]/": urllib refuses it; one bad record must not fail its file
        return page


# Fast paths for the shapes most links have, each giving exactly what the general path
# (urljoin + urlsplit) gives; anything unusual (userinfo, IPv6, whitespace, control
# characters, dot segments, ";" in the path: urljoin drops an empty ";params") takes the
# general path, and so does a backslash before the fragment (a slash in a path, see _url_input).
# tests/cluster/test_urls.py checks the two agree.
_ABSOLUTE = re.compile(r"(https?)://([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?([/?][^\x00-\x20#;\\]*)?(?:#.*)?", re.DOTALL)
_ROOTED = re.compile(r"/(?![/\\])[^\x00-\x20#\\]*(?:#.*)?", re.DOTALL)


def _tail(rest: str) -> str:
    # urlsplit/urlunsplit drop a lone trailing "?" (an empty query)
    return rest[:-1] if rest.endswith("?") and rest.count("?") == 1 else rest


def normalize_url(link: str, base: str | None = None) -> tuple[str, str, str] | None:
    """Resolve the href ``link`` (as written in the HTML) against ``base``; return ``(url, host,
    registered_domain)``, or None when the result is not an http(s) URL with a registrable host."""
    return _normalize_general(_decode_references(link), base)


def _absolute(url: str) -> tuple[str, str, str] | None | bool:
    """An http(s) URL of the common shape normalised without urlsplit; False for other shapes."""
    match = _ABSOLUTE.fullmatch(url)
    if match is None:
        return False
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


_RELATIVE = re.compile(r"[^\x00-\x20#?/.:\\][^\x00-\x20#?:\\]*(?:[?#].*)?", re.DOTALL)
_QUERY = re.compile(r"\?[^\x00-\x20#]+(?:#.*)?", re.DOTALL)


class PageLinks:
    """Resolves one page's links against its base (``page_base``). Root-relative, query-only,
    fragment-only and plain relative links are prefixed with what urljoin would produce for this
    base (found once per page by resolving a probe link the general way); repeated links (menus,
    footers) resolve once."""

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

    def resolve(self, link: str) -> tuple[str, str, str] | None:
        """``normalize_url(link, self.base)``, the fast way when it can."""
        try:
            return self._seen[link]
        except KeyError:
            pass
        url = _decode_references(link) if "&" in link else link  # no call for most links
        result = self._fast(url)
        if result is False:
            result = _normalize_general(url, self.base)
        self._seen[link] = result
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
            return _absolute(url)
        path = path.split("#", 1)[0]
        segments = path.split("?", 1)[0]
        # (no shape starts with ".", so "/." finds every dot segment)
        if "/." in segments or "//" in segments or ";" in segments:
            return False  # dot segments, empty segments and ";params" are urljoin's to handle
        prefix = self._prefix(shape)
        if prefix is None:
            return False
        if shape == "x":
            return (prefix[0] + _tail(path), prefix[1], prefix[2])
        # "/x" -> prefix ends with "/", "?x" -> with "?": the link brings its own
        return (prefix[0][:-1] + (_tail(path) if shape == "/x" else path), prefix[1], prefix[2])


def _normalize_general(url: str, base: str | None = None) -> tuple[str, str, str] | None:
    """``url``: an href with its character references decoded."""
    url = _url_input(url, base)
    try:
        parts = _split(_join(base, url) if base else url)  # "" is the base itself
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not _plain_host_and_port(parts.netloc):
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
        return _split(url.strip()).hostname
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
        # (whitespace around a URL is not part of it: "http://x.com " is x.com, as host_of reads it)
        return _authority_domain(target[start + 3 : end] if end > 0 else target[start + 3 :].strip())
    return registered_domain(host_of(target))


def seed_host(url: str | None) -> tuple[str, str] | None:
    """(host, registered domain) of a seed URL, or None for an invalid seed: empty, not
    http(s), or a host without a registrable domain (IP addresses included)."""
    if not url or not url.strip():
        return None
    try:
        parts = _split(url.strip())
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        return None
    domain = registered_domain(host)
    return (host, domain) if domain else None
