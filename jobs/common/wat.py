"""Edges from Common Crawl WAT files: the hot loop of the pipeline.

The WARC header of each WAT record names the page (``WARC-Target-URI``) before its JSON
payload is touched, so records of pages outside the node domains (~99% of a crawl for a
research domain) are skipped without reading, let alone parsing, their payload. Only node
pages pay for ``orjson`` and the link walk.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import BinaryIO
from urllib.parse import urljoin

import orjson
from fastwarc.warc import ArchiveIterator, WarcRecordType

from jobs.common.urls import PageLinks, page_domain

LINK_PATHS = frozenset({"A@/href", "AREA@/href"})

Edge = tuple[str, str, str, str, str]  # src_url, src_rd, dst_url, dst_host, dst_rd

# Counter names (reported as job metrics, summed over files).
COUNTERS = (
    "wat_records",  # metadata records read (all pages)
    "node_records",  # ... whose target URI is on a node's registered domain
    "response_records",  # ... that describe an HTTP response (the ones edges come from)
    "non_html_records",  # response without HTML metadata (PDF, image, ...)
    "malformed_json",  # payload is not JSON
    "missing_fields",  # JSON without the Envelope / WARC-Type / Links structure
    "links_seen",  # A@/href and AREA@/href links on node pages
    "links_dropped",  # ... not http(s) or without a registrable host
)


class TruncatedWatError(ValueError):
    """The file ends inside its last gzip member: a partial copy, not a transient error."""


def _member_is_cut(stream: BinaryIO, offset: int) -> bool:
    stream.seek(offset)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    while not inflater.eof:
        chunk = stream.read(1 << 16)
        if not chunk:
            return True
        inflater.decompress(chunk)
    return False


def page_edges(payload: bytes, target: str, src_rd: str, counts: Counter) -> Iterable[Edge]:
    """Edges of one node page's WAT JSON; bad records are counted, never raised."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        counts["malformed_json"] += 1
        return ()
    try:
        envelope = doc["Envelope"]
        warc_type = envelope["WARC-Header-Metadata"]["WARC-Type"]
    except (KeyError, TypeError):
        counts["missing_fields"] += 1
        return ()
    if warc_type != "response":
        return ()
    counts["response_records"] += 1
    try:
        html = envelope["Payload-Metadata"]["HTTP-Response-Metadata"].get("HTML-Metadata")
    except (KeyError, TypeError, AttributeError):
        html = None
    if html is None:
        counts["non_html_records"] += 1
        return ()
    links = html.get("Links", []) if isinstance(html, dict) else None
    head = html.get("Head") if isinstance(html, dict) else None
    base = head.get("Base") if isinstance(head, dict) else None
    if not isinstance(links, list) or (base is not None and not isinstance(base, str)):
        counts["missing_fields"] += 1
        return ()
    resolver = PageLinks(urljoin(target, base) if base else target)
    edges = []
    seen = dropped = 0
    for link in links:
        if not isinstance(link, dict) or link.get("path") not in LINK_PATHS:
            continue
        seen += 1
        url = link.get("url")
        normalized = resolver.resolve(url) if isinstance(url, str) else None
        if normalized is None:
            dropped += 1
            continue
        edges.append((target, src_rd, *normalized))
    counts["links_seen"] += seen
    counts["links_dropped"] += dropped
    return edges


def edges_from_wat(stream: BinaryIO, node_domains: frozenset[str] | set[str], counts: Counter) -> Iterator[Edge]:
    """All edges of one WAT file whose source page is on a node's registered domain.

    FastWARC stops quietly at a cut-off gzip member, so on a seekable (local) stream the
    last member is checked for its end marker; remote clients check the length themselves.
    """
    records = no_target = on_nodes = 0  # plain locals: this loop runs for every record of a crawl
    last_offset = None
    # inplace: one record object reused for every record (its payload is read before the next)
    for_each = ArchiveIterator(
        stream, record_types=WarcRecordType.metadata, parse_http=False, fsspec_args=False, inplace=True
    )
    try:
        for record in for_each:
            records += 1
            last_offset = record.stream_pos
            target = record.headers.get("WARC-Target-URI")
            if not target:
                no_target += 1
                continue
            src_rd = page_domain(target)
            if src_rd is None or src_rd not in node_domains:
                continue  # the payload of this record is never read
            on_nodes += 1
            yield from page_edges(record.reader.read(), target, src_rd, counts)
    finally:
        counts["wat_records"] += records
        counts["missing_fields"] += no_target
        counts["node_records"] += on_nodes
    if last_offset is not None and getattr(stream, "seekable", lambda: False)() and _member_is_cut(stream, last_offset):
        raise TruncatedWatError(f"the WAT file is truncated: its last gzip member (at byte {last_offset}) never ends")
