"""Input integrity: a WAT file is read only if its whole gzip stream (one member or many) ends
cleanly at the end of the file; a partial copy is a failed file, never a file with fewer records.
Locally, over HTTP and from S3; and the edges step fails (keeping the previous partition) when
more listed files failed than ``max_failed_files`` allows."""

from __future__ import annotations

import functools
import gzip
import http.client
import http.server
import io
import shutil
import threading
import zlib
from collections import Counter

import pytest

from .support import ROOT
from jobs.common import inputs
from jobs.common.inputs import CorruptInputError, gunzip, wat_paths, with_retries
from jobs.common.wat import edges_from_wat
from .test_graph_jobs import rows, run_step

SAMPLE_CC = ROOT / "sample_data" / "cc"
SAMPLE_WATS = sorted(SAMPLE_CC.glob("crawl-data/*/segments/*/wat/*.warc.wat.gz"))
# node domains of both seed lists, so every sample file yields edges
NODES = frozenset({
    "acme-steel.co.uk", "argenta-therapeutics.com", "baltic-alloys.de", "corvane-bio.co.uk", "greyrock-steel.com",
    "helixora-pharma.com", "hollins-wire.com", "ironvale.com.au", "kalinex.de", "kestrelmetals.com",
    "lindqvist-labs.se", "medivista.com.au", "millbrook-forge.com", "northforge-steel.com", "orbismed.com",
    "oremount.com", "pellucid-rx.com", "quantapharm.com", "sanovia-health.com", "steelbridge-tubes.nl",
    "tarnhill-rolling.com",
})
CRAWL = "CC-MAIN-2024-10"


def member_starts(data: bytes) -> list[int]:
    """Where each gzip member starts, found with zlib alone (not with the code under test)."""
    starts, pos = [], 0
    while pos < len(data):
        inflater = zlib.decompressobj(31)
        inflater.decompress(data[pos:])
        assert inflater.eof, "the sample files are whole"
        starts.append(pos)
        pos = len(data) - len(inflater.unused_data)
    return starts


