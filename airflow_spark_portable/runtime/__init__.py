"""Job-side runtime. Imports neither Airflow nor (until a session is asked for) pyspark.

Shipped to clusters next to the job; see docs/architecture.md.
"""

from airflow_spark_portable.runtime.context import JobContext, RunIdentity
from airflow_spark_portable.runtime.job import Job, SparkJob, get_spark, open_job

__all__ = ["Job", "JobContext", "RunIdentity", "SparkJob", "get_spark", "open_job"]
