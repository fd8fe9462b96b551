"""What ``airflow providers list`` and ``airflow config list`` show for this provider."""

from __future__ import annotations

from airflow_spark_portable import __version__
from airflow_spark_portable.settings import DEFAULTS, SECTION

_OPTIONS = {
    "project_root": "Folder holding profiles.yaml and the jobs/ package. Empty: search upward from the DAG file.",
    "profiles_file": "Path of the profiles YAML file. Empty: profiles.yaml in the project root.",
    "default_profile": "Profile used when a task names none.",
    "work_dir": "Local engine: folder for each task try's context and messages. Empty: <tmp>/airflow-spark-portable.",
    "local_max_parallel": "Local engine: most jobs running at once on one host. Empty: one per CPU core.",
    "local_mode": "Local engine: 'connect' runs jobs against a warm local Spark Connect server started once "
    "and reused (fast); 'submit' runs one spark-submit per task (a JVM start, ~20 s, each).",
    "local_connect_idle_timeout": "Local engine, connect mode: seconds a Spark Connect server stays up "
    "after its last job ended.",
    "price_table": "YAML price table for cost estimates (USD per instance-hour by region). Empty: the "
    "bundled airflow_spark_portable/prices/aws.yaml.",
}

_INTEGERS = {"local_max_parallel", "local_connect_idle_timeout"}


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-spark-portable",
        "name": "Spark Portable",
        "description": "Run the same PySpark job on local spark-submit, AWS EMR or Databricks, "
        "chosen per task by one `engine` key.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Spark Portable",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "Spark Portable",
                "python-modules": ["airflow_spark_portable.operators.spark_portable"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Spark Portable",
                "python-modules": ["airflow_spark_portable.triggers"],
            }
        ],
        "connection-types": [],
        "extra-links": [
            "airflow_spark_portable.links.SparkRunLink",
            "airflow_spark_portable.links.SparkLogsLink",
        ],
        "config": {
            SECTION: {
                "description": "Settings of the airflow-spark-portable provider.",
                "options": {
                    name: {
                        "description": text,
                        "version_added": "0.1.0",
                        "type": "integer" if name in _INTEGERS else "string",
                        "example": None,
                        "default": DEFAULTS[name] or None,
                    }
                    for name, text in _OPTIONS.items()
                },
            }
        },
    }
