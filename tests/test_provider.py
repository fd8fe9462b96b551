"""The package as Airflow sees it: registered provider, config section, cheap imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import AIRFLOW_BIN, ROOT, cli_json, cli_value


def _airflow(*args: str) -> str:
    return subprocess.run([AIRFLOW_BIN, *args], capture_output=True, text=True, check=True, timeout=120).stdout


def test_airflow_lists_the_provider():
    providers = cli_json(_airflow("providers", "list", "--output", "json"))
    ours = [p for p in providers if p["package_name"] == "airflow-spark-portable"]
    assert len(ours) == 1 and ours[0]["version"]


def test_config_section_has_documented_defaults():
    assert cli_value(_airflow("config", "get-value", "spark_portable", "default_profile")) == "small"


def test_importing_the_operator_pulls_in_no_spark_or_cloud_sdk():
    # The DAG processor imports the operator for every parse: it must stay light.
    code = (
        "import sys, airflow_spark_portable.operators.spark_portable\n"
        "heavy = [m for m in ('pyspark', 'boto3', 'botocore', 'databricks', 'airflow.providers.amazon.aws',"
        " 'airflow.providers.databricks.hooks') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_local_extra_installs_what_the_jobs_need():
    import configparser

    from packaging.requirements import Requirement

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    local = {Requirement(line).name for line in cfg["options.extras_require"]["local"].splitlines() if line.strip() and not line.strip().startswith("#")}
    jobs = {
        Requirement(line).name
        for line in (ROOT / "jobs" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert jobs <= local, f"add {sorted(jobs - local)} to the [local] extra in setup.cfg"


def test_the_extra_links_are_registered_and_serialised_with_their_xcom_keys():
    from airflow_spark_portable.links import SparkLogsLink, SparkRunLink
    from airflow_spark_portable.operators.spark_portable import SparkPortableOperator
    from airflow_spark_portable.provider_info import get_provider_info

    assert get_provider_info()["extra-links"] == [
        "airflow_spark_portable.links.SparkRunLink",
        "airflow_spark_portable.links.SparkLogsLink",
    ]
    op = SparkPortableOperator(task_id="t", application="jobs/nodes.py")
    # what Airflow serialises and the UI reads: link name -> the XCom key holding the URL
    assert {link.name: link.xcom_key for link in op.operator_extra_links} == {
        "Spark run": "spark_portable_run_url",
        "Spark logs": "spark_portable_logs_url",
    }
    assert SparkRunLink().xcom_key == "spark_portable_run_url" and SparkLogsLink().kind == "logs"


def test_provider_info_is_valid_and_declares_the_trigger_and_integer_options():
    import json

    import airflow
    import jsonschema

    from airflow_spark_portable.provider_info import get_provider_info

    info = get_provider_info()
    jsonschema.validate(info, json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text()))
    assert info["triggers"] == [{"integration-name": "Spark Portable", "python-modules": ["airflow_spark_portable.triggers"]}]
    assert {i["integration-name"] for i in info["integrations"]} == {"Spark Portable"}
    options = info["config"]["spark_portable"]["options"]
    assert options["local_connect_idle_timeout"] == {**options["local_connect_idle_timeout"], "type": "integer", "default": "600"}
    assert options["local_max_parallel"]["type"] == "integer" and options["local_max_parallel"]["default"] is None
