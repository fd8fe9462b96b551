"""engine="emr": the job as an EMR step, through the amazon provider's EmrHook/S3Hook against
moto's server, with tests/harness/emr_cluster.py playing the cluster (moto never runs steps)."""

from __future__ import annotations

import asyncio
import dataclasses
import base64
import hashlib
import logging
import os
import re
import shutil
import signal
import time
import zipfile
from pathlib import Path

import boto3
import pytest
import yaml
from airflow.triggers.base import BaseTrigger
from botocore.exceptions import ClientError
from botocore.validate import validate_parameters
from conftest import PROBE_TASK, TEST_JOBS, assert_probe_saw_its_task, kill_session, operator_dag, wait_for
from harness.emr_cluster import REGION, FakeCluster, cluster_env, patch_moto

from airflow_spark_portable.engines import emr_cluster
from airflow_spark_portable.engines.base import CANCELLED, FAILED, SUCCEEDED, JobSpec, run_name
from airflow_spark_portable.engines.emr import ACTIVE_STEP_LIMIT, EmrEngine, EmrStepLimitReached
from airflow_spark_portable.exceptions import AirflowException, SparkPortableConfigError
from airflow_spark_portable.pipes import JobReport, S3Channel
from airflow_spark_portable.profiles import Profiles
from airflow_spark_portable.runtime.context import JobContext, RunIdentity
from airflow_spark_portable.triggers import EngineRunTrigger

spark = pytest.mark.spark
BUCKET = "asp-emr"


@pytest.fixture(scope="session", autouse=True)
def _cluster_env():
    """The fake nodes' Python 3.9 and Spark 3.5.2 (scripts/cluster_env.sh node), built once."""
    cluster_env()


@pytest.fixture
def aws(aws_endpoint):
    patch_moto()
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
    """A one-task DAG running ``tests/jobs/<job>`` (or a path) on EMR, polling every second."""
    options = {"poll_interval_seconds": 1, "log_wait_seconds": 30, "cancel_wait_seconds": 60, **(engine_options or {})}
    kwargs.setdefault("poll_interval", 1)
    return operator_dag(dag_id, engine="emr", application=str(TEST_JOBS / job), engine_options=options, **kwargs)


_FAST = {"aws_conn_id": None, "poll_interval_seconds": 0.5, "cancel_wait_seconds": 30}


def _engine(**options) -> EmrEngine:
    return EmrEngine({**_FAST, **options}, logging.getLogger("test.emr"))


def _run_to_end(engine: EmrEngine, spec: JobSpec):
    """Submit ``spec`` as a step, wait for it, read what the job reported: (handle, result, report)."""
    channel = engine.open_channel(spec)
    channel.write_context(spec.context)
    handle = engine.submit(spec, channel)
    result = engine.wait(handle)
    report = JobReport()
    for message in channel.read_new_messages():
        report.add(message)
    return handle, result, report


def _job(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(source)
    return folder / name


def _python_worker_started(cluster: FakeCluster, step_id: str) -> bool:
    """The Spark job runs a Python UDF: its worker (pyspark.daemon) is up."""
    return any("pyspark.daemon" in c or "pyspark/daemon.py" in c for c in cluster.process_cmdlines(step_id))


def _env(project: Path) -> dict[str, str]:
    return {"AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT": str(project)}


@spark
def test_the_job_runs_as_a_step_with_the_same_context_and_metrics(dag_runner, cluster, tmp_path):
    project = _project(tmp_path, cluster.cluster_id)
    source = _emr_dag("emr_probe", "probe_job.py", **PROBE_TASK)
    outcome = dag_runner.run("emr_probe", source, env=_env(project))
    assert outcome.task_state == "success", outcome.output[-4000:]
    metrics = outcome.metrics
    assert_probe_saw_its_task(metrics, "emr")
    # the job imported the runtime from the code bundle the step shipped (--py-files), not this checkout
    assert metrics["runtime_file"].endswith("/code.zip/airflow_spark_portable/runtime/__init__.py")

    (step,) = cluster.steps()
    assert step.state == "COMPLETED" and step.jar == "command-runner.jar"
    assert step.action_on_failure == "CONTINUE"
    args = step.args
    assert args[:3] == ["spark-submit", "--deploy-mode", "client"]
    code = args[args.index("--py-files") + 1]
    assert code.startswith(f"s3://{BUCKET}/spark-portable/artifacts/") and code.endswith("/code.zip")
    # the context travels per step, under this task try's own prefix
    context_uri = args[args.index("--spark-portable-context") + 1]
    assert re.fullmatch(rf"s3://{BUCKET}/spark-portable/runs/{re.escape(step.name)}\.[0-9a-f]{{16}}/context.json", context_uri)
    assert step.name.endswith(".try1")

    # the step's output is copied into the task log on success too; links point at the cluster
    assert f"--- stdout (s3://asp-logs/emr/{cluster.cluster_id}/steps/{step.id}/stdout.gz) ---" in outcome.output
    assert outcome.xcom_keys["spark_portable_run_url"] == (
        f"https://console.aws.amazon.com/emr/home?region=us-east-1#/clusterDetails/{cluster.cluster_id}"
    )
    assert outcome.xcom_keys["spark_portable_logs_url"] == (
        f"https://console.aws.amazon.com/s3/buckets/asp-logs?region=us-east-1"
        f"&prefix=emr/{cluster.cluster_id}/steps/{step.id}/"
    )
    # a shared cluster (1 x m5.xlarge + 2 x r5.2xlarge, on demand) is charged while the step ran
    cost = metrics["spark_portable"]["cost"]
    assert cost["basis"] == "shared cluster: all its instances while the step ran" and cost["unpriced"] == {}
    per_hour = {"infrastructure": 0.192 + 2 * 0.504, "platform": 0.048 + 2 * 0.126}
    assert cost["instance_hours"] > 0 and cost["region"] == "us-east-1"
    assert cost["infrastructure"] / cost["platform"] == pytest.approx(
        per_hour["infrastructure"] / per_hour["platform"], rel=1e-3
    )
    assert cost["total"] == pytest.approx(cost["infrastructure"] + cost["platform"], abs=2e-6)

    # the same task again: artifacts are content-addressed, so nothing is uploaded twice
    again = dag_runner.run("emr_probe", source, env=_env(project))
    assert again.task_state == "success", again.output[-4000:]
    # both artifacts found in place, none uploaded (Airflow 3.0 prints a task's log lines twice)
    assert len(set(re.findall(r"Artifact unchanged, not uploaded: (\S+)", again.output))) == 2
    assert "Uploaded s3://" not in again.output
    keys = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="spark-portable/artifacts/")["Contents"]
    assert len(keys) == 2


