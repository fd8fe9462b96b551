"""Edges from Common Crawl WAT files: the hot loop of the pipeline.

The WARC header of each WAT record names the page (``WARC-Target-URI``) before its JSON
payload is touched, so records of pages outside the node domains (~99% of a crawl for a
research domain) are skipped without reading, let alone parsing, their payload. Only node
pages pay for ``orjson`` and the link walk.

A file is read only if its whole gzip stream (one member per record as Common Crawl writes
it, or one member, or any mix) ends cleanly at the end of the file; anything else raises
``CorruptInputError`` after the last record, so a partial copy is a failed file, never a file
with fewer records. The check costs no second pass and no seek (see ``_EndMarked``).

Where FastWARC 2 is not installed (Python 3.9, EMR 7.x's ``python3``: no FastWARC release
installs there from a wheel on every node, see jobs/requirements.txt), the same records come
from ``inputs.gunzip_members`` and a small WARC reader in Python (``_python_records``), with
the same integrity verdict: the same ``CorruptInputError`` code, at the same byte, for the same
bytes. It extracts edges at about half FastWARC's speed when 1% of the pages are nodes' (zlib
inflates slower than FastWARC's inflater) and ~85% when all are (benchmarks/edges_throughput.py's
files, one core), at 1% still ~13x the speed of its baseline, warcio reading every record.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import orjson

from jobs.common.inputs import GZIP_MAGIC, CorruptInputError, gunzip_members
from jobs.common.urls import PageLinks, page_base, page_domain, target_uri

try:
    from fastwarc.stream_io import GzipReader
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    FASTWARC = hasattr(GzipReader, "frame_start_position")  # 2.x; 1.x and 0.x differ
except ImportError:
    FASTWARC = False

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


# An empty gzip member (20 bytes), handed to FastWARC's GzipReader after the file's last byte.
_END_MARK = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x03\x00" + bytes(8)


class _EndMarked(io.RawIOBase):
    """A file's compressed bytes, then ``_END_MARK``, for FastWARC's GzipReader.

    GzipReader inflates at several times the speed of Python's zlib (a zlib reader feeding
    FastWARC cost this loop ~40% of its throughput, measured) but stops quietly inside a cut
    member. A member can start at the end mark's
    offset only if the file's last member ended exactly at the file's end, so after the last
    record ``frame_start_position() == length`` tells a whole file from a partial one: no
    second pass, and no seek (network bodies cannot go back).
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.length = 0  # bytes read from the file
        self.ended = False  # the file is read to its end and the end mark handed out
        self.head = None  # the first bytes, when they are not gzip (not passed on)
        self.error: BaseException | None = None  # what the file raised, kept in case FastWARC swallows it
        self._last, self._last_at = b"", 0  # the latest bytes read, and their offset

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        if self.ended or self.head is not None:
            return b""
        try:
            data = self._raw.read(size)
            while self.length == 0 and 0 < len(data) < 2:  # the magic must be whole to be checked
                more = self._raw.read(size)
                if not more:
                    break
                data += more
        except BaseException as exc:
            self.error = exc
            raise
        if not data:
            self.ended = True
            return _END_MARK
        if self.length == 0 and data[:2] != GZIP_MAGIC and data != GZIP_MAGIC[:1]:
            self.head = data[:16]
            return b""
        self._last, self._last_at = data, self.length
        self.length += len(data)
        return data

    def _no_member_at(self, offset: int) -> bool:
        at = offset - self._last_at
        return 0 <= at <= len(self._last) - 2 and self._last[at:at + 2] != GZIP_MAGIC

    def failure(self, reader: GzipReader, during: BaseException | None = None) -> BaseException | None:
        """Why the file is not a whole gzip stream of WARC records, or None when it is;
        ``during``: what FastWARC raised, if it did."""
        if self.error is not None:
            return self.error  # the file's own error: a broken transfer stays transient
        if self.head is not None:
            return CorruptInputError.not_gzip(self.head)
        if self.length == 0 and self.ended:
            return CorruptInputError.empty()
        member = reader.frame_start_position() or 0  # where the member being decoded starts
        if during is not None and self._no_member_at(member):
            return CorruptInputError.corrupt(member, "bytes that are not gzip after the last gzip member")
        if self.ended and member != self.length:  # the last member never ended
            return CorruptInputError.truncated(member, self.length)
        if during is not None and member == self.length:  # every member decoded: they hold no WARC
            return CorruptInputError.corrupt(member, f"data that is not WARC records ({during}) before the end")
        if during is not None:
            return CorruptInputError.corrupt(member, f"a gzip member that does not decode or holds no WARC ({during})")
        if not self.ended:
            return CorruptInputError.corrupt(member, "FastWARC stopped before the end of the file, in the gzip member")
        return None


def warc_records(stream: BinaryIO, warc_type: str | None = None) -> Iterator:
    """The WARC records of a gzip WARC/WAT ``stream`` (of ``warc_type`` only, if given; one
    record object, reused: read its payload before the next); raises after the last one unless
    the whole gzip stream ended cleanly at the end of the file. Records already yielded from a
    file that then fails must be thrown away with it."""
    return _records(stream, warc_type)


