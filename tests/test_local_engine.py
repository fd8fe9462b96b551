"""The local engine end to end: real spark-submit under Airflow's own dag.test()."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from airflow_spark_portable.engines.local import LocalSlots
from conftest import ROOT, SUBMIT_MODE, TEST_JOBS, assert_probe_saw_its_task, kill_session, operator_dag, wait_for

spark = pytest.mark.spark


@spark
def test_job_gets_its_context_and_its_metrics_become_xcom(dag_runner):
    source = operator_dag(
        "probe",
        application=str(TEST_JOBS / "probe_job.py"),
        application_args=["--flag", "{{ params.word }}; rm -rf /"],
        dag_params={"word": "x"},
        crawl="CC-MAIN-2024-10",
        domain="steel",
        inputs={"cc": "/data/cc"},
        output_root="/tmp/out",
        extras={"max_files_per_crawl": 2},
        conf={"spark.portable.test": "yes", "spark.hadoop.fs.s3a.secret.key": "s3cr3t-value"},
        env={"MY_SETTING": "from-env"},
    )
    outcome = dag_runner.run("probe", source)
    assert outcome.task_state == "success", outcome.output[-3000:]
    metrics = outcome.metrics
    assert_probe_saw_its_task(metrics, "local")  # what the EMR and Databricks probes must see too
    ctx = metrics["context"]
    assert ctx["engine"] == "local" and ctx["profile"] == "small"
    assert ctx["partition"] == {"crawl": "CC-MAIN-2024-10", "domain": "steel"}
    assert ctx["inputs"] == {"cc": "/data/cc"} and ctx["output_root"] == "/tmp/out"
    assert ctx["extras"] == {"max_files_per_crawl": 2}
    assert ctx["run"]["dag_id"] == "probe" and ctx["run"]["task_id"] == "job"
    assert ctx["run"]["run_id"] == outcome.result["run_id"] and ctx["run"]["try_number"] == 1
    # templated arguments arrive verbatim: no shell ever interpreted them
    assert metrics["argv"] == ["--flag", "x; rm -rf /"]
    assert metrics["my_setting_reversed"] == "vne-morf"
    assert metrics["airflow_env_vars"] == []  # the worker's Airflow secrets stay out of the job
    assert metrics["shuffle_partitions"] == "4"  # from the 'small' profile
    assert metrics["custom_conf"] == "yes"  # the task's conf
    assert metrics["rows"] == 42
    assert metrics["spark_portable"]["engine"] == "local"
    assert metrics["spark_portable"]["wall_seconds"] > 0
    assert "from-env" not in outcome.output  # env values are never logged
    assert "spark.hadoop.fs.s3a.secret.key=***" in outcome.output
    assert "s3cr3t-value" not in outcome.output
    assert '"rows": 42' in outcome.output  # metrics are in the task log too


@spark
def test_a_raising_job_fails_the_task_with_its_error_text(dag_runner):
    outcome = dag_runner.run("failing", operator_dag("failing", application=str(TEST_JOBS / "failing_job.py")))
    assert outcome.task_state == "failed"
    assert "failed: ValueError: seed file steel.csv has no 'url' column" in outcome.output
    assert "Job traceback" in outcome.output and 'raise ValueError("seed file' in outcome.output
    # it ended its own queries: its warm Connect session is kept for the next job
    assert "Interrupted and closed the job's Spark Connect session" not in outcome.output


@spark
def test_exit_zero_without_completion_fails(dag_runner):
    source = operator_dag("no_runtime", application=str(TEST_JOBS / "no_runtime_job.py"), application_args=["0"])
    outcome = dag_runner.run("no_runtime", source)
    assert outcome.task_state == "failed"
    assert "exited successfully without reporting completion and never opened it" in outcome.output


@spark
def test_nonzero_exit_without_a_message_fails_with_the_output_tail(dag_runner):
    source = operator_dag("exit_3", application=str(TEST_JOBS / "no_runtime_job.py"), application_args=["3"])
    outcome = dag_runner.run("exit_3", source, env=SUBMIT_MODE)
    assert outcome.task_state == "failed"
    assert "spark-submit exited with code 3; it reported no error of its own. Last output:" in outcome.output
    assert "counted 3 rows" in outcome.output


def _stop_all(proc, children):
    """Clean up after a failed assertion: spark-submit runs in a session of its own."""
    kill_session(proc)
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            pass


def _start_slow_job(dag_runner, work_dir, dag_id):
    source = operator_dag(dag_id, application=str(TEST_JOBS / "slow_job.py"))
    proc, _ = dag_runner.start(dag_id, source, env=SUBMIT_MODE)
    try:
        return proc, _wait_until_sleeping(proc, work_dir, dag_id)
    except BaseException:
        _stop_all(proc, psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else [])
        raise


def _wait_until_sleeping(proc, work_dir, dag_id):

    def sleeping():
        for messages in work_dir.glob(f"runs/{dag_id}.*/messages.jsonl"):
            if '"phase":"sleeping"' in messages.read_text():
                return True
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        return False

    wait_for(sleeping, timeout=180, what="the slow job to start sleeping")

    def cmdline(process):
        try:
            return " ".join(process.cmdline())
        except psutil.Error:  # exited (or a zombie) since it was listed
            return ""

    def spark_processes():
        children = psutil.Process(proc.pid).children(recursive=True)
        names = [cmdline(c) for c in children]
        has_worker = any("pyspark.daemon" in n or "pyspark/daemon" in n or "worker" in n for n in names)
        has_java = any("java" in n for n in names)
        return children if (has_java and has_worker) else None

    return wait_for(spark_processes, timeout=60, what="the JVM and a Python worker")


@spark
def test_killing_the_task_stops_every_spark_process(dag_runner, work_dir):
    proc, children = _start_slow_job(dag_runner, work_dir, "kill_term")
    try:
        os.kill(proc.pid, signal.SIGTERM)  # what Airflow sends a task it kills; on_kill runs
        output, _ = proc.communicate(timeout=120)
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert alive == [], [p.cmdline() for p in alive]
        assert "was cancelled" in output
    finally:
        _stop_all(proc, children)


@spark
def test_sigkilled_worker_leaves_no_spark_process_behind(dag_runner, work_dir):
    proc, children = _start_slow_job(dag_runner, work_dir, "kill_nine")
    try:
        os.kill(proc.pid, signal.SIGKILL)  # no on_kill: the kernel and the runtime's watchdog act
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(children, timeout=20)
        assert alive == [], [p.cmdline() for p in alive]
    finally:
        _stop_all(proc, children)


@spark
def test_job_uses_spark_connect_when_spark_remote_is_set():
    env = {**os.environ, "SPARK_REMOTE": "local[1]", "SPARK_TESTING": "1"}  # SPARK_TESTING: a free port
    out = subprocess.run(
        [sys.executable, str(TEST_JOBS / "probe_job.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    completed = [line for line in out.stderr.splitlines() if '"type": "completed"' in line]
    metrics = json.loads(completed[-1].split("spark-portable: ", 1)[1])["metrics"]
    assert metrics["session_module"].startswith("pyspark.sql.connect")
    assert metrics["rows"] == 42


def test_slot_cap_blocks_until_a_slot_is_free(tmp_path):
    import logging

    slots = LocalSlots(tmp_path, size=1)
    log = logging.getLogger("test")
    first = slots.acquire(log)
    got = threading.Event()

    def second():
        handle = slots.acquire(log, poll_seconds=0.05)
        got.set()
        LocalSlots.release(handle)

    thread = threading.Thread(target=second, daemon=True)
    thread.start()
    time.sleep(0.5)
    assert not got.is_set()  # the only slot is taken
    LocalSlots.release(first)
    assert got.wait(5)
    thread.join(5)


def test_slot_of_a_dead_process_is_freed(tmp_path):
    import logging

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'a+'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(tmp_path / "slot-0.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    handle = LocalSlots(tmp_path, size=1).acquire(logging.getLogger("test"), poll_seconds=0.05)
    LocalSlots.release(handle)
