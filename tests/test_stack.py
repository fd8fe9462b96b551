"""The compose file's stack, run for real without Docker (scripts/stack.py): api-server,
scheduler, dag-processor, triggerer and a Celery worker, each a process with its own
AIRFLOW_HOME, against this machine's PostgreSQL and Redis, configured only by
docker-compose.yaml and an .env. Used as a user uses it: the FAB login, the REST API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from conftest import ROOT, TEST_JOBS, operator_dag, wait_for

sys.path.insert(0, str(ROOT / "scripts"))
import stack as native

pytestmark = [pytest.mark.spark, pytest.mark.timeout(1200)]

ENDED = ("success", "failed")
BUCKET = "asp-emr"


class Api:
    """The REST API with a token from the auth manager, as a script of a user gets one."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url
        answer = requests.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=30)
        assert answer.status_code in (200, 201), f"login as {username}: HTTP {answer.status_code}"  # the body may echo it
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def call(self, method: str, path: str, **body):
        answer = self.session.request(method, f"{self.url}/api/v2/{path}", json=body or None, timeout=60)
        assert answer.ok, f"{method} {path}: {answer.status_code} {answer.text[:2000]}"
        return answer.json()

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.call("GET", f"dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        rows = self.call("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
        return {r["task_id"] + (f"[{r['map_index']}]" if r["map_index"] >= 0 else ""): r["state"] for r in rows}


def _project(tmp: Path, extra_env: dict[str, str]) -> Path:
    """A checkout as a user has it: the compose file, .env from `stack.py init-env`, the
    mounted folders. dags/ is a copy (the EMR test adds a DAG), profiles.yaml points the small
    profile's EMR section at the fake cluster."""
    project = tmp / "project"
    project.mkdir()
    shutil.copy(ROOT / "docker-compose.yaml", project)
    shutil.copytree(ROOT / "dags", project / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("jobs", "sample_data"):
        (project / name).symlink_to(ROOT / name)
    native.init_env(project / ".env")
    with open(project / ".env", "a") as env:
        env.writelines(f"{k}={v}\n" for k, v in extra_env.items())
    return project


def _profiles(project: Path, cluster_id: str) -> None:
    profiles = yaml.safe_load((ROOT / "profiles.yaml").read_text())
    profiles["profiles"]["small"]["emr"] = {"cluster_id": cluster_id, "s3_root": f"s3://{BUCKET}/spark-portable"}
    (project / "profiles.yaml").write_text(yaml.safe_dump(profiles))


@pytest.fixture(scope="module")
def moto_endpoint():
    """moto's server for the whole module (the stack's connection names it when it starts)."""
    from harness.emr_cluster import REGION, patch_moto
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch_moto()
        import boto3

        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket="asp-logs")
        yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def cluster(moto_endpoint):
    from harness.emr_cluster import FakeCluster, cluster_env

    cluster_env()
    fake = FakeCluster(moto_endpoint, log_uri="s3://asp-logs/emr/")
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, moto_endpoint, cluster):
    tmp = tmp_path_factory.mktemp("stack")
    aws = {"conn_type": "aws", "login": "testing", "password": "testing",
           "extra": {"region_name": "us-east-1", "endpoint_url": moto_endpoint}}
    project = _project(tmp, {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws)})
    _profiles(project, cluster.cluster_id)
    (project / "dags" / "emr_deferred.py").write_text(operator_dag(
        "emr_deferred", engine="emr", application=str(TEST_JOBS / "probe_job.py"), deferrable=True,
        poll_interval=1, retries=0, engine_options={"poll_interval_seconds": 1, "log_wait_seconds": 20, "cancel_wait_seconds": 60},
    ))
    running = _fresh(native.NativeStack(project / "docker-compose.yaml", project / ".env", tmp / "root",
                                        database=f"airflow_stack_test_{os.getpid()}", redis_db=15))
    try:
        running.up()
        env = native.read_env_file(project / ".env")
        api = Api(running.api_url, env["_AIRFLOW_WWW_USER_USERNAME"], env["_AIRFLOW_WWW_USER_PASSWORD"])
        wait_for(lambda: {d["dag_id"] for d in api.call("GET", "dags")["dags"]} >= {"common_crawl_graph", "emr_deferred"},
                 timeout=120, interval=2, what="the dag-processor to parse the DAGs")
        yield running, api, project
        assert running.dead() == {}, {n: running.tail(n) for n in running.dead()}
    finally:
        running.down()
        running.drop_database()


ONE_TASK_DAG = """
import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

with DAG("one_task", schedule=None, start_date=pendulum.datetime(2024, 1, 1), is_paused_upon_creation=False):
    PythonOperator(task_id="hello", python_callable=lambda: "hello", retries=0)
"""


