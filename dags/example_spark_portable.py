"""The smallest SparkPortableOperator DAG: one job, its engine picked in the trigger form.

`airflow dags test example_spark_portable` runs it locally with no credentials.
"""

import pendulum

from airflow.sdk import DAG, Param
from airflow_spark_portable.operators.spark_portable import SparkPortableOperator

with DAG(
    dag_id="example_spark_portable",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["spark-portable", "example"],
    params={
        "engine": Param("local", enum=["local", "emr", "databricks"], description="Where the job runs."),
        "rows": Param(1000, type="integer", minimum=1, description="How many rows the job generates."),
    },
    doc_md=__doc__,
):
    SparkPortableOperator(
        task_id="row_stats",
        application="jobs/examples/row_stats.py",
        engine="{{ params.engine }}",
        application_args=["--rows", "{{ params.rows }}"],
        crawl="CC-MAIN-2024-10",
        domain="example",
    )
