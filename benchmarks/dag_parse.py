"""How long the DAG processor spends parsing the bundle, beside a trivial one-task DAG parsed
the same way in the same run, and whether parsing pulled in pyspark or a cloud SDK.

Run: ``.venv/bin/python benchmarks/dag_parse.py``. Each parse runs in a fresh process that has
imported Airflow but nothing of ours (the DAG processor forks a parser per file from a parent
that has Airflow loaded), so our package's import cost is counted every time; best of 5.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="parse-bench-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

TRIVIAL = '''
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
with DAG("trivial", schedule=None, start_date=pendulum.datetime(2024, 1, 1)):
    EmptyOperator(task_id="t")
'''
HEAVY = ("pyspark", "boto3", "botocore", "databricks", "airflow.providers.amazon.aws", "airflow.providers.databricks.hooks")


_CHILD = """
import json, sys, time
from airflow.sdk import DAG  # loaded by the processor's parent before it forks a parser
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:
    from airflow.models.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - start
assert not bag.import_errors, bag.import_errors
print(json.dumps({"seconds": seconds, "heavy": [m for m in %r if m in sys.modules]}))
"""


def parse_seconds(path: Path, repeat: int = 5) -> tuple[float, list[str]]:
    import json
    import subprocess

    best, heavy = float("inf"), []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _CHILD % (HEAVY,), str(path)], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        best, heavy = min(best, result["seconds"]), heavy + result["heavy"]
    return best, sorted(set(heavy))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trivial = Path(tmp) / "trivial.py"
        trivial.write_text(TRIVIAL)
        base, _ = parse_seconds(trivial)
    ours, heavy = parse_seconds(ROOT / "dags")
    print(f"trivial one-task DAG:      {base * 1000:7.1f} ms")
    print(f"dags/ (the bundle):        {ours * 1000:7.1f} ms   ({ours / base:.1f}x the trivial DAG)")
    print(f"heavy modules imported:    {heavy or 'none'}")
    ok = ours < 0.5 and not heavy
    print(f"target: under 500 ms and no pyspark / cloud SDK import: {'met' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
