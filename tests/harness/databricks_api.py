"""A Databricks workspace for tests: a stateful fake of the Jobs runs API and the Workspace API,
served over HTTP on 127.0.0.1 so that the real ``DatabricksHook`` (``requests`` against
``http://127.0.0.1:<port>/api/...`` with a bearer token) talks to it unchanged.

Request bodies and query strings are checked against databricks-sdk's own schema (the keyword
parameters of ``JobsAPI``/``WorkspaceAPI`` methods and the dataclasses they take), so an unknown
field, a wrong type or a bad enum value fails here as it would fail there, with Databricks'
``{"error_code", "message"}`` errors. Workspace objects live in ``root/workspace``; on a
"cluster" they also appear under ``/Workspace/...`` (the FUSE mount), which the harness maps to
the same local files.

A submitted run's single ``spark_python_task`` really runs, in ``root/runs/<run_id>``: its
libraries are installed (a workspace wheel with ``pip --target`` into the run's ``site`` folder;
a PyPI requirement only if this interpreter already satisfies it, as if the cluster image had
it; anything else fails the run as a library installation error), then pyspark's local
``spark-submit`` runs the python file with its parameters (``/Workspace/...`` ones rewritten to
the local files) and the cluster's ``spark_conf``. The exit code gives the result; the Python
traceback (which spark-submit merges into stdout) gives get-output's ``error``/``error_trace``.
``hold = True`` keeps new runs RUNNING without executing them, to test cancelling and polling.

    fake = FakeDatabricks(tmp_path).start()
    ...  # connection: host 127.0.0.1, port fake.port, schema http, password fake.token
    fake.stop()
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import importlib.metadata
import inspect
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import typing
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from types import NoneType, UnionType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from databricks.sdk.service.jobs import JobsAPI, SubmitTask
from databricks.sdk.service.workspace import WorkspaceAPI
from packaging.requirements import InvalidRequirement, Requirement

from airflow_spark_portable.engines.local import pyspark_home

LOG_LIMIT = 5 * 1024 * 1024  # get-output returns the last 5 MB of the logs
ACTIVE = ("PENDING", "QUEUED", "RUNNING", "TERMINATING", "BLOCKED")
WORKSPACE_DIRS = ("/Workspace/", "/Users/", "/Shared/")  # the paths a run can read (the FUSE mount)
STATUS = {  # others: 400
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "ENDPOINT_NOT_FOUND": 404,
}
VERSIONS = {"jobs": ("2.1", "2.2"), "workspace": ("2.0",)}
ROUTES = {  # (method, path after /api/<version>/) -> (the SDK method whose parameters it takes, handler)
    ("POST", "jobs/runs/submit"): (JobsAPI.submit, "_submit"),
    ("GET", "jobs/runs/get"): (JobsAPI.get_run, "_get_run"),
    ("GET", "jobs/runs/get-output"): (JobsAPI.get_run_output, "_get_output"),
    ("POST", "jobs/runs/cancel"): (JobsAPI.cancel_run, "_cancel"),
    ("GET", "jobs/runs/list"): (JobsAPI.list_runs, "_list_runs"),
    ("POST", "workspace/import"): (WorkspaceAPI.import_, "_ws_import"),
    ("GET", "workspace/export"): (WorkspaceAPI.export, "_ws_export"),
    ("GET", "workspace/get-status"): (WorkspaceAPI.get_status, "_ws_get_status"),
    ("GET", "workspace/list"): (WorkspaceAPI.list, "_ws_list"),
    ("POST", "workspace/mkdirs"): (WorkspaceAPI.mkdirs, "_ws_mkdirs"),
    ("POST", "workspace/delete"): (WorkspaceAPI.delete, "_ws_delete"),
}


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, STATUS.get(code, 400)


def _invalid(message: str) -> ApiError:
    return ApiError("INVALID_PARAMETER_VALUE", message)


# --- the SDK schema: one recursive check over type hints ---------------------------------------


@functools.cache
def _fields(target) -> dict[str, tuple[Any, bool]]:
    """JSON field -> (type hint, required) of an SDK method's parameters or an SDK dataclass."""
    hints = typing.get_type_hints(target)
    if dataclasses.is_dataclass(target):
        missing = dataclasses.MISSING
        return {
            f.name.rstrip("_"): (hints[f.name], f.default is missing and f.default_factory is missing)
            for f in dataclasses.fields(target)
        }
    params = list(inspect.signature(target).parameters.values())[1:]  # drop self
    return {p.name: (hints[p.name], p.default is p.empty) for p in params}


