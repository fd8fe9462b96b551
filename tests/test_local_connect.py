"""The local engine's default mode: jobs run against a warm Spark Connect server that the
engine starts once and reuses (engines/local_connect.py), under Airflow's own dag.test()."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT, TEST_JOBS, kill_session, operator_dag, wait_for

from airflow_spark_portable.engines import local_connect
from airflow_spark_portable.redaction import redacted

spark = pytest.mark.spark


def _project(tmp_path: Path, version: str) -> Path:
    """A project folder of its own: profiles.yaml and a module the job's UDF imports."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "profiles.yaml", project / "profiles.yaml")
    (project / "codever.py").write_text(f"VERSION = {version!r}\n")
    return project


def _server_used(output: str) -> Path:
    """The state folder of the server a task's job ran on, as the task log names it."""
    found = re.findall(r"(?:log (\S+)/server\.log|Using the warm Spark Connect server on port \d+ \((\S+)\))", output)
    assert found, "the task log names no Spark Connect server"
    return Path(found[-1][0] or found[-1][1])


def _server_of(work_dir: Path, project: Path) -> Path:
    found = [
        spec.parent
        for spec in (work_dir / "connect").glob("*/spec.json")
        if json.loads(spec.read_text())["code_root"] == str(project)
    ]
    assert len(found) == 1, found
    return found[0]


def _cmdline(process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


# -- without Spark -------------------------------------------------------------------


def test_sql_conf_goes_to_the_session_everything_else_to_the_server():
    server, session = local_connect.split_conf(
        {
            "spark.sql.shuffle.partitions": "4",
            "spark.sql.warehouse.dir": "/w",  # static: fixed when the server starts
            "spark.sql.catalog.cc": "x.Catalog",
            "spark.ui.enabled": "false",
            "spark.hadoop.fs.s3a.endpoint": "e",
        }
    )
    assert session == {"spark.sql.shuffle.partitions": "4"}
    assert set(server) == {
        "spark.sql.warehouse.dir",
        "spark.sql.catalog.cc",
        "spark.ui.enabled",
        "spark.hadoop.fs.s3a.endpoint",
    }


def test_code_version_follows_python_code_not_data(tmp_path):
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "__init__.py").write_text("")
    (tmp_path / "jobs" / "step.py").write_text("A = 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.py").write_text("not a package\n")
    before = local_connect.code_version(tmp_path)
    (tmp_path / "data" / "x.py").write_text("changed, but not importable as a package\n")
    (tmp_path / "notes.txt").write_text("data")
    assert local_connect.code_version(tmp_path) == before
    (tmp_path / "jobs" / "step.py").write_text("A = 2\n")
    assert local_connect.code_version(tmp_path) != before


def test_secret_conf_values_are_redacted():
    assert redacted(["--conf", "spark.hadoop.fs.s3a.secret.key=abc", "a=b"]) == [
        "--conf",
        "spark.hadoop.fs.s3a.secret.key=***",
        "a=b",
    ]


