"""Run the four graph steps for one (crawl, domain) in this process, through the runtime
protocol, and print each step's report as JSON. With SPARK_REMOTE set, every step runs
over Spark Connect, which rejects RDD and SparkContext use.

Usage: run_graph_steps.py CC_ROOT SEEDS_ROOT OUTPUT_ROOT WORK_DIR CRAWL DOMAIN
"""

import importlib
import json
import sys
from pathlib import Path

from airflow_spark_portable.pipes import JobReport, LocalChannel
from airflow_spark_portable.runtime import JobContext, RunIdentity


def main() -> None:
    cc, seeds, out, work, crawl, domain = sys.argv[1:7]
    for step in ("nodes", "edges", "graph", "graph_aggr"):
        module = importlib.import_module(f"jobs.{step}")
        job_cls = next(v for v in vars(module).values() if isinstance(v, type) and getattr(v, "step", None) == step)
        channel = LocalChannel(Path(work) / step)
        channel.write_context(
            JobContext(
                engine="local",
                profile="small",
                run=RunIdentity(dag_id="connect", task_id=step, run_id="r"),
                partition={"crawl": crawl, "domain": domain},
                inputs={"cc": cc, "seeds": seeds},
                output_root=out,
            )
        )
        try:
            job_cls.main(["job.py", *channel.bootstrap_args()])
        finally:
            report = JobReport()
            for message in channel.read_new_messages():
                report.add(message)
            print("REPORT", json.dumps({"step": step, "completed": report.completed, "metrics": report.metrics,
                                        "failure": report.failure}), flush=True)


if __name__ == "__main__":
    main()
