"""edges: every link from a node's pages in a crawl's WAT files.

WAT files are spread over Spark tasks (one file per task at a time) and streamed by
``jobs.common.wat`` inside ``mapInArrow``; per-file counters ride along as extra rows and
are summed with ``observe`` while the edges are written, so the WAT data is read once.

A listed file that cannot be read whole (after retries) is a failed file. Up to
``max_failed_files`` (task extras, default 0) may fail; with more, the step fails before the
new partition replaces the old one. A partition written from fewer files than listed names
them in its metrics (``files_failed``, ``failed_files``).
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pyarrow as pa
from pyspark.sql import Observation
from pyspark.sql import functions as F

from jobs.common.crawl_job import CrawlJob
from jobs.common.inputs import CorruptInputError, wat_paths, with_retries
from jobs.common.wat import COUNTERS, edges_from_wat

EDGE_COLUMNS = ["src_url", "src_registered_domain", "dst_url", "dst_host", "dst_registered_domain"]
STAT_COLUMNS = [*COUNTERS, "files_ok", "files_failed"]
# stats rows of failed files also carry the file (its listing index and path) and its error
SCHEMA = (
    "kind string, "
    + ", ".join(f"{c} string" for c in EDGE_COLUMNS)
    + ", "
    + ", ".join(f"{c} long" for c in STAT_COLUMNS)
    + ", idx long, path string, error string"
)
_ARROW_SCHEMA = pa.schema(
    [("kind", pa.string())]
    + [(c, pa.string()) for c in EDGE_COLUMNS]
    + [(c, pa.int64()) for c in STAT_COLUMNS]
    + [("idx", pa.int64()), ("path", pa.string()), ("error", pa.string())]
)
_BATCH_ROWS = 10_000
FAILED_FILES_SHOWN = 20  # failed files named in the metrics (all are counted)
FAILED_FILES_IN_ERROR = 3  # ... and in the error of a step that fails
_MAX_PARTITIONS = 10_000


class InputFilesFailed(RuntimeError):
    """More listed WAT files failed than ``max_failed_files`` allows, or none could be read."""

    def __init__(self, message: str, failed: int, listed: int, failed_files: list[dict]) -> None:
        super().__init__(message)
        self.failed, self.listed, self.failed_files = failed, listed, failed_files


def max_failed_files(extras: dict) -> int:
    """The task's ``max_failed_files``: how many listed files may fail (default 0)."""
    value = extras.get("max_failed_files")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"max_failed_files={value!r} ({type(value).__name__}) must be a non-negative int: how many listed WAT "
            "files may fail (unreadable or partial) before the edges step fails; 0 = every file must be read"
        )
    return value


def _batch(n, **columns):
    """A batch of the shared schema: the given columns, nulls elsewhere."""
    data = {name: columns.get(name, [None] * n) for name in _ARROW_SCHEMA.names}
    return pa.RecordBatch.from_pydict(data, schema=_ARROW_SCHEMA)


def _edge_batch(edges):
    return _batch(len(edges), kind=["edge"] * len(edges), **dict(zip(EDGE_COLUMNS, map(list, zip(*edges)))))


def _stats_batch(counts, idx=None, path=None, error=None):
    return _batch(1, kind=["stats"], idx=[idx], path=[path], error=[error],
                  **{name: [int(counts.get(name, 0))] for name in STAT_COLUMNS})


def _describe(exc: BaseException) -> str:
    reason = exc.reason if isinstance(exc, CorruptInputError) else str(exc)  # the path is named beside it
    return f"{type(exc).__name__}: {reason}"[:500]


def extract_edges(node_domains, errors_per_task=FAILED_FILES_SHOWN):
    """The mapInArrow function: (idx, path) in, edge rows and one stats row per file out.
    A task names at most ``errors_per_task`` of its failed files (it counts them all), so
    what the driver collects stays small however many files fail."""
    node_domains = frozenset(node_domains)

    def run(batches):
        named = 0
        for batch in batches:
            for idx, path in zip(batch.column("idx").to_pylist(), batch.column("path").to_pylist()):

                def read(stream):
                    counts = Counter()  # fresh per attempt: a retried file is counted once
                    return list(edges_from_wat(stream, node_domains, counts)), counts

                try:
                    edges, counts = with_retries(path, read)
                except Exception as exc:  # a failed file is counted and named; the driver decides
                    named += 1
                    if named <= errors_per_task:
                        yield _stats_batch(Counter(files_failed=1), idx, path, _describe(exc))
                    else:
                        yield _stats_batch(Counter(files_failed=1))
                    continue
                counts["files_ok"] += 1
                for start in range(0, len(edges), _BATCH_ROWS):
                    yield _edge_batch(edges[start : start + _BATCH_ROWS])
                yield _stats_batch(counts)

    return run


