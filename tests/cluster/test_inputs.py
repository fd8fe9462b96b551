"""Reading a crawl from a local mirror, over HTTPS-style HTTP and from S3 (moto), with retries:
every transport must give the same edges as the local files."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections import Counter

import pytest

from .support import ROOT
from jobs.common import inputs
from jobs.common.inputs import wat_paths, with_retries
from jobs.common.wat import edges_from_wat

SAMPLE_CC = ROOT / "sample_data" / "cc"
CRAWL = "CC-MAIN-2024-10"
NODES = frozenset({"northforge-steel.com", "acme-steel.co.uk", "baltic-alloys.de", "oremount.com"})


def crawl_edges(cc_root: str) -> set:
    edges = set()
    for path in wat_paths(cc_root, CRAWL):
        edges |= with_retries(path, lambda stream: set(edges_from_wat(stream, NODES, Counter())))
    return edges


@pytest.fixture(scope="module")
def local_edges():
    edges = crawl_edges(str(SAMPLE_CC))
    assert len(edges) > 20
    return edges


class _Handler(http.server.SimpleHTTPRequestHandler):
    failures: dict[str, int] = {}  # path -> how many 503s to answer first

    def do_GET(self):  # noqa: N802
        left = self.failures.get(self.path, 0)
        if left:
            self.failures[self.path] = left - 1
            self.send_error(503, "try again")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_root():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(SAMPLE_CC)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    _Handler.failures.clear()


def test_local_mirror_and_file_uri_agree(local_edges):
    assert crawl_edges(SAMPLE_CC.as_uri()) == local_edges


def test_http_mirror_gives_the_same_edges(http_root, local_edges, monkeypatch):
    monkeypatch.setattr(inputs, "BACKOFF_SECONDS", 0.01)
    first = wat_paths(str(SAMPLE_CC), CRAWL)[0].split("/cc/", 1)[1]
    _Handler.failures[f"/{first}"] = 2  # two 503s, then the file: retried, counted once
    assert crawl_edges(http_root) == local_edges
    assert _Handler.failures[f"/{first}"] == 0


def test_http_missing_file_is_final(http_root):
    with pytest.raises(FileNotFoundError, match="no WAT listing for crawl 'CC-MAIN-1999-01'"):
        wat_paths(http_root, "CC-MAIN-1999-01")


def test_persistent_server_errors_give_up(http_root, monkeypatch):
    monkeypatch.setattr(inputs, "BACKOFF_SECONDS", 0.01)
    _Handler.failures[f"/crawl-data/{CRAWL}/wat.paths.gz"] = 99
    with pytest.raises(OSError, match="503"):
        wat_paths(http_root, CRAWL)
    assert _Handler.failures[f"/crawl-data/{CRAWL}/wat.paths.gz"] == 99 - inputs.RETRIES


@pytest.fixture
def s3_bucket(aws_endpoint):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="commoncrawl", ACL="public-read")  # public, like the real one
    for path in SAMPLE_CC.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "commoncrawl", str(path.relative_to(SAMPLE_CC)), ExtraArgs={"ACL": "public-read"})
    return "s3://commoncrawl/"


def test_s3_with_credentials(s3_bucket, local_edges):
    assert crawl_edges(s3_bucket) == local_edges


def test_s3_anonymous_when_no_credentials(s3_bucket, local_edges, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    import boto3

    assert boto3.session.Session().get_credentials() is None
    assert crawl_edges(s3_bucket) == local_edges


def test_s3_private_object_is_not_retried_forever(s3_bucket, monkeypatch):
    import boto3

    boto3.client("s3").put_object(Bucket="commoncrawl", Key="private.gz", Body=b"x", ACL="private")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    with pytest.raises(Exception, match="403|AccessDenied|Forbidden"):
        with_retries("s3://commoncrawl/private.gz", lambda s: s.read())


def test_s3_missing_key_is_final(s3_bucket):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with_retries("s3://commoncrawl/crawl-data/nope.warc.wat.gz", lambda s: s.read())