def test_without_the_compose_files_jwt_secret_every_task_fails(tmp_path):
    """What the compose file's AIRFLOW__API_AUTH__JWT_SECRET line is for (apache/airflow#49646):
    without it each component, with a filesystem of its own, makes a secret of its own, and the
    API server refuses the token the scheduler signed for every task. (First in the module: it
    runs a stack of its own, before the module's stack is up.)"""
    project = _project(tmp_path, {})
    compose = project / "docker-compose.yaml"
    lines = compose.read_text().splitlines(keepends=True)
    (jwt,) = [line for line in lines if line.strip().startswith("AIRFLOW__API_AUTH__JWT_SECRET:")]
    compose.write_text("".join(line for line in lines if line is not jwt))
    (project / "dags" / "one_task.py").write_text(ONE_TASK_DAG)
    running = _fresh(native.NativeStack(compose, project / ".env", tmp_path / "root",
                                        database=f"airflow_stack_nojwt_{os.getpid()}", redis_db=14))
    try:
        running.up()
        env = native.read_env_file(project / ".env")
        api = Api(running.api_url, env["_AIRFLOW_WWW_USER_USERNAME"], env["_AIRFLOW_WWW_USER_PASSWORD"])
        wait_for(lambda: "one_task" in {d["dag_id"] for d in api.call("GET", "dags")["dags"]}, timeout=120,
                 interval=2, what="the dag-processor to parse one_task")
        api.call("POST", "dags/one_task/dagRuns", dag_run_id="r", logical_date=None, conf={})
        assert _wait_runs(api, "one_task", ["r"], timeout=300) == {"r": "failed"}
        assert "Signature verification failed" in running.tail("airflow-apiserver", 1_000_000)
    finally:
        running.down()
        running.drop_database()


def _fresh(stack: native.NativeStack) -> native.NativeStack:
    """A stack on an empty database and Redis index (one a crashed run left is dropped)."""
    import psycopg2

    try:
        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres").close()
    except psycopg2.OperationalError as err:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 (user postgres, trust) is needed: run scripts/services.sh ({err})")
    stack.drop_database()
    return stack


def _wait_runs(api: Api, dag_id: str, run_ids, timeout: float = 900) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        states = {r: api.run_state(dag_id, r) for r in run_ids}
        if all(s in ENDED for s in states.values()):
            return states
        assert time.monotonic() < deadline, f"runs not ended after {timeout:.0f} s: {states}"
        time.sleep(3)


def _partitions(out: Path, crawl: str, domain: str) -> dict[str, set[tuple]]:
    import pyarrow.parquet as pq

    found = {}
    for step in ("nodes", "edges", "graph", "graph_aggr"):
        part = out / step / f"crawl={crawl}" / f"domain={domain}"
        assert (part / "_SUCCESS").exists(), f"{part} has no _SUCCESS"
        table = pq.read_table(part)
        found[step] = {tuple(row.values()) for row in table.to_pylist()}
    return found


def _expected(crawl: str, domain: str) -> dict[str, set[tuple]]:
    """The sample's outputs computed without Spark (the oracles of tests/cluster)."""
    from cluster.test_graph_jobs import oracle_edges, oracle_graph, oracle_nodes

    nodes, _, _ = oracle_nodes(domain)
    edges = oracle_edges(crawl, {n[3] for n in nodes})
    graph, aggr = oracle_graph(nodes, edges)
    return {"nodes": nodes, "edges": edges, "graph": graph, "graph_aggr": aggr}


def test_runs_triggered_and_backfilled_through_the_rest_api_end_as_their_steps_did(stack):
    running, api, project = stack
    out = project / "var" / "compose-output"
    api.call("PATCH", "dags/common_crawl_graph", is_paused=False)
    triggers = {
        "all_good": {"crawls": ["CC-MAIN-2024-10"], "domains": ["pharma"]},
        "plan_fails": {"domains": ["textiles"]},  # no seed list
        "edges_fails": {"crawls": ["CC-MAIN-2099-01"], "domains": ["steel"]},  # no WAT listing
    }
    for run_id, conf in triggers.items():
        api.call("POST", "dags/common_crawl_graph/dagRuns", dag_run_id=run_id, logical_date=None, conf=conf)
    # the releases of CC-MAIN-2024-10 (03-18) and CC-MAIN-2024-18 (05-13), nothing else
    backfill = api.call("POST", "backfills", dag_id="common_crawl_graph", from_date="2024-03-01T00:00:00Z",
                        to_date="2024-05-31T00:00:00Z", dag_run_conf={"domains": ["steel"]}, max_active_runs=2,
                        reprocess_behavior="none")
    runs = api.call("GET", "dags/common_crawl_graph/dagRuns?limit=100")["dag_runs"]
    backfilled = {r["dag_run_id"]: r["logical_date"][:10] for r in runs if r["run_type"] == "backfill"}
    assert sorted(backfilled.values()) == ["2024-03-18", "2024-05-13"], backfilled
    assert api.call("GET", f"backfills/{backfill['id']}")["dag_id"] == "common_crawl_graph"

    states = _wait_runs(api, "common_crawl_graph", [*triggers, *backfilled])
    assert states == {"all_good": "success", "plan_fails": "failed", "edges_fails": "failed",
                      **{r: "success" for r in backfilled}}, {r: running.tail(r) for r in ("airflow-worker",)}

    good = api.task_states("common_crawl_graph", "all_good")
    assert set(good.values()) == {"success"} and len(good) == 7, good
    plan = api.task_states("common_crawl_graph", "plan_fails")
    assert plan["plan"] == "failed" and plan["cost_report"] == "success" and plan["check_run"] == "failed"
    edges = api.task_states("common_crawl_graph", "edges_fails")
    assert edges["pair.nodes[0]"] == "success" and edges["pair.edges[0]"] == "failed"
    assert edges["pair.graph[0]"] == "upstream_failed" and edges["check_run"] == "failed"
    def report(run_id):
        return json.loads((out / "_reports" / run_id / "report.json").read_text())

    assert report("all_good")["problems"] == []
    assert "plan: failed" in report("plan_fails")["problems"]
    assert report("edges_fails")["task_states"]["pair.nodes[0]"] == "success"
    assert report("edges_fails")["problems"] == [
        "pair.edges[0] (CC-MAIN-2099-01 / steel): failed",
        "pair.graph[0] (CC-MAIN-2099-01 / steel): upstream_failed",
        "pair.graph_aggr[0] (CC-MAIN-2099-01 / steel): upstream_failed",
    ]

    # every partition the successful runs wrote holds exactly the sample's rows; the failed
    # pair has its nodes (that step succeeded) and no edges partition that looks complete
    written = {("CC-MAIN-2024-10", "pharma"), ("CC-MAIN-2024-10", "steel"), ("CC-MAIN-2024-18", "steel")}

    def pairs(step):
        return {(c.name.split("=")[1], d.name.split("=")[1]) for c in (out / step).glob("crawl=*")
                for d in c.glob("domain=*") if (d / "_SUCCESS").exists()}

    assert pairs("nodes") == written | {("CC-MAIN-2099-01", "steel")}
    assert pairs("edges") == pairs("graph") == pairs("graph_aggr") == written
    for crawl, domain in sorted(written):
        assert _partitions(out, crawl, domain) == _expected(crawl, domain), (crawl, domain)


