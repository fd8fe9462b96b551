"""Orchestrator side of the pipes: write a job's context, read back what it reported.

A ``Channel`` is one task try's mailbox. Each engine picks the channel its job can reach
(a local folder here; S3 for EMR and a UC volume for Databricks live in those engines), and
the job side reads it through ``runtime.transport`` by URI scheme.
"""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_spark_portable.runtime import protocol
from airflow_spark_portable.runtime.context import JobContext
from airflow_spark_portable.runtime.transport import private_dir, write_private


@dataclass
class JobReport:
    """What the job said, folded into the facts the operator decides on."""

    opened: bool = False
    completed: bool = False
    failure: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    logs: list[dict[str, Any]] = field(default_factory=list)
    malformed: int = 0

    def add(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == protocol.OPENED:
            self.opened = True
        elif kind == protocol.METRICS:
            self.metrics.update(message.get("metrics") or {})
        elif kind == protocol.COMPLETED:
            self.completed = True
            self.metrics.update(message.get("metrics") or {})
        elif kind == protocol.FAILED:
            self.failure = message
        elif kind == protocol.LOG:
            self.logs.append(message)
        else:
            self.malformed += 1


class Channel(ABC):
    """One task try's mailbox. ``bootstrap()`` is what the job is told to find it by."""

    @property
    @abstractmethod
    def context_uri(self) -> str: ...

    @property
    @abstractmethod
    def messages_uri(self) -> str: ...

    @abstractmethod
    def write_context(self, context: JobContext) -> None:
        """Write the context; messages left by an earlier submission of this try must never
        be read as the new run's (clear them, or keep each run's messages apart)."""

    @abstractmethod
    def read_new_messages(self) -> list[dict[str, Any]]:
        """Messages written since the last call, in order; incomplete ones wait."""

    def bootstrap_env(self) -> dict[str, str]:
        return {protocol.ENV_CONTEXT: self.context_uri, protocol.ENV_MESSAGES: self.messages_uri}

    def bootstrap_args(self) -> list[str]:
        return [protocol.ARG_CONTEXT, self.context_uri, protocol.ARG_MESSAGES, self.messages_uri]


def parse_lines(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Complete JSON lines of ``data`` and how many bytes they span (a torn last line waits)."""
    end = data.rfind(b"\n") + 1
    messages = []
    for line in data[:end].splitlines():
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError:
            message = {"type": "malformed", "raw": line[:200].decode("utf-8", "replace")}
        messages.append(message if isinstance(message, dict) else {"type": "malformed"})
    return messages, end


class LocalChannel(Channel):
    """A folder on the worker: ``context.json`` and ``messages.jsonl``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._offset = 0

    @property
    def context_uri(self) -> str:
        return str(self.folder / "context.json")

    @property
    def messages_uri(self) -> str:
        return str(self.folder / "messages.jsonl")

    def write_context(self, context: JobContext) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder)  # a re-run of the same try starts clean
        private_dir(self.folder)  # the context holds the task's arguments
        write_private(self.context_uri, json.dumps(context.to_dict(), indent=2, default=str))
        self._offset = 0

    def read_new_messages(self) -> list[dict[str, Any]]:
        try:
            with open(self.messages_uri, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        messages, used = parse_lines(data)
        self._offset += used
        return messages


class S3Channel(Channel):
    """A prefix in S3, for engines whose jobs run on clusters (EMR): ``context.json`` and
    ``messages/<seq>.json``. Talks to S3 through the amazon provider's S3Hook; the prefix is
    one submission's own (the engine makes it), so no two runs share a mailbox."""

    def __init__(self, prefix_uri: str, aws_conn_id: str | None = "aws_default") -> None:
        from airflow_spark_portable.runtime.transport import _bucket_key

        self.bucket, key = _bucket_key(prefix_uri)
        self.prefix = key.rstrip("/") + "/"  # "runs/<name>.<token>/"
        self.aws_conn_id = aws_conn_id
        self._last_key = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def context_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}context.json"

    @property
    def messages_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}messages/"

    def _hook(self):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id)

    def write_context(self, context: JobContext) -> None:
        hook = self._hook()
        stale = hook.list_keys(bucket_name=self.bucket, prefix=self.prefix)
        if stale:  # a re-run of the same try starts clean
            hook.delete_objects(bucket=self.bucket, keys=stale)
        body = json.dumps(context.to_dict(), indent=2, default=str)
        hook.load_string(body, key=f"{self.prefix}context.json", bucket_name=self.bucket, replace=True)
        self._last_key = ""

    def read_context(self) -> dict[str, Any] | None:
        """The context the job was given, as written; None if it is not there or not JSON."""
        hook = self._hook()
        key = f"{self.prefix}context.json"
        if not hook.check_for_key(key, bucket_name=self.bucket):
            return None
        try:
            found = json.loads(hook.read_key(key, bucket_name=self.bucket))
        except ValueError:
            return None
        return found if isinstance(found, dict) else None

    def read_new_messages(self) -> list[dict[str, Any]]:
        hook = self._hook()
        prefix = f"{self.prefix}messages/"
        keys = sorted(k for k in hook.list_keys(bucket_name=self.bucket, prefix=prefix) if k > self._last_key)
        messages = []
        for key in keys:
            try:
                message = json.loads(hook.read_key(key, bucket_name=self.bucket))
            except ValueError:
                message = {"type": "malformed", "raw": key}
            messages.append(message if isinstance(message, dict) else {"type": "malformed"})
            self._last_key = key
        return messages
