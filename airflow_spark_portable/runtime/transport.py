"""Job-side transports: read the context, write messages.

A transport is picked by the URI scheme, so an engine changes where data travels without the
job changing a line. ``file`` covers local paths and anything mounted as a file system
(Databricks ``/Workspace/...``, ``/Volumes/...`` and ``/dbfs/...``). Object stores that cannot append get their
own small class here, registered in ``_TRANSPORTS``: ``s3`` (EMR) writes one object per message.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse


class MissingClientError(ModuleNotFoundError):
    """A job needs a client library this Python does not have (boto3, for S3)."""


def require_boto3():
    """The ``boto3`` module, or MissingClientError saying how to get it onto the cluster: AWS
    does not document boto3 as installed on EMR nodes."""
    try:
        import boto3
    except ImportError:
        raise MissingClientError(
            f"boto3 is not installed for {sys.executable} on this cluster: add a bootstrap action that runs "
            "`sudo python3 -m pip install boto3` (transient clusters made by engine emr install it themselves), "
            "or set emr.python to an interpreter that has it",
            name="boto3",
        ) from None
    return boto3


class Transport(Protocol):
    def read_context(self) -> dict[str, Any]: ...

    def write_message(self, message: dict[str, Any]) -> None: ...


def private_dir(path: Path | str) -> Path:
    """``path`` and any folder created on the way to it, as 0700: local channels and server
    state hold contexts, conf and tokens that other local users must not read."""
    path = Path(path)
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:  # another task made it first
            pass
    path = missing[0] if missing else path
    try:
        os.chmod(path, 0o700)  # also one an earlier version made with the default mode
    except PermissionError:  # someone else's: leave it, opening files in it will tell
        pass
    return path


def open_private(path: Path | str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """A file descriptor of ``path``, created 0600 (an existing file is made 0600 too)."""
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:  # mounts without modes (Databricks /Workspace): their ACLs apply
        pass
    return fd


def write_private(path: Path | str, text: str) -> None:
    """Replace ``path`` whole with ``text``, as a 0600 file (written aside, then renamed)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with os.fdopen(open_private(tmp), "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


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
            # the run's own folder (Databricks: messages/<run id>/), made by its first message
            os.makedirs(self.messages_path, mode=0o700, exist_ok=True)
            path = message_key(self.messages_path, int(message["seq"]))
            write_private(path, json.dumps(message, separators=(",", ":"), default=str))
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
        self._s3 = require_boto3().client("s3")  # only jobs that use S3 channels need it
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
