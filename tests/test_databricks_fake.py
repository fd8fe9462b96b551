"""The fake Databricks workspace (tests/harness/databricks_api.py) behaves like the real API where
our engine depends on it, and is at least as strict: auth and identities, SCIM Me, folder ACLs and
the Permissions API, schema checks, import limits and atomicity, lost acknowledgements, compute
checks, serverless environments and Spark Connect, secrets, run start, idempotent submit, dynamic
value references, run life cycle, output. Sources: tests/harness/README.md ("Databricks")."""

from __future__ import annotations

import base64
import json
import threading

import pytest
import requests
from conftest import wait_for
from harness.databricks_api import IMPORT_LIMIT, SERVERLESS_CONFS, FakeDatabricks

TOKEN = "dapi-test-token"
HOME = "/Users/runner@example.com"  # the default identity's home folder
OTHER, OTHER_TOKEN = "other@example.com", "dapi-other"
SP = "9f3c6a1e-0d2b-4c4e-8a57-3b1f2d7e6c90"  # a service principal's name is its application id


@pytest.fixture
def fake(tmp_path):
    fake = FakeDatabricks(tmp_path).start()
    yield fake
    fake.stop()


def call(fake, method: str, path: str, body: dict | None = None, token: str = TOKEN) -> requests.Response:
    kwargs = {"params": body} if method == "GET" else {"json": body}
    return requests.request(
        method, f"{fake.url}/api/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10, **kwargs
    )


