"""A Databricks workspace for tests: a stateful fake of the Jobs runs API, the Workspace API, folder
permissions and SCIM ``Me``, served over HTTP on 127.0.0.1 so that the real ``DatabricksHook``
(``requests`` against ``http://127.0.0.1:<port>/api/...`` with a bearer token) talks to it unchanged.

It is meant to be at least as strict as Databricks: where the documentation says what Databricks
does it does that, and where the documentation is silent it does what makes a client fail rather
than pass. tests/harness/README.md ("Databricks") lists each behaviour with its source.

Request bodies and query strings are checked against databricks-sdk's own schema (the keyword
parameters of ``JobsAPI``/``WorkspaceAPI`` methods and the dataclasses they take), so an unknown
field, a wrong type or a bad enum value fails here as it would fail there, with Databricks'
``{"error_code", "message"}`` errors.

Identities: every request authenticates with a bearer token. ``fake.token`` is the token of the
default identity, the user ``fake.user``; ``add_identity`` adds users and service principals
(a service principal's name is its application id). Each identity has a home folder
``/Users/<name>`` that only it (and the ``admins`` group) can use; ``/Shared`` is open to the
``users`` group. Workspace calls are checked against folder ACLs that inherit down the tree
(``grant``/``acl`` for tests, ``/api/2.0/permissions/{directories,files,notebooks}/<id>`` for
clients). A run executes as the identity that submitted it (or its ``run_as``).

Workspace objects live in ``root/workspace``; on a "cluster" they also appear under
``/Workspace/...`` (the FUSE mount), which the harness maps to the same local files.

A submitted run's single ``spark_python_task`` really runs, in ``root/runs/<run_id>``: it is
PENDING for ``start_delay`` seconds (plus ``cluster_start_delay`` for a new cluster), its
cluster's ``{{secrets/...}}`` references are resolved from ``secret_scopes``, its libraries are
installed (a workspace wheel with ``pip --target`` into the run's ``site`` folder; a PyPI
requirement only if this interpreter already satisfies it, as if the cluster image had it;
anything else fails the run as a library installation error), then pyspark's local
``spark-submit`` runs the python file with its parameters (dynamic value references such as
``{{job.run_id}}`` replaced, then ``/Workspace/...`` ones rewritten to the local files) and the
cluster's ``spark_conf``. Serverless tasks and clusters in standard (``USER_ISOLATION``) access
mode run as Spark Connect clients (``spark-submit --remote local[1]``), where
``spark.sparkContext`` and RDDs are refused; serverless also refuses every ``spark.conf.set``
outside ``SERVERLESS_CONFS``. The exit code gives the result; the Python traceback (which
spark-submit merges into stdout) gives get-output's ``error``/``error_trace``. ``hold = True``
keeps new runs RUNNING without executing them, to test cancelling and polling.

    fake = FakeDatabricks(tmp_path).start()
    ...  # connection: host 127.0.0.1, port fake.port, schema http, password fake.token
    fake.stop()
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
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
import uuid
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from types import NoneType, UnionType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from databricks.sdk.service.compute import DataSecurityMode
from databricks.sdk.service.jobs import JobsAPI, SubmitTask
from databricks.sdk.service.workspace import WorkspaceAPI, WorkspaceObjectAccessControlRequest
from packaging.requirements import InvalidRequirement, Requirement

from airflow_spark_portable.engines.local import pyspark_home

LOG_LIMIT = 5 * 1024 * 1024  # get-output returns the last 5 MB of the logs
IMPORT_LIMIT = 10 * 1024 * 1024  # workspace/import: "The base64-encoded content. This has a limit of 10 MB."
TOKEN_LIMIT = 64  # runs/submit: "This token must have at most 64 characters."
ACTIVE = ("PENDING", "QUEUED", "RUNNING", "TERMINATING", "BLOCKED")
WORKSPACE_DIRS = ("/Workspace/", "/Users/", "/Shared/")  # the paths a run can read (the FUSE mount)
WORKSPACE_ID = "1234567890"  # the ?o= of run page URLs and {{workspace.id}}
# "Configure Spark properties for serverless notebooks and jobs" (docs.databricks.com/aws/en/spark/conf):
# the only Spark properties a serverless job may set; any other spark.conf.set fails
SERVERLESS_CONFS = frozenset(
    {
        "spark.databricks.execution.timeout",
        "spark.sql.legacy.timeParserPolicy",
        "spark.sql.session.timeZone",
        "spark.sql.shuffle.partitions",
        "spark.sql.ansi.enabled",
        "spark.sql.files.maxPartitionBytes",
    }
)
ENVIRONMENT_VERSIONS = ("1", "2", "3", "4", "5")  # the released serverless environment versions
LEVELS = ("CAN_READ", "CAN_RUN", "CAN_EDIT", "CAN_MANAGE")  # folder/file permission levels, weakest first
RANK = {level: i + 1 for i, level in enumerate(LEVELS)}
RUN_LEVELS = {"CAN_VIEW": 1, "CAN_MANAGE_RUN": 2, "CAN_MANAGE": 3, "IS_OWNER": 4}  # a run's ACL
GROUPS = ("users", "admins")
CONNECT_MODES = ("USER_ISOLATION", "DATA_SECURITY_MODE_STANDARD", "DATA_SECURITY_MODE_AUTO")
SINGLE_USER_MODES = ("SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED", "LEGACY_SINGLE_USER", "LEGACY_SINGLE_USER_STANDARD")
STATUS = {  # others: 400
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "ENDPOINT_NOT_FOUND": 404,
}
FAULT_CODES = {  # fail_after_commit: the error a lost acknowledgement comes back as
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
VERSIONS = {"jobs": ("2.1", "2.2"), "workspace": ("2.0",), "permissions": ("2.0",), "preview": ("2.0",)}
OBJECT_KINDS = {"directories": "DIRECTORY", "files": "FILE", "notebooks": "NOTEBOOK"}  # permissions/<kind>/<id>
_SECRET = re.compile(r"^\{\{secrets/([^/{}]+)/([^/{}]+)\}\}$")  # the whole value, as documented
_REFERENCE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_REFERENCE_NAME = re.compile(r"^(?:`[^`]+`|\w+)(?:\.(?:`[^`]+`|\w+))*$")
_NAMESPACES = ("job", "task", "tasks", "workspace")
_START_TIME = ("iso_weekday", "is_weekday", "iso_date", "iso_datetime", "year", "month", "day", "hour", "minute")
_START_TIME += ("second", "timestamp_ms")


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status or STATUS.get(code, 400)


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


# the schemas of the endpoints databricks-sdk has no flat keyword signature for
def _no_arguments(self) -> None: ...


def _permissions_body(self, *, access_control_list: list[WorkspaceObjectAccessControlRequest] | None = None): ...


def _me_arguments(self, *, attributes: str | None = None, excludedAttributes: str | None = None): ...


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
    ("GET", "preview/scim/v2/Me"): (_me_arguments, "_me"),
}
PERMISSION_ROUTES = {  # permissions/<kind>/<object id>
    "GET": (_no_arguments, "_get_permissions"),
    "PATCH": (_permissions_body, "_update_permissions"),
    "PUT": (_permissions_body, "_set_permissions"),
}
_PERMISSIONS_PATH = re.compile(r"^permissions/(directories|files|notebooks)/(\d+)$")


# --- identities ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Identity:
    """A user (``name`` is their email) or a service principal (``name`` is its application id)."""

    name: str
    token: str
    service_principal: bool = False
    admin: bool = False
    id: str = ""  # the SCIM id

    @property
    def groups(self) -> tuple[str, ...]:
        return GROUPS if self.admin else GROUPS[:1]

    @property
    def home(self) -> str:
        return f"/Users/{self.name}"

    @property
    def display_name(self) -> str:
        return f"sp-{self.name[:8]}" if self.service_principal else self.name.partition("@")[0]

    def holds(self, principal: str) -> bool:
        """Whether an ACL entry's principal (a name or ``group:<name>``) is this identity."""
        if principal.startswith("group:"):
            return principal.removeprefix("group:") in self.groups
        return principal == self.name


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
    creator: str = ""  # the identity that submitted it
    run_as: str = ""  # the identity it executes as
    parameters: list[str] = dataclasses.field(default_factory=list)  # after dynamic value references

    @property
    def task(self) -> dict:
        return self.payload["tasks"][0]

    @property
    def job_id(self) -> int:
        return 900_000 + self.run_id  # a one-time run has an anonymous job of its own


