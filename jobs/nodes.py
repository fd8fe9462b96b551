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


def _check_utf8(path: str, content: bytes) -> None:
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        raise ValueError(
            f"{path} is not UTF-8: byte 0x{content[exc.start]:02x} on line {line} (byte offset {exc.start}); "
            "save the seed list as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def _check_one_domain_per_company(path: str, valid) -> None:
    """A company_id on seeds of two registered domains is a typo in the list (the graph would
    merge two firms, or split one): refuse it rather than keep it twice."""
    clashes = (
        valid.groupBy("company_id")
        .agg(F.sort_array(F.collect_set("registered_domain")).alias("domains"))
        .where(F.size("domains") > 1)
        .orderBy("company_id")
        .limit(5)
        .collect()
    )
    if clashes:
        listed = "; ".join(f"{row['company_id']}: {', '.join(row['domains'])}" for row in clashes)
        raise ValueError(
            f"{path}: a company_id names seeds on different registered domains ({listed}); give each company "
            "one seed row, or the rows distinct company_ids"
        )


class Nodes(CrawlJob):
    step = "nodes"

    def build(self):
        path = join(self.job.context.input("seeds"), f"{self.domain}.csv")
        try:
            # binaryFile: the raw bytes, to refuse what Spark's CSV reader would silently
            # turn into U+FFFD (a latin-1 file's accents, and the seeds they invalidate)
            raw = self.spark.read.format("binaryFile").load(path).select("content").collect()
        except Exception as exc:
            if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
                raise FileNotFoundError(f"no seed list for domain {self.domain!r} at {path}") from None
            raise
        _check_utf8(path, bytes(raw[0]["content"]) if raw else b"")
        seeds = self.spark.read.option("header", True).option("encoding", "UTF-8").csv(path)
        columns = seeds.columns
        if not {"company_id", "url"} <= set(columns):
            raise ValueError(f"{path} must have the header company_id,url (it has {','.join(columns)})")

        # made here, not at import: a UDF binds to the session kind (classic or Connect)
        # that exists when it is created
        seed_host_udf = F.udf(seed_host, _HOST)
        parsed = seeds.select("company_id", "url", seed_host_udf("url").alias("p"))
        valid = parsed.where(F.col("p").isNotNull()).select(
            "company_id", "url", "p.host", "p.registered_domain"
        )
        _check_one_domain_per_company(path, valid)
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
