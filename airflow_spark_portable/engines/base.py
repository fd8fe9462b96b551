"""The one interface every engine implements. See docs/architecture.md.

The operator calls, in order::

    engine.validate_profile(section)          # when the task picks this engine
    channel = engine.open_channel(spec)       # where context goes, messages come back
    handle = engine.find_active_run(spec)     # a retry reattaches instead of re-submitting
          or engine.submit(spec, channel)
    engine.trigger(handle)  -> defer          # remote engines, when deferrable
    engine.poll(handle)     -> RunResult | None   # on resuming: has it really ended?
    engine.wait(handle)     -> RunResult      # otherwise (and the local engine always)
    engine.links(handle)                      # console URLs -> the task's extra links
    engine.fetch_logs(handle, succeeded)      # remote stdout/stderr into the task log
    engine.cost(handle)                       # estimate -> the task's metrics
    engine.cancel(handle)                     # on_kill / mark failed

Engine modules import their SDKs (boto3, databricks) inside methods, never at module
import: the DAG processor imports the operator, and with it the registry.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_spark_portable.runtime.context import JobContext

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

    from airflow_spark_portable.pipes import Channel
    from airflow_spark_portable.profiles import Profile

# A run handle is plain JSON: it travels through trigger kwargs and execute_complete.
RunHandle = dict[str, Any]

SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class JobSpec:
    """Everything an engine needs to run one task try, already validated."""

    name: str  # unique per task try; safe as an EMR step / Databricks run name
    application: Path  # the job file on the worker
    code_root: Path  # folder put on the job's Python path (holds the jobs package)
    application_args: list[str]
    spark_conf: dict[str, str]  # profile conf overlaid with the task's conf
    profile: Profile
    env: dict[str, str]
    context: JobContext
    tags: dict[str, str] = field(default_factory=dict)  # cost attribution: dag, task, run, ...


@dataclass(frozen=True)
class RunResult:
    state: str  # SUCCEEDED | FAILED | CANCELLED
    message: str = ""  # the engine's reason, e.g. "exit code 1" or EMR's failure details
    log_tail: list[str] = field(default_factory=list)


class Engine(ABC):
    name: ClassVar[str]
    # True when the job's stdout already reached the task log live, so LOG messages from
    # the pipes would only print the same lines twice.
    streams_output: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any] | None = None, log: logging.Logger | None = None) -> None:
        self.options = dict(options or {})
        self.log = log or logging.getLogger(f"airflow_spark_portable.engines.{self.name}")

    @classmethod
    @abstractmethod
    def validate_profile(cls, profile: Profile) -> dict[str, Any]:
        """Check and normalise this engine's profile section; raise naming the bad key."""

    @classmethod
    def profile_section(cls, profile: Profile, allowed: set[str]) -> tuple[dict[str, Any], str]:
        """This engine's section of ``profile`` and where it is (for messages); unknown keys
        are an error, so a typo never silently falls back to a default."""
        from airflow_spark_portable.exceptions import SparkPortableConfigError

        section = profile.section(cls.name)
        where = f"{profile.source}: profile {profile.name!r}, section {cls.name!r}"
        unknown = set(section) - allowed
        if unknown:
            raise SparkPortableConfigError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        return section, where

    @staticmethod
    def one_of(section: Mapping[str, Any], keys: tuple[str, ...], where: str, choices: str) -> str:
        """The one key of ``keys`` the section sets; none or several is an error."""
        from airflow_spark_portable.exceptions import SparkPortableConfigError

        found = [k for k in keys if section.get(k)]
        if len(found) != 1:
            raise SparkPortableConfigError(f"{where} must choose exactly one of {choices}; it has {found or 'none'}")
        return found[0]

    @abstractmethod
    def open_channel(self, spec: JobSpec) -> Channel: ...

    def find_active_run(self, spec: JobSpec) -> RunHandle | None:
        """The run to reattach to instead of submitting: a still-running submission of this
        task instance from an earlier try, or one this very try already made (an engine that
        can tell), if any."""
        return None

    @abstractmethod
    def submit(self, spec: JobSpec, channel: Channel) -> RunHandle: ...

    @abstractmethod
    def wait(self, handle: RunHandle) -> RunResult: ...

    def trigger(self, handle: RunHandle, poll_interval: float) -> BaseTrigger | None:
        """A trigger that fires when the run ends, or None if this engine cannot defer."""
        return None

    def poll(self, handle: RunHandle) -> RunResult | None:
        """The run's result if it has ended, None while it is still live (queued, running or
        being cancelled). Engines that defer implement it: a resumed task asks the run itself,
        because a trigger can stop waiting (an error, a lost triggerer) while the run goes on."""
        raise NotImplementedError(f"engine {self.name!r} does not defer")

    @abstractmethod
    def channel_for(self, handle: RunHandle) -> Channel:
        """Rebuild the channel of a submitted run (after a deferral or a reattach)."""

    @abstractmethod
    def cancel(self, handle: RunHandle) -> None: ...

    def fetch_logs(self, handle: RunHandle, succeeded: bool) -> list[str]:
        """The run's driver stdout/stderr, for engines whose output is not streamed live."""
        return []

    def links(self, handle: RunHandle) -> dict[str, str]:
        """``{"run": url, "logs": url}`` for the task's extra links (either may be missing)."""
        return {}

    def cost(self, handle: RunHandle) -> dict[str, Any] | None:
        """An estimate of what the run cost (``costs.py``), or None if this engine has none."""
        return None


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")
# Cloud tags (EC2, EMR, Databricks custom_tags): letters, digits, spaces and + - = . _ : / @
_TAG_UNSAFE = re.compile(r"[^\w +\-=.:/@]")


def run_name(context: JobContext, limit: int = 250) -> str:
    """``dag.task.mapN.run.tryN``: findable by a retry, legal as a step or run name."""
    run = context.run
    index = f".map{run.map_index}" if run.map_index >= 0 else ""
    raw = f"{run.dag_id}.{run.task_id}{index}.{run.run_id}.try{run.try_number}"
    return _UNSAFE.sub("_", raw)[:limit]


def try_base(name: str) -> str:
    """``dag.task.mapN.run.tryN`` -> ``dag.task.mapN.run.try``: the task instance, any try."""
    head, sep, tail = name.rpartition(".try")
    return head + sep if sep and tail.isdigit() else name


def safe_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags as cloud APIs accept them (keys <= 128, values <= 256 characters)."""
    return {_TAG_UNSAFE.sub("_", k)[:128]: _TAG_UNSAFE.sub("_", v)[:256] for k, v in tags.items()}
