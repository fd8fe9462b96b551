"""Deployment artefacts: the MWAA bundle (scripts/mwaa_bundle.py), the compose stack and its
Dockerfile (validated without a Docker engine), the compatibility proof (scripts/compat_check.sh)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

import airflow_spark_portable


def test_the_mwaa_bundle_installs_offline_and_its_dags_parse(tmp_path):
    out = tmp_path / "mwaa"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "mwaa_bundle.py"), "--out", str(out)], check=True)
    version = airflow_spark_portable.__version__

    lines = [line for line in (out / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert lines == [
        '--constraint "https://raw.githubusercontent.com/apache/airflow/constraints-3.0.6/constraints-3.12.txt"',
        "--no-index",
        "--find-links /usr/local/airflow/plugins",
        f"airflow-spark-portable=={version}",
    ]

    with zipfile.ZipFile(out / "plugins.zip") as archive:
        names = archive.namelist()
        assert names == [f"airflow_spark_portable-{version}-py3-none-any.whl"]  # top level: the find-links folder
        archive.extractall(tmp_path / "plugins")
    # what MWAA's pip does with requirements.txt, minus the packages its image already has
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(tmp_path / "plugins"),
            "--no-deps",
            "--target",
            str(target),
            f"airflow-spark-portable=={version}",
        ],
        check=True,
    )
    assert (target / "airflow_spark_portable" / "prices" / "aws.yaml").is_file()
    entry_points = next(target.glob("airflow_spark_portable-*.dist-info")) / "entry_points.txt"
    assert "apache_airflow_provider" in entry_points.read_text()
    assert not (target / "tests").exists() and not (target / "jobs").exists()  # the wheel is the provider only

    project = out / "dags" / "spark_portable"
    assert (project / "profiles.yaml").is_file() and (project / "jobs" / "nodes.py").is_file()
    assert "jobs/" in (project / ".airflowignore").read_text()
    code = (
        "import sys\n"
        "try:\n    from airflow.dag_processing.dagbag import DagBag\n"
        "except ImportError:\n    from airflow.models.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(out / 'dags')!r})\n"
        "print(sorted(bag.dag_ids), dict(bag.import_errors))\n"
    )
    parsed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert parsed.stdout.strip().splitlines()[-1] == "['common_crawl_graph', 'example_spark_portable'] {}"


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


@pytest.mark.parametrize("target", ["mwaa-3.0.6", "newest"])
def test_the_built_wheel_works_beside_both_ends_of_the_supported_airflow_range(target):
    # a clean virtualenv each: Airflow 3.0.6 with the providers MWAA pins for it, and the newest 3.x
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "compat_check.sh"), target], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (ok,) = [line for line in result.stdout.splitlines() if line.startswith("OK: ")]
    expected = "Airflow 3.0.6, amazon 9.12.0, databricks 7.7.1" if target == "mwaa-3.0.6" else "Airflow 3.3.2"
    assert expected in ok and "parsed ['common_crawl_graph', 'example_spark_portable']" in ok
