"""Secrets stay in the task: not in logs, rendered fields, XCom, command lines (``ps``) or
files other local users can read; engines that would expose them refuse them."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from airflow_spark_portable.engines.base import JobSpec, run_name
from airflow_spark_portable.engines.databricks import DatabricksEngine
from airflow_spark_portable.engines.emr import EmrEngine
from airflow_spark_portable.engines.local_connect import write_properties
from airflow_spark_portable.pipes import S3Channel
from airflow_spark_portable.profiles import Profiles
from airflow_spark_portable.redaction import (
    SECRET_CONF,
    is_sensitive,
    redacted,
    secret_args,
    secret_values,
    sensitive_keys,
)
from airflow_spark_portable.runtime.context import JobContext, RunIdentity
from conftest import SUBMIT_MODE, operator_dag

spark = pytest.mark.spark

# one key per provider and kind of credential
CREDENTIAL_KEYS = [
    "spark.hadoop.fs.s3a.secret.key",
    "spark.hadoop.fs.s3a.access.key",
    "spark.hadoop.fs.s3a.session.token",
    "spark.hadoop.fs.azure.account.key.myacct.blob.core.windows.net",
    "spark.hadoop.fs.azure.sas.mycontainer.myacct.blob.core.windows.net",
    "spark.hadoop.fs.azure.account.oauth2.client.secret.myacct.dfs.core.windows.net",
    "spark.hadoop.google.cloud.auth.service.account.json.private.key",
    "spark.hadoop.google.cloud.auth.service.account.json.private.key.id",
    "spark.hadoop.google.cloud.auth.service.account.json.keyfile",
    "spark.hadoop.fs.gs.auth.service.account.private.key",
    "spark.hadoop.fs.gs.auth.service.account.private.key.id",
    "spark.sql.catalog.pg.password",
    "spark.jdbc.pwd",
    "spark.databricks.token",
    "spark.ssl.keyStorePassword",
]
# how credentials are found, not credentials: passed on as before
NOT_CREDENTIAL_KEYS = [
    "spark.hadoop.fs.s3a.aws.credentials.provider",
    "spark.hadoop.fs.azure.account.auth.type",
    "spark.hadoop.fs.azure.sas.token.provider.type",
    "spark.hadoop.google.cloud.auth.service.account.enable",
    "spark.authenticate.enableSaslEncryption",
    "spark.sql.shuffle.partitions",
    "spark.sql.sources.partitionOverwriteMode",
]


@pytest.mark.parametrize("key", CREDENTIAL_KEYS)
def test_credential_conf_keys_are_sensitive(key):
    assert is_sensitive(key)


@pytest.mark.parametrize("key", NOT_CREDENTIAL_KEYS)
def test_settings_that_only_name_a_credential_source_are_not(key):
    assert not is_sensitive(key)


def test_secret_flags_of_application_args_are_hidden_in_both_spellings():
    args = ["--api-token", "T1", "--db-password=P1", "--flag", "x", "--secret-key", "K1", "--name=plain"]
    assert redacted(args) == ["--api-token", "***", "--db-password=***", "--flag", "x", "--secret-key", "***", "--name=plain"]
    assert secret_args(args) == ["T1", "P1", "K1"]
    assert secret_values(conf={"spark.hadoop.fs.s3a.secret.key": "S", "spark.x": "y"}, env={"A": "E"}, args=args) == [
        "S", "E", "T1", "P1", "K1",
    ]  # fmt: skip


JAVA_OPTION_SECRETS = {
    "spark.driver.extraJavaOptions": "-XX:+UseG1GC -Djavax.net.ssl.keyStorePassword=canary-value",
    "spark.executor.extraJavaOptions": "-Ddb.password=canary-value -Dlog4j.configuration=x",
    "spark.yarn.am.extraJavaOptions": "-Dapi.token='canary-value'",
    "spark.driver.defaultJavaOptions": "-Dmy.secret=canary-value",
}


@pytest.mark.parametrize("key", JAVA_OPTION_SECRETS)
def test_java_options_that_carry_a_secret_are_sensitive_and_masked(key):
    """spark-submit puts extra/default Java options on the JVM's command line (ps shows them to
    every local user; consoles show them for steps and runs): a -D<secret-looking>=value there is
    a secret, whatever the conf key's own name."""
    conf = {key: JAVA_OPTION_SECRETS[key]}
    assert sensitive_keys(conf) == [key]
    assert "canary-value" in secret_values(conf=conf) or "'canary-value'" in secret_values(conf=conf)
    # Java options without secrets are not
    assert sensitive_keys({key: "-XX:+UseG1GC -Dlog4j.configuration=file:log4j2.properties -Duser.timezone=UTC"}) == []


