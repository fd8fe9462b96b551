#!/usr/bin/env bash
# Compatibility proof for the newest end of the supported range: build the provider wheel,
# install it into a clean virtualenv with the newest Airflow 3.x and providers (as pinned in
# constraints/), and check it there (scripts/check_install.py: registered, the DAG bundle
# parses, both engines and their triggers import). The oldest end is MWAA's own images,
# installed as MWAA installs them: tests/test_mwaa_install.py.
#   scripts/compat_check.sh newest
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: compat_check.sh newest}
[ "$target" = newest ] || { echo "unknown target $target (the MWAA versions: tests/test_mwaa_install.py)" >&2; exit 2; }
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

constraint="constraints/py$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")').txt"
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --quiet --disable-pip-version-check)
"${pip[@]}" install uv
.venv/bin/python -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/wheel" .
wheel=$(ls "$work"/wheel/airflow_spark_portable-*.whl)
echo "compat $target: installing $(basename "$wheel") with $constraint"
"$work/venv/bin/uv" pip install --quiet --python "$work/venv/bin/python" --constraint "$constraint" "$wheel[amazon,databricks]"

export AIRFLOW_HOME="$work/airflow" AIRFLOW__CORE__LOAD_EXAMPLES=False
"$work/venv/bin/python" scripts/check_install.py "$PWD/dags"
