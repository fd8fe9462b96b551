"""Reports what the job saw: its context, environment and Spark session."""

import os
import sys

import airflow_spark_portable.runtime
from airflow_spark_portable.runtime import SparkJob


class Probe(SparkJob):
    def run(self, job):
        spark = job.spark
        return {
            "context": job.context.to_dict(),
            "argv": sys.argv[1:],
            # reversed, so that the plain value appearing anywhere in the task log is a leak
            "my_setting_reversed": os.environ.get("MY_SETTING", "")[::-1],
            "airflow_env_vars": sorted(k for k in os.environ if k.startswith("AIRFLOW")),
            "shuffle_partitions": spark.conf.get("spark.sql.shuffle.partitions"),
            "custom_conf": spark.conf.get("spark.portable.test", None),
            "session_module": type(spark).__module__,
            "rows": spark.range(42).count(),
            # where the runtime was imported from: remote engines must use the code they shipped
            "runtime_file": airflow_spark_portable.runtime.__file__,
        }


if __name__ == "__main__":
    Probe.main()
