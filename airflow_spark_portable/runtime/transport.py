"""Job-side transports: read the context, write messages.

A transport is picked by the URI scheme, so an engine changes where data travels without the
job changing a line. ``file`` covers local paths and anything mounted as a file system
(Databricks ``/Workspace/...``, ``/Volumes/...`` and ``/dbfs/...``). Object stores that cannot append get their
own small class here, registered in ``_TRANSPORTS``: ``s3`` (EMR) writes one object per message.
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol
from urllib.parse import urlparse


class Transport(Protocol):
    def read_context(self) -> dict[str, Any]: ...

    def write_message(self, message: dict[str, Any]) -> None: ...


class FileTransport:
    """Context is a JSON file; messages are appended as JSON lines and fsynced one by one,
    so a reader never loses a message the job already wrote, even if the job is killed.

    A messages path ending in ``/`` is a folder instead: one file per message, named by its
    sequence number and renamed into place whole, for mounts that cannot append (Databricks
    workspace files under ``/Workspace``)."""

    def __init__(self, context_path: str, messages_path: str) -> None:
        self.context_path = _local_path(context_path)
        self.messages_path = _local_path(messages_path)

    def read_context(self) -> dict[str, Any]:
        with open(self.context_path, encoding="utf-8") as fh:
            return json.load(fh)

    def write_message(self, message: dict[str, Any]) -> None:
        if self.messages_path.endswith("/"):
            path = message_key(self.messages_path, int(message["seq"]))
            with open(path + ".tmp", "w", encoding="utf-8") as fh:
                json.dump(message, fh, separators=(",", ":"), default=str)
            os.replace(path + ".tmp", path)
            return
        line = json.dumps(message, separators=(",", ":"), default=str) + "\n"
        # One write() of an O_APPEND fd keeps lines whole even with concurrent writers.
        fd = os.open(self.messages_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


class S3Transport:
    """Context is one object; every message is an object of its own, named by its sequence
    number (S3 cannot append), so the orchestrator lists them in order and a message, once
    written, is never lost. Credentials are the cluster's (instance profile / env), via boto3."""

    def __init__(self, context_uri: str, messages_uri: str) -> None:
        import boto3  # on every EMR node; only jobs that use S3 channels need it

        self._s3 = boto3.client("s3")
        self.context = _bucket_key(context_uri)
        bucket, prefix = _bucket_key(messages_uri)
        self.messages = (bucket, prefix.rstrip("/") + "/")

    def read_context(self) -> dict[str, Any]:
        bucket, key = self.context
        return json.loads(self._s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def write_message(self, message: dict[str, Any]) -> None:
        bucket, prefix = self.messages
        body = json.dumps(message, separators=(",", ":"), default=str).encode("utf-8")
        self._s3.put_object(Bucket=bucket, Key=message_key(prefix, int(message["seq"])), Body=body)


def message_key(prefix: str, seq: int) -> str:
    """Zero-padded, so lexicographic listing order is sequence order."""
    return f"{prefix}{seq:010d}.json"


def _bucket_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def _local_path(uri: str) -> str:
    parsed = urlparse(uri)
    return parsed.path if parsed.scheme == "file" else uri


_TRANSPORTS: dict[str, type] = {"": FileTransport, "file": FileTransport, "s3": S3Transport}


def open_transport(context_uri: str, messages_uri: str) -> Transport:
    scheme = urlparse(context_uri).scheme
    if urlparse(messages_uri).scheme != scheme:
        raise ValueError(
            f"context URI {context_uri!r} and messages URI {messages_uri!r} use different "
            "schemes; an engine must give both through the same transport"
        )
    try:
        transport_cls = _TRANSPORTS[scheme]
    except KeyError:
        raise ValueError(
            f"no job-side transport for URI scheme {scheme!r} (from {context_uri!r}); "
            f"known schemes: {sorted(s or 'plain path' for s in _TRANSPORTS)}"
        ) from None
    return transport_cls(context_uri, messages_uri)
