"""Reports which Spark Connect session it got and what an earlier job left in it, then
leaves a conf of its own behind; a Python UDF reports the worker-side code version."""

import os

from pyspark.sql import functions as F

from airflow_spark_portable.runtime import SparkJob


def _worker_version(_):
    import codever  # imported on the Python worker, from the project folder on disk

    return codever.VERSION


class SessionProbe(SparkJob):
    def run(self, job):
        spark = job.spark
        leftover = spark.conf.get("spark.sql.portable.leftover", None)
        spark.conf.set("spark.sql.portable.leftover", "left by an earlier job")
        worker_version = spark.range(1).select(F.udf(_worker_version, "string")("id")).first()[0]
        return {
            "session_id": spark.session_id,
            "leftover_conf": leftover,
            "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions"),
            "worker_version": worker_version,
            "remote": os.environ.get("SPARK_REMOTE", "").split("/;")[0],
        }


if __name__ == "__main__":
    SessionProbe.main()
