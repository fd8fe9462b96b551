"""``engine="databricks"``: the job as a one-time run (Jobs API ``runs/submit``).

Built on the databricks provider: ``DatabricksHook`` talks to the API (with its auth, retries
and connection handling), ``DatabricksExecutionTrigger`` waits while deferred. The run is one
``spark_python_task`` on a new job cluster from the profile, an existing cluster, or
serverless compute. Artifacts (the job file and the project code as a wheel) are workspace
files under content-hashed paths; the context and messages of each task try live in a
workspace folder of their own, which the job sees under ``/Workspace`` (one file per message:
workspace files cannot be appended to).

Profile section ``databricks``::

    databricks:
      workspace_root: /Shared/spark-portable   # artifacts/ and runs/ live under it
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

from airflow_spark_portable.artifacts import build_code_wheel, put_once
from airflow_spark_portable.costs import InstanceUsage, PriceTable
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
from airflow_spark_portable.exceptions import SparkPortableConfigError
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


class Workspace:
    """Workspace files through the hook's JSON API (``workspace/import`` takes base64)."""

    def __init__(self, hook) -> None:
        self.hook = hook

    def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        # (the provider >= 7.6 prefixes "api/" to endpoints itself)
        return self.hook._do_api_call((method, f"2.0/workspace/{path}"), body)

    def exists(self, path: str) -> bool:
        try:
            self._call("GET", "get-status", {"path": path})
        except Exception as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc):
                return False
            raise
        return True

    def mkdirs(self, path: str) -> None:
        self._call("POST", "mkdirs", {"path": path})

    def put(self, path: str, data: bytes, overwrite: bool) -> None:
        self.mkdirs(path.rsplit("/", 1)[0])
        body = {"path": path, "content": base64.b64encode(data).decode(), "format": "RAW", "overwrite": overwrite}
        self._call("POST", "import", body)

    def get(self, path: str) -> bytes:
        return base64.b64decode(self._call("GET", "export", {"path": path, "format": "RAW"}).get("content", ""))

    def list(self, path: str) -> list[str]:
        try:
            objects = self._call("GET", "list", {"path": path}).get("objects", [])
        except Exception as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc):
                return []
            raise
        return [o["path"] for o in objects if o.get("object_type") == "FILE"]

    def delete(self, path: str) -> None:
        try:
            self._call("POST", "delete", {"path": path, "recursive": True})
        except Exception as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
                raise


