#!/usr/bin/env python3
"""Write a small, deterministic local Common Crawl mirror for tests and demos.

Run ``python scripts/make_sample_data.py [--out sample_data]``. The output is::

    {out}/cc/crawl-data/{crawl}/wat.paths.gz                 paths relative to {out}/cc
    {out}/cc/crawl-data/{crawl}/segments/{seg}/wat/*.warc.wat.gz
    {out}/seeds/{domain}.csv                                 company_id,url
    {out}/ground_truth/{crawl}.json                          what was written, record by record
    {out}/ground_truth/seeds.json                            the seed rows with the edge case each one is

WAT files are real Common Crawl WAT files: one gzip member per WARC record, a ``warcinfo``
record first, then ``metadata`` records whose payload is ia-web-commons style JSON
(``Container`` / ``Envelope`` / ``Payload-Metadata`` / ``HTTP-Response-Metadata`` / ``HTML-Metadata``).
Link ``url`` values are raw ``href``/``src`` attribute values, exactly as in real WAT files: they can
be relative and must be resolved against ``Head.Base`` (if any) and the record's target URI.

The ground truth holds the RAW inputs (target URIs, envelope WARC-Type, ``Head.Base``, the link
list as written, malformed flags), never computed answers.

Standard library only; everything is derived from seeded ``random.Random`` instances, uuids come
from those generators and every gzip member has mtime 0, so two runs give byte-identical output.

Importable: ``sys.path.insert(0, "scripts"); import make_sample_data``. Public API:

* ``WarcRecord`` / ``warcinfo_record`` / ``metadata_record`` / ``write_wat`` / ``wat_bytes``
* ``build_wat(pages, ...)`` -> ``(records, truth)``: the record mix for a web description
* ``make_sample(out_dir)``: the shipped sample
* ``make_benchmark_wat(path, n_records, seed_share, seed_hosts)``: one large WAT file
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import gzip
import hashlib
import json
import random
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BENCHMARK_SEED_HOSTS",
    "CRAWLS",
    "DOMAINS",
    "MALFORMED_KINDS",
    "WarcRecord",
    "build_wat",
    "link",
    "main",
    "make_benchmark_wat",
    "make_sample",
    "metadata_record",
    "sample_pages",
    "sample_seeds",
    "warcinfo_record",
    "wat_bytes",
    "write_wat",
]

SOFTWARE_INFO = "ia-web-commons.1.1.10-SNAPSHOT-20240305104211"
USER_AGENT = "CCBot/2.0 (https://commoncrawl.org/faq/)"
EMPTY_SHA1 = "sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ"

#: The malformed metadata records the generator can write (``page["malformed"]``).
MALFORMED_KINDS = {
    "truncated_json": "payload is the record's JSON cut off part-way: not valid JSON",
    "missing_envelope": "valid JSON object with only 'Container', no 'Envelope'",
    "links_not_list": "HTML-Metadata.Links is a JSON object or string instead of a list",
    "empty_target_uri": "response record whose WARC-Target-URI (WAT header and envelope) is empty",
}

#: Crawls of the shipped sample: three WAT files each, in two segments.
CRAWLS: dict[str, dict[str, Any]] = {
    "CC-MAIN-2024-10": {
        "description": "Wide crawl of the web for February/March 2024",
        "extracted": dt.datetime(2024, 3, 5, 10, 42, 11),
        "files": [
            ("1707947473347.0", "CC-MAIN-20240220211055-20240221001055-00000"),
            ("1707947473347.0", "CC-MAIN-20240220211055-20240221001055-00001"),
            ("1707947474871.84", "CC-MAIN-20240224155411-20240224185411-00002"),
        ],
    },
    "CC-MAIN-2024-18": {
        "description": "Wide crawl of the web for April 2024",
        "extracted": dt.datetime(2024, 4, 26, 7, 3, 48),
        "files": [
            ("1712296815919.75", "CC-MAIN-20240412101354-20240412131354-00000"),
            ("1712296815919.75", "CC-MAIN-20240412101354-20240412131354-00001"),
            ("1712296817181.55", "CC-MAIN-20240415034052-20240415064052-00002"),
        ],
    },
}

#: Research domains of the shipped sample.
DOMAINS = ("steel", "pharma")


# ---------------------------------------------------------------------------------------------
# WARC framing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WarcRecord:
    """One WARC record: its header fields (without ``WARC/1.0`` and ``Content-Length``) and payload."""

    headers: tuple[tuple[str, str], ...]
    payload: bytes

    @property
    def warc_type(self) -> str:
        return self.header("WARC-Type") or ""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def to_bytes(self) -> bytes:
        """The uncompressed record: CRLF header lines, a blank line, the payload, then CRLF CRLF."""
        lines = ["WARC/1.0"]
        lines += [f"{key}: {value}" for key, value in self.headers]
        lines.append(f"Content-Length: {len(self.payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.payload + b"\r\n\r\n"


def _warc_date(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _http_date(when: dt.datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT")


def _record_id(rng: random.Random) -> str:
    return f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"


def _sha1(data: str) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(data.encode("utf-8")).digest()).decode("ascii")


def _encode_payload(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def warcinfo_record(
    wat_filename: str,
    *,
    crawl: str = "CC-MAIN-2024-10",
    description: str = "Wide crawl of the web",
    extracted: dt.datetime = dt.datetime(2024, 3, 5, 10, 42, 11),
    record_id: str | None = None,
) -> WarcRecord:
    """The ``warcinfo`` record that opens every Common Crawl WAT file."""
    fields = [
        ("Software-Info", SOFTWARE_INFO),
        ("Extracted-Date", _http_date(extracted)),
        ("robots", "checked via crawler-commons 1.5-SNAPSHOT (https://github.com/crawler-commons/crawler-commons)"),
        ("isPartOf", crawl),
        ("operator", "Common Crawl Admin (info@commoncrawl.org)"),
        ("description", description),
        ("publisher", "Common Crawl"),
    ]
    payload = "".join(f"{k}: {v}\r\n" for k, v in fields).encode("utf-8")
    if record_id is None:
        record_id = _record_id(random.Random(f"warcinfo:{wat_filename}"))
    headers = (
        ("WARC-Type", "warcinfo"),
        ("WARC-Date", _warc_date(extracted)),
        ("WARC-Filename", wat_filename),
        ("WARC-Record-ID", record_id),
        ("Content-Type", "application/warc-fields"),
    )
    return WarcRecord(headers, payload)


def metadata_record(
    target_uri: str,
    payload: Any,
    *,
    date: str = "2024-02-20T21:48:05Z",
    record_id: str | None = None,
    refers_to: str | None = None,
) -> WarcRecord:
    """A WAT ``metadata`` record. ``payload``: a JSON-able object, or str/bytes written as is."""
    body = _encode_payload(payload)
    if record_id is None or refers_to is None:  # derived from the content, so still deterministic
        rng = random.Random(hashlib.sha256(b"metadata:" + target_uri.encode("utf-8") + b"\0" + body).digest())
        record_id, refers_to = record_id or _record_id(rng), refers_to or _record_id(rng)
    headers = (
        ("WARC-Type", "metadata"),
        ("WARC-Target-URI", target_uri),
        ("WARC-Date", date),
        ("WARC-Record-ID", record_id),
        ("WARC-Refers-To", refers_to),
        ("Content-Type", "application/json"),
    )
    return WarcRecord(headers, body)


def _gzip_member(data: bytes, compresslevel: int) -> bytes:
    # One self-contained gzip member per record (as Common Crawl writes them), mtime 0, OS=unknown,
    # built by hand so the bytes do not depend on the platform's gzip header choices.
    comp = zlib.compressobj(compresslevel, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = comp.compress(data) + comp.flush()
    xfl = b"\x02" if compresslevel == 9 else (b"\x04" if compresslevel == 1 else b"\x00")
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + xfl + b"\xff"
    trailer = (zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "little") + (len(data) & 0xFFFFFFFF).to_bytes(4, "little")
    return header + body + trailer


def _as_record(record: Any) -> WarcRecord:
    if isinstance(record, WarcRecord):
        return record
    if isinstance(record, dict):
        return WarcRecord(tuple(tuple(h) for h in record["headers"]), _encode_payload(record["payload"]))
    headers, payload = record
    return WarcRecord(tuple(tuple(h) for h in headers), _encode_payload(payload))


def wat_bytes(records: Iterable[Any], *, compresslevel: int = 6, wat_filename: str = "sample.warc.wat.gz") -> bytes:
    """The bytes of a WAT file (see ``write_wat``)."""
    records = [_as_record(r) for r in records]
    if not records or records[0].warc_type != "warcinfo":
        records.insert(0, warcinfo_record(wat_filename))
    return b"".join(_gzip_member(r.to_bytes(), compresslevel) for r in records)


def write_wat(path: str | Path, records: Iterable[Any], *, compresslevel: int = 6) -> list[int]:
    """Write a Common Crawl style ``.warc.wat.gz`` file: each record is its own gzip member.

    ``records``: ``WarcRecord`` objects, ``(headers, payload)`` pairs or ``{"headers", "payload"}``
    dicts, where ``headers`` are ``(name, value)`` pairs without ``WARC/1.0`` and ``Content-Length``
    (computed here) and ``payload`` is bytes, str or a JSON-able object. A ``warcinfo`` record is
    prepended when the first record is not one. Returns the byte offset of every record's gzip member.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [_as_record(r) for r in records]
    if not records or records[0].warc_type != "warcinfo":
        records.insert(0, warcinfo_record(path.name))
    offsets = []
    pos = 0
    with open(path, "wb") as fh:
        for record in records:
            member = _gzip_member(record.to_bytes(), compresslevel)
            offsets.append(pos)
            fh.write(member)
            pos += len(member)
    return offsets