class _RunFailure(Exception):
    """Ends a run before its job starts: (life cycle state, message, termination code)."""

    def __init__(self, life: str, message: str, code: str, kind: str = "CLIENT_ERROR") -> None:
        super().__init__(message)
        self.life, self.message, self.code, self.kind = life, message, code, kind


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


def _reference_value(name: str, run: FakeRun | None, fake: FakeDatabricks) -> str | None:
    """The value of a dynamic value reference (``job.run_id``), or None when the name is not a
    reference Databricks knows for a one-time run's spark_python_task. ``run`` None: validate only."""
    parts = [p.strip("`") for p in re.findall(r"`[^`]+`|\w+", name)]
    if run is None:
        run = FakeRun(0, {"tasks": [{"task_key": ""}]}, [0], "", times={"submit": 0})
    start = datetime.datetime.fromtimestamp(run.times.get("submit", 0) / 1000, datetime.UTC)
    values = {
        ("job", "id"): str(run.job_id),
        ("job", "name"): run.run_name,
        ("job", "run_id"): str(run.run_id),
        ("job", "repair_count"): "0",
        ("job", "trigger", "type"): "ONE_TIME",
        ("task", "name"): run.task["task_key"],
        ("task", "run_id"): str(run.task_run_ids[0]),
        ("task", "execution_count"): "1",
        ("workspace", "id"): WORKSPACE_ID,
        ("workspace", "url"): fake.url,
    }
    values |= {
        ("job", "start_time", "iso_weekday"): str(start.isoweekday()),
        ("job", "start_time", "is_weekday"): "true" if start.isoweekday() < 6 else "false",
        ("job", "start_time", "iso_date"): start.date().isoformat(),
        ("job", "start_time", "iso_datetime"): start.strftime("%Y-%m-%dT%H:%M:%S"),
        ("job", "start_time", "timestamp_ms"): str(run.times.get("submit", 0)),
    }
    values |= {("job", "start_time", a): str(getattr(start, a)) for a in ("year", "month", "day", "hour", "minute")}
    values[("job", "start_time", "second")] = str(start.second)
    return values.get(tuple(parts))


def _references(text: str) -> list[tuple[str, str]]:
    """(whole match, name) of each dynamic value reference in a known namespace. Anything else in
    double braces (a syntax error, another namespace) stays literal, as Databricks documents."""
    found = []
    for match in _REFERENCE.finditer(text):
        name = match.group(1)
        if _REFERENCE_NAME.match(name) and name.split(".", 1)[0].strip("`") in _NAMESPACES:
            found.append((match.group(0), name))
    return found


