"""nodes: one row per valid seed company of a research domain.

Reads ``{seeds}/{domain}.csv`` (``company_id,url``); drops and counts invalid seeds; keeps,
per registered domain, the seed with the smallest ``company_id``.
"""

from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from jobs.common.crawl_job import CrawlJob
from jobs.common.inputs import join
from jobs.common.urls import seed_host

_HOST = StructType([StructField("host", StringType()), StructField("registered_domain", StringType())])


class Nodes(CrawlJob):
    step = "nodes"

    def build(self):
        path = join(self.job.context.input("seeds"), f"{self.domain}.csv")
        try:
            seeds = self.spark.read.option("header", True).option("encoding", "UTF-8").csv(path)
            columns = seeds.columns
        except Exception as exc:
            if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
                raise FileNotFoundError(f"no seed list for domain {self.domain!r} at {path}") from None
            raise
        if not {"company_id", "url"} <= set(columns):
            raise ValueError(f"{path} must have the header company_id,url (it has {','.join(columns)})")

        # made here, not at import: a UDF binds to the session kind (classic or Connect)
        # that exists when it is created
        seed_host_udf = F.udf(seed_host, _HOST)
        parsed = seeds.select("company_id", "url", seed_host_udf("url").alias("p"))
        valid = parsed.where(F.col("p").isNotNull()).select(
            "company_id", "url", "p.host", "p.registered_domain"
        )
        # smallest company_id (string order) per registered domain: min over a struct led by it
        nodes = valid.groupBy("registered_domain").agg(
            F.min(F.struct("company_id", "url", "host")).alias("s")
        ).select("s.company_id", "s.url", "s.host", "registered_domain")
        written = self.write(nodes)

        counts = parsed.agg(
            F.count(F.lit(1)).alias("seeds"), F.sum(F.col("p").isNull().cast("long")).alias("invalid")
        ).first()
        n_nodes = self.count_written(written)
        n_valid = counts["seeds"] - (counts["invalid"] or 0)
        self.job.log.info("%d seeds, %d invalid, %d nodes", counts["seeds"], counts["invalid"] or 0, n_nodes)
        return {
            "seeds": counts["seeds"],
            "seeds_invalid": counts["invalid"] or 0,
            "seeds_duplicate_domain": n_valid - n_nodes,
            "rows": n_nodes,
        }


if __name__ == "__main__":
    Nodes.main()