class WorkspaceChannel(Channel):
    """A task try's workspace folder: ``context.json`` and ``messages/<seq>.json``. Airflow
    reaches it through the API; the job through the ``/Workspace`` mount on the cluster."""

    def __init__(self, folder: str, conn_id: str) -> None:
        self.folder = folder.rstrip("/")
        self.conn_id = conn_id
        self._seen: set[str] = set()

    @property
    def uri(self) -> str:
        return self.folder

    @property
    def context_uri(self) -> str:
        return f"/Workspace{self.folder}/context.json"

    @property
    def messages_uri(self) -> str:
        return f"/Workspace{self.folder}/messages/"

    def _workspace(self) -> Workspace:
        from airflow.providers.databricks.hooks.databricks import DatabricksHook

        return Workspace(DatabricksHook(self.conn_id))

    def write_context(self, context: JobContext) -> None:
        workspace = self._workspace()
        workspace.delete(self.folder)  # a re-run of the same try starts clean
        workspace.mkdirs(f"{self.folder}/messages")
        body = json.dumps(context.to_dict(), indent=2, default=str).encode()
        workspace.put(f"{self.folder}/context.json", body, overwrite=True)
        self._seen.clear()

    def read_new_messages(self) -> list[dict[str, Any]]:
        workspace = self._workspace()
        messages = []
        names = sorted(p for p in workspace.list(f"{self.folder}/messages") if _MESSAGE_FILE.match(p.rsplit("/", 1)[1]))
        for path in names:
            if path in self._seen:
                continue
            try:
                message = json.loads(workspace.get(path))
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
        root = str(section.get("workspace_root") or "")
        if not root.startswith("/") or root.startswith("/Workspace/") or len(root.strip("/")) == 0:
            raise SparkPortableConfigError(
                f"{where}: workspace_root = {section.get('workspace_root')!r} must be a workspace folder such as "
                "/Shared/spark-portable or /Users/you@example.com/spark-portable (without the /Workspace prefix)"
            )
        new_cluster = section.get("new_cluster")
        if new_cluster is not None and (not isinstance(new_cluster, dict) or "spark_version" not in new_cluster):
            raise SparkPortableConfigError(f"{where}: new_cluster must be a cluster spec with at least spark_version")
        serverless = section.get("serverless")
        if serverless and not isinstance(serverless, (bool, dict)):
            raise SparkPortableConfigError(f"{where}: serverless must be true or an environment spec mapping")
        timeout = section.get("timeout_seconds", 0)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise SparkPortableConfigError(f"{where}: timeout_seconds = {timeout!r} must be a whole number >= 0")
        return {
            "workspace_root": root.rstrip("/"),
            "new_cluster": dict(new_cluster) if new_cluster else None,
            "existing_cluster_id": section.get("existing_cluster_id"),
            "serverless": (serverless if isinstance(serverless, dict) else {}) if serverless else None,
            "python_requirements": section.get("python_requirements"),
            "conf": spark_conf_strings(section.get("conf"), where),
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

    # -- the pipes ----------------------------------------------------------------------

    def open_channel(self, spec: JobSpec) -> Channel:
        section = self.validate_profile(spec.profile)
        return WorkspaceChannel(f"{section['workspace_root']}/runs/{spec.name}", self.conn_id)

    def channel_for(self, handle: RunHandle) -> Channel:
        return WorkspaceChannel(handle["channel_uri"], handle.get("databricks_conn_id", "databricks_default"))

    # -- submitting ---------------------------------------------------------------------

    def put_artifact(self, workspace: Workspace, root: str, name: str, data: bytes) -> str:
        """``artifacts.put_once`` in workspace files."""
        return put_once(
            root, name, data, workspace.exists, lambda path, body: workspace.put(path, body, overwrite=False), self.log
        )

    @staticmethod
    def idempotency_token(spec: JobSpec) -> str:
        """One per task instance and try: a repeated submit of the same try is the same run."""
        run = spec.context.run
        key = f"{run.dag_id}|{run.task_id}|{run.run_id}|{run.map_index}|{run.try_number}"
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
        cluster_level = sorted(k for k in conf if not k.startswith("spark.sql."))
        if cluster_level:
            raise SparkPortableConfigError(
                f"conf {cluster_level}: an existing cluster or serverless compute cannot take cluster Spark "
                "conf per run; set it on that cluster, or use new_cluster. Spark SQL conf (spark.sql.*) is fine"
            )
        return {}, conf

    def payload(self, spec: JobSpec, section: dict[str, Any], channel: Channel) -> dict[str, Any]:
        """The ``runs/submit`` request for one task try (uploads the artifacts it names)."""
        if spec.env and not all(_SECRET_REFERENCE.match(v) for v in spec.env.values()):
            raise SparkPortableConfigError(
                f"env={sorted(spec.env)}: engine 'databricks' passes env= as cluster environment variables, "
                "visible in the run's settings: use {{secrets/scope/key}} references as values, or pass "
                "plain values in extras"
            )
        refuse_secret_args(spec.application_args, "the run's task parameters")
        cluster_conf, session_conf = self._checked_conf(spec, section)
        workspace = Workspace(self._hook())
        root = section["workspace_root"]
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
            if spec.env:
                raise SparkPortableConfigError("env=: serverless compute takes no environment variables")
            environment = {"environment_version": "2", **section["serverless"]}
            environment["dependencies"] = [*environment.get("dependencies", []), wheel_path, *requirements]
            body["environments"] = [{"environment_key": _ENVIRONMENT_KEY, "spec": environment}]
            task["environment_key"] = _ENVIRONMENT_KEY
            return body
        task["libraries"] = [{"whl": wheel_path}, *({"pypi": {"package": r}} for r in requirements)]
        if section["existing_cluster_id"]:
            if spec.env:
                raise SparkPortableConfigError("env=: an existing cluster's environment is fixed; use new_cluster")
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
        run_id = hook.submit_run(body)
        self.log.info("Submitted Databricks run %s (%s)", run_id, spec.name)
        return self._handle(hook, run_id, spec.name, channel, section["region"])

    def _handle(self, hook, run_id: int, run_name: str, channel: Channel, region: str) -> RunHandle:
        return {
            "engine": self.name,
            "run_id": run_id,
            "run_name": run_name,
            "run_page_url": hook.get_run_page_url(run_id),
            "channel_uri": channel.uri,
            "region": region,
            "databricks_conn_id": self.conn_id,
        }

    def find_active_run(self, spec: JobSpec) -> RunHandle | None:
        """An active one-time run of this task instance (any try), found by its run name:
        Airflow 3 clears XCom between tries."""
        section = self.validate_profile(spec.profile)
        hook = self._hook()
        base = try_base(spec.name)
        offset = 0
        while True:
            try:  # the first call of a task try: refused credentials get named here
                page = hook._do_api_call(
                    ("GET", "2.1/jobs/runs/list"),
                    {"active_only": "true", "run_type": "SUBMIT_RUN", "limit": 25, "offset": offset},
                )
            except Exception as exc:
                if re.search(r"Status Code: 40[13]\b", str(exc)):
                    raise SparkPortableConfigError(
                        f"engine_options databricks_conn_id={self.conn_id!r}: the workspace refused its "
                        f"credentials ({exc}). Fix the connection's token or service principal"
                    ) from None
                raise
            for run in page.get("runs", []):
                if try_base(run.get("run_name", "")) == base and run["state"]["life_cycle_state"] in _ACTIVE:
                    channel = WorkspaceChannel(f"{section['workspace_root']}/runs/{run['run_name']}", self.conn_id)
                    return self._handle(hook, run["run_id"], run["run_name"], channel, section["region"])
            if not page.get("has_more"):
                return None
            offset += len(page.get("runs", [])) or 25

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
