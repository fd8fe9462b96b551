"""The two WAT readers of jobs.common.wat: FastWARC 2 (Python 3.10+) and the pure-Python one
(Python 3.9, EMR 7.x's python3, where no FastWARC 2 installs). Each test here runs with every
reader this Python has (conftest.py's ``wat_reader``), as do test_wat.py, test_inputs.py and
test_input_integrity.py: same records, same counters, same CorruptInputError for the same bytes."""

from __future__ import annotations

import gzip
import io
import sys

import pytest

from jobs.common import wat
from jobs.common.inputs import CorruptInputError

from .support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import make_sample_data as gen  # noqa: E402

CORRUPT, TRUNCATED = CorruptInputError.CORRUPT, CorruptInputError.TRUNCATED


def test_each_python_reads_wat_with_the_reader_its_requirements_install():
    # jobs/requirements.txt: FastWARC 2 from Python 3.10 on, none on 3.9
    assert wat.FASTWARC == (sys.version_info >= (3, 10))


def _records(n):
    return [gen.metadata_record(f"https://www.acme.com/{i}", {"Envelope": {
        "WARC-Header-Metadata": {"WARC-Type": "response"},
        "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": [
            {"path": "A@/href", "url": f"https://o{i}.org/"}]}}}}}).to_bytes() for i in range(n)]


RAW = _records(4)


def _gz(*parts: bytes) -> bytes:
    return b"".join(gzip.compress(p, mtime=0) for p in parts)


def _at(*parts: bytes) -> int:
    """Where a gzip member after ``parts`` (each one member) starts."""
    return len(_gz(*parts))


def _read(data: bytes, warc_type=None):
    """(target URI, payload length) of each record, or the CorruptInputError's (code, offset)."""
    out = []
    try:
        for record in wat.warc_records(io.BytesIO(data), warc_type):
            out.append((record.headers.get("WARC-Target-URI"), len(record.reader.read())))
    except CorruptInputError as exc:
        return exc.code, exc.offset
    return out


WHOLE = [(f"https://www.acme.com/{i}", len(RAW[i].split(b"\r\n\r\n", 1)[1]) - 4) for i in range(4)]
GARBAGE = b"garbage\r\n\r\n"

CASES = {
    # well-formed: any member layout, blank lines around records, WARC/1.1
    "a member per record": (_gz(*RAW), WHOLE),
    "one member": (_gz(b"".join(RAW)), WHOLE),
    "records across members": (b"".join(_gz(b"".join(RAW)[i:i + 100]) for i in range(0, len(b"".join(RAW)), 100)),
                               WHOLE),
    "blank lines before the first": (_gz(b"\r\n\r\n" + b"".join(RAW)), WHOLE),
    "no blank lines after records": (_gz(b"".join(r[:-4] for r in RAW)), WHOLE),
    "WARC/1.1": (_gz(RAW[0], RAW[1].replace(b"WARC/1.0", b"WARC/1.1")), WHOLE[:2]),
    "Content-Length: +N": (_gz(RAW[0].replace(b"Content-Length: ", b"Content-Length: +")), WHOLE[:1]),
    "an empty gzip stream": (_gz(b""), []),
    # whole gzip, but not WARC records: corrupt, at the member where that was found
    "gzip of a web page": (_gz(b"<html>a web page</html>"), (CORRUPT, _at(b"<html>a web page</html>"))),
    "garbage in a member": (_gz(RAW[0], RAW[1], GARBAGE + RAW[2], RAW[3]), (CORRUPT, _at(RAW[0], RAW[1]))),
    "garbage as a member": (_gz(RAW[0], RAW[1], GARBAGE, *RAW[2:]), (CORRUPT, _at(RAW[0], RAW[1]))),
    "garbage as the last member": (_gz(*RAW, b"garbage"), (CORRUPT, _at(*RAW, b"garbage"))),
    "a payload longer than its Content-Length": (
        _gz(RAW[0], RAW[1], RAW[2].replace(b"\r\n\r\n{", b"\r\n\r\nXXXX{", 1), RAW[3]), (CORRUPT, _at(RAW[0], RAW[1]))),
    "a bad Content-Length": (_gz(RAW[0], RAW[1].replace(b"Content-Length: ", b"Content-Length: x"), *RAW[2:]),
                             (CORRUPT, _at(RAW[0]))),
    "no WARC version line": (_gz(RAW[0], RAW[1].replace(b"WARC/1.0\r\n", b""), *RAW[2:]), (CORRUPT, _at(RAW[0]))),
    "WARC/2": (_gz(RAW[0], RAW[1].replace(b"WARC/1.0", b"WARC/2"), *RAW[2:]), (CORRUPT, _at(RAW[0]))),
    # a whole gzip stream whose last record's payload is cut: read short (its JSON will not parse)
    "the last payload cut inside a whole member": (_gz(*RAW[:3], RAW[3][:-100]),
                                                   [*WHOLE[:3], (WHOLE[3][0], WHOLE[3][1] - 96)]),
    # a partial copy
    "cut inside the last member": (_gz(*RAW)[:-10], (TRUNCATED, _at(*RAW[:3]))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_reader_reads_the_same_bytes_the_same_way(case):
    data, expected = CASES[case]
    assert _read(data) == expected


def test_record_types_headers_and_payloads_read_alike():
    folded = ("WARC/1.0\r\nWARC-Type: metadata\r\nwarc-target-uri:  https://www.acme.com/\u00fc  \r\n"
              "X-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\n{}\r\n\r\n").encode("utf-8")
    not_utf8 = b"WARC/1.0\r\nWARC-Type: metadata\r\nWARC-Target-URI: https://x.com/\xff\r\nContent-Length: 0\r\n\r\n"
    request = RAW[0].replace(b"WARC-Type: metadata", b"WARC-Type: request")
    data = _gz(request, folded, not_utf8)
    seen = [(r.headers.get("WARC-Type"), r.headers.get("WARC-Target-URI"), r.headers.get("x-folded"),
             r.headers.get("WARC-Nothing"), r.reader.read()) for r in wat.warc_records(io.BytesIO(data))]
    assert seen == [
        ("request", "https://www.acme.com/0", None, None, RAW[0].split(b"\r\n\r\n")[1]),
        ("metadata", "https://www.acme.com/\u00fc", "a b", None, b"{}"),  # names in any case, values stripped
        ("metadata", "https://x.com/\ufffd", None, None, b""),  # not UTF-8: replaced
    ]
    metadata = [r.headers.get("WARC-Target-URI") for r in wat.warc_records(io.BytesIO(data), "metadata")]
    assert metadata == ["https://www.acme.com/\u00fc", "https://x.com/\ufffd"]


def test_where_the_python_reader_is_stricter_than_fastwarc(wat_reader):
    # records without a Content-Length, or with LF line ends, are not WARC: FastWARC guesses
    # where they end; the Python reader fails the file (never a file with fewer records)
    no_length = b"\r\n".join(line for line in RAW[1].split(b"\r\n") if not line.startswith(b"Content-Length"))
    lf_only = RAW[1].replace(b"\r\n", b"\n")
    for data in (_gz(RAW[0], no_length, *RAW[2:]), _gz(RAW[0], lf_only, *RAW[2:])):
        result = _read(data, "metadata")
        if wat_reader == "python":
            assert result[0] == CORRUPT
        else:
            assert isinstance(result, list) and len(result) >= 3
