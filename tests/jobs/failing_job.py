"""Does some Spark work, then raises: the task must fail with this text in its log."""

from airflow_spark_portable.runtime import SparkJob


class Failing(SparkJob):
    def run(self, job):
        job.report_metrics(rows_before_failure=job.spark.range(7).count())
        raise ValueError("seed file steel.csv has no 'url' column")


if __name__ == "__main__":
    Failing.main()