@spark
def test_a_failed_step_fails_the_task_with_the_error_and_the_step_log(dag_runner, cluster, tmp_path):
    cluster.log_lag = 6.0  # EMR's final upload comes well after the step ends
    project = _project(tmp_path, cluster.cluster_id)
    source = _emr_dag("emr_failing", "failing_job.py")
    outcome = dag_runner.run("emr_failing", source, env=_env(project))
    assert outcome.task_state == "failed"
    assert "failed: ValueError: seed file steel.csv has no 'url' column" in outcome.text
    (step,) = cluster.steps()
    assert step.state == "FAILED"
    assert f"--- stderr (s3://asp-logs/emr/{cluster.cluster_id}/steps/{step.id}/stderr.gz) ---" in outcome.output
    # the task log has the end of the step's stderr, from the copy EMR uploaded after the step
    # ended (partial copies were there while it ran), not a tail that stops mid-way
    last = [line for line in cluster.seen[step.id]["stderr"].splitlines() if line.strip()][-1]
    assert f"[driver] {last}" in outcome.output
    assert "may be incomplete" not in outcome.output


@spark
def test_a_deferred_task_frees_its_worker_and_resumes_when_the_step_ends(dag_runner, cluster, tmp_path):
    project = _project(tmp_path, cluster.cluster_id)
    source = _emr_dag("emr_deferred", "probe_job.py")  # deferrable from [operators] default_deferrable
    outcome = dag_runner.run(
        "emr_deferred", source, env={**_env(project), "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "true"}
    )
    assert outcome.task_state == "success", outcome.output[-4000:]
    assert "Deferring: the worker slot is free while emr runs the job" in outcome.output
    assert outcome.metrics["rows"] == 42


@spark
def test_killing_the_task_stops_its_step_and_every_spark_process_of_it(dag_runner, cluster, tmp_path):
    project = _project(tmp_path, cluster.cluster_id)
    source = _emr_dag("emr_kill", "slow_job.py")
    proc, _ = dag_runner.start("emr_kill", source, env=_env(project))
    try:
        wait_for(lambda: cluster.steps(), timeout=120, what="the step to be added")
        (step,) = cluster.steps()
        wait_for(lambda: _python_worker_started(cluster, step.id), timeout=180, what="the job's Python UDF to run")
        os.kill(proc.pid, signal.SIGTERM)  # what Airflow sends a task it kills
        output, _ = proc.communicate(timeout=120)
        assert step.state == "CANCELLED", output[-3000:]
        assert f"Cancelling EMR step {step.id}" in output and f"EMR step {step.id} ended" in output
        # the driver, its Python and the Python workers are gone, not only the step's process
        assert cluster.running_applications() == [] and cluster.process_cmdlines(step.id) == []
    finally:
        kill_session(proc)


def _spec(project: Path, try_number: int, application: Path = TEST_JOBS / "probe_job.py", task: str = "t") -> JobSpec:
    profile = Profiles.load(project / "profiles.yaml").get("small")
    context = JobContext(
        engine="emr",
        profile="small",
        run=RunIdentity(dag_id="d", task_id=task, run_id="manual__1", map_index=3, try_number=try_number),
    )
    return JobSpec(
        name=run_name(context),
        application=application,
        code_root=project,
        application_args=[],
        spark_conf={},
        profile=profile,
        env={},
        context=context,
    )


def _submitted(engine: EmrEngine, spec: JobSpec):
    """``spec`` submitted as the operator does it: its own mailbox, its context, the step."""
    channel = engine.open_channel(spec)
    channel.write_context(spec.context)
    return channel, engine.submit(spec, channel)


def test_a_retry_reattaches_to_the_running_step_of_its_task_instance(cluster, tmp_path):
    cluster.hold = True
    project = _project(tmp_path, cluster.cluster_id)
    engine = EmrEngine({"aws_conn_id": None})
    first = _spec(project, try_number=1)
    channel, handle = _submitted(engine, first)

    retry = engine.find_active_run(_spec(project, try_number=2))
    assert retry is not None and retry["step_id"] == handle["step_id"]
    assert retry["channel_uri"] == channel.uri  # the first try's mailbox: its messages count
    other_task = _spec(project, try_number=2)
    other_task = JobSpec(**{**other_task.__dict__, "name": other_task.name.replace(".t.", ".other.")})
    assert engine.find_active_run(other_task) is None

    engine.cancel(handle)
    assert engine.find_active_run(_spec(project, try_number=2)) is None  # nothing to reattach to


def test_work_that_only_shares_this_tasks_name_is_never_adopted_nor_shares_its_mailbox(cluster, tmp_path):
    """Two Airflow deployments (staging and prod) with one s3_root and one cluster run the same
    DAG: their scheduled runs have the same run ids, so their steps have the same names. A retry
    adopts only a step doing this task's work (its context, try aside, is this one's), and every
    submission writes to a mailbox of its own."""
    cluster.hold = True
    project = _project(tmp_path, cluster.cluster_id)
    engine = EmrEngine({"aws_conn_id": None})
    staging = _spec(project, try_number=1)
    staging = dataclasses.replace(staging, context=dataclasses.replace(staging.context, output_root="s3://staging/out"))
    staging_channel, _ = _submitted(engine, staging)

    prod = _spec(project, try_number=2)
    prod = dataclasses.replace(prod, context=dataclasses.replace(prod.context, output_root="s3://prod/out"))
    assert engine.find_active_run(prod) is None  # same name, other work
    prod_channel = engine.open_channel(prod)
    assert prod_channel.uri != staging_channel.uri
    # the same work (only the try differs) is this task's earlier try: adopted, with its mailbox
    again = engine.find_active_run(dataclasses.replace(staging, context=dataclasses.replace(
        staging.context, run=dataclasses.replace(staging.context.run, try_number=2))))
    assert again is not None and again["channel_uri"] == staging_channel.uri


def test_a_live_step_of_this_name_whose_context_cannot_be_read_stops_the_retry(cluster, tmp_path):
    """In doubt, no second copy: the step may be this task's earlier try."""
    cluster.hold = True
    project = _project(tmp_path, cluster.cluster_id)
    engine = EmrEngine({"aws_conn_id": None})
    channel, _ = _submitted(engine, _spec(project, try_number=1))
    boto3.client("s3", region_name=REGION).delete_object(Bucket=BUCKET, Key=channel.prefix + "context.json")
    with pytest.raises(AirflowException, match="its context .* cannot be read"):
        engine.find_active_run(_spec(project, try_number=2))


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


# -- transient clusters ----------------------------------------------------------------


def _transient_project(tmp_path: Path, section: dict | None = None, **cluster) -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    cluster = {
        "release_label": "emr-7.5.0",
        "instance_groups": {
            "master": {"instance_type": "m5.xlarge"},
            "core": {"instance_type": "r5.2xlarge", "count": 2, "market": "spot"},
        },
        **cluster,
    }
    profile = {
        "spark_conf": {"spark.sql.shuffle.partitions": "4"},
        "emr": {"s3_root": f"s3://{BUCKET}/spark-portable", "cluster": cluster, **(section or {})},
    }
    (project / "profiles.yaml").write_text(yaml.safe_dump({"version": 1, "profiles": {"small": profile}}))
    return project


def _wheel(folder: Path) -> Path:
    """A pure-Python wheel of package asp_testdep (VALUE = "installed-by-bootstrap")."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "asp_testdep/__init__.py": b'VALUE = "installed-by-bootstrap"\n',
        "asp_testdep-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: asp-testdep\nVersion: 1.0\n",
        "asp_testdep-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files["asp_testdep-1.0.dist-info/RECORD"] = (
        "\n".join([*record, "asp_testdep-1.0.dist-info/RECORD,,"]) + "\n"
    ).encode()
    with zipfile.ZipFile(folder / "asp_testdep-1.0-py3-none-any.whl", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return folder


@spark
def test_a_transient_cluster_installs_the_requirements_runs_the_step_and_terminates(dag_runner, cluster, tmp_path):
    project = _transient_project(tmp_path, python_requirements="requirements.txt", tags={"team": "research"})
    (project / "requirements.txt").write_text(
        f"--no-index\n--find-links {_wheel(tmp_path / 'wheels')}\nasp-testdep==1.0\n"
    )
    source = _emr_dag("emr_transient", "deps_job.py", crawl="CC-MAIN-2024-10", domain="steel")
    outcome = dag_runner.run("emr_transient", source, env=_env(project))
    assert outcome.task_state == "success", outcome.output[-4000:]
    # the package reached the driver and the Python workers only through the bootstrap action
    assert outcome.metrics["driver"] == outcome.metrics["worker"] == "installed-by-bootstrap"

    (created,) = cluster.transient_clusters()
    (step,) = created.steps
    assert created.name == step.name and step.name.startswith("emr_transient.job.") and step.name.endswith(".try1")
    assert step.state == "COMPLETED" and step.action_on_failure == "TERMINATE_CLUSTER"
    assert created.keep_job_flow_alive_when_no_steps is False
    wait_for(lambda: created.state == "TERMINATED", timeout=10, what="the cluster to end with its step")
    tags = {t["Key"]: t["Value"] for t in created.tags}
    run_id = step.name.removeprefix("emr_transient.job.").removesuffix(".try1")
    assert {k: tags[k] for k in tags if k != "airflow:run_id"} == {
        "airflow:dag_id": "emr_transient",
        "airflow:task_id": "job",
        "airflow:map_index": "-1",
        "airflow:try_number": "1",
        "spark_portable:engine": "emr",
        "spark_portable:profile": "small",
        "partition:crawl": "CC-MAIN-2024-10",
        "partition:domain": "steel",
        "team": "research",
    }
    assert tags["airflow:run_id"].replace(":", "_").replace("+", "_") == run_id
    # one bootstrap action installs boto3 (the node's python3 has none: the job could not talk
    # to S3 without it) and the requirements, in one pip run
    (action,) = created.bootstrap_actions
    assert action.args[:3] == ["python3", emr_cluster.BOTO3_REQUIREMENT, "--requirement"]
    assert action.args[3].startswith(f"s3://{BUCKET}/spark-portable/artifacts/") and action.args[3].endswith(
        "/requirements.txt"
    )
    assert action.script_path.endswith("/install-requirements.sh")

    assert f"Started transient EMR cluster {created.id} running step {step.id}" in outcome.output
    assert (
        f"--- stdout (s3://{BUCKET}/spark-portable/logs/{created.id}/steps/{step.id}/stdout.gz) ---" in outcome.output
    )
    assert outcome.xcom_keys["spark_portable_run_url"].endswith(f"#/clusterDetails/{created.id}")
    # the whole cluster is the task's: 1 x m5.xlarge on demand + 2 x r5.2xlarge spot
    cost = outcome.metrics["spark_portable"]["cost"]
    assert cost["basis"] == "transient cluster: all its instances from launch to termination"
    infrastructure, platform = 0.192 + 2 * 0.504 * 0.4, 0.048 + 2 * 0.126
    assert cost["infrastructure"] / cost["platform"] == pytest.approx(infrastructure / platform, rel=1e-3)
    assert cost["instance_hours"] > 0 and cost["unpriced"] == {}


def test_a_cluster_that_fails_to_bootstrap_fails_the_task_with_the_reason(dag_runner, cluster, tmp_path):
    project = _transient_project(tmp_path, python_requirements="requirements.txt")
    (project / "requirements.txt").write_text("--no-index\nno-such-package-asp==1.0\n")
    source = _emr_dag("emr_bootstrap", "probe_job.py", engine_options={"log_wait_seconds": 1})
    outcome = dag_runner.run("emr_bootstrap", source, env=_env(project))
    assert outcome.task_state == "failed"
    (created,) = cluster.transient_clusters()
    assert created.state == "TERMINATED_WITH_ERRORS"
    assert "no-such-package-asp" in cluster.bootstrap_output[created.id]  # pip really ran and refused
    # decided by the cluster's StateChangeReason code, which the task's error names
    assert re.search(
        rf"cluster {created.id} BOOTSTRAP_FAILURE: On the master instance \(i-\w+\), bootstrap action 1 returned a "
        "non-zero return code",
        outcome.text,
    ), outcome.output[-3000:]
    assert "was cancelled" not in outcome.output  # EMR cancelled the step; the user did not


def test_killing_the_task_terminates_its_transient_cluster(dag_runner, cluster, tmp_path):
    cluster.hold = True
    project = _transient_project(tmp_path)
    source = _emr_dag("emr_kill_transient", "probe_job.py")
    proc, _ = dag_runner.start("emr_kill_transient", source, env=_env(project))
    try:
        wait_for(lambda: cluster.transient_clusters(), timeout=120, what="the cluster to be created")
        (created,) = cluster.transient_clusters()
        wait_for(lambda: created.steps and created.id in cluster.nodes, timeout=30, what="the cluster to boot")
        os.kill(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        assert created.state == "TERMINATED", output[-3000:]
        assert created.steps[0].state == "CANCELLED"
        assert f"Terminating transient EMR cluster {created.id}" in output
    finally:
        kill_session(proc)


def test_a_retry_reattaches_to_its_transient_cluster(cluster, tmp_path):
    cluster.hold = True
    project = _transient_project(tmp_path)
    engine = EmrEngine({"aws_conn_id": None})
    first = _spec(project, try_number=1)
    _, handle = _submitted(engine, first)
    assert handle["transient"] is True

    retry = engine.find_active_run(_spec(project, try_number=2))
    assert retry == {**handle, "step_name": first.name}
    other = _spec(project, try_number=2)
    assert engine.find_active_run(JobSpec(**{**other.__dict__, "name": other.name.replace(".t.", ".other.")})) is None
    assert len(cluster.transient_clusters()) == 1

    engine.cancel(handle)
    assert cluster.cluster(handle["cluster_id"]).state == "TERMINATED"
    assert engine.find_active_run(_spec(project, try_number=2)) is None


def test_instance_fleets_ask_for_spot_with_on_demand_fallback_in_a_valid_request():
    section = emr_cluster.validate(
        {
            "release_label": "emr-7.5.0",
            "subnet_ids": ["subnet-a", "subnet-b"],
            "instance_fleets": {
                "master": {"instance_types": ["m5.xlarge", "m5a.xlarge"], "on_demand": 1},
                "core": {"instance_types": ["r5.2xlarge"], "on_demand": 2, "ebs_gb": 128},
                "task": {"instance_types": ["r5.2xlarge", "r5a.2xlarge"], "spot": 8, "spot_timeout_minutes": 15},
            },
            "bootstrap_actions": [{"name": "mine", "path": "s3://b/boot.sh", "args": ["x"]}],
            "configurations": [{"Classification": "spark", "Properties": {"maximizeResourceAllocation": "true"}}],
            "run_job_flow": {"EbsRootVolumeSize": 32, "StepConcurrencyLevel": 1},
        },
        "profiles.yaml: profile 'big', section 'emr'",
        "s3://b/root",
    )
    step = {"Name": "d.t.r.try1", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", "x.py"]}}
    request = emr_cluster.run_job_flow_request(
        section, "d.t.r.try1", step, {"airflow:dag_id": "d", "bad:chars": "a<b>"}, []
    )
    # botocore's own schema check of RunJobFlow: the request would be accepted by the API
    validate_parameters(
        request,
        boto3.client("emr", region_name="us-east-1").meta.service_model.operation_model("RunJobFlow").input_shape,
    )
    fleets = {f["Name"]: f for f in request["Instances"]["InstanceFleets"]}
    assert fleets["task"]["TargetSpotCapacity"] == 8 and fleets["task"]["TargetOnDemandCapacity"] == 0
    assert fleets["task"]["LaunchSpecifications"]["SpotSpecification"] == {
        "TimeoutDurationMinutes": 15,
        "TimeoutAction": "SWITCH_TO_ON_DEMAND",
        "AllocationStrategy": "price-capacity-optimized",
    }
    assert "LaunchSpecifications" not in fleets["master"]
    assert request["Instances"]["Ec2SubnetIds"] == ["subnet-a", "subnet-b"]
    assert request["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert request["Steps"][0]["ActionOnFailure"] == "TERMINATE_CLUSTER"
    assert request["LogUri"] == "s3://b/root/logs/" and request["EbsRootVolumeSize"] == 32
    assert {"Key": "bad:chars", "Value": "a_b_"} in request["Tags"]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"release_label": "7.5"}, "release_label = '7.5' must be like emr-7.5.0"),
        ({"release_label": "emr-7.5.0"}, "needs exactly one of instance_fleets, instance_groups; it has neither"),
        (
            {
                "release_label": "emr-7.5.0",
                "instance_fleets": {"master": {"instance_types": ["m5.xlarge"], "on_demand": 2}},
            },
            "a master fleet has exactly one instance",
        ),
        (
            {
                "release_label": "emr-7.5.0",
                "instance_groups": {"master": {"instance_type": "m5.xlarge"}},
                "run_job_flow": {"Steps": []},
            },
            "['Steps'] are set from this section's own keys",
        ),
        (
            {
                "release_label": "emr-7.5.0",
                "instance_groups": {"master": {"instance_type": "m5.xlarge", "market": "cheap"}},
            },
            "market = 'cheap' must be on_demand or spot",
        ),
        ({"release_label": "emr-7.5.0", "instance_groups": {"main": {}}}, "unknown roles ['main']"),
        ({"release_lable": "emr-7.5.0"}, "unknown keys ['release_lable']"),
    ],
)
def test_cluster_section_errors_name_the_key(section, message):
    with pytest.raises(SparkPortableConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        emr_cluster.validate(section, "profiles.yaml: profile 'big', section 'emr'", "s3://b/root")


def test_an_existing_cluster_and_a_transient_one_are_exclusive(tmp_path):
    project = _transient_project(tmp_path)
    data = yaml.safe_load((project / "profiles.yaml").read_text())
    data["profiles"]["small"]["emr"]["cluster_id"] = "j-1"
    (project / "profiles.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(
        SparkPortableConfigError, match=r"must choose exactly one of cluster_id .*; it has \['cluster_id', 'cluster'\]"
    ):
        EmrEngine.validate_profile(Profiles.load(project / "profiles.yaml").get("small"))


def test_a_tasks_conf_wins_over_the_profile_sections_conf(tmp_path):
    # the operator layers profile < section conf < task conf= into spec.spark_conf; the
    # engine must not put the section's conf back on top
    project = _project(tmp_path, "j-1", conf="{spark.x: section, spark.y: section}")
    spec = _spec(project, 1)
    spec = JobSpec(**{**spec.__dict__, "spark_conf": {"spark.x": "task", "spark.y": "section"}})
    section = EmrEngine.validate_profile(spec.profile)
    step = EmrEngine({}).step(spec, section, "s3://b/app.py", "s3://b/code.zip", S3Channel("s3://b/runs/x"))
    args = step["HadoopJarStep"]["Args"]
    assert "spark.x=task" in args and "spark.y=section" in args and "spark.x=section" not in args


def test_a_new_cluster_that_cannot_be_tracked_is_terminated_at_once(cluster, tmp_path, monkeypatch):
    cluster.hold = True
    engine = EmrEngine({"aws_conn_id": None})
    real_emr = engine._emr

    def emr_whose_list_steps_fails():
        hook = real_emr()

        def fail(**kwargs):
            raise RuntimeError("connection reset")

        hook.conn.list_steps = fail  # the client is cached on the hook
        return hook

    monkeypatch.setattr(engine, "_emr", emr_whose_list_steps_fails)
    spec = _spec(_transient_project(tmp_path), 1)
    with pytest.raises(RuntimeError, match="connection reset"):
        engine.submit(spec, engine.open_channel(spec))
    (created,) = cluster.transient_clusters()
    assert created.state in ("TERMINATING", "TERMINATED") and created.state_change_code == "USER_REQUEST"
    wait_for(lambda: created.state == "TERMINATED", timeout=30, what="the cluster to terminate")


def test_killing_a_deferred_task_cancels_its_step_from_the_triggerer(cluster, tmp_path):
    cluster.hold = True
    engine = EmrEngine({"aws_conn_id": None})
    spec = _spec(_project(tmp_path, cluster.cluster_id), 1)
    handle = engine.submit(spec, engine.open_channel(spec))
    trigger = EngineRunTrigger.wrap(engine.trigger(handle, 1), handle, {})
    # what the triggerer does when a user marks the deferred task failed (Airflow 3.3+)
    classpath, kwargs = trigger.serialize()
    asyncio.run(EngineRunTrigger(**kwargs).on_kill())
    (step,) = cluster.steps()
    assert step.state == "CANCELLED"


class RaisingTrigger(BaseTrigger):
    """Like older provider triggers: raises when the run fails instead of sending an event."""

    def serialize(self):
        return f"{__name__}.RaisingTrigger", {}

    async def run(self):
        raise RuntimeError("Waiter encountered a terminal failure state: FAILED")
        yield  # an async generator


def test_a_provider_trigger_that_raises_still_resumes_the_task_with_its_handle():
    trigger = EngineRunTrigger.wrap(RaisingTrigger(), {"engine": "emr", "step_id": "s-1"}, {"run_name": "r"})

    async def first_event():
        async for event in trigger.run():
            return event.payload

    payload = asyncio.run(first_event())
    assert payload["handle"] == {"engine": "emr", "step_id": "s-1"} and payload["meta"] == {"run_name": "r"}
    assert payload["event"] == {"status": "error", "message": "Waiter encountered a terminal failure state: FAILED"}


# -- 1. the node's Python and Spark are EMR 7.x's ---------------------------------------

VERSIONS_JOB = '''"""Reports the Python and Spark it runs on, and which optional packages it can import."""
import importlib.util
import sys

import pyspark

from airflow_spark_portable.runtime import SparkJob


def _worker_python(_):
    import sys

    return "%d.%d" % sys.version_info[:2]


class Versions(SparkJob):
    def run(self, job):
        spark = job.spark
        return {
            "driver_python": "%d.%d" % sys.version_info[:2],
            "worker_python": spark.sparkContext.parallelize([0], 1).map(_worker_python).first(),
            "pyspark": pyspark.__version__,
            "spark": spark.version,
            "missing": [m for m in ("pandas", "pyarrow", "numpy") if importlib.util.find_spec(m) is None],
        }


if __name__ == "__main__":
    Versions.main()
'''


@spark
def test_a_step_runs_on_the_nodes_python_39_and_spark_35(cluster, tmp_path):
    """EMR 7.5.0: python3 is 3.9 without pyspark's extras, Spark is 3.5.2. A job or runtime that
    needs newer Python or Spark fails here as it would on the cluster."""
    project = _project(tmp_path, cluster.cluster_id)
    spec = _spec(project, 1, application=_job(tmp_path / "jobs_here", "versions_job.py", VERSIONS_JOB))
    _, result, report = _run_to_end(_engine(), spec)
    assert result.state == SUCCEEDED and report.failure is None, (result, report.failure)
    metrics = report.metrics
    assert metrics["driver_python"] == metrics["worker_python"] == "3.9"
    assert metrics["pyspark"].startswith("3.5.") and metrics["spark"].startswith("3.5.")
    assert metrics["missing"] == ["pandas", "pyarrow", "numpy"]  # no bootstrap action installed them


# -- 2. cancelling stops Spark ----------------------------------------------------------


def test_deploy_mode_cluster_is_refused_on_an_existing_cluster(tmp_path):
    project = _project(tmp_path, "j-1", deploy_mode="cluster")
    with pytest.raises(SparkPortableConfigError, match="deploy_mode = cluster needs a transient cluster") as info:
        EmrEngine.validate_profile(Profiles.load(project / "profiles.yaml").get("small"))
    assert "leaves the Spark application running" in str(info.value) and "second copy" in str(info.value)
    # on a transient cluster it is allowed: terminating the cluster ends the driver too
    shutil.rmtree(project)
    transient = _transient_project(tmp_path, section={"deploy_mode": "cluster"})
    section = EmrEngine.validate_profile(Profiles.load(transient / "profiles.yaml").get("small"))
    assert section["deploy_mode"] == "cluster"


IGNORES_SIGTERM = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    time.sleep(1)\n"


def test_cancel_stops_a_step_that_ignores_sigterm(cluster, tmp_path):
    """SEND_INTERRUPT would only SIGTERM the step's process, which may ignore it (or leave its
    children running); the engine's cancel must end it."""
    cluster.hold = True
    cluster.hold_command[-1] = IGNORES_SIGTERM
    engine = _engine()
    spec = _spec(_project(tmp_path, cluster.cluster_id), 1)
    handle = engine.submit(spec, engine.open_channel(spec))
    (step,) = cluster.steps()
    wait_for(lambda: cluster.process_cmdlines(step.id), timeout=30, what="the step's process")
    engine.cancel(handle)
    assert step.state == "CANCELLED"
    assert cluster.process_cmdlines(step.id) == [] and cluster.running_applications() == []