def _optional(hint):
    """X for Optional[X], else the hint itself."""
    if typing.get_origin(hint) in (typing.Union, UnionType):
        rest = [a for a in typing.get_args(hint) if a is not NoneType]
        return rest[0] if len(rest) == 1 else Any
    return hint


def _check_object(value: Any, fields: dict[str, tuple[Any, bool]], where: str) -> None:
    if not isinstance(value, dict):
        raise _invalid(f"Invalid value for {where or 'the request body'}: expected an object")
    prefix = f"{where}." if where else ""
    for key in value:
        if key not in fields:
            raise _invalid(f"Unknown field: {prefix}{key}")
    for key, (hint, required) in fields.items():
        if value.get(key) is None:
            if required:
                raise _invalid(f"Missing required field: {prefix}{key}")
        else:
            _check(value[key], hint, f"{prefix}{key}")


def _check(value: Any, hint: Any, where: str) -> None:
    hint = _optional(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise _invalid(f"Invalid value for {where}: expected an array")
        for i, item in enumerate(value):
            _check(item, args[0] if args else Any, f"{where}[{i}]")
    elif origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise _invalid(f"Invalid value for {where}: expected an object")
        for key, item in value.items():
            _check(item, args[1] if args else Any, f"{where}.{key}")
    elif isinstance(hint, type) and issubclass(hint, Enum):
        allowed = [e.value for e in hint]
        if value not in allowed:
            raise _invalid(f"Invalid value {value!r} for {where}: expected one of {', '.join(allowed)}")
    elif dataclasses.is_dataclass(hint):
        _check_object(value, _fields(hint), where)
    elif hint in (str, int, bool, float):
        if not isinstance(value, (int, float) if hint is float else hint) or (
            hint is not bool and isinstance(value, bool)
        ):
            raise _invalid(f"Invalid value for {where}: expected {hint.__name__}, got {type(value).__name__}")
    else:
        raise TypeError(f"the fake cannot check {where}: {hint!r}")  # a new SDK type shape: extend _check


def _query_args(query: str, method) -> dict[str, Any]:
    """Query string -> typed arguments (an unknown key stays a string, for _check_object to refuse)."""
    fields, args = _fields(method), {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        hint, value = _optional(fields.get(key, (str, False))[0]), values[-1]
        try:
            if hint is bool:
                value = {"true": True, "false": False}[value.lower()]
            elif hint in (int, float):
                value = hint(value)
        except (KeyError, ValueError):
            raise _invalid(f"Invalid value for {key}: {value!r}") from None
        args[key] = value
    return args


# --- runs ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class FakeRun:
    run_id: int
    payload: dict
    task_run_ids: list[int]
    run_name: str
    idempotency_token: str | None = None
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = ""
    termination: tuple[str, str] | None = None  # status.termination_details (code, type)
    cancelled: bool = False
    times: dict[str, int] = dataclasses.field(default_factory=dict)  # ms epoch: submit, running, ending, end
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    command: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    error_trace: str | None = None
    proc: subprocess.Popen | None = dataclasses.field(default=None, repr=False)

    @property
    def task(self) -> dict:
        return self.payload["tasks"][0]


def _ms() -> int:
    return int(time.time() * 1000)


def _span(times: dict[str, int], start: str, end: str) -> int:
    return times[end] - times[start] if start in times and end in times else 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


class FakeDatabricks:
    """The workspace and its jobs service; see the module docstring."""

    def __init__(self, root: Path, token: str = "dapi-test-token") -> None:
        self.root, self.token = Path(root), token
        self.host, self.port, self.url = "127.0.0.1", 0, ""
        self.hold = False  # when True, new runs stay RUNNING and are not executed
        self.denied: set[str] = set()  # endpoints ("jobs/runs/get") answered 403 PERMISSION_DENIED
        self.requests_seen: list[tuple[str, str]] = []
        self._runs: dict[int, FakeRun] = {}
        self._task_runs: dict[int, FakeRun] = {}  # task run id -> its (single-task) run
        self._tokens: dict[str, int] = {}
        self._notebooks: dict[str, str] = {}  # workspace path -> language: imported as notebooks
        self._ids = itertools.count(1001)
        self._object_ids: dict[str, int] = {}
        self._lock = threading.RLock()
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        for folder in ("Users", "Shared"):
            (self.root / "workspace" / folder).mkdir(parents=True, exist_ok=True)

    def start(self) -> FakeDatabricks:
        self._server = ThreadingHTTPServer((self.host, 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self
        self.port = self._server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-databricks", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for run in self.runs():
            if run.proc is not None and run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGKILL)

    def runs(self) -> list[FakeRun]:
        with self._lock:
            return list(self._runs.values())

    def run(self, run_id: int) -> FakeRun:
        return self._runs[run_id]

    def workspace_file(self, path: str) -> Path:
        if not path.startswith("/"):
            raise _invalid(f"Path ({path}) must be absolute")
        rel = path.removeprefix("/Workspace") if path == "/Workspace" or path.startswith("/Workspace/") else path
        base = self.root / "workspace"
        local = Path(os.path.normpath(base / rel.lstrip("/")))
        if local != base and base not in local.parents:
            raise _invalid(f"Path ({path}) is outside the workspace")
        return local

    # --- HTTP -------------------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> tuple[int, dict]:
        url = urlsplit(request.path)
        self.requests_seen.append((method, url.path))
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        try:
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError("UNAUTHENTICATED", "Credential was not sent or was of an unsupported type for this API.")
            version, _, endpoint = url.path.removeprefix("/api/").partition("/")
            route = ROUTES.get((method, endpoint))
            if not route or version not in VERSIONS[endpoint.partition("/")[0]]:
                raise ApiError("ENDPOINT_NOT_FOUND", f"No API found for '{method} {url.path}'")
            if endpoint in self.denied:  # e.g. a grant revoked while the run goes on
                raise ApiError("PERMISSION_DENIED", f"User does not have permission to call {endpoint}")
            if method == "GET":
                args = _query_args(url.query, route[0])
                if body:  # the provider's async hook sends GET arguments as a JSON body
                    try:
                        args.update(json.loads(body))
                    except ValueError:
                        raise ApiError("MALFORMED_REQUEST", "Invalid JSON given in the body of the request") from None
            else:
                try:
                    args = json.loads(body or b"{}")
                except ValueError:
                    raise ApiError("MALFORMED_REQUEST", "Invalid JSON given in the body of the request") from None
            _check_object(args, _fields(route[0]), "")
            return 200, getattr(self, route[1])(args)
        except ApiError as e:
            return e.status, {"error_code": e.code, "message": e.message}

    # --- jobs -------------------------------------------------------------------------------------

    def _submit(self, body: dict) -> dict:
        tasks, environments = body.get("tasks") or [], {e["environment_key"] for e in body.get("environments") or []}
        if not tasks:
            raise _invalid("At least one task is required.")
        if len(tasks) > 1:
            raise _invalid("The fake runs one task per submitted run")
        for i, task in enumerate(tasks):
            kinds = [k for k in _fields(SubmitTask) if k.endswith("_task") and task.get(k) is not None]
            if kinds != ["spark_python_task"]:
                raise _invalid(f"tasks[{i}] must have exactly one task type, spark_python_task here (got {kinds})")
            computes = [k for k in ("new_cluster", "existing_cluster_id", "environment_key") if task.get(k)]
            if len(computes) != 1:
                raise _invalid(f"tasks[{i}] needs exactly one of new_cluster, existing_cluster_id, environment_key")
            if task.get("environment_key") and task["environment_key"] not in environments:
                raise _invalid(f"tasks[{i}].environment_key {task['environment_key']!r} is not in environments")
            if task.get("environment_key") and task.get("libraries"):
                raise _invalid(
                    "Libraries field is not supported for serverless task, please specify libraries in environment."
                )
        with self._lock:
            token = body.get("idempotency_token")
            if token in self._tokens:
                return {"run_id": self._tokens[token]}
            run = FakeRun(next(self._ids), body, [next(self._ids)], body.get("run_name") or "Untitled", token)
            run.times["submit"] = _ms()
            self._runs[run.run_id] = run
            self._task_runs[run.task_run_ids[0]] = run
            if token is not None:
                self._tokens[token] = run.run_id
        threading.Thread(target=self._execute, args=(run,), name=f"fake-run-{run.run_id}", daemon=True).start()
        return {"run_id": run.run_id}

    def _find(self, run_id: int) -> FakeRun:
        run = self._runs.get(run_id) or self._task_runs.get(run_id)
        if run is None:
            raise _invalid(f"Run {run_id} does not exist.")
        return run

    def _get_run(self, args: dict) -> dict:
        run = self._find(args["run_id"])
        return self._run_json(run) if run.run_id == args["run_id"] else self._task_json(run)

    def _get_output(self, args: dict) -> dict:
        run = self._find(args["run_id"])
        if run.run_id == args["run_id"]:
            raise _invalid(
                "Retrieving the output of runs with multiple tasks is not supported. "
                "Please retrieve the output of each individual task run instead."
            )
        out = {"metadata": self._task_json(run)}
        if run.life_cycle_state not in ACTIVE:
            data = run.stdout.encode()
            out |= {"logs": data[-LOG_LIMIT:].decode(errors="ignore"), "logs_truncated": len(data) > LOG_LIMIT}
        if run.error is not None:
            out |= {"error": run.error, "error_trace": run.error_trace or ""}
        return out

    def _cancel(self, args: dict) -> dict:
        with self._lock:
            run = self._find(args["run_id"])
            if run.life_cycle_state not in ACTIVE or run.cancelled:
                return {}
            run.cancelled, run.life_cycle_state = True, "TERMINATING"
            run.times.setdefault("ending", _ms())
            if run.proc is not None and run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGTERM)
        return {}

    def _list_runs(self, args: dict) -> dict:
        if args.get("active_only") and args.get("completed_only"):
            raise _invalid("Only one of active_only and completed_only can be true")
        limit, offset = args.get("limit") or 25, args.get("offset") or 0
        if not 0 < limit <= 25:
            raise _invalid(f"limit must be between 1 and 25, got {limit}")
        if args.get("page_token"):
            if not args["page_token"].isdigit():
                raise _invalid(f"Invalid page_token {args['page_token']!r}")
            offset = int(args["page_token"])
        wanted = {"active_only": ACTIVE, "completed_only": ("TERMINATED", "INTERNAL_ERROR", "SKIPPED")}
        runs = [
            r
            for r in reversed(self.runs())
            if all(r.life_cycle_state in states for flag, states in wanted.items() if args.get(flag))
            and args.get("run_type", "SUBMIT_RUN") == "SUBMIT_RUN"
        ]  # (job_id and start_time_* are accepted and ignored: every run here is a one-time run)
        page = [self._run_json(r, tasks=bool(args.get("expand_tasks"))) for r in runs[offset : offset + limit]]
        more = offset + limit < len(runs)
        return (
            ({"runs": page} if page else {})
            | {"has_more": more}
            | ({"next_page_token": str(offset + limit)} if more else {})
        )

    def _common_json(self, run: FakeRun, run_id: int, run_name: str) -> dict:
        """What a run and its task run share (one task: one state)."""
        state = {"life_cycle_state": run.life_cycle_state, "state_message": run.state_message}
        state |= {"result_state": run.result_state} if run.result_state else {}
        state["user_cancelled_or_timedout"] = run.cancelled
        done = run.life_cycle_state in ("TERMINATED", "INTERNAL_ERROR", "SKIPPED")
        status: dict[str, Any] = {"state": "TERMINATED" if done else run.life_cycle_state}
        if done and run.termination:
            code, kind = run.termination
            status["termination_details"] = {"code": code, "type": kind, "message": run.state_message}
        job_id = 900_000 + run.run_id  # a one-time run has an anonymous job of its own
        page_url = f"{self.url}/?o=1234567890#job/{job_id}/run/{run_id}"
        return dict(job_id=job_id, run_id=run_id, run_name=run_name, run_page_url=page_url, state=state, status=status)

    def _task_json(self, run: FakeRun) -> dict:
        with self._lock:
            t, cluster = run.times, run.task.get("existing_cluster_id") or f"0101-000000-fake{run.run_id}"
            return {
                **run.task,
                **self._common_json(run, run.task_run_ids[0], run.task["task_key"]),
                **dict(start_time=t["submit"], end_time=t.get("end", 0), setup_duration=_span(t, "submit", "running")),
                **dict(execution_duration=_span(t, "running", "ending"), cleanup_duration=_span(t, "ending", "end")),
                **({} if run.task.get("environment_key") else {"cluster_instance": {"cluster_id": cluster}}),
            }

    def _run_json(self, run: FakeRun, tasks: bool = True) -> dict:
        with self._lock:
            out = self._common_json(run, run.run_id, run.run_name) | {"run_type": "SUBMIT_RUN", "format": "MULTI_TASK"}
            out |= dict(start_time=run.times["submit"], end_time=run.times.get("end", 0))
            # a multi-task run reports its length as run_duration only, as Databricks does
            out |= dict(setup_duration=0, execution_duration=0, cleanup_duration=0)
            out["run_duration"] = _span(run.times, "submit", "end")
            return out | ({"tasks": [self._task_json(run)]} if tasks else {})

    # --- executing a run -----------------------------------------------------------------------------

    def _finish(self, run: FakeRun, life: str, result: str, message: str, code: str, kind: str) -> None:
        with self._lock:
            if run.cancelled:  # whatever the run was doing when the user cancelled it
                life, result, code, kind = "TERMINATED", "CANCELED", "USER_CANCELED", "SUCCESS"
                message = "Run cancelled."
            run.times.setdefault("ending", _ms())
            run.life_cycle_state, run.result_state, run.state_message = life, result, message
            run.termination, run.times["end"] = (code, kind), _ms()

    def _execute(self, run: FakeRun) -> None:
        try:
            self._execute_run(run)
        except Exception as e:  # a harness bug must not leave the run RUNNING for ever
            self._finish(run, "INTERNAL_ERROR", "FAILED", f"fake Databricks: {e!r}", "INTERNAL_ERROR", "INTERNAL_ERROR")
            raise

    def _execute_run(self, run: FakeRun) -> None:
        folder = self.root / "runs" / str(run.run_id)  # the "driver": cwd, and site/ for the libraries
        (folder / "site").mkdir(parents=True)
        failure = self._install_libraries(run, folder / "site")
        if failure:
            message = f"Library installation failed for library due to user error {failure}"
            return self._finish(run, "INTERNAL_ERROR", "FAILED", message, "LIBRARY_INSTALLATION_ERROR", "CLIENT_ERROR")
        with self._lock:
            if not run.cancelled:
                run.life_cycle_state, run.times["running"] = "RUNNING", _ms()
        while self.hold and not run.cancelled and not self._stopping:
            time.sleep(0.05)
        spark_task = run.task["spark_python_task"]
        source = spark_task["python_file"]
        local = self.workspace_file(source) if source.startswith(WORKSPACE_DIRS) else None
        if run.cancelled or self._stopping:
            return self._finish(run, "TERMINATED", "CANCELED", "", "CANCELED", "SUCCESS")
        if local is None or not local.is_file() or self._ws_path(source) in self._notebooks:
            message = f"Cannot read the python file {source}. Please check driver logs for more details."
            return self._finish(run, "INTERNAL_ERROR", "FAILED", message, "RESOURCE_NOT_FOUND", "CLIENT_ERROR")
        cluster = run.task.get("new_cluster") or {}
        confs = [a for k, v in (cluster.get("spark_conf") or {}).items() for a in ("--conf", f"{k}={v}")]
        params = spark_task.get("parameters") or []
        # a trailing "/" (a folder the job writes into) survives the mapping
        params = [
            str(self.workspace_file(p)) + ("/" if p.endswith("/") else "") if p.startswith("/Workspace/") else p
            for p in params
        ]
        run.command = [str(pyspark_home() / "bin/spark-submit"), "--master", "local[1]", *confs, str(local), *params]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env |= cluster.get("spark_env_vars") or {}
        env |= {
            "SPARK_HOME": str(pyspark_home()),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYTHONPATH": str(folder / "site"),  # what the libraries installed (and pyspark's own)
        }
        with self._lock:
            if run.cancelled:
                return self._finish(run, "TERMINATED", "CANCELED", "", "USER_CANCELED", "SUCCESS")
            run.proc = subprocess.Popen(
                run.command, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
            )
        out, err = run.proc.communicate()
        run.returncode = run.proc.returncode
        run.stdout, run.stderr = out.decode(errors="replace"), err.decode(errors="replace")
        if run.cancelled:  # TERMINATING lasts until the driver's Python, in the same group, is gone too
            deadline = time.monotonic() + 5
            while _group_alive(run.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            return self._finish(run, "TERMINATED", "CANCELED", "", "USER_CANCELED", "SUCCESS")
        if run.returncode == 0:
            return self._finish(run, "TERMINATED", "SUCCESS", "", "SUCCESS", "SUCCESS")
        # spark-submit merges the Python driver's stderr into its stdout; its own errors go to stderr
        for text in (run.stdout, run.stderr):
            errors = [line for line in text.splitlines() if re.match(r"^\w+(\.\w+)*(Error|Exception): ", line)]
            if errors:
                run.error, start = errors[-1], text.rfind("Traceback (most recent call last):")
                end = text.rfind(run.error)
                run.error_trace = text[start : end + len(run.error)] if 0 <= start < end else run.error
                break
        else:
            run.error = f"Process exited with code {run.returncode}"
        message = "Workload failed, see run output for details"
        self._finish(run, "TERMINATED", "FAILED", message, "RUN_EXECUTION_ERROR", "CLIENT_ERROR")

    def _install_libraries(self, run: FakeRun, site: Path) -> str | None:
        """Install the run's libraries into ``site``; a description of the first failure, if any."""
        libraries = list(run.task.get("libraries") or [])
        for env in run.payload.get("environments") or []:
            if env["environment_key"] == run.task.get("environment_key"):
                deps = (env.get("spec") or {}).get("dependencies") or []
                libraries += [
                    {"whl": d} if d.endswith(".whl") and d.startswith("/") else {"pypi": {"package": d}} for d in deps
                ]
        for library in libraries:
            ((kind, value),) = library.items()
            what = f"for {kind}: {json.dumps(value)}. Error messages:\n"
            if kind == "whl":
                wheel = self.workspace_file(value) if value.startswith(WORKSPACE_DIRS) else None
                if wheel is None or not wheel.is_file():
                    return f"{what}File {value} does not exist or is not accessible"
                pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", site]
                done = subprocess.run([*pip, wheel], capture_output=True, text=True)
                if done.returncode != 0:
                    return what + done.stderr.strip()
            elif kind == "pypi":
                try:
                    requirement, version = Requirement(value["package"]), None
                    version = importlib.metadata.version(requirement.name)
                except (InvalidRequirement, importlib.metadata.PackageNotFoundError):
                    pass
                if version is None or not requirement.specifier.contains(version, prereleases=True):
                    found = f"the test interpreter has {version}" if version else "not in the test interpreter"
                    return f"{what}ERROR: Could not find a version that satisfies the requirement ({found})"
            else:
                return f"{what}the fake installs only whl and pypi libraries"
        return None

    # --- workspace ------------------------------------------------------------------------------------

    def _ws_path(self, path: str) -> str:
        """The canonical workspace path (no /Workspace prefix, no trailing slash)."""
        return str(PurePosixPath("/", self.workspace_file(path).relative_to(self.root / "workspace")))

    def _object_info(self, path: str) -> dict:
        local, path = self.workspace_file(path), self._ws_path(path)
        if not local.exists():
            raise ApiError("RESOURCE_DOES_NOT_EXIST", f"Path ({path}) doesn't exist.")
        with self._lock:
            info = {"path": path, "object_id": self._object_ids.setdefault(path, next(self._ids))}
        if local.is_dir():
            return info | {"object_type": "DIRECTORY"}
        stat = local.stat()
        info |= dict(size=stat.st_size, modified_at=int(stat.st_mtime * 1000), created_at=int(stat.st_ctime * 1000))
        language = self._notebooks.get(path)
        return info | ({"object_type": "NOTEBOOK", "language": language} if language else {"object_type": "FILE"})

    def _ws_import(self, args: dict) -> dict:
        try:
            data = base64.b64decode(args.get("content") or "", validate=True)
        except ValueError:
            raise _invalid("content is not valid base64") from None
        fmt, path = args.get("format") or "SOURCE", self._ws_path(args["path"])
        # SOURCE (the default) and the notebook formats make a notebook, RAW a file; AUTO makes a
        # notebook of a file with the notebook header, and then drops its extension
        notebook = fmt not in ("RAW", "AUTO") or data.startswith(b"# Databricks notebook source")
        if notebook and fmt == "SOURCE" and not args.get("language"):
            raise _invalid("To import a single file as SOURCE, you must set the language field.")
        if notebook and fmt == "AUTO":
            path = str(PurePosixPath(path).with_suffix(""))
        local = self.workspace_file(path)
        if not local.parent.is_dir():
            parent = PurePosixPath(path).parent
            raise ApiError("RESOURCE_DOES_NOT_EXIST", f"The parent folder ({parent}) does not exist.")
        if local.is_dir() or (local.exists() and not args.get("overwrite")):
            raise ApiError("RESOURCE_ALREADY_EXISTS", f"{path} already exists.")
        local.write_bytes(data)
        with self._lock:
            self._notebooks.pop(path, None)
            if notebook:
                self._notebooks[path] = args.get("language") or "PYTHON"
        return {}

    def _ws_export(self, args: dict) -> dict:
        info = self._object_info(args["path"])
        if info["object_type"] == "DIRECTORY":
            raise _invalid("The fake exports files and notebooks only")
        data = self.workspace_file(args["path"]).read_bytes()
        return {"content": base64.b64encode(data).decode(), "file_type": Path(info["path"]).suffix.lstrip(".")}

    def _ws_get_status(self, args: dict) -> dict:
        return self._object_info(args["path"])

    def _ws_list(self, args: dict) -> dict:
        info, local = self._object_info(args["path"]), self.workspace_file(args["path"])
        if info["object_type"] != "DIRECTORY":
            return {"objects": [info]}
        prefix = info["path"].rstrip("/")
        objects = [self._object_info(f"{prefix}/{child.name}") for child in sorted(local.iterdir())]
        return {"objects": objects} if objects else {}

    def _ws_mkdirs(self, args: dict) -> dict:
        path = PurePosixPath(self._ws_path(args["path"]))
        for folder in (path, *path.parents):
            if self.workspace_file(str(folder)).is_file():
                raise ApiError("RESOURCE_ALREADY_EXISTS", f"{folder} exists and is not a directory")
        self.workspace_file(str(path)).mkdir(parents=True, exist_ok=True)
        return {}

    def _ws_delete(self, args: dict) -> dict:
        info, local = self._object_info(args["path"]), self.workspace_file(args["path"])
        if info["object_type"] != "DIRECTORY":
            local.unlink()
        elif any(local.iterdir()) and not args.get("recursive"):
            raise ApiError("DIRECTORY_NOT_EMPTY", f"Folder ({info['path']}) is not empty.")
        else:
            shutil.rmtree(local)
        with self._lock:
            for path in [p for p in self._notebooks if p == info["path"] or p.startswith(info["path"] + "/")]:
                del self._notebooks[path]
        return {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read requests_seen instead
        pass

    def _reply(self, method: str) -> None:
        status, payload = self.server.fake._handle(self, method)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply("GET")

    def do_POST(self) -> None:
        self._reply("POST")
