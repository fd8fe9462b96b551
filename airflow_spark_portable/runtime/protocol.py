"""The wire protocol between the operator and a running job ("pipes").

Context goes in as one JSON document; messages come out as JSON objects, one per line,
in the order the job wrote them. Both sides import this module, so it must stay free of
Airflow and Spark imports: it is shipped to clusters with the job.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1

# Where the job finds its bootstrap: environment variables (local engine) or the same
# names as command-line flags (EMR steps and Databricks task parameters, which cannot set
# per-run environment variables). The values are URIs, never secrets.
ENV_CONTEXT = "SPARK_PORTABLE_CONTEXT"
ENV_MESSAGES = "SPARK_PORTABLE_MESSAGES"
ARG_CONTEXT = "--spark-portable-context"
ARG_MESSAGES = "--spark-portable-messages"
# Spark SQL conf (JSON) for the job's session, where the platform cannot take it per run
# (a Databricks existing cluster or serverless compute).
ARG_SESSION_CONF = "--spark-portable-session-conf"

# Message types, in the order a healthy job emits them.
OPENED = "opened"  # the job started and read its context
LOG = "log"  # a line for the task log (remote engines have no live stdout)
METRICS = "metrics"  # a partial metrics update; later keys win
COMPLETED = "completed"  # the job finished; carries the final metrics
FAILED = "failed"  # the job raised; carries the error type, text and traceback

MESSAGE_TYPES = frozenset({OPENED, LOG, METRICS, COMPLETED, FAILED})

# Metric key the operator adds to what the job reported; jobs may not use it.
RESERVED_METRIC_KEY = "spark_portable"
