"""Deferral: wait with the engine provider's own trigger, hand the run back with the event.

``EngineRunTrigger`` wraps a provider trigger (``EmrStepSensorTrigger``,
``DatabricksExecutionTrigger``, ...) and adds the run handle and the operator's run details
to the event it fires. The task then resumes from the event alone, whoever resumes it: the
triggerer passes ``defer(kwargs=...)`` along, but ``airflow dags test`` replaces them with the
event, and a resumed task must still know which step or run to judge.

A user who kills a deferred task (mark failed / clear / mark success) has no worker whose
``on_kill`` could cancel the remote work; the triggerer calls the trigger's ``on_kill``
instead (Airflow 3.3+), which cancels the step or run through the engine. (On Airflow 3.0 to
3.2 the triggerer has no such hook: the remote work then runs to its end.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib import import_module
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def _import(classpath: str) -> type:
    module, _, name = classpath.rpartition(".")
    return getattr(import_module(module), name)


class EngineRunTrigger(BaseTrigger):
    def __init__(
        self, inner_classpath: str, inner_kwargs: dict[str, Any], handle: dict[str, Any], meta: dict[str, Any]
    ) -> None:
        super().__init__()
        self.inner_classpath = inner_classpath
        self.inner_kwargs = inner_kwargs
        self.handle = handle
        self.meta = meta

    @classmethod
    def wrap(cls, inner: BaseTrigger, handle: dict[str, Any], meta: dict[str, Any]) -> EngineRunTrigger:
        classpath, kwargs = inner.serialize()
        return cls(classpath, kwargs, handle, meta)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "inner_classpath": self.inner_classpath,
                "inner_kwargs": self.inner_kwargs,
                "handle": self.handle,
                "meta": self.meta,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        inner = _import(self.inner_classpath)(**self.inner_kwargs)
        try:
            async for event in inner.run():
                yield TriggerEvent({"event": event.payload, "handle": self.handle, "meta": self.meta})
                return
        except Exception as exc:
            # Older provider triggers raise when the run fails; the task must still resume and
            # judge the run itself (its error, its logs), so turn that into an event too.
            yield TriggerEvent(
                {"event": {"status": "error", "message": str(exc)}, "handle": self.handle, "meta": self.meta}
            )

    def _engine(self):
        from airflow_spark_portable.engines import get_engine_class

        options = {k: self.handle[k] for k in ("aws_conn_id", "databricks_conn_id") if k in self.handle}
        return get_engine_class(self.handle["engine"])(options)

    async def on_kill(self) -> None:
        """The user killed the deferred task: cancel the step or run it waits for."""
        await asyncio.to_thread(self._engine().cancel, self.handle)
