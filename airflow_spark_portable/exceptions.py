"""Errors a DAG author sees. Each message names the input at fault and the fix."""

from __future__ import annotations

try:  # Airflow >= 3.1 moved them to the task SDK
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 3.0
    from airflow.exceptions import AirflowException, AirflowFailException  # type: ignore[no-redef]


class SparkPortableConfigError(AirflowFailException):
    """Bad task or profile configuration: a retry cannot fix it, so the task fails at once."""


class SparkJobFailed(AirflowException):
    """The job ran and failed (raised, exited non-zero, or never reported completion)."""
