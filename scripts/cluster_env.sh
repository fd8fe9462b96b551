#!/usr/bin/env bash
# What EMR 7.x runs the job side on, made here: Python 3.9 and Spark 3.5 (EMR 7.5.0 ships
# Spark 3.5.2; its python3 is 3.9). Creates, under .cluster/ (git-ignored):
#   node/   a bare Python 3.9 venv: the cluster's /usr/bin/python3 (pip, nothing else: no boto3)
#   spark/  pyspark 3.5.2 + py4j (pip --target): SPARK_HOME=.cluster/spark/pyspark, and the
#           folder to put on the Python path for pyspark (EMR's /usr/lib/spark/python)
#   venv/   Python 3.9 with pyspark 3.5.2, the jobs' requirements and the test tools, for the
#           cluster-side tests (tests/cluster: .cluster/venv/bin/python -m pytest tests/cluster)
# All pinned by constraints/cluster-py3.9.txt. `cluster_env.sh node` builds node/ and spark/
# only. Re-running is cheap: nothing happens if nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

py39=${PYTHON39:-}
if [ -z "$py39" ]; then
  for candidate in python3.9 "$HOME/.pyenv/versions/3.9.18/bin/python3.9"; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 9)' >/dev/null 2>&1; then
      py39=$candidate; break
    fi
  done
fi
if [ -z "$py39" ]; then
  echo "No Python 3.9 found (EMR 7.x's python3): install one (pyenv install 3.9.18) or set PYTHON39=/path/to/python3.9" >&2
  exit 1
fi

constraints=constraints/cluster-py3.9.txt
pip=(--quiet --disable-pip-version-check --constraint "$constraints")
mkdir -p .cluster
# one build at a time (test runs and the EMR test harness call this concurrently)
exec 9>.cluster/.build.lock
flock 9

node_stamp=".cluster/.node-$(cat "$0" "$constraints" | sha256sum | cut -c1-16)"
if [ ! -f "$node_stamp" ]; then
  echo "Building .cluster/node and .cluster/spark (Python 3.9 + Spark 3.5, as on EMR 7.x)..." >&2
  rm -rf .cluster/node .cluster/spark .cluster/.node-*
  "$py39" -m venv .cluster/node
  "$py39" -m pip install "${pip[@]}" --no-deps --target .cluster/spark pyspark py4j
  touch "$node_stamp"
fi
[ "${1:-}" = node ] && exit 0

venv_stamp=".cluster/.venv-$(cat "$0" "$constraints" jobs/requirements.txt | sha256sum | cut -c1-16)"
if [ ! -f "$venv_stamp" ]; then
  echo "Building .cluster/venv (Python 3.9: the cluster-side tests)..." >&2
  rm -rf .cluster/venv .cluster/.venv-*
  "$py39" -m venv .cluster/venv
  .cluster/venv/bin/python -m pip install "${pip[@]}" pyspark -r jobs/requirements.txt boto3 'moto[s3,server]' \
    pytest pytest-timeout psutil
  touch "$venv_stamp"
fi
