#!/usr/bin/env bash
# Set up (if needed) and run the sample pipeline (common_crawl_graph, or the DAG id given)
# through Airflow's own `airflow dags test`, then judge it by the run's state in the metadata DB.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
source scripts/env.sh
airflow db migrate >/dev/null
dag_id=${1:-common_crawl_graph}
log="$AIRFLOW_HOME/demo-$dag_id.log"
status=0
airflow dags test "$dag_id" 2>&1 | tee "$log" || status=$?
# The newest run of the DAG, as Airflow recorded it (a failed step fails the run: check_run).
state=$(airflow dags list-runs "$dag_id" --output json 2>/dev/null | python -c '
import json, sys
for line in reversed(sys.stdin.read().splitlines()):  # Airflow 3.0 prints log lines first
    try:
        runs = json.loads(line)
    except ValueError:
        continue
    runs.sort(key=lambda r: r.get("start_date") or "")
    print(runs[-1]["state"] if runs else "none")
    break
else:
    print("unknown")
')
if [ "$status" -ne 0 ] || [ "$state" != "success" ]; then
  echo "demo run of $dag_id did not succeed: run state $state, exit code $status (log: $log)" >&2
  exit 1
fi
echo "demo run of $dag_id succeeded (run state: $state)"
