"""Runs a Spark task that appends a heartbeat to a file every 0.2 s for ten minutes, so a
test can see whether the query is still running on the server after the job is killed."""

import sys
import time

from pyspark.sql import functions as F

from airflow_spark_portable.runtime import open_job


def beat(path):
    def run(x):
        with open(path, "a") as out:
            for _ in range(3000):
                out.write(f"{time.time()}\n")
                out.flush()
                time.sleep(0.2)
        return x

    return run


with open_job() as job:
    heartbeat = sys.argv[1]
    job.report_metrics(phase="beating")
    job.spark.range(1).select(F.udf(beat(heartbeat), "long")("id")).collect()
