"""What the four graph steps share: their partition, their inputs, their outputs.

Output layout (CONTRACT.md section 5): ``{output_root}/{step}/crawl={crawl}/domain={domain}/``
as Parquet. A write replaces exactly that folder; Spark's committer writes ``_SUCCESS`` only
after every file is in place, so a partition without ``_SUCCESS`` is incomplete and the
next step refuses to read it.
"""

from __future__ import annotations

import re
from typing import Any

from airflow_spark_portable.runtime import Job, SparkJob

CRAWL_ID = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
STEPS = ("nodes", "edges", "graph", "graph_aggr")


class CrawlJob(SparkJob):
    step: str = ""

    def run(self, job: Job) -> dict[str, Any]:
        ctx = job.context
        crawl, domain = ctx.crawl, ctx.domain
        if not crawl or not CRAWL_ID.match(crawl):
            raise ValueError(f"crawl={crawl!r} is not a Common Crawl id like 'CC-MAIN-2024-10'")
        if not domain or "/" in domain or domain.startswith("."):
            raise ValueError(f"domain={domain!r} must name a research domain (a seed list file name)")
        self.job, self.spark, self.crawl, self.domain = job, job.spark, crawl, domain
        self.output_root = ctx.require_output_root().rstrip("/")
        metrics = self.build()
        return {"step": self.step, "crawl": crawl, "domain": domain, **metrics}

    def build(self) -> dict[str, Any]:
        raise NotImplementedError

    def partition_path(self, step: str) -> str:
        return f"{self.output_root}/{step}/crawl={self.crawl}/domain={self.domain}"

    def write(self, df) -> str:
        path = self.partition_path(self.step)
        df.write.mode("overwrite").parquet(path)
        return path

    def read(self, step: str):
        """A finished upstream partition; a missing or half-written one is a clear error."""
        path = self.partition_path(step)
        try:
            self.spark.read.format("binaryFile").load(f"{path}/_SUCCESS").select("length").collect()
        except Exception as exc:  # AnalysisException: path does not exist
            if "PATH_NOT_FOUND" not in str(exc) and "does not exist" not in str(exc):
                raise
            raise FileNotFoundError(
                f"the {step!r} output for crawl {self.crawl} / domain {self.domain} is missing or incomplete "
                f"(no {path}/_SUCCESS): run the {step!r} step for this pair first"
            ) from None
        return self.spark.read.parquet(path)

    def count_written(self, path: str) -> int:
        return self.spark.read.parquet(path).count()
