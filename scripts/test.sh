#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, in two interpreters:
#   1. the main suite: .venv (Python 3.11/3.12, Spark 4, Airflow), tests/ (tests/cluster included).
#      Extra arguments go to this pytest.
#   2. the job side on what EMR 7.x runs: .cluster/venv (Python 3.9, Spark 3.5.2, no Airflow),
#      tests/cluster (scripts/cluster_env.sh makes .cluster/; Python 3.9 must be installed).
# Both always run; the script fails if either does.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/cluster_env.sh
# PostgreSQL and Redis for the compose stack's test; without them tests/test_stack.py fails
# saying so, and the rest still runs
./scripts/services.sh || echo "scripts/services.sh failed: tests/test_stack.py will fail" >&2

main=0
# the slowest tests in every log: where the CI time goes (budget: 40 min)
.venv/bin/python -m pytest --durations=30 "$@" || main=$?
echo "== the job side on Python 3.9 + Spark 3.5, as on EMR 7.x: tests/cluster in .cluster/venv" >&2
cluster=0
.cluster/venv/bin/python -m pytest tests/cluster || cluster=$?

if [ "$main" -ne 0 ] || [ "$cluster" -ne 0 ]; then
  echo "FAILED: main suite exit code $main, Python 3.9 suite (tests/cluster) exit code $cluster" >&2
  [ "$main" -ne 0 ] && exit "$main"
  exit "$cluster"
fi
