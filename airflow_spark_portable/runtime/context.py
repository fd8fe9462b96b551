"""What a job knows about the run that launched it: identical on every engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_spark_portable.runtime.protocol import PROTOCOL_VERSION


@dataclass(frozen=True)
class RunIdentity:
    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    try_number: int = 1
    logical_date: str | None = None


@dataclass(frozen=True)
class JobContext:
    engine: str
    profile: str
    run: RunIdentity
    # Partition keys (crawl, domain, ...): what slice of the data this run owns.
    partition: dict[str, str] = field(default_factory=dict)
    # Named input roots (e.g. {"cc": "s3://commoncrawl/"}) and the output root.
    inputs: dict[str, str] = field(default_factory=dict)
    output_root: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    application_args: list[str] = field(default_factory=list)

    @property
    def crawl(self) -> str | None:
        return self.partition.get("crawl")

    @property
    def domain(self) -> str | None:
        return self.partition.get("domain")

    def input(self, name: str) -> str:
        """The input root called ``name``; a clear error names the ones that exist."""
        try:
            return self.inputs[name]
        except KeyError:
            raise KeyError(
                f"this job needs input {name!r} but the task passed only {sorted(self.inputs)}; "
                f"add inputs={{{name!r}: '<uri>'}} to the SparkPortableOperator"
            ) from None

    def require_output_root(self) -> str:
        if not self.output_root:
            raise ValueError("this job writes output but the task set no output_root")
        return self.output_root

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROTOCOL_VERSION,
            "engine": self.engine,
            "profile": self.profile,
            "run": vars(self.run).copy(),
            "partition": dict(self.partition),
            "inputs": dict(self.inputs),
            "output_root": self.output_root,
            "extras": dict(self.extras),
            "application_args": list(self.application_args),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobContext:
        version = data.get("version")
        if version != PROTOCOL_VERSION:
            raise ValueError(
                f"context protocol version {version!r} does not match this runtime's "
                f"{PROTOCOL_VERSION}; ship the runtime that matches the installed provider"
            )
        return cls(
            engine=data["engine"],
            profile=data["profile"],
            run=RunIdentity(**data["run"]),
            partition=dict(data.get("partition") or {}),
            inputs=dict(data.get("inputs") or {}),
            output_root=data.get("output_root"),
            extras=dict(data.get("extras") or {}),
            application_args=list(data.get("application_args") or []),
        )