# ---------------------------------------------------------------------------------------------
# WAT JSON payloads (ia-web-commons layout)
# ---------------------------------------------------------------------------------------------


def link(url: str, text: str | None = None, path: str = "A@/href", **attrs: str) -> dict[str, str]:
    """One ``HTML-Metadata.Links`` entry as ia-web-commons writes it (no ``text`` key when None)."""
    out = {"path": path, "url": url}
    if text is not None:
        out["text"] = text
    out.update(attrs)
    return out


class _Capture:
    """Ids, dates, sizes and digests of one fetched page (its request, response and metadata records)."""

    def __init__(self, rng: random.Random, page: dict, warc_filename: str, warcinfo_id: str,
                 when: dt.datetime, offset: int):
        self.uri = page.get("uri", "")
        self.when = when
        self.date = _warc_date(when)
        self.warc_filename = warc_filename
        self.warcinfo_id = warcinfo_id
        octets = (rng.randint(13, 212), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
        self.ip = page.get("ip") or ".".join(map(str, octets))
        self.request_id = _record_id(rng)
        self.response_id = _record_id(rng)
        self.metadata_id = _record_id(rng)
        self.wat_ids = [_record_id(rng) for _ in range(3)]
        self.offset = offset
        self.req_len = rng.randint(290, 420)
        self.req_deflate = rng.randint(330, 480)
        self.resp_entity = page.get("entity_length") or rng.randint(6_000, 180_000)
        self.resp_headers_len = rng.randint(380, 900)
        self.resp_len = self.resp_entity + self.resp_headers_len
        self.resp_deflate = max(600, int(self.resp_entity * rng.uniform(0.18, 0.32)))
        self.meta_len = rng.randint(180, 1400)
        self.meta_deflate = rng.randint(250, 700)
        self.fetch_ms = rng.randint(40, 3200)
        self.salt = f"{warc_filename}:{offset}:{self.uri}"

    def digest(self, kind: str) -> str:
        """A stable fake ``sha1:`` base32 digest for one of this capture's blocks."""
        cache = self.__dict__.setdefault("_digests", {})
        if kind not in cache:
            cache[kind] = _sha1(f"{self.salt}:{kind}")
        return cache[kind]

    def next_offsets(self) -> tuple[int, int, int]:
        req = self.offset
        resp = req + self.req_deflate + 18 + 10
        meta = resp + self.resp_deflate + 18 + 10
        return req, resp, meta

    @property
    def end_offset(self) -> int:
        return self.next_offsets()[2] + self.meta_deflate + 28


def _container(filename: str, offset: int, deflate: int, inflated: int, salt: str) -> dict:
    crc = zlib.crc32(salt.encode("utf-8"))
    return {
        "Filename": filename,
        "Compressed": True,
        "Offset": str(offset),
        "Gzip-Metadata": {
            "Deflate-Length": str(deflate),
            "Header-Length": "10",
            "Footer-Length": "8",
            "Inflated-CRC": str(crc - (1 << 32) if crc & (1 << 31) else crc),
            "Inflated-Length": str(inflated),
        },
    }


def _split_uri(uri: str) -> tuple[str, str]:
    """(Host header value, request path) of an absolute URI, tolerating odd input."""
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    host, _, path = rest.partition("/")
    return host, "/" + path.split("#", 1)[0]


def _request_payload(cap: _Capture) -> dict:
    host, path = _split_uri(cap.uri)
    req_off, _, _ = cap.next_offsets()
    return {
        "Container": _container(cap.warc_filename, req_off, cap.req_deflate, cap.req_len + 400, cap.salt + ":req"),
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Length": str(cap.req_len // 2 + 120),
            "Block-Digest": cap.digest("reqblock"),
            "Actual-Content-Length": str(cap.req_len),
            "WARC-Header-Metadata": {
                "WARC-Type": "request",
                "WARC-Date": cap.date,
                "WARC-Record-ID": cap.request_id,
                "Content-Length": str(cap.req_len),
                "Content-Type": "application/http; msgtype=request",
                "WARC-Warcinfo-ID": cap.warcinfo_id,
                "WARC-IP-Address": cap.ip,
                "WARC-Target-URI": cap.uri,
                "WARC-Block-Digest": cap.digest("reqblock"),
            },
            "Payload-Metadata": {
                "Actual-Content-Type": "application/http; msgtype=request",
                "HTTP-Request-Metadata": {
                    "Request-Message": {"Method": "GET", "Path": path, "Version": "HTTP/1.1"},
                    "Headers-Length": str(cap.req_len - 2),
                    "Headers": {
                        "User-Agent": USER_AGENT,
                        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                        "Accept-Language": "en-US,en;q=0.5",
                        "Host": host,
                        "Connection": "Keep-Alive",
                        "Accept-Encoding": "br,gzip",
                    },
                    "Entity-Length": "0",
                    "Entity-Digest": EMPTY_SHA1,
                    "Entity-Trailing-Slop-Length": "0",
                },
                "Trailing-Slop-Length": "4",
            },
        },
    }


_SERVERS = ("nginx", "Apache", "cloudflare", "Microsoft-IIS/10.0", "nginx/1.18.0 (Ubuntu)", "LiteSpeed", "AmazonS3")


