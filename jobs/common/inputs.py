"""Reading Common Crawl inputs from a local mirror, ``s3://`` or ``https://``, streamed.

Files are read on the executors with plain Python clients (no Hadoop connector needed),
so the same code reads ``s3://commoncrawl/`` on a laptop, on EMR and on Databricks.
Transient errors (broken connections, 5xx, a body shorter than its Content-Length) are
retried with backoff; corrupt data (not gzip, a gzip stream that does not end cleanly at the
end of the file) is final at once, as a ``CorruptInputError`` naming the file and the byte.
"""

from __future__ import annotations

import gzip
import http.client
import io
import os
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Generator, Iterator
from typing import BinaryIO, TypeVar
from urllib.parse import urlsplit

from airflow_spark_portable.runtime.transport import require_boto3

T = TypeVar("T")

RETRIES = 4
BACKOFF_SECONDS = 2.0
HTTP_TIMEOUT_SECONDS = 120


GZIP_MAGIC = b"\x1f\x8b"
_FIX = "a partial or damaged copy: fetch the file again (for a mirror, compare its size with the source's)"


def join(root: str, relative: str) -> str:
    return root.rstrip("/") + "/" + relative.lstrip("/")


class CorruptInputError(ValueError):
    """A file whose bytes are not one whole gzip stream ending at the end of the file.

    Never transient: reading the same bytes again gives the same error. ``code`` says what
    is wrong (one of the constants below), ``offset`` at which byte of the compressed file:
    the start of the member that never ends (TRUNCATED) or that does not decode (CORRUPT)."""

    EMPTY = "empty"  # no bytes at all
    NOT_GZIP = "not_gzip"  # does not start with a gzip header
    TRUNCATED = "truncated"  # ends inside a gzip member: a partial copy
    CORRUPT = "corrupt"  # a member that does not decode, bytes after the last member, or no WARC inside

    def __init__(self, code: str, offset: int, reason: str, uri: str | None = None) -> None:
        super().__init__(code, offset, reason, uri)  # all of them, so the error pickles
        self.code, self.offset, self.reason, self.uri = code, offset, reason, uri

    def __str__(self) -> str:
        return f"{self.uri}: {self.reason}" if self.uri else self.reason

    @classmethod
    def truncated(cls, member: int, length: int) -> CorruptInputError:
        return cls(cls.TRUNCATED, member, f"the file ends at byte {length} inside the gzip member that starts at "
                                          f"byte {member} (or that member is damaged): {_FIX}")

    @classmethod
    def corrupt(cls, member: int, what: str) -> CorruptInputError:
        return cls(cls.CORRUPT, member, f"{what} at byte {member}: {_FIX}")

    @classmethod
    def not_gzip(cls, head: bytes) -> CorruptInputError:
        return cls(cls.NOT_GZIP, 0, f"not gzip: the file starts with {head[:16]!r} at byte 0, not with a gzip "
                                    "header (a decompressed or wrong file?): fetch the .gz file again")

    @classmethod
    def empty(cls) -> CorruptInputError:
        return cls(cls.EMPTY, 0, f"the file is empty (0 bytes at byte 0): {_FIX}")


def gunzip(stream: BinaryIO, chunk: int = 1 << 16) -> Iterator[bytes]:
    """The decompressed bytes of ``stream``, a whole gzip stream of one member or many, in
    pieces; raises CorruptInputError (after the last piece) unless it ends cleanly at the end
    of the stream. Plain zlib, for small files such as listings: WAT files go through
    FastWARC's several times faster inflater where it is installed (``jobs.common.wat``)."""
    for _, out in gunzip_members(stream, chunk):
        yield out


def gunzip_members(stream: BinaryIO, chunk: int = 1 << 16) -> Generator[tuple[int, bytes], None, int]:
    """``gunzip``'s pieces, each with the offset (in ``stream``) of the gzip member it comes
    from; returns the length of the stream once it ended cleanly."""
    pos = 0  # compressed bytes consumed before ``data``
    member = 0  # where the current member starts
    inflater = None  # None between members
    data = b""
    while True:
        if not data or (inflater is None and len(data) < 2):  # a member's magic must be whole
            more = stream.read(chunk)
            if more:
                data += more
                continue
            if inflater is not None:
                raise CorruptInputError.truncated(member, pos)
            if data == GZIP_MAGIC[:1]:
                raise CorruptInputError.truncated(pos, pos + 1)
            if data:
                break  # one byte that is not gzip: refused below
            if pos == 0:
                raise CorruptInputError.empty()
            return pos
        if inflater is None:
            member = pos
            if data[:2] != GZIP_MAGIC:
                break
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(data)
        except zlib.error as exc:
            raise CorruptInputError.corrupt(member, f"a gzip member that does not decode ({exc})") from None
        if out:
            yield member, out
        if inflater.eof:
            pos += len(data) - len(inflater.unused_data)
            data, inflater = inflater.unused_data, None
        else:
            pos += len(data)
            data = b""
    if pos == 0:
        raise CorruptInputError.not_gzip(data)
    raise CorruptInputError.corrupt(pos, "bytes that are not gzip after the last gzip member")


_S3_SCHEMES = ("s3", "s3a")