class FakeDatabricks:
    """The workspace and its jobs service; see the module docstring."""

    def __init__(self, root: Path, token: str = "dapi-test-token") -> None:
        self.root = Path(root)
        self.user = "runner@example.com"  # the default identity, whose token is fake.token
        self.host, self.port, self.url = "127.0.0.1", 0, ""
        self.hold = False  # when True, new runs stay RUNNING and are not executed
        self.denied: set[str] = set()  # endpoints ("jobs/runs/get") answered 403 PERMISSION_DENIED
        self.requests_seen: list[tuple[str, str]] = []
        self.start_delay = 0.3  # seconds a run is PENDING before its task starts
        self.cluster_start_delay = 0.0  # more PENDING seconds for a run on a new cluster
        # a token gives back its run whatever the run's state (the current API reference); False:
        # only while that run is active (the older reference's "an active run")
        self.token_dedupes_finished_runs = True
        self.secret_scopes: dict[str, dict[str, str]] = {}  # scope -> key -> value
        self._identities: dict[str, Identity] = {}
        self._grants: dict[str, dict[str, str]] = {  # workspace path -> principal -> direct level
            "/": {"group:admins": "CAN_MANAGE"},
            "/Shared": {"group:users": "CAN_MANAGE"},
        }
        self._clusters: dict[str, dict] = {}
        self._faults: dict[str, list[int]] = {}  # endpoint -> [status, times left]
        self._runs: dict[int, FakeRun] = {}
        self._task_runs: dict[int, FakeRun] = {}  # task run id -> its (single-task) run
        self._tokens: dict[str, int] = {}
        self._notebooks: dict[str, str] = {}  # workspace path -> language: imported as notebooks
        self._ids = itertools.count(1001)
        self._object_ids: dict[str, int] = {"/": 0}
        self._lock = threading.RLock()
        self._ws_lock = threading.RLock()  # one workspace change (check and write) at a time
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        for folder in ("Users", "Shared"):
            (self.root / "workspace" / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self.add_identity(self.user, token)

    @property
    def token(self) -> str:
        return self._identities[self.user].token

    @token.setter
    def token(self, value: str) -> None:
        self._identities[self.user].token = value

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

    # --- the test API: identities, grants, clusters, faults -------------------------------------------

    def add_identity(self, name: str, token: str, *, service_principal: bool = False, admin: bool = False) -> Identity:
        """A user (``name``: their email) or a service principal (``name``: its application id, a
        UUID), with its home folder ``/Users/<name>`` (CAN_MANAGE for it; admins manage everything)."""
        if service_principal:
            try:
                uuid.UUID(name)
            except ValueError:
                raise ValueError(f"a service principal's name is its application id (a UUID), not {name!r}") from None
        elif "@" not in name:
            raise ValueError(f"a user's name is their email address, not {name!r}")
        with self._lock:
            if name in self._identities or any(i.token == token for i in self._identities.values()):
                raise ValueError(f"the identity {name!r} or its token exists already")
            identity = Identity(
                name, token, service_principal, admin, str(7_100_000_000_000_000 + len(self._identities))
            )
            self._identities[name] = identity
        with self._ws_lock:
            self.workspace_file(identity.home).mkdir(parents=True, exist_ok=True)
            self._grants[identity.home] = {name: "CAN_MANAGE"}
        return identity

    def grant(self, path: str, principal: str, level: str | None) -> None:
        """Give ``principal`` (a user or service principal name, or ``group:<name>``) the direct
        permission ``level`` on the workspace object ``path``; None removes its direct grant."""
        with self._ws_lock:
            canonical = self._ws_path(path)
            if not self.workspace_file(canonical).exists():
                raise ValueError(f"{canonical} does not exist")
            self._check_principal(principal)
            if level is None:
                self._grants.get(canonical, {}).pop(principal, None)
            elif level not in LEVELS:
                raise ValueError(f"{level!r} is not one of {LEVELS}")
            else:
                self._grants.setdefault(canonical, {})[principal] = level

    def acl(self, path: str) -> dict[str, str]:
        """Principal (a name, or ``group:<name>``) -> the strongest level it holds on ``path``, direct
        or inherited."""
        with self._ws_lock:
            out: dict[str, str] = {}
            for folder in self._chain(self._ws_path(path)):
                for principal, level in self._grants.get(folder, {}).items():
                    if RANK[level] > RANK.get(out.get(principal, ""), 0):
                        out[principal] = level
            return out

    def add_cluster(
        self, cluster_id: str, data_security_mode: str = "SINGLE_USER", single_user_name: str | None = None
    ) -> dict:
        """An all-purpose cluster that existing_cluster_id can name. A single-user cluster's user
        defaults to ``fake.user``; standard access mode (``USER_ISOLATION``) runs jobs through Spark Connect."""
        if data_security_mode not in [m.value for m in DataSecurityMode]:
            raise ValueError(f"{data_security_mode!r} is not a data_security_mode")
        single = single_user_name or (self.user if data_security_mode in SINGLE_USER_MODES else None)
        cluster = {"cluster_id": cluster_id, "data_security_mode": data_security_mode, "single_user_name": single}
        with self._lock:
            self._clusters[cluster_id] = cluster
        return cluster

    def fail_after_commit(self, endpoint: str, status: int = 503, times: int = 1) -> None:
        """The next ``times`` successful requests to ``endpoint`` ("workspace/import") take effect,
        then answer ``status`` (429 or 5xx, which the DatabricksHook retries; 0 drops the connection
        without an answer), as when an acknowledgement is lost."""
        if status != 0 and status not in FAULT_CODES:
            raise ValueError(f"status {status}: use 0 (connection dropped) or one of {sorted(FAULT_CODES)}")
        with self._lock:
            self._faults[endpoint] = [status, times]

    # --- HTTP -------------------------------------------------------------------------------------

    def _authenticate(self, header: str | None) -> Identity:
        scheme, _, token = (header or "").partition(" ")
        with self._lock:
            found = [i for i in self._identities.values() if scheme == "Bearer" and token and i.token == token]
        if not found:
            raise ApiError("UNAUTHENTICATED", "Credential was not sent or was of an unsupported type for this API.")
        return found[0]

    def _route(self, method: str, version: str, endpoint: str) -> tuple[Any, str, tuple, str]:
        """(schema, handler, extra handler arguments, the endpoint's name for denied/faults)."""
        if version in VERSIONS.get(endpoint.partition("/")[0], ()):
            if (method, endpoint) in ROUTES:
                return (*ROUTES[(method, endpoint)], (), endpoint)
            match = _PERMISSIONS_PATH.match(endpoint)
            if match and method in PERMISSION_ROUTES:
                return (*PERMISSION_ROUTES[method], (match[1], int(match[2])), f"permissions/{match[1]}")
        raise ApiError("ENDPOINT_NOT_FOUND", f"No API found for '{method} /api/{version}/{endpoint}'")

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> tuple[int, dict]:
        url = urlsplit(request.path)
        self.requests_seen.append((method, url.path))
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        try:
            who = self._authenticate(request.headers.get("Authorization"))
            version, _, endpoint = url.path.removeprefix("/api/").partition("/")
            schema, handler, extra, name = self._route(method, version, endpoint)
            if endpoint in self.denied or name in self.denied:  # e.g. a grant revoked while the run goes on
                raise ApiError("PERMISSION_DENIED", f"User does not have permission to call {endpoint}")
            if method == "GET":
                args = _query_args(url.query, schema)
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
            _check_object(args, _fields(schema), "")
            result = getattr(self, handler)(who, args, *extra)
        except ApiError as e:
            return e.status, {"error_code": e.code, "message": e.message}
        with self._lock:
            fault = self._faults.get(name)
            if fault and fault[1] > 0:
                fault[1] -= 1
                status = fault[0]
                return status, {"error_code": FAULT_CODES.get(status, ""), "message": "The service is unavailable."}
        return 200, result

    # --- identity ---------------------------------------------------------------------------------

    def _me(self, who: Identity, args: dict) -> dict:
        """SCIM ``Me``: the caller as a SCIM User, a service principal too (its userName is its
        application id; Me does not tell the two apart)."""
        out: dict[str, Any] = {
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:User",
                "urn:ietf:params:scim:schemas:extension:workspace:2.0:User",
            ],
            "id": who.id,
            "userName": who.name,
            "displayName": who.display_name,
            "active": True,
        }
        if not who.service_principal:
            out["emails"] = [{"type": "work", "value": who.name, "primary": True}]
            out["name"] = {"givenName": who.display_name}
        if who.admin:
            out["groups"] = [
                {"display": "admins", "type": "direct", "value": "9000000000000002", "$ref": "Groups/9000000000000002"}
            ]
        if args.get("attributes"):
            keep = {a.strip() for a in args["attributes"].split(",")} | {"id", "schemas"}
            out = {k: v for k, v in out.items() if k in keep}
        if args.get("excludedAttributes"):
            drop = {a.strip() for a in args["excludedAttributes"].split(",")} - {"id", "schemas"}
            out = {k: v for k, v in out.items() if k not in drop}
        return out

    def _check_principal(self, principal: str) -> None:
        if principal.startswith("group:"):
            if principal.removeprefix("group:") not in GROUPS:
                raise ValueError(f"the fake knows the groups {GROUPS}, not {principal!r}")
        elif principal not in self._identities:
            raise ValueError(f"no identity {principal!r} (add_identity first)")

    # --- workspace permissions ----------------------------------------------------------------------

    @staticmethod
    def _chain(path: str) -> list[str]:
        """A canonical workspace path and its folders up to the root, nearest first."""
        pure = PurePosixPath(path)
        return [str(pure), *(str(p) for p in pure.parents)]

    def _level(self, who: Identity, path: str) -> int:
        """The rank of the strongest permission ``who`` holds on ``path`` (0: none), direct or
        inherited from its folders (the admins group holds CAN_MANAGE on the root)."""
        best = 0
        for folder in self._chain(path):
            for principal, level in self._grants.get(folder, {}).items():
                if who.holds(principal):
                    best = max(best, RANK[level])
        return best

    def _require(self, who: Identity, path: str, level: str, action: str) -> None:
        if self._level(who, path) < RANK[level]:
            word = level.removeprefix("CAN_").capitalize()
            raise ApiError("PERMISSION_DENIED", f"{who.name} does not have {word} permissions on {path} (to {action}).")

    def _forget(self, path: str) -> None:
        """Drop what the fake remembers of ``path`` and everything under it (deleted)."""
        inside = lambda p: p == path or p.startswith(path.rstrip("/") + "/")
        for table in (self._notebooks, self._object_ids, self._grants):
            for key in [k for k in table if inside(k) and k != "/"]:
                del table[key]

    def _object_of(self, kind: str, object_id: int) -> str:
        """The canonical path of the object permissions/<kind>/<id> names."""
        for path, oid in list(self._object_ids.items()):
            exists = oid == object_id and self.workspace_file(path).exists()
            if exists and self._object_info(path)["object_type"] == OBJECT_KINDS[kind]:
                return path
        raise ApiError("RESOURCE_DOES_NOT_EXIST", f"{kind.rstrip('s').capitalize()} {object_id} does not exist.")

    def _permission_object_id(self, path: str) -> str:
        """The object_id the Permissions API gives ``path``: /directories/<id> (the root: /directories/)."""
        info = self._object_info(path)
        kind = {"DIRECTORY": "directories", "FILE": "files", "NOTEBOOK": "notebooks"}[info["object_type"]]
        return f"/{kind}/{info['object_id'] if path != '/' else ''}"

    def _permissions_json(self, path: str) -> dict:
        entries: dict[str, list[dict]] = {}
        for i, folder in enumerate(self._chain(path)):
            for principal, level in self._grants.get(folder, {}).items():
                permissions = entries.setdefault(principal, [])
                if i == 0:
                    permissions.append({"permission_level": level, "inherited": False})
                    continue
                source = self._permission_object_id(folder)
                same = [p for p in permissions if p["inherited"] and p["permission_level"] == level]
                if same:
                    same[0]["inherited_from_object"].append(source)
                else:
                    permissions.append(
                        {"permission_level": level, "inherited": True, "inherited_from_object": [source]}
                    )
        acl = []
        for principal, permissions in entries.items():
            if principal.startswith("group:"):
                entry = {"group_name": principal.removeprefix("group:")}
            else:
                identity = self._identities[principal]
                key = "service_principal_name" if identity.service_principal else "user_name"
                entry = {key: principal, "display_name": identity.display_name}
            acl.append(entry | {"all_permissions": permissions})
        kind = self._permission_object_id(path).split("/")[1]
        return {
            "object_id": self._permission_object_id(path),
            "object_type": {"directories": "directory", "files": "file", "notebooks": "notebook"}[kind],
            "access_control_list": acl,
        }

    def _get_permissions(self, who: Identity, args: dict, kind: str, object_id: int) -> dict:
        with self._ws_lock:
            path = self._object_of(kind, object_id)
            self._require(who, path, "CAN_MANAGE", "read its permissions")
            return self._permissions_json(path)

    def _requested_grants(self, args: dict) -> dict[str, str]:
        grants = {}
        for i, entry in enumerate(args.get("access_control_list") or []):
            names = [k for k in ("user_name", "group_name", "service_principal_name") if entry.get(k)]
            if len(names) != 1:
                raise _invalid(
                    f"access_control_list[{i}] needs exactly one of user_name, group_name, service_principal_name"
                )
            if not entry.get("permission_level"):
                raise _invalid(f"access_control_list[{i}].permission_level is required")
            name = entry[names[0]]
            principal = f"group:{name}" if names[0] == "group_name" else name
            identity = self._identities.get(name)
            if names[0] == "group_name" and name not in GROUPS:
                raise ApiError("RESOURCE_DOES_NOT_EXIST", f"Principal: GroupName({name}) does not exist")
            if names[0] != "group_name" and (
                identity is None or identity.service_principal != (names[0] != "user_name")
            ):
                kind = "UserName" if names[0] == "user_name" else "ServicePrincipalName"
                raise ApiError("RESOURCE_DOES_NOT_EXIST", f"Principal: {kind}({name}) does not exist")
            grants[principal] = entry["permission_level"]
        return grants

    def _update_permissions(self, who: Identity, args: dict, kind: str, object_id: int) -> dict:
        with self._ws_lock:
            path = self._object_of(kind, object_id)
            self._require(who, path, "CAN_MANAGE", "change its permissions")
            self._grants.setdefault(path, {}).update(self._requested_grants(args))
            return self._permissions_json(path)

    def _set_permissions(self, who: Identity, args: dict, kind: str, object_id: int) -> dict:
        with self._ws_lock:
            path = self._object_of(kind, object_id)
            self._require(who, path, "CAN_MANAGE", "change its permissions")
            self._grants[path] = self._requested_grants(args)  # "Deletes all direct permissions if none are specified"
            return self._permissions_json(path)

    # --- jobs -------------------------------------------------------------------------------------

    def _check_environment(self, i: int, environment: dict) -> None:
        where = f"environments[{i}].spec"
        spec = environment.get("spec")
        if not spec:
            raise _invalid(f"{where} is required: an environment needs environment_version or base_environment")
        version, base, client = spec.get("environment_version"), spec.get("base_environment"), spec.get("client")
        if client is not None and version is not None:
            raise _invalid(
                f"{where}: client is deprecated and replaced by environment_version; set only environment_version"
            )
        if version is not None and base is not None:
            raise _invalid(f"{where}: Either environment_version or base_environment can be provided, not both")
        if version is None and base is None:
            raise _invalid(f"{where}: Either environment_version or base_environment needs to be provided")
        if version is not None and version not in ENVIRONMENT_VERSIONS:
            raise _invalid(f"{where}.environment_version {version!r} is not one of {', '.join(ENVIRONMENT_VERSIONS)}")

    def _check_references(self, task: dict, i: int) -> None:
        for j, parameter in enumerate((task.get("spark_python_task") or {}).get("parameters") or []):
            for whole, name in _references(parameter):
                if _reference_value(name, None, self) is None:
                    raise _invalid(
                        f"tasks[{i}].spark_python_task.parameters[{j}]: {whole} is not a valid dynamic value "
                        "reference for this task"
                    )

    def _run_as(self, who: Identity, body: dict) -> str:
        run_as = body.get("run_as")
        if not run_as:
            return who.name
        names = [k for k in ("user_name", "service_principal_name", "group_name") if run_as.get(k)]
        if len(names) != 1:
            raise _invalid("One of run_as.user_name, run_as.service_principal_name or run_as.group_name must be set")
        if names[0] == "group_name":
            raise _invalid(f"run_as.group_name {run_as['group_name']!r}: the fake workspace has no account groups")
        name = run_as[names[0]]
        identity = self._identities.get(name)
        if identity is None or identity.service_principal != (names[0] == "service_principal_name"):
            raise _invalid(f"run_as.{names[0]} {name!r} is not an active identity of this workspace")
        if name != who.name and not who.admin:
            raise ApiError(
                "PERMISSION_DENIED",
                f"{who.name} cannot run jobs as {name}: only admins can set run_as to another identity",
            )
        return name

    def _submit(self, who: Identity, body: dict) -> dict:
        tasks, environments = body.get("tasks") or [], {e["environment_key"] for e in body.get("environments") or []}
        if not tasks:
            raise _invalid("At least one task is required.")
        if len(tasks) > 1:
            raise _invalid("The fake runs one task per submitted run")
        token = body.get("idempotency_token")
        if token is not None and len(token) > TOKEN_LIMIT:
            raise _invalid(f"idempotency_token must have at most {TOKEN_LIMIT} characters, got {len(token)}")
        for i, environment in enumerate(body.get("environments") or []):
            self._check_environment(i, environment)
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
            if task.get("existing_cluster_id") and task["existing_cluster_id"] not in self._clusters:
                raise _invalid(f"Cluster {task['existing_cluster_id']} does not exist")
            self._check_references(task, i)
        run_as = self._run_as(who, body)
        with self._lock:
            if token in self._tokens:
                earlier = self._runs[self._tokens[token]]
                if self.token_dedupes_finished_runs or earlier.life_cycle_state in ACTIVE:
                    return {"run_id": earlier.run_id}
            run = FakeRun(next(self._ids), body, [next(self._ids)], body.get("run_name") or "Untitled", token)
            run.creator, run.run_as = who.name, run_as
            run.times["submit"] = _ms()
            self._runs[run.run_id] = run
            self._task_runs[run.task_run_ids[0]] = run
            if token is not None:
                self._tokens[token] = run.run_id
        threading.Thread(target=self._execute, args=(run,), name=f"fake-run-{run.run_id}", daemon=True).start()
        return {"run_id": run.run_id}

    def _may(self, who: Identity, run: FakeRun, level: str) -> bool:
        """Whether ``who`` holds ``level`` (CAN_VIEW, CAN_MANAGE_RUN...) on ``run``: its submitter
        owns it, admins manage it, its access_control_list grants the rest."""
        if who.admin or who.name == run.creator:
            return True
        for entry in run.payload.get("access_control_list") or []:
            principal = entry.get("user_name") or entry.get("service_principal_name")
            principal = principal or (f"group:{entry['group_name']}" if entry.get("group_name") else "")
            if (
                principal
                and who.holds(principal)
                and RUN_LEVELS.get(entry.get("permission_level"), 0) >= RUN_LEVELS[level]
            ):
                return True
        return False

    def _find(self, who: Identity, run_id: int, level: str = "CAN_VIEW") -> FakeRun:
        run = self._runs.get(run_id) or self._task_runs.get(run_id)
        if run is None:
            raise _invalid(f"Run {run_id} does not exist.")
        if not self._may(who, run, level):
            word = level.removeprefix("CAN_").replace("_", " ").title()
            raise ApiError("PERMISSION_DENIED", f"{who.name} does not have {word} permissions on run {run_id}.")
        return run

    def _get_run(self, who: Identity, args: dict) -> dict:
        run = self._find(who, args["run_id"])
        return self._run_json(run) if run.run_id == args["run_id"] else self._task_json(run)

    def _get_output(self, who: Identity, args: dict) -> dict:
        run = self._find(who, args["run_id"])
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

    def _cancel(self, who: Identity, args: dict) -> dict:
        with self._lock:
            run = self._find(who, args["run_id"], "CAN_MANAGE_RUN")
            if run.life_cycle_state not in ACTIVE or run.cancelled:
                return {}
            run.cancelled, run.life_cycle_state = True, "TERMINATING"
            run.times.setdefault("ending", _ms())
            if run.proc is not None and run.proc.poll() is None:
                os.killpg(run.proc.pid, signal.SIGTERM)
        return {}

    def _list_runs(self, who: Identity, args: dict) -> dict:
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
            and self._may(who, r, "CAN_VIEW")
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
        page_url = f"{self.url}/?o={WORKSPACE_ID}#job/{run.job_id}/run/{run_id}"
        return dict(
            job_id=run.job_id, run_id=run_id, run_name=run_name, run_page_url=page_url, state=state, status=status
        )

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
            out |= dict(creator_user_name=run.creator, trigger="ONE_TIME")
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
        except _RunFailure as e:
            self._finish(run, e.life, "FAILED", e.message, e.code, e.kind)
        except Exception as e:  # a harness bug must not leave the run RUNNING for ever
            self._finish(run, "INTERNAL_ERROR", "FAILED", f"fake Databricks: {e!r}", "INTERNAL_ERROR", "INTERNAL_ERROR")
            raise

    def _pending(self, run: FakeRun, seconds: float) -> bool:
        """Stay PENDING for ``seconds``; False when the run was cancelled meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if run.cancelled or self._stopping:
                return False
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return not (run.cancelled or self._stopping)

    def _compute(self, run: FakeRun) -> dict:
        """The cluster a task runs on: its new_cluster, the existing cluster, {} for serverless."""
        if run.task.get("existing_cluster_id"):
            return self._clusters[run.task["existing_cluster_id"]]
        return run.task.get("new_cluster") or {}

    def _uses_connect(self, run: FakeRun) -> bool:
        return bool(run.task.get("environment_key")) or self._compute(run).get("data_security_mode") in CONNECT_MODES

    def _resolve_secrets(self, run: FakeRun, values: dict[str, str], what: str) -> tuple[dict[str, str], set[str]]:
        """``values`` with each ``{{secrets/<scope>/<key>}}`` value resolved (at cluster start), and
        the keys that held one; a missing scope or key ends the run as a failed cluster start."""
        out, secret = {}, set()
        for key, value in values.items():
            match = _SECRET.match(str(value))
            if match is None:
                out[key] = str(value)
                continue
            scope, name = match.groups()
            with self._lock:
                found = (self.secret_scopes.get(scope) or {}).get(name)
                missing = f"the secret scope {scope} does not exist" if scope not in self.secret_scopes else None
            if found is None:
                missing = missing or f"the secret {name} does not exist in the scope {scope}"
                cluster = f"0101-000000-fake{run.run_id}"
                raise _RunFailure(
                    "INTERNAL_ERROR",
                    f"Cluster {cluster} was terminated. Reason: SECRET_RESOLUTION_ERROR (SERVICE_FAULT). Parameters: "
                    f"databricks_error_message:Failed to fetch secrets referred to in {what} ({value}: {missing}).",
                    "CLUSTER_ERROR",
                )
            out[key], _ = found, secret.add(key)
        return out, secret

    def _readable(self, run: FakeRun, path: str) -> bool:
        identity = self._identities[run.run_as]
        with self._ws_lock:
            return self._level(identity, self._ws_path(path)) >= RANK["CAN_READ"]

    def _environment(self, run: FakeRun) -> dict:
        for env in run.payload.get("environments") or []:
            if env["environment_key"] == run.task.get("environment_key"):
                return env.get("spec") or {}
        return {}

    def _execute_run(self, run: FakeRun) -> None:
        folder = self.root / "runs" / str(run.run_id)  # the "driver": cwd, site/ for libraries, runtime/
        (folder / "site").mkdir(parents=True)
        (folder / "runtime").mkdir()
        cluster = self._compute(run)
        delay = self.start_delay + (self.cluster_start_delay if run.task.get("new_cluster") else 0)
        if not self._pending(run, delay):
            return self._finish(run, "TERMINATED", "CANCELED", "", "USER_CANCELED", "SUCCESS")
        # the cluster starts: its secrets are fetched, its single user checked
        new = run.task.get("new_cluster") or {}
        conf, secret_conf = self._resolve_secrets(run, new.get("spark_conf") or {}, "Spark Conf")
        env_vars, _ = self._resolve_secrets(run, new.get("spark_env_vars") or {}, "environment variables")
        single = cluster.get("single_user_name")
        if cluster.get("data_security_mode") in SINGLE_USER_MODES and single and single != run.run_as:
            cluster_id = cluster.get("cluster_id") or f"0101-000000-fake{run.run_id}"
            raise _RunFailure(
                "INTERNAL_ERROR",
                f"Single-user check failed: user '{run.run_as}' attempted to run a command on single-user cluster "
                f"{cluster_id}, but the single user of this cluster is '{single}'",
                "UNAUTHORIZED_ERROR",
            )
        failure = self._install_libraries(run, folder / "site")
        if failure:
            message = f"Library installation failed for library due to user error {failure}"
            return self._finish(run, "INTERNAL_ERROR", "FAILED", message, "LIBRARY_INSTALLATION_ERROR", "CLIENT_ERROR")
        spark_task = run.task["spark_python_task"]
        with self._lock:
            if not run.cancelled:
                run.life_cycle_state, run.times["running"] = "RUNNING", _ms()
            run.parameters = [self._substitute(p, run) for p in spark_task.get("parameters") or []]
        while self.hold and not run.cancelled and not self._stopping:
            time.sleep(0.05)
        source = spark_task["python_file"]
        local = self.workspace_file(source) if source.startswith(WORKSPACE_DIRS) else None
        if run.cancelled or self._stopping:
            return self._finish(run, "TERMINATED", "CANCELED", "", "CANCELED", "SUCCESS")
        if local is None or not local.is_file() or self._ws_path(source) in self._notebooks:
            message = f"Cannot read the python file {source}. Please check driver logs for more details."
            return self._finish(run, "INTERNAL_ERROR", "FAILED", message, "RESOURCE_NOT_FOUND", "CLIENT_ERROR")
        if not self._readable(run, source):
            message = f"Cannot read the python file {source}: {run.run_as} does not have Read permissions on it."
            return self._finish(run, "INTERNAL_ERROR", "FAILED", message, "UNAUTHORIZED_ERROR", "CLIENT_ERROR")
        # a trailing "/" (a folder the job writes into) survives the mapping
        params = [
            str(self.workspace_file(p)) + ("/" if p.endswith("/") else "") if p.startswith("/Workspace/") else p
            for p in run.parameters
        ]
        spark_submit = str(pyspark_home() / "bin/spark-submit")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SPARK_REMOTE", "SPARK_CONNECT"))}
        env |= env_vars
        env |= {
            "SPARK_HOME": str(pyspark_home()),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            # runtime/ holds the harness's sitecustomize.py; site/ what the libraries installed
            "PYTHONPATH": os.pathsep.join([str(folder / "runtime"), str(folder / "site")]),
        }
        (folder / "runtime" / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        if self._uses_connect(run):
            # pyspark 4.3's launcher leaves spark-sql, spark-sql-api and spark-connect off the JVM's
            # class path in --remote mode; the local Connect server needs them
            jars = pyspark_home() / "jars"
            names = ("spark-sql_*.jar", "spark-sql-api_*.jar", "spark-connect_*.jar")
            class_path = os.pathsep.join(str(p) for name in names for p in sorted(jars.glob(name)))
            head = [spark_submit, "--remote", "local[1]", "--driver-class-path", class_path]
            # its own server on an ephemeral loopback port (sitecustomize.py tells the client which)
            head += [
                "--conf",
                "spark.connect.grpc.binding.port=0",
                "--conf",
                "spark.connect.grpc.binding.address=127.0.0.1",
            ]
            env |= {"SPARK_REMOTE": "local[1]", "FAKE_DATABRICKS_CONNECT": "1"}
            if run.task.get("environment_key"):
                env["FAKE_DATABRICKS_ALLOWED_CONFS"] = json.dumps(sorted(SERVERLESS_CONFS))
        else:
            head = [spark_submit, "--master", "local[1]"]
        confs = [a for k, v in conf.items() if k not in secret_conf for a in ("--conf", f"{k}={v}")]
        if secret_conf:  # resolved secrets stay off the command line (and run.command)
            properties = folder / "secret.properties"
            properties.write_text("".join(f"{k}={conf[k]}\n" for k in sorted(secret_conf)))
            properties.chmod(0o600)
            confs += ["--properties-file", str(properties)]
        run.command = [*head, *confs, str(local), *params]
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

    def _substitute(self, text: str, run: FakeRun) -> str:
        for whole, name in _references(text):
            text = text.replace(whole, _reference_value(name, run, self) or whole)
        return text

    def _install_libraries(self, run: FakeRun, site: Path) -> str | None:
        """Install the run's libraries into ``site``; a description of the first failure, if any."""
        libraries = list(run.task.get("libraries") or [])
        spec = self._environment(run)
        deps = list(spec.get("dependencies") or [])
        base = spec.get("base_environment")
        if base and base.startswith(WORKSPACE_DIRS):  # a custom env.yaml: its dependencies come first
            local = self.workspace_file(base)
            if not local.is_file() or not self._readable(run, base):
                raise _RunFailure(
                    "INTERNAL_ERROR",
                    f"Failed to set up the environment: base_environment {base} does not exist or {run.run_as} cannot read it",
                    "INVALID_RUN_CONFIGURATION",
                )
            try:
                deps = [str(d) for d in (yaml.safe_load(local.read_text()) or {}).get("dependencies") or []] + deps
            except (yaml.YAMLError, AttributeError) as e:
                raise _RunFailure(
                    "INTERNAL_ERROR", f"Invalid base_environment {base}: {e}", "INVALID_RUN_CONFIGURATION"
                ) from None
        libraries += [
            {"whl": d} if d.endswith(".whl") and d.startswith("/") else {"pypi": {"package": d}} for d in deps
        ]
        libraries += [{"jar": d} for d in spec.get("java_dependencies") or []]
        for library in libraries:
            ((kind, value),) = library.items()
            what = f"for {kind}: {json.dumps(value)}. Error messages:\n"
            if kind == "whl":
                wheel = self.workspace_file(value) if value.startswith(WORKSPACE_DIRS) else None
                if wheel is None or not wheel.is_file():
                    return f"{what}File {value} does not exist or is not accessible"
                if not self._readable(run, value):
                    return f"{what}File {value} does not exist or is not accessible ({run.run_as} cannot read it)"
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

    def _ws_import(self, who: Identity, args: dict) -> dict:
        content = args.get("content") or ""
        if len(content) > IMPORT_LIMIT:  # the limit is on the base64 text, as the API reference words it
            raise ApiError(
                "MAX_NOTEBOOK_SIZE_EXCEEDED",
                f"File size imported is {len(content)} bytes), exceeded max size ({IMPORT_LIMIT} bytes)",
            )
        try:
            data = base64.b64decode(content, validate=True)
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
        parent = str(PurePosixPath(path).parent)
        with self._ws_lock:  # the check and the write are one step: of two racing imports one wins
            if local.exists():
                self._require(who, path, "CAN_EDIT", "overwrite it")
            else:
                self._require(who, parent, "CAN_EDIT" if local.parent.is_dir() else "CAN_READ", "create objects in it")
            if not local.parent.is_dir():
                raise ApiError("RESOURCE_DOES_NOT_EXIST", f"The parent folder ({parent}) does not exist.")
            if local.is_dir() or (local.exists() and not args.get("overwrite")):
                raise ApiError("RESOURCE_ALREADY_EXISTS", f"Path ({path}) already exists.")
            created = not local.exists()
            staged = self.root / "tmp" / f"import-{uuid.uuid4().hex}"
            staged.write_bytes(data)
            os.replace(staged, local)  # readers see the old content or the new one, never a part
            with self._lock:
                self._notebooks.pop(path, None)
                if notebook:
                    self._notebooks[path] = args.get("language") or "PYTHON"
            if created:  # "Users automatically have the CAN MANAGE permission for objects that they create"
                self._grants[path] = {who.name: "CAN_MANAGE"}
        return {}

    def _ws_export(self, who: Identity, args: dict) -> dict:
        with self._ws_lock:
            self._require(who, self._ws_path(args["path"]), "CAN_READ", "export it")
            info = self._object_info(args["path"])
            if info["object_type"] == "DIRECTORY":
                raise _invalid("The fake exports files and notebooks only")
            data = self.workspace_file(args["path"]).read_bytes()
        return {"content": base64.b64encode(data).decode(), "file_type": Path(info["path"]).suffix.lstrip(".")}

    def _ws_get_status(self, who: Identity, args: dict) -> dict:
        with self._ws_lock:
            self._require(who, self._ws_path(args["path"]), "CAN_READ", "read it")
            return self._object_info(args["path"])

    def _ws_list(self, who: Identity, args: dict) -> dict:
        with self._ws_lock:
            self._require(who, self._ws_path(args["path"]), "CAN_READ", "list it")
            info, local = self._object_info(args["path"]), self.workspace_file(args["path"])
            if info["object_type"] != "DIRECTORY":
                return {"objects": [info]}
            prefix = info["path"].rstrip("/")
            objects = [self._object_info(f"{prefix}/{child.name}") for child in sorted(local.iterdir())]
        return {"objects": objects} if objects else {}

    def _ws_mkdirs(self, who: Identity, args: dict) -> dict:
        path = PurePosixPath(self._ws_path(args["path"]))
        with self._ws_lock:
            existing = next(f for f in (path, *path.parents) if self.workspace_file(str(f)).exists())
            self._require(who, str(existing), "CAN_EDIT", "create folders in it")
            for folder in (path, *path.parents):
                if self.workspace_file(str(folder)).is_file():
                    raise ApiError("RESOURCE_ALREADY_EXISTS", f"{folder} exists and is not a directory")
            for folder in reversed([f for f in (path, *path.parents) if not self.workspace_file(str(f)).exists()]):
                self.workspace_file(str(folder)).mkdir()
                self._grants[str(folder)] = {who.name: "CAN_MANAGE"}  # the creator's, as for any object
        return {}

    def _ws_delete(self, who: Identity, args: dict) -> dict:
        path = self._ws_path(args["path"])
        with self._ws_lock:
            self._require(who, str(PurePosixPath(path).parent), "CAN_EDIT", "delete objects in it")
            info, local = self._object_info(path), self.workspace_file(path)
            if info["object_type"] != "DIRECTORY":
                local.unlink()
            elif any(local.iterdir()) and not args.get("recursive"):
                raise ApiError("DIRECTORY_NOT_EMPTY", f"Folder ({info['path']}) is not empty.")
            else:
                shutil.rmtree(local)
            with self._lock:
                self._forget(info["path"])
        return {}


