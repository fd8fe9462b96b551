"""engine="emr": the job as an EMR step, through the amazon provider's EmrHook/S3Hook against
moto's server, with tests/harness/emr_cluster.py playing the cluster (moto never runs steps)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import boto3
import pytest

from airflow_spark_portable.engines.base import JobSpec, run_name
from airflow_spark_portable.engines.emr import EmrEngine
from airflow_spark_portable.exceptions import SparkPortableConfigError
from airflow_spark_portable.profiles import Profiles
from airflow_spark_portable.runtime.context import JobContext, RunIdentity
from conftest import TEST_JOBS, kill_session, operator_dag, wait_for
from harness.emr_cluster import REGION, FakeCluster, add_cancel_steps_to_moto

spark = pytest.mark.spark
BUCKET = "asp-emr"


@pytest.fixture
def aws(aws_endpoint):
    add_cancel_steps_to_moto()
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket="asp-logs")
    return aws_endpoint


@pytest.fixture
def cluster(aws):
    fake = FakeCluster(aws, log_uri="s3://asp-logs/emr/")
    yield fake
    fake.stop()


def _project(tmp_path: Path, cluster_id: str, **emr) -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    section = {"cluster_id": cluster_id, "s3_root": f"s3://{BUCKET}/spark-portable", **emr}
    lines = "".join(f"      {k}: {v}\n" for k, v in section.items())
    (project / "profiles.yaml").write_text(
        f'version: 1\nprofiles:\n  small:\n    spark_conf:\n      spark.sql.shuffle.partitions: "4"\n    emr:\n{lines}'
    )
    return project


def _emr_dag(dag_id: str, job: str, engine_options: dict | None = None, **kwargs) -> str:
    """A one-task DAG running ``tests/jobs/<job>`` on EMR, polling every second."""
    options = {"poll_interval_seconds": 1, "log_wait_seconds": 30, **(engine_options or {})}
    kwargs.setdefault("poll_interval", 1)
    return operator_dag(dag_id, engine="emr", application=str(TEST_JOBS / job), engine_options=options, **kwargs)


def _env(project: Path) -> dict[str, str]:
    return {"AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT": str(project)}


@spark
def test_the_job_runs_as_a_step_with_the_same_context_and_metrics(dag_runner, cluster, tmp_path):
    project = _project(tmp_path, cluster.cluster_id)
    source = _emr_dag(
        "emr_probe",
        "probe_job.py",
        application_args=["--flag", "x; rm -rf /"],
        crawl="CC-MAIN-2024-10",
        domain="steel",
        extras={"max_files_per_crawl": 2},
        conf={"spark.portable.test": "yes"},
    )
    outcome = dag_runner.run("emr_probe", source, env=_env(project))
    assert outcome.task_state == "success", outcome.output[-4000:]
    metrics = outcome.metrics
    assert metrics["context"]["engine"] == "emr"
    assert metrics["context"]["partition"] == {"crawl": "CC-MAIN-2024-10", "domain": "steel"}
    assert metrics["context"]["extras"] == {"max_files_per_crawl": 2}
    assert metrics["argv"] == ["--flag", "x; rm -rf /"]  # verbatim: no shell on the way
    assert metrics["rows"] == 42 and metrics["custom_conf"] == "yes" and metrics["shuffle_partitions"] == "4"
    assert metrics["spark_portable"]["engine"] == "emr"

    (step,) = cluster.steps()
    assert step.state == "COMPLETED" and step.jar == "command-runner.jar"
    assert step.action_on_failure == "CONTINUE"
    args = step.args
    assert args[:3] == ["spark-submit", "--deploy-mode", "client"]
    code = args[args.index("--py-files") + 1]
    assert code.startswith(f"s3://{BUCKET}/spark-portable/artifacts/code-") and code.endswith(".zip")
    # the context travels per step, under this task try's own prefix
    context_uri = args[args.index("--spark-portable-context") + 1]
    assert context_uri == f"s3://{BUCKET}/spark-portable/runs/{step.name}/context.json"
    assert step.name.endswith(".try1")

    # the same task again: artifacts are content-addressed, so nothing is uploaded twice
    again = dag_runner.run("emr_probe", source, env=_env(project))
    assert again.task_state == "success", again.output[-4000:]
    assert again.output.count("Artifact unchanged, not uploaded") == 2
    keys = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="spark-portable/artifacts/")["Contents"]
    assert len(keys) == 2


@spark
def test_a_failed_step_fails_the_task_with_the_error_and_the_step_log(dag_runner, cluster, tmp_path):
    project = _project(tmp_path, cluster.cluster_id)
    source = _emr_dag("emr_failing", "failing_job.py")
    outcome = dag_runner.run("emr_failing", source, env=_env(project))
    assert outcome.task_state == "failed"
    assert "failed: ValueError: seed file steel.csv has no 'url' column" in outcome.output
    (step,) = cluster.steps()
    assert step.state == "FAILED"
    assert f"--- stderr (s3://asp-logs/emr/{cluster.cluster_id}/steps/{step.id}/stderr.gz) ---" in outcome.output
    assert "[driver]" in outcome.output and "Traceback" in outcome.output


@spark
def test_a_deferred_task_frees_its_worker_and_resumes_when_the_step_ends(dag_runner, cluster, tmp_path):
    project = _project(tmp_path, cluster.cluster_id)
    source = _emr_dag("emr_deferred", "probe_job.py", deferrable=True)
    outcome = dag_runner.run("emr_deferred", source, env=_env(project))
    assert outcome.task_state == "success", outcome.output[-4000:]
    assert "Deferring: the worker slot is free while emr runs the job" in outcome.output
    assert outcome.metrics["rows"] == 42


def test_killing_the_task_cancels_its_step(dag_runner, cluster, tmp_path):
    cluster.hold = True  # the step stays RUNNING until cancelled
    project = _project(tmp_path, cluster.cluster_id)
    source = _emr_dag("emr_kill", "probe_job.py")
    proc, _ = dag_runner.start("emr_kill", source, env=_env(project))
    try:
        wait_for(lambda: cluster.steps(), timeout=120, what="the step to be added")
        os.kill(proc.pid, signal.SIGTERM)  # what Airflow sends a task it kills
        output, _ = proc.communicate(timeout=120)
        (step,) = cluster.steps()
        assert step.state == "CANCELLED", output[-3000:]
        assert f"Cancelling EMR step {step.id}" in output
    finally:
        kill_session(proc)


def _spec(project: Path, try_number: int) -> JobSpec:
    profile = Profiles.load(project / "profiles.yaml").get("small")
    context = JobContext(
        engine="emr",
        profile="small",
        run=RunIdentity(dag_id="d", task_id="t", run_id="manual__1", map_index=3, try_number=try_number),
    )
    return JobSpec(
        name=run_name(context),
        application=TEST_JOBS / "probe_job.py",
        code_root=project,
        application_args=[],
        spark_conf={},
        profile=profile,
        env={},
        context=context,
    )


def test_a_retry_reattaches_to_the_running_step_of_its_task_instance(cluster, tmp_path):
    cluster.hold = True
    project = _project(tmp_path, cluster.cluster_id)
    engine = EmrEngine({"aws_conn_id": None})
    first = _spec(project, try_number=1)
    channel = engine.open_channel(first)
    channel.write_context(first.context)
    handle = engine.submit(first, channel)

    retry = engine.find_active_run(_spec(project, try_number=2))
    assert retry is not None and retry["step_id"] == handle["step_id"]
    assert retry["channel_uri"] == channel.uri  # the first try's mailbox: its messages count
    other_task = _spec(project, try_number=2)
    other_task = JobSpec(**{**other_task.__dict__, "name": other_task.name.replace(".t.", ".other.")})
    assert engine.find_active_run(other_task) is None

    engine.cancel(handle)
    assert engine.find_active_run(_spec(project, try_number=2)) is None  # nothing to reattach to


def test_cluster_and_profile_errors_are_clear(cluster, tmp_path):
    engine = EmrEngine({"aws_conn_id": None})
    assert engine.cluster_id({"cluster_name": "asp-test", "cluster_id": None}) == cluster.cluster_id
    with pytest.raises(SparkPortableConfigError, match="no active EMR cluster is named 'nope'"):
        engine.cluster_id({"cluster_name": "nope", "cluster_id": None})

    missing = _project(tmp_path, "j-DOESNOTEXIST")
    spec = _spec(missing, 1)
    with pytest.raises(SparkPortableConfigError, match="EMR cluster 'j-DOESNOTEXIST'"):
        engine.submit(spec, engine.open_channel(spec))

    shutil.rmtree(tmp_path / "project")
    no_root = _project(tmp_path, cluster.cluster_id, s3_root="bucket-without-scheme")
    with pytest.raises(SparkPortableConfigError, match="s3_root = 'bucket-without-scheme' must be an s3://"):
        EmrEngine.validate_profile(Profiles.load(no_root / "profiles.yaml").get("small"))

    spec = _spec(_project(tmp_path, cluster.cluster_id), 1)
    secret = JobSpec(**{**spec.__dict__, "spark_conf": {"spark.hadoop.fs.s3a.secret.key": "x"}})
    with pytest.raises(SparkPortableConfigError, match="secrets cannot travel as EMR step arguments"):
        engine.submit(secret, engine.open_channel(secret))
    assert cluster.steps() == []  # nothing reached the cluster


def test_an_unknown_connection_fails_the_task_naming_it(dag_runner, cluster, tmp_path):
    project = _project(tmp_path, cluster.cluster_id)
    source = _emr_dag("emr_conn", "probe_job.py", engine_options={"aws_conn_id": "no_such_conn"})
    outcome = dag_runner.run("emr_conn", source, env=_env(project))
    assert outcome.task_state == "failed"
    assert "engine_options aws_conn_id='no_such_conn'" in outcome.output and "isn't defined" in outcome.output
    assert cluster.steps() == []