def require_client(uri: str) -> None:
    """Raise MissingClientError, naming the fix, if reading ``uri`` needs a client library this
    Python does not have (boto3 for ``s3://``): a job checks its inputs on the driver before any
    Spark work, rather than failing every file on the executors."""
    if urlsplit(uri).scheme in _S3_SCHEMES:
        require_boto3()


def _s3_client():
    boto3 = require_boto3()
    from botocore import UNSIGNED
    from botocore.config import Config

    session = boto3.session.Session()
    retries = Config(retries={"max_attempts": 10, "mode": "adaptive"})
    if session.get_credentials() is None:  # commoncrawl is public: read it anonymously
        return session.client("s3", config=retries.merge(Config(signature_version=UNSIGNED)))
    return session.client("s3", config=retries)


class ForwardStream(io.RawIOBase):
    """A network body as FastWARC needs it: ``read``, ``tell`` and forward-only ``seek``
    (done by reading). FastWARC seeks past unread payloads and aborts on streams that
    cannot seek at all.

    A body that ends before its announced ``length`` is a broken transfer, raised as
    IncompleteRead (transient): http.client itself returns the short body quietly, and a
    transfer cut exactly at a gzip member boundary would look like a whole, shorter file."""

    def __init__(self, body, length: int | None = None) -> None:
        self._body = body
        self._pos = 0
        self._length = length

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._body.read() if size is None or size < 0 else self._body.read(size)
        self._pos += len(data)
        if not data and size != 0 and self._length is not None and self._pos < self._length:
            raise http.client.IncompleteRead(b"", self._length - self._pos)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self._pos + offset if whence == io.SEEK_CUR else -1
        if target < self._pos:
            raise io.UnsupportedOperation("a network stream only seeks forward")
        while self._pos < target and self.read(min(1 << 20, target - self._pos)):
            pass
        return self._pos

    def close(self) -> None:
        self._body.close()
        super().close()


def open_uri(uri: str) -> BinaryIO:
    """A binary stream over ``uri``; the caller closes it."""
    scheme = urlsplit(uri).scheme
    if scheme in _S3_SCHEMES:
        parts = urlsplit(uri)
        response = _s3_client().get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
        # botocore checks the length read against Content-Length too
        return ForwardStream(response["Body"], response.get("ContentLength"))
    if scheme in ("http", "https"):
        request = urllib.request.Request(uri, headers={"User-Agent": "airflow-spark-portable (cc graph)"})
        response = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS)  # noqa: S310
        length = response.headers.get("Content-Length")
        return ForwardStream(response, int(length) if length and length.isdigit() else None)
    path = urlsplit(uri).path if scheme == "file" else uri
    return open(os.path.expanduser(path), "rb")  # a directory: IsADirectoryError, final


def with_retries(uri: str, read: Callable[[BinaryIO], T], retries: int = RETRIES) -> T:
    """Run ``read`` over a fresh stream of ``uri``, retrying the whole file on transient
    errors (a half-read file is never used). A missing file raises FileNotFoundError;
    corrupt data raises at once, naming ``uri``."""
    for attempt in range(1, retries + 1):
        try:
            with open_uri(uri) as stream:
                return read(stream)
        except Exception as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"{uri} does not exist") from exc
            if isinstance(exc, CorruptInputError) and exc.uri is None:
                exc.uri = uri
            if attempt == retries or not _is_transient(exc):
                raise
            time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _is_missing(exc: BaseException) -> bool:
    if isinstance(exc, FileNotFoundError):
        return True
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 404
    error = getattr(exc, "response", None)
    code = error.get("Error", {}).get("Code") if isinstance(error, dict) else None
    return code in ("NoSuchKey", "NoSuchBucket", "404")


# The same bytes give the same error, and a path that is a folder or not ours stays so.
# (gzip.BadGzipFile is an OSError, EOFError is how gzip/zlib readers report a cut stream.)
_FINAL = (CorruptInputError, gzip.BadGzipFile, zlib.error, EOFError, IsADirectoryError, NotADirectoryError,
          PermissionError)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _FINAL):
        return False
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, (OSError, http.client.IncompleteRead)):  # resets, timeouts, DNS; a cut transfer
        return True
    # botocore / urllib3 connection and read-timeout errors (not their client errors)
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"BotoCoreError", "ProtocolError", "ReadTimeoutError", "IncompleteRead"})


def wat_paths(cc_root: str, crawl: str, max_files: int | None = None) -> list[str]:
    """Full URIs of a crawl's WAT files, in ``wat.paths.gz`` order (first N when sampling)."""
    if not urlsplit(cc_root).scheme:  # executors do not share the driver's working directory
        cc_root = os.path.abspath(os.path.expanduser(cc_root))
    listing = join(cc_root, f"crawl-data/{crawl}/wat.paths.gz")

    def read(stream: BinaryIO) -> list[str]:
        text = b"".join(gunzip(stream)).decode("utf-8")
        return [line.strip() for line in text.splitlines() if line.strip()]

    try:
        paths = with_retries(listing, read)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no WAT listing for crawl {crawl!r} at {listing}: check the crawl id and cc_root"
        ) from None
    if max_files is not None:
        paths = paths[:max_files]
    return [join(cc_root, path) for path in paths]

