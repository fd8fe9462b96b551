"""Run graph steps in this process through the runtime protocol (context in, messages out),
as the local engine would, minus spark-submit. Used by the tests in-process, and as a script
to run all four steps for one (crawl, domain) in a fresh process; with SPARK_REMOTE set, every
step runs over Spark Connect, which rejects RDD and SparkContext use.

Usage: run_graph_steps.py CC_ROOT SEEDS_ROOT OUTPUT_ROOT WORK_DIR CRAWL DOMAIN
"""

import importlib
import json
import sys
from pathlib import Path

from airflow_spark_portable.pipes import JobReport, LocalChannel
from airflow_spark_portable.runtime import JobContext, RunIdentity

STEPS = ("nodes", "edges", "graph", "graph_aggr")


def run_step(step, crawl, domain, cc, seeds, out, work, max_files=None, extras=None, run_id="r"):
    """Run jobs/<step>.py's job class; return (JobReport, the exception it raised or None)."""
    module = importlib.import_module(f"jobs.{step}")
    job_cls = next(v for v in vars(module).values() if isinstance(v, type) and getattr(v, "step", None) == step)
    channel = LocalChannel(Path(work) / f"pipes-{step}-{crawl}-{domain}")
    channel.write_context(
        JobContext(
            engine="local",
            profile="small",
            run=RunIdentity(dag_id="test", task_id=step, run_id=run_id),
            partition={"crawl": crawl, "domain": domain},
            inputs={"cc": str(cc), "seeds": str(seeds)},
            output_root=str(out),
            extras={"max_files_per_crawl": max_files, **(extras or {})},
        )
    )
    error = None
    try:
        job_cls.main(["job.py", *channel.bootstrap_args()])
    except Exception as exc:  # the runtime reports, then re-raises
        error = exc
    report = JobReport()
    for message in channel.read_new_messages():
        report.add(message)
    return report, error


def main() -> None:
    cc, seeds, out, work, crawl, domain = sys.argv[1:7]
    for step in STEPS:
        report, error = run_step(step, crawl, domain, cc, seeds, out, work)
        print("REPORT", json.dumps({"step": step, "completed": report.completed, "metrics": report.metrics,
                                    "failure": report.failure}), flush=True)
        if error is not None:
            sys.exit(1)


if __name__ == "__main__":
    main()
