"""The fake Databricks workspace (tests/harness/databricks_api.py) behaves like the real API where
our engine depends on it: auth, schema checks, idempotent submit, run life cycle, output, workspace."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from conftest import wait_for
from harness.databricks_api import FakeDatabricks

TOKEN = "dapi-test-token"


@pytest.fixture
def fake(tmp_path):
    fake = FakeDatabricks(tmp_path).start()
    yield fake
    fake.stop()


def call(fake, method: str, path: str, body: dict | None = None, token: str = TOKEN) -> requests.Response:
    kwargs = {"json": body} if method == "POST" else {"params": body}
    return requests.request(
        method, f"{fake.url}/api/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10, **kwargs
    )


def task(**overrides) -> dict:
    return {
        "task_key": "main",
        "spark_python_task": {"python_file": "/Workspace/Users/me/job.py", "parameters": ["--x", "1"]},
        "new_cluster": {"spark_version": "15.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 1},
        **overrides,
    }


def submit(fake, **body) -> requests.Response:
    return call(fake, "POST", "2.2/jobs/runs/submit", {"run_name": "t", "tasks": [task()], **body})


def get_run(fake, run_id: int) -> dict:
    response = call(fake, "GET", "2.1/jobs/runs/get", {"run_id": run_id})
    assert response.status_code == 200, response.text
    return response.json()


def test_every_request_needs_the_bearer_token(fake):
    for token in ("", "wrong"):
        response = call(fake, "GET", "2.2/jobs/runs/list", token=token)
        assert response.status_code == 401
        assert response.json()["error_code"] == "UNAUTHENTICATED"
    assert call(fake, "GET", "2.2/jobs/runs/list").status_code == 200
    assert ("GET", "/api/2.2/jobs/runs/list") in fake.requests_seen


@pytest.mark.parametrize(
    ("tasks", "names"),
    [
        ([task(spark_python_task={"python_file": "/x.py", "bogus": 1})], "tasks[0].spark_python_task.bogus"),
        ([task(spark_python_task={"python_file": "/x.py", "source": "S3"})], "tasks[0].spark_python_task.source"),
        ([{k: v for k, v in task().items() if k != "task_key"}], "tasks[0].task_key"),
        ([task(new_cluster={"num_workers": "2"})], "tasks[0].new_cluster.num_workers"),
        ([task(libraries=[{"pypi": {"repo": "x"}}])], "tasks[0].libraries[0].pypi.package"),
        ([task(existing_cluster_id="0101-abc")], "exactly one of new_cluster"),
        ([task(environment_key="default", new_cluster=None)], "environment_key 'default' is not in environments"),
        ([], "At least one task"),
    ],
)
def test_submit_rejects_what_the_sdk_schema_rejects(fake, tasks, names):
    response = call(fake, "POST", "2.2/jobs/runs/submit", {"run_name": "t", "tasks": tasks})
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert names in response.json()["message"]
    assert fake.runs() == []


def test_unknown_top_level_field_and_bad_json_are_refused(fake):
    response = submit(fake, bogus=True)
    assert response.status_code == 400 and "bogus" in response.json()["message"]
    response = requests.post(
        f"{fake.url}/api/2.1/jobs/runs/submit", data="{", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 400 and response.json()["error_code"] == "MALFORMED_REQUEST"


def test_idempotency_token_returns_the_same_run(fake):
    fake.hold = True
    first = submit(fake, idempotency_token="tok-1").json()["run_id"]
    assert submit(fake, idempotency_token="tok-1").json()["run_id"] == first
    other = submit(fake, idempotency_token="tok-2").json()["run_id"]
    assert other != first
    assert [r.run_id for r in fake.runs()] == [first, other]
    assert fake.run(first).idempotency_token == "tok-1"


def test_hold_then_cancel_ends_canceled_and_list_filters_active(fake):
    fake.hold = True
    held = submit(fake).json()["run_id"]
    run = wait_for(lambda: (r := get_run(fake, held))["state"]["life_cycle_state"] == "RUNNING" and r, 10, 0.05)
    assert run["run_type"] == "SUBMIT_RUN" and run["end_time"] == 0 and run["status"]["state"] == "RUNNING"
    assert run["run_page_url"] == f"{fake.url}/?o=1234567890#job/{run['job_id']}/run/{held}"
    assert [t["task_key"] for t in run["tasks"]] == ["main"] and run["tasks"][0]["run_id"] == fake.run(
        held
    ).task_run_ids[0]
    assert fake.run(held).command == []  # held runs do not execute

    listed = call(fake, "GET", "2.2/jobs/runs/list", {"active_only": "true"}).json()
    assert [r["run_id"] for r in listed["runs"]] == [held] and listed["has_more"] is False

    assert call(fake, "POST", "2.2/jobs/runs/cancel", {"run_id": held}).json() == {}
    done = wait_for(lambda: (r := get_run(fake, held))["state"]["life_cycle_state"] == "TERMINATED" and r, 10, 0.05)
    assert done["state"]["result_state"] == "CANCELED" and done["state"]["user_cancelled_or_timedout"] is True
    assert done["status"] == {
        "state": "TERMINATED",
        "termination_details": {"code": "USER_CANCELED", "type": "SUCCESS", "message": done["state"]["state_message"]},
    }
    assert done["end_time"] >= done["start_time"] > 0
    assert call(fake, "POST", "2.2/jobs/runs/cancel", {"run_id": held}).json() == {}  # no-op once finished
    assert call(fake, "GET", "2.2/jobs/runs/list", {"active_only": "true"}).json() == {"has_more": False}
    completed = call(fake, "GET", "2.2/jobs/runs/list", {"completed_only": "true"}).json()["runs"]
    assert [r["run_id"] for r in completed] == [held]


def test_runs_list_pages_newest_first(fake):
    fake.hold = True
    ids = [submit(fake).json()["run_id"] for _ in range(3)]
    page = call(fake, "GET", "2.2/jobs/runs/list", {"limit": 2}).json()
    assert [r["run_id"] for r in page["runs"]] == ids[:0:-1] and page["has_more"] is True
    rest = call(fake, "GET", "2.2/jobs/runs/list", {"limit": 2, "page_token": page["next_page_token"]}).json()
    assert [r["run_id"] for r in rest["runs"]] == [ids[0]] and rest["has_more"] is False
    assert call(fake, "GET", "2.2/jobs/runs/list", {"limit": 26}).status_code == 400


def test_get_and_get_output_refusals(fake):
    fake.hold = True
    run_id = submit(fake).json()["run_id"]
    response = call(fake, "GET", "2.2/jobs/runs/get-output", {"run_id": run_id})
    assert response.status_code == 400
    assert response.json()["message"].startswith("Retrieving the output of runs with multiple tasks is not supported.")
    task_run = fake.run(run_id).task_run_ids[0]
    output = call(fake, "GET", "2.2/jobs/runs/get-output", {"run_id": task_run}).json()
    assert output["metadata"]["run_id"] == task_run and "error" not in output
    response = call(fake, "GET", "2.2/jobs/runs/get", {"run_id": 999999})
    assert response.status_code == 400 and response.json()["message"] == "Run 999999 does not exist."
    response = call(fake, "GET", "2.2/jobs/runs/get", {"run_id": "abc"})
    assert response.status_code == 400


def test_missing_python_file_and_uninstallable_library_fail_the_run(fake):
    missing = submit(fake).json()["run_id"]
    library = call(
        fake,
        "POST",
        "2.2/jobs/runs/submit",
        {"tasks": [task(libraries=[{"pypi": {"package": "requests<1"}}])]},
    ).json()["run_id"]
    for run_id in (missing, library):
        wait_for(lambda: fake.run(run_id).life_cycle_state == "INTERNAL_ERROR", 30, 0.05)
    assert fake.run(missing).state_message.startswith("Cannot read the python file /Workspace/Users/me/job.py")
    state = get_run(fake, library)["state"]
    assert state["result_state"] == "FAILED"
    assert state["state_message"].startswith("Library installation failed for library due to user error")
    assert fake.run(library).command == []


def test_workspace_round_trip(fake):
    content = base64.b64encode(b"print('hi')\n").decode()
    body = {"path": "/Users/me/app/job.py", "content": content, "format": "AUTO"}
    response = call(fake, "POST", "2.0/workspace/import", body)
    assert response.status_code == 404 and response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    assert call(fake, "POST", "2.0/workspace/mkdirs", {"path": "/Users/me/app"}).json() == {}
    assert call(fake, "POST", "2.0/workspace/mkdirs", {"path": "/Workspace/Users/me/app"}).status_code == 200
    assert call(fake, "GET", "2.0/workspace/list", {"path": "/Users/me/app"}).json() == {}
    assert call(fake, "POST", "2.0/workspace/import", body).json() == {}
    again = call(fake, "POST", "2.0/workspace/import", body)
    assert again.status_code == 400 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    assert call(fake, "POST", "2.0/workspace/import", {**body, "overwrite": True}).status_code == 200
    bad_format = call(fake, "POST", "2.0/workspace/import", {**body, "format": "ZIP"})
    assert bad_format.status_code == 400 and "format" in bad_format.json()["message"]

    local = fake.workspace_file("/Users/me/app/job.py")
    assert local == fake.workspace_file("/Workspace/Users/me/app/job.py") == fake.root / "workspace/Users/me/app/job.py"
    assert local.read_bytes() == b"print('hi')\n"
    exported = call(fake, "GET", "2.0/workspace/export", {"path": "/Users/me/app/job.py", "format": "SOURCE"}).json()
    assert base64.b64decode(exported["content"]) == b"print('hi')\n"

    status = call(fake, "GET", "2.0/workspace/get-status", {"path": "/Users/me/app/job.py"}).json()
    assert status["object_type"] == "FILE" and status["path"] == "/Users/me/app/job.py" and status["size"] == 12
    listed = call(fake, "GET", "2.0/workspace/list", {"path": "/Users/me/app"}).json()["objects"]
    assert [(o["path"], o["object_type"], o["object_id"]) for o in listed] == [
        ("/Users/me/app/job.py", "FILE", status["object_id"])
    ]
    folder = call(fake, "GET", "2.0/workspace/get-status", {"path": "/Users/me"}).json()
    assert folder["object_type"] == "DIRECTORY"

    # a SOURCE import with a language makes a notebook, which a spark_python_task cannot run
    notebook = {"path": "/Users/me/app/nb.py", "content": content, "format": "SOURCE", "language": "PYTHON"}
    assert call(fake, "POST", "2.0/workspace/import", notebook).status_code == 200
    status = call(fake, "GET", "2.0/workspace/get-status", {"path": "/Users/me/app/nb.py"}).json()
    assert status["object_type"] == "NOTEBOOK"

    not_empty = call(fake, "POST", "2.0/workspace/delete", {"path": "/Users/me/app"})
    assert not_empty.status_code == 400 and not_empty.json()["error_code"] == "DIRECTORY_NOT_EMPTY"
    assert call(fake, "POST", "2.0/workspace/delete", {"path": "/Users/me/app", "recursive": True}).json() == {}
    gone = call(fake, "GET", "2.0/workspace/get-status", {"path": "/Users/me/app/job.py"})
    assert gone.status_code == 404 and gone.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert not local.exists()


def test_the_airflow_databricks_hook_talks_to_it(fake, monkeypatch):
    from airflow.providers.databricks.hooks.databricks import DatabricksHook

    conn = {"conn_type": "databricks", "host": "127.0.0.1", "port": fake.port, "schema": "http", "password": TOKEN}
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_FAKE", json.dumps(conn))
    hook = DatabricksHook(databricks_conn_id="databricks_fake", retry_limit=1)
    fake.hold = True
    run_id = hook.submit_run({"run_name": "via-hook", "tasks": [task()], "idempotency_token": "hook-1"})
    assert fake.run(run_id).run_name == "via-hook"
    assert ("POST", "/api/2.2/jobs/runs/submit") in fake.requests_seen
    assert hook.get_run(run_id)["run_id"] == run_id
    assert hook.get_run_page_url(run_id).startswith(f"{fake.url}/?o=")
    assert hook.get_run_state(run_id).life_cycle_state in ("PENDING", "RUNNING")
    hook.cancel_run(run_id)
    wait_for(lambda: hook.get_run_state(run_id).is_terminal, 10, 0.05)
    assert hook.get_run_state(run_id).result_state == "CANCELED"
    assert hook.get_run_output(fake.run(run_id).task_run_ids[0])["metadata"]["state"]["result_state"] == "CANCELED"


@pytest.mark.spark
def test_a_failing_job_runs_with_spark_submit_and_reports_its_error(fake):
    job = (
        "import sys\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "print('rows', spark.range(3).count(), 'conf', spark.conf.get('spark.fake.flag'))\n"
        "open(sys.argv[1], 'w').write('from the job')\n"
        "raise ValueError('boom')\n"
    )
    call(fake, "POST", "2.0/workspace/mkdirs", {"path": "/Users/me"})
    body = {"path": "/Users/me/job.py", "content": base64.b64encode(job.encode()).decode(), "format": "RAW"}
    assert call(fake, "POST", "2.0/workspace/import", body).status_code == 200
    spark_task = task(
        spark_python_task={"python_file": "/Workspace/Users/me/job.py", "parameters": ["/Workspace/Users/me/out.txt"]},
        new_cluster={"num_workers": 0, "spark_conf": {"spark.fake.flag": "on"}},
    )
    run_id = call(fake, "POST", "2.2/jobs/runs/submit", {"tasks": [spark_task]}).json()["run_id"]
    run = wait_for(lambda: (r := get_run(fake, run_id))["state"]["life_cycle_state"] == "TERMINATED" and r, 120)
    assert run["state"]["result_state"] == "FAILED", fake.run(run_id).stderr
    assert run["status"]["termination_details"]["code"] == "RUN_EXECUTION_ERROR"
    assert run["tasks"][0]["execution_duration"] > 0 and run["run_duration"] > 0
    assert fake.workspace_file("/Users/me/out.txt").read_text() == "from the job"
    assert "--conf" in fake.run(run_id).command and "spark.fake.flag=on" in fake.run(run_id).command

    output = call(fake, "GET", "2.2/jobs/runs/get-output", {"run_id": run["tasks"][0]["run_id"]}).json()
    assert output["error"] == "ValueError: boom"
    assert output["error_trace"].startswith("Traceback (most recent call last):")
    assert output["error_trace"].endswith("ValueError: boom")
    assert "rows 3 conf on" in output["logs"] and output["logs_truncated"] is False
    assert output["metadata"]["state"]["result_state"] == "FAILED"
