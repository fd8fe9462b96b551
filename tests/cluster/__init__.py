"""The job-side tests: what runs on a cluster (airflow_spark_portable.runtime and jobs/).

They import no Airflow, so they run twice: in the main suite (Python 3.11+, Spark 4) and as
``.cluster/venv/bin/python -m pytest tests/cluster`` on Python 3.9 + Spark 3.5, what EMR 7.x
runs (.cluster/ is made by scripts/cluster_env.sh; scripts/test.sh runs both). A package, so
that its conftest is not a second top-level ``conftest`` module beside tests/conftest.py.
"""
