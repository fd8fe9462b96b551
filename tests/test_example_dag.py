"""The bundled example DAG parses cleanly and runs end to end on the local engine."""

from __future__ import annotations

import pytest

from conftest import ROOT

try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0
    from airflow.models.dagbag import DagBag


def test_dags_folder_imports_without_errors():
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["example_spark_portable"]
    assert dag.params["engine"] == "local"
    assert [t.task_id for t in dag.tasks] == ["row_stats"]


@pytest.mark.spark
def test_example_dag_returns_the_jobs_metrics(dag_runner):
    source = (ROOT / "dags" / "example_spark_portable.py").read_text()
    outcome = dag_runner.run("example_spark_portable", source, conf={"rows": 250})
    assert outcome.state_of("row_stats") == "success", outcome.output[-3000:]
    metrics = outcome.result["xcom"]["row_stats[-1]"]
    assert metrics["rows"] == 250 and metrics["id_sum"] == sum(range(250)) and metrics["buckets"] == 10
    assert metrics["crawl"] == "CC-MAIN-2024-10" and metrics["engine"] == "local"
