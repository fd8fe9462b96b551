#!/usr/bin/env bash
# Compatibility proof: build the provider wheel, install it into a clean virtualenv beside a
# given Airflow and the provider versions Amazon MWAA pins for it, import it and parse the
# DAG bundle (the MWAA layout from scripts/mwaa_bundle.py). Run by .ci/run for both ends of
# the supported range:
#   scripts/compat_check.sh mwaa-3.0.6   # Airflow 3.0.6, amazon 9.12.0, databricks 7.7.1 (MWAA's 3.0.6 image)
#   scripts/compat_check.sh newest       # the newest 3.x and providers, as pinned in constraints/
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: compat_check.sh mwaa-3.0.6|newest}
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

case "$target" in
  mwaa-3.0.6)
    # Airflow 3.0.6 breaks with newer cadwyn/fastapi/starlette/pydantic releases (its own
    # constraint file pins these); the providers are the versions MWAA's 3.0.6 image has.
    pins=(apache-airflow==3.0.6 apache-airflow-providers-amazon==9.12.0 apache-airflow-providers-databricks==7.7.1
          cadwyn==5.4.4 fastapi==0.116.1 starlette==0.47.2 pydantic==2.11.7)
    constraint=() ;;
  newest)
    pins=()
    constraint=(--constraint "constraints/py$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")').txt") ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac

"$python" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip --quiet --disable-pip-version-check)
"${pip[@]}" install uv
.venv/bin/python scripts/mwaa_bundle.py --out "$work/mwaa" >/dev/null
"$python" -m zipfile -e "$work/mwaa/plugins.zip" "$work/plugins"
wheel=$(ls "$work"/plugins/airflow_spark_portable-*.whl)
echo "compat $target: installing $(basename "$wheel") with ${pins[*]:-the newest pins}"
"$work/venv/bin/uv" pip install --quiet --python "$work/venv/bin/python" "${constraint[@]}" "${pins[@]}" "$wheel[amazon,databricks]"

export AIRFLOW_HOME="$work/airflow" AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGS_FOLDER="$work/mwaa/dags"
"$work/venv/bin/python" - "$work/mwaa/dags" <<'PY'
import sys
from importlib.metadata import version

import airflow
from airflow.providers_manager import ProvidersManager

try:
    from airflow.dag_processing.dagbag import DagBag  # Airflow >= 3.1
except ImportError:
    from airflow.models.dagbag import DagBag

from airflow_spark_portable.operators.spark_portable import SparkPortableOperator  # noqa: F401

providers = ProvidersManager().providers
assert "airflow-spark-portable" in providers, sorted(providers)
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
assert {"common_crawl_graph", "example_spark_portable"} <= set(bag.dag_ids), bag.dag_ids
engines = {}
for name in ("emr", "databricks"):  # the engine modules import against these provider versions
    from airflow_spark_portable.engines import get_engine_class

    engines[name] = get_engine_class(name).__name__
from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger  # noqa: F401
from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger  # noqa: F401

print(
    f"OK: Airflow {airflow.__version__}, amazon {version('apache-airflow-providers-amazon')}, "
    f"databricks {version('apache-airflow-providers-databricks')}, provider {version('airflow-spark-portable')}; "
    f"parsed {sorted(bag.dag_ids)}; engines {engines}"
)
PY
