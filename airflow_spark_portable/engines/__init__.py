"""Engine registry: name -> class path. Adding an engine is one module and one line here.

Classes are imported only when a task runs, so parsing a DAG never pulls in boto3 or the
Databricks SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from airflow_spark_portable.exceptions import SparkPortableConfigError

if TYPE_CHECKING:
    from airflow_spark_portable.engines.base import Engine

# The engine names users may write (README "Running a job from a DAG").
ENGINE_NAMES = ("local", "emr", "databricks")

_REGISTRY: dict[str, str] = {
    "local": "airflow_spark_portable.engines.local:LocalEngine",
    "emr": "airflow_spark_portable.engines.emr:EmrEngine",
    "databricks": "airflow_spark_portable.engines.databricks:DatabricksEngine",
}


def check_engine_name(value: object, where: str = "engine") -> str:
    if not isinstance(value, str) or value.strip() not in ENGINE_NAMES:
        raise SparkPortableConfigError(f"{where}={value!r} is not an engine; use one of: {', '.join(ENGINE_NAMES)}")
    return value.strip()


def get_engine_class(name: str) -> type[Engine]:
    name = check_engine_name(name)
    try:
        module_name, class_name = _REGISTRY[name].split(":")
    except KeyError:
        raise SparkPortableConfigError(
            f"engine {name!r} is not available in this release of airflow-spark-portable "
            f"(available: {', '.join(sorted(_REGISTRY))}); pick another engine for this task"
        ) from None
    return getattr(import_module(module_name), class_name)
