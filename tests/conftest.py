"""Test environment: a throwaway AIRFLOW_HOME with a real sqlite metadata DB, and helpers
that run DAG files through Airflow's own ``dag.test()`` in a fresh subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_JOBS = ROOT / "tests" / "jobs"
HARNESS = ROOT / "tests" / "harness" / "dag_test_runner.py"

# Set before anything imports airflow: its configuration is read once, at import.
_HOME = Path(tempfile.mkdtemp(prefix="asp-airflow-home-"))
os.environ.update(
    AIRFLOW_HOME=str(_HOME),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    AIRFLOW__CORE__DAGS_FOLDER=str(_HOME / "dags"),
    AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT=str(ROOT),
    AIRFLOW__SPARK_PORTABLE__WORK_DIR=str(_HOME / "spark-portable"),
)
for _var in ("SPARK_REMOTE", "SPARK_PORTABLE_CONTEXT", "SPARK_PORTABLE_MESSAGES"):
    os.environ.pop(_var, None)
(_HOME / "dags").mkdir()

from cluster.fixtures import aws_endpoint, spark  # noqa: E402, F401 (fixtures; shared with the Python 3.9 run)

AIRFLOW_BIN = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """A migrated metadata DB (created once per test session, ~3 s)."""
    subprocess.run([AIRFLOW_BIN, "db", "migrate"], check=True, capture_output=True, timeout=300)
    return _HOME


@pytest.fixture
def work_dir() -> Path:
    return _HOME / "spark-portable"


# The local engine's tests that are about spark-submit itself (its process group, its exit
# codes) run in submit mode; everything else uses the default, a warm Spark Connect server.
SUBMIT_MODE = {"AIRFLOW__SPARK_PORTABLE__LOCAL_MODE": "submit"}


@pytest.fixture(scope="session", autouse=True)
def _stop_connect_servers():
    """Warm Spark Connect servers outlive the tasks that started them (that is their
    point); the test session stops the ones it started."""
    yield
    from airflow_spark_portable.engines.local_connect import ConnectServers

    for folder in _HOME.glob("**/connect"):
        ConnectServers(folder, 0).stop_all()


# tests/jobs/probe_job.py on any engine: the task arguments, and what the job must see and
# report back from them - the same on every engine.
PROBE_TASK = {
    "application_args": ["--flag", "x; rm -rf /"],
    "crawl": "CC-MAIN-2024-10",
    "domain": "steel",
    "extras": {"max_files_per_crawl": 2},
    "conf": {"spark.portable.test": "yes"},
}


def assert_probe_saw_its_task(metrics: dict[str, Any], engine: str) -> None:
    assert metrics["context"]["engine"] == engine and metrics["spark_portable"]["engine"] == engine
    assert metrics["context"]["partition"] == {"crawl": "CC-MAIN-2024-10", "domain": "steel"}
    assert metrics["context"]["extras"] == {"max_files_per_crawl": 2}
    assert metrics["argv"] == ["--flag", "x; rm -rf /"]  # verbatim: no shell on the way
    assert metrics["custom_conf"] == "yes"  # the task's conf
    assert metrics["shuffle_partitions"] == "4"  # the profile's spark_conf
    assert metrics["rows"] == 42


def operator_dag(dag_id: str, **operator_kwargs: Any) -> str:
    """Source of a DAG with one SparkPortableOperator(task_id='job', **operator_kwargs)."""
    params = operator_kwargs.pop("dag_params", {})
    return tasks_dag(dag_id, {"job": operator_kwargs}, params)


def tasks_dag(dag_id: str, tasks: dict[str, dict[str, Any]], params: dict | None = None) -> str:
    """Source of a DAG with one independent SparkPortableOperator per entry of ``tasks``."""
    body = "".join(
        f"    SparkPortableOperator(task_id={task_id!r}, " + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")\n"
        for task_id, kwargs in tasks.items()
    )
    return (
        "import pendulum\n"
        "from airflow.sdk import DAG\n"
        "from airflow_spark_portable.operators.spark_portable import SparkPortableOperator\n\n"
        f"with DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2024, 1, 1), params={params or {}!r}):\n"
        + body
    )


@dataclass
class DagRunOutcome:
    returncode: int
    output: str
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The output as words: no ANSI colours, whitespace runs as one space. Airflow 3.0
        prints an exception through rich, wrapped at the terminal width and coloured."""
        return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", self.output).split())

    @property
    def task_state(self) -> str | None:
        return self.state_of("job")

    def state_of(self, task_id: str) -> str | None:
        return self.result.get("tasks", {}).get(f"{task_id}[-1]")

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.result.get("xcom", {}).get("job[-1]")

    @property
    def xcom_keys(self) -> dict[str, Any]:
        """The one task's XComs other than its return value (e.g. extra-link URLs)."""
        return self.result.get("xcom_keys", {}).get("job[-1]", {})


class DagRunner:
    def __init__(self, home: Path) -> None:
        self.home = home

    def write(self, dag_id: str, source: str) -> Path:
        path = self.home / "dags" / f"{dag_id}.py"
        path.write_text(source)
        return path

    def start(self, dag_id: str, source: str, conf: dict | None = None, env: dict | None = None):
        path = self.write(dag_id, source)
        result = self.home / f"{dag_id}.result.json"
        result.unlink(missing_ok=True)
        args = [sys.executable, str(HARNESS), str(path), dag_id, str(result)]
        if conf is not None:
            args.append(json.dumps(conf))
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "NO_COLOR": "1", "COLUMNS": "400", **(env or {})},
            start_new_session=True,  # the test can clean up everything it started
        )
        return proc, result

    def run(
        self, dag_id: str, source: str, conf: dict | None = None, timeout: float = 300, env: dict | None = None
    ) -> DagRunOutcome:
        proc, result = self.start(dag_id, source, conf, env)
        try:
            output, _ = proc.communicate(timeout=timeout)
        finally:
            kill_session(proc)
        data = json.loads(result.read_text()) if result.exists() else {}
        return DagRunOutcome(proc.returncode, output, data)


def kill_session(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture
def dag_runner(airflow_home: Path) -> DagRunner:
    return DagRunner(airflow_home)


def cli_json(stdout: str):
    """The JSON document an `airflow ... --output json` command printed (Airflow 3.0 also
    prints log lines on stdout, some starting with "[")."""
    for line in reversed(stdout.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise AssertionError(f"no JSON in: {stdout[-2000:]}")


def cli_value(stdout: str) -> str:
    """The last line a `airflow config get-value` printed (log lines may precede it)."""
    return [line for line in stdout.splitlines() if line.strip()][-1].strip()


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
