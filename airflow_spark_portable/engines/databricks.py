"""``engine="databricks"``: the job as a one-time run (Jobs API ``runs/submit``).

Built on the databricks provider: ``DatabricksHook`` talks to the API (with its auth, retries
and connection handling), ``DatabricksExecutionTrigger`` waits while deferred. The run is one
``spark_python_task`` on a new job cluster from the profile, an existing cluster, or
serverless compute. Artifacts (the job file and the project code as a wheel) are workspace
files under content-hashed paths, used only when they hold exactly the bytes their name
promises; the context of each task try and the messages of each of its runs live in a
workspace folder of their own, which the job sees under ``/Workspace`` (one file per message:
workspace files cannot be appended to). All of it is under a root only the connection's
identity (and the workspace admins) can access: its home folder unless the profile names
another private folder; ``/Shared`` is refused (see docs/databricks.md).

Profile section ``databricks``::

    databricks:
      # workspace_root: /Users/<identity>/spark-portable (the default: the connection identity's
      #   home folder; a folder of your own must be private to that identity, never /Shared)
      new_cluster:                             # or existing_cluster_id: 0123-456789-abcdefgh
        spark_version: 15.4.x-scala2.12        # or serverless: true (or {environment_version: "2"})
        node_type_id: r5d.2xlarge
        autoscale: {min_workers: 2, max_workers: 8}
        aws_attributes: {availability: SPOT_WITH_FALLBACK, first_on_demand: 1}
      python_requirements: jobs/requirements.txt   # -> task libraries / environment dependencies
      conf: {spark.sql.files.maxPartitionBytes: 256m}
      timeout_seconds: 0
      region: us-east-1                        # the workspace's AWS region, for cost estimates

``engine_options``: ``databricks_conn_id`` (default ``databricks_default``),
``poll_interval_seconds`` (synchronous waiting).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import TYPE_CHECKING, Any

from airflow_spark_portable.artifacts import ArtifactExists, build_code_wheel, put_once
from airflow_spark_portable.costs import InstanceUsage, PriceTable
from airflow_spark_portable.engines import databricks_rest as rest
from airflow_spark_portable.engines.base import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    Engine,
    JobSpec,
    RunHandle,
    RunResult,
    safe_tags,
    try_base,
)
from airflow_spark_portable.exceptions import SparkJobFailed, SparkPortableConfigError
from airflow_spark_portable.pipes import Channel
from airflow_spark_portable.profiles import Profile, spark_conf_strings
from airflow_spark_portable.redaction import refuse, refuse_secret_args, sensitive_keys
from airflow_spark_portable.runtime import protocol
from airflow_spark_portable.runtime.context import JobContext

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

_SECTION_KEYS = {
    "workspace_root",
    "new_cluster",
    "existing_cluster_id",
    "serverless",
    "python_requirements",
    "conf",
    "timeout_seconds",
    "region",
}
_TASK_KEY = "spark_portable"
_ENVIRONMENT_KEY = "spark_portable"
# Runs a retry reattaches to (not TERMINATING: a run being cancelled is over).
_ACTIVE = {"PENDING", "QUEUED", "RUNNING", "BLOCKED", "WAITING_FOR_RETRY"}
_MESSAGE_FILE = re.compile(r"^\d{10}\.json$")
# Databricks resolves {{secrets/scope/key}} on the cluster: the value never appears in the run.
_SECRET_REFERENCE = re.compile(r"^\{\{secrets/[^/{}]+/[^/{}]+\}\}$")
# workspace/import: "the base64-encoded content" of at most 10 MB, so ~7.5 MiB of file
IMPORT_LIMIT = 10 * 1024 * 1024
# The Spark confs serverless compute lets a job set (docs: "Configure Spark properties for
# serverless notebooks and jobs"); any other one fails the job when its session sets it.
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
_ENVIRONMENT_KEYS = {"environment_version", "base_environment", "dependencies", "java_dependencies"}
DEFAULT_ENVIRONMENT_VERSION = "2"
# Grants on the workspace root that are expected: the admins group has CAN_MANAGE on every
# folder of a workspace and cannot lose it.
_TRUSTED_GROUPS = {"admins"}
HOME_FOLDER = "spark-portable"  # under /Users/<identity> when workspace_root is not set
_PER_RUN = "messages/<run_id>/"  # the handle's layout of a run's messages


class Workspace:
    """Workspace files through the hook (``workspace/import`` takes base64)."""

    def __init__(self, hook) -> None:
        self.hook = hook

    def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return rest.call(self.hook, method, f"2.0/workspace/{path}", body)

    def status(self, path: str) -> dict[str, Any] | None:
        """``get-status`` of ``path`` (object_id, object_type...), None if nothing is there."""
        try:
            return self._call("GET", "get-status", {"path": path})
        except rest.DatabricksError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def exists(self, path: str) -> bool:
        return self.status(path) is not None

    def mkdirs(self, path: str) -> None:
        self._call("POST", "mkdirs", {"path": path})

    def put(self, path: str, data: bytes, overwrite: bool) -> None:
        """Write ``path`` whole. Without ``overwrite`` a path that is taken raises
        ``ArtifactExists`` (another run's upload, or a retried import that had succeeded)."""
        content = base64.b64encode(data).decode()
        if len(content) > IMPORT_LIMIT:
            raise _too_large(path, len(data))
        self.mkdirs(path.rsplit("/", 1)[0])
        body = {"path": path, "content": content, "format": "RAW", "overwrite": overwrite}
        try:
            self._call("POST", "import", body)
        except rest.DatabricksError as exc:
            if exc.code == "RESOURCE_ALREADY_EXISTS" and not overwrite:
                raise ArtifactExists(path) from None
            if exc.code == "MAX_NOTEBOOK_SIZE_EXCEEDED":
                raise _too_large(path, len(data)) from None
            raise

    def get(self, path: str) -> bytes | None:
        """The file's bytes, None if it does not exist."""
        try:
            found = self._call("GET", "export", {"path": path, "format": "RAW"})
        except rest.DatabricksError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return base64.b64decode(found.get("content", ""))

    def list(self, path: str) -> list[str]:
        try:
            objects = self._call("GET", "list", {"path": path}).get("objects", [])
        except rest.DatabricksError as exc:
            if exc.code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        return [o["path"] for o in objects if o.get("object_type") == "FILE"]

    def acl(self, path: str) -> list[dict[str, Any]]:
        """The folder's access control list (``permissions/directories``), inherited grants
        included."""
        status = self.status(path)
        if status is None:
            raise rest.DatabricksError("RESOURCE_DOES_NOT_EXIST", 404, f"{path} does not exist", "get-status")
        found = rest.call(self.hook, "GET", f"2.0/permissions/directories/{status['object_id']}")
        return found.get("access_control_list", [])


def _too_large(path: str, size: int) -> SparkPortableConfigError:
    return SparkPortableConfigError(
        f"{path}: {size} bytes; Databricks imports a workspace file only while its base64 content is at most "
        f"10 MB ({IMPORT_LIMIT * 3 // 4} bytes of file). Keep large data out of the job's code (a Unity Catalog "
        "volume or cloud storage)"
    )


class WorkspaceChannel(Channel):
    """A task try's workspace folder: ``context.json``, ``run.json`` (the run it started) and
    ``messages/<run_id>/<seq>.json``. Airflow reaches it through the API; the job through the
    ``/Workspace`` mount on the cluster. Each run writes its messages under its own run id
    (Databricks fills in ``{{job.run_id}}``), so nothing a run of this try wrote is ever
    deleted or mistaken for another run's."""

    def __init__(self, folder: str, conn_id: str, run_id: int | None = None, per_run: bool = True) -> None:
        self.folder = folder.rstrip("/")
        self.conn_id = conn_id
        self.run_id = run_id
        self.per_run = per_run  # False: a run submitted by a version that wrote messages/<seq>.json
        self._seen: set[str] = set()

    @property
    def uri(self) -> str:
        return self.folder

    @property
    def context_uri(self) -> str:
        return f"/Workspace{self.folder}/context.json"

    @property
    def messages_uri(self) -> str:
        return f"/Workspace{self.folder}/messages/{{{{job.run_id}}}}/"

    def _workspace(self) -> Workspace:
        from airflow.providers.databricks.hooks.databricks import DatabricksHook

        return Workspace(DatabricksHook(self.conn_id))

    def write_context(self, context: JobContext) -> None:
        workspace = self._workspace()
        workspace.mkdirs(f"{self.folder}/messages")
        body = json.dumps(context.to_dict(), indent=2, default=str).encode()
        workspace.put(f"{self.folder}/context.json", body, overwrite=True)

    def record_run(self, run_id: int, token: str) -> None:
        """Remember the run this try started (with the try's idempotency token, which names
        the task instance and try exactly): the same try executed again follows it."""
        self.run_id = run_id
        record = json.dumps({"run_id": run_id, "idempotency_token": token}).encode()
        self._workspace().put(f"{self.folder}/run.json", record, overwrite=True)

    def recorded_run(self, token: str) -> int | None:
        """The run recorded by this very try, or None (nothing recorded, or another try's)."""
        data = self._workspace().get(f"{self.folder}/run.json")
        try:
            record = json.loads(data) if data else {}
            return int(record["run_id"]) if record.get("idempotency_token") == token else None
        except (ValueError, KeyError, TypeError):
            return None

    def read_new_messages(self) -> list[dict[str, Any]]:
        if self.per_run and self.run_id is None:
            raise RuntimeError("WorkspaceChannel: the run id is needed to read a run's messages")
        workspace = self._workspace()
        messages = []
        listed = workspace.list(f"{self.folder}/messages" + (f"/{self.run_id}" if self.per_run else ""))
        names = sorted(p for p in listed if _MESSAGE_FILE.match(p.rsplit("/", 1)[1]))
        for path in names:
            if path in self._seen:
                continue
            data = workspace.get(path)
            if data is None:
                continue
            try:
                message = json.loads(data)
            except ValueError:
                message = {"type": "malformed", "raw": path}
            messages.append(message if isinstance(message, dict) else {"type": "malformed"})
            self._seen.add(path)
        return messages


def _requirements(spec: JobSpec, relative: str | None) -> list[str]:
    """Requirement specifiers from the project's requirements file (one per line)."""
    if not relative:
        return []
    path = spec.code_root / relative
    if not path.is_file():
        raise SparkPortableConfigError(
            f"profile {spec.profile.name!r}: databricks.python_requirements = {relative!r} is not a file "
            f"under the project root {spec.code_root}"
        )
    # a comment starts a line or follows whitespace (a URL's "#sha256=" is not one), as for pip
    lines = [re.sub(r"(^|\s)#.*$", "", line).strip() for line in path.read_text().splitlines()]
    options = [line for line in lines if line.startswith("-")]
    if options:
        raise SparkPortableConfigError(
            f"{path}: {options[0]!r}: Databricks installs each requirement as a PyPI library; pip options "
            "(-r, --index-url, -e) cannot be passed. List plain requirement specifiers"
        )
    return [line for line in lines if line]


def _checked_root(value: Any, where: str) -> str | None:
    """The profile's workspace_root, or None for the identity's own home folder. /Shared is
    refused: every workspace user can manage it, so anyone could replace the code a run
    executes, forge its messages or read its context."""
    if value is None:
        return None
    root = str(value).rstrip("/")
    if not root.startswith("/") or root == "/Workspace" or root.startswith("/Workspace/") or not root.strip("/"):
        raise SparkPortableConfigError(
            f"{where}: workspace_root = {value!r} must be a workspace folder such as "
            "/Users/you@example.com/spark-portable (without the /Workspace prefix); leave it out to use "
            "the connection identity's home folder"
        )
    if root == "/Shared" or root.startswith("/Shared/"):
        raise SparkPortableConfigError(
            f"{where}: workspace_root = {value!r} is under /Shared, which every workspace user can change: "
            "they could replace the job's code (it runs as the connection's identity) or forge its results. "
            "Leave workspace_root out (the identity's home folder, /Users/<name>/spark-portable) or name a "
            "folder only that identity and the admins can access"
        )
    return root


def _checked_environment(value: Any, where: str) -> dict[str, Any] | None:
    """``serverless: true`` or an environment spec as the Jobs API takes it: exactly one of
    ``environment_version`` and ``base_environment`` (environment_version "2" if neither),
    optional ``dependencies`` / ``java_dependencies``."""
    if not value:
        return None
    if value is True:
        return {"environment_version": DEFAULT_ENVIRONMENT_VERSION}
    if not isinstance(value, dict):
        raise SparkPortableConfigError(f"{where}: serverless must be true or an environment spec mapping")
    if "client" in value:
        raise SparkPortableConfigError(
            f"{where}: serverless.client is deprecated by Databricks; write environment_version: "
            f"{str(value['client'])!r} instead"
        )
    unknown = sorted(set(value) - _ENVIRONMENT_KEYS)
    if unknown:
        raise SparkPortableConfigError(
            f"{where}: serverless has unknown keys {unknown}; an environment spec takes {sorted(_ENVIRONMENT_KEYS)}"
        )
    chosen = [k for k in ("environment_version", "base_environment") if value.get(k) not in (None, "")]
    if len(chosen) > 1:
        raise SparkPortableConfigError(
            f"{where}: serverless sets both environment_version and base_environment; a base environment "
            "carries its own version: keep one"
        )
    spec = {k: (str(v) if k in chosen else v) for k, v in value.items()}
    for key in ("dependencies", "java_dependencies"):
        if key in spec and not (isinstance(spec[key], list) and all(isinstance(d, str) for d in spec[key])):
            raise SparkPortableConfigError(f"{where}: serverless.{key} must be a list of strings")
    if not chosen:
        spec["environment_version"] = DEFAULT_ENVIRONMENT_VERSION
    return spec


def _check_serverless_conf(conf: dict[str, str], where: str) -> None:
    refused = sorted(k for k in conf if k not in SERVERLESS_CONFS)
    if refused:
        raise SparkPortableConfigError(
            f"{where}: serverless compute does not let a job set the Spark conf {refused}; it accepts only "
            f"{sorted(SERVERLESS_CONFS)}. Remove those keys for this profile (move shared ones from spark_conf "
            "into the other engines' conf sections) or run on new_cluster"
        )


class DatabricksEngine(Engine):
    name = "databricks"

    @classmethod
    def validate_profile(cls, profile: Profile) -> dict[str, Any]:
        section, where = cls.profile_section(profile, _SECTION_KEYS)
        cls.one_of(
            section,
            ("new_cluster", "existing_cluster_id", "serverless"),
            where,
            "new_cluster (a job cluster per run), existing_cluster_id or serverless",
        )
        root = _checked_root(section.get("workspace_root"), where)
        new_cluster = section.get("new_cluster")
        if new_cluster is not None and (not isinstance(new_cluster, dict) or "spark_version" not in new_cluster):
            raise SparkPortableConfigError(f"{where}: new_cluster must be a cluster spec with at least spark_version")
        serverless = _checked_environment(section.get("serverless"), where)
        timeout = section.get("timeout_seconds", 0)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise SparkPortableConfigError(f"{where}: timeout_seconds = {timeout!r} must be a whole number >= 0")
        conf = spark_conf_strings(section.get("conf"), where)
        if serverless is not None:
            _check_serverless_conf({**profile.spark_conf, **conf}, f"{where} (with the profile's spark_conf)")
        return {
            "workspace_root": root,
            "new_cluster": dict(new_cluster) if new_cluster else None,
            "existing_cluster_id": section.get("existing_cluster_id"),
            "serverless": serverless,
            "python_requirements": section.get("python_requirements"),
            "conf": conf,
            "timeout_seconds": timeout,
            "region": str(section.get("region", "us-east-1")),
        }

    # -- connection ---------------------------------------------------------------------

    @property
    def conn_id(self) -> str:
        return self.options.get("databricks_conn_id", "databricks_default")

    def __init__(self, options=None, log=None) -> None:
        super().__init__(options, log)
        self._ended: dict[int, dict[str, Any]] = {}
        self._outputs: dict[int, dict[str, Any]] = {}
        self._connected = None
        self._root: str | None = None
        self._identity: str | None = None

    def _hook(self):
        """The provider's hook, made once per engine (it resolves the connection)."""
        if self._connected is None:
            self._connected = self._connect()
        return self._connected

    def _connect(self):
        from airflow.providers.databricks.hooks.databricks import DatabricksHook

        try:
            hook = DatabricksHook(self.conn_id, caller="SparkPortableOperator")
            hook.databricks_conn  # noqa: B018 - resolve the connection now, for a clear error
        except Exception as exc:
            if "isn't defined" in str(exc) or "not found" in str(exc).lower():
                raise SparkPortableConfigError(
                    f"engine_options databricks_conn_id={self.conn_id!r}: {exc}. Create the Databricks "
                    "connection (host and token or service principal) or name an existing one"
                ) from None
            raise
        return hook

    # -- where the artifacts and runs live ----------------------------------------------

    def workspace_root(self, section: dict[str, Any]) -> str:
        """The profile's workspace_root, else ``/Users/<identity>/spark-portable`` (the
        connection identity's home folder), checked once per engine to be private."""
        if self._root is None:
            hook = self._hook()
            try:
                identity = rest.current_identity(hook)
            except rest.DatabricksError as exc:
                raise self._refused(exc) if exc.status in (401, 403) else exc from None
            self._identity = identity
            root = section["workspace_root"] or f"/Users/{identity}/{HOME_FOLDER}"
            self._check_private(Workspace(hook), root, identity, explicit=bool(section["workspace_root"]))
            self._root = root
        return self._root

    def _check_private(self, workspace: Workspace, root: str, identity: str, explicit: bool) -> None:
        """``root`` must grant nothing to anyone but ``identity`` and the admins: whoever can
        write it can change the code runs execute as ``identity``; whoever can read it, read
        every task's context."""
        try:
            workspace.mkdirs(root)
            # the root, and the folders under it a grant could have been given on directly
            acls = [(root, workspace.acl(root))]
            acls += [(f, workspace.acl(f)) for f in (f"{root}/artifacts", f"{root}/runs") if workspace.exists(f)]
        except rest.DatabricksError as exc:
            if exc.code == "PERMISSION_DENIED":
                fix = (
                    "have an admin give it CAN_MANAGE, or leave workspace_root out to use the identity's home folder"
                    if explicit
                    else f"its home folder /Users/{identity} must exist and be its own: ask a workspace admin"
                )
                raise SparkPortableConfigError(
                    f"workspace_root {root}: {identity} may not create or inspect it ({exc.message}); {fix}"
                ) from None
            raise
        others = []
        for folder, acl in acls:
            for entry in acl:
                principal = entry.get("user_name") or entry.get("service_principal_name")
                group = entry.get("group_name")
                if principal == identity or group in _TRUSTED_GROUPS:
                    continue
                levels = sorted({p.get("permission_level", "?") for p in entry.get("all_permissions", [])})
                name = f"group {group}" if group else (principal or "?")
                others.append(f"{name} ({', '.join(levels)}{'' if folder == root else ' on ' + folder})")
        if others:
            raise SparkPortableConfigError(
                f"workspace_root {root} is shared with {'; '.join(others)}: they could read the tasks' contexts "
                f"or change the code runs execute as {identity}. Remove those grants (folder Permissions in the "
                "workspace UI), or leave workspace_root out to use the identity's home folder"
            )

    def _refused(self, exc: Exception) -> SparkPortableConfigError:
        return SparkPortableConfigError(
            f"engine_options databricks_conn_id={self.conn_id!r}: the workspace refused its credentials "
            f"({exc}). Fix the connection's token or service principal"
        )

    # -- the pipes ----------------------------------------------------------------------

    def _try_folder(self, section: dict[str, Any], spec: JobSpec) -> str:
        """One folder per task try. The run name alone is not unique (unsafe characters
        become "_", long names are cut), the try's idempotency token is."""
        return f"{self.workspace_root(section)}/runs/{spec.name}.{self.idempotency_token(spec)[:16]}"

    def open_channel(self, spec: JobSpec) -> Channel:
        section = self.validate_profile(spec.profile)
        self._check_request(spec, section)  # before the context or any artifact is uploaded
        return WorkspaceChannel(self._try_folder(section, spec), self.conn_id)

    def channel_for(self, handle: RunHandle) -> Channel:
        conn_id = handle.get("databricks_conn_id", "databricks_default")
        per_run = handle.get("messages") == _PER_RUN  # handles from before have no such key
        return WorkspaceChannel(handle["channel_uri"], conn_id, handle["run_id"], per_run=per_run)

    # -- submitting ---------------------------------------------------------------------

    def put_artifact(self, workspace: Workspace, root: str, name: str, data: bytes) -> str:
        """``artifacts.put_once`` in workspace files: a file already at the content-addressed
        path is used only if it holds these very bytes (read back and compared), and a
        concurrent first upload of the same bytes is success."""
        return put_once(
            root,
            name,
            data,
            workspace.exists,
            lambda path, body: workspace.put(path, body, overwrite=False),
            self.log,
            read=workspace.get,
        )

    @staticmethod
    def idempotency_token(spec: JobSpec, try_number: int | None = None) -> str:
        """One per task instance and try: a repeated submit of the same try is the same run."""
        run = spec.context.run
        number = run.try_number if try_number is None else try_number
        key = f"{run.dag_id}|{run.task_id}|{run.run_id}|{run.map_index}|{number}"
        return hashlib.sha256(key.encode()).hexdigest()[:64]

    def _checked_conf(self, spec: JobSpec, section: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """(cluster conf, session conf): a job cluster takes all of it; an existing cluster or
        serverless only Spark SQL conf, set on the job's session by the runtime."""
        conf = dict(spec.spark_conf)  # profile < section conf < the task's conf=, layered already
        refuse(
            [k for k in sensitive_keys(conf) if not _SECRET_REFERENCE.match(conf[k])],
            "secret values would be visible in the run's settings",
            "use a Databricks secret reference as the value, e.g. {{secrets/my-scope/my-key}} "
            "(a secret scope), or an instance profile / Unity Catalog storage credential for cloud storage",
        )
        if section["new_cluster"] is not None:
            return conf, {}
        referenced = sorted(k for k, v in conf.items() if _SECRET_REFERENCE.match(v))
        if referenced:
            raise SparkPortableConfigError(
                f"conf {referenced}: Databricks resolves secret references in a job cluster's conf only; on an "
                "existing cluster or serverless, read the secret in the job (dbutils.secrets) or use new_cluster"
            )
        if section["serverless"] is not None:  # its own list (not all spark.sql.*, one spark.databricks.*)
            _check_serverless_conf(conf, f"profile {spec.profile.name!r} with the task's conf")
            return {}, conf
        cluster_level = sorted(k for k in conf if not k.startswith("spark.sql."))
        if cluster_level:
            raise SparkPortableConfigError(
                f"conf {cluster_level}: an existing cluster or serverless compute cannot take cluster Spark "
                "conf per run; set it on that cluster, or use new_cluster. Spark SQL conf (spark.sql.*) is fine"
            )
        return {}, conf

    def _check_request(self, spec: JobSpec, section: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """Everything about the task's arguments a run would refuse or expose, checked
        without a request; returns (cluster conf, session conf)."""
        if spec.env and not all(_SECRET_REFERENCE.match(v) for v in spec.env.values()):
            raise SparkPortableConfigError(
                f"env={sorted(spec.env)}: engine 'databricks' passes env= as cluster environment variables, "
                "visible in the run's settings: use {{secrets/scope/key}} references as values, or pass "
                "plain values in extras"
            )
        if spec.env and section["serverless"] is not None:
            raise SparkPortableConfigError("env=: serverless compute takes no environment variables")
        if spec.env and section["existing_cluster_id"]:
            raise SparkPortableConfigError("env=: an existing cluster's environment is fixed; use new_cluster")
        refuse_secret_args(spec.application_args, "the run's task parameters")
        return self._checked_conf(spec, section)

    def payload(self, spec: JobSpec, section: dict[str, Any], channel: Channel) -> dict[str, Any]:
        """The ``runs/submit`` request for one task try (uploads the artifacts it names)."""
        cluster_conf, session_conf = self._check_request(spec, section)
        workspace = Workspace(self._hook())
        root = self.workspace_root(section)
        app = self.put_artifact(workspace, root, spec.application.name, spec.application.read_bytes())
        wheel_name, wheel = build_code_wheel(spec.code_root)
        wheel_path = "/Workspace" + self.put_artifact(workspace, root, wheel_name, wheel)
        requirements = _requirements(spec, section["python_requirements"])
        parameters = [*channel.bootstrap_args(), *spec.application_args]
        if session_conf:
            parameters[:0] = [protocol.ARG_SESSION_CONF, json.dumps(session_conf, sort_keys=True)]
        task: dict[str, Any] = {
            "task_key": _TASK_KEY,
            "spark_python_task": {"python_file": app, "parameters": parameters, "source": "WORKSPACE"},
        }
        body: dict[str, Any] = {
            "run_name": spec.name,
            "idempotency_token": self.idempotency_token(spec),
            "timeout_seconds": section["timeout_seconds"],
            "tasks": [task],
        }
        if section["serverless"] is not None:
            environment = dict(section["serverless"])  # environment_version or base_environment, checked
            environment["dependencies"] = [*environment.get("dependencies", []), wheel_path, *requirements]
            body["environments"] = [{"environment_key": _ENVIRONMENT_KEY, "spec": environment}]
            task["environment_key"] = _ENVIRONMENT_KEY
            return body
        task["libraries"] = [{"whl": wheel_path}, *({"pypi": {"package": r}} for r in requirements)]
        if section["existing_cluster_id"]:
            task["existing_cluster_id"] = section["existing_cluster_id"]
            return body
        cluster = dict(section["new_cluster"])
        cluster["spark_conf"] = {**cluster.get("spark_conf", {}), **cluster_conf}
        cluster["custom_tags"] = {**cluster.get("custom_tags", {}), **safe_tags(spec.tags)}
        if spec.env:
            cluster["spark_env_vars"] = {**cluster.get("spark_env_vars", {}), **spec.env}
        task["new_cluster"] = cluster
        return body

    def submit(self, spec: JobSpec, channel: Channel) -> RunHandle:
        section = self.validate_profile(spec.profile)
        body = self.payload(spec, section, channel)
        hook = self._hook()
        run_id = hook.submit_run(body)  # the same try submitted again gets this run back (token)
        self.log.info("Submitted Databricks run %s (%s)", run_id, spec.name)
        channel.record_run(run_id, body["idempotency_token"])
        return self._handle(hook, run_id, spec.name, channel, section["region"])

    def _handle(self, hook, run_id: int, run_name: str, channel: WorkspaceChannel, region: str) -> RunHandle:
        return {
            "engine": self.name,
            "run_id": run_id,
            "run_name": run_name,
            "run_page_url": hook.get_run_page_url(run_id),
            "channel_uri": channel.uri,
            **({"messages": _PER_RUN} if channel.per_run else {}),
            "region": region,
            "databricks_conn_id": self.conn_id,
        }

    def find_active_run(self, spec: JobSpec) -> RunHandle | None:
        """The run to follow instead of submitting: the run this very try already started
        (recorded in its folder with its token, whatever its state: its messages are there),
        else an active one-time run of an earlier try of this task instance that this identity
        submitted, found by its run name (Airflow 3 clears XCom between tries)."""
        section = self.validate_profile(spec.profile)
        hook = self._hook()
        this_try = WorkspaceChannel(self._try_folder(section, spec), self.conn_id)
        recorded = this_try.recorded_run(self.idempotency_token(spec))
        if recorded is not None:
            try:
                state = hook.get_run(recorded)["state"]["life_cycle_state"]
            except Exception as exc:
                error = rest.error_of(exc, "jobs/runs/get")
                if error is None or error.code not in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                    raise
                raise SparkJobFailed(  # its idempotency token cannot start another run
                    f"Databricks run {recorded}, which this task try started ({this_try.folder}/run.json), no "
                    f"longer exists ({error.message}). Clear the task to run it again as a new try"
                ) from None
            self.log.info("This try already started Databricks run %s (%s): following it", recorded, state)
            return self._handle(hook, recorded, spec.name, this_try, section["region"])
        base = try_base(spec.name)
        try:
            runs = rest.list_active_submit_runs(hook)
        except rest.DatabricksError as exc:
            raise self._refused(exc) if exc.status in (401, 403) else exc from None
        for run in runs:
            if try_base(run.get("run_name", "")) != base or run["state"]["life_cycle_state"] not in _ACTIVE:
                continue
            if run.get("creator_user_name") not in (None, self._identity):  # another deployment's
                continue
            channel = self._channel_of_run(hook.get_run(run["run_id"]))
            if channel is not None and self._of_this_instance(channel.folder, run["run_name"], spec, section):
                return self._handle(hook, run["run_id"], run["run_name"], channel, section["region"])
        return None

    def _of_this_instance(self, folder: str, run_name: str, spec: JobSpec, section: dict[str, Any]) -> bool:
        """Whether a run's folder is one of this task instance's tries: its name ends with one
        of their tokens (run names alone can collide), or it is the layout of an earlier
        version, named by the run name only."""
        runs = f"{self.workspace_root(section)}/runs/"
        tokens = {self.idempotency_token(spec, n)[:16] for n in range(1, spec.context.run.try_number + 1)}
        return folder == runs + run_name or any(folder == f"{runs}{run_name}.{t}" for t in tokens)

    def _channel_of_run(self, run: dict[str, Any]) -> WorkspaceChannel | None:
        """The channel a submitted run was given: read from its own task parameters, so any
        folder layout an earlier version used is found as it was."""
        tasks = run.get("tasks") or []
        parameters = ((tasks[0] if tasks else {}).get("spark_python_task") or {}).get("parameters") or []
        try:
            context = parameters[parameters.index(protocol.ARG_CONTEXT) + 1]
            messages = parameters[parameters.index(protocol.ARG_MESSAGES) + 1]
        except (ValueError, IndexError):
            return None
        folder = context.removeprefix("/Workspace").removesuffix("/context.json")
        return WorkspaceChannel(folder, self.conn_id, run["run_id"], per_run="{{job.run_id}}" in messages)

    # -- waiting ------------------------------------------------------------------------

    def _ended_run(self, handle: RunHandle) -> dict[str, Any]:
        """The finished run, read once: the result, the logs and the cost all need it."""
        if handle["run_id"] not in self._ended:
            self._ended[handle["run_id"]] = self._hook().get_run(handle["run_id"])
        return self._ended[handle["run_id"]]

    def _output(self, handle: RunHandle) -> dict[str, Any]:
        """``runs/get-output`` of the run's task (not of the parent: the API refuses that),
        read once; {} with the reason logged when there is none (a cluster that never started)."""
        if handle["run_id"] not in self._outputs:
            run = self._ended_run(handle)
            tasks = run.get("tasks") or []
            try:
                output = self._hook().get_run_output(tasks[0]["run_id"] if tasks else run["run_id"])
            except Exception as exc:
                self.log.info("No run output for run %s: %s", handle["run_id"], exc)
                output = {}
            self._outputs[handle["run_id"]] = output
        return self._outputs[handle["run_id"]]

    def _result(self, handle: RunHandle) -> RunResult:
        state = self._ended_run(handle)["state"]
        life, result = state["life_cycle_state"], state.get("result_state", "")
        message = f"Databricks run {handle['run_id']} {life} {result}: {state.get('state_message', '')}".strip()
        if result == "SUCCESS":
            return RunResult(SUCCEEDED, message)
        if result == "CANCELED":
            return RunResult(CANCELLED, message)
        output = self._output(handle)
        if output.get("error"):
            message += f"; error: {output['error']}"
        return RunResult(FAILED, message, log_tail=(output.get("error_trace") or "").splitlines())

    def wait(self, handle: RunHandle) -> RunResult:
        interval = float(self.options.get("poll_interval_seconds", 30))
        while True:
            result = self.poll(handle)
            if result is not None:
                return result
            time.sleep(interval)

    def trigger(self, handle: RunHandle, poll_interval: float) -> BaseTrigger | None:
        from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger

        return DatabricksExecutionTrigger(
            run_id=handle["run_id"],
            databricks_conn_id=handle["databricks_conn_id"],
            polling_period_seconds=max(1, int(poll_interval)),
            run_page_url=handle.get("run_page_url"),
        )

    def poll(self, handle: RunHandle) -> RunResult | None:
        """None while the run is pending, queued, running or terminating; then how it ended
        (the run itself, with its error text)."""
        from airflow.providers.databricks.hooks.databricks import RunState

        if handle["run_id"] not in self._ended:
            run = self._hook().get_run(handle["run_id"])
            if not RunState(**run["state"]).is_terminal:
                return None
            self._ended[handle["run_id"]] = run
        return self._result(handle)

    # -- cancelling, logs, links ---------------------------------------------------------

    def cancel(self, handle: RunHandle) -> None:
        self.log.info("Cancelling Databricks run %s", handle["run_id"])
        self._hook().cancel_run(handle["run_id"])

    def links(self, handle: RunHandle) -> dict[str, str]:
        url = handle.get("run_page_url")
        return {"run": url, "logs": url} if url else {}

    def fetch_logs(self, handle: RunHandle, succeeded: bool) -> list[str]:
        """The task's stdout (``runs/get-output`` keeps its last 5 MB) and, on failure, its
        error trace."""
        output = self._output(handle)
        if not output:
            return ["(no run output; see the run page)"]
        lines = ["--- stdout (runs/get-output) ---", *(output.get("logs") or "").splitlines()[-200:]]
        if output.get("error_trace"):
            lines += ["--- error trace ---", *output["error_trace"].splitlines()]
        return lines

    # -- cost -------------------------------------------------------------------------

    def cost(self, handle: RunHandle) -> dict[str, Any] | None:
        """A job cluster's nodes x the run's setup + execution + cleanup time, priced as EC2
        plus DBUs at the jobs-compute rate. Workers count at ``num_workers`` (autoscaling: at
        ``max_workers``, an upper bound); with spot availability, nodes beyond
        ``first_on_demand`` (default 1: the driver) are spot. Existing clusters and serverless
        compute are billed by Databricks in ways a run does not show: no estimate."""
        run = self._ended_run(handle)
        task = (run.get("tasks") or [run])[0]
        cluster = task.get("new_cluster")
        if not cluster:
            self.log.info("No cost estimate: the run used an existing cluster or serverless compute")
            return None
        milliseconds = sum(task.get(k) or 0 for k in ("setup_duration", "execution_duration", "cleanup_duration"))
        if not milliseconds and task.get("start_time"):
            milliseconds = (task.get("end_time") or time.time() * 1000) - task["start_time"]
        hours = milliseconds / 3_600_000
        workers = cluster.get("num_workers")
        if workers is None:
            workers = (cluster.get("autoscale") or {}).get("max_workers", 0)
        aws = cluster.get("aws_attributes") or {}
        spot = aws.get("availability", "ON_DEMAND") in ("SPOT", "SPOT_WITH_FALLBACK")
        on_demand = aws.get("first_on_demand", 1) if spot else 1 + workers
        node = cluster.get("node_type_id", "?")
        usage = [InstanceUsage(cluster.get("driver_node_type_id") or node, "ON_DEMAND" if on_demand else "SPOT", hours)]
        usage += [InstanceUsage(node, "ON_DEMAND" if i + 1 < on_demand else "SPOT", hours) for i in range(workers)]
        basis = (
            "job cluster: driver + "
            + (
                f"{workers} workers"
                if cluster.get("num_workers") is not None
                else f"up to {workers} workers (autoscale max)"
            )
            + " for the run's setup, execution and cleanup"
        )
        return PriceTable.load().databricks_estimate(handle.get("region", "us-east-1"), usage, basis, "jobs")
