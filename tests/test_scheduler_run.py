"""A deferred task under a real Airflow: api-server, scheduler (LocalExecutor), dag-processor
and triggerer, each its own process. `dag.test()` runs triggers inline and never times a
deferred task out; here the scheduler and the triggerer do. The compose file's whole stack
(Celery, PostgreSQL, the DAG's runs through the REST API): tests/test_stack.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import AIRFLOW_BIN, ROOT, TEST_JOBS, cli_json

from airflow_spark_portable.report import task_label

pytestmark = pytest.mark.spark

SAMPLE = ROOT / "sample_data"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    DAEMONS = ("api-server", "scheduler", "dag-processor")

    def __init__(self, tmp: Path, daemons: tuple[str, ...] = DAEMONS) -> None:
        self.tmp = tmp
        self.daemons = daemons
        port = _free_port()
        dags = tmp / "dags"
        (dags / "data").mkdir(parents=True)
        shutil.copy(ROOT / "dags" / "common_crawl_graph.py", dags)
        # one release far ahead: unpausing schedules nothing, only the runs the test triggers run
        (dags / "data" / "crawls.csv").write_text("crawl,release_date\nCC-MAIN-2099-01,2099-01-15\n")
        self.out = tmp / "out"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")},
            "AIRFLOW_HOME": str(tmp / "home"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API_AUTH__JWT_SECRET": "test-only-shared-secret",  # one secret for every component
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT": str(ROOT),
            "AIRFLOW__SPARK_PORTABLE__WORK_DIR": str(tmp / "work"),
            "CC_GRAPH_CC_ROOT": str(SAMPLE / "cc"),
            "CC_GRAPH_SEEDS_ROOT": str(SAMPLE / "seeds"),
            "CC_GRAPH_OUTPUT_ROOT": str(self.out),
            "NO_COLOR": "1",
        }
        self.procs: dict[str, subprocess.Popen] = {}

    def airflow(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([AIRFLOW_BIN, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"airflow {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done.stdout

    def start(self) -> None:
        self.airflow("db", "migrate")
        for name in self.daemons:
            log = open(self.tmp / f"{name}.log", "w")
            self.procs[name] = subprocess.Popen(
                [AIRFLOW_BIN, name], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def logs(self) -> str:
        return "".join(f"\n--- {n} ---\n" + (self.tmp / f"{n}.log").read_text()[-4000:] for n in self.procs)

    def stop(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        from airflow_spark_portable.engines.local_connect import ConnectServers

        for folder in (self.tmp / "work").glob("**/connect"):
            ConnectServers(folder, 0).stop_all()

    def wait_for_dag(self, dag_id: str) -> None:
        deadline = time.monotonic() + 180
        while dag_id not in self.airflow("dags", "list", "--output", "json"):
            assert time.monotonic() < deadline, f"the dag-processor never parsed {dag_id}" + self.logs()
            time.sleep(3)

    def runs(self, dag_id: str = "common_crawl_graph") -> dict[str, str]:
        return {r["run_id"]: r["state"] for r in cli_json(self.airflow("dags", "list-runs", dag_id, "--output", "json"))}

    def task_states(self, run_id: str, dag_id: str = "common_crawl_graph") -> dict[str, str]:
        rows = cli_json(self.airflow("tasks", "states-for-dag-run", dag_id, run_id, "--output", "json"))
        # map_index is "" for unmapped instances, and absent when the run has no mapped ones
        return {task_label(r["task_id"], int(r.get("map_index") or -1)): r["state"] for r in rows}


TIMEOUT_DAG = """
from datetime import timedelta
import pendulum
from airflow.sdk import DAG
from airflow_spark_portable.operators.spark_portable import SparkPortableOperator

with DAG("dbx_timeout", schedule=None, start_date=pendulum.datetime(2024, 1, 1)):
    SparkPortableOperator(
        task_id="job", engine="databricks", application=%r, deferrable=True, poll_interval=2,
        execution_timeout=timedelta(seconds=20), retries=0,
    )
"""


@pytest.mark.timeout(600)
def test_a_deferred_task_that_times_out_cancels_its_remote_run(tmp_path):
    """The execution_timeout of a deferred task ends it through the scheduler and the
    triggerer (a path `dags test` never takes): the run on the engine is cancelled too."""
    from harness.databricks_api import FakeDatabricks
    from test_databricks_engine import _project

    databricks = FakeDatabricks(tmp_path / "databricks").start()
    databricks.hold = True  # the run goes on and on
    stack = Stack(tmp_path / "stack", daemons=(*Stack.DAEMONS, "triggerer"))
    try:
        (stack.tmp / "dags" / "dbx_timeout.py").write_text(TIMEOUT_DAG % str(TEST_JOBS / "probe_job.py"))
        conn = {"conn_type": "databricks", "host": databricks.host, "port": databricks.port, "schema": "http",
                "password": "dapi-test-token"}
        stack.env.update(
            AIRFLOW_CONN_DATABRICKS_DEFAULT=json.dumps(conn),
            AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT=str(_project(tmp_path)),
            AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL="2",
        )
        stack.start()
        stack.wait_for_dag("dbx_timeout")
        stack.airflow("dags", "unpause", "dbx_timeout")
        stack.airflow("dags", "trigger", "dbx_timeout", "--run-id", "times_out")
        deadline = time.monotonic() + 300
        while stack.runs("dbx_timeout").get("times_out") not in ("success", "failed"):
            assert time.monotonic() < deadline, "the run did not end" + stack.logs()
            time.sleep(3)
        assert stack.task_states("times_out", "dbx_timeout") == {"job": "failed"}, stack.logs()
        (run,) = databricks.runs()
        assert run.cancelled, stack.logs()
    finally:
        stack.stop()
        databricks.stop()
