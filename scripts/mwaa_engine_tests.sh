#!/usr/bin/env bash
# The EMR and Databricks engine tests on the Airflow and provider versions of an MWAA image:
#   scripts/mwaa_engine_tests.sh 3.0.6 [pytest args]
# A Python 3.12 virtualenv (.cache/mwaa/engine-tests-<version>) gets the image's packages under
# MWAA's constraint files (deploy/mwaa/<version>/), the databricks provider at MWAA's pin, this
# checkout (editable, no dependencies) and the test tools. Two deviations, both test-side only:
# moto 5.2.5 (the image's constraints pin an older moto, whose S3 lacks conditional writes, which
# real S3 has; with it py-partiql-parser), and no pyspark[connect] (those constraints cannot install it), so the serverless
# runs of the Databricks fake are left out. About 8 minutes; not part of the CI run.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: mwaa_engine_tests.sh <MWAA Airflow version> [pytest args]}; shift
data=deploy/mwaa/$version
[ -d "$data" ] || { echo "no MWAA image data for $version in deploy/mwaa/" >&2; exit 2; }
python=$(.venv/bin/python -c 'import sys; sys.path.insert(0, "scripts"); import mwaa_bundle; print(mwaa_bundle.python312())')
venv=.cache/mwaa/engine-tests-$version
pins=(--constraint "$data/mwaa_essential_constraints.txt" -c "$data/airflow_constraints.txt")
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
  pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)
  "${pip[@]}" install --upgrade pip
  "${pip[@]}" install "${pins[@]}" -r "$data/image_packages.txt"
  databricks=$(grep '^apache-airflow-providers-databricks==' "$data/airflow_constraints.txt")
  "${pip[@]}" install "${pins[@]}" "$databricks" pytest pytest-timeout databricks-sdk pyspark psutil orjson \
    publicsuffixlist pyyaml jsonschema "pandas<3"
  "${pip[@]}" install "moto[server]==5.2.5"
  "${pip[@]}" install --no-deps -e .
  # the test tools must not have moved the image's own pins (boto3, botocore, Airflow, providers)
  "$venv/bin/python" - "$data/airflow_constraints.txt" "$data/mwaa_essential_constraints.txt" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
moved = []
for path in sys.argv[1:]:
    for line in open(path):
        name, sep, pin = line.strip().partition("==")
        if not sep or name in ("moto", "py-partiql-parser") or line.startswith("#"):  # the test-side moto
            continue
        try:
            found = version(name)
        except PackageNotFoundError:
            continue
        if found != pin:
            moved.append(f"{name} {found} (MWAA pins {pin})")
if moved:
    sys.exit("the test venv no longer has MWAA's pins: " + ", ".join(moved))
PY
  touch "$venv/.complete"
fi
[ -d .cluster/node ] || bash scripts/cluster_env.sh node
exec "$venv/bin/python" -m pytest -q tests/test_emr_engine.py tests/test_databricks_engine.py \
  tests/test_databricks_workspace.py tests/test_databricks_rest.py tests/test_waiting.py \
  -k "not goes_through_spark_connect" -p no:cacheprovider "$@"
