"""Deployment artefacts: the compose stack and its Dockerfile (validated without a Docker
engine), the compatibility proof for the newest Airflow (scripts/compat_check.sh). The MWAA
bundle: tests/test_mwaa_install.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def _compose() -> dict:
    """docker-compose.yaml as `docker compose config` reads it: YAML merge keys resolved and
    ${VAR:-default} interpolated (from an empty environment, as on a fresh checkout)."""
    import re

    import yaml

    def interpolate(value):
        if isinstance(value, str):
            return re.sub(r"\$\{([A-Za-z_]\w*)(?::-([^}]*))?\}", lambda m: m.group(2) or "", value)
        if isinstance(value, dict):
            return {k: interpolate(v) for k, v in value.items()}
        if isinstance(value, list):
            return [interpolate(v) for v in value]
        return value

    return interpolate(yaml.safe_load((ROOT / "docker-compose.yaml").read_text()))


def test_the_compose_file_is_a_valid_compose_spec_and_runs_the_dag_unedited():
    import json

    import compose_spec

    data = _compose()
    # the compose spec's own validator (Rust, strict about keys, types and durations)
    validated = compose_spec.PyCompose.from_json(json.dumps(data))
    assert set(validated.service_names()) == {
        "postgres",
        "redis",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    }
    broken = json.loads(json.dumps(data))
    broken["services"]["airflow-worker"]["commnd"] = "celery worker"  # a typo must not pass
    with pytest.raises(Exception, match="commnd"):
        compose_spec.PyCompose.from_json(json.dumps(broken))

    worker = data["services"]["airflow-worker"]
    assert worker["build"] == "." and worker["command"] == "celery worker"
    mounts = {volume.split(":")[1] for volume in worker["volumes"]}
    assert {
        "/opt/airflow/dags",
        "/opt/airflow/jobs",
        "/opt/airflow/profiles.yaml",
        "/opt/airflow/sample_data",
    } <= mounts
    env = worker["environment"]
    assert env["AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT"] == "/opt/airflow"
    assert env["AIRFLOW_CONN_DATABRICKS_DEFAULT"] == "" and env["AIRFLOW_CONN_AWS_DEFAULT"] == ""  # from .env only
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in json.dumps(data)


def test_the_dockerfile_lints_clean_and_installs_the_wheel_with_java():
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "pip wheel" in text and "airflow_spark_portable-*.whl" in text and "[local,amazon,databricks]" in text
    assert "openjdk-17-jre-headless" in text


def test_the_env_example_holds_no_secrets_and_env_is_ignored():
    example = (ROOT / ".env.example").read_text()
    assert "AIRFLOW_CONN_DATABRICKS_DEFAULT=\n" in example and "AIRFLOW_CONN_AWS_DEFAULT=\n" in example
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0


def test_the_built_wheel_works_with_the_newest_airflow_and_providers():
    # a clean virtualenv with the newest 3.x pins; the oldest end is MWAA's images: test_mwaa_install.py
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "compat_check.sh"), "newest"], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    found = json.loads(line.removeprefix("RESULT "))
    assert found["airflow"] == "3.3.2" and found["import_errors"] == {}
    assert {"common_crawl_graph", "example_spark_portable"} <= set(found["dag_ids"])
    assert found["engines"] == {"emr": "EmrEngine", "databricks": "DatabricksEngine"}
