"""Operator input checks: each bad input fails early with a message naming it and the fix.
These runs stop before any Spark work, so they are quick (but for the one marked spark)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_spark_portable.exceptions import SparkPortableConfigError
from airflow_spark_portable.operators.spark_portable import SparkPortableOperator
from conftest import TEST_JOBS, operator_dag, tasks_dag

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


# -- arguments of the wrong shape: literals at DAG parse, templates when the task starts -----

APP = "jobs/examples/row_stats.py"

BAD_LITERALS = {
    # a string would reach the job one character per argument
    "args_string": ({"application_args": "--verbose"}, "application_args must be a list of strings, e.g. ['--verbose']"),
    "args_none_item": ({"application_args": ["--n", None]}, "application_args item None must be a string or number"),
    "conf_string": ({"conf": "spark.sql.shuffle.partitions=8"}, "conf must be a mapping, e.g. conf={"),
    "inputs_string": ({"inputs": "s3://commoncrawl/"}, "inputs must be a mapping, e.g. inputs={"),
    "partition_list": ({"partition": ["2024"]}, "partition must be a mapping, e.g. partition={"),
    "extras_string": ({"extras": "max_files=2"}, "extras must be a mapping, e.g. extras={"),
    "env_string": ({"env": "LOG_LEVEL=debug"}, "env must be a mapping, e.g. env={"),
    "engine_options_string": ({"engine_options": "aws_default"}, "engine_options must be a mapping, e.g. engine_options={"),
    # relative: the local job would write into the DAG bundle folder, its working directory
    "output_root_relative": ({"output_root": "out"}, "output_root='out' is a relative path; give an absolute folder or a URI"),
    "input_relative": (
        {"inputs": {"cc": "sample_data/cc"}},
        "inputs['cc']='sample_data/cc' is a relative path; give an absolute folder or a URI",
    ),
}


@pytest.mark.parametrize("case", BAD_LITERALS)
def test_literal_arguments_of_the_wrong_shape_fail_at_construction(case):
    kwargs, message = BAD_LITERALS[case]
    with pytest.raises(SparkPortableConfigError, match=re.escape(message)):
        SparkPortableOperator(task_id="t", application=APP, **kwargs)


def test_literal_argument_errors_are_dag_import_errors(tmp_path):
    for case in ("args_string", "conf_string", "output_root_relative"):
        (tmp_path / f"{case}.py").write_text(operator_dag(case, application=APP, **BAD_LITERALS[case][0]))
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.dag_ids == []
    errors = {Path(path).stem: str(error) for path, error in bag.import_errors.items()}
    assert set(errors) == {"args_string", "conf_string", "output_root_relative"}
    for case, error in errors.items():
        assert BAD_LITERALS[case][1] in error, (case, error)


def test_templates_absolute_paths_and_uris_are_accepted_when_the_dag_is_parsed():
    op = SparkPortableOperator(
        task_id="t",
        application=APP,
        application_args="{{ params.args }}",
        conf="{{ params.conf }}",
        inputs={"a": "/data/cc", "b": "s3://commoncrawl/", "c": "https://data.commoncrawl.org/",
                "d": "file:///data/cc", "e": "dbfs:/mnt/cc", "f": "{{ params.cc_root }}"},
        output_root="{{ params.output_root }}",
        extras="{{ params.extras }}",
    )
    assert op.application_args == "{{ params.args }}" and op.conf == "{{ params.conf }}"
    assert SparkPortableOperator(task_id="u", application=APP, output_root="/tmp/out").output_root == "/tmp/out"


def test_xcom_args_are_accepted_when_the_dag_is_parsed():
    import pendulum
    from airflow.sdk import DAG, task

    with DAG("xcom_args", schedule=None, start_date=pendulum.datetime(2024, 1, 1)):

        @task
        def plan():
            return {"cc": "s3://commoncrawl/"}

        upstream = plan()
        op = SparkPortableOperator(task_id="t", application=APP, inputs=upstream, application_args=upstream)
    assert op.inputs is upstream and op.upstream_task_ids == {"plan"}


NATIVE_ONLY = "; a template renders to a list or dict only on a DAG with render_template_as_native_obj=True"
BAD_RENDERED = {
    # without render_template_as_native_obj a template renders to the text of the list
    "args_rendered_text": (
        {"application_args": "{{ params.args }}"},
        "application_args must be a list of strings, e.g. ['--verbose'], got the str \"['--verbose']\"" + NATIVE_ONLY,
    ),
    "conf_rendered_text": (
        {"conf": "{{ params.conf }}"},
        "conf must be a mapping, e.g. conf={'spark.sql.shuffle.partitions': '8'}, got the str "
        "\"{'spark.sql.shuffle.partitions': '8'}\"" + NATIVE_ONLY,
    ),
    "extras_rendered_text": ({"extras": "{{ params.extras }}"}, "extras must be a mapping, e.g. extras={"),
    "engine_options_rendered_text": (
        {"engine_options": "{{ params.extras }}"},
        "engine_options must be a mapping, e.g. engine_options={",
    ),
    "output_root_rendered_relative": (
        {"output_root": "{{ params.out }}"},
        "output_root='out' is a relative path; give an absolute folder or a URI",
    ),
    "input_rendered_relative": (
        {"inputs": {"cc": "{{ params.out }}/cc"}},
        "inputs['cc']='out/cc' is a relative path; give an absolute folder or a URI",
    ),
}
RENDER_PARAMS = {
    "args": ["--verbose"],
    "conf": {"spark.sql.shuffle.partitions": "8"},
    "extras": {"max_files": 2},
    "out": "out",
}


def test_templated_arguments_are_checked_when_the_task_starts(dag_runner):
    tasks = {task: {"application": APP, **kwargs} for task, (kwargs, _) in BAD_RENDERED.items()}
    outcome = dag_runner.run("bad_rendered", tasks_dag("bad_rendered", tasks, RENDER_PARAMS))
    for task, (_, message) in BAD_RENDERED.items():
        assert outcome.state_of(task) == "failed", (task, outcome.result)
        assert message in outcome.output, task
    assert "spark-submit" not in outcome.output


def _native(source: str) -> str:
    native = source.replace("schedule=None,", "schedule=None, render_template_as_native_obj=True,", 1)
    assert native != source
    return native


@pytest.mark.spark
def test_native_templates_render_the_lists_and_dicts_the_job_gets(dag_runner):
    tasks = {
        "job": {
            "application": str(TEST_JOBS / "probe_job.py"),
            "application_args": "{{ params.args }}",
            "conf": "{{ params.conf }}",
            "inputs": "{{ params.inputs }}",
            "output_root": "{{ params.output_root }}",
        },
        # a native template that renders a string is still not a list
        "args_string": {"application": APP, "application_args": "{{ params.flag }}"},
    }
    params = {
        "args": ["--flag", "x y"],
        "conf": {"spark.portable.test": "yes"},
        "inputs": {"cc": "s3://commoncrawl/"},
        "output_root": "/tmp/native-out",
        "flag": "--verbose",
    }
    outcome = dag_runner.run("native_templates", _native(tasks_dag("native_templates", tasks, params)))
    assert outcome.task_state == "success", outcome.output[-3000:]
    metrics = outcome.metrics
    assert metrics["argv"] == ["--flag", "x y"]
    assert metrics["custom_conf"] == "yes"
    assert metrics["context"]["inputs"] == {"cc": "s3://commoncrawl/"}
    assert metrics["context"]["output_root"] == "/tmp/native-out"
    assert outcome.state_of("args_string") == "failed"
    assert "application_args must be a list of strings, e.g. ['--verbose'], got the str '--verbose'\n" in outcome.output
    assert NATIVE_ONLY not in outcome.output  # this DAG renders natively already