def _fastwarc_records(stream: BinaryIO, warc_type: str | None = None) -> Iterator:
    record_types = getattr(WarcRecordType, warc_type) if warc_type else WarcRecordType.any_type
    source = _EndMarked(stream)
    reader = GzipReader(source)
    progress = None
    while True:
        try:
            yield from ArchiveIterator(reader, record_types=record_types, parse_http=False, fsspec_args=False,
                                       inplace=True, stream_detect=False)
        except OSError as exc:  # FastWARC's errors, and the file's own (raised as they are: maybe transient)
            failure = source.failure(reader, during=exc)
            if failure is exc:
                raise
            raise failure from exc
        if source.ended or source.head is not None or source.error is not None:
            break
        # GzipReader ends a read at an empty gzip member as if at the end of the file: go on
        # after it (each round passes at least one member, else stop and say so)
        now = (reader.frame_start_position(), reader.tell())
        if now == progress:
            break
        progress = now
    failure = source.failure(reader)
    if failure is not None:
        raise failure


class _Headers(dict):
    """WARC header fields by lower-case name; ``get`` ignores case, as FastWARC's does."""

    def get(self, name: str, default: str | None = None) -> str | None:
        return dict.get(self, name.lower(), default)


class _Record:
    """A record of ``_python_records``: ``headers`` and ``reader.read()``, as FastWARC's."""

    __slots__ = ("headers", "_data", "_start", "_end")

    def __init__(self, headers: _Headers, data: bytes, start: int, end: int) -> None:
        self.headers, self._data, self._start, self._end = headers, data, start, end

    @property
    def reader(self) -> _Record:
        return self

    def read(self, size: int = -1) -> bytes:
        end = self._end if size is None or size < 0 else min(self._end, self._start + size)
        data, self._start = self._data[self._start:end], end
        return data


_HEADER_END = b"\r\n\r\n"
_WARC_VERSIONS = frozenset({"WARC/1.0", "WARC/1.1", "WARC/0.17", "WARC/0.18"})  # the ones FastWARC reads
_MAX_HEADER = 1 << 20  # no WARC header block is near this: a file without one is not WARC


def _python_records(stream: BinaryIO, warc_type: str | None = None) -> Iterator[_Record]:
    """``_fastwarc_records`` without FastWARC: the gzip stream through ``gunzip_members``
    (which raises the same CorruptInputError, at the same byte, for a file that is not a whole
    gzip stream), the WARC records split here, as FastWARC splits them. Data that is not WARC
    records is ``corrupt`` at the start of the gzip member it was found in, or at the end of the
    file when the file ends inside it; a record whose payload the end of the data cuts is read
    short. Stricter than FastWARC in one way: a record without a Content-Length, or with header
    lines that do not end in CRLF, is ``corrupt`` here (FastWARC guesses where it ends)."""
    pieces = gunzip_members(stream)
    buf, at, member = b"", 0, 0  # the data not split yet is buf[at:]; the member its last piece came from
    ended = False

    def pull() -> bool:  # append the next piece of data to buf; False at the end of the data
        nonlocal buf, at, member, ended
        if ended:
            return False
        try:
            member, piece = next(pieces)
        except StopIteration as stop:
            member, ended = stop.value, True  # the file's length: where data that became no record ends
            return False
        buf = buf[at:] + piece if at < len(buf) else piece
        at = 0
        return True

    while True:
        while True:  # the next header block, after the blank lines that end the previous record
            if buf.startswith(_HEADER_END, at):  # as every record ends
                at += len(_HEADER_END)
            while at < len(buf) and buf[at] in b"\r\n":
                at += 1
            end = buf.find(_HEADER_END, at)
            if end >= 0:
                break
            if len(buf) - at > _MAX_HEADER:
                raise CorruptInputError.corrupt(member, "data that is not WARC records (no header end)")
            if not pull():
                if at < len(buf):
                    raise CorruptInputError.corrupt(member, "data that is not WARC records (a cut WARC header) "
                                                            "before the end")
                return
        lines = buf[at:end].decode("utf-8", "replace").split("\r\n")
        if lines[0].rstrip() not in _WARC_VERSIONS:
            raise CorruptInputError.corrupt(member, "data that is not WARC records (Invalid WARC header)")
        headers = _Headers()
        name = None
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and name is not None:  # a folded line continues the field
                headers[name] = f"{headers[name]} {line.strip()}".strip()
                continue
            name, colon, value = line.partition(":")
            if not colon:
                raise CorruptInputError.corrupt(member, f"data that is not WARC records (header line {line[:80]!r})")
            name = name.strip().lower()
            headers[name] = value.strip()
        length = dict.get(headers, "content-length")
        if length is None or not length.lstrip("+").isdigit():  # (FastWARC guesses where such a record ends)
            raise CorruptInputError.corrupt(member, f"data that is not WARC records (Content-Length {length!r})")
        start = end + len(_HEADER_END)
        stop = start + int(length)
        while len(buf) < stop:  # the payload goes on in the next pieces
            dropped = at  # pull() drops buf[:at]
            if not pull():
                stop = len(buf)  # cut short by the end of the data: read as it is
                break
            start, stop = start - dropped, stop - dropped
        if warc_type is None or dict.get(headers, "warc-type") == warc_type:
            yield _Record(headers, buf, start, stop)
        at = stop


_records = _fastwarc_records if FASTWARC else _python_records


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
    resolver = PageLinks(page_base(target, base))
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

    Raises CorruptInputError after the last edge unless the file is whole (``warc_records``):
    a caller keeps the edges and counts of a file only if this finishes without an error.
    """
    records = no_target = on_nodes = 0  # plain locals: this loop runs for every record of a crawl
    try:
        for record in _records(stream, "metadata"):
            records += 1
            target = record.headers.get("WARC-Target-URI")
            if target:
                target = target_uri(target)  # WARC 1.0 writers put it in <...>
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
