"""Reading Common Crawl inputs from a local mirror, ``s3://`` or ``https://``, streamed.

Files are read on the executors with plain Python clients (no Hadoop connector needed),
so the same code reads ``s3://commoncrawl/`` on a laptop, on EMR and on Databricks.
Transient errors are retried with backoff; a file that still fails is reported, not fatal.
"""

from __future__ import annotations

import gzip
import io
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import BinaryIO, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

RETRIES = 4
BACKOFF_SECONDS = 2.0
HTTP_TIMEOUT_SECONDS = 120


def join(root: str, relative: str) -> str:
    return root.rstrip("/") + "/" + relative.lstrip("/")


def _s3_client():
    import boto3
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
    cannot seek at all."""

    def __init__(self, body) -> None:
        self._body = body
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._body.read() if size is None or size < 0 else self._body.read(size)
        self._pos += len(data)
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
    if scheme in ("s3", "s3a"):
        parts = urlsplit(uri)
        body = _s3_client().get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))["Body"]
        return ForwardStream(body)  # botocore checks the length read against Content-Length
    if scheme in ("http", "https"):
        request = urllib.request.Request(uri, headers={"User-Agent": "airflow-spark-portable (cc graph)"})
        return ForwardStream(urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS))  # noqa: S310
    path = urlsplit(uri).path if scheme == "file" else uri
    return open(os.path.expanduser(path), "rb")


def with_retries(uri: str, read: Callable[[BinaryIO], T], retries: int = RETRIES) -> T:
    """Run ``read`` over a fresh stream of ``uri``, retrying the whole file on transient
    errors (a half-read file is never used). A missing file raises FileNotFoundError."""
    for attempt in range(1, retries + 1):
        try:
            with open_uri(uri) as stream:
                return read(stream)
        except Exception as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"{uri} does not exist") from exc
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


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, (OSError, EOFError)):
        return "decompression" not in str(exc).lower()  # corrupt data stays corrupt
    # botocore / urllib3 connection and read-timeout errors (not their client errors)
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"BotoCoreError", "ProtocolError", "ReadTimeoutError", "IncompleteRead"})


def wat_paths(cc_root: str, crawl: str, max_files: int | None = None) -> list[str]:
    """Full URIs of a crawl's WAT files, in ``wat.paths.gz`` order (first N when sampling)."""
    if not urlsplit(cc_root).scheme:  # executors do not share the driver's working directory
        cc_root = os.path.abspath(os.path.expanduser(cc_root))
    listing = join(cc_root, f"crawl-data/{crawl}/wat.paths.gz")

    def read(stream: BinaryIO) -> list[str]:
        with gzip.open(stream, "rt", encoding="utf-8") as text:
            return [line.strip() for line in text if line.strip()]

    try:
        paths = with_retries(listing, read)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no WAT listing for crawl {crawl!r} at {listing}: check the crawl id and cc_root"
        ) from None
    if max_files is not None:
        paths = paths[:max_files]
    return [join(cc_root, path) for path in paths]
