"""What the four graph steps share: their partition, their inputs, their outputs.

Output layout (docs/pipeline.md): ``{output_root}/{step}/crawl={crawl}/domain={domain}/``
as Parquet. Spark's committer writes ``_SUCCESS`` only after every file is in place, so a
partition without ``_SUCCESS`` is incomplete and the next step refuses to read it.

Where Spark writes to the driver's own file system (local engine, ``file:`` URIs), a re-run
writes a hidden staging folder next to the partition and swaps it in with two renames only
when complete, so a failed re-run keeps the previous output and readers never see a mix. On
cluster file systems and object stores (``s3://``, which cannot rename), the partition is
overwritten in place and ``_SUCCESS`` is the completeness signal.

Two runs of one (crawl, domain) into one output root would read each other's half-swapped
partitions, or build one run's graph from the other's nodes: every step holds the pair's
lease (``{output_root}/_leases/``, an flock on the driver's file system) while it runs, and a
step that finds it held fails at once, naming the holder. Under the lease, the first step
(nodes) records its run as the pair's owner, and every later step checks that its own run
still owns the pair, so a run whose partitions another run rewrote between two of its steps
fails instead of finishing green on a mix.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from airflow_spark_portable.runtime import Job, SparkJob
from jobs.common.inputs import require_client

CRAWL_ID = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
STEPS = ("nodes", "edges", "graph", "graph_aggr")


class CrawlJob(SparkJob):
    step: str = ""
    # inputs this step reads with Python clients (jobs.common.inputs), on the driver and the
    # executors, rather than through Spark's file systems
    python_inputs: tuple[str, ...] = ()

    def run(self, job: Job) -> dict[str, Any]:
        ctx = job.context
        crawl, domain = ctx.crawl, ctx.domain
        if not crawl or not CRAWL_ID.match(crawl):
            raise ValueError(f"crawl={crawl!r} is not a Common Crawl id like 'CC-MAIN-2024-10'")
        if not domain or "/" in domain or domain.startswith("."):
            raise ValueError(f"domain={domain!r} must name a research domain (a seed list file name)")
        for name in self.python_inputs:  # a missing client (boto3) fails here, before any Spark work
            if ctx.inputs.get(name):
                require_client(ctx.inputs[name])
        self.job, self.spark, self.crawl, self.domain = job, job.spark, crawl, domain
        self.output_root = ctx.require_output_root().rstrip("/")
        with self.lease():
            metrics = self.build()
        return {"step": self.step, "crawl": crawl, "domain": domain, **metrics}

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Hold this (crawl, domain)'s lease in the output root while the step reads and writes."""
        folder = _local_folder(f"{self.output_root}/_leases/crawl={self.crawl}", self.spark.conf.get("spark.master", ""))
        if folder is None:  # object stores have no lock to take (see docs/pipeline.md)
            yield
            return
        run = self.job.context.run
        holder = (
            f"{run.dag_id}.{run.task_id} (map index {run.map_index}) of run {run.run_id}, try {run.try_number}: "
            f"pid {os.getpid()} on {socket.gethostname()} since {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
        )
        with partition_lease(os.path.join(folder, f"domain={self.domain}.lock"), holder) as taken:
            if taken is not None:
                raise PartitionBusyError(
                    f"crawl {self.crawl} / domain {self.domain} in {self.output_root} is in use by {taken}: two runs "
                    "are processing this pair into one output root at once. Let that run finish (or stop it), or "
                    "give this run its own output_root"
                )
            self._check_owner(os.path.join(folder, f"domain={self.domain}.owner"))
            yield

    def _check_owner(self, path: str) -> None:
        """The first step claims the pair for its run; a later step of another run than the
        claimant's would build on partitions this run did not write (called under the lease)."""
        run = self.job.context.run
        me = {"dag_id": run.dag_id, "run_id": run.run_id}
        try:
            with open(path, encoding="utf-8") as fh:
                owner = json.load(fh)
        except (OSError, ValueError):
            owner = None  # no claim yet (or an unreadable one): this run takes the pair
        if self.step != STEPS[0] and owner is not None and {k: owner.get(k) for k in me} != me:
            raise PartitionBusyError(
                f"crawl {self.crawl} / domain {self.domain} in {self.output_root} was taken over by run "
                f"{owner.get('run_id')} of {owner.get('dag_id')} (its {STEPS[0]} step, {owner.get('since')}) after "
                f"this run's own {STEPS[0]} step: this {self.step} step would mix the two runs' data. Re-run this pair "
                f"from its {STEPS[0]} step, or give concurrent runs their own output_root"
            )
        if owner is None or self.step == STEPS[0]:
            tmp = f"{path}.{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({**me, "since": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"}, fh)
            os.replace(tmp, path)

    def build(self) -> dict[str, Any]:
        raise NotImplementedError

    def partition_path(self, step: str) -> str:
        return f"{self.output_root}/{step}/crawl={self.crawl}/domain={self.domain}"

    def write(self, df, before_commit: Callable[[], None] | None = None) -> str:
        """Write ``df`` as this step's partition. It is written to a hidden staging folder
        first; ``before_commit`` may then veto (raise) and the old partition stays."""
        final = self.partition_path(self.step)
        parent, leaf = final.rsplit("/", 1)
        local = _local_folder(final, self.spark.conf.get("spark.master", ""))
        if local is None:  # cluster file system / object store: no rename, so copy when vetted
            staging = f"{parent}/.{leaf}.staging"
            df.write.mode("overwrite").parquet(staging)
            if before_commit:
                before_commit()
            self.spark.read.parquet(staging).write.mode("overwrite").parquet(final)
            return final
        parent = os.path.dirname(local)
        os.makedirs(parent, exist_ok=True)
        for stale in os.listdir(parent):  # left by killed runs; hidden from Spark readers
            if stale.startswith((f".{leaf}.staging-", f".{leaf}.old-")):
                shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
        token = uuid.uuid4().hex[:12]
        staging = os.path.join(parent, f".{leaf}.staging-{token}")
        df.write.mode("overwrite").parquet(staging)
        try:
            if before_commit:
                before_commit()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if os.path.exists(local):  # two renames: readers see the old or the new, never a mix
            old = os.path.join(parent, f".{leaf}.old-{token}")
            os.rename(local, old)
            os.rename(staging, local)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, local)
        return final

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


class PartitionBusyError(RuntimeError):
    """Another step holds the (crawl, domain) lease of this output root."""


@contextlib.contextmanager
def partition_lease(path: str, holder: str) -> Iterator[str | None]:
    """Take the flock at ``path`` without waiting, writing ``holder`` into it; yield None
    when taken, else what the holder wrote. The lock dies with its process (kill -9 too)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            yield os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode("utf-8"), 0)
        try:
            yield None
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _local_folder(uri: str, master: str) -> str | None:
    """The driver's own path of ``uri`` when Spark writes to the driver's file system (a
    ``file:`` URI, or a plain path under a local master), else None. A plain path on a
    cluster means the cluster's default file system (HDFS, DBFS), which the driver cannot
    rename in."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return parts.path
    if parts.scheme == "" and master.startswith("local"):
        return os.path.abspath(uri)
    return None
