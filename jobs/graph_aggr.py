"""graph_aggr: domain-level links, counted like graph."""

from pyspark.sql import functions as F

from jobs.common.crawl_job import CrawlJob


class GraphAggr(CrawlJob):
    step = "graph_aggr"

    def build(self):
        external = self.read("edges").where(F.col("dst_registered_domain") != F.col("src_registered_domain"))
        aggr = external.groupBy(
            F.col("src_registered_domain").alias("src_domain"), F.col("dst_registered_domain").alias("dst_domain")
        ).agg(
            F.countDistinct("src_url", "dst_url").alias("n_links"),
            F.countDistinct("src_url").alias("n_pages"),
        )
        return {"rows": self.count_written(self.write(aggr))}


if __name__ == "__main__":
    GraphAggr.main()
