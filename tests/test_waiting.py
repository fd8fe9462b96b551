"""A task never fails while its remote run goes on: when waiting goes wrong (a trigger that
errors out, an API call that fails), the run's own state decides, and a task that must give
up cancels the run first. Shown on Databricks (tests/harness/databricks_api.py); the EMR
engine's poll is covered in tests/test_emr_engine.py."""

from __future__ import annotations

import threading
import time

import pytest
from airflow.exceptions import TaskDeferred

from airflow_spark_portable.engines.databricks import DatabricksEngine
from airflow_spark_portable.exceptions import SparkJobFailed
from airflow_spark_portable.operators.spark_portable import MAX_REWAITS, SparkPortableOperator
from airflow_spark_portable.triggers import EngineRunTrigger
from conftest import TEST_JOBS, wait_for
from test_databricks_engine import _dag, _project, _spec, databricks  # noqa: F401 (a fixture)

spark = pytest.mark.spark
ERROR_EVENT = {"status": "error", "message": "An error occurred (ThrottlingException): Rate exceeded"}


def _operator() -> SparkPortableOperator:
    return SparkPortableOperator(
        task_id="t",
        application=str(TEST_JOBS / "probe_job.py"),
        engine="databricks",
        engine_options={"poll_interval_seconds": 1},
        poll_interval=1,
    )


def _submitted(databricks, tmp_path):
    engine = DatabricksEngine({})
    spec = _spec(_project(tmp_path), try_number=1)
    channel = engine.open_channel(spec)
    channel.write_context(spec.context)
    handle = engine.submit(spec, channel)
    meta = {
        "engine": "databricks",
        "profile": "small",
        "application": str(spec.application),
        "run_name": spec.name,
        "started": time.time(),
        "partition": {},
        "output_root": None,
    }
    return handle, meta


def _resume(operator, handle, meta):
    """What the worker does when the trigger fires (execute_complete with its event)."""
    event = {"event": ERROR_EVENT, "handle": handle, "meta": meta}
    return operator.execute_complete({}, event, handle=handle, meta=meta)


def test_a_trigger_error_while_the_run_is_live_goes_back_to_waiting(databricks, tmp_path):
    databricks.hold = True
    handle, meta = _submitted(databricks, tmp_path)
    with pytest.raises(TaskDeferred) as deferred:
        _resume(_operator(), handle, meta)
    again = deferred.value
    assert isinstance(again.trigger, EngineRunTrigger) and again.trigger.handle == handle
    assert again.kwargs["meta"]["rewaits"] == 1
    assert not databricks.run(handle["run_id"]).cancelled  # untouched: it goes on


def test_a_trigger_that_keeps_failing_cancels_the_run_before_the_task_fails(databricks, tmp_path):
    databricks.hold = True
    handle, meta = _submitted(databricks, tmp_path)
    with pytest.raises(SparkJobFailed, match=f"still live, {MAX_REWAITS} times in a row; the run was cancelled"):
        _resume(_operator(), handle, {**meta, "rewaits": MAX_REWAITS})
    wait_for(lambda: databricks.run(handle["run_id"]).result_state == "CANCELED", timeout=10, what="the cancel")


@spark
def test_a_trigger_error_after_the_run_ended_judges_the_run_itself(databricks, tmp_path):
    handle, meta = _submitted(databricks, tmp_path)
    wait_for(lambda: databricks.run(handle["run_id"]).result_state is not None, timeout=120, what="the run")
    assert databricks.run(handle["run_id"]).result_state == "SUCCESS"
    metrics = _resume(_operator(), handle, meta)
    assert metrics["context"]["engine"] == "databricks"  # the job's own report, not the trigger's error


def test_a_run_whose_state_cannot_be_read_is_cancelled_before_the_task_fails(databricks, tmp_path):
    databricks.hold = True
    handle, meta = _submitted(databricks, tmp_path)
    databricks.denied = {"jobs/runs/get"}  # e.g. the token lost its grant on the job mid-run
    with pytest.raises(Exception, match="PERMISSION_DENIED"):
        _resume(_operator(), handle, meta)
    wait_for(lambda: databricks.run(handle["run_id"]).result_state == "CANCELED", timeout=10, what="the cancel")


def test_a_synchronous_wait_that_fails_cancels_the_run_too(dag_runner, databricks, tmp_path):
    databricks.hold = True
    project = _project(tmp_path)

    def revoke_once_submitted():
        wait_for(lambda: databricks.runs(), timeout=120, what="the run to be submitted")
        databricks.denied = {"jobs/runs/get"}  # the wait's next poll is refused

    revoker = threading.Thread(target=revoke_once_submitted, daemon=True)
    revoker.start()
    source = _dag("dbx_wait_fails", "probe_job.py")
    outcome = dag_runner.run("dbx_wait_fails", source, env={"AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT": str(project)})
    revoker.join()
    assert outcome.task_state == "failed"
    (run,) = databricks.runs()
    assert "Cancelling the databricks run" in outcome.output and "PERMISSION_DENIED" in outcome.output
    wait_for(lambda: run.result_state == "CANCELED", timeout=10, what="the cancel")
