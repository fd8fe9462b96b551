"""Check an installed environment the way its Airflow will use the bundle, offline.

    <venv>/bin/python scripts/check_install.py <dags folder>

With the environment's Python: the provider is registered, the DAG bundle parses without import
errors, both remote engines and their providers' triggers import, and the DAG's defaults read
the environment (CC_GRAPH_*). Prints one JSON line starting with "RESULT "; exits non-zero if
anything is wrong. Used by scripts/compat_check.sh and tests/test_mwaa_install.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

import airflow
from airflow.providers_manager import ProvidersManager

try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow >= 3.1
except ImportError:
    from airflow.models.dagbag import DagBag


def main(dags: str) -> dict:
    # what the engines use of the providers: hooks and triggers
    from airflow.providers.amazon.aws.hooks.emr import EmrHook  # noqa: F401
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: F401
    from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger  # noqa: F401
    from airflow.providers.databricks.hooks.databricks import DatabricksHook  # noqa: F401
    from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger  # noqa: F401

    from airflow_spark_portable.engines import get_engine_class
    from airflow_spark_portable.operators.spark_portable import SparkPortableOperator  # noqa: F401

    providers = ProvidersManager().providers
    listed = subprocess.run([sys.executable, "-m", "airflow", "providers", "list", "-o", "json"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    bag = DagBag(dag_folder=dags)  # examples: off through AIRFLOW__CORE__LOAD_EXAMPLES
    graph = bag.dags.get("common_crawl_graph")
    return {
        "airflow": airflow.__version__,
        "amazon": version("apache-airflow-providers-amazon"),
        "databricks": version("apache-airflow-providers-databricks"),
        "provider": version("airflow-spark-portable"),
        "registered": "airflow-spark-portable" in providers,
        "providers_list": sorted(p["package_name"] for p in json.loads(listed.stdout)),
        "dag_ids": sorted(bag.dag_ids),
        "import_errors": {str(k): str(v)[-500:] for k, v in bag.import_errors.items()},
        "engines": {name: get_engine_class(name).__name__ for name in ("emr", "databricks")},
        "output_root": graph.params["output_root"] if graph else None,
    }


if __name__ == "__main__":
    result = main(sys.argv[1])
    print("RESULT " + json.dumps(result))
    ok = result["registered"] and "airflow-spark-portable" in result["providers_list"] and not result["import_errors"]
    ok = ok and {"common_crawl_graph", "example_spark_portable"} <= set(result["dag_ids"])
    sys.exit(0 if ok else 1)