def _fake_jvm_with_daemons(count: int) -> subprocess.Popen:
    """A process whose children look like pyspark's worker daemons (by their command line)."""
    code = (
        "import subprocess, sys, time\n"
        f"kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', 'pyspark.daemon']) for _ in range({count})]\n"
        "print('ready', flush=True)\n"
        "for kid in kids: kid.wait()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_idle_compaction_stops_daemons_of_replaced_sessions_and_empties_the_slots(tmp_path):
    (tmp_path / "sessions").mkdir()
    slot = tmp_path / "sessions" / "slot-0.session"
    jvm = _fake_jvm_with_daemons(2)
    try:
        wait_for(lambda: len(local_connect._worker_daemons(jvm.pid)) == 2, timeout=10, what="the daemons")
        slot.write_text("{}")
        (tmp_path / "sessions" / "slot-1.session").write_text("{}")
        local_connect._compact(tmp_path, jvm.pid)  # as many daemons as slots: nothing to do
        assert len(local_connect._worker_daemons(jvm.pid)) == 2 and slot.exists()

        (tmp_path / "sessions" / "slot-1.session").unlink()  # a session was replaced
        local_connect._compact(tmp_path, jvm.pid)
        wait_for(lambda: not local_connect._worker_daemons(jvm.pid), timeout=10, what="the daemons to stop")
        assert not slot.exists()  # its session's daemon is gone: the next job starts a new one
    finally:
        for child in psutil.Process(jvm.pid).children():
            child.kill()
        jvm.kill()
        jvm.wait()


def test_an_unknown_local_mode_fails_the_task_naming_the_option(dag_runner):
    source = operator_dag("bad_mode", application=str(TEST_JOBS / "probe_job.py"))
    outcome = dag_runner.run("bad_mode", source, env={"AIRFLOW__SPARK_PORTABLE__LOCAL_MODE": "warp"})
    assert outcome.task_state == "failed"
    assert "[spark_portable] local_mode = 'warp' must be one of connect, submit" in outcome.output


# -- with Spark ----------------------------------------------------------------------


@spark
def test_jobs_share_a_warm_server_and_a_reset_session_until_the_code_changes(dag_runner, tmp_path, work_dir):
    project = _project(tmp_path, version="1")
    env = {"AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT": str(project)}
    source = operator_dag(
        "sessions", application=str(TEST_JOBS / "session_probe_job.py"), conf={"spark.sql.shuffle.partitions": "3"}
    )
    first = dag_runner.run("sessions", source, env=env)
    assert first.task_state == "success", first.output[-3000:]
    second = dag_runner.run("sessions", source, env=env)
    assert second.task_state == "success", second.output[-3000:]

    one, two = first.metrics, second.metrics
    assert one["worker_version"] == "1" and one["shuffle_partitions"] == "3"
    assert "Starting a Spark Connect server" in first.output
    assert "Using the warm Spark Connect server" in second.output
    assert "Starting a Spark Connect server" not in second.output
    assert two["session_id"] == one["session_id"]  # warm Python workers, no new daemon
    assert two["leftover_conf"] is None  # ... but reset: the first job's conf is gone
    server_dir = _server_of(work_dir, project)

    # An edited module: the same server, a new session whose workers import the new code.
    (project / "codever.py").write_text('VERSION = "2"\n')
    third = dag_runner.run("sessions", source, env=env)
    assert third.task_state == "success", third.output[-3000:]
    assert third.metrics["worker_version"] == "2"
    assert third.metrics["session_id"] != one["session_id"]
    assert third.metrics["remote"] == one["remote"]  # same port: same server
    assert _server_of(work_dir, project) == server_dir
    assert "Starting a Spark Connect server" not in third.output


@spark
def test_the_server_listens_on_localhost_only_and_wants_its_token(dag_runner, work_dir):
    outcome = dag_runner.run("auth", operator_dag("auth", application=str(TEST_JOBS / "probe_job.py")))
    assert outcome.task_state == "success", outcome.output[-3000:]
    assert outcome.metrics["session_module"] == "pyspark.sql.connect.session"
    info_path = _server_used(outcome.output) / "server.json"
    assert info_path.stat().st_mode & 0o077 == 0  # the token is readable by its owner only
    info = json.loads(info_path.read_text())
    assert info["token"] not in outcome.output
    listening = [
        c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == info["port"] and c.status == "LISTEN"
    ]
    assert listening and {c.laddr.ip for c in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}
    no_token = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from pyspark.sql import SparkSession as S; S.builder.remote('sc://localhost:{info['port']}').getOrCreate().range(1).count()",
        ],
        env={k: v for k, v in os.environ.items() if k != "SPARK_CONNECT_AUTHENTICATE_TOKEN"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_token.returncode != 0 and "UNAUTHENTICATED" in no_token.stderr


@spark
def test_killing_a_connect_job_stops_its_query_and_keeps_the_server(dag_runner, tmp_path, work_dir):
    beats = tmp_path / "heartbeats"
    source = operator_dag(
        "kill_connect", application=str(TEST_JOBS / "heartbeat_job.py"), application_args=[str(beats)]
    )
    proc, _ = dag_runner.start("kill_connect", source)
    try:
        wait_for(lambda: beats.exists() and beats.stat().st_size > 0, timeout=180, what="the job's query to start")
        job = [p for p in psutil.Process(proc.pid).children(recursive=True) if "heartbeat_job.py" in _cmdline(p)]
        assert job, "the job process"
        os.kill(proc.pid, signal.SIGTERM)  # what Airflow sends a task it kills; on_kill runs
        output, _ = proc.communicate(timeout=120)
        assert "was cancelled" in output
        assert "Interrupted and closed the job's Spark Connect session: interrupted 1 operation(s)" in output
        _, alive = psutil.wait_procs(job, timeout=15)
        assert alive == []

        def stopped_beating():
            size = beats.stat().st_size
            time.sleep(1.5)
            return beats.stat().st_size == size

        wait_for(stopped_beating, timeout=30, what="the query on the server to stop")
        info = json.loads((_server_used(output) / "server.json").read_text())
        with socket.create_connection(("127.0.0.1", info["port"]), timeout=5):
            pass  # the server is still up for the next job
    finally:
        kill_session(proc)


@spark
def test_an_idle_server_stops_by_itself(dag_runner, tmp_path):
    own = tmp_path / "work"
    env = {"AIRFLOW__SPARK_PORTABLE__WORK_DIR": str(own), "AIRFLOW__SPARK_PORTABLE__LOCAL_CONNECT_IDLE_TIMEOUT": "2"}
    outcome = dag_runner.run("idle", operator_dag("idle", application=str(TEST_JOBS / "probe_job.py")), env=env)
    assert outcome.task_state == "success", outcome.output[-3000:]
    (state,) = (own / "connect").glob("*/spec.json")
    log = state.parent / "server.log"
    ready = re.search(r"supervisor\[(\d+)\]: ready on .* \(JVM pid (\d+)\)", log.read_text())
    assert ready, log.read_text()
    pids = [int(ready.group(1)), int(ready.group(2))]

    def server_gone():
        return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)

    wait_for(server_gone, timeout=60, what="the idle server to stop")
    assert "idle for 2 s; stopping" in log.read_text()
    assert not (state.parent / "server.json").exists()


@spark
def test_a_server_that_cannot_start_fails_the_task_with_its_log(dag_runner):
    source = operator_dag(
        "no_server",
        application=str(TEST_JOBS / "probe_job.py"),
        conf={"spark.plugins": "org.example.NoSuchPlugin"},
    )
    outcome = dag_runner.run("no_server", source)
    assert outcome.task_state == "failed"
    assert "the local Spark Connect server did not start" in outcome.output
    assert "ClassNotFoundException: org.example.NoSuchPlugin" in outcome.output  # Spark's own words, from its log
    assert "local_mode = submit" in outcome.output
