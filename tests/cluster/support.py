"""Paths and helpers of the job-side tests (no Airflow, no pytest fixtures)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# made by scripts/cluster_env.sh: EMR 7.x's python3 (a bare 3.9, no boto3) and its Spark 3.5
CLUSTER = ROOT / ".cluster"
NODE_PYTHON = CLUSTER / "node" / "bin" / "python3"
SPARK_PATH = CLUSTER / "spark"  # pyspark + py4j, as EMR's /usr/lib/spark/python
SPARK_HOME = SPARK_PATH / "pyspark"

ON_EMR_PYTHON = sys.version_info[:2] == (3, 9)  # this run is the Python 3.9 + Spark 3.5 one


def spark_version() -> tuple[int, int]:
    import pyspark

    major, minor = pyspark.__version__.split(".")[:2]
    return int(major), int(minor)


def node_env(**extra: str) -> dict[str, str]:
    """The environment of a spark-submit on the cluster node: its python3 for the driver and
    the executors, its Spark, this checkout on the Python path (the code bundle)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_PORTABLE_", "PYSPARK_", "SPARK_"))}
    env.pop("PYTHONPATH", None)
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        PYSPARK_PYTHON=str(NODE_PYTHON),
        PYSPARK_DRIVER_PYTHON=str(NODE_PYTHON),
        PYTHONPATH=os.pathsep.join([str(SPARK_PATH), str(ROOT)]),
        **extra,
    )
    return env


def spark_submit(job: Path, *args: str) -> list[str]:
    return [str(SPARK_HOME / "bin" / "spark-submit"), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
            str(job), *args]
