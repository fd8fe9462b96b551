"""What engine="databricks" keeps in the workspace, and why it can be trusted: artifacts and
runs under a folder only the connection's identity can access, artifacts used only when they
hold the bytes their name promises, first uploads that may race, and a task try's report that
survives the try being executed again. Against the fake workspace (tests/harness/
databricks_api.py), which has identities, folder ACLs and Databricks' error codes."""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest

from airflow_spark_portable.artifacts import ArtifactConflict
from airflow_spark_portable.engines.base import SUCCEEDED, JobSpec, run_name
from airflow_spark_portable.engines.databricks import DatabricksEngine, Workspace
from airflow_spark_portable.exceptions import SparkJobFailed, SparkPortableConfigError
from airflow_spark_portable.profiles import Profiles
from airflow_spark_portable.runtime import protocol
from test_databricks_engine import ROOT, _project, _spec, databricks  # noqa: F401 (a fixture)

spark = pytest.mark.spark


def _submitted(engine: DatabricksEngine, spec: JobSpec) -> dict:
    channel = engine.open_channel(spec)
    channel.write_context(spec.context)
    return engine.submit(spec, channel)


def _types(messages: list[dict]) -> list[str]:
    return [m.get("type") for m in messages]


def test_artifacts_and_runs_live_in_the_identitys_own_home_by_default(databricks, tmp_path, monkeypatch):
    databricks.hold = True
    handle = _submitted(DatabricksEngine({}), _spec(_project(tmp_path), 1))
    task = databricks.run(handle["run_id"]).payload["tasks"][0]
    assert task["spark_python_task"]["python_file"].startswith(f"{ROOT}/artifacts/")
    assert handle["channel_uri"].startswith(f"{ROOT}/runs/d.t.map3.")
    assert databricks.acl(ROOT) == {"runner@example.com": "CAN_MANAGE", "group:admins": "CAN_MANAGE"}

    # a service principal's home is /Users/<application id>
    app_id = "9f3c6a1e-0d2b-4c4e-8a57-3b1f2d7e6c90"
    databricks.add_identity(app_id, "dapi-sp-token", service_principal=True)
    conn = {"conn_type": "databricks", "host": databricks.host, "port": databricks.port, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_DBX_SP", json.dumps({**conn, "password": "dapi-sp-token"}))
    handle = _submitted(DatabricksEngine({"databricks_conn_id": "dbx_sp"}), _spec(_project(tmp_path), 1, "sp"))
    assert handle["channel_uri"].startswith(f"/Users/{app_id}/spark-portable/runs/")


def test_a_root_others_can_reach_is_refused_before_anything_is_uploaded(databricks, tmp_path):
    shared = Profiles.from_dict(
        {"profiles": {"p": {"databricks": {"workspace_root": "/Shared/spark-portable", "serverless": True}}}}, "x"
    ).get("p")
    with pytest.raises(SparkPortableConfigError, match="under /Shared, which every workspace user can change"):
        DatabricksEngine.validate_profile(shared)

    # a folder of one's own, shared with a colleague: refused at first use, naming the grant
    databricks.add_identity("mallory@example.com", "dapi-mallory")
    team = "/Users/runner@example.com/team-jobs"
    engine = DatabricksEngine({})
    Workspace(engine._hook()).mkdirs(team)
    databricks.grant(team, "mallory@example.com", "CAN_EDIT")
    with pytest.raises(SparkPortableConfigError, match=r"shared with mallory@example.com \(CAN_EDIT\)"):
        engine.open_channel(_spec(_project(tmp_path, workspace_root=team), 1))
    assert databricks.runs() == [] and not databricks.workspace_file(f"{team}/artifacts").exists()

    # once the grant is gone the same folder is used
    databricks.grant(team, "mallory@example.com", None)
    databricks.hold = True
    handle = _submitted(DatabricksEngine({}), _spec(_project(tmp_path, workspace_root=team), 1))
    assert handle["channel_uri"].startswith(f"{team}/runs/")


def test_an_artifact_that_is_not_what_its_name_promises_is_never_run(databricks, tmp_path):
    databricks.hold = True
    project = _project(tmp_path)
    first = _submitted(DatabricksEngine({}), _spec(project, 1))
    app = databricks.run(first["run_id"]).payload["tasks"][0]["spark_python_task"]["python_file"]
    # a partial upload, or someone with access to the folder, changed the file in place
    databricks.workspace_file(app).write_bytes(b"import os  # not the job\n")
    with pytest.raises(ArtifactConflict, match=r"holds 25 bytes .* a partial or foreign upload"):
        _submitted(DatabricksEngine({}), _spec(project, 2))
    assert len(databricks.runs()) == 1


def test_concurrent_first_uploads_of_one_artifact_all_succeed(databricks, tmp_path):
    engine = DatabricksEngine({})
    data = b"print('the same job, uploaded by four tasks at once')\n"
    looked = threading.Barrier(4)

    class Racing(Workspace):
        def exists(self, path: str) -> bool:
            found = super().exists(path)
            looked.wait(timeout=30)  # all four saw it missing before any of them imports it
            return found

    paths, errors = [], []

    def upload() -> None:
        try:
            paths.append(engine.put_artifact(Racing(engine._hook()), ROOT, "job.py", data))
        except Exception as exc:  # the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(set(paths)) == 1 and len(paths) == 4
    assert databricks.workspace_file(paths[0]).read_bytes() == data


def test_an_import_retried_after_it_took_effect_is_success(databricks, tmp_path):
    engine = DatabricksEngine({})
    databricks.fail_after_commit("workspace/import", status=503, times=1)  # the hook retries a 503
    data = b"print('uploaded once, acknowledged late')\n"
    path = engine.put_artifact(Workspace(engine._hook()), ROOT, "job.py", data)
    assert databricks.workspace_file(path).read_bytes() == data


def test_an_artifact_over_the_import_limit_is_a_clear_error(databricks, tmp_path):
    engine = DatabricksEngine({})
    fits = b"#" * (10 * 1024 * 1024 * 3 // 4)  # its base64 is exactly the 10 MB the API takes
    assert databricks.workspace_file(engine.put_artifact(Workspace(engine._hook()), ROOT, "fits.py", fits)).is_file()
    with pytest.raises(SparkPortableConfigError, match=r"base64 content is at most 10 MB \(7864320 bytes"):
        engine.put_artifact(Workspace(engine._hook()), ROOT, "big.py", fits + b"#")


@spark
def test_the_same_try_executed_again_keeps_and_reads_its_runs_report(databricks, tmp_path):
    project = _project(tmp_path)
    spec = _spec(project, 1)
    engine = DatabricksEngine({"poll_interval_seconds": 0.5})
    handle = _submitted(engine, spec)
    assert engine.wait(handle).state == SUCCEEDED
    assert protocol.COMPLETED in _types(engine.channel_for(handle).read_new_messages())

    # the same try executed again (its worker was lost after the submit): no second run, and
    # the report its run wrote is still there
    again = DatabricksEngine({"poll_interval_seconds": 0.5})
    found = again.find_active_run(spec)
    assert found is not None and found["run_id"] == handle["run_id"]
    assert protocol.COMPLETED in _types(again.channel_for(found).read_new_messages())

    # lost before the run was recorded: submitting the try again deletes nothing, and whichever
    # run the idempotency token gives back, its own report is read
    databricks.workspace_file(f"{handle['channel_uri']}/run.json").unlink()
    assert again.find_active_run(spec) is None
    second = _submitted(again, spec)
    assert again.wait(second).state == SUCCEEDED
    assert protocol.COMPLETED in _types(again.channel_for(second).read_new_messages())
    assert protocol.COMPLETED in _types(DatabricksEngine({}).channel_for(handle).read_new_messages())

    # and where a token gives back only an active run (the older reading of the API), the
    # new run's report is its own: each run writes under its own id
    databricks.token_dedupes_finished_runs = False
    databricks.workspace_file(f"{handle['channel_uri']}/run.json").unlink()
    third = _submitted(again, spec)
    assert third["run_id"] != handle["run_id"] and third["channel_uri"] == handle["channel_uri"]
    assert again.wait(third).state == SUCCEEDED
    own = again.channel_for(third).read_new_messages()
    assert protocol.COMPLETED in _types(own) and len(own) == len(DatabricksEngine({}).channel_for(handle).read_new_messages())


def _with_run_id(spec: JobSpec, run_id: str) -> JobSpec:
    run = dataclasses.replace(spec.context.run, run_id=run_id)
    context = dataclasses.replace(spec.context, run=run)
    return dataclasses.replace(spec, context=context, name=run_name(context))


def test_a_try_follows_only_its_own_runs(databricks, tmp_path):
    databricks.hold = True
    project = _project(tmp_path)
    engine = DatabricksEngine({})
    first = _with_run_id(_spec(project, 1), "manual__2024-01-01T00:00:00+00:00")
    other = _with_run_id(_spec(project, 1), "manual__2024-01-01T00_00_00_00_00")
    assert first.name == other.name  # one run name once sanitised, two task instances
    handle = _submitted(engine, first)
    assert engine.open_channel(other).uri != handle["channel_uri"]
    assert engine.find_active_run(other) is None  # neither its recorded run nor its earlier try
    assert engine.find_active_run(dataclasses.replace(first, context=dataclasses.replace(
        first.context, run=dataclasses.replace(first.context.run, try_number=2))))["run_id"] == handle["run_id"]

    # a recorded run that no longer exists: a clear error, not a resubmit its token would refuse
    lost = _spec(project, 1, "lost")
    channel = engine.open_channel(lost)
    channel.write_context(lost.context)
    channel.record_run(987654, engine.idempotency_token(lost))
    with pytest.raises(SparkJobFailed, match=r"run 987654, which this task try started .* no longer exists"):
        engine.find_active_run(lost)


def test_an_earlier_tries_run_is_followed_only_if_this_identity_submitted_it(databricks, tmp_path, monkeypatch):
    databricks.hold = True
    project = _project(tmp_path)
    handle = _submitted(DatabricksEngine({}), _spec(project, 1))
    assert DatabricksEngine({}).find_active_run(_spec(project, 2))["run_id"] == handle["run_id"]
    # an admin (another deployment's identity) sees every run, and follows none of others'
    databricks.add_identity("ops@example.com", "dapi-ops", admin=True)
    conn = {"conn_type": "databricks", "host": databricks.host, "port": databricks.port, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_DBX_OPS", json.dumps({**conn, "password": "dapi-ops"}))
    assert DatabricksEngine({"databricks_conn_id": "dbx_ops"}).find_active_run(_spec(project, 2)) is None


def test_a_grant_on_a_folder_under_the_root_is_refused_too(databricks, tmp_path):
    databricks.add_identity("mallory@example.com", "dapi-mallory")
    databricks.hold = True
    _submitted(DatabricksEngine({}), _spec(_project(tmp_path), 1))  # makes artifacts/ and runs/
    databricks.grant(f"{ROOT}/runs", "mallory@example.com", "CAN_EDIT")
    with pytest.raises(SparkPortableConfigError, match=rf"mallory@example.com \(CAN_EDIT on {ROOT}/runs\)"):
        DatabricksEngine({}).open_channel(_spec(_project(tmp_path), 2))


def test_a_run_deferred_before_the_upgrade_is_still_read_from_its_old_layout(databricks, tmp_path):
    databricks.hold = True
    engine = DatabricksEngine({})
    handle = _submitted(engine, _spec(_project(tmp_path), 1))
    old = {k: v for k, v in handle.items() if k != "messages"}  # a handle an earlier version made
    message = {"type": protocol.COMPLETED, "seq": 1, "metrics": {}}
    path = databricks.workspace_file(f"{handle['channel_uri']}/messages/0000000001.json")
    path.write_text(json.dumps(message))
    assert _types(engine.channel_for(old).read_new_messages()) == [protocol.COMPLETED]
    assert engine.channel_for(handle).read_new_messages() == []  # this run has written nothing yet
