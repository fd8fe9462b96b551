"""Needs a package that only the cluster's bootstrap installs, on the driver and the workers."""

from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from airflow_spark_portable.runtime import SparkJob


def _worker_value(_):
    import asp_testdep  # imported on a Python worker, not the driver

    return asp_testdep.VALUE


class NeedsDependency(SparkJob):
    def run(self, job):
        import asp_testdep

        on_worker = job.spark.range(1).select(F.udf(_worker_value, StringType())("id").alias("v")).first()["v"]
        return {"driver": asp_testdep.VALUE, "worker": on_worker}


if __name__ == "__main__":
    NeedsDependency.main()
