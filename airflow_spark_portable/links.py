"""Extra links on SparkPortableOperator: the remote run's console page and its logs.

Engine-neutral: an engine names URLs for a run (``Engine.links``), the operator pushes each
to XCom under the link's key as soon as the run exists, and the Airflow UI reads that key.
Nothing here imports a provider, so parsing a DAG stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def _xcom():
    try:
        from airflow.sdk.execution_time.xcom import XCom  # Airflow >= 3.1
    except ImportError:  # Airflow 3.0
        from airflow.models.xcom import XCom
    return XCom


class _EngineLink(BaseOperatorLink):
    name = ""
    key = ""
    kind = ""  # the key of Engine.links()' result this link shows

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        try:
            return _xcom().get_value(ti_key=ti_key, key=self.key) or ""
        except Exception:  # a missing link must never fail the task or the page
            return ""


class SparkRunLink(_EngineLink):
    """The run on its platform: EMR cluster page, Databricks run page."""

    name = "Spark run"
    key = "spark_portable_run_url"
    kind = "run"


class SparkLogsLink(_EngineLink):
    """Where the platform keeps the driver's stdout/stderr."""

    name = "Spark logs"
    key = "spark_portable_logs_url"
    kind = "logs"


ALL = (SparkRunLink(), SparkLogsLink())
