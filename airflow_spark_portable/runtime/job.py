"""The job side of the pipes: ``open_job()`` and the ``SparkJob`` base class.

A job is a plain PySpark script::

    from airflow_spark_portable.runtime import SparkJob

    class CountRows(SparkJob):
        def run(self, job):
            n = job.spark.range(1000).count()
            job.report_metrics(rows=n)

    if __name__ == "__main__":
        CountRows.main()

It never imports Airflow; it runs unchanged under spark-submit, Spark Connect, EMR and
Databricks because everything engine-specific arrives through the bootstrap URIs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_spark_portable.runtime import protocol
from airflow_spark_portable.runtime.context import JobContext, RunIdentity
from airflow_spark_portable.runtime.transport import MissingClientError, Transport, open_transport, write_private

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Set by the local engine's connect mode: the job's Spark SQL conf (JSON), and the file
# naming the session slot's Spark Connect session (see engines/local_connect.py).
SESSION_CONF_ENV = "SPARK_PORTABLE_SESSION_CONF"
SESSION_FILE_ENV = "SPARK_PORTABLE_SESSION_FILE"
CODE_VERSION_ENV = "SPARK_PORTABLE_CODE_VERSION"


def get_spark(app_name: str = "spark-portable-job") -> SparkSession:
    """The session for the engine this job runs on: Spark Connect when ``SPARK_REMOTE`` is
    set (warm local server, Databricks serverless), else the classic session that
    spark-submit / the cluster prepared (``getOrCreate`` returns Databricks' own)."""
    from pyspark.sql import SparkSession

    remote = os.environ.get("SPARK_REMOTE")
    if remote:
        session_file = os.environ.get(SESSION_FILE_ENV)
        if session_file:
            spark = _lent_session(remote, Path(session_file))
        else:
            spark = SparkSession.builder.remote(remote).getOrCreate()
    else:
        spark = SparkSession.builder.appName(app_name).getOrCreate()
    _apply_session_conf(spark, os.environ.get(SESSION_CONF_ENV))
    return spark


def _lent_session(remote: str, session_file: Path) -> SparkSession:
    """The Spark Connect session the local engine lends this job: the one the previous job
    of its slot used, reset first, when that job ran the same code (its Python workers are
    warm and hold that code); else a new one. A closed session (a job's ``spark.stop()``,
    a kill, a timeout) is replaced too."""
    from pyspark.sql import SparkSession

    code = os.environ.get(CODE_VERSION_ENV, "")
    previous = read_session_file(session_file)
    for attempt in (1, 2):
        session_id = previous.get("session_id") if attempt == 1 and previous.get("code_version") == code else None
        if not session_id:
            session_id = str(uuid.uuid4())
            # written aside and renamed, 0600: the engine reads it to interrupt a killed job
            write_private(session_file, json.dumps({"session_id": session_id, "code_version": code}))
        url = f"{remote.rstrip('/')}/;session_id={session_id}"
        spark = SparkSession.builder.remote(url).create()
        try:
            spark.sql("RESET")  # the previous job's runtime conf back to the server's
            spark.catalog.clearCache()
        except Exception as exc:
            if attempt == 2 or "INVALID_HANDLE" not in str(exc):
                raise
            continue
        # so that SparkSession.builder.getOrCreate() anywhere in the job finds this session
        os.environ["SPARK_REMOTE"] = url
        return spark
    raise AssertionError("unreachable")


def read_session_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# Spark's error conditions for a conf a session cannot change: 4.x names static ones
# CANNOT_MODIFY_STATIC_CONFIG, 3.5 _LEGACY_ERROR_TEMP_1325; core (non-SQL) ones are
# CANNOT_MODIFY_CONFIG in both. A bad value has INVALID_CONF_VALUE.* (4.x) or none (3.5).
_UNMODIFIABLE_CONF = frozenset({"CANNOT_MODIFY_STATIC_CONFIG", "_LEGACY_ERROR_TEMP_1325", "CANNOT_MODIFY_CONFIG"})


def _apply_session_conf(spark: SparkSession, encoded: str | None) -> None:
    """Set this job's Spark SQL conf on its session, where the engine could not set it when
    the Spark application started (a shared Connect server, an existing cluster)."""
    from pyspark.errors import PySparkException

    for key, value in json.loads(encoded or "{}").items():
        try:
            spark.conf.set(key, value)
        except PySparkException as exc:
            condition = _error_condition(exc)
            if condition not in _UNMODIFIABLE_CONF:
                reason = str(exc).strip().split("\n", 1)[0]  # the rest is the JVM stack trace
                raise ValueError(
                    f"Spark conf {key}={value} was refused: {reason}; fix the value where it is set (the "
                    "task's conf, or the profile's spark_conf or engine section conf)"
                ) from exc
            if spark.conf.get(key, None) != value:  # fine if the application already has this value
                raise ValueError(
                    f"Spark conf {key}={value} cannot be set per job on a shared Spark application "
                    f"({condition}); set it where that application starts (the profile's "
                    "engine section for the local server, the cluster's own conf otherwise)"
                ) from exc


def _error_condition(exc: Exception) -> str | None:
    get = getattr(exc, "getCondition", None) or getattr(exc, "getErrorClass", None)  # Spark 4.x / 3.5
    return get() if get is not None else None


class _StderrTransport:
    """Used when a job is started by hand (no bootstrap): messages go to stderr."""

    def read_context(self) -> dict[str, Any]:  # pragma: no cover - not called
        raise NotImplementedError

    def write_message(self, message: dict[str, Any]) -> None:
        print("spark-portable:", json.dumps(message, default=str), file=sys.stderr, flush=True)


class _MessageLogHandler(logging.Handler):
    def __init__(self, job: Job) -> None:
        super().__init__(logging.INFO)
        self._job = job

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._job._send(protocol.LOG, level=record.levelname, text=self.format(record))
        except Exception:  # a log line must never fail the job
            self.handleError(record)


class Job:
    """Handed to the job code: its context, its SparkSession, its metrics."""

    def __init__(self, context: JobContext, transport: Transport) -> None:
        self.context = context
        self._transport = transport
        self._seq = 0
        self._spark: SparkSession | None = None
        self.metrics: dict[str, Any] = {}
        self.log = logging.getLogger(f"spark_portable.job.{context.run.task_id}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        stderr_handler = logging.StreamHandler(sys.stderr)
        stderr_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.handlers = [stderr_handler, _MessageLogHandler(self)]

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            self._spark = get_spark(f"{self.context.run.dag_id}.{self.context.run.task_id}")
        return self._spark

    def report_metrics(self, metrics: Mapping[str, Any] | None = None, **more: Any) -> None:
        """Merge metrics into what the task returns as XCom; later values win."""
        update = {**(metrics or {}), **more}
        clean = {key: _json_value(key, value) for key, value in update.items()}
        if protocol.RESERVED_METRIC_KEY in clean:
            raise ValueError(
                f"metric name {protocol.RESERVED_METRIC_KEY!r} is reserved for the operator's "
                "own run details; choose another name"
            )
        self.metrics.update(clean)
        self._send(protocol.METRICS, metrics=clean)

    def _send(self, kind: str, **payload: Any) -> None:
        self._seq += 1
        self._transport.write_message({"type": kind, "seq": self._seq, "ts": time.time(), **payload})


def _json_value(key: str, value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()  # numpy / pandas scalars
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"metric {key!r} = {value!r} is not a JSON value ({exc}); report numbers, strings, booleans, lists or dicts"
        ) from None
    return value


def _take_flag(argv: list[str], flag: str) -> str | None:
    """Remove ``flag VALUE`` or ``flag=VALUE`` from argv and return VALUE."""
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 >= len(argv):
                raise ValueError(f"{flag} needs a value")
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith(flag + "="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def _bootstrap(argv: list[str]) -> tuple[str, str] | None:
    session_conf = _take_flag(argv, protocol.ARG_SESSION_CONF)
    if session_conf:  # get_spark() applies it to the job's session
        os.environ[SESSION_CONF_ENV] = session_conf
    context_uri = _take_flag(argv, protocol.ARG_CONTEXT) or os.environ.get(protocol.ENV_CONTEXT)
    messages_uri = _take_flag(argv, protocol.ARG_MESSAGES) or os.environ.get(protocol.ENV_MESSAGES)
    if not context_uri and not messages_uri:
        return None
    if not (context_uri and messages_uri):
        raise ValueError(
            f"got only one of {protocol.ENV_CONTEXT} / {protocol.ENV_MESSAGES}; the engine "
            "must pass both (or neither, to run the job by hand)"
        )
    return context_uri, messages_uri


def _standalone_context(argv: list[str]) -> JobContext:
    return JobContext(
        engine="standalone",
        profile="none",
        run=RunIdentity(dag_id="manual", task_id=os.path.basename(argv[0] if argv else "job"), run_id="manual"),
        application_args=list(argv[1:]),
    )


def _exit_when_orphaned(poll_seconds: float = 1.0) -> None:
    """Stop this driver if the process that started it dies (a SIGKILLed spark-submit JVM
    would otherwise leave the Python driver running, and holding cores, forever)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        print("spark-portable: parent process died; stopping the job", file=sys.stderr, flush=True)
        os._exit(143)

    if parent > 1:
        threading.Thread(target=watch, name="spark-portable-orphan-watch", daemon=True).start()


@contextmanager
def _released_session(job: Job) -> Iterator[None]:
    """Release a Spark Connect session when the job ends: on a shared server its state
    (cached data, temp views, running queries) would otherwise outlive the job."""
    try:
        yield
    finally:
        lent = os.environ.get(SESSION_FILE_ENV)  # a lent session stays open for the next job
        if job._spark is not None and os.environ.get("SPARK_REMOTE") and not lent:
            try:
                job._spark.stop()
            except Exception as exc:  # the job's own outcome matters more
                print(f"spark-portable: could not release the Spark session: {exc}", file=sys.stderr)


@contextmanager
def open_job(argv: list[str] | None = None) -> Iterator[Job]:
    """Read the context, yield a ``Job``, and always tell the orchestrator how it ended.

    ``argv`` defaults to ``sys.argv``, from which the bootstrap flags are removed in place
    so the job's own argument parsing sees only its ``application_args``.
    """
    argv = sys.argv if argv is None else argv
    found = _bootstrap(argv)
    if found is None:
        transport: Transport = _StderrTransport()
        context = _standalone_context(argv)
    else:
        try:
            transport = open_transport(*found)
        except MissingClientError as exc:  # no message can be sent: stderr and the exit code say it
            print(exc, file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        context = JobContext.from_dict(transport.read_context())
        _exit_when_orphaned()
    job = Job(context, transport)
    job._send(protocol.OPENED, pid=os.getpid(), python=sys.version.split()[0])
    try:
        with _released_session(job):
            yield job
    except SystemExit as exc:
        if exc.code not in (None, 0):
            job._send(protocol.FAILED, error_type="SystemExit", message=f"exit code {exc.code}", traceback="")
            raise
        job._send(protocol.COMPLETED, metrics=job.metrics)
        raise
    except BaseException as exc:
        job._send(
            protocol.FAILED,
            error_type=type(exc).__name__,
            message=str(exc),
            # the three-argument form: Python 3.9 (EMR 7.x's python3) has no one-argument one
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        )
        raise
    else:
        job._send(protocol.COMPLETED, metrics=job.metrics)


class SparkJob:
    """Base class for a job file: subclass, implement ``run``, call ``main()``.

    ``run`` may return a dict of metrics, merged with what it reported along the way.
    """

    def run(self, job: Job) -> Mapping[str, Any] | None:
        raise NotImplementedError

    @classmethod
    def main(cls, argv: list[str] | None = None) -> None:
        with open_job(argv) as job:
            result = cls().run(job)
            if result:
                job.report_metrics(result)