@pytest.mark.parametrize("key", JAVA_OPTION_SECRETS)
def test_the_local_engine_refuses_secrets_in_java_options(key, tmp_path):
    from airflow_spark_portable.engines.local import LocalEngine

    with pytest.raises(Exception) as info:
        LocalEngine().submit(_spec("local", {key: JAVA_OPTION_SECRETS[key]}), None)
    assert getattr(info.value, "code", None) == SECRET_CONF, info.value
    assert key in str(info.value) and "canary-value" not in str(info.value)


def test_properties_file_is_private_and_java_readable(tmp_path):
    path = write_properties(tmp_path / "spark.properties", {"a.b": "x=y:z #!\\ \n", "c": " lead"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == "a.b=x\\=y\\:z \\#\\!\\\\ \\n\nc=\\ lead\n"


def _context(engine: str) -> JobContext:
    return JobContext(engine=engine, profile="p", run=RunIdentity(dag_id="d", task_id="t", run_id="r"))


def _spec(engine: str, conf: dict[str, str], args: list[str] | None = None) -> JobSpec:
    context = _context(engine)
    return JobSpec(
        name=run_name(context),
        application=Path("/project/jobs/job.py"),
        code_root=Path("/project"),
        application_args=args or [],
        spark_conf=conf,
        profile=Profiles.from_dict({"profiles": {"p": {}}}, "x").get("p"),
        env={},
        context=context,
    )


# each secret-carrying conf: a credential key, or Java options with a secret -D property
SECRET_CONFS = [(key, "canary-value") for key in CREDENTIAL_KEYS] + list(JAVA_OPTION_SECRETS.items())


@pytest.mark.parametrize(("key", "value"), SECRET_CONFS)
def test_emr_step_arguments_refuse_every_credential_key(key, value):
    engine = EmrEngine({"aws_conn_id": None})
    section = {"python": "python3", "deploy_mode": "cluster"}
    channel = S3Channel("s3://bucket/runs/x", aws_conn_id=None)
    with pytest.raises(Exception) as info:
        engine.step(_spec("emr", {key: value}), section, "s3://b/app.py", "s3://b/code.zip", channel)
    assert info.value.code == SECRET_CONF and key in str(info.value) and "canary-value" not in str(info.value)
    # the same task without the key is a step
    assert engine.step(_spec("emr", {"spark.x": "1"}), section, "s3://b/app.py", "s3://b/code.zip", channel)


@pytest.mark.parametrize(("key", "value"), SECRET_CONFS)
@pytest.mark.parametrize("compute", ["new_cluster", "existing_cluster"])
def test_databricks_run_settings_refuse_every_credential_key(key, value, compute):
    section = {"new_cluster": {"num_workers": 1} if compute == "new_cluster" else None}
    engine = DatabricksEngine({})
    with pytest.raises(Exception) as info:
        engine._checked_conf(_spec("databricks", {key: value}), section)
    assert info.value.code == SECRET_CONF and key in str(info.value) and "canary-value" not in str(info.value)
    if compute == "new_cluster" and key in CREDENTIAL_KEYS:  # a secret reference is resolved by Databricks
        reference = {key: "{{secrets/scope/name}}"}
        assert engine._checked_conf(_spec("databricks", reference), section) == (reference, {})


@pytest.mark.parametrize("args", [["--api-token", "canary-value"], ["--db-password=canary-value"], ["--x", "1", "--secret-key", "canary-value"]])
def test_remote_engines_refuse_secret_application_args(args):
    emr = EmrEngine({"aws_conn_id": None})
    section = {"python": "python3", "deploy_mode": "cluster"}
    channel = S3Channel("s3://bucket/runs/x", aws_conn_id=None)
    with pytest.raises(Exception) as info:
        emr.step(_spec("emr", {}, args), section, "s3://b/app.py", "s3://b/code.zip", channel)
    assert info.value.code == SECRET_CONF and "application_args" in str(info.value)
    assert "canary-value" not in str(info.value) and "***" in str(info.value)
    # Databricks refuses before it uploads anything or builds the request
    with pytest.raises(Exception) as info:
        DatabricksEngine({}).payload(_spec("databricks", {}, args), {"new_cluster": {"num_workers": 1}}, channel)
    assert info.value.code == SECRET_CONF and "canary-value" not in str(info.value)
    # plain arguments still travel
    assert "--verbose" in emr.step(_spec("emr", {}, ["--verbose"]), section, "s3://b/app.py", "s3://b/code.zip",
                                   channel)["HadoopJarStep"]["Args"]


# -- a local job with a secret in every place a task can hold one ---------------------

JOB = '''
import os, sys, time
from airflow_spark_portable.runtime import open_job

with open_job() as job:
    conf = {k: job.spark.conf.get(k, None) for k in %(keys)r}
    time.sleep(4)  # long enough for ps to see this process
    # reversed: a plain value anywhere in the task's output would be a leak
    job.report_metrics(
        argv_reversed=[a[::-1] for a in sys.argv[1:]],
        env_reversed=os.environ.get("MY_TOKEN", "")[::-1],
        conf_reversed=[(v or "")[::-1] for v in conf.values()],
        echoed=sys.argv[-1],  # a job that reports a secret: XCom must not show it
    )
'''


class PsSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            done = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=False)
            self.samples.append(done.stdout)
            self.stop.wait(0.2)


def _rendered_fields(dag_id: str) -> dict:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(RenderedTaskInstanceFields).filter_by(dag_id=dag_id).all()
        return {row.task_id: row.rendered_fields for row in rows}


@spark
@pytest.mark.parametrize("mode", ["connect", "submit"])
def test_no_secret_leaves_a_local_task(dag_runner, work_dir, tmp_path, mode):
    tag = uuid.uuid4().hex[:12]
    canary = {where: f"canary{where}{tag}" for where in ("s3a", "azure", "gcs", "env", "arg")}
    keys = {
        "s3a": "spark.hadoop.fs.s3a.secret.key",
        "azure": "spark.hadoop.fs.azure.account.key.myacct.blob.core.windows.net",
        "gcs": "spark.hadoop.google.cloud.auth.service.account.json.private.key",
    }
    job = tmp_path / "secret_job.py"
    job.write_text(JOB % {"keys": list(keys.values())})
    dag_id = f"secrets_{mode}"
    source = operator_dag(
        dag_id,
        application=str(job),
        conf={keys[w]: canary[w] for w in keys},
        env={"MY_TOKEN": canary["env"]},
        application_args=["--api-token", canary["arg"]],
    )
    sampler = PsSampler()
    sampler.start()
    try:
        outcome = dag_runner.run(dag_id, source, env=SUBMIT_MODE if mode == "submit" else {})
    finally:
        sampler.stop.set()
        sampler.join()
    assert outcome.task_state == "success", outcome.output[-3000:]
    metrics = outcome.metrics
    # the job got every value as given: its argv, its env, its conf
    assert metrics["argv_reversed"] == ["--api-token"[::-1], canary["arg"][::-1]]
    assert metrics["env_reversed"] == canary["env"][::-1]
    got = dict(zip(keys, metrics["conf_reversed"]))
    if mode == "connect" and got["s3a"] == "":
        # Spark Connect does not read back keys that match spark.redaction.regex; the server has it
        assert any(canary["s3a"] in p.read_text() for p in work_dir.glob("connect/*/spark.properties"))
        got["s3a"] = canary["s3a"][::-1]
    assert got == {w: canary[w][::-1] for w in keys}

    ps = "\n".join(sampler.samples)
    assert job.name in ps, "ps never saw the job process"
    rendered = _rendered_fields(dag_id)
    assert rendered.get("job", {}).get("env"), rendered  # the check below is not vacuous
    open_files = {}
    for path in [work_dir, *work_dir.rglob("*")]:
        mode_bits = stat.S_IMODE(path.lstat().st_mode)
        if mode_bits & 0o077:
            open_files[str(path)] = oct(mode_bits)
    assert open_files == {}, "readable by group/others"

    import json

    places = {
        "task log": outcome.output,
        "rendered fields": json.dumps(rendered, default=str),
        "XCom": json.dumps(outcome.result.get("xcom"), default=str)
        + json.dumps(outcome.result.get("xcom_keys"), default=str),
        "ps": ps,
    }
    leaks = [f"{where} in {place}" for where, value in canary.items() for place, text in places.items() if value in text]
    assert leaks == []
    assert metrics["echoed"] == "***"
    assert os.path.isdir(work_dir)


def test_rendering_registers_env_values_and_secret_conf_and_args_with_airflows_masker():
    from airflow_spark_portable.operators.spark_portable import SparkPortableOperator
    from airflow_spark_portable.redaction import redact

    tag = uuid.uuid4().hex[:12]
    op = SparkPortableOperator(
        task_id="t",
        application="jobs/x.py",
        env={"MY_VAR": "{{ params.env }}"},
        conf={"spark.hadoop.fs.azure.account.key.a.blob.core.windows.net": "{{ params.key }}", "spark.x": "plain-" + tag},
        application_args=["--api-token={{ params.arg }}"],
    )
    values = {"env": f"env{tag}", "key": f"key{tag}", "arg": f"arg{tag}"}
    op.render_template_fields({"params": values})
    assert op.env == {"MY_VAR": values["env"]}  # rendered as given; masked where it is shown
    shown = redact(f"{values['env']} {values['key']} {values['arg']} plain-{tag}")
    assert shown == f"*** *** *** plain-{tag}"
    # metrics keep their values unless they are secrets, whatever their names
    assert redact({"tokens_seen": 3, "api_key_rotations": "two", "x": [values["env"]]}) == {
        "tokens_seen": 3, "api_key_rotations": "two", "x": ["***"],
    }  # fmt: skip