def test_a_retry_waits_for_a_step_still_being_cancelled_instead_of_starting_a_second_copy(cluster, tmp_path):
    cluster.hold = True
    cluster.cancel_latency = 2.0  # CancelSteps is asynchronous: the step stays CANCEL_PENDING a while
    project = _project(tmp_path, cluster.cluster_id)
    engine = _engine()
    first = _spec(project, 1)
    handle = engine.submit(first, engine.open_channel(first))
    (step,) = cluster.steps()
    wait_for(lambda: step.state == "RUNNING" and cluster.process_cmdlines(step.id), timeout=30, what="the step")
    emr = boto3.client("emr", region_name=REGION)
    response = emr.cancel_steps(
        ClusterId=cluster.cluster_id, StepIds=[step.id], StepCancellationOption="TERMINATE_PROCESS"
    )
    assert response["CancelStepsInfoList"] == [{"StepId": step.id, "Status": "SUBMITTED"}]
    described = emr.describe_step(ClusterId=cluster.cluster_id, StepId=step.id)["Step"]
    assert described["Status"]["State"] == "CANCEL_PENDING"
    assert engine.poll(handle) is None  # still live

    # the retry does not submit while the first try's step is dying: it waits for it to end
    assert engine.find_active_run(_spec(project, 2)) is None
    assert step.state == "CANCELLED" and cluster.process_cmdlines(step.id) == []
    # cancelling an ended step is refused per step, not with an error
    again = emr.cancel_steps(ClusterId=cluster.cluster_id, StepIds=[step.id])["CancelStepsInfoList"]
    assert [(i["StepId"], i["Status"]) for i in again] == [(step.id, "FAILED")] and again[0]["Reason"]

    # and a step that does not end within cancel_wait_seconds stops the retry with an error
    cluster.cancel_latency = 60
    second = _spec(project, 2)
    engine.submit(second, engine.open_channel(second))
    stuck = cluster.steps()[-1]
    wait_for(lambda: stuck.state == "RUNNING", timeout=30, what="the second step to run")
    emr.cancel_steps(ClusterId=cluster.cluster_id, StepIds=[stuck.id], StepCancellationOption="TERMINATE_PROCESS")
    with pytest.raises(AirflowException, match=f"step {stuck.id} .* still live .*not starting a second copy"):
        _engine(cancel_wait_seconds=1).find_active_run(_spec(project, 3))
    assert len(cluster.steps()) == 2


