"""Starts Spark, says it is about to sleep, then sleeps in a Spark task (a Python worker
process) and in the driver, so a kill must stop the JVM, the driver and the workers."""

import time

from pyspark.sql import functions as F
from pyspark.sql.types import LongType

from airflow_spark_portable.runtime import open_job


@F.udf(LongType())
def sleepy(x):
    time.sleep(600)
    return x


with open_job() as job:
    job.spark.range(3).count()
    job.report_metrics(phase="sleeping")
    job.spark.range(1).select(sleepy("id")).collect()