class Edges(CrawlJob):
    step = "edges"
    python_inputs = ("cc",)  # the listing and the WAT files

    def build(self):
        ctx = self.job.context
        allowed = max_failed_files(ctx.extras)  # a bad value fails before any work
        nodes = self.read("nodes")
        domains = {row["registered_domain"] for row in nodes.select("registered_domain").collect()}
        max_files = ctx.extras.get("max_files_per_crawl")
        paths = wat_paths(ctx.input("cc"), self.crawl, int(max_files) if max_files is not None else None)
        self.job.log.info("%d node domains, %d WAT files (max_failed_files=%d)", len(domains), len(paths), allowed)
        if not paths:
            raise ValueError(f"crawl {self.crawl} lists no WAT files")

        tasks = min(len(paths), _MAX_PARTITIONS)
        files = self.spark.createDataFrame(list(enumerate(paths)), "idx long, path string")
        files = files.repartitionByRange(tasks, "idx")
        rows = files.mapInArrow(extract_edges(domains, math.ceil(FAILED_FILES_SHOWN / tasks)), SCHEMA)
        stats = Observation("wat")
        failed_file = F.when(F.col("error").isNotNull(), F.struct("idx", "path", "error"))
        # the failed files as JSON text: Spark 3.5's Observation.get hands a collected list on as
        # a py4j object, not as Python rows
        observed = rows.observe(stats, *[F.sum(c).alias(c) for c in STAT_COLUMNS],
                                F.to_json(F.collect_list(failed_file)).alias("failed_files"))
        edges = observed.where(F.col("kind") == "edge").select(*EDGE_COLUMNS).dropDuplicates(["src_url", "dst_url"])
        totals: dict = {}

        def vet() -> None:  # runs after the edges are staged, before they replace the partition
            got = stats.get
            totals.update({c: int(got.get(c) or 0) for c in STAT_COLUMNS})
            named = sorted(json.loads(got.get("failed_files") or "[]"), key=lambda f: f["idx"])[:FAILED_FILES_SHOWN]
            totals["failed_files"] = [{"path": f["path"], "error": f["error"]} for f in named]
            ok, failed = totals["files_ok"], totals["files_failed"]
            if ok + failed != len(paths):  # every listed file is either read or failed
                raise RuntimeError(f"{ok} WAT files read and {failed} failed, but {len(paths)} are listed")
            if ok == 0 or failed > allowed:
                shown = "; ".join(f"{f['path']}: {f['error']}" for f in totals["failed_files"][:FAILED_FILES_IN_ERROR])
                what = (f"none of the {len(paths)} listed WAT files could be read" if ok == 0 else
                        f"{failed} of the {len(paths)} listed WAT files failed, more than max_failed_files={allowed}")
                raise InputFilesFailed(
                    f"{what}, so the edges partition was not replaced. First failed: {shown}. Fix or re-fetch those "
                    "files, or raise max_failed_files to accept a partition from fewer files",
                    failed, len(paths), totals["failed_files"],
                )

        written = self.write(edges, before_commit=vet)
        first = totals["failed_files"][0] if totals["failed_files"] else None
        first_error = f"{first['path']}: {first['error']}" if first else None
        if first:
            self.job.log.warning("edges of %s / %s written from %d of %d listed WAT files (max_failed_files=%d); "
                                 "failed: %s", self.crawl, self.domain, totals["files_ok"], len(paths), allowed,
                                 ", ".join(f["path"] for f in totals["failed_files"]))
        return {"wat_files": len(paths), **totals, "max_failed_files": allowed, "first_file_error": first_error,
                "node_domains": len(domains), "rows": self.count_written(written)}


if __name__ == "__main__":
    Edges.main()

