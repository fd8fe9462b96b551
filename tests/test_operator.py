"""Operator input checks: each bad input fails early with a message naming it and the fix.
These runs stop before any Spark work, so they are quick."""

from __future__ import annotations

import pytest

from airflow_spark_portable.exceptions import SparkPortableConfigError
from airflow_spark_portable.operators.spark_portable import SparkPortableOperator
from conftest import operator_dag, tasks_dag

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0
    from airflow.models.dagbag import DagBag


def test_unknown_engine_literal_fails_at_construction():
    with pytest.raises(
        SparkPortableConfigError, match=r"engine='spark' is not an engine; use one of: local, emr, databricks"
    ):
        SparkPortableOperator(task_id="t", application="jobs/examples/row_stats.py", engine="spark")


def test_unknown_engine_literal_is_a_dag_import_error(tmp_path):
    dag_file = tmp_path / "bad_engine.py"
    dag_file.write_text(operator_dag("bad_engine", application="jobs/examples/row_stats.py", engine="EMR"))
    bag = DagBag(dag_folder=str(dag_file))
    assert "bad_engine" not in bag.dag_ids
    (error,) = bag.import_errors.values()
    assert "engine='EMR' is not an engine; use one of: local, emr, databricks" in str(error)


def test_templated_engine_is_checked_when_the_task_starts(dag_runner):
    source = operator_dag(
        "templated_engine",
        application="jobs/examples/row_stats.py",
        engine="{{ params.engine }}",
        dag_params={"engine": "local"},
    )
    outcome = dag_runner.run("templated_engine", source, conf={"engine": "spark"})
    assert outcome.task_state == "failed"
    assert "engine='spark' is not an engine; use one of: local, emr, databricks" in outcome.output


BAD_INPUTS = {
    "missing_application": ({"application": "jobs/nope.py"}, "application='jobs/nope.py': no such file"),
    "unknown_profile": ({"application": "jobs/examples/row_stats.py", "profile": "huge"}, "unknown profile 'huge'"),
    "not_python": ({"application": "jobs/examples/row_stats.jar"}, "must be the path of a Python job file"),
    "bad_env": (
        {"application": "jobs/examples/row_stats.py", "env": {"BAD-NAME": "x"}},
        "'BAD-NAME' is not a valid environment",
    ),
    "no_connection": (
        {"application": "jobs/examples/row_stats.py", "engine": "databricks"},
        "engine_options databricks_conn_id='databricks_default'",
    ),
    # retries=3, yet a config error fails at once: a retry cannot create the file
    "not_retried": ({"application": "jobs/missing.py", "retries": 3}, "application='jobs/missing.py'"),
}


def test_bad_task_inputs_fail_before_spark_starts(dag_runner):
    # One DAG, one task per bad input: a dag.test() costs seconds, so they share it.
    source = tasks_dag("bad_inputs", {task: kwargs for task, (kwargs, _) in BAD_INPUTS.items()})
    outcome = dag_runner.run("bad_inputs", source)
    for task, (_, message) in BAD_INPUTS.items():
        assert outcome.state_of(task) == "failed", (task, outcome.result)
        assert message in outcome.output, task
    assert "spark-submit" not in outcome.output


def test_deferrable_follows_operators_default_deferrable_unless_given(monkeypatch):
    from airflow_spark_portable.operators.spark_portable import SparkPortableOperator

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "true")
    assert SparkPortableOperator(task_id="a", application="jobs/nodes.py").deferrable is True
    assert SparkPortableOperator(task_id="b", application="jobs/nodes.py", deferrable=False).deferrable is False
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "false")
    assert SparkPortableOperator(task_id="c", application="jobs/nodes.py").deferrable is False