def _ti(api: Api, run_id: str) -> dict:
    return api.call("GET", f"dags/emr_deferred/dagRuns/{run_id}/taskInstances/job")


def test_a_deferred_emr_task_frees_its_worker_and_marking_it_failed_cancels_the_step(stack, cluster):
    running, api, project = stack
    cluster.hold = True  # the step runs until it is cancelled
    api.call("PATCH", "dags/emr_deferred", is_paused=False)
    api.call("POST", "dags/emr_deferred/dagRuns", dag_run_id="held", logical_date=None, conf={})
    (step,) = wait_for(lambda: cluster.steps(), timeout=240, interval=1, what="the EMR step to be added")
    wait_for(lambda: step.state == "RUNNING", timeout=120, interval=0.5, what="the step to run")

    # while the step runs: how long the task holds a worker slot (its state is running), over
    # 20 s of the step, each sample's state counted until the next sample
    samples = []
    start = time.monotonic()
    while time.monotonic() - start < 20:
        samples.append((time.monotonic(), _ti(api, "held")["state"]))
        time.sleep(0.5)
    spans = [(b[0] - a[0], a[1]) for a, b in zip(samples, [*samples[1:], (time.monotonic(), None)])]
    held = sum(seconds for seconds, state in spans if state == "running")
    print(f"worker slot held {held:.1f} s of the step's first {sum(s for s, _ in spans):.0f} s running")
    assert samples[-1][1] == "deferred" and held <= 5, f"worker slot held {held:.1f} s of 20 s: {samples}"
    assert step.state == "RUNNING"
    # and the Celery worker has no task in hand: the slot is free, not only the state
    worker = running.services["airflow-worker"]
    active = subprocess.run(
        ["celery", "--app", "airflow.providers.celery.executors.celery_executor.app", "inspect", "active", "--json"],
        env=worker.env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert active.returncode == 0, active.stdout + active.stderr
    assert all(tasks == [] for tasks in json.loads(active.stdout.strip().splitlines()[-1]).values()), active.stdout

    # the user marks it failed in the UI (the REST API behind it): the triggerer cancels the step
    api.call("PATCH", "dags/emr_deferred/dagRuns/held/taskInstances/job", new_state="failed")
    try:
        wait_for(lambda: step.state == "CANCELLED", timeout=120, interval=1, what="the step to be cancelled")
    except AssertionError:
        raise AssertionError(f"step {step.id} is {step.state}\n{running.tail('airflow-triggerer')}") from None
    assert _wait_runs(api, "emr_deferred", ["held"], timeout=120) == {"held": "failed"}
    logs = project / "var" / "compose-logs" / "dag_id=emr_deferred" / "run_id=held" / "task_id=job"

    def trigger_log():
        return "".join(p.read_text() for p in logs.glob("attempt=1.log.trigger.*.log"))

    # the trigger's log reaches the shared log folder after the trigger ends
    wait_for(lambda: f"EMR step {step.id} ended" in trigger_log(), timeout=60, what="the trigger's log")
    assert "Trigger cancelled by user action, invoking on_kill" in trigger_log()
    assert f"Cancelling EMR step {step.id} on cluster {cluster.cluster_id}" in trigger_log()
