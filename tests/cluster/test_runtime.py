"""The job-side runtime, exercised as a job uses it (no Airflow; Spark only in the tests marked spark)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from airflow_spark_portable.pipes import JobReport, LocalChannel, parse_lines
from airflow_spark_portable.runtime import JobContext, RunIdentity, SparkJob, open_job
from airflow_spark_portable.runtime import protocol
from .support import ROOT, spark_version


def _context(**over) -> JobContext:
    base = dict(
        engine="local",
        profile="small",
        run=RunIdentity(dag_id="d", task_id="t", run_id="r1", map_index=3, try_number=2, logical_date=None),
        partition={"crawl": "CC-MAIN-2024-10", "domain": "steel"},
        inputs={"cc": "/data/cc"},
        output_root="/out",
        extras={"max_files": 2, "nested": {"a": [1, 2]}},
        application_args=["--rows", "5"],
    )
    base.update(over)
    return JobContext(**base)


@pytest.fixture
def channel(tmp_path) -> LocalChannel:
    channel = LocalChannel(tmp_path / "try-1")
    channel.write_context(_context())
    return channel


def _argv(channel: LocalChannel, *args: str) -> list[str]:
    return ["job.py", *channel.bootstrap_args(), *args]


def _report(channel: LocalChannel) -> JobReport:
    report = JobReport()
    for message in channel.read_new_messages():
        report.add(message)
    return report


def test_context_round_trips_through_the_channel(channel):
    argv = _argv(channel, "--rows", "5")
    with open_job(argv) as job:
        assert job.context == _context()
        assert job.context.crawl == "CC-MAIN-2024-10" and job.context.domain == "steel"
        assert job.context.input("cc") == "/data/cc"
    # the bootstrap flags are removed so the job's own parser sees only its arguments
    assert argv == ["job.py", "--rows", "5"]


def test_missing_input_names_the_fix(channel):
    with open_job(_argv(channel)) as job:
        with pytest.raises(KeyError, match=r"needs input 'seeds'.*inputs=\{'seeds'"):
            job.context.input("seeds")


def test_completed_job_reports_merged_metrics(channel):
    class Job(SparkJob):
        def run(self, job):
            job.report_metrics(rows=10, phase="a")
            job.report_metrics({"phase": "b"})
            return {"bytes": 123}

    Job.main(_argv(channel))
    report = _report(channel)
    assert report.opened and report.completed and report.failure is None
    assert report.metrics == {"rows": 10, "phase": "b", "bytes": 123}


def test_raising_job_reports_error_and_still_raises(channel):
    with pytest.raises(RuntimeError, match="disk full"):
        with open_job(_argv(channel)):
            raise RuntimeError("disk full")
    report = _report(channel)
    assert not report.completed
    assert report.failure["error_type"] == "RuntimeError"
    assert report.failure["message"] == "disk full"
    assert "raise RuntimeError" in report.failure["traceback"]


def test_sys_exit_zero_completes_but_nonzero_fails(channel):
    with pytest.raises(SystemExit):
        with open_job(_argv(channel)):
            sys.exit(0)
    assert _report(channel).completed

    channel.write_context(_context())
    with pytest.raises(SystemExit):
        with open_job(_argv(channel)):
            sys.exit(4)
    report = _report(channel)
    assert not report.completed and report.failure["message"] == "exit code 4"


@pytest.mark.parametrize(
    ("metrics", "error"),
    [({"spark_portable": 1}, "reserved"), ({"when": object()}, "not a JSON value"), ({"x": float("nan")}, "JSON")],
)
def test_bad_metrics_are_rejected_with_the_name(channel, metrics, error):
    with open_job(_argv(channel)) as job:
        with pytest.raises((ValueError, TypeError), match=error):
            job.report_metrics(metrics)


def test_job_log_lines_travel_as_messages(channel):
    with open_job(_argv(channel)) as job:
        job.log.info("read %d files", 3)
    report = _report(channel)
    assert [m["text"] for m in report.logs][-1].endswith("read 3 files")


def test_half_a_bootstrap_is_an_error(channel):
    with pytest.raises(ValueError, match="only one of"):
        with open_job(["job.py", protocol.ARG_CONTEXT, channel.context_uri]):
            pass


def test_without_bootstrap_the_job_runs_standalone(capsys):
    with open_job(["jobs/x.py", "--n", "1"]) as job:
        assert job.context.engine == "standalone"
        assert job.context.application_args == ["--n", "1"]
        job.report_metrics(n=1)
    assert '"type": "completed"' in capsys.readouterr().err


def test_context_from_a_newer_protocol_is_refused():
    data = _context().to_dict()
    data["version"] = 99
    with pytest.raises(ValueError, match="protocol version 99"):
        JobContext.from_dict(data)


def test_reader_waits_for_a_torn_last_line():
    messages, used = parse_lines(b'{"type":"opened"}\n{"type":"metr')
    assert messages == [{"type": "opened"}] and used == len(b'{"type":"opened"}\n')


def test_rewriting_the_context_clears_old_messages(channel):
    with open_job(_argv(channel)):
        pass
    channel.write_context(_context())
    assert channel.read_new_messages() == []


def test_runtime_and_jobs_import_without_airflow():
    # Jobs run on clusters that have no Airflow: importing them with airflow made
    # unimportable must work.
    code = (
        "import sys; sys.modules['airflow'] = None\n"
        "import runpy, airflow_spark_portable.runtime\n"
        "runpy.run_path(sys.argv[1], run_name='not_main')\n"
        "print(sorted(m for m in sys.modules if m.startswith('airflow.')))"
    )
    jobs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "jobs").rglob("*.py"))
    assert "jobs/edges.py" in jobs and "jobs/common/wat.py" in jobs
    for job in jobs:
        out = subprocess.run(
            [sys.executable, "-c", code, str(ROOT / job)], capture_output=True, text=True, check=True, cwd=ROOT
        )
        assert json.loads(out.stdout.strip().replace("'", '"')) == []


def test_orphaned_job_stops_itself(channel, tmp_path):
    # parent.py starts the job and is then SIGKILLed, as a dead JVM would leave its driver.
    job = tmp_path / "job.py"
    job.write_text(
        "import sys, time\n"
        "from airflow_spark_portable.runtime import open_job\n"
        "with open_job() as job:\n"
        "    job.report_metrics(started=True)\n"
        "    time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time; p = subprocess.Popen([sys.executable] + sys.argv[1:]);"
         " print(p.pid, flush=True); time.sleep(120)", str(job), *channel.bootstrap_args()],
        stdout=subprocess.PIPE, text=True,
    )
    child = psutil.Process(int(parent.stdout.readline()))
    messages = Path(channel.messages_uri)
    deadline = time.monotonic() + 30
    while not (messages.exists() and '"started":true' in messages.read_text()):
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.1)
    parent.kill()
    parent.wait()
    try:
        child.wait(timeout=10)  # raises TimeoutExpired if the orphan keeps running
        assert not child.is_running()
    finally:
        if child.is_running():
            child.kill()


# Each case: the conf, then what _apply_session_conf makes of it on a real session.
SESSION_CONF_CASES = """
import json, sys
from pyspark.sql import SparkSession
from airflow_spark_portable.runtime.job import _apply_session_conf

