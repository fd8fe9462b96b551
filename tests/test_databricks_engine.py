"""engine="databricks": the job as a one-time run, through the databricks provider's
DatabricksHook over HTTP against tests/harness/databricks_api.py (a stateful fake of the Jobs
and Workspace APIs that validates requests against databricks-sdk's schema and runs each
submitted spark_python_task with a local spark-submit)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import yaml

from airflow_spark_portable.engines.base import JobSpec, run_name
from airflow_spark_portable.engines.databricks import DatabricksEngine
from airflow_spark_portable.exceptions import SparkPortableConfigError
from airflow_spark_portable.profiles import Profiles
from airflow_spark_portable.runtime.context import JobContext, RunIdentity
from conftest import PROBE_TASK, TEST_JOBS, assert_probe_saw_its_task, kill_session, operator_dag, wait_for
from harness.databricks_api import FakeDatabricks

spark = pytest.mark.spark
# the default workspace_root: the connection identity's home folder (the fake's default user)
ROOT = "/Users/runner@example.com/spark-portable"
NEW_CLUSTER = {
    "spark_version": "15.4.x-scala2.12",
    "node_type_id": "r5d.2xlarge",
    "autoscale": {"min_workers": 1, "max_workers": 4},
    "aws_attributes": {"availability": "SPOT_WITH_FALLBACK", "first_on_demand": 1},
    "custom_tags": {"team": "research"},
}


@pytest.fixture
def databricks(tmp_path, monkeypatch):
    fake = FakeDatabricks(tmp_path / "databricks").start()
    conn = {
        "conn_type": "databricks",
        "host": fake.host,
        "port": fake.port,
        "schema": "http",
        "password": "dapi-test-token",
    }
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", json.dumps(conn))
    yield fake
    fake.stop()


def _project(tmp_path: Path, **section) -> Path:
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    if not {"new_cluster", "existing_cluster_id", "serverless"} & set(section):
        section["new_cluster"] = NEW_CLUSTER
    profile = {"spark_conf": {"spark.sql.shuffle.partitions": "4"}, "databricks": section}
    (project / "profiles.yaml").write_text(yaml.safe_dump({"version": 1, "profiles": {"small": profile}}))
    return project


def _dag(dag_id: str, job: str, engine_options: dict | None = None, **kwargs) -> str:
    kwargs.setdefault("poll_interval", 1)
    options = {"poll_interval_seconds": 1, **(engine_options or {})}
    return operator_dag(dag_id, engine="databricks", application=str(TEST_JOBS / job), engine_options=options, **kwargs)


def _env(project: Path) -> dict[str, str]:
    return {"AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT": str(project)}


@spark
def test_the_job_runs_as_a_one_time_run_with_the_same_context_and_metrics(dag_runner, databricks, tmp_path):
    project = _project(tmp_path)
    source = _dag("dbx_probe", "probe_job.py", **PROBE_TASK)
    outcome = dag_runner.run("dbx_probe", source, env=_env(project))
    assert outcome.task_state == "success", outcome.output[-4000:]
    metrics = outcome.metrics
    assert_probe_saw_its_task(metrics, "databricks")

    (run,) = databricks.runs()
    # the job imported the runtime from the code wheel the run installed, not from this checkout
    assert metrics["runtime_file"] == str(
        databricks.root / "runs" / str(run.run_id) / "site/airflow_spark_portable/runtime/__init__.py"
    )
    assert (
        run.result_state == "SUCCESS" and run.run_name.startswith("dbx_probe.job.") and run.run_name.endswith(".try1")
    )
    (task,) = run.payload["tasks"]
    python_task = task["spark_python_task"]
    assert python_task["python_file"].startswith(f"{ROOT}/artifacts/") and python_task["source"] == "WORKSPACE"
    params = python_task["parameters"]
    context = params[params.index("--spark-portable-context") + 1]  # the try's folder: run name + token
    assert re.fullmatch(rf"/Workspace{re.escape(ROOT)}/runs/{re.escape(run.run_name)}\.[0-9a-f]{{16}}/context\.json", context)
    (wheel,) = [lib["whl"] for lib in task["libraries"]]
    assert wheel.startswith(f"/Workspace{ROOT}/artifacts/") and "/spark_portable_code-0+" in wheel
    cluster = task["new_cluster"]
    assert cluster["aws_attributes"] == NEW_CLUSTER["aws_attributes"]
    assert cluster["spark_conf"]["spark.portable.test"] == "yes"
    assert cluster["custom_tags"]["team"] == "research"
    assert (
        cluster["custom_tags"]["airflow:dag_id"] == "dbx_probe"
        and cluster["custom_tags"]["partition:domain"] == "steel"
    )
    assert len(run.payload["idempotency_token"]) == 64
    assert (
        outcome.xcom_keys["spark_portable_run_url"]
        == f"{databricks.url}/?o=1234567890#job/{900000 + run.run_id}/run/{run.run_id}"
    )
    assert "--- stdout (runs/get-output) ---" in outcome.output
    # priced as the job cluster: an on-demand r5d.2xlarge driver and up to 4 spot workers
    cost = metrics["spark_portable"]["cost"]
    assert cost["basis"].startswith("job cluster: driver + up to 4 workers") and cost["unpriced"] == {}
    ec2, dbus = 0.576 * (1 + 4 * 0.4), 5 * 1.8 * 0.15
    assert cost["instance_hours"] > 0
    assert cost["infrastructure"] / cost["platform"] == pytest.approx(ec2 / dbus, rel=1e-3)

    again = dag_runner.run("dbx_probe", source, env=_env(project))
    assert again.task_state == "success", again.output[-4000:]
    # both artifacts found in place, none uploaded (Airflow 3.0 prints a task's log lines twice)
    assert len(set(re.findall(r"Artifact unchanged, not uploaded: (\S+)", again.output))) == 2
    assert "Uploaded /" not in again.output


@spark
def test_a_failed_run_fails_the_task_with_the_jobs_error_and_trace(dag_runner, databricks, tmp_path):
    project = _project(tmp_path)
    outcome = dag_runner.run("dbx_failing", _dag("dbx_failing", "failing_job.py"), env=_env(project))
    assert outcome.task_state == "failed"
    assert "failed: ValueError: seed file steel.csv has no 'url' column" in outcome.text
    assert "--- error trace ---" in outcome.output and "Traceback" in outcome.output
    (run,) = databricks.runs()
    assert run.result_state == "FAILED"


@spark
def test_deferred_on_an_existing_cluster_with_session_conf(dag_runner, databricks, tmp_path):
    # An existing cluster takes no cluster conf per run: spark.sql.* reaches the job's session
    databricks.add_cluster("0123-456789-abcdefgh")
    project = _project(tmp_path, existing_cluster_id="0123-456789-abcdefgh")
    source = _dag("dbx_deferred", "probe_job.py")
    env = {**_env(project), "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "true"}
    outcome = dag_runner.run("dbx_deferred", source, env=env)
    assert outcome.task_state == "success", outcome.output[-4000:]
    assert "Deferring: the worker slot is free while databricks runs the job" in outcome.output
    assert outcome.metrics["shuffle_partitions"] == "4"
    (run,) = databricks.runs()
    assert run.payload["tasks"][0]["existing_cluster_id"] == "0123-456789-abcdefgh"
    assert "new_cluster" not in run.payload["tasks"][0]


def test_killing_the_task_cancels_its_run(dag_runner, databricks, tmp_path):
    databricks.hold = True
    project = _project(tmp_path)
    proc, _ = dag_runner.start("dbx_kill", _dag("dbx_kill", "probe_job.py"), env=_env(project))
    try:
        wait_for(lambda: databricks.runs(), timeout=120, what="the run to be submitted")
        os.kill(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        (run,) = databricks.runs()
        wait_for(lambda: run.result_state == "CANCELED", timeout=10, what="the run to be cancelled")
        assert f"Cancelling Databricks run {run.run_id}" in output
    finally:
        kill_session(proc)


def _spec(project: Path, try_number: int, task_id: str = "t") -> JobSpec:
    profile = Profiles.load(project / "profiles.yaml").get("small")
    context = JobContext(
        engine="databricks",
        profile="small",
        run=RunIdentity(dag_id="d", task_id=task_id, run_id="manual__1", map_index=3, try_number=try_number),
    )
    return JobSpec(
        name=run_name(context),
        application=TEST_JOBS / "probe_job.py",
        code_root=project,
        application_args=[],
        spark_conf=dict(profile.spark_conf),
        profile=profile,
        env={},
        context=context,
    )


def test_a_duplicate_submit_of_one_try_is_one_run_and_a_retry_reattaches(databricks, tmp_path):
    databricks.hold = True
    project = _project(tmp_path)
    engine = DatabricksEngine({})
    first = _spec(project, try_number=1)
    channel = engine.open_channel(first)
    channel.write_context(first.context)
    handle = engine.submit(first, channel)
    # the same try submitted again (a worker that died after the request): the same run
    assert engine.submit(first, engine.open_channel(first))["run_id"] == handle["run_id"]
    assert len(databricks.runs()) == 1

    retry = engine.find_active_run(_spec(project, try_number=2))
    assert retry is not None and retry["run_id"] == handle["run_id"]
    assert retry["channel_uri"] == channel.uri  # the first try's mailbox: its messages count
    assert engine.find_active_run(_spec(project, try_number=2, task_id="other")) is None

    engine.cancel(handle)
    wait_for(lambda: databricks.run(handle["run_id"]).result_state == "CANCELED", timeout=10, what="cancel")
    assert engine.find_active_run(_spec(project, try_number=2)) is None


def test_serverless_runs_declare_an_environment_with_the_code_and_requirements(databricks, tmp_path):
    databricks.hold = True
    project = _project(tmp_path, serverless=True, python_requirements="requirements.txt")
    (project / "requirements.txt").write_text("# the jobs' needs\norjson>=3.9\npublicsuffixlist>=1.0.2  # PSL\n")
    engine = DatabricksEngine({})
    spec = _spec(project, 1)
    handle = engine.submit(spec, engine.open_channel(spec))
    payload = databricks.run(handle["run_id"]).payload  # accepted by the fake's schema check
    (environment,) = payload["environments"]
    (task,) = payload["tasks"]
    assert task["environment_key"] == environment["environment_key"]
    dependencies = environment["spec"]["dependencies"]
    assert dependencies[0].startswith(f"/Workspace{ROOT}/artifacts/") and dependencies[0].endswith(".whl")
    assert dependencies[1:] == ["orjson>=3.9", "publicsuffixlist>=1.0.2"]
    assert "libraries" not in task and "new_cluster" not in task
    params = task["spark_python_task"]["parameters"]
    assert json.loads(params[params.index("--spark-portable-session-conf") + 1]) == {
        "spark.sql.shuffle.partitions": "4"
    }


def test_a_library_that_cannot_be_installed_fails_the_task_with_the_reason(dag_runner, databricks, tmp_path):
    project = _project(tmp_path, python_requirements="requirements.txt")
    (project / "requirements.txt").write_text("no-such-package-asp==1.0\n")
    outcome = dag_runner.run("dbx_libs", _dag("dbx_libs", "probe_job.py"), env=_env(project))
    assert outcome.task_state == "failed"
    (run,) = databricks.runs()
    assert {"pypi": {"package": "no-such-package-asp==1.0"}} in run.payload["tasks"][0]["libraries"]
    assert "INTERNAL_ERROR" in outcome.output and "Library installation failed" in outcome.output


def test_profile_connection_and_secret_errors_are_clear(dag_runner, databricks, tmp_path):
    with pytest.raises(SparkPortableConfigError, match=r"must choose exactly one of new_cluster .*; it has none"):
        DatabricksEngine.validate_profile(
            Profiles.from_dict({"profiles": {"p": {"databricks": {}}}}, "x").get("p")
        )
    with pytest.raises(SparkPortableConfigError, match="without the /Workspace prefix"):
        DatabricksEngine.validate_profile(
            Profiles.from_dict(
                {"profiles": {"p": {"databricks": {"workspace_root": "/Workspace/Shared/x", "serverless": True}}}}, "x"
            ).get("p")
        )
    engine = DatabricksEngine({})
    databricks.add_cluster("0123")
    spec = _spec(_project(tmp_path, existing_cluster_id="0123"), 1)
    wide = JobSpec(**{**spec.__dict__, "spark_conf": {"spark.executor.memory": "8g"}})
    with pytest.raises(SparkPortableConfigError, match=r"conf \['spark.executor.memory'\]: an existing cluster"):
        engine.submit(wide, engine.open_channel(wide))
    secret = JobSpec(**{**spec.__dict__, "spark_conf": {"spark.sql.x.password": "hunter2"}})
    with pytest.raises(SparkPortableConfigError, match="use a Databricks secret reference"):
        engine.submit(secret, engine.open_channel(secret))
    reference = {"spark.sql.x.password": "{{secrets/scope/key}}"}
    referenced = JobSpec(**{**spec.__dict__, "spark_conf": reference})
    with pytest.raises(SparkPortableConfigError, match="resolves secret references in a job cluster's conf only"):
        engine.submit(referenced, engine.open_channel(referenced))
    # a job cluster resolves the reference itself: accepted, and only the reference travels
    job_cluster = _spec(_project(tmp_path), 1)
    job_cluster = JobSpec(**{**job_cluster.__dict__, "spark_conf": reference})
    databricks.hold = True
    handle = engine.submit(job_cluster, engine.open_channel(job_cluster))
    cluster = databricks.run(handle["run_id"]).payload["tasks"][0]["new_cluster"]
    assert cluster["spark_conf"]["spark.sql.x.password"] == "{{secrets/scope/key}}"

    project = _project(tmp_path)
    source = _dag("dbx_conn", "probe_job.py", engine_options={"databricks_conn_id": "no_such_conn"})
    outcome = dag_runner.run("dbx_conn", source, env=_env(project))
    assert outcome.task_state == "failed"
    assert "engine_options databricks_conn_id='no_such_conn'" in outcome.output


def test_a_connection_with_a_refused_token_fails_naming_it(databricks, tmp_path, monkeypatch):
    conn = {
        "conn_type": "databricks",
        "host": databricks.host,
        "port": databricks.port,
        "schema": "http",
        "password": "wrong",
    }
    monkeypatch.setenv("AIRFLOW_CONN_DBX_WRONG", json.dumps(conn))
    engine = DatabricksEngine({"databricks_conn_id": "dbx_wrong"})
    with pytest.raises(
        SparkPortableConfigError, match="databricks_conn_id='dbx_wrong': the workspace refused its credentials"
    ):
        engine.find_active_run(_spec(_project(tmp_path), 1))
    assert databricks.runs() == []


def _profile(section: dict, spark_conf: dict | None = None):
    body = {"databricks": section, **({"spark_conf": spark_conf} if spark_conf else {})}
    return Profiles.from_dict({"profiles": {"p": body}}, "x").get("p")


def test_serverless_environment_spec_and_confs_as_the_api_takes_them(databricks, tmp_path):
    validate = DatabricksEngine.validate_profile
    assert validate(_profile({"serverless": True}))["serverless"] == {"environment_version": "2"}
    base = {"base_environment": "/Workspace/Users/runner@example.com/env.yaml"}
    assert validate(_profile({"serverless": base}))["serverless"] == base  # no version added beside it
    assert validate(_profile({"serverless": {"environment_version": 3}}))["serverless"] == {"environment_version": "3"}
    with pytest.raises(SparkPortableConfigError, match="both environment_version and base_environment"):
        validate(_profile({"serverless": {**base, "environment_version": "2"}}))
    with pytest.raises(SparkPortableConfigError, match="serverless.client is deprecated .* environment_version: '2'"):
        validate(_profile({"serverless": {"client": "2"}}))
    with pytest.raises(SparkPortableConfigError, match=r"serverless has unknown keys \['python'\]"):
        validate(_profile({"serverless": {"python": "3.12"}}))
    # the profile's common spark_conf counts: serverless would refuse it when the job sets it
    with pytest.raises(
        SparkPortableConfigError, match=r"does not let a job set the Spark conf \['spark.sql.adaptive.enabled'\]"
    ):
        validate(_profile({"serverless": True}, {"spark.sql.adaptive.enabled": "true"}))

    databricks.hold = True
    engine = DatabricksEngine({})
    project = _project(tmp_path, serverless=base)
    spec = _spec(project, 1)
    handle = engine.submit(spec, engine.open_channel(spec))
    (environment,) = databricks.run(handle["run_id"]).payload["environments"]  # the fake accepted it
    assert environment["spec"]["base_environment"] == base["base_environment"]
    assert "environment_version" not in environment["spec"]
    # every conf of serverless's list is taken, spark.databricks.* as well as spark.sql.*
    allowed = {"spark.databricks.execution.timeout": "600", "spark.sql.ansi.enabled": "false"}
    timed = JobSpec(**{**_spec(project, 2).__dict__, "spark_conf": allowed})  # another try: another run
    timed_run = engine.submit(timed, engine.open_channel(timed))
    params = databricks.run(timed_run["run_id"]).payload["tasks"][0]["spark_python_task"]["parameters"]
    assert json.loads(params[params.index("--spark-portable-session-conf") + 1]) == allowed
    # and a task's conf= is held to the same list, before anything is uploaded
    wide = JobSpec(**{**spec.__dict__, "name": spec.name + "x", "spark_conf": {"spark.sql.autoBroadcastJoinThreshold": "1"}})
    with pytest.raises(SparkPortableConfigError, match=r"\['spark.sql.autoBroadcastJoinThreshold'\]"):
        engine.open_channel(wide)  # before the context or any artifact is uploaded
    assert len(databricks.runs()) == 2


def test_engine_and_fake_agree_on_the_serverless_conf_list():
    from airflow_spark_portable.engines.databricks import SERVERLESS_CONFS
    from harness.databricks_api import SERVERLESS_CONFS as FAKE

    assert SERVERLESS_CONFS == FAKE


@spark
def test_a_serverless_run_goes_through_spark_connect_with_its_session_conf(dag_runner, databricks, tmp_path):
    project = _project(tmp_path, serverless=True)
    outcome = dag_runner.run("dbx_serverless", _dag("dbx_serverless", "probe_job.py"), env=_env(project))
    assert outcome.task_state == "success", outcome.output[-4000:]
    assert outcome.metrics["shuffle_partitions"] == "4"  # set on the session, one of the allowed confs
    (run,) = databricks.runs()
    assert "--remote" in run.command  # the fake runs serverless tasks as Spark Connect clients


def test_a_missing_secret_scope_fails_the_run_before_it_starts(databricks, tmp_path):
    engine = DatabricksEngine({"poll_interval_seconds": 0.2})
    spec = _spec(_project(tmp_path), 1)
    spec = JobSpec(**{**spec.__dict__, "spark_conf": {"spark.sql.x.password": "{{secrets/no-such-scope/key}}"}})
    handle = engine.submit(spec, engine.open_channel(spec))
    result = engine.wait(handle)
    assert result.state == "FAILED" and "no-such-scope" in result.message
    assert databricks.run(handle["run_id"]).proc is None  # nothing ran
