# Source me: a self-contained Airflow for this checkout (metadata DB and logs under var/).
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$_root/var/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$_root/dags}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export PATH="$_root/.venv/bin:$PATH"
unset _root
