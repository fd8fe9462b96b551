"""graph: company-level links between a domain's firms (and to the rest of the web)."""

from pyspark.sql import functions as F

from jobs.common.crawl_job import CrawlJob


class Graph(CrawlJob):
    step = "graph"

    def build(self):
        nodes = self.read("nodes").select("company_id", "registered_domain")
        external = self.read("edges").where(F.col("dst_registered_domain") != F.col("src_registered_domain"))
        src = nodes.select(F.col("company_id").alias("src_company_id"), F.col("registered_domain").alias("src_rd"))
        dst = nodes.select(F.col("company_id").alias("dst_company_id"), F.col("registered_domain").alias("dst_rd"))
        graph = (
            external.join(src, external.src_registered_domain == src.src_rd)
            .join(dst, external.dst_registered_domain == dst.dst_rd, "left")
            .groupBy("src_company_id", "dst_company_id", "dst_registered_domain")
            .agg(
                F.countDistinct("src_url", "dst_url").alias("n_links"),
                F.countDistinct("src_url").alias("n_pages"),
            )
        )
        written = self.write(graph)
        result = self.spark.read.parquet(written)
        counts = result.agg(
            F.count(F.lit(1)).alias("rows"), F.count("dst_company_id").alias("firm_to_firm")
        ).first()
        return {"rows": counts["rows"], "firm_to_firm_rows": counts["firm_to_firm"]}


if __name__ == "__main__":
    Graph.main()
