"""edges: every link from a node's pages in a crawl's WAT files.

WAT files are spread over Spark tasks (one file per task at a time) and streamed by
``jobs.common.wat`` inside ``mapInArrow``; per-file counters ride along as extra rows and
are summed with ``observe`` while the edges are written, so the WAT data is read once.
"""

from collections import Counter

import pyarrow as pa
from pyspark.sql import Observation
from pyspark.sql import functions as F

from jobs.common.crawl_job import CrawlJob
from jobs.common.inputs import wat_paths, with_retries
from jobs.common.wat import COUNTERS, edges_from_wat

EDGE_COLUMNS = ["src_url", "src_registered_domain", "dst_url", "dst_host", "dst_registered_domain"]
STAT_COLUMNS = [*COUNTERS, "files_ok", "files_failed"]
SCHEMA = (
    "kind string, "
    + ", ".join(f"{c} string" for c in EDGE_COLUMNS)
    + ", "
    + ", ".join(f"{c} long" for c in STAT_COLUMNS)
    + ", error string"
)
_ARROW_SCHEMA = pa.schema(
    [("kind", pa.string())]
    + [(c, pa.string()) for c in EDGE_COLUMNS]
    + [(c, pa.int64()) for c in STAT_COLUMNS]
    + [("error", pa.string())]
)
_BATCH_ROWS = 10_000


def _batch(n, **columns):
    """A batch of the shared schema: the given columns, nulls elsewhere."""
    data = {name: columns.get(name, [None] * n) for name in _ARROW_SCHEMA.names}
    return pa.RecordBatch.from_pydict(data, schema=_ARROW_SCHEMA)


def _edge_batch(edges):
    return _batch(len(edges), kind=["edge"] * len(edges), **dict(zip(EDGE_COLUMNS, map(list, zip(*edges)))))


def _stats_batch(counts, error):
    return _batch(1, kind=["stats"], error=[error], **{name: [int(counts.get(name, 0))] for name in STAT_COLUMNS})


def extract_edges(node_domains):
    """The mapInArrow function: paths in, edge rows and one stats row per file out."""
    node_domains = frozenset(node_domains)

    def run(batches):
        for batch in batches:
            for path in batch.column("path").to_pylist():

                def read(stream):
                    counts = Counter()  # fresh per attempt: a retried file is counted once
                    return list(edges_from_wat(stream, node_domains, counts)), counts

                try:
                    edges, counts = with_retries(path, read)
                    counts["files_ok"] += 1
                    error = None
                except Exception as exc:  # a bad file is reported, never fatal
                    edges, counts = [], Counter(files_failed=1)
                    error = f"{path}: {type(exc).__name__}: {exc}"[:1000]
                for start in range(0, len(edges), _BATCH_ROWS):
                    yield _edge_batch(edges[start : start + _BATCH_ROWS])
                yield _stats_batch(counts, error)

    return run


class Edges(CrawlJob):
    step = "edges"

    def build(self):
        ctx = self.job.context
        nodes = self.read("nodes")
        domains = {row["registered_domain"] for row in nodes.select("registered_domain").collect()}
        max_files = ctx.extras.get("max_files_per_crawl")
        paths = wat_paths(ctx.input("cc"), self.crawl, int(max_files) if max_files is not None else None)
        self.job.log.info("%d node domains, %d WAT files", len(domains), len(paths))
        if not paths:
            raise ValueError(f"crawl {self.crawl} lists no WAT files")

        files = self.spark.createDataFrame(list(enumerate(paths)), "idx long, path string")
        files = files.repartitionByRange(min(len(paths), 10_000), "idx")
        rows = files.mapInArrow(extract_edges(domains), SCHEMA)
        stats = Observation("wat")
        observed = rows.observe(stats, *[F.sum(c).alias(c) for c in STAT_COLUMNS],
                                F.first("error", ignorenulls=True).alias("first_error"))
        edges = observed.where(F.col("kind") == "edge").select(*EDGE_COLUMNS).dropDuplicates(["src_url", "dst_url"])
        totals: dict = {}

        def vet() -> None:  # runs after the edges are staged, before they replace the partition
            totals.update({k: (v if v is not None else 0) for k, v in stats.get.items()})
            if totals["files_ok"] == 0:
                raise RuntimeError(
                    f"none of the {len(paths)} WAT files could be read; first error: {totals['first_error']}"
                )

        written = self.write(edges, before_commit=vet)
        first_error = totals.pop("first_error", None)
        if first_error:
            self.job.log.warning("%d WAT file(s) could not be read, e.g. %s", totals["files_failed"], first_error)
        return {"wat_files": len(paths), **totals, "first_file_error": first_error or None,
                "node_domains": len(domains), "rows": self.count_written(written)}


if __name__ == "__main__":
    Edges.main()
