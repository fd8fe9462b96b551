"""engine="emr": the job as an EMR step, through the amazon provider's EmrHook/S3Hook against
moto's server, with tests/harness/emr_cluster.py playing the cluster (moto never runs steps)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import signal
import zipfile
from pathlib import Path

import boto3
import pytest
import yaml
from airflow.triggers.base import BaseTrigger
from botocore.validate import validate_parameters

from airflow_spark_portable.engines import emr_cluster
from airflow_spark_portable.engines.base import JobSpec, run_name
from airflow_spark_portable.engines.emr import EmrEngine
from airflow_spark_portable.exceptions import SparkPortableConfigError
from airflow_spark_portable.pipes import S3Channel
from airflow_spark_portable.profiles import Profiles
from airflow_spark_portable.runtime.context import JobContext, RunIdentity
from airflow_spark_portable.triggers import EngineRunTrigger
from conftest import PROBE_TASK, TEST_JOBS, assert_probe_saw_its_task, kill_session, operator_dag, wait_for
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
    assert context_uri == f"s3://{BUCKET}/spark-portable/runs/{step.name}/context.json"
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
    source = _emr_dag("emr_deferred", "probe_job.py")  # deferrable from [operators] default_deferrable
    outcome = dag_runner.run(
        "emr_deferred", source, env={**_env(project), "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "true"}
    )
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


# -- transient clusters ----------------------------------------------------------------


def _transient_project(tmp_path: Path, **cluster) -> Path:
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
        "emr": {"s3_root": f"s3://{BUCKET}/spark-portable", "cluster": cluster},
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
    (action,) = created.bootstrap_actions
    assert action.args[0] == "python3"
    assert action.args[1].startswith(f"s3://{BUCKET}/spark-portable/artifacts/") and action.args[1].endswith(
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
    assert (
        f"cluster {created.id} failed: On the master instance, bootstrap action 1 returned a non-zero" in outcome.output
    )
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
    channel = engine.open_channel(first)
    channel.write_context(first.context)
    handle = engine.submit(first, channel)
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
    assert created.state == "TERMINATED"


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
