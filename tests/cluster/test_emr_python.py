"""The job side on what an EMR 7.x node runs: its python3 (3.9, no boto3: .cluster/node) with
Spark 3.5 (.cluster/spark), through a real spark-submit as an EMR step runs it; and the
failures a cluster without boto3 must give (stderr, exit code, the fix), at job start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from airflow_spark_portable.pipes import JobReport, LocalChannel
from airflow_spark_portable.runtime import JobContext, RunIdentity, open_job
from airflow_spark_portable.runtime import job as runtime_job
from airflow_spark_portable.runtime.transport import MissingClientError

from .support import NODE_PYTHON, ON_EMR_PYTHON, SPARK_HOME, node_env, spark_submit

BOTO3_MISSING = (
    "boto3 is not installed for {python} on this cluster: add a bootstrap action that runs "
    "`sudo python3 -m pip install boto3` (transient clusters made by engine emr install it themselves), "
    "or set emr.python to an interpreter that has it"
)

on_the_node = pytest.mark.skipif(not ON_EMR_PYTHON, reason="the Python 3.9 run (scripts/test.sh) runs the jobs on "
                                 ".cluster/node, EMR 7.x's python3")


@pytest.fixture(scope="module")
def node():
    if not (NODE_PYTHON.exists() and (SPARK_HOME / "bin" / "spark-submit").exists()):
        pytest.fail("no .cluster/node or .cluster/spark: build them with scripts/cluster_env.sh node")
    out = subprocess.run([str(NODE_PYTHON), "-c", "import sys, importlib.util as u; "
                          "print(sys.version_info[:2] == (3, 9), u.find_spec('boto3') is None)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"], "the node's python3 must be a bare 3.9, as EMR 7.x's"
    return NODE_PYTHON


def _context(**over) -> JobContext:
    base = dict(engine="emr", profile="emr", partition={"crawl": "CC-MAIN-2024-10", "domain": "steel"},
                run=RunIdentity(dag_id="d", task_id="t", run_id="r1", map_index=2, try_number=3),
                inputs={"cc": "/data/cc"}, extras={"max_files_per_crawl": 2}, application_args=["--rows", "7"])
    base.update(over)
    return JobContext(**base)


FAILING_JOB = textwrap.dedent('''
    import sys

    from pyspark.sql import functions as F

    from airflow_spark_portable.runtime import SparkJob


    class Fails(SparkJob):
        def run(self, job):
            ctx = job.context
            rows = int(ctx.application_args[1])
            worker_python = F.udf(lambda _: sys.version.split()[0])  # runs in a Python worker
            df = job.spark.range(rows).withColumn("python", worker_python("id"))
            job.report_metrics(
                rows=df.count(), worker_python=df.first()["python"], driver_python=sys.version.split()[0],
                spark=job.spark.version, crawl=ctx.crawl, domain=ctx.domain, run=vars(ctx.run),
                extras=ctx.extras, cc=ctx.input("cc"),
            )
            raise RuntimeError("disk full on the node")


    if __name__ == "__main__":
        Fails.main()
''')


@on_the_node
@pytest.mark.spark
def test_a_failing_job_on_the_node_reports_its_context_metrics_and_traceback(node, tmp_path):
    job = tmp_path / "fails.py"
    job.write_text(FAILING_JOB)
    channel = LocalChannel(tmp_path / "try-3")
    channel.write_context(_context())
    proc = subprocess.run(spark_submit(job, *channel.bootstrap_args()), env=node_env(), capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    report = JobReport()
    for message in channel.read_new_messages():
        report.add(message)
    assert proc.returncode != 0 and report.opened and not report.completed, proc.stderr[-3000:]
    assert report.metrics == {
        "rows": 7, "worker_python": report.metrics["driver_python"], "driver_python": report.metrics["driver_python"],
        "spark": "3.5.2", "crawl": "CC-MAIN-2024-10", "domain": "steel",
        "run": {"dag_id": "d", "task_id": "t", "run_id": "r1", "map_index": 2, "try_number": 3, "logical_date": None},
        "extras": {"max_files_per_crawl": 2}, "cc": "/data/cc",
    }
    assert report.metrics["driver_python"].startswith("3.9.")
    # the job's own error, with its traceback (Python 3.9 has no one-argument format_exception)
    failure = report.failure
    assert (failure["error_type"], failure["message"]) == ("RuntimeError", "disk full on the node"), failure
    assert failure["traceback"].startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError("disk full on the node")' in failure["traceback"]
    assert failure["traceback"].rstrip().endswith("RuntimeError: disk full on the node")
    assert "TypeError" not in proc.stderr


@on_the_node
@pytest.mark.spark
def test_an_s3_channel_without_boto3_fails_at_job_start_naming_the_fix(node, tmp_path):
    job = tmp_path / "fails.py"
    job.write_text(FAILING_JOB)
    proc = subprocess.run(
        spark_submit(job, "--spark-portable-context", "s3://bucket/runs/t/try-1/context.json",
                     "--spark-portable-messages", "s3://bucket/runs/t/try-1/messages/"),
        env=node_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode != 0
    # the job writes it to its stderr; spark-submit (PythonRunner) passes the Python driver's
    # stderr on merged into its own stdout, which is the EMR step's stdout log
    assert BOTO3_MISSING.format(python=node) in proc.stdout.splitlines(), (proc.stdout + proc.stderr)[-3000:]
    assert "Running Spark version" not in proc.stdout + proc.stderr  # no SparkContext was started
    assert "Traceback" not in proc.stdout + proc.stderr  # the message says it all


def test_an_s3_channel_without_boto3_exits_with_the_message(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "boto3", None)  # as on a node without it
    with pytest.raises(SystemExit) as info:
        with open_job(["job.py", "--spark-portable-context", "s3://b/c.json", "--spark-portable-messages", "s3://b/m/"]):
            pytest.fail("the job must not start")
    assert info.value.code == 1
    assert capsys.readouterr().err == BOTO3_MISSING.format(python=sys.executable) + "\n"


def test_s3_inputs_without_boto3_fail_the_edges_step_before_any_spark_work(monkeypatch, tmp_path):
    from harness.run_graph_steps import run_step

    monkeypatch.setitem(sys.modules, "boto3", None)
    monkeypatch.setattr(runtime_job.Job, "spark", property(lambda self: pytest.fail("Spark was started")))
    report, error = run_step("edges", "CC-MAIN-2024-10", "steel", "s3://commoncrawl/", tmp_path / "seeds",
                             tmp_path / "out", tmp_path)
    assert isinstance(error, MissingClientError) and error.name == "boto3"
    assert not report.completed
    assert (report.failure["error_type"], report.failure["message"]) == (
        "MissingClientError", BOTO3_MISSING.format(python=sys.executable))
    assert not (tmp_path / "out").exists()


def test_an_s3_file_without_boto3_is_a_failed_file_at_once(monkeypatch):
    # on an executor: the file is failed (and named) with the fix, never retried
    from jobs.common import inputs

    monkeypatch.setitem(sys.modules, "boto3", None)
    opened = []
    real = inputs.open_uri
    monkeypatch.setattr(inputs, "open_uri", lambda uri: opened.append(uri) or real(uri))
    with pytest.raises(MissingClientError, match="boto3 is not installed for"):
        inputs.with_retries("s3://commoncrawl/crawl-data/x.warc.wat.gz", lambda stream: stream.read())
    assert opened == ["s3://commoncrawl/crawl-data/x.warc.wat.gz"]


def test_the_session_file_is_owner_only(monkeypatch, tmp_path):
    # the slot's Spark Connect session id (local engine): private like the context and messages
    import pyspark.sql

    class FakeBuilder:
        def remote(self, url):
            self.url = url
            return self

        def create(self):
            return FakeSession()

    class FakeSession:
        builder = FakeBuilder()

        def sql(self, text):
            pass

        catalog = type("Catalog", (), {"clearCache": lambda self: None})()

    monkeypatch.setattr(pyspark.sql, "SparkSession", FakeSession)
    monkeypatch.setenv("SPARK_REMOTE", "sc://localhost:1")
    old_umask = os.umask(0o022)
    try:
        session_file = tmp_path / "slot-0.session"
        runtime_job._lent_session("sc://localhost:1", session_file)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(session_file.stat().st_mode) == 0o600
    assert runtime_job.read_session_file(session_file)["session_id"] in os.environ["SPARK_REMOTE"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slot-0.session"]  # nothing left aside
