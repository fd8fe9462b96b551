"""The fast local loop: ``airflow dags test common_crawl_graph`` (the full sample, 2 crawls x
2 domains = 16 Spark tasks) on the local engine, side by side in one run:

1. ``submit``: the naive mode, one cold ``spark-submit`` (a new JVM) per task;
2. ``connect``, cold: the warm-server mode when no server is running yet (this run starts it);
3. ``connect``, warm: the same again, reusing the server the previous run left up (what a
   developer re-running the DAG gets for ``local_connect_idle_timeout`` seconds).

Every run must succeed, and the four outputs of every pair must hold the same rows in all
three runs. Prints wall times (the whole ``airflow dags test`` command, Airflow's own start
included) and the speed-up over the naive mode.

Run: ``.venv/bin/python benchmarks/local_loop.py`` (about 8 minutes here; ``--runs N``
repeats the connect runs and keeps the best).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
STEPS = ("nodes", "edges", "graph", "graph_aggr")


def dags_test(env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(
            [AIRFLOW, "dags", "test", "common_crawl_graph"], env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    seconds = time.perf_counter() - start
    text = log.read_text(errors="replace")
    if "state=success" not in text:  # `airflow dags test` may exit 0 for a failed run
        sys.exit(f"the run did not succeed; see {log}")
    return seconds


def outputs(root: Path) -> dict[str, list[str]]:
    """Every step's rows, per partition, sorted: what two runs must agree on."""
    import pyarrow.parquet as pq

    found = {}
    for success in sorted(root.glob("*/crawl=*/domain=*/_SUCCESS")):
        table = pq.read_table(success.parent)
        rows = (json.dumps(row, sort_keys=True, default=str) for row in table.to_pylist())
        found[str(success.parent.relative_to(root))] = sorted(rows)
    if len(found) != 16:
        sys.exit(f"expected 16 partitions (4 steps x 2 crawls x 2 domains) under {root}, found {len(found)}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="connect-mode runs of each kind; the best is kept")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="local-loop-") as tmp:
        tmp = Path(tmp)
        base = {
            **os.environ,
            "AIRFLOW_HOME": str(tmp / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT": str(ROOT),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        subprocess.run([AIRFLOW, "db", "migrate"], env=base, capture_output=True, check=True)

        def env(mode: str, work: str, out: str) -> dict[str, str]:
            return {
                **base,
                "AIRFLOW__SPARK_PORTABLE__LOCAL_MODE": mode,
                "AIRFLOW__SPARK_PORTABLE__WORK_DIR": str(tmp / work),
                "CC_GRAPH_OUTPUT_ROOT": str(tmp / out),
            }

        from airflow_spark_portable.engines.local_connect import ConnectServers

        print("running the sample DAG: naive spark-submit per task ...", flush=True)
        naive = dags_test(env("submit", "work-submit", "out-submit"), tmp / "submit.log")
        cold, warm = [], []
        for i in range(args.runs):
            work = f"work-connect-{i}"
            servers = ConnectServers(tmp / work / "connect", 0)
            try:
                print(f"running the sample DAG: connect mode, cold server (run {i + 1}) ...", flush=True)
                cold.append(dags_test(env("connect", work, f"out-cold-{i}"), tmp / f"cold-{i}.log"))
                print(f"running the sample DAG: connect mode, warm server (run {i + 1}) ...", flush=True)
                warm.append(dags_test(env("connect", work, f"out-warm-{i}"), tmp / f"warm-{i}.log"))
            finally:
                servers.stop_all()

        expected = outputs(tmp / "out-submit")
        for i in range(args.runs):
            for kind in ("cold", "warm"):
                if outputs(tmp / f"out-{kind}-{i}") != expected:
                    sys.exit(f"connect mode ({kind}, run {i + 1}) wrote different rows than spark-submit")

    best_cold, best_warm = min(cold), min(warm)
    print()
    print("airflow dags test common_crawl_graph: 16 Spark tasks, 2 crawls x 2 domains, 2 cores")
    print(f"  {'mode':<36}{'wall s':>8}{'speed-up':>10}")
    print(f"  {'submit: one spark-submit per task':<36}{naive:>8.1f}{1.0:>9.1f}x")
    print(f"  {'connect, cold (starts the server)':<36}{best_cold:>8.1f}{naive / best_cold:>9.1f}x")
    print(f"  {'connect, warm (server already up)':<36}{best_warm:>8.1f}{naive / best_warm:>9.1f}x")
    print("  outputs: identical rows in every partition of all runs")


if __name__ == "__main__":
    main()