builder = SparkSession.builder.config("spark.ui.enabled", "false")
spark = (builder.remote("local[1]") if sys.argv[1] == "connect" else builder.master("local[1]")).getOrCreate()
warehouse = spark.conf.get("spark.sql.warehouse.dir")
cases = {
    "runtime": {"spark.sql.shuffle.partitions": "7"},
    "bad_int": {"spark.sql.shuffle.partitions": "abc"},
    "bad_bool": {"spark.sql.adaptive.enabled": "maybe"},
    "static_other": {"spark.sql.warehouse.dir": "/elsewhere"},
    "static_same": {"spark.sql.warehouse.dir": warehouse},
    "core": {"spark.executor.memory": "64g"},
}
out = {}
for name, conf in cases.items():
    try:
        _apply_session_conf(spark, json.dumps(conf))
        out[name] = "ok"
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"
out["shuffle_partitions"] = spark.conf.get("spark.sql.shuffle.partitions")
print("RESULT", json.dumps(out))
"""


@pytest.mark.spark
@pytest.mark.skipif(spark_version() < (4, 0), reason="Spark 4's error conditions, and a local Spark Connect server "
                    "(pyspark 3.5's pip package has none); Spark 3.5: test_session_conf_errors_on_spark_3_5")
@pytest.mark.parametrize("session", ["connect", "classic"])
def test_session_conf_errors_tell_a_bad_value_from_a_static_conf(session):
    # connect: the warm local server's shared session; classic: an existing cluster's
    out = subprocess.run(
        [sys.executable, "-c", SESSION_CONF_CASES, session],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "SPARK_TESTING": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert result["runtime"] == "ok" and result["shuffle_partitions"] == "7"
    assert result["static_same"] == "ok"  # nothing to change
    # a value the conf rejects: the key, the value and Spark's reason (its error condition)
    assert result["bad_int"].startswith(
        "ValueError: Spark conf spark.sql.shuffle.partitions=abc was refused: "
        "[INVALID_CONF_VALUE.TYPE_MISMATCH] The value 'abc' in the config \"spark.sql.shuffle.partitions\" is invalid."
    ), result["bad_int"]
    assert "JVM stacktrace" not in result["bad_int"]
    assert result["bad_bool"].startswith(
        "ValueError: Spark conf spark.sql.adaptive.enabled=maybe was refused: "
        "[INVALID_CONF_VALUE.TYPE_MISMATCH]"
    ), result["bad_bool"]
    # only a conf the session cannot change keeps the shared-application message
    for case, key in (("static_other", "spark.sql.warehouse.dir=/elsewhere"), ("core", "spark.executor.memory=64g")):
        assert result[case].startswith(
            f"ValueError: Spark conf {key} cannot be set per job on a shared Spark application"
        ), result[case]


def test_folder_messages_go_into_a_run_folder_the_first_message_makes(tmp_path):
    # Databricks: the engine names messages/<run id>/ before the run exists; the job makes it
    from airflow_spark_portable.runtime.transport import open_transport

    context = tmp_path / "context.json"
    context.write_text("{}")
    messages = tmp_path / "messages" / "1234"
    transport = open_transport(str(context), f"{messages}/")
    transport.write_message({"type": "log", "seq": 1, "line": "one"})
    transport.write_message({"type": "log", "seq": 2, "line": "two"})
    assert sorted(p.name for p in messages.iterdir()) == ["0000000001.json", "0000000002.json"]
    assert json.loads((messages / "0000000002.json").read_text())["line"] == "two"
    assert (messages.stat().st_mode & 0o777) == 0o700