def _response_payload(cap: _Capture, page: dict, rng: random.Random, links_json: str | None = None) -> dict:
    """The response record's WAT JSON. ``links_json``: pre-serialised Links list (benchmark fast path)."""
    _, resp_off, _ = cap.next_offsets()
    content_type = page.get("content_type", "text/html")
    status = int(page.get("status", 200))
    reason = {200: "OK", 301: "Moved Permanently", 302: "Found", 404: "Not Found"}.get(status, "OK")
    headers = {
        "Date": _http_date(cap.when),
        "Server": _SERVERS[rng.randrange(len(_SERVERS))],
        "Content-Type": content_type + ("; charset=UTF-8" if content_type.startswith("text/") else ""),
        "X-Crawler-Content-Length": str(int(cap.resp_entity * 0.27)),
        "Content-Length": str(cap.resp_entity),
        "Connection": "keep-alive",
        "Vary": "Accept-Encoding",
        "Cache-Control": "max-age=600",
        "X-Crawler-Content-Encoding": "gzip",
    }
    if page.get("location"):
        headers["Location"] = page["location"]
    http_meta: dict[str, Any] = {
        "Response-Message": {"Version": "HTTP/1.1", "Status": str(status), "Reason": reason},
        "Headers-Length": str(cap.resp_headers_len),
        "Headers": headers,
        "Entity-Metadata": {
            "Actual-Content-Type": content_type,
            "Actual-Content-Length": str(cap.resp_entity),
            "Trailing-Slop-Length": "0",
        },
        "Entity-Length": str(cap.resp_entity),
        "Entity-Digest": cap.digest("entity"),
        "Entity-Trailing-Slop-Length": "0",
    }
    if page.get("html", content_type == "text/html"):
        head: dict[str, Any] = {}
        if page.get("title") is not None:
            head["Title"] = page["title"]
        if page.get("base") is not None:
            head["Base"] = page["base"]
        head["Metas"] = page.get("metas") or [
            {"name": "viewport", "content": "width=device-width, initial-scale=1"},
            {"name": "description", "content": (page.get("title") or "")[:150]},
        ]
        if page.get("head_link"):
            head["Link"] = page["head_link"]
        if page.get("scripts"):
            head["Scripts"] = page["scripts"]
        html: dict[str, Any] = {"Head": head}
        if links_json is not None:
            html["Links"] = "\x00LINKS\x00"
        elif "links" in page and page["links"] is not None:
            html["Links"] = page["links"]
        http_meta["HTML-Metadata"] = html
    return {
        "Container": _container(cap.warc_filename, resp_off, cap.resp_deflate, cap.resp_len + 600, cap.salt + ":resp"),
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Length": str(rng.randint(560, 720)),
            "Block-Digest": cap.digest("respblock"),
            "Actual-Content-Length": str(cap.resp_len),
            "WARC-Header-Metadata": {
                "WARC-Type": "response",
                "WARC-Date": cap.date,
                "WARC-Record-ID": cap.response_id,
                "Content-Length": str(cap.resp_len),
                "Content-Type": "application/http; msgtype=response",
                "WARC-Warcinfo-ID": cap.warcinfo_id,
                "WARC-Concurrent-To": cap.request_id,
                "WARC-IP-Address": cap.ip,
                "WARC-Target-URI": cap.uri,
                "WARC-Protocol": "h2" if rng.random() < 0.4 else "http/1.1",
                "WARC-Payload-Digest": cap.digest("entity"),
                "WARC-Block-Digest": cap.digest("respblock"),
                "WARC-Identified-Payload-Type": content_type,
            },
            "Payload-Metadata": {
                "Actual-Content-Type": "application/http; msgtype=response",
                "HTTP-Response-Metadata": http_meta,
                "Trailing-Slop-Length": "4",
            },
        },
    }


def _metadata_payload(cap: _Capture, page: dict) -> dict:
    _, _, meta_off = cap.next_offsets()
    lang = page.get("lang", "eng")
    records = [
        {"Name": "fetchTimeMs", "Value": str(cap.fetch_ms)},
        {"Name": "charset-detected", "Value": "UTF-8"},
        {"Name": "languages-cld2", "Value": json.dumps(
            {"reliable": True, "text-bytes": cap.resp_entity // 9,
             "languages": [{"code": lang[:2], "code-iso-639-3": lang, "text-covered": 0.98, "score": 1023.0}]},
            separators=(",", ":"))},
    ]
    return {
        "Container": _container(cap.warc_filename, meta_off, cap.meta_deflate, cap.meta_len + 500, cap.salt + ":meta"),
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Length": "371",
            "Block-Digest": cap.digest("metablock"),
            "Actual-Content-Length": str(cap.meta_len),
            "WARC-Header-Metadata": {
                "WARC-Type": "metadata",
                "WARC-Date": cap.date,
                "WARC-Record-ID": cap.metadata_id,
                "Content-Length": str(cap.meta_len),
                "Content-Type": "application/warc-fields",
                "WARC-Warcinfo-ID": cap.warcinfo_id,
                "WARC-Concurrent-To": cap.response_id,
                "WARC-Target-URI": cap.uri,
                "WARC-Block-Digest": cap.digest("metablock"),
            },
            "Payload-Metadata": {
                "Actual-Content-Type": "application/metadata-fields",
                "WARC-Metadata-Metadata": {"Metadata-Records": records},
                "Trailing-Slop-Length": "0",
            },
        },
    }


def _warc_warcinfo_payload(warc_filename: str, warcinfo_id: str, crawl: str, description: str,
                           when: dt.datetime) -> dict:
    """WAT record describing the source WARC file's own warcinfo record (second record of a real WAT)."""
    return {
        "Container": _container(warc_filename, 0, 482, 511, warc_filename),
        "Envelope": {
            "Format": "WARC",
            "WARC-Header-Length": "259",
            "Block-Digest": _sha1(warc_filename + ":info"),
            "Actual-Content-Length": "511",
            "WARC-Header-Metadata": {
                "WARC-Type": "warcinfo",
                "WARC-Date": _warc_date(when),
                "WARC-Record-ID": warcinfo_id,
                "Content-Length": "511",
                "Content-Type": "application/warc-fields",
                "WARC-Filename": warc_filename,
            },
            "Payload-Metadata": {
                "Actual-Content-Type": "application/warc-fields",
                "WARC-Info-Metadata": {
                    "isPartOf": crawl,
                    "publisher": "Common Crawl",
                    "description": description,
                    "operator": "Common Crawl Admin (info@commoncrawl.org)",
                    "hostname": "ip-10-67-67-134.ec2.internal",
                    "software": "Apache Nutch 1.20 (modified, https://github.com/commoncrawl/nutch/)",
                    "robots": "checked via crawler-commons 1.5-SNAPSHOT (https://github.com/crawler-commons/crawler-commons)",
                    "format": "WARC File Format 1.1",
                    "conformsTo": "https://iipc.github.io/warc-specifications/specifications/warc-format/warc-1.1/",
                },
                "Trailing-Slop-Length": "0",
            },
        },
    }


def _malform(kind: str, obj: dict, body: bytes) -> bytes:
    if kind == "truncated_json":
        cut = body[: max(40, int(len(body) * 0.55))]
        while True:  # never cut inside a UTF-8 sequence: the bytes stay text, just not JSON
            try:
                cut.decode("utf-8")
                break
            except UnicodeDecodeError:
                cut = cut[:-1]
        return cut
    if kind == "missing_envelope":
        return _encode_payload({"Container": obj["Container"]})
    raise ValueError(f"unknown malformed kind {kind!r}")


