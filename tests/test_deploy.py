"""Deployment artefacts: the compose stack and its Dockerfile (validated without a Docker
engine), the compatibility proof for the newest Airflow (scripts/compat_check.sh). The MWAA
bundle: tests/test_mwaa_install.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


sys.path.insert(0, str(ROOT / "scripts"))
import stack as native  # noqa: E402  (scripts/stack.py: the compose file read as `docker compose config` reads it)

# what `scripts/stack.py init-env` puts in .env, as a user has it
ENV = {"AIRFLOW__API_AUTH__JWT_SECRET": "s" * 43, "AIRFLOW__CORE__FERNET_KEY": "k" * 44,
       "_AIRFLOW_WWW_USER_PASSWORD": "p" * 22}


def _compose(env: dict[str, str] | None = None) -> dict:
    """docker-compose.yaml with YAML merge keys resolved and ${VAR...} interpolated."""
    return native.load_compose(ROOT / "docker-compose.yaml", ENV if env is None else env)


def test_the_compose_file_refuses_to_start_without_its_secrets():
    for missing in ENV:
        for env in ({k: v for k, v in ENV.items() if k != missing}, {**ENV, missing: ""}):  # unset; `cp .env.example`
            with pytest.raises(native.StackError, match=f"required variable {missing} is missing a value: set it in .env"):
                _compose(env)
    data = _compose()
    services = [n for n, s in data["services"].items() if "command" in s and n.startswith("airflow-")]
    secrets = {s["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for n, s in data["services"].items() if n in services}
    assert secrets == {ENV["AIRFLOW__API_AUTH__JWT_SECRET"]}  # one secret, every component
    assert data["services"]["airflow-init"]["environment"]["_AIRFLOW_WWW_USER_PASSWORD"] == ENV["_AIRFLOW_WWW_USER_PASSWORD"]
    for name in services:
        if name != "airflow-init":
            assert data["services"][name].get("healthcheck"), f"{name} has no health check"
    assert data["services"]["airflow-worker"]["environment"]["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")


def test_init_env_writes_every_secret_fresh_and_private(tmp_path):
    native.init_env(tmp_path / ".env")
    env = native.read_env_file(tmp_path / ".env")
    assert all(env[k] for k in ENV) and (tmp_path / ".env").stat().st_mode & 0o077 == 0
    _compose(env)  # enough for the compose file
    native.init_env(tmp_path / "other.env")
    assert all(native.read_env_file(tmp_path / "other.env")[k] != env[k] for k in ENV)
    with pytest.raises(SystemExit, match="exists"):
        native.init_env(tmp_path / ".env")


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
    assert all(f"\n{key}=\n" in example for key in ENV)  # every secret left empty, for init-env to fill
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


def test_the_compose_file_is_read_as_compose_reads_it():
    """scripts/stack.py's reading of compose interpolation and .env files (the compose spec's
    interpolation section and Docker's .env syntax): what the native stack runs is what
    `docker compose` would."""
    env = {"SET": "v", "EMPTY": ""}
    cases = {"$$SET": "$SET", "$SET": "v", "${SET}": "v", "${NONE}": "", "${EMPTY:-d}": "d", "${EMPTY-d}": "",
             "${NONE:-${SET}}": "v", "${NONE:-$SET/x}": "v/x", "${SET:+alt}": "alt", "${EMPTY:+alt}": "",
             "${EMPTY+alt}": "alt", "${SET:?must}": "v"}
    assert {text: native._expand(text, env, "t") for text in cases} == cases
    for bad in ("${SET", "${ SET}", "${SET:x}", "$5", "${EMPTY:?must be set}", "${NONE?must be set}"):
        with pytest.raises(native.StackError):
            native._expand(bad, env, "t")


def test_the_env_file_is_read_as_compose_reads_it(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# a comment\n\nexport A=1\nB='literal $A # kept'\nC=\"q\\\"$A\\n\"\nD=v # comment\n"
                    "E=a#b\nF=${A}-${SHELL_ONLY}\n")
    assert native.read_env_file(path, {"SHELL_ONLY": "s"}) == {
        "A": "1", "B": "literal $A # kept", "C": 'q"1\n', "D": "v", "E": "a#b", "F": "1-s"}
    path.write_text("NOT A LINE\n")
    with pytest.raises(native.StackError, match=r"\.env:1: not KEY=VALUE"):
        native.read_env_file(path)


def test_urls_to_the_postgres_and_redis_services_must_match_those_services(tmp_path):
    """This machine's PostgreSQL trusts local connections, so the native stack checks what the
    compose postgres service would refuse: another user, password, database or port."""
    compose = (ROOT / "docker-compose.yaml").read_text()
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in ENV.items()))
    url = "postgresql+psycopg2://airflow:airflow@postgres/airflow"
    for broken, message in {
        "postgresql+psycopg2://airflow:wrong@postgres/airflow": "does not log in as the postgres service",
        "postgresql+psycopg2://airflow:airflow@postgres/airflwo": "does not log in as the postgres service",
        "postgresql+psycopg2://airflow:airflow@postgres:5433/airflow": "names port 5433",
    }.items():
        assert url in compose
        (tmp_path / "docker-compose.yaml").write_text(compose.replace(url, broken, 1))
        stack = native.NativeStack(tmp_path / "docker-compose.yaml", tmp_path / ".env", tmp_path / "root", shell_env={})
        with pytest.raises(native.StackError, match=message) as error:
            for service in stack.services.values():
                stack._prepare(service)
        assert ":wrong@" not in str(error.value)  # no credentials in the message
    broken = compose.replace("redis://:@redis:6379/0", "redis://:@redis:6380/0")
    (tmp_path / "docker-compose.yaml").write_text(broken)
    stack = native.NativeStack(tmp_path / "docker-compose.yaml", tmp_path / ".env", tmp_path / "root", shell_env={})
    with pytest.raises(native.StackError, match="names port 6380"):
        for service in stack.services.values():
            stack._prepare(service)


def test_the_mwaa_startup_script_refuses_secret_looking_variables():
    """startup.sh lies in plugins.zip in the environment's S3 bucket and MWAA logs what it runs:
    a credential there is in plain sight. The bundle refuses one by name and says where it goes."""
    import mwaa_bundle

    assert "export CC_GRAPH_OUTPUT_ROOT=s3://b/out" in mwaa_bundle.startup_script(["CC_GRAPH_OUTPUT_ROOT=s3://b/out"])
    for name in ("CC_GRAPH_API_TOKEN", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "MY_CREDENTIALS"):
        with pytest.raises(SystemExit, match=f"--env {name}: .*Secrets Manager") as error:
            mwaa_bundle.startup_script([f"{name}=canary-value"])
        assert "canary-value" not in str(error.value)


def test_each_compose_project_gets_a_database_of_its_own(tmp_path):
    """Two clones do not share a metadata DB (compose names a project's volumes after it)."""
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in ENV.items()))
    stacks = {}
    for folder in ("My Clone", "other"):
        project = tmp_path / folder
        project.mkdir()
        shutil.copy(ROOT / "docker-compose.yaml", project)
        stacks[folder] = native.NativeStack(project / "docker-compose.yaml", tmp_path / ".env", tmp_path / "r", shell_env={})
    assert stacks["My Clone"].database == "myclone_airflow" and stacks["other"].database == "other_airflow"
    named = native.NativeStack(tmp_path / "other" / "docker-compose.yaml", tmp_path / ".env", tmp_path / "r",
                               shell_env={"COMPOSE_PROJECT_NAME": "prod"})
    assert named.database == "prod_airflow" and 1 <= named.redis_db <= 13