CLUSTER_MODE_APP = "import time\ntime.sleep(600)\n"


@spark
def test_the_harness_cancels_as_emr_does_per_option_and_deploy_mode(aws, tmp_path):
    """How far each StepCancellationOption reaches (Management Guide, "Cancel steps"), and that
    YARN's cluster-mode driver outlives its step: what the engine's choices are built on."""
    fake = FakeCluster(aws, log_uri="s3://asp-logs/emr/", step_concurrency_level=3)
    try:
        s3 = boto3.client("s3", region_name=REGION)
        s3.put_object(Bucket=BUCKET, Key="apps/sleeper.py", Body=CLUSTER_MODE_APP.encode())
        emr = boto3.client("emr", region_name=REGION)

        def step(name, mode):
            args = ["spark-submit", "--deploy-mode", mode, "--name", name, f"s3://{BUCKET}/apps/sleeper.py"]
            config = {"Name": name, "ActionOnFailure": "CONTINUE"}
            return {**config, "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}

        ids = emr.add_job_flow_steps(
            JobFlowId=fake.cluster_id,
            Steps=[step("client-interrupted", "client"), step("client-killed", "client"), step("yarn", "cluster")],
        )["StepIds"]

        def python_runs(step_id: str) -> bool:
            return any("sleeper.py" in c and "python" in c.split()[0] for c in fake.process_cmdlines(step_id))

        for step_id in ids:
            wait_for(lambda step_id=step_id: python_runs(step_id), timeout=120, what="the application's Python")
        for step_id, option in zip(ids, ["SEND_INTERRUPT", "TERMINATE_PROCESS", "TERMINATE_PROCESS"]):
            emr.cancel_steps(ClusterId=fake.cluster_id, StepIds=[step_id], StepCancellationOption=option)
        for i in range(len(ids)):
            wait_for(lambda i=i: fake.steps()[i].state == "CANCELLED", timeout=30, what="the cancellations")
        time.sleep(1)
        # SIGTERM reached spark-submit only: its Python child lives on; SIGKILL took the whole
        # client-mode tree; the cluster-mode driver was never the step's to kill
        assert sorted(fake.running_applications()) == ["client-interrupted", "yarn"]
    finally:
        fake.stop()


@spark
def test_killing_a_cluster_mode_task_ends_its_transient_cluster_and_driver(dag_runner, cluster, tmp_path):
    project = _transient_project(tmp_path, section={"deploy_mode": "cluster"})
    source = _emr_dag("emr_kill_yarn", "slow_job.py")
    proc, _ = dag_runner.start("emr_kill_yarn", source, env=_env(project))
    try:
        wait_for(
            lambda: cluster.transient_clusters() and cluster.transient_clusters()[0].steps,
            timeout=120,
            what="the cluster and its step",
        )
        (created,) = cluster.transient_clusters()
        (step,) = created.steps
        try:
            wait_for(lambda: _python_worker_started(cluster, step.id), timeout=240, what="the driver's Python UDF")
        except AssertionError:
            record = cluster.seen.get(step.id, {})
            app_log = record.get("app_log")
            raise AssertionError(
                f"{step.state}: {record}\n{cluster.process_cmdlines(step.id)}\n"
                + ((app_log / "stderr").read_text()[-3000:] if app_log else "")
            ) from None
        assert cluster.seen[step.id]["deploy_mode"] == "cluster" and cluster.running_applications(created.id)
        os.kill(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        assert created.state == "TERMINATED", output[-3000:]
        assert cluster.running_applications() == [] and cluster.process_cmdlines(step.id) == []
    finally:
        kill_session(proc)


# -- 3. logs are read once EMR uploaded them after the step ended -------------------------


@spark
def test_the_step_log_is_read_from_the_copy_uploaded_after_the_step_ended(aws, tmp_path):
    fake = FakeCluster(aws, log_uri="s3://asp-logs/emr/", log_period=1.0, log_lag=5.0)
    try:
        project = _project(tmp_path, fake.cluster_id)
        handle, result, _ = _run_to_end(_engine(), _spec(project, 1))
        assert result.state == SUCCEEDED
        step_id = handle["step_id"]
        last = [line for line in fake.seen[step_id]["stderr"].splitlines() if line.strip()][-1]

        # at once: only a copy from while the step ran is there; the engine says so
        hurried = _engine(success_log_wait_seconds=0).fetch_logs(handle, succeeded=True)
        assert not fake.seen[step_id].get("logs_final")
        assert "may be incomplete" in hurried[0]
        assert f"s3://asp-logs/emr/{fake.cluster_id}/steps/{step_id}/" in hurried[0]
        # (that copy may hold every line already: a periodic upload can land just as the step
        # ends; the engine cannot know, so it says the tail may be missing either way)

        # given the time, it waits for the copy uploaded after the step's EndDateTime
        lines = _engine(success_log_wait_seconds=30).fetch_logs(handle, succeeded=True)
        assert fake.seen[step_id].get("logs_final") and last in lines
        assert len(lines) >= len(hurried) - 1  # the final copy holds at least what the partial one did
        assert not any("may be incomplete" in line for line in lines)
    finally:
        fake.stop()


# -- 4. boto3 on the cluster ------------------------------------------------------------


def test_a_transient_cluster_always_installs_boto3(aws, tmp_path):
    engine = _engine()
    bare = _spec(_transient_project(tmp_path), 1)
    (action,) = engine.requirements_bootstrap(bare, engine.validate_profile(bare.profile))
    assert action["ScriptBootstrapAction"]["Args"] == ["python3", emr_cluster.BOTO3_REQUIREMENT]
    # a requirements file that pins boto3 itself decides the version
    shutil.rmtree(tmp_path / "project")
    project = _transient_project(tmp_path, python_requirements="requirements.txt")
    (project / "requirements.txt").write_text("orjson>=3.9\nBoto3 == 1.40.0\n")
    spec = _spec(project, 1)
    (action,) = engine.requirements_bootstrap(spec, engine.validate_profile(spec.profile))
    args = action["ScriptBootstrapAction"]["Args"]
    assert args[:2] == ["python3", "--requirement"] and args[2].endswith("/requirements.txt")


@spark
def test_a_job_on_an_existing_cluster_without_boto3_fails_saying_so(dag_runner, aws, tmp_path):
    bare = FakeCluster(aws, log_uri="s3://asp-logs/emr/", name="no-boto3", preinstalled=())
    try:
        project = _project(tmp_path, bare.cluster_id)
        outcome = dag_runner.run("emr_no_boto3", _emr_dag("emr_no_boto3", "probe_job.py"), env=_env(project))
        assert outcome.task_state == "failed"
        (step,) = bare.steps()
        assert step.state == "FAILED"
        # the step's stderr, brought into the task log, says what is missing and what to do
        driver = [line for line in outcome.output.splitlines() if "[driver]" in line]
        assert any("boto3" in line and re.search(r"install|bootstrap", line, re.IGNORECASE) for line in driver), (
            "\n".join(driver[-40:])
        )
    finally:
        bare.stop()


# -- 5. step concurrency and the active-step limit -----------------------------------------


def test_steps_queue_behind_the_clusters_step_concurrency_level(cluster, tmp_path, caplog):
    cluster.hold = True
    project = _project(tmp_path, cluster.cluster_id)
    engine = _engine()
    caplog.set_level(logging.WARNING, logger="test.emr")
    for task in ("a", "b", "c"):
        spec = _spec(project, 1, task=task)
        engine.submit(spec, engine.open_channel(spec))
    steps = cluster.steps()
    wait_for(lambda: steps[0].state == "RUNNING", timeout=30, what="the first step to run")
    time.sleep(1)
    assert [s.state for s in steps] == ["RUNNING", "PENDING", "PENDING"]  # StepConcurrencyLevel 1
    assert list(cluster.seen) == [steps[0].id]  # the others did not start
    queued = [r.getMessage() for r in caplog.records if "StepConcurrencyLevel" in r.getMessage()]
    assert len(queued) == 2 and all("Airflow pool with 1 slot" in m for m in queued)
    assert steps[1].id in queued[0] and steps[2].id in queued[1]

    boto3.client("emr", region_name=REGION).modify_cluster(ClusterId=cluster.cluster_id, StepConcurrencyLevel=2)
    wait_for(lambda: [s.state for s in steps] == ["RUNNING", "RUNNING", "PENDING"], timeout=30, what="a second slot")
    # a cancelled step frees its slot only once its process is gone; then the next one starts
    engine.cancel({"cluster_id": cluster.cluster_id, "step_id": steps[0].id, "transient": False})
    wait_for(lambda: [s.state for s in steps] == ["CANCELLED", "RUNNING", "RUNNING"], timeout=30, what="the freed slot")


def test_a_full_cluster_refuses_the_step_naming_the_limit_and_the_pool_fix(cluster, tmp_path):
    cluster.hold = True
    emr = boto3.client("emr", region_name=REGION)
    filler = [
        {
            "Name": f"other.{i}",
            "ActionOnFailure": "CONTINUE",
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["true"]},
        }
        for i in range(ACTIVE_STEP_LIMIT)
    ]
    emr.add_job_flow_steps(JobFlowId=cluster.cluster_id, Steps=filler)
    with pytest.raises(ClientError) as refused:  # EMR's answer, as the harness gives it
        emr.add_job_flow_steps(JobFlowId=cluster.cluster_id, Steps=filler[:1])
    assert refused.value.response["Error"]["Code"] == "ValidationException"

    spec = _spec(_project(tmp_path, cluster.cluster_id), 1)
    engine = _engine()
    with pytest.raises(EmrStepLimitReached) as info:
        engine.submit(spec, engine.open_channel(spec))
    message = str(info.value)
    assert f"EMR cluster {cluster.cluster_id}" in message and "at most 256" in message and "256 active steps" in message
    assert "Airflow pool with 1 slot(s)" in message and "docs/emr.md" in message
    assert not isinstance(info.value, SparkPortableConfigError)  # retryable: steps end, room comes back
    assert len(cluster.steps()) == ACTIVE_STEP_LIMIT


# -- 7. cluster state-change reasons decide, by code ------------------------------------------


@pytest.mark.parametrize(
    ("code", "state"),
    [("INSTANCE_FAILURE", FAILED), ("VALIDATION_ERROR", FAILED), ("USER_REQUEST", CANCELLED)],
)
def test_a_transient_cluster_that_ends_early_decides_by_its_reason_code(cluster, tmp_path, code, state):
    cluster.hold = True
    engine = _engine()
    spec = _spec(_transient_project(tmp_path), 1)
    handle = engine.submit(spec, engine.open_channel(spec))
    created = cluster.cluster(handle["cluster_id"])
    wait_for(lambda: created.steps[0].state == "RUNNING", timeout=60, what="the step to run")
    if code == "USER_REQUEST":  # someone terminated it (console, CLI)
        boto3.client("emr", region_name=REGION).terminate_job_flows(JobFlowIds=[created.id])
    else:
        cluster.fail_cluster(created.id, code)
    result = engine.wait(handle)
    described = boto3.client("emr", region_name=REGION).describe_cluster(ClusterId=created.id)["Cluster"]["Status"]
    assert described["StateChangeReason"]["Code"] == code  # moto's model returns the harness's code
    assert result.state == state, result.message
    if state == FAILED:
        assert f"cluster {created.id} {code}: " in result.message
        assert described["State"] == "TERMINATED_WITH_ERRORS"
    else:
        assert described["State"] == "TERMINATED"


# -- 8. polling ---------------------------------------------------------------------------


def test_poll_is_none_while_the_step_is_live_and_the_result_once_it_ended(cluster, tmp_path):
    cluster.hold = True
    cluster.cancel_latency = 5.0  # CANCEL_PENDING outlasts the poll below even on a loaded machine
    engine = _engine()
    spec = _spec(_project(tmp_path, cluster.cluster_id), 1)
    handle = engine.submit(spec, engine.open_channel(spec))
    assert engine.poll(handle) is None  # PENDING or RUNNING
    (step,) = cluster.steps()
    wait_for(lambda: step.state == "RUNNING", timeout=30, what="the step to run")
    assert engine.poll(handle) is None
    boto3.client("emr", region_name=REGION).cancel_steps(ClusterId=cluster.cluster_id, StepIds=[step.id])
    assert step.state == "CANCEL_PENDING" and engine.poll(handle) is None
    wait_for(lambda: step.state == "CANCELLED", timeout=30, what="the cancellation")
    result = engine.poll(handle)
    assert result.state == CANCELLED and f"EMR step {step.id} CANCELLED" in result.message
    assert engine.wait(handle) == result