def build_wat(
    pages: Sequence[dict],
    *,
    crawl: str = "CC-MAIN-2024-10",
    wat_filename: str = "CC-MAIN-20240220211055-20240221001055-00000.warc.wat.gz",
    description: str = "Wide crawl of the web",
    extracted: dt.datetime = dt.datetime(2024, 3, 5, 10, 42, 11),
    start: dt.datetime | None = None,
    seed: int | str = 0,
    with_metadata_records: bool = True,
) -> tuple[list[WarcRecord], list[dict]]:
    """The WAT record mix for a web description; returns ``(records, truth)``.

    Each page (a fetched URL) is a dict:

    ``uri``            target URI (may be ``""`` only with ``malformed="empty_target_uri"``)
    ``content_type``   default ``text/html``; other types get no ``HTML-Metadata`` (e.g. ``application/pdf``)
    ``status``         HTTP status, default 200; ``location`` adds a Location header
    ``title``          ``Head.Title``;  ``base``: ``Head.Base`` (omitted when None)
    ``links``          ``HTML-Metadata.Links`` written as given (normally a list of ``link(...)`` dicts;
                       key omitted when None or absent)
    ``head_link``      ``Head.Link`` list; ``scripts``: ``Head.Scripts`` list; ``metas``: ``Head.Metas``
    ``malformed``      None or one of ``MALFORMED_KINDS``; applies to the page's response record
    ``ip``, ``lang``   optional

    Records: ``warcinfo``; one ``metadata`` record for the source WARC's warcinfo; then per page the
    WAT records of the WARC ``request``, ``response`` and (if ``with_metadata_records``) ``metadata``
    records. ``truth`` has one entry per record, in file order (``offset`` is filled by ``write_wat``
    callers; see ``make_sample``).
    """
    rng = random.Random(f"{seed}:{crawl}:{wat_filename}")
    warc_filename = wat_filename.replace(".warc.wat.gz", ".warc.gz")
    start = start or _start_from_name(wat_filename)
    wat_info_id = _record_id(rng)
    warc_info_id = _record_id(rng)
    records: list[WarcRecord] = [warcinfo_record(wat_filename, crawl=crawl, description=description,
                                                 extracted=extracted, record_id=wat_info_id)]
    truth: list[dict] = [{
        "index": 0, "warc_type": "warcinfo", "record_id": wat_info_id, "target_uri": None,
        "envelope_warc_type": None, "malformed": None,
    }]
    info_wat_id = _record_id(rng)
    records.append(metadata_record(
        warc_filename, _warc_warcinfo_payload(warc_filename, warc_info_id, crawl, description, start),
        date=_warc_date(start), record_id=info_wat_id, refers_to=warc_info_id))
    truth.append(_truth_entry(1, info_wat_id, warc_filename, warc_info_id, "warcinfo", None, None))

    when = start
    offset = 511 + 28
    for page in pages:
        when = when + dt.timedelta(seconds=rng.randint(1, 9))
        cap = _Capture(rng, page, warc_filename, warc_info_id, when, offset)
        offset = cap.end_offset
        malformed = page.get("malformed")
        if malformed is not None and malformed not in MALFORMED_KINDS:
            raise ValueError(f"page {page.get('uri')!r}: unknown malformed kind {malformed!r}")

        req = _request_payload(cap)
        records.append(metadata_record(cap.uri, req, date=cap.date, record_id=cap.wat_ids[0],
                                       refers_to=cap.request_id))
        truth.append(_truth_entry(len(truth), cap.wat_ids[0], cap.uri, cap.request_id, "request", None, None))

        resp = _response_payload(cap, page, rng)
        body = _encode_payload(resp)
        if malformed in ("truncated_json", "missing_envelope"):
            body = _malform(malformed, resp, body)
        records.append(metadata_record(cap.uri, body, date=cap.date, record_id=cap.wat_ids[1],
                                       refers_to=cap.response_id))
        is_html = "HTML-Metadata" in resp["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]
        entry = _truth_entry(len(truth), cap.wat_ids[1], cap.uri, cap.response_id, "response", page, malformed)
        entry["has_html_metadata"] = is_html and malformed not in ("truncated_json", "missing_envelope")
        truth.append(entry)

        if with_metadata_records:
            meta = _metadata_payload(cap, page)
            records.append(metadata_record(cap.uri, meta, date=cap.date, record_id=cap.wat_ids[2],
                                           refers_to=cap.metadata_id))
            truth.append(_truth_entry(len(truth), cap.wat_ids[2], cap.uri, cap.metadata_id, "metadata", None, None))
    return records, truth


def _truth_entry(index: int, record_id: str, target_uri: str, refers_to: str, envelope_type: str,
                 page: dict | None, malformed: str | None) -> dict:
    entry: dict[str, Any] = {
        "index": index,
        "warc_type": "metadata",
        "record_id": record_id,
        "target_uri": target_uri,
        "refers_to": refers_to,
        "envelope_warc_type": envelope_type,
        "malformed": malformed,
    }
    if page is not None:
        entry["http_status"] = int(page.get("status", 200))
        entry["content_type"] = page.get("content_type", "text/html")
        entry["base"] = page.get("base")
        # Links as written (for truncated_json / missing_envelope: what the record would have held).
        entry["links"] = page.get("links") if page.get("content_type", "text/html") == "text/html" else None
        entry["head_link"] = page.get("head_link") or []
        entry["note"] = page.get("note")
    return entry


def _start_from_name(wat_filename: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(wat_filename.split("-")[2], "%Y%m%d%H%M%S")
    except (IndexError, ValueError):
        return dt.datetime(2024, 2, 20, 21, 10, 55)


# ---------------------------------------------------------------------------------------------
# The shipped sample: seeds and the web they live in
# ---------------------------------------------------------------------------------------------

# (company_id, url, edge case). Raw rows; "case" is only a label of what the row is meant to exercise.
_SEEDS: dict[str, list[tuple[str, str, str]]] = {
    "steel": [
        ("S001", "https://www.northforge-steel.com/", "valid"),
        ("S002", "http://shop.ACME-steel.co.uk/about", "shared_registered_domain;upper_case_host;co.uk"),
        ("S003", "https://WWW.Baltic-Alloys.DE/", "upper_case_host"),
        ("S004", "https://ironvale.com.au/", "valid;com.au"),
        ("S005", "http://www.kestrelmetals.com:8080/", "non_default_port"),
        ("S006", "https://www.oremount.com:443/products", "default_port"),
        ("S007", "", "empty_url"),
        ("S008", "ftp://ftp.hollins-wire.com/catalogue/", "ftp_scheme"),
        ("S009", "http://192.0.2.7/", "ip_host"),
        ("S010", "https://www.acme-steel.co.uk/", "shared_registered_domain;co.uk"),
        ("S011", "http://localhost/", "no_registrable_domain"),
        ("S012", "http://co.uk/", "no_registrable_domain;public_suffix_only"),
        ("S013", "https://www.tarnhill-rolling.com/en/", "valid"),
        ("S014", "https://millbrook-forge.com", "valid;no_trailing_slash"),
        ("S015", "https://www.greyrock-steel.com/", "valid;no_pages_in_crawl"),
        ("S016", "HTTPS://Steelbridge-Tubes.NL/index.html", "upper_case_scheme_and_host"),
    ],
    "pharma": [
        ("P001", "https://www.helixora-pharma.com/", "valid"),
        ("P002", "https://www.corvane-bio.co.uk/", "shared_registered_domain;co.uk"),
        ("P003", "http://Research.CORVANE-BIO.co.uk/pipeline", "shared_registered_domain;upper_case_host"),
        ("P004", "https://medivista.com.au/", "valid;com.au"),
        ("P005", "http://www.lindqvist-labs.se:8443/", "non_default_port"),
        ("P006", "http://www.quantapharm.com:80/", "default_port"),
        ("P007", "", "empty_url"),
        ("P008", "ftp://ftp.orbismed.com/pub/", "ftp_scheme"),
        ("P009", "http://198.51.100.23/", "ip_host"),
        ("P010", "http://localhost:8080/", "no_registrable_domain"),
        ("P011", "https://com.au/", "no_registrable_domain;public_suffix_only"),
        ("P012", "https://WWW.ARGENTA-THERAPEUTICS.COM/", "upper_case_host"),
        ("P013", "https://www.kalinex.de/en/", "valid"),
        ("P014", "https://sanovia-health.com", "valid;no_trailing_slash"),
        ("P015", "https://www.pellucid-rx.com/", "valid;no_pages_in_crawl"),
    ],
}


def sample_seeds() -> dict[str, list[dict[str, str]]]:
    """The seed rows of the shipped sample, per research domain, with the edge case each row is."""
    return {d: [{"company_id": c, "url": u, "case": k} for c, u, k in rows] for d, rows in _SEEDS.items()}


_STEEL_WORDS = ("steel", "plate", "coil", "rebar", "alloy", "forging", "billet", "mill", "tube", "wire", "slab",
                "galvanised", "stainless", "carbon", "furnace", "rolling", "casting", "tonnage")
_PHARMA_WORDS = ("trial", "oncology", "vaccine", "biologic", "pipeline", "dosage", "generic", "API", "clinical",
                 "phase-ii", "antibody", "formulation", "regulatory", "GMP", "biosimilar", "patent")
_GENERIC_WORDS = ("news", "market", "report", "industry", "supplier", "directory", "review", "outlook",
                  "prices", "jobs", "events", "analysis", "weekly", "update", "guide", "contact")

# Non-seed hosts that get pages of their own in the sample.
_NON_SEED_HOSTS = (
    "www.steelnews-daily.com", "blog.forgecraft.io", "www.industryweek-digest.com", "www.pharmaletter-review.com",
    "biotechwire.co.uk", "www.tradedirectory.com.au", "news.chemreport.de", "www.supplychain-hub.org",
    "jobs.engineering-careers.net", "www.metalworking-forum.org", "www.clinicaltrials-watch.org",
    "www.europe-industry.eu", "www.fierce-biotech-news.com", "www.drugdiscovery-today.net",
    "www.procurement-weekly.com", "www.hannover-messe-guide.de", "www.construction-materials.co.uk",
    "www.mining-weekly.com.au", "www.alloy-prices.com", "forum.weldingtips.net", "www.medtech-insider.com",
    "www.apothecary-news.co.uk", "en.wikipedia.org", "de.wikipedia.org",
)

# Non-seed link targets (absolute).
_EXTERNAL_LINKS = (
    "https://www.linkedin.com/company/{slug}", "https://twitter.com/{slug}", "https://www.facebook.com/{slug}/",
    "https://www.youtube.com/watch?v={vid}", "https://en.wikipedia.org/wiki/{Word}",
    "https://www.reuters.com/business/{slug}-2024-02-21/", "https://www.bbc.co.uk/news/business-{num}",
    "https://www.abc.net.au/news/2024-02-22/{slug}/{num}", "https://www.ft.com/content/{vid}",
    "https://github.com/{slug}", "https://www.google.com/maps?q={slug}", "https://www.instagram.com/{slug}/",
    "http://www.worldsteel-example.org/{slug}.html", "https://www.ema.europa.eu/en/medicines/{slug}",
    "https://shop.partsdepot.com.au/{slug}", "https://www.construction-materials.co.uk/{slug}",
    "https://www.metalworking-forum.org/t/{slug}/{num}", "https://www.clinicaltrials-watch.org/study/NCT0{num}",
)

# Absolute links to seed companies, written the many ways pages write them.
_SEED_LINKS = {
    "steel": (
        "https://www.northforge-steel.com/", "http://northforge-steel.com/products/plate",
        "https://www.acme-steel.co.uk/", "http://shop.acme-steel.co.uk/cart", "https://www.baltic-alloys.de/en/",
        "https://ironvale.com.au/", "https://www.ironvale.com.au/contact", "http://www.kestrelmetals.com:8080/",
        "https://www.oremount.com/products", "https://www.tarnhill-rolling.com/en/", "http://millbrook-forge.com/",
        "https://www.greyrock-steel.com/", "https://steelbridge-tubes.nl/index.html",
    ),
    "pharma": (
        "https://www.helixora-pharma.com/", "https://careers.helixora-pharma.com/jobs",
        "https://www.corvane-bio.co.uk/", "http://research.corvane-bio.co.uk/pipeline", "https://medivista.com.au/",
        "http://www.lindqvist-labs.se:8443/", "http://www.quantapharm.com/", "https://www.argenta-therapeutics.com/",
        "https://www.kalinex.de/en/", "https://sanovia-health.com/", "https://www.pellucid-rx.com/",
    ),
}


def _slug(rng: random.Random, words: Sequence[str], n: int = 3) -> str:
    return "-".join(rng.choice(words) for _ in range(n)).lower()


def _fill_external(rng: random.Random, words: Sequence[str]) -> str:
    template = rng.choice(_EXTERNAL_LINKS)
    return template.format(slug=_slug(rng, words, 2), vid="".join(rng.choice("abcdefghijkLMNOP0123456789_")
                                                                    for _ in range(11)),
                           Word=rng.choice(words).capitalize(), num=rng.randint(10000, 99999))


def _filler_page(rng: random.Random, host: str, topic: str, n_links: int) -> dict:
    """A non-seed page with a mix of internal, external and seed links."""
    words = (_STEEL_WORDS if topic == "steel" else _PHARMA_WORDS) + _GENERIC_WORDS
    path = f"{rng.choice(_GENERIC_WORDS)}/{rng.randint(2019, 2024)}/{_slug(rng, words)}"
    uri = f"https://{host}/{path}" + (".html" if rng.random() < 0.3 else "")
    links = []
    for _ in range(n_links):
        r = rng.random()
        if r < 0.30:
            url = rng.choice([f"/{_slug(rng, words, 2)}", f"{_slug(rng, words, 2)}.html",
                              f"/{rng.choice(_GENERIC_WORDS)}/", f"https://{host}/{_slug(rng, words, 1)}"])
            links.append(link(url, " ".join(rng.choice(words) for _ in range(rng.randint(1, 4))).capitalize()))
        elif r < 0.48:
            url = rng.choice(_SEED_LINKS[topic])
            links.append(link(url, rng.choice([None, "Visit website", "Company profile", url])))
        elif r < 0.72:
            links.append(link(_fill_external(rng, words), rng.choice([None, "Share", "Source", "Read more"])))
        elif r < 0.86:
            links.append(link(f"/media/{_slug(rng, words, 2)}.jpg", path="IMG@/src", alt=rng.choice(words)))
        elif r < 0.93:
            links.append(link(f"https://cdn.jsdelivr.net/npm/{rng.choice(words)}@1.{rng.randint(0, 9)}/dist/x.min.js",
                              path="SCRIPT@/src", type="text/javascript"))
        else:
            links.append(link("#", "Back to top"))
    title = " ".join(rng.choice(words) for _ in range(rng.randint(3, 7))).capitalize()
    return {"uri": uri, "title": title, "links": links, "note": f"non-seed page ({topic})",
            "head_link": [link(f"https://{host}/favicon.ico", path="LINK@/href", rel="icon"),
                          link(uri, path="LINK@/href", rel="canonical")]}


_COMMON_HEAD = [link("/favicon.ico", path="LINK@/href", rel="icon"),
                link("/assets/site.css", path="LINK@/href", rel="stylesheet", type="text/css")]
_COMMON_SCRIPTS = [
    link("https://www.googletagmanager.com/gtag/js?id=G-7Q2X9R", path="SCRIPT@/src", type="text/javascript"),
]


def _seed_pages_2024_10() -> list[list[dict]]:
    """Hand-written pages of CC-MAIN-2024-10, per WAT file; filler pages are added by ``sample_pages``."""
    f0 = [
        {
            "uri": "https://www.northforge-steel.com/",
            "title": "Northforge Steel – plate, coil & long products",
            "note": "seed S001 home: the full link-edge-case page",
            "head_link": _COMMON_HEAD + [link("https://www.northforge-steel.com/", path="LINK@/href", rel="canonical")],
            "scripts": _COMMON_SCRIPTS,
            "links": [
                link("/about", "About us"),
                link("/products/plate", "Plate"),
                link("products/coil.html", "Coil"),
                link("../x", "Up one level"),
                link("?q=1", "Search results"),
                link("#top", "Top"),
                link("https://www.northforge-steel.com/contact#form", "Contact"),
                link("https://www.northforge-steel.com:443/investors", "Investors"),
                link("//cdn.example.net/x", "Datasheet (protocol-relative)"),
                link("HTTP://WWW.ACME-STEEL.CO.UK/Partners", "Acme Steel (upper-case)"),
                link("https://ironvale.com.au/", "Ironvale"),
                link("https://ironvale.com.au/", "Ironvale"),
                link("https://ironvale.com.au/#about", "Ironvale – about"),
                link("http://www.kestrelmetals.com:8080/catalogue", "Kestrel Metals (port 8080)"),
                link("http://millbrook-forge.com:80/", "Millbrook Forge (port 80)"),
                link("https://www.helixora-pharma.com/", "Helixora (other research domain)"),
                link("https://www.oremount.com/products", path="AREA@/href", alt="Oremount on the map"),
                link("https://en.wikipedia.org/wiki/Steelmaking", "Steelmaking"),
                link("https://www.linkedin.com/company/northforge-steel", "LinkedIn"),
                link("https://twitter.com/northforge"),
                link("https://www.bbc.co.uk/news/business-68321977", "BBC Business"),
                link("https://www.abc.net.au/news/2024-02-19/steel-prices/103483920", "ABC News"),
                link("http://203.0.113.50/portal", "Supplier portal (IP host)"),
                link("HTTP://WWW.Example.COM/Path", "Example (upper-case)"),
                link("http://x.com:80/", "x (port 80)"),
                link("https://x.com:443/", "x (port 443)"),
                link("https://x.com/a#frag", "x (fragment)"),
                link("http://x.com:8080/status", "x (port 8080)"),
                link("mailto:sales@northforge-steel.com", "Email sales"),
                link("tel:+44-114-496-0000", "Call us"),
                link("javascript:void(0)", "Menu"),
                link("", "Empty href"),
                link("/img/logo.svg", path="IMG@/src", alt="Northforge"),
                link("https://images.northforge-cdn.net/hero.jpg", path="IMG@/src", alt=""),
                link("/feed.xml", path="LINK@/href", rel="alternate", type="application/rss+xml"),
                link("//cdn.jsdelivr.net/npm/jquery@3.7.1/dist/jquery.min.js", path="SCRIPT@/src"),
                link("https://www.northforge-steel.com/search", path="FORM@/action", method="get"),
                link("https://forms.formhost-example.com/submit/nf", path="FORM@/action", method="post"),
                link("https://www.steelnews-daily.com/", "Stahl & Eisen – Nachrichten: Über uns"),
            ],
        },
        {
            "uri": "https://www.northforge-steel.com/news/2024/new-mill.html",
            "title": "Northforge opens new rolling mill",
            "base": "https://static.northforge-steel.com/news/",
            "note": "absolute Head.Base on another subdomain: relative links resolve against it",
            "links": [
                link("img/mill.jpg", path="IMG@/src", alt="mill"),
                link("../press/", "Press"),
                link("related.html", "Related"),
                link("/", "Home"),
                link("?page=2", "Next"),
                link("https://www.baltic-alloys.de/en/", "Baltic Alloys"),
                link("//www.acme-steel.co.uk/news", "Acme news (protocol-relative)"),
            ],
        },
        {
            "uri": "https://www.northforge-steel.com/downloads/brochure-2024.pdf",
            "content_type": "application/pdf",
            "note": "non-HTML response: Payload-Metadata has no HTML-Metadata",
        },
        {
            "uri": "http://shop.acme-steel.co.uk/about",
            "title": "About ACME Steel shop",
            "note": "page on seed S002's host (shares acme-steel.co.uk with S010)",
            "links": [
                link("/", "Shop home"),
                link("https://www.acme-steel.co.uk/", "ACME Steel corporate"),
                link("https://www.northforge-steel.com/", "Northforge"),
                link("https://www.northforge-steel.com/", "Northforge again"),
                link("https://WWW.Baltic-Alloys.DE/kontakt", "Baltic (upper-case)"),
                link("http://192.0.2.7/", "Partner at IP"),
            ],
        },
        {
            "uri": "https://www.baltic-alloys.de/en/news",
            "title": "Baltic Alloys news",
            "malformed": "truncated_json",
            "note": "truncated JSON payload; the links below are what the record would have held",
            "links": [link("https://www.northforge-steel.com/", "Northforge"),
                      link("https://www.tarnhill-rolling.com/en/", "Tarnhill")],
        },
    ]
    f1 = [
        {
            "uri": "https://www.helixora-pharma.com/",
            "title": "Helixora Pharma",
            "note": "seed P001 home",
            "head_link": _COMMON_HEAD,
            "links": [
                link("/pipeline", "Pipeline"),
                link("https://careers.helixora-pharma.com/jobs", "Careers"),
                link("https://www.corvane-bio.co.uk/", "Corvane Bio"),
                link("http://Research.CORVANE-BIO.co.uk/pipeline", "Corvane research (upper-case host)"),
                link("https://medivista.com.au/", "MediVista"),
                link("https://medivista.com.au/"),
                link("http://www.lindqvist-labs.se:8443/", "Lindqvist Labs (port 8443)"),
                link("http://www.quantapharm.com:80/", "QuantaPharm (port 80)"),
                link("https://www.northforge-steel.com/", "Northforge (other research domain)"),
                link("https://www.ema.europa.eu/en/medicines", "EMA"),
                link("http://198.51.100.23/api", "IP host"),
                link("https://www.clinicaltrials-watch.org/study/NCT05512345", "Trial"),
                link("mailto:info@helixora-pharma.com"),
                link("https://www.helixora-pharma.com/contact", path="FORM@/action", method="post"),
                link("https://www.kalinex.de/en/", path="AREA@/href", alt="Kalinex"),
            ],
        },
        {
            "uri": "https://careers.helixora-pharma.com/jobs",
            "title": "Jobs at Helixora",
            "base": "/jobs/listing/",
            "note": "RELATIVE Head.Base (resolve it against the target URI first, or skip it)",
            "links": [link("senior-chemist.html", "Senior chemist"), link("/", "Careers home"),
                      link("https://www.helixora-pharma.com/", "Helixora")],
        },
        {
            "uri": "https://www.corvane-bio.co.uk/",
            "title": "Corvane Bio",
            "note": "seed P002 home",
            "links": [link("http://research.corvane-bio.co.uk/pipeline", "Research"),
                      link("https://www.helixora-pharma.com/", "Helixora"),
                      link("https://sanovia-health.com", "Sanovia"),
                      link("https://www.apothecary-news.co.uk/corvane", "Press")],
        },
        {
            "uri": "https://www.argenta-therapeutics.com/news",
            "title": "Argenta news",
            "malformed": "links_not_list",
            "note": "HTML-Metadata.Links is an object, not a list",
            "links": {"path": "A@/href", "url": "https://www.helixora-pharma.com/", "text": "Helixora"},
        },
        {
            "uri": "https://medivista.com.au/",
            "title": "MediVista",
            "status": 200,
            "note": "seed P004 home; no links at all (HTML-Metadata without Links)",
        },
        {
            "uri": "http://www.quantapharm.com/",
            "status": 301,
            "location": "https://www.quantapharm.com/",
            "title": "301 Moved Permanently",
            "note": "redirect response with a single link",
            "links": [link("https://www.quantapharm.com/", "here")],
        },
    ]
    f2 = [
        {
            "uri": "http://www.kestrelmetals.com:8080/",
            "title": "Kestrel Metals",
            "note": "seed S005 home served on port 8080",
            "links": [link("/catalogue", "Catalogue"), link("https://ironvale.com.au/", "Ironvale"),
                      link("https://www.greyrock-steel.com/", "Greyrock")],
        },
        {
            "uri": "https://WWW.Baltic-Alloys.DE/kontakt",
            "title": "Kontakt – Baltic Alloys",
            "lang": "deu",
            "note": "upper-case host in the target URI",
            "links": [link("/", "Startseite"), link("impressum.html", "Impressum"),
                      link("https://www.northforge-steel.com/", "Northforge"),
                      link("https://steelbridge-tubes.nl/index.html", "Steelbridge Tubes")],
        },
        {
            "uri": "http://192.0.2.7/index.html",
            "title": "Intranet",
            "note": "page on an IP host (seed S009 is an invalid IP seed)",
            "links": [link("https://www.acme-steel.co.uk/", "ACME"), link("/login", "Login")],
        },
        {
            "uri": "https://www.oremount.com/products",
            "title": "Oremount products",
            "malformed": "missing_envelope",
            "note": "valid JSON without Envelope",
            "links": [link("https://ironvale.com.au/", "Ironvale")],
        },
        {
            "uri": "",
            "title": "Lost page",
            "malformed": "empty_target_uri",
            "note": "empty WARC-Target-URI; its links have no source",
            "links": [link("https://www.northforge-steel.com/", "Northforge"), link("/about", "About")],
        },
        {
            "uri": "https://www.tarnhill-rolling.com/en/",
            "title": "Tarnhill Rolling",
            "note": "seed S013 home",
            "links": [link("products/", "Products"), link("https://millbrook-forge.com", "Millbrook"),
                      link("https://www.northforge-steel.com/", "Northforge"),
                      link("https://www.mining-weekly.com.au/tarnhill", "Mining Weekly")],
        },
        {
            "uri": "https://www.northforge-steel.com/",
            "title": "Northforge Steel – plate, coil & long products",
            "note": "the same URL fetched again in another WAT file of the same crawl",
            "links": [link("/about", "About us"), link("https://ironvale.com.au/", "Ironvale")],
        },
    ]
    return [f0, f1, f2]


def _seed_pages_2024_18() -> list[list[dict]]:
    f0 = [
        {
            "uri": "https://www.northforge-steel.com/",
            "title": "Northforge Steel",
            "note": "seed S001 home, changed since 2024-10",
            "head_link": _COMMON_HEAD,
            "links": [
                link("/about", "About us"),
                link("https://www.acme-steel.co.uk/", "ACME"),
                link("https://www.greyrock-steel.com/", "Greyrock"),
                link("HTTPS://IRONVALE.COM.AU:443/", "Ironvale"),
                link("https://www.oremount.com:8443/portal", "Oremount portal (port 8443)"),
                link("https://www.linkedin.com/company/northforge-steel"),
                link("tel:+44-114-496-0000", "Call"),
                link("https://www.northforge-steel.com/search", path="FORM@/action", method="get"),
                link("https://www.kalinex.de/en/", "Kalinex (pharma)"),
            ],
        },
        {
            "uri": "https://steelbridge-tubes.nl/index.html",
            "title": "Steelbridge Tubes",
            "base": "https://steelbridge-tubes.nl/nl/",
            "note": "seed S016 home, absolute Head.Base with a different path",
            "links": [link("producten.html", "Producten"), link("../en/", "English"),
                      link("https://www.baltic-alloys.de/en/", "Baltic Alloys"),
                      link("https://www.baltic-alloys.de/en/", "Baltic Alloys")],
        },
        {
            "uri": "https://www.acme-steel.co.uk/",
            "title": "ACME Steel",
            "note": "seed S010 home",
            "links": [link("http://shop.acme-steel.co.uk/", "Shop"), link("https://www.northforge-steel.com/"),
                      link("https://www.construction-materials.co.uk/acme", "Listing"),
                      link("https://www.acme-steel.co.uk/map", path="AREA@/href")],
        },
        {
            "uri": "https://www.oremount.com/products",
            "title": "Oremount products",
            "malformed": "links_not_list",
            "note": "HTML-Metadata.Links is a string, not a list",
            "links": "https://ironvale.com.au/",
        },
    ]
    f1 = [
        {
            "uri": "https://www.kalinex.de/en/",
            "title": "Kalinex",
            "note": "seed P013 home",
            "links": [link("../de/", "Deutsch"), link("https://www.helixora-pharma.com/", "Helixora"),
                      link("https://medivista.com.au/trials", "MediVista trials"),
                      link("https://www.pellucid-rx.com/", "Pellucid")],
        },
        {
            "uri": "https://sanovia-health.com/",
            "title": "Sanovia Health",
            "malformed": "truncated_json",
            "note": "truncated JSON payload",
            "links": [link("https://www.corvane-bio.co.uk/", "Corvane")],
        },
        {
            "uri": "https://www.helixora-pharma.com/annual-report-2023.pdf",
            "content_type": "application/pdf",
            "note": "non-HTML response",
        },
        {
            "uri": "https://www.helixora-pharma.com/media/logo.png",
            "content_type": "image/png",
            "note": "non-HTML response (image)",
        },
        {
            "uri": "",
            "malformed": "empty_target_uri",
            "title": "Untitled",
            "note": "empty WARC-Target-URI",
            "links": [link("https://www.kalinex.de/en/", "Kalinex")],
        },
    ]
    f2 = [
        {
            "uri": "http://www.lindqvist-labs.se:8443/",
            "title": "Lindqvist Labs",
            "note": "seed P005 home on port 8443",
            "links": [link("/om-oss", "Om oss"), link("https://www.helixora-pharma.com/", "Helixora"),
                      link("http://www.lindqvist-labs.se:8443/kontakt#karta", "Kontakt")],
        },
        {
            "uri": "https://www.argenta-therapeutics.com/",
            "title": "Argenta Therapeutics",
            "malformed": "missing_envelope",
            "note": "valid JSON without Envelope",
            "links": [link("https://www.corvane-bio.co.uk/", "Corvane")],
        },
    ]
    return [f0, f1, f2]


def sample_pages(crawl: str, seed: int = 20240301) -> list[list[dict]]:
    """The pages of every WAT file of one sample crawl: hand-written edge cases plus non-seed filler."""
    hand = {"CC-MAIN-2024-10": _seed_pages_2024_10, "CC-MAIN-2024-18": _seed_pages_2024_18}[crawl]()
    rng = random.Random(f"{seed}:{crawl}:pages")
    files = []
    for i, pages in enumerate(hand):
        fill = []
        for j in range(9 + i):
            host = _NON_SEED_HOSTS[(j * 7 + i * 5 + len(crawl)) % len(_NON_SEED_HOSTS)]
            topic = "steel" if (i + j) % 2 == 0 else "pharma"
            fill.append(_filler_page(rng, host, topic, rng.randint(8, 40)))
        # A non-seed page linking to seeds, and the same link as the first seed page (same link, two pages).
        fill.append({
            "uri": f"https://www.steelnews-daily.com/2024/{'02' if crawl.endswith('10') else '04'}/market-report-{i}",
            "title": "Steel market report",
            "note": "non-seed page linking to many seeds",
            "links": [link("https://ironvale.com.au/", "Ironvale"), link("https://www.acme-steel.co.uk/", "ACME"),
                      link("https://www.helixora-pharma.com/", "Helixora"),
                      link("/2024/archive", "Archive"), link("https://www.steelnews-daily.com/", "Home")],
        })
        mixed = list(pages)
        for k, page in enumerate(fill):  # interleave filler between the hand-written pages
            mixed.insert(min(len(mixed), 1 + 2 * k), page)
        files.append(mixed)
    return files


def _gzip_text(text: str) -> bytes:
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def make_sample(out_dir: str | Path = "sample_data", *, seed: int = 20240301) -> dict:
    """Write the shipped sample under ``out_dir``; returns a summary (files, record counts, bytes)."""
    out = Path(out_dir)
    summary: dict[str, Any] = {"crawls": {}, "seeds": {}}
    for crawl, spec in CRAWLS.items():
        crawl_dir = out / "cc" / "crawl-data" / crawl
        paths = []
        files_truth = []
        all_pages = sample_pages(crawl, seed)
        for (segment, stem), pages in zip(spec["files"], all_pages, strict=True):
            wat_name = f"{stem}.warc.wat.gz"
            rel = f"crawl-data/{crawl}/segments/{segment}/wat/{wat_name}"
            records, truth = build_wat(pages, crawl=crawl, wat_filename=wat_name, description=spec["description"],
                                       extracted=spec["extracted"], seed=seed)
            offsets = write_wat(out / "cc" / rel, records)
            for entry, off in zip(truth, offsets, strict=True):
                entry["offset"] = off
            paths.append(rel)
            files_truth.append({"path": rel, "warc_filename": f"{stem}.warc.gz", "record_count": len(records),
                                "records": truth})
        (crawl_dir / "wat.paths.gz").write_bytes(_gzip_text("".join(p + "\n" for p in paths)))
        malformed = [
            {"path": f["path"], "index": r["index"], "record_id": r["record_id"], "target_uri": r["target_uri"],
             "kind": r["malformed"], "description": MALFORMED_KINDS[r["malformed"]]}
            for f in files_truth for r in f["records"] if r["malformed"]
        ]
        truth_doc = {
            "crawl": crawl,
            "generated_by": "scripts/make_sample_data.py",
            "wat_paths": paths,
            "files": files_truth,
            "malformed": malformed,
        }
        gt = out / "ground_truth" / f"{crawl}.json"
        gt.parent.mkdir(parents=True, exist_ok=True)
        gt.write_text(json.dumps(truth_doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        summary["crawls"][crawl] = {f["path"]: f["record_count"] for f in files_truth}

    seeds = sample_seeds()
    for domain, rows in seeds.items():
        path = out / "seeds" / f"{domain}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["company_id", "url"])
            writer.writerows([r["company_id"], r["url"]] for r in rows)
        summary["seeds"][domain] = len(rows)
    (out / "ground_truth" / "seeds.json").write_text(
        json.dumps({"domains": seeds, "note": "'case' labels what each raw row is meant to exercise"},
                   ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    summary["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return summary


# ---------------------------------------------------------------------------------------------
# Benchmark file
# ---------------------------------------------------------------------------------------------


#: Hosts of seed companies in the shipped sample, handy as ``seed_hosts`` for ``make_benchmark_wat``.
BENCHMARK_SEED_HOSTS = (
    "www.northforge-steel.com", "shop.acme-steel.co.uk", "www.acme-steel.co.uk", "www.baltic-alloys.de",
    "ironvale.com.au", "www.oremount.com", "www.tarnhill-rolling.com", "millbrook-forge.com", "steelbridge-tubes.nl",
    "www.helixora-pharma.com", "careers.helixora-pharma.com", "www.corvane-bio.co.uk", "medivista.com.au",
    "www.kalinex.de", "sanovia-health.com",
)


def make_benchmark_wat(
    path: str | Path,
    n_records: int,
    seed_share: float,
    seed_hosts: Sequence[str],
    *,
    seed: int = 7,
    links_per_page: tuple[int, int] = (50, 150),
    seed_link_share: float = 0.03,
    crawl: str = "CC-MAIN-2024-10",
    compresslevel: int = 6,
) -> dict:
    """Write one large WAT file with at least ``n_records`` WARC records.

    Pages come in request/response/metadata triples; ``round(i * seed_share)`` steps decide which
    response records have a target URI on one of ``seed_hosts`` (so the share is exact up to one
    record). Each HTML page has ``links_per_page`` links (uniform), of which about ``seed_link_share``
    point at seed hosts; the rest are internal (relative and absolute), external, images and scripts.
    Returns counts: records, responses, seed_responses, links, seed_links, bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not 0.0 <= seed_share <= 1.0:
        raise ValueError("seed_share must be within [0, 1]")
    seed_hosts = list(seed_hosts)
    if seed_share > 0 and not seed_hosts:
        raise ValueError("seed_share > 0 needs seed_hosts")
    rng = random.Random(f"bench:{seed}")
    wat_name = path.name
    if not wat_name.endswith(".warc.wat.gz"):
        wat_name = "CC-MAIN-20240220211055-20240221001055-09999.warc.wat.gz"
    warc_filename = wat_name.replace(".warc.wat.gz", ".warc.gz")
    start = _start_from_name(wat_name)
    words = _STEEL_WORDS + _PHARMA_WORDS + _GENERIC_WORDS

    # Pools of pre-serialised link JSON fragments: building the Links array is a join, not a dumps.
    def frag(obj: dict) -> str:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

    other_hosts = [f"www.{_slug(rng, words, 2)}.{rng.choice(['com', 'org', 'net', 'de', 'co.uk', 'com.au', 'fr'])}"
                   for _ in range(400)] + list(_NON_SEED_HOSTS)
    internal = [frag(link(rng.choice([f"/{_slug(rng, words, 2)}", f"{_slug(rng, words, 1)}.html",
                                      f"/{rng.choice(_GENERIC_WORDS)}/{_slug(rng, words, 3)}/", f"?page={k}", "#"]),
                          " ".join(rng.choice(words) for _ in range(rng.randint(1, 5))).capitalize()))
                for k in range(3000)]
    external = [frag(link(f"https://{rng.choice(other_hosts)}/{_slug(rng, words, rng.randint(1, 4))}",
                          rng.choice([None, "Read more", "Source", " ".join(rng.sample(words, 3))])))
                for _ in range(5000)]
    external += [frag(link(_fill_external(rng, words))) for _ in range(1000)]
    media = [frag(link(f"/wp-content/uploads/2024/0{rng.randint(1, 9)}/{_slug(rng, words, 2)}.jpg", path="IMG@/src",
                       alt=rng.choice(words))) for _ in range(1500)]
    media += [frag(link(f"https://cdn.{rng.choice(other_hosts)[4:]}/js/{rng.choice(words)}.min.js", path="SCRIPT@/src"))
              for _ in range(300)]
    seed_frags = [frag(link(f"{rng.choice(['https', 'http'])}://{h}/{rng.choice(['', 'about', 'products/', 'en/'])}",
                            rng.choice([None, "Website", h])))
                  for h in seed_hosts for _ in range(20)] if seed_hosts else []
    seed_set = set(seed_frags)
    # One pool in the wanted proportions (~3% seed links, ~14% media, the rest internal/external), so a
    # page's links are a single rng.choices() call.
    pool_size = 20_000
    n_seed_pool = round(pool_size * seed_link_share) if seed_frags else 0
    n_media_pool = pool_size * 14 // 100
    n_internal_pool = (pool_size - n_seed_pool - n_media_pool) * 45 // 100
    n_external_pool = pool_size - n_seed_pool - n_media_pool - n_internal_pool
    pool = (rng.choices(internal, k=n_internal_pool) + rng.choices(external, k=n_external_pool)
            + rng.choices(media, k=n_media_pool) + (rng.choices(seed_frags, k=n_seed_pool) if n_seed_pool else []))
    rng.shuffle(pool)

    wat_info_id = _record_id(rng)
    warc_info_id = _record_id(rng)
    offsets_pos = 0
    counts = {"records": 0, "responses": 0, "seed_responses": 0, "links": 0, "seed_links": 0}
    lo, hi = links_per_page
    with open(path, "wb") as fh:
        def emit(record: WarcRecord) -> None:
            nonlocal offsets_pos
            member = _gzip_member(record.to_bytes(), compresslevel)
            fh.write(member)
            offsets_pos += len(member)
            counts["records"] += 1

        emit(warcinfo_record(wat_name, crawl=crawl, record_id=wat_info_id))
        emit(metadata_record(warc_filename, _warc_warcinfo_payload(warc_filename, warc_info_id, crawl,
                                                                   "Wide crawl of the web", start),
                             date=_warc_date(start), record_id=_record_id(rng), refers_to=warc_info_id))
        when = start
        offset = 539
        i = 0
        while counts["records"] < n_records:
            is_seed = round((i + 1) * seed_share) > round(i * seed_share)
            host = seed_hosts[i % len(seed_hosts)] if is_seed else other_hosts[rng.randrange(len(other_hosts))]
            uri = f"https://{host}/{rng.choice(_GENERIC_WORDS)}/{_slug(rng, words, 3)}"
            when += dt.timedelta(milliseconds=rng.randint(50, 900))
            page = {"uri": uri, "title": " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))).capitalize(),
                    "head_link": [link("/favicon.ico", path="LINK@/href", rel="icon")]}
            cap = _Capture(rng, page, warc_filename, warc_info_id, when.replace(microsecond=0), offset)
            offset = cap.end_offset
            n = rng.randint(lo, hi)
            parts = rng.choices(pool, k=n)
            n_seed = sum(p in seed_set for p in parts) if seed_set else 0
            counts["links"] += n
            counts["seed_links"] += n_seed

            emit(metadata_record(uri, _request_payload(cap), date=cap.date, record_id=cap.wat_ids[0],
                                 refers_to=cap.request_id))
            body = _encode_payload(_response_payload(cap, page, rng, links_json="x"))
            body = body.replace(b'"\\u0000LINKS\\u0000"', ("[" + ",".join(parts) + "]").encode("utf-8"), 1)
            emit(metadata_record(uri, body, date=cap.date, record_id=cap.wat_ids[1], refers_to=cap.response_id))
            counts["responses"] += 1
            counts["seed_responses"] += is_seed
            emit(metadata_record(uri, _metadata_payload(cap, page), date=cap.date, record_id=cap.wat_ids[2],
                                 refers_to=cap.metadata_id))
            i += 1
    counts["bytes"] = path.stat().st_size
    return counts


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="sample_data", help="output folder (default: sample_data)")
    parser.add_argument("--benchmark", metavar="PATH", help="also write a benchmark WAT file here")
    parser.add_argument("--records", type=int, default=20_000, help="benchmark: minimum number of records")
    parser.add_argument("--seed-share", type=float, default=0.01, help="benchmark: share of seed responses")
    args = parser.parse_args(argv)
    summary = make_sample(args.out)
    for crawl, files in summary["crawls"].items():
        for rel, n in files.items():
            print(f"{crawl}: {rel}: {n} records")
    print(f"seeds: {summary['seeds']}; total {summary['bytes']} bytes under {args.out}")
    if args.benchmark:
        print(make_benchmark_wat(args.benchmark, args.records, args.seed_share, BENCHMARK_SEED_HOSTS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
