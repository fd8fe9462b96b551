"""A small job that proves the plumbing on any engine: it reads its context, computes with
the DataFrame API, writes Parquet if given an output root, and reports metrics.

Arguments: [--rows N]
"""

import argparse

from pyspark.sql import functions as F

from airflow_spark_portable.runtime import SparkJob


class RowStats(SparkJob):
    def run(self, job):
        parser = argparse.ArgumentParser()
        parser.add_argument("--rows", type=int, default=1000)
        args = parser.parse_args(job.context.application_args)

        df = job.spark.range(args.rows).withColumn("bucket", F.col("id") % 10)
        stats = df.agg(F.count("*").alias("rows"), F.sum("id").alias("id_sum")).first()
        buckets = df.select("bucket").distinct().count()
        job.log.info("counted %d rows in %d buckets", stats["rows"], buckets)
        if job.context.output_root:
            df.write.mode("overwrite").parquet(f"{job.context.output_root}/row_stats")
        return {
            "rows": stats["rows"],
            "id_sum": stats["id_sum"],
            "buckets": buckets,
            "crawl": job.context.crawl,
            "domain": job.context.domain,
            "engine": job.context.engine,
            "run_id": job.context.run.run_id,
        }


if __name__ == "__main__":
    RowStats.main()