# The run's sitecustomize.py (on its PYTHONPATH, so every Python process of the run imports it):
# a Spark Connect run finds its own in-process Connect server's port and stops that server at exit
# (SparkSubmit would otherwise wait for the server's threads for ever), and a serverless run refuses the Spark confs
# serverless refuses, where the job sets them (spark.conf.set, SQL SET), with serverless' error.
_SITECUSTOMIZE = r'''
"""Written by tests/harness/databricks_api.py for one fake Databricks run."""
import atexit
import importlib.abc
import json
import os
import re
import sys

_ALLOWED = os.environ.get("FAKE_DATABRICKS_ALLOWED_CONFS")
_SET = re.compile(r"^\s*SET\s+(?!-v\b)([^\s=]+)\s*=", re.IGNORECASE)


def _refuse(key):
    from pyspark.errors.exceptions.connect import AnalysisException

    raise AnalysisException(
        message=f"[CONFIG_NOT_AVAILABLE] Configuration {key} is not available. SQLSTATE: 42K0I",
        errorClass="CONFIG_NOT_AVAILABLE",
        messageParameters={"config": key},
        sql_state="42K0I",
    )


def _patch_conf(module):
    allowed, original = frozenset(json.loads(_ALLOWED)), module.RuntimeConf.set

    def set(self, key, value):
        if key not in allowed:
            _refuse(key)
        return original(self, key, value)

    module.RuntimeConf.set = set


def _patch_session(module):
    allowed, original = frozenset(json.loads(_ALLOWED)), module.SparkSession.sql

    def sql(self, sqlQuery, *args, **kwargs):
        match = _SET.match(sqlQuery or "")
        if match and match.group(1) not in allowed:
            _refuse(match.group(1))
        return original(self, sqlQuery, *args, **kwargs)

    module.SparkSession.sql = sql


def _patch_channel(module):
    """The client of the run's own local Connect server finds the server's ephemeral port (pyspark
    does so only when SPARK_TESTING is set), so runs at once do not share port 15002."""
    original = module.DefaultChannelBuilder.default_port

    def default_port():
        if "SPARK_LOCAL_REMOTE" in os.environ:
            from pyspark.sql.session import SparkSession

            session = SparkSession._instantiatedSession
            if session is not None:
                service = getattr(session._jvm, "org.apache.spark.sql.connect.service.SparkConnectService$")
                return getattr(service, "MODULE$").localPort()
        return original()

    module.DefaultChannelBuilder.default_port = staticmethod(default_port)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, patch):
        self._inner, self._patch = inner, patch

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        self._patch(module)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, patches):
        self.patches = patches

    def find_spec(self, name, path=None, target=None):
        patch = self.patches.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    spec.loader = _Loader(spec.loader, patch)
                    return spec
        return None


_PATCHES = {}
if _ALLOWED is not None:
    _PATCHES |= {"pyspark.sql.connect.conf": _patch_conf, "pyspark.sql.connect.session": _patch_session}
if os.environ.get("FAKE_DATABRICKS_CONNECT") == "1":
    _PATCHES["pyspark.sql.connect.client.core"] = _patch_channel
if _PATCHES:
    sys.meta_path.insert(0, _Finder(_PATCHES))

if os.environ.get("FAKE_DATABRICKS_CONNECT") == "1":

    def _stop_local_connect_server():
        module = sys.modules.get("pyspark.core.context") or sys.modules.get("pyspark.context")
        context = getattr(getattr(module, "SparkContext", None), "_active_spark_context", None)
        if context is not None:
            try:
                context.stop()
            except Exception:
                pass

    atexit.register(_stop_local_connect_server)
'''


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read requests_seen instead
        pass

    def _reply(self, method: str) -> None:
        status, payload = self.server.fake._handle(self, method)
        if status == 0:  # fail_after_commit(status=0): the connection drops without an answer
            self.close_connection = True
            return
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

    def do_PATCH(self) -> None:
        self._reply("PATCH")

    def do_PUT(self) -> None:
        self._reply("PUT")

    def do_DELETE(self) -> None:
        self._reply("DELETE")