def task(**overrides) -> dict:
    return {
        "task_key": "main",
        "spark_python_task": {"python_file": f"/Workspace{HOME}/job.py", "parameters": ["--x", "1"]},
        "new_cluster": {"spark_version": "15.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 1},
        **overrides,
    }


def submit(fake, token: str = TOKEN, **body) -> requests.Response:
    return call(fake, "POST", "2.2/jobs/runs/submit", {"run_name": "t", "tasks": [task()], **body}, token=token)


def get_run(fake, run_id: int, token: str = TOKEN) -> dict:
    response = call(fake, "GET", "2.1/jobs/runs/get", {"run_id": run_id}, token=token)
    assert response.status_code == 200, response.text
    return response.json()


def put(fake, path: str, data: bytes, token: str = TOKEN, **extra) -> requests.Response:
    body = {"path": path, "content": base64.b64encode(data).decode(), "format": "RAW", **extra}
    return call(fake, "POST", "2.0/workspace/import", body, token=token)


def error(response: requests.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("error_code", "")


def hook(fake, monkeypatch, token: str = TOKEN, **kwargs):
    from airflow.providers.databricks.hooks.databricks import DatabricksHook

    conn = {"conn_type": "databricks", "host": "127.0.0.1", "port": fake.port, "schema": "http", "password": token}
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_FAKE", json.dumps(conn))
    return DatabricksHook(databricks_conn_id="databricks_fake", **{"retry_limit": 1, **kwargs})


def ended(fake, run_id: int, timeout: float = 30):
    return wait_for(
        lambda: fake.run(run_id).life_cycle_state in ("TERMINATED", "INTERNAL_ERROR") and fake.run(run_id),
        timeout,
        0.05,
    )


# --- identities ------------------------------------------------------------------------------------


def test_every_request_needs_a_known_bearer_token(fake):
    for token in ("", "wrong"):
        response = call(fake, "GET", "2.2/jobs/runs/list", token=token)
        assert error(response) == (401, "UNAUTHENTICATED")
    assert call(fake, "GET", "2.2/jobs/runs/list").status_code == 200
    assert ("GET", "/api/2.2/jobs/runs/list") in fake.requests_seen
    fake.add_identity(OTHER, OTHER_TOKEN)
    assert call(fake, "GET", "2.2/jobs/runs/list", token=OTHER_TOKEN).status_code == 200
    with pytest.raises(ValueError, match="application id"):
        fake.add_identity("my-sp", "dapi-sp", service_principal=True)
    with pytest.raises(ValueError, match="exists already"):
        fake.add_identity("third@example.com", OTHER_TOKEN)


def test_scim_me_returns_the_caller_a_service_principal_as_a_user_named_by_its_application_id(fake):
    fake.add_identity(SP, "dapi-sp", service_principal=True)
    fake.add_identity("boss@example.com", "dapi-boss", admin=True)
    me = call(fake, "GET", "2.0/preview/scim/v2/Me").json()
    assert me["userName"] == fake.user == "runner@example.com" and me["active"] is True
    assert me["schemas"][0] == "urn:ietf:params:scim:schemas:core:2.0:User"
    assert me["emails"][0]["value"] == "runner@example.com" and "groups" not in me
    sp = call(fake, "GET", "2.0/preview/scim/v2/Me", token="dapi-sp").json()
    assert sp["userName"] == SP and sp["schemas"] == me["schemas"] and "emails" not in sp and sp["id"] != me["id"]
    boss = call(fake, "GET", "2.0/preview/scim/v2/Me", {"attributes": "userName,groups"}, token="dapi-boss").json()
    assert set(boss) == {"schemas", "id", "userName", "groups"} and boss["groups"][0]["display"] == "admins"
    assert call(fake, "GET", "2.0/preview/scim/v2/Me", {"bogus": "1"}).status_code == 400


# --- workspace ACLs --------------------------------------------------------------------------------


def test_home_folders_are_private_and_shared_belongs_to_every_user(fake):
    fake.add_identity(OTHER, OTHER_TOKEN)
    fake.add_identity("boss@example.com", "dapi-boss", admin=True)
    assert fake.acl(HOME) == {"runner@example.com": "CAN_MANAGE", "group:admins": "CAN_MANAGE"}
    assert fake.acl("/Workspace/Shared/x") == {"group:users": "CAN_MANAGE", "group:admins": "CAN_MANAGE"}
    assert put(fake, f"{HOME}/mine.txt", b"mine").status_code == 200
    for method, endpoint, body in [
        ("GET", "2.0/workspace/list", {"path": HOME}),
        ("GET", "2.0/workspace/get-status", {"path": f"{HOME}/mine.txt"}),
        ("GET", "2.0/workspace/export", {"path": f"{HOME}/mine.txt", "format": "SOURCE"}),
        ("POST", "2.0/workspace/mkdirs", {"path": f"{HOME}/theirs"}),
        ("POST", "2.0/workspace/delete", {"path": f"{HOME}/mine.txt"}),
    ]:
        assert error(call(fake, method, endpoint, body, token=OTHER_TOKEN)) == (403, "PERMISSION_DENIED"), endpoint
    assert error(put(fake, f"{HOME}/theirs.txt", b"x", token=OTHER_TOKEN)) == (403, "PERMISSION_DENIED")
    # only admins create objects at the root and in /Users; a user cannot make a home for someone
    assert error(call(fake, "POST", "2.0/workspace/mkdirs", {"path": "/Users/me"})) == (403, "PERMISSION_DENIED")
    assert error(call(fake, "GET", "2.0/workspace/list", {"path": "/Users"})) == (403, "PERMISSION_DENIED")
    assert call(fake, "POST", "2.0/workspace/mkdirs", {"path": "/Users/me"}, token="dapi-boss").status_code == 200
    assert call(fake, "GET", "2.0/workspace/list", {"path": HOME}, token="dapi-boss").status_code == 200
    # /Shared is open to the users group: one user writes, another changes it
    assert call(fake, "POST", "2.0/workspace/mkdirs", {"path": "/Shared/team"}).status_code == 200
    assert put(fake, "/Shared/team/a.txt", b"a").status_code == 200
    assert put(fake, "/Shared/team/a.txt", b"b", token=OTHER_TOKEN, overwrite=True).status_code == 200
    assert (
        call(
            fake, "POST", "2.0/workspace/delete", {"path": "/Shared/team", "recursive": True}, token=OTHER_TOKEN
        ).json()
        == {}
    )


def test_grants_inherit_down_folders_and_each_level_allows_what_the_docs_say(fake):
    fake.add_identity(OTHER, OTHER_TOKEN)
    assert call(fake, "POST", "2.0/workspace/mkdirs", {"path": f"{HOME}/team/sub"}).status_code == 200
    assert put(fake, f"{HOME}/team/sub/a.txt", b"a").status_code == 200
    reads = [
        ("GET", "2.0/workspace/list", {"path": f"{HOME}/team/sub"}),
        ("GET", "2.0/workspace/get-status", {"path": f"{HOME}/team/sub/a.txt"}),
        ("GET", "2.0/workspace/export", {"path": f"{HOME}/team/sub/a.txt", "format": "SOURCE"}),
    ]
    writes = [
        ("POST", "2.0/workspace/mkdirs", {"path": f"{HOME}/team/sub/new"}),
        ("POST", "2.0/workspace/delete", {"path": f"{HOME}/team/sub/a.txt"}),
    ]
    for level, can_read, can_write in [("CAN_READ", True, False), ("CAN_RUN", True, False), ("CAN_EDIT", True, True)]:
        fake.grant(f"/Workspace{HOME}/team", OTHER, level)  # on the parent: inherited by sub/ and a.txt
        assert fake.acl(f"{HOME}/team/sub/a.txt")[OTHER] == level
        for method, endpoint, body in reads:
            assert (call(fake, method, endpoint, body, token=OTHER_TOKEN).status_code == 200) is can_read, (
                level,
                endpoint,
            )
        assert (
            put(fake, f"{HOME}/team/sub/b.txt", b"b", token=OTHER_TOKEN, overwrite=True).status_code == 200
        ) is can_write
        for method, endpoint, body in writes:
            assert (call(fake, method, endpoint, body, token=OTHER_TOKEN).status_code == 200) is can_write, (
                level,
                endpoint,
            )
    # the creator of an object manages it, also after the grant on its folder is gone
    fake.grant(f"{HOME}/team", OTHER, None)
    assert OTHER not in fake.acl(f"{HOME}/team/sub")
    assert fake.acl(f"{HOME}/team/sub/b.txt")[OTHER] == "CAN_MANAGE"
    with pytest.raises(ValueError, match="does not exist"):
        fake.grant(f"{HOME}/nothing", OTHER, "CAN_READ")
    with pytest.raises(ValueError, match="add_identity"):
        fake.grant(f"{HOME}/team", "nobody@example.com", "CAN_READ")


def test_the_permissions_api_shows_direct_and_inherited_grants_and_patch_put_change_them(fake, monkeypatch):
    fake.add_identity(OTHER, OTHER_TOKEN)
    fake.add_identity(SP, "dapi-sp", service_principal=True)
    assert call(fake, "POST", "2.0/workspace/mkdirs", {"path": f"{HOME}/team"}).status_code == 200
    folder = call(fake, "GET", "2.0/workspace/get-status", {"path": f"{HOME}/team"}).json()["object_id"]
    home = call(fake, "GET", "2.0/workspace/get-status", {"path": HOME}).json()["object_id"]
    got = call(fake, "GET", f"2.0/permissions/directories/{folder}").json()
    assert got["object_id"] == f"/directories/{folder}" and got["object_type"] == "directory"
    entries = {e.get("user_name") or e.get("group_name"): e["all_permissions"] for e in got["access_control_list"]}
    assert entries["runner@example.com"] == [
        {"permission_level": "CAN_MANAGE", "inherited": False},  # its creator
        {"permission_level": "CAN_MANAGE", "inherited": True, "inherited_from_object": [f"/directories/{home}"]},
    ]
    assert entries["admins"] == [
        {"permission_level": "CAN_MANAGE", "inherited": True, "inherited_from_object": ["/directories/"]}
    ]

    # PATCH through the provider's hook (it sends GET, POST, PATCH and DELETE only)
    body = {"access_control_list": [{"user_name": OTHER, "permission_level": "CAN_READ"}]}
    patched = hook(fake, monkeypatch)._do_api_call(("PATCH", f"2.0/permissions/directories/{folder}"), body)
    assert {
        "user_name": OTHER,
        "display_name": "other",
        "all_permissions": [{"permission_level": "CAN_READ", "inherited": False}],
    } in patched["access_control_list"]
    assert fake.acl(f"{HOME}/team")[OTHER] == "CAN_READ"
    sp = {"access_control_list": [{"service_principal_name": SP, "permission_level": "CAN_EDIT"}]}
    assert call(fake, "PATCH", f"2.0/permissions/directories/{folder}", sp).status_code == 200
    assert fake.acl(f"{HOME}/team")[OTHER] == "CAN_READ" and fake.acl(f"{HOME}/team")[SP] == "CAN_EDIT"
    # PUT replaces the direct grants (the creator's too); inherited ones stay
    assert call(fake, "PUT", f"2.0/permissions/directories/{folder}", {"access_control_list": []}).status_code == 200
    assert fake.acl(f"{HOME}/team") == {"runner@example.com": "CAN_MANAGE", "group:admins": "CAN_MANAGE"}

    # reading or changing permissions takes CAN_MANAGE; ids and principals must exist
    fake.grant(f"{HOME}/team", OTHER, "CAN_EDIT")
    assert error(call(fake, "GET", f"2.0/permissions/directories/{folder}", token=OTHER_TOKEN)) == (
        403,
        "PERMISSION_DENIED",
    )
    assert error(call(fake, "PATCH", f"2.0/permissions/directories/{folder}", body, token=OTHER_TOKEN)) == (
        403,
        "PERMISSION_DENIED",
    )
    assert error(call(fake, "GET", "2.0/permissions/directories/999999")) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert error(call(fake, "GET", f"2.0/permissions/files/{folder}")) == (404, "RESOURCE_DOES_NOT_EXIST")
    nobody = {"access_control_list": [{"user_name": "nobody@example.com", "permission_level": "CAN_READ"}]}
    assert error(call(fake, "PATCH", f"2.0/permissions/directories/{folder}", nobody)) == (
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    bad = {"access_control_list": [{"user_name": OTHER, "permission_level": "CAN_ATTACH_TO"}]}
    assert error(call(fake, "PATCH", f"2.0/permissions/directories/{folder}", bad)) == (400, "INVALID_PARAMETER_VALUE")
    assert error(call(fake, "DELETE", f"2.0/permissions/directories/{folder}")) == (404, "ENDPOINT_NOT_FOUND")

    # files have permissions of their own
    assert put(fake, f"{HOME}/team/a.txt", b"a").status_code == 200
    file_id = call(fake, "GET", "2.0/workspace/get-status", {"path": f"{HOME}/team/a.txt"}).json()["object_id"]
    got = call(fake, "GET", f"2.0/permissions/files/{file_id}").json()
    assert got["object_id"] == f"/files/{file_id}" and got["object_type"] == "file"


# --- schema checks ---------------------------------------------------------------------------------


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
        ([task(existing_cluster_id="0101-nope", new_cluster=None)], "Cluster 0101-nope does not exist"),
        ([], "At least one task"),
    ],
)
def test_submit_rejects_what_the_sdk_schema_rejects(fake, tasks, names):
    response = call(fake, "POST", "2.2/jobs/runs/submit", {"run_name": "t", "tasks": tasks})
    assert error(response) == (400, "INVALID_PARAMETER_VALUE"), response.text
    assert names in response.json()["message"]
    assert fake.runs() == []


def test_unknown_top_level_field_and_bad_json_are_refused(fake):
    response = submit(fake, bogus=True)
    assert response.status_code == 400 and "bogus" in response.json()["message"]
    response = requests.post(
        f"{fake.url}/api/2.1/jobs/runs/submit", data="{", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert error(response) == (400, "MALFORMED_REQUEST")


# --- import ---------------------------------------------------------------------------------------


def test_import_refuses_content_over_10_mb_of_base64(fake):
    # the limit is on the base64 text: 7.5 MiB of data is 10 MiB of base64
    fits = b"#" * (IMPORT_LIMIT // 4 * 3)
    assert put(fake, f"{HOME}/fits.py", fits).status_code == 200
    response = put(fake, f"{HOME}/big.py", fits + b"###")
    assert error(response) == (400, "MAX_NOTEBOOK_SIZE_EXCEEDED")
    assert "exceeded max size (10485760 bytes)" in response.json()["message"]
    assert not fake.workspace_file(f"{HOME}/big.py").exists()


def test_concurrent_imports_of_one_path_without_overwrite_let_exactly_one_win(fake):
    start, answers = threading.Barrier(8), []

    def one(i: int) -> None:
        start.wait(timeout=10)
        answers.append((i, put(fake, f"{HOME}/race.txt", f"writer {i}".encode())))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    won = [i for i, response in answers if response.status_code == 200]
    assert len(answers) == 8 and len(won) == 1
    assert {error(r) for _, r in answers if r.status_code != 200} == {(400, "RESOURCE_ALREADY_EXISTS")}
    assert fake.workspace_file(f"{HOME}/race.txt").read_text() == f"writer {won[0]}"


def test_a_lost_acknowledgement_is_retried_by_the_hook_after_the_request_took_effect(fake, monkeypatch):
    from airflow.exceptions import AirflowException
    from tenacity import stop_after_attempt, wait_fixed

    retrying = hook(fake, monkeypatch, retry_args={"stop": stop_after_attempt(3), "wait": wait_fixed(0.05)})
    body = {"path": f"{HOME}/a.txt", "content": base64.b64encode(b"once").decode(), "format": "RAW"}
    fake.fail_after_commit("workspace/import", status=503)
    with pytest.raises(AirflowException, match="RESOURCE_ALREADY_EXISTS"):  # the retry meets its own import
        retrying._do_api_call(("POST", "2.0/workspace/import"), body)
    assert fake.workspace_file(f"{HOME}/a.txt").read_bytes() == b"once"
    assert fake.requests_seen.count(("POST", "/api/2.0/workspace/import")) == 2

    # a submit retried after a dropped connection: the idempotency token gives back the same run
    fake.hold = True
    fake.fail_after_commit("jobs/runs/submit", status=0)
    run_id = retrying.submit_run({"run_name": "t", "tasks": [task()], "idempotency_token": "tok-lost"})
    assert [r.run_id for r in fake.runs()] == [run_id]
    fake.fail_after_commit("jobs/runs/submit", status=500)  # without a token: a second run
    retrying.submit_run({"run_name": "t", "tasks": [task()]})
    assert len(fake.runs()) == 3
    with pytest.raises(ValueError, match="status 404"):
        fake.fail_after_commit("jobs/runs/submit", status=404)


def test_workspace_round_trip(fake):
    content = base64.b64encode(b"print('hi')\n").decode()
    body = {"path": f"{HOME}/app/job.py", "content": content, "format": "AUTO"}
    assert error(call(fake, "POST", "2.0/workspace/import", body)) == (404, "RESOURCE_DOES_NOT_EXIST")

    assert call(fake, "POST", "2.0/workspace/mkdirs", {"path": f"{HOME}/app"}).json() == {}
    assert call(fake, "POST", "2.0/workspace/mkdirs", {"path": f"/Workspace{HOME}/app"}).status_code == 200
    assert call(fake, "GET", "2.0/workspace/list", {"path": f"{HOME}/app"}).json() == {}
    assert call(fake, "POST", "2.0/workspace/import", body).json() == {}
    again = call(fake, "POST", "2.0/workspace/import", body)
    assert error(again) == (400, "RESOURCE_ALREADY_EXISTS")
    assert again.json()["message"] == f"Path ({HOME}/app/job.py) already exists."
    assert call(fake, "POST", "2.0/workspace/import", {**body, "overwrite": True}).status_code == 200
    bad_format = call(fake, "POST", "2.0/workspace/import", {**body, "format": "ZIP"})
    assert bad_format.status_code == 400 and "format" in bad_format.json()["message"]

    local = fake.workspace_file(f"{HOME}/app/job.py")
    assert local == fake.workspace_file(f"/Workspace{HOME}/app/job.py") == fake.root / f"workspace{HOME}/app/job.py"
    assert local.read_bytes() == b"print('hi')\n"
    exported = call(fake, "GET", "2.0/workspace/export", {"path": f"{HOME}/app/job.py", "format": "SOURCE"}).json()
    assert base64.b64decode(exported["content"]) == b"print('hi')\n"

    status = call(fake, "GET", "2.0/workspace/get-status", {"path": f"{HOME}/app/job.py"}).json()
    assert status["object_type"] == "FILE" and status["path"] == f"{HOME}/app/job.py" and status["size"] == 12
    listed = call(fake, "GET", "2.0/workspace/list", {"path": f"{HOME}/app"}).json()["objects"]
    assert [(o["path"], o["object_type"], o["object_id"]) for o in listed] == [
        (f"{HOME}/app/job.py", "FILE", status["object_id"])
    ]
    folder = call(fake, "GET", "2.0/workspace/get-status", {"path": HOME}).json()
    assert folder["object_type"] == "DIRECTORY"

    # a SOURCE import with a language makes a notebook, which a spark_python_task cannot run
    notebook = {"path": f"{HOME}/app/nb.py", "content": content, "format": "SOURCE", "language": "PYTHON"}
    assert call(fake, "POST", "2.0/workspace/import", notebook).status_code == 200
    status = call(fake, "GET", "2.0/workspace/get-status", {"path": f"{HOME}/app/nb.py"}).json()
    assert status["object_type"] == "NOTEBOOK"

    not_empty = call(fake, "POST", "2.0/workspace/delete", {"path": f"{HOME}/app"})
    assert error(not_empty) == (400, "DIRECTORY_NOT_EMPTY")
    assert call(fake, "POST", "2.0/workspace/delete", {"path": f"{HOME}/app", "recursive": True}).json() == {}
    gone = call(fake, "GET", "2.0/workspace/get-status", {"path": f"{HOME}/app/job.py"})
    assert error(gone) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert not local.exists()
    # a user cannot delete their own home folder: that needs CAN_EDIT on /Users
    assert error(call(fake, "POST", "2.0/workspace/delete", {"path": HOME, "recursive": True})) == (
        403,
        "PERMISSION_DENIED",
    )


# --- runs: start, tokens, visibility ------------------------------------------------------------------


def test_a_run_is_pending_before_it_runs(fake):
    fake.hold, fake.start_delay, fake.cluster_start_delay = True, 0.3, 0.3
    run_id = submit(fake).json()["run_id"]
    assert get_run(fake, run_id)["state"]["life_cycle_state"] == "PENDING"
    wait_for(lambda: get_run(fake, run_id)["state"]["life_cycle_state"] == "RUNNING", 10, 0.05)
    run = fake.run(run_id)
    assert run.times["running"] - run.times["submit"] >= 600  # start_delay + cluster_start_delay
    assert get_run(fake, run_id)["tasks"][0]["setup_duration"] >= 600
    # a run cancelled while PENDING never starts
    fake.start_delay = 5
    pending = submit(fake).json()["run_id"]
    assert call(fake, "POST", "2.2/jobs/runs/cancel", {"run_id": pending}).json() == {}
    done = ended(fake, pending)
    assert done.result_state == "CANCELED" and "running" not in done.times


def test_an_idempotency_token_gives_back_its_run(fake):
    fake.hold = True
    first = submit(fake, idempotency_token="tok-1").json()["run_id"]
    assert submit(fake, idempotency_token="tok-1").json()["run_id"] == first
    other = submit(fake, idempotency_token="tok-2").json()["run_id"]
    assert other != first
    assert [r.run_id for r in fake.runs()] == [first, other]
    assert fake.run(first).idempotency_token == "tok-1"
    assert error(submit(fake, idempotency_token="x" * 65)) == (400, "INVALID_PARAMETER_VALUE")

    # by default a token keeps its run after the run ended (the current API reference)
    call(fake, "POST", "2.2/jobs/runs/cancel", {"run_id": first})
    ended(fake, first)
    assert submit(fake, idempotency_token="tok-1").json()["run_id"] == first
    fake.token_dedupes_finished_runs = False  # the older "an active run" reading
    again = submit(fake, idempotency_token="tok-1").json()["run_id"]
    assert again not in (first, other) and submit(fake, idempotency_token="tok-1").json()["run_id"] == again


def test_runs_are_visible_to_their_submitter_admins_and_their_acl_only(fake):
    fake.add_identity(OTHER, OTHER_TOKEN)
    fake.add_identity("boss@example.com", "dapi-boss", admin=True)
    fake.hold = True
    mine = submit(fake).json()["run_id"]
    assert get_run(fake, mine)["creator_user_name"] == "runner@example.com"
    assert error(call(fake, "GET", "2.2/jobs/runs/get", {"run_id": mine}, token=OTHER_TOKEN)) == (
        403,
        "PERMISSION_DENIED",
    )
    assert error(call(fake, "POST", "2.2/jobs/runs/cancel", {"run_id": mine}, token=OTHER_TOKEN)) == (
        403,
        "PERMISSION_DENIED",
    )
    assert call(fake, "GET", "2.2/jobs/runs/list", token=OTHER_TOKEN).json() == {"has_more": False}
    assert get_run(fake, mine, token="dapi-boss")["run_id"] == mine
    viewed = submit(fake, access_control_list=[{"user_name": OTHER, "permission_level": "CAN_VIEW"}]).json()["run_id"]
    assert [r["run_id"] for r in call(fake, "GET", "2.2/jobs/runs/list", token=OTHER_TOKEN).json()["runs"]] == [viewed]
    assert error(call(fake, "POST", "2.2/jobs/runs/cancel", {"run_id": viewed}, token=OTHER_TOKEN))[0] == 403

    # run_as: a user runs as themself; only admins name another identity
    as_other = {"run_as": {"user_name": OTHER}}
    assert error(submit(fake, **as_other)) == (403, "PERMISSION_DENIED")
    assert fake.run(submit(fake, token="dapi-boss", **as_other).json()["run_id"]).run_as == OTHER
    assert error(submit(fake, run_as={"user_name": "nobody@example.com"}, token="dapi-boss"))[0] == 400


# --- compute, environments, secrets -------------------------------------------------------------------


def test_existing_clusters_must_exist_and_single_user_clusters_serve_their_user(fake):
    fake.add_identity(OTHER, OTHER_TOKEN)
    fake.add_cluster("0101-mine")  # single user: fake.user
    fake.add_cluster("0101-shared", data_security_mode="USER_ISOLATION")
    with pytest.raises(ValueError, match="data_security_mode"):
        fake.add_cluster("0101-x", data_security_mode="SHARED")
    fake.grant(HOME, OTHER, "CAN_READ")
    on = lambda cluster: [task(existing_cluster_id=cluster, new_cluster=None)]
    refused = submit(fake, token=OTHER_TOKEN, tasks=on("0101-mine")).json()["run_id"]
    run = ended(fake, refused)
    assert run.termination == ("UNAUTHORIZED_ERROR", "CLIENT_ERROR") and run.proc is None
    assert run.state_message.startswith("Single-user check failed: user 'other@example.com' attempted to run")
    fake.hold = True
    assert submit(fake, tasks=on("0101-mine")).status_code == 200
    assert submit(fake, token=OTHER_TOKEN, tasks=on("0101-shared")).status_code == 200


def _serverless(spec: dict | None) -> dict:
    return {
        "tasks": [task(new_cluster=None, environment_key="default")],
        "environments": [{"environment_key": "default", **({"spec": spec} if spec is not None else {})}],
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (None, "needs environment_version or base_environment"),
        ({"dependencies": ["x"]}, "Either environment_version or base_environment needs to be provided"),
        ({"client": "2"}, "Either environment_version or base_environment needs to be provided"),
        ({"client": "2", "environment_version": "2"}, "client is deprecated"),
        ({"environment_version": "2", "base_environment": "/Workspace/env.yaml"}, "not both"),
        ({"environment_version": "9"}, "'9' is not one of 1, 2, 3, 4, 5"),
        ({"environment_version": "2", "python": "3.12"}, "Unknown field: environments[0].spec.python"),
    ],
)
def test_serverless_environment_specs_are_checked_at_submit(fake, spec, message):
    response = call(fake, "POST", "2.2/jobs/runs/submit", {"run_name": "t", **_serverless(spec)})
    assert error(response) == (400, "INVALID_PARAMETER_VALUE") and message in response.json()["message"]
    assert fake.runs() == []


def test_a_serverless_base_environment_must_be_readable_when_the_run_starts(fake):
    spec = {"base_environment": f"/Workspace{HOME}/env.yaml"}
    run = ended(fake, call(fake, "POST", "2.2/jobs/runs/submit", _serverless(spec)).json()["run_id"])
    assert run.termination == ("INVALID_RUN_CONFIGURATION", "CLIENT_ERROR") and run.proc is None
    put(fake, f"{HOME}/env.yaml", b"environment_version: '2'\ndependencies:\n  - requests<1\n")
    run = ended(fake, call(fake, "POST", "2.2/jobs/runs/submit", _serverless(spec)).json()["run_id"])
    assert run.termination[0] == "LIBRARY_INSTALLATION_ERROR" and "requests<1" in run.state_message  # its dependency


def test_a_missing_secret_fails_the_cluster_start_before_the_job_runs(fake):
    fake.secret_scopes["app"] = {"token": "s3cret"}
    runs = {}
    for name, value in [("scope", "{{secrets/nope/token}}"), ("key", "{{secrets/app/nope}}")]:
        cluster = {"num_workers": 0, "spark_conf": {"spark.app.token": value}}
        runs[name] = submit(fake, tasks=[task(new_cluster=cluster)]).json()["run_id"]
    env = {"num_workers": 0, "spark_env_vars": {"TOKEN": "{{secrets/app/nope}}"}}
    runs["env"] = submit(fake, tasks=[task(new_cluster=env)]).json()["run_id"]
    for name, run_id in runs.items():
        run = ended(fake, run_id)
        assert (run.life_cycle_state, run.result_state) == ("INTERNAL_ERROR", "FAILED")
        assert run.termination == ("CLUSTER_ERROR", "CLIENT_ERROR") and run.proc is None and run.command == []
        assert "SECRET_RESOLUTION_ERROR" in run.state_message and "Failed to fetch secrets" in run.state_message
    assert "the secret scope nope does not exist" in fake.run(runs["scope"]).state_message
    assert "the secret nope does not exist in the scope app" in fake.run(runs["key"]).state_message


def test_dynamic_value_references_are_checked_at_submit_and_replaced_at_run_time(fake):
    def with_parameters(*parameters):
        return [task(spark_python_task={"python_file": f"{HOME}/job.py", "parameters": list(parameters)})]

    for bad in ("{{job.naem}}", "x-{{ task.nme }}", "{{tasks.main.run_id}}", "{{job.parameters.day}}"):
        response = submit(fake, tasks=with_parameters(bad))
        assert (
            error(response) == (400, "INVALID_PARAMETER_VALUE")
            and "not a valid dynamic value reference" in response.json()["message"]
        )
    fake.hold = True
    parameters = [
        "--messages", f"/Workspace{HOME}/messages/{{{{job.run_id}}}}/",
        "{{task.run_id}}", "{{job.id}}-{{task.name}}-{{job.name}}", "{{ job.start_time.iso_datetime }}",
        "{{job.start_time.iso_date}}", "{{workspace.id}}",
        "{{job.run_id}", "{{my.value}}", "{{secrets/app/token}}",  # syntax errors and other braces stay literal
    ]  # fmt: skip
    run_id = submit(fake, run_name="named", tasks=with_parameters(*parameters)).json()["run_id"]
    run = wait_for(lambda: fake.run(run_id).parameters and fake.run(run_id), 10, 0.05)
    job = get_run(fake, run_id)
    start = __import__("datetime").datetime.fromtimestamp(job["start_time"] / 1000, __import__("datetime").UTC)
    assert run.parameters == [
        "--messages", f"/Workspace{HOME}/messages/{run_id}/",
        str(run.task_run_ids[0]), f"{job['job_id']}-main-named", start.strftime("%Y-%m-%dT%H:%M:%S"),
        start.date().isoformat(), "1234567890",
        "{{job.run_id}", "{{my.value}}", "{{secrets/app/token}}",
    ]  # fmt: skip
    assert job["tasks"][0]["spark_python_task"]["parameters"] == parameters  # runs/get shows what was submitted


# --- run life cycle, output ---------------------------------------------------------------------------


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


def test_missing_unreadable_python_files_and_libraries_fail_the_run(fake):
    fake.add_identity(OTHER, OTHER_TOKEN)
    missing = submit(fake, tasks=[task(spark_python_task={"python_file": f"/Workspace{HOME}/missing.py"})]).json()[
        "run_id"
    ]
    library = call(
        fake, "POST", "2.2/jobs/runs/submit", {"tasks": [task(libraries=[{"pypi": {"package": "requests<1"}}])]}
    ).json()["run_id"]
    # files in the submitter's home, run by someone who cannot read them
    put(fake, f"{HOME}/job.py", b"print('hi')\n")
    put(fake, f"{HOME}/lib-1.0-py3-none-any.whl", b"not read")
    unreadable = submit(fake, token=OTHER_TOKEN).json()["run_id"]
    wheel = [
        task(
            spark_python_task={"python_file": f"/Users/{OTHER}/job.py"},
            libraries=[{"whl": f"/Workspace{HOME}/lib-1.0-py3-none-any.whl"}],
        )
    ]
    unreadable_wheel = submit(fake, token=OTHER_TOKEN, tasks=wheel).json()["run_id"]
    for run_id in (missing, library, unreadable, unreadable_wheel):
        ended(fake, run_id)
    assert fake.run(missing).state_message.startswith(f"Cannot read the python file /Workspace{HOME}/missing.py")
    assert fake.run(missing).termination == ("RESOURCE_NOT_FOUND", "CLIENT_ERROR")
    state = get_run(fake, library)["state"]
    assert state["result_state"] == "FAILED"
    assert state["state_message"].startswith("Library installation failed for library due to user error")
    assert fake.run(library).command == []
    assert fake.run(unreadable).termination == ("UNAUTHORIZED_ERROR", "CLIENT_ERROR")
    assert "other@example.com does not have Read permissions" in fake.run(unreadable).state_message
    assert fake.run(unreadable_wheel).termination == ("LIBRARY_INSTALLATION_ERROR", "CLIENT_ERROR")
    assert "other@example.com cannot read it" in fake.run(unreadable_wheel).state_message


def test_the_airflow_databricks_hook_talks_to_it(fake, monkeypatch):
    via_hook = hook(fake, monkeypatch)
    fake.hold = True
    run_id = via_hook.submit_run({"run_name": "via-hook", "tasks": [task()], "idempotency_token": "hook-1"})
    assert fake.run(run_id).run_name == "via-hook"
    assert ("POST", "/api/2.2/jobs/runs/submit") in fake.requests_seen
    assert via_hook.get_run(run_id)["run_id"] == run_id
    assert via_hook.get_run_page_url(run_id).startswith(f"{fake.url}/?o=")
    assert via_hook.get_run_state(run_id).life_cycle_state in ("PENDING", "RUNNING")
    via_hook.cancel_run(run_id)
    wait_for(lambda: via_hook.get_run_state(run_id).is_terminal, 10, 0.05)
    assert via_hook.get_run_state(run_id).result_state == "CANCELED"
    assert via_hook.get_run_output(fake.run(run_id).task_run_ids[0])["metadata"]["state"]["result_state"] == "CANCELED"


# --- real runs: spark-submit and Spark Connect ----------------------------------------------------------


@pytest.mark.spark
def test_a_failing_job_runs_with_spark_submit_sees_its_secrets_and_reports_its_error(fake):
    job = (
        "import os, sys\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "print('rows', spark.range(3).count(), 'conf', spark.conf.get('spark.fake.flag'))\n"
        "print('secret', spark.conf.get('spark.fake.password'), os.environ['FAKE_TOKEN'], spark.sparkContext.master)\n"
        "open(sys.argv[1] + 'out.txt', 'w').write(' '.join(sys.argv[2:]))\n"
        "raise ValueError('boom')\n"
    )
    fake.secret_scopes["app"] = {"password": "pa55", "token": "t0ken"}
    call(fake, "POST", "2.0/workspace/mkdirs", {"path": f"{HOME}/out"})
    assert put(fake, f"{HOME}/job.py", job.encode()).status_code == 200
    cluster = {
        "num_workers": 0,
        "spark_conf": {"spark.fake.flag": "on", "spark.fake.password": "{{secrets/app/password}}"},
        "spark_env_vars": {"FAKE_TOKEN": "{{secrets/app/token}}"},
    }
    parameters = [f"/Workspace{HOME}/out/", "{{job.run_id}}", "{{task.name}}"]
    spark_task = task(
        spark_python_task={"python_file": f"/Workspace{HOME}/job.py", "parameters": parameters}, new_cluster=cluster
    )
    run_id = call(fake, "POST", "2.2/jobs/runs/submit", {"tasks": [spark_task]}).json()["run_id"]
    run = wait_for(lambda: (r := get_run(fake, run_id))["state"]["life_cycle_state"] == "TERMINATED" and r, 120)
    assert run["state"]["result_state"] == "FAILED", fake.run(run_id).stderr
    assert run["status"]["termination_details"]["code"] == "RUN_EXECUTION_ERROR"
    assert run["tasks"][0]["execution_duration"] > 0 and run["run_duration"] > 0
    assert fake.workspace_file(f"{HOME}/out/out.txt").read_text() == f"{run_id} main"
    command = fake.run(run_id).command
    assert "--conf" in command and "spark.fake.flag=on" in command and "--remote" not in command
    assert not any("pa55" in part or "t0ken" in part for part in command)  # resolved secrets stay off it

    output = call(fake, "GET", "2.2/jobs/runs/get-output", {"run_id": run["tasks"][0]["run_id"]}).json()
    assert output["error"] == "ValueError: boom"
    assert output["error_trace"].startswith("Traceback (most recent call last):")
    assert output["error_trace"].endswith("ValueError: boom")
    assert "rows 3 conf on" in output["logs"] and "secret pa55 t0ken local[1]" in output["logs"]
    assert output["logs_truncated"] is False and output["metadata"]["state"]["result_state"] == "FAILED"


CONNECT_JOB = """
import json, sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
seen = {"module": type(spark).__module__, "rows": spark.range(4).count()}
def attempt(name, action):
    try:
        action()
        seen[name] = "ok"
    except Exception as exc:
        seen[name] = f"{type(exc).__name__}: {exc}"
attempt("sparkContext", lambda: spark.sparkContext)
attempt("rdd", lambda: spark.range(2).rdd.count())
attempt("allowed", lambda: spark.conf.set("spark.sql.shuffle.partitions", "7"))
attempt("other", lambda: spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "1"))
attempt("sql_set", lambda: spark.sql("SET spark.sql.adaptive.enabled = false"))
seen["partitions"] = spark.conf.get("spark.sql.shuffle.partitions")
open(sys.argv[1], "w").write(json.dumps(seen))
"""


@pytest.mark.spark
def test_serverless_and_standard_access_mode_run_through_spark_connect(fake):
    assert put(fake, f"{HOME}/connect.py", CONNECT_JOB.encode()).status_code == 200
    fake.add_cluster("0101-standard", data_security_mode="USER_ISOLATION")

    def body(out: str, **compute) -> dict:
        spark_task = {"python_file": f"/Workspace{HOME}/connect.py", "parameters": [f"/Workspace{HOME}/{out}"]}
        return {"tasks": [task(spark_python_task=spark_task, new_cluster=None, **compute)]}

    serverless = {**body("serverless.json", environment_key="default")}
    serverless["environments"] = [{"environment_key": "default", "spec": {"environment_version": "2"}}]
    ids = {
        "serverless": call(fake, "POST", "2.2/jobs/runs/submit", serverless).json()["run_id"],
        "standard": call(
            fake, "POST", "2.2/jobs/runs/submit", body("standard.json", existing_cluster_id="0101-standard")
        ).json()["run_id"],
    }  # both at once: one Connect start-up's wait, not two
    for name, run_id in ids.items():
        run = ended(fake, run_id, timeout=180)
        assert run.result_state == "SUCCESS", (name, run.stdout[-3000:], run.stderr[-3000:])
        assert "--remote" in run.command and "--master" not in run.command
    seen = {name: json.loads(fake.workspace_file(f"{HOME}/{name}.json").read_text()) for name in ids}
    refused = (
        "[CONFIG_NOT_AVAILABLE] Configuration spark.sql.autoBroadcastJoinThreshold is not available. SQLSTATE: 42K0I"
    )
    for name in ids:
        assert seen[name]["module"] == "pyspark.sql.connect.session" and seen[name]["rows"] == 4
        assert seen[name]["sparkContext"].startswith("PySparkAttributeError: [JVM_ATTRIBUTE_NOT_SUPPORTED]")
        assert seen[name]["rdd"].startswith("PySparkNotImplementedError")
        assert seen[name]["allowed"] == "ok" and seen[name]["partitions"] == "7"
    assert seen["serverless"]["other"] == f"AnalysisException: {refused}"
    assert seen["serverless"]["sql_set"].startswith(
        "AnalysisException: [CONFIG_NOT_AVAILABLE] Configuration spark.sql.adaptive.enabled"
    )
    assert seen["standard"]["other"] == "ok" and seen["standard"]["sql_set"] == "ok"  # standard mode takes any conf
    assert "spark.sql.shuffle.partitions" in SERVERLESS_CONFS and len(SERVERLESS_CONFS) == 6