def cut_points(data: bytes) -> list[int]:
    return sorted({0, 1, 300} | {len(data) * k // 20 for k in range(20)})


def read_wat(data: bytes):
    counts = Counter()
    edges = sorted(edges_from_wat(io.BytesIO(data), NODES, counts))
    return edges, counts


def one_member(data: bytes) -> bytes:
    return gzip.compress(gzip.decompress(data), mtime=0)


def grouped_members(data: bytes, per_member: int) -> bytes:
    """The same records re-compressed a few to a gzip member (record boundaries kept)."""
    starts = member_starts(data) + [len(data)]
    records = [gzip.decompress(data[a:b]) for a, b in zip(starts, starts[1:])]
    return b"".join(gzip.compress(b"".join(records[i:i + per_member]), mtime=0)
                    for i in range(0, len(records), per_member))


def expect_failed(data: bytes) -> CorruptInputError:
    with pytest.raises(CorruptInputError) as info:
        read_wat(data)
    error = info.value
    assert str(error.offset) in str(error)  # the message carries the offset, whatever its wording
    return error


@pytest.fixture(scope="module")
def originals():
    return {path.name: (path.read_bytes(), read_wat(path.read_bytes())) for path in SAMPLE_WATS}


def test_the_sample_files_have_edges(originals):
    assert len(originals) == 6
    for _, (edges, counts) in originals.values():
        assert edges and counts["wat_records"] > 30


@pytest.mark.parametrize("path", SAMPLE_WATS, ids=lambda p: p.name[-12:])
def test_a_cut_file_is_failed_with_the_offset_never_read(path):
    data = path.read_bytes()
    starts = member_starts(data)
    cuts = cut_points(data)
    # a cut exactly at a member boundary is a valid shorter gzip stream (see the test below):
    # none of these cut points is one, except 0 (an empty file)
    assert [c for c in cuts if c in starts] == [0]
    for cut in cuts:
        error = expect_failed(data[:cut])
        if cut == 0:
            assert (error.code, error.offset) == (CorruptInputError.EMPTY, 0)
        else:  # the offset is where the member that never ends starts
            assert (error.code, error.offset) == (CorruptInputError.TRUNCATED, max(s for s in starts if s < cut)), cut
        # the pure-Python reader (used for the listing) gives the same verdict
        with pytest.raises(CorruptInputError) as info:
            b"".join(gunzip(io.BytesIO(data[:cut])))
        assert (info.value.code, info.value.offset) == (error.code, error.offset), cut


@pytest.mark.parametrize("path", SAMPLE_WATS, ids=lambda p: p.name[-12:])
def test_one_member_and_few_member_copies_give_the_same_edges_and_counters(path, originals):
    data, expected = originals[path.name]
    for copy in (one_member(data), grouped_members(data, 5)):
        assert copy != data and gzip.decompress(copy) == gzip.decompress(data)
        assert read_wat(copy) == expected
        assert b"".join(gunzip(io.BytesIO(copy))) == gzip.decompress(data)


def test_cut_re_compressed_copies_are_failed():
    data = SAMPLE_WATS[0].read_bytes()
    single = one_member(data)
    for cut in cut_points(single)[1:]:
        error = expect_failed(single[:cut])
        assert (error.code, error.offset) == (CorruptInputError.TRUNCATED, 0)
    few = grouped_members(data, 5)
    starts = member_starts(few)
    for cut in cut_points(few)[1:]:
        assert cut not in starts
        assert expect_failed(few[:cut]).offset == max(s for s in starts if s < cut)


def test_a_cut_at_a_member_boundary_reads_as_a_shorter_file():
    # the known limit: nothing in the bytes tells this from a whole file. Over HTTP and S3 the
    # transfer length is checked against Content-Length (below); a local copy has nothing to compare.
    data = SAMPLE_WATS[0].read_bytes()
    starts = member_starts(data)
    edges, counts = read_wat(data[: starts[20]])
    assert 0 < counts["wat_records"] < read_wat(data)[1]["wat_records"]


def test_bytes_that_are_not_a_whole_gzip_stream_are_failed():
    data = SAMPLE_WATS[0].read_bytes()
    starts = member_starts(data)
    damaged = bytearray(data)
    damaged[starts[10] + 40: starts[10] + 60] = b"\xff" * 20  # inside the deflate data of member 10
    cases = {
        b"not gzip at all": (CorruptInputError.NOT_GZIP, 0),
        b"\x1f": (CorruptInputError.TRUNCATED, 0),
        data + b"trailing garbage": (CorruptInputError.CORRUPT, len(data)),
        data + b"\0" * 16: (CorruptInputError.CORRUPT, len(data)),  # zero padding is garbage too
        bytes(damaged): (CorruptInputError.CORRUPT, starts[10]),
    }
    html = gzip.compress(b"<html>a web page</html>", mtime=0)  # whole gzip, but no WARC inside
    cases[html] = (CorruptInputError.CORRUPT, len(html))  # found after its only member
    for bad, (code, offset) in cases.items():
        error = expect_failed(bad)
        assert (error.code, error.offset) == (code, offset), bad[:20]
    with pytest.raises(CorruptInputError) as info:
        b"".join(gunzip(io.BytesIO(b"not gzip at all")))
    assert info.value.code == CorruptInputError.NOT_GZIP


def test_an_empty_gzip_member_inside_a_file_does_not_end_it(originals):
    # FastWARC's reader stops quietly at an empty member, as if at the end: the rest is read too
    data, expected = originals[SAMPLE_WATS[0].name]
    starts = member_starts(data)
    empty = gzip.compress(b"", mtime=0)
    padded = data[: starts[10]] + empty * 3 + data[starts[10]: starts[30]] + empty + data[starts[30]:]
    assert read_wat(padded) == expected


def test_a_stream_error_stays_a_stream_error():
    # a connection that breaks mid-file is transient (retried), not a corrupt file
    class Breaks(io.RawIOBase):
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def readable(self):
            return True

        def read(self, size=-1):
            if self._data.tell() > 20_000:
                raise ConnectionResetError("peer reset")
            return self._data.read(min(size, 4096))

    with pytest.raises(ConnectionResetError):
        list(edges_from_wat(Breaks(SAMPLE_WATS[0].read_bytes()), NODES, Counter()))
    assert inputs._is_transient(ConnectionResetError())


# -- over HTTP and from S3 ---------------------------------------------------------------------


class _Server(http.server.SimpleHTTPRequestHandler):
    gets: Counter = Counter()
    short_transfers: dict[str, int] = {}  # path -> bytes to send (announcing the full length), once

    def do_GET(self):  # noqa: N802
        self.gets[self.path] += 1
        keep = self.short_transfers.pop(self.path, None)
        if keep is None:
            return super().do_GET()
        body = (self.directory_path / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:keep])
        self.wfile.flush()
        self.close_connection = True  # the connection drops mid-body

    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A directory served on 127.0.0.1: (folder, base URL)."""
    handler = type("Handler", (_Server,), {"directory_path": tmp_path})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    _Server.gets.clear()
    _Server.short_transfers.clear()


def _attempts(monkeypatch) -> Counter:
    opened = Counter()
    real = inputs.open_uri

    def counting(uri):
        opened[uri] += 1
        return real(uri)

    monkeypatch.setattr(inputs, "open_uri", counting)
    monkeypatch.setattr(inputs, "BACKOFF_SECONDS", 0.01)
    return opened


def _read(uri):
    return with_retries(uri, lambda stream: read_from(stream))


def read_from(stream):
    counts = Counter()
    return sorted(edges_from_wat(stream, NODES, counts)), counts


def test_http_cut_object_is_a_failed_file_at_once(served, monkeypatch, originals):
    folder, base = served
    data = SAMPLE_WATS[0].read_bytes()
    (folder / "cut.warc.wat.gz").write_bytes(data[: len(data) * 7 // 10])
    (folder / "whole.warc.wat.gz").write_bytes(data)
    opened = _attempts(monkeypatch)
    with pytest.raises(CorruptInputError) as info:
        _read(f"{base}/cut.warc.wat.gz")
    assert info.value.code == CorruptInputError.TRUNCATED and f"{base}/cut.warc.wat.gz" in str(info.value)
    assert opened[f"{base}/cut.warc.wat.gz"] == 1  # corrupt data is never retried
    assert _read(f"{base}/whole.warc.wat.gz") == originals[SAMPLE_WATS[0].name][1]


def test_http_transfer_cut_short_is_retried_even_at_a_member_boundary(served, monkeypatch, originals):
    # a body shorter than its Content-Length is a broken transfer (transient), not a short file:
    # checked even where the gzip stream alone would look whole
    folder, base = served
    data = SAMPLE_WATS[0].read_bytes()
    (folder / "x.warc.wat.gz").write_bytes(data)
    _Server.short_transfers["/x.warc.wat.gz"] = member_starts(data)[20]
    opened = _attempts(monkeypatch)
    assert _read(f"{base}/x.warc.wat.gz") == originals[SAMPLE_WATS[0].name][1]
    assert opened[f"{base}/x.warc.wat.gz"] == 2 and _Server.gets["/x.warc.wat.gz"] == 2


def test_s3_cut_object_is_a_failed_file_at_once(aws_endpoint, monkeypatch, originals):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="mirror")
    data = SAMPLE_WATS[1].read_bytes()
    s3.put_object(Bucket="mirror", Key="cut.warc.wat.gz", Body=data[: len(data) * 4 // 10])
    s3.put_object(Bucket="mirror", Key="whole.warc.wat.gz", Body=data)
    opened = _attempts(monkeypatch)
    with pytest.raises(CorruptInputError) as info:
        _read("s3://mirror/cut.warc.wat.gz")
    assert info.value.code == CorruptInputError.TRUNCATED and "s3://mirror/cut.warc.wat.gz" in str(info.value)
    assert opened["s3://mirror/cut.warc.wat.gz"] == 1
    assert _read("s3://mirror/whole.warc.wat.gz") == originals[SAMPLE_WATS[1].name][1]


def test_a_directory_is_a_failed_file_at_once(tmp_path, monkeypatch):
    opened = _attempts(monkeypatch)
    with pytest.raises(IsADirectoryError):
        _read(str(tmp_path))
    assert opened[str(tmp_path)] == 1


@pytest.mark.parametrize("exc", [
    CorruptInputError(CorruptInputError.TRUNCATED, 5, "cut"), gzip.BadGzipFile("not gzip"), zlib.error("bad"),
    EOFError("Compressed file ended before the end-of-stream marker was reached"), IsADirectoryError(21, "dir"),
    NotADirectoryError(20, "not a dir"), PermissionError(13, "denied"),
], ids=lambda e: type(e).__name__)
def test_corrupt_data_is_never_transient(exc):
    assert not inputs._is_transient(exc)


@pytest.mark.parametrize("exc", [ConnectionResetError(), TimeoutError(), http.client.IncompleteRead(b"", 10)],
                         ids=lambda e: type(e).__name__)
def test_broken_transfers_are_transient(exc):
    assert inputs._is_transient(exc)


# -- the listing ---------------------------------------------------------------------------------


def _cc_copy(tmp_path):
    cc = tmp_path / "cc"
    shutil.copytree(SAMPLE_CC, cc)
    return cc, cc / "crawl-data" / CRAWL / "wat.paths.gz"


def test_a_listing_that_is_not_gzip_fails_at_once_naming_it(tmp_path, monkeypatch):
    cc, listing = _cc_copy(tmp_path)
    listing.write_bytes(gzip.decompress(listing.read_bytes()))  # someone gunzipped it in place
    opened = _attempts(monkeypatch)
    with pytest.raises(CorruptInputError) as info:
        wat_paths(str(cc), CRAWL)
    assert info.value.code == CorruptInputError.NOT_GZIP and str(listing) in str(info.value)
    assert opened == Counter({str(listing): 1})


def test_a_cut_listing_fails_at_once(tmp_path, monkeypatch):
    cc, listing = _cc_copy(tmp_path)
    listing.write_bytes(listing.read_bytes()[:-10])
    opened = _attempts(monkeypatch)
    with pytest.raises(CorruptInputError) as info:
        wat_paths(str(cc), CRAWL)
    assert info.value.code == CorruptInputError.TRUNCATED and sum(opened.values()) == 1


# -- the edges step: max_failed_files -------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "1", 1.5, True, [1]])
def test_max_failed_files_must_be_a_non_negative_int(value):
    from jobs.edges import max_failed_files

    with pytest.raises(ValueError, match="max_failed_files"):
        max_failed_files({"max_failed_files": value})


def test_max_failed_files_defaults_to_zero():
    from jobs.edges import max_failed_files

    assert max_failed_files({}) == 0 and max_failed_files({"max_failed_files": None}) == 0
    assert max_failed_files({"max_failed_files": 3}) == 3


@pytest.fixture(scope="module")
def previous(spark, tmp_path_factory):
    """A complete nodes + edges run for (CRAWL, steel), as a re-run finds it: (output, edges
    metrics, the node domains)."""
    tmp = tmp_path_factory.mktemp("previous")
    out = tmp / "out"
    for step in ("nodes", "edges"):
        report, error = run_step(step, CRAWL, "steel", out, tmp)
        assert error is None and report.completed, (step, error)
    assert report.metrics["files_ok"] == 3 and report.metrics["failed_files"] == []
    nodes = spark.read.parquet(str(out / "nodes" / f"crawl={CRAWL}/domain=steel")).select("registered_domain")
    return out, report.metrics, frozenset(r[0] for r in nodes.collect())


def _edges_rerun(previous, tmp_path, break_input, extras=None):
    """Re-run edges over a copy of the previous output with one input broken; returns
    (report, error, partition folder, its files before as {name: bytes})."""
    out = tmp_path / "out"
    shutil.copytree(previous[0], out)
    part = out / "edges" / f"crawl={CRAWL}/domain=steel"
    before = {p.name: p.read_bytes() for p in part.iterdir()}
    cc = tmp_path / "cc"
    shutil.copytree(SAMPLE_CC, cc)
    broken = break_input(cc)
    report, error = run_step("edges", CRAWL, "steel", out, tmp_path, cc_root=cc, extras=extras)
    return report, error, part, before, broken


def _cut_one(cc):
    wat = sorted((cc / "crawl-data" / CRAWL).rglob("*.warc.wat.gz"))[2]  # 13 of the 47 edges come from it alone
    wat.write_bytes(wat.read_bytes()[: wat.stat().st_size * 4 // 10])
    return wat


def _list_a_directory(cc):
    listing = cc / "crawl-data" / CRAWL / "wat.paths.gz"
    paths = gzip.decompress(listing.read_bytes()).decode().split()
    paths[2] = paths[2].rsplit("/", 1)[0]  # the wat/ folder instead of its third file
    listing.write_bytes(gzip.compress("\n".join(paths).encode() + b"\n", mtime=0))
    return cc / paths[2]


@pytest.mark.spark
@pytest.mark.parametrize("break_input", [_cut_one, _list_a_directory], ids=["cut file", "directory"])
def test_a_failed_file_fails_the_step_and_keeps_the_previous_partition(spark, previous, tmp_path, break_input):
    from jobs.edges import InputFilesFailed

    report, error, part, before, broken = _edges_rerun(previous, tmp_path, break_input)
    assert isinstance(error, InputFilesFailed) and not report.completed
    assert (error.failed, error.listed) == (1, 3)
    assert [f["path"] for f in error.failed_files] == [str(broken)]
    assert str(broken) in str(error)
    assert {p.name: p.read_bytes() for p in part.iterdir()} == before  # same files, same rows
    assert not [p for p in part.parent.iterdir() if p.name.startswith(".domain=steel.")]  # no staging left


@pytest.mark.spark
def test_max_failed_files_one_writes_the_partition_and_names_the_failed_file(spark, previous, tmp_path):
    report, error, part, before, broken = _edges_rerun(previous, tmp_path, _cut_one,
                                                       extras={"max_failed_files": 1})
    assert error is None and report.completed
    metrics = report.metrics
    assert (metrics["wat_files"], metrics["files_ok"], metrics["files_failed"]) == (3, 2, 1)
    assert metrics["max_failed_files"] == 1
    [failed] = metrics["failed_files"]
    assert failed["path"] == str(broken) and "CorruptInputError" in failed["error"]
    assert metrics["first_file_error"].startswith(str(broken))
    # the partition holds exactly the edges of the two whole files
    expected = set()
    for wat in sorted((SAMPLE_CC / "crawl-data" / CRAWL).rglob("*.warc.wat.gz")):
        if wat.name != broken.name:
            expected |= {(e[0], e[2]) for e in edges_from_wat(open(wat, "rb"), previous[2], Counter())}
    assert rows(spark, part, ["src_url", "dst_url"]) == expected
    assert metrics["rows"] == len(expected) == 36 and previous[1]["rows"] == 47
    assert (part / "_SUCCESS").exists()


@pytest.mark.spark
def test_an_invalid_max_failed_files_fails_before_any_work(spark, previous, tmp_path):
    report, error, part, before, _ = _edges_rerun(previous, tmp_path, lambda cc: None,
                                                  extras={"max_failed_files": -1})
    assert isinstance(error, ValueError) and "max_failed_files" in str(error) and not report.completed
    assert {p.name: p.read_bytes() for p in part.iterdir()} == before
