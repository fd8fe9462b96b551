"""``engine="emr"``: the job as one ``command-runner.jar spark-submit`` step on an EMR cluster.

Built on the amazon provider: ``EmrHook`` adds steps, ``S3Hook`` moves artifacts and the
pipes messages, ``EmrStepSensorTrigger`` waits while deferred. Step state decides the
outcome, never cluster state. Everything a step needs arrives per step: the job file and the
code bundle under content-hashed S3 keys, the context and message URIs as step arguments
(the task try's own S3 prefix), never through cluster configuration other steps share.

Profile section ``emr``::

    emr:
      cluster_id: j-XXXXXXXX           # an existing cluster; or cluster_name: an active one's name;
                                       # or cluster: {...} a transient cluster per task try
                                       # (emr_cluster.py has its keys)
      s3_root: s3://bucket/spark-portable   # artifacts/ and runs/ live under it
      deploy_mode: client              # client (default): driver output is the step's log;
                                       # cluster: transient clusters only (see cancel())
      python: python3                  # the cluster's Python for the driver and workers
      conf: {spark.dynamicAllocation.enabled: "true"}

``engine_options``: ``aws_conn_id`` (default ``aws_default``), ``poll_interval_seconds``
(synchronous waiting), ``log_wait_seconds`` (how long to wait for EMR's final log upload
after a failure, default 300), ``success_log_wait_seconds`` (after a success, default 60) and
``cancel_wait_seconds`` (how long a cancel, or a retry finding its previous try's step still
being cancelled, waits for the step to end, default 120).

docs/emr.md is the user-facing guide: releases, what an existing cluster needs, IAM, deploy
modes and cancelling, step concurrency and pools, log upload lag.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_spark_portable.artifacts import ArtifactExists, build_code_bundle, put_once
from airflow_spark_portable.costs import InstanceUsage, PriceTable
from airflow_spark_portable.engines import emr_cluster
from airflow_spark_portable.engines.base import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    Engine,
    JobSpec,
    RunHandle,
    RunResult,
    try_base,
)
from airflow_spark_portable.exceptions import AirflowException, SparkPortableConfigError
from airflow_spark_portable.pipes import Channel, S3Channel
from airflow_spark_portable.profiles import Profile, spark_conf_strings
from airflow_spark_portable.redaction import refuse, refuse_secret_args, sensitive_keys
from airflow_spark_portable.runtime import protocol

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

_SECTION_KEYS = {"cluster_id", "cluster_name", "cluster", "s3_root", "deploy_mode", "python", "conf"}
_ACTIVE_CLUSTER = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
# A step is live until EMR says it ended: CANCEL_PENDING steps still run (their process is
# being stopped) and hold a slot of the cluster's StepConcurrencyLevel.
_LIVE_STEP = ["PENDING", "RUNNING", "CANCEL_PENDING"]
_STEP_RESULT = {"COMPLETED": SUCCEEDED, "CANCELLED": CANCELLED, "INTERRUPTED": CANCELLED, "FAILED": FAILED}
_LOG_TAIL_LINES = 200
# ClusterStateChangeReason codes that mean the cluster itself failed (bootstrap, capacity,
# instances, a refused request). USER_REQUEST, ALL_STEPS_COMPLETED and STEP_FAILURE do not.
_CLUSTER_FAILED = {
    "BOOTSTRAP_FAILURE",
    "INSTANCE_FAILURE",
    "INSTANCE_FLEET_TIMEOUT",
    "VALIDATION_ERROR",
    "INTERNAL_ERROR",
}
# EMR accepts at most this many PENDING/RUNNING (and CANCEL_PENDING) steps per cluster.
ACTIVE_STEP_LIMIT = 256
# SEND_INTERRUPT only SIGTERMs the step's own process; TERMINATE_PROCESS SIGKILLs its tree.
_CANCEL_OPTION = "TERMINATE_PROCESS"
_BOTO3_NAME = re.compile(r"^\s*boto3\s*($|[=<>!~;\[ ])", re.IGNORECASE | re.MULTILINE)


class EmrStepLimitReached(AirflowException):
    """The cluster has as many active steps as EMR accepts: this try fails, a retry may fit."""


class EmrEngine(Engine):
    name = "emr"

    def __init__(self, options=None, log=None) -> None:
        super().__init__(options, log)
        self._clusters: dict[tuple, str] = {}

    @classmethod
    def validate_profile(cls, profile: Profile) -> dict[str, Any]:
        section, where = cls.profile_section(profile, _SECTION_KEYS)
        cls.one_of(
            section,
            ("cluster_id", "cluster_name", "cluster"),
            where,
            "cluster_id (j-...), cluster_name (an active cluster's name) or cluster (a transient cluster per task)",
        )
        s3_root = str(section.get("s3_root") or "").rstrip("/")
        if not s3_root.startswith("s3://") or len(s3_root) <= len("s3://"):
            raise SparkPortableConfigError(
                f"{where}: s3_root = {section.get('s3_root')!r} must be an s3://bucket/prefix the cluster can "
                "read and write (artifacts and each task try's context and messages go there)"
            )
        deploy_mode = section.get("deploy_mode", "client")
        if deploy_mode not in ("client", "cluster"):
            raise SparkPortableConfigError(f"{where}: deploy_mode = {deploy_mode!r} must be client or cluster")
        cluster = section.get("cluster")
        if deploy_mode == "cluster" and not cluster:
            raise SparkPortableConfigError(
                f"{where}: deploy_mode = cluster needs a transient cluster (cluster: {{...}}). On an existing "
                "cluster YARN runs the driver apart from the step, so cancelling the step (kill, mark failed, "
                "execution_timeout) leaves the Spark application running, and a retry would run a second copy "
                "into the same output. Use deploy_mode: client (the default), whose driver ends with the "
                "cancelled step, or a transient cluster, whose termination ends the driver too"
            )
        return {
            "cluster_id": section.get("cluster_id"),
            "cluster_name": section.get("cluster_name"),
            "cluster": emr_cluster.validate(cluster, where, s3_root) if cluster else None,
            "s3_root": s3_root,
            "deploy_mode": deploy_mode,
            "python": str(section.get("python", "python3")),
            "conf": spark_conf_strings(section.get("conf"), where),
        }

    # -- connections ---------------------------------------------------------------------

    @property
    def aws_conn_id(self) -> str | None:
        return self.options.get("aws_conn_id", "aws_default")

    def _emr(self):
        from airflow.providers.amazon.aws.hooks.emr import EmrHook

        # no emr_conn_id: a transient cluster's whole request comes from the profile
        return EmrHook(aws_conn_id=self.aws_conn_id, emr_conn_id=None)

    def check_connection(self) -> None:
        """A named connection must exist. (The provider quietly falls back to the worker's own
        AWS credentials for a missing one, which would run a typo'd task in another account.)"""
        conn_id = self.aws_conn_id
        if conn_id is None or conn_id == "aws_default":  # the documented default: env / instance role
            return
        try:
            self._emr().get_connection(conn_id)
        except Exception as exc:
            raise SparkPortableConfigError(
                f"engine_options aws_conn_id={conn_id!r}: {exc}. Create the connection, or use "
                "aws_default / None for the worker's own AWS credentials"
            ) from None

    def _s3(self):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id)

    # -- the pipes ----------------------------------------------------------------------

    def open_channel(self, spec: JobSpec) -> Channel:
        """A mailbox of this submission's own. A step's name can be another deployment's too
        (the same DAG, scheduled run ids are alike, one s3_root): a random part cannot."""
        section = self.validate_profile(spec.profile)
        return S3Channel(f"{section['s3_root']}/runs/{spec.name}.{secrets.token_hex(8)}", self.aws_conn_id)

    def channel_for(self, handle: RunHandle) -> Channel:
        return S3Channel(handle["channel_uri"], handle.get("aws_conn_id"))

    # -- submitting ---------------------------------------------------------------------

    def cluster_id(self, section: dict[str, Any]) -> str:
        """The target cluster, checked to be up (a terminated cluster would queue nothing).
        Looked up once per task try: the reattach check and the submit share it."""
        key = (section["cluster_id"], section["cluster_name"])
        if key not in self._clusters:
            self._clusters[key] = self._find_cluster(section)
        return self._clusters[key]

    def _find_cluster(self, section: dict[str, Any]) -> str:
        from botocore.exceptions import ClientError

        self.check_connection()
        hook = self._emr()
        if section["cluster_name"]:
            found = hook.get_cluster_id_by_name(section["cluster_name"], _ACTIVE_CLUSTER)
            if not found:
                raise SparkPortableConfigError(
                    f"no active EMR cluster is named {section['cluster_name']!r} (states {', '.join(_ACTIVE_CLUSTER)})"
                )
            return found
        try:
            state = hook.conn.describe_cluster(ClusterId=section["cluster_id"])["Cluster"]["Status"]["State"]
        except ClientError as exc:
            raise SparkPortableConfigError(f"EMR cluster {section['cluster_id']!r}: {exc}") from None
        if state not in _ACTIVE_CLUSTER:
            raise SparkPortableConfigError(f"EMR cluster {section['cluster_id']} is {state}; it cannot run steps")
        return section["cluster_id"]

    def put_artifact(self, s3_root: str, name: str, data: bytes) -> str:
        """``artifacts.put_once`` on S3: a conditional put (``If-None-Match: *``), so of two
        tasks uploading the same new artifact exactly one writes, the other finds it in place
        (412 Precondition Failed, or 409 ConditionalRequestConflict while the first write is
        under way) and checks the bytes; an object with other bytes is never overwritten."""
        from botocore.exceptions import ClientError

        hook = self._s3()
        client = hook.get_conn()

        def split(uri: str) -> tuple[str, str]:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            return bucket, key

        def exists(uri: str) -> bool:
            bucket, key = split(uri)
            return hook.check_for_key(key, bucket_name=bucket)

        def read(uri: str) -> bytes | None:
            bucket, key = split(uri)
            try:
                return client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

        def put(uri: str, body: bytes) -> None:
            bucket, key = split(uri)
            try:
                client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*", **hook.extra_args)
            except ClientError as exc:
                error = exc.response.get("Error", {})
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                    raise ArtifactExists(uri) from None
                raise

        return put_once(s3_root, name, data, exists, put, self.log, read)

    def upload_artifacts(self, spec: JobSpec, s3_root: str) -> tuple[str, str]:
        """(job file URI, code bundle URI)."""
        bundle = build_code_bundle(spec.code_root)
        return (
            self.put_artifact(s3_root, spec.application.name, spec.application.read_bytes()),
            self.put_artifact(s3_root, "code.zip", bundle.data),
        )

    def requirements_bootstrap(self, spec: JobSpec, section: dict[str, Any]) -> list[dict[str, Any]]:
        """The bootstrap action that pip-installs boto3 (the job side's S3 channel needs it; EMR
        7.x's python3 is not documented to have it) and ``python_requirements`` on every node: always, even
        without requirements. A requirements file that names boto3 itself decides its version."""
        relative = section["cluster"]["python_requirements"]
        args = [section["python"]]
        if relative:
            path = spec.code_root / relative
            if not path.is_file():
                raise SparkPortableConfigError(
                    f"profile {spec.profile.name!r}: emr.cluster.python_requirements = {relative!r} is not a file "
                    f"under the project root {spec.code_root}"
                )
            text = path.read_bytes()
            if not _BOTO3_NAME.search(text.decode("utf-8", "replace")):
                args.append(emr_cluster.BOTO3_REQUIREMENT)
            args += ["--requirement", self.put_artifact(section["s3_root"], "requirements.txt", text)]
        else:
            args.append(emr_cluster.BOTO3_REQUIREMENT)
        script = self.put_artifact(
            section["s3_root"], "install-requirements.sh", emr_cluster.REQUIREMENTS_BOOTSTRAP.encode()
        )
        return [{"Name": "spark-portable: python packages", "ScriptBootstrapAction": {"Path": script, "Args": args}}]

    def step(self, spec: JobSpec, section: dict[str, Any], app_uri: str, code_uri: str, channel: Channel) -> dict:
        if spec.env:
            raise SparkPortableConfigError(
                f"env={sorted(spec.env)}: engine 'emr' does not pass environment variables (they would be "
                "visible as step arguments); pass values in extras or application_args instead"
            )
        # spec.spark_conf already layers profile < section conf < the task's conf=
        conf = {
            "spark.pyspark.python": section["python"],
            "spark.pyspark.driver.python": section["python"],
            **spec.spark_conf,
        }
        refuse(
            sensitive_keys(conf),
            "secrets cannot travel as EMR step arguments (anyone with console access reads them)",
            "give the cluster an instance profile (S3), an EMR security configuration, or let the job read "
            "the credential from AWS Secrets Manager at run time (Azure, GCS, JDBC keys)",
        )
        refuse_secret_args(spec.application_args, "the EMR step's arguments")
        args = ["spark-submit", "--deploy-mode", section["deploy_mode"], "--name", spec.name, "--py-files", code_uri]
        for key, value in sorted(conf.items()):
            args += ["--conf", f"{key}={value}"]
        args += [app_uri, *channel.bootstrap_args(), *spec.application_args]
        return {
            "Name": spec.name,
            "ActionOnFailure": "CONTINUE",  # a failed job must not stop a shared cluster
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
        }

    def submit(self, spec: JobSpec, channel: Channel) -> RunHandle:
        section = self.validate_profile(spec.profile)
        if section["cluster"] is not None:
            return self._submit_transient(spec, section, channel)
        from botocore.exceptions import ClientError

        cluster_id = self.cluster_id(section)
        app_uri, code_uri = self.upload_artifacts(spec, section["s3_root"])
        step = self.step(spec, section, app_uri, code_uri, channel)
        hook = self._emr()
        level = self._step_concurrency(hook.conn, cluster_id)
        active = self._live_steps(hook.conn, cluster_id)
        try:
            (step_id,) = hook.add_job_flow_steps(job_flow_id=cluster_id, steps=[step])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ValidationException":
                raise  # throttling, outages: the task's retries handle them
            active = self._live_steps(hook.conn, cluster_id)
            if len(active) + 1 > ACTIVE_STEP_LIMIT:
                raise EmrStepLimitReached(
                    f"EMR cluster {cluster_id} refused the step: it has {len(active)} active steps (PENDING, "
                    f"RUNNING or CANCEL_PENDING) and EMR accepts at most {ACTIVE_STEP_LIMIT}. It runs {level} "
                    f"at a time (StepConcurrencyLevel), the rest only queue. Fix: put the tasks that use this "
                    f"cluster in an Airflow pool with {level} slot(s), so Airflow queues them instead of EMR "
                    "(see docs/emr.md). This try fails; a retry submits again"
                ) from None
            raise SparkPortableConfigError(f"EMR cluster {cluster_id} refused the step: {exc}") from None
        self.log.info("Added step %s (%s) to EMR cluster %s", step_id, spec.name, cluster_id)
        if len(active) >= level:
            self.log.warning(
                "EMR cluster %s runs %d step(s) at a time (StepConcurrencyLevel) and %d are active: step %s "
                "waits PENDING behind them, while this task's execution_timeout runs. An Airflow pool with %d "
                "slot(s) for this cluster's tasks queues them in Airflow instead (docs/emr.md)",
                cluster_id,
                level,
                len(active),
                step_id,
                level,
            )
        return self._handle(cluster_id, step_id, spec.name, channel, transient=False)

    @staticmethod
    def _step_concurrency(conn, cluster_id: str) -> int:
        return int(conn.describe_cluster(ClusterId=cluster_id)["Cluster"].get("StepConcurrencyLevel") or 1)

    @staticmethod
    def _live_steps(conn, cluster_id: str) -> list[dict[str, Any]]:
        return [
            step
            for page in conn.get_paginator("list_steps").paginate(ClusterId=cluster_id, StepStates=_LIVE_STEP)
            for step in page.get("Steps", [])
        ]

    def _submit_transient(self, spec: JobSpec, section: dict[str, Any], channel: Channel) -> RunHandle:
        """A cluster of its own for this task try, created with the step in it: it ends when
        the step ends, so an Airflow outage cannot leave it running."""
        from botocore.exceptions import ClientError, ParamValidationError

        self.check_connection()
        app_uri, code_uri = self.upload_artifacts(spec, section["s3_root"])
        step = self.step(spec, section, app_uri, code_uri, channel)
        request = emr_cluster.run_job_flow_request(
            section["cluster"], spec.name, step, spec.tags, self.requirements_bootstrap(spec, section)
        )
        hook = self._emr()
        try:
            cluster_id = hook.create_job_flow(request)["JobFlowId"]
        except ParamValidationError as exc:
            raise SparkPortableConfigError(f"profile {spec.profile.name!r}: section emr.cluster: {exc}") from None
        except ClientError as exc:  # a bad request is the profile's; throttling and the like get retried
            if exc.response.get("Error", {}).get("Code") != "ValidationException":
                raise
            raise SparkPortableConfigError(
                f"profile {spec.profile.name!r}: EMR refused the cluster from section emr.cluster: {exc}"
            ) from None
        try:
            steps = hook.conn.list_steps(ClusterId=cluster_id)["Steps"]
            step_id = next(s["Id"] for s in steps if s["Name"] == spec.name)
        except BaseException:  # without a handle nobody could stop this cluster: stop it now
            self.log.error("Lost track of the new EMR cluster %s; terminating it", cluster_id)
            hook.conn.terminate_job_flows(JobFlowIds=[cluster_id])
            raise
        self.log.info("Started transient EMR cluster %s running step %s (%s)", cluster_id, step_id, spec.name)
        return self._handle(cluster_id, step_id, spec.name, channel, transient=True)

    def _handle(self, cluster_id: str, step_id: str, step_name: str, channel: Channel, transient: bool) -> RunHandle:
        return {
            "engine": self.name,
            "cluster_id": cluster_id,
            "step_id": step_id,
            "step_name": step_name,
            "transient": transient,
            "channel_uri": channel.uri,
            "aws_conn_id": self.aws_conn_id,
        }

    def find_active_run(self, spec: JobSpec) -> RunHandle | None:
        """A step of this task instance (any try) still pending or running: Airflow 3 clears
        XCom between tries, so it is found by its name (a transient cluster has the step's).
        A step still being cancelled (CANCEL_PENDING, or its transient cluster TERMINATING) is
        live too: this waits for it to end (``cancel_wait_seconds``) before the retry submits,
        so two copies never run into the same output; if it has not ended by then, it raises
        (a retryable error) rather than start a second copy."""
        section = self.validate_profile(spec.profile)
        base = try_base(spec.name)
        conn = self._emr().conn
        if section["cluster"] is None:
            clusters = [(self.cluster_id(section), False)]
        else:
            self.check_connection()
            pages = conn.get_paginator("list_clusters").paginate(ClusterStates=[*_ACTIVE_CLUSTER, "TERMINATING"])
            clusters = [
                (cluster["Id"], True)
                for page in pages
                for cluster in page.get("Clusters", [])
                if try_base(cluster["Name"]) == base
            ]
        for cluster_id, transient in clusters:
            if transient and conn.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"] == "TERMINATING":
                self._await_end(conn, cluster_id, None, "its transient cluster is terminating")
                continue
            for step in self._live_steps(conn, cluster_id):
                if try_base(step["Name"]) != base:
                    continue
                if step["Status"]["State"] == "CANCEL_PENDING":
                    self._await_end(conn, cluster_id, step["Id"], "it is being cancelled (CANCEL_PENDING)")
                    continue
                channel = self._channel_of_step(step, cluster_id)
                if not self._does_this_work(channel, spec, step["Id"]):
                    continue
                return self._handle(cluster_id, step["Id"], step["Name"], channel, transient)
        return None

    def _channel_of_step(self, step: dict[str, Any], cluster_id: str) -> S3Channel:
        """The mailbox a step writes to, from its own arguments (its name may be shared)."""
        args = step.get("Config", {}).get("Args", [])
        if protocol.ARG_CONTEXT not in args[:-1]:
            raise AirflowException(
                f"step {step['Id']} on EMR cluster {cluster_id} is live and named like this task's earlier try, but "
                f"has no {protocol.ARG_CONTEXT} argument; not starting a second copy. Cancel it if it is not this task's"
            )
        context_uri = args[args.index(protocol.ARG_CONTEXT) + 1]
        return S3Channel(context_uri.removesuffix("context.json"), self.aws_conn_id)

    def _does_this_work(self, channel: S3Channel, spec: JobSpec, step_id: str) -> bool:
        """Whether the step's context is this try's, the try number aside: only then is it
        this task instance's earlier try. Unreadable is not "no": in doubt, nothing starts."""
        found = channel.read_context()
        if found is None:
            raise AirflowException(
                f"step {step_id} is live and named like this task's earlier try, but its context "
                f"{channel.context_uri} cannot be read; not starting a second copy. A retry checks again"
            )
        mine = json.loads(json.dumps(spec.context.to_dict(), default=str))
        for context in (found, mine):
            context.get("run", {}).pop("try_number", None)
        if found != mine:
            self.log.warning(
                "Step %s is named like this task's but does other work (its context %s differs): not adopting it",
                step_id, channel.context_uri,
            )  # fmt: skip
            return False
        return True

    def _await_end(self, conn, cluster_id: str, step_id: str | None, why: str) -> None:
        """Wait for an earlier try's step (or transient cluster) to end; raise if it does not."""
        what = f"step {step_id} on EMR cluster {cluster_id}" if step_id else f"EMR cluster {cluster_id}"
        self.log.warning("An earlier try's %s is still live: %s. Waiting for it to end", what, why)
        if not self._ended(conn, cluster_id, step_id, float(self.options.get("cancel_wait_seconds", 120))):
            raise AirflowException(
                f"an earlier try's {what} is still live ({why}) after "
                f"{self.options.get('cancel_wait_seconds', 120)} s; not starting a second copy. A retry checks again"
            )

    def _ended(self, conn, cluster_id: str, step_id: str | None, timeout: float) -> bool:
        """Whether the step (or, with no step, the cluster) has ended, waiting up to ``timeout``."""
        interval = min(1.0, float(self.options.get("poll_interval_seconds", 30)))
        deadline = time.monotonic() + timeout
        while True:
            if step_id is None:
                ended = conn.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"]["State"].startswith(
                    "TERMINATED"
                )
            else:
                state = conn.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]["Status"]["State"]
                ended = state not in _LIVE_STEP
            if ended or time.monotonic() >= deadline:
                return ended
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))

    # -- waiting ------------------------------------------------------------------------

    def _describe(self, handle: RunHandle) -> dict[str, Any]:
        return self._emr().conn.describe_step(ClusterId=handle["cluster_id"], StepId=handle["step_id"])["Step"]

    def _result(self, handle: RunHandle, step: dict[str, Any]) -> RunResult:
        status = step["Status"]
        state = _STEP_RESULT.get(status["State"])
        if state is None:
            raise RuntimeError(f"EMR step {step['Id']} is still {status['State']}")
        details = status.get("FailureDetails") or {}
        reason = (status.get("StateChangeReason") or {}).get("Message", "")
        parts = [f"EMR step {step['Id']} {status['State']}", details.get("Reason"), details.get("Message"), reason]
        if state != SUCCEEDED and handle.get("transient"):
            # A transient cluster that failed (bootstrap, capacity, instances) cancels its
            # step: that is a failure with the cluster's reason, not a user's cancellation.
            # Decided by the reason's code (set while TERMINATING already, unlike the final
            # state); the state only when EMR gave no code.
            cluster = self._emr().conn.describe_cluster(ClusterId=handle["cluster_id"])["Cluster"]["Status"]
            change = cluster.get("StateChangeReason") or {}
            code = change.get("Code")
            if code in _CLUSTER_FAILED or (not code and cluster["State"] == "TERMINATED_WITH_ERRORS"):
                state = FAILED
                parts.append(f"cluster {handle['cluster_id']} {code or 'failed'}: {change.get('Message', '')}")
        message = "; ".join(x for x in parts if x)
        if details.get("LogFile"):
            message += f" (log: {details['LogFile']})"
        return RunResult(state, message)

    def poll(self, handle: RunHandle) -> RunResult | None:
        """None while the step is live (PENDING, RUNNING, CANCEL_PENDING), else its result."""
        step = self._describe(handle)
        if step["Status"]["State"] in _LIVE_STEP:
            return None
        return self._result(handle, step)

    def wait(self, handle: RunHandle) -> RunResult:
        interval = float(self.options.get("poll_interval_seconds", 30))
        while True:
            result = self.poll(handle)
            if result is not None:
                return result
            time.sleep(interval)

    def trigger(self, handle: RunHandle, poll_interval: float) -> BaseTrigger | None:
        from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger

        return EmrStepSensorTrigger(
            job_flow_id=handle["cluster_id"],
            step_id=handle["step_id"],
            waiter_delay=max(1, int(poll_interval)),
            waiter_max_attempts=10**6,  # the task's execution_timeout bounds the wait
            aws_conn_id=handle.get("aws_conn_id"),
        )

    # -- cancelling and logs -----------------------------------------------------------

    def cancel(self, handle: RunHandle) -> None:
        """Stop the step and every Spark process of it. TERMINATE_PROCESS (SIGKILL to the step's
        process tree), not SEND_INTERRUPT (SIGTERM to the step's own process only, which a
        driver's children may outlive). That ends a client-mode driver; a cluster-mode driver
        runs in YARN, apart from the step, which is why validate_profile allows cluster mode
        on transient clusters only: their termination, here, ends it. Then waits (bounded by
        ``cancel_wait_seconds``) for EMR to report the step ended."""
        from botocore.exceptions import ClientError

        self.log.info("Cancelling EMR step %s on cluster %s", handle["step_id"], handle["cluster_id"])
        conn = self._emr().conn
        try:
            response = conn.cancel_steps(
                ClusterId=handle["cluster_id"], StepIds=[handle["step_id"]], StepCancellationOption=_CANCEL_OPTION
            )
            for info in response.get("CancelStepsInfoList", []):
                if info.get("Status") == "FAILED":
                    self.log.warning("EMR did not cancel step %s: %s", info.get("StepId"), info.get("Reason"))
        except ClientError as exc:
            if not handle.get("transient"):
                raise  # the step may still run: the caller must hear of it
            self.log.warning(
                "EMR refused to cancel step %s (%s); terminating its cluster ends it", handle["step_id"], exc
            )
        finally:  # a transient cluster exists for this step only: never leave it billing
            if handle.get("transient"):
                self.log.info("Terminating transient EMR cluster %s", handle["cluster_id"])
                conn.terminate_job_flows(JobFlowIds=[handle["cluster_id"]])
        timeout = float(self.options.get("cancel_wait_seconds", 120))
        step_id = None if handle.get("transient") else handle["step_id"]
        if self._ended(conn, handle["cluster_id"], step_id, timeout):
            self.log.info("EMR %s ended", f"step {step_id}" if step_id else f"cluster {handle['cluster_id']}")
        else:
            self.log.warning(
                "EMR %s has not ended %.0f s after the cancel request; check it in the console",
                f"step {step_id} is still being cancelled and" if step_id else f"cluster {handle['cluster_id']}",
                timeout,
            )

    # -- logs, links, cost -------------------------------------------------------------

    def _log_folder(self, handle: RunHandle) -> tuple[str, str] | None:
        """(bucket, key prefix) of the step's logs, or None without an S3 log URI."""
        cluster = self._emr().conn.describe_cluster(ClusterId=handle["cluster_id"])["Cluster"]
        log_uri = (cluster.get("LogUri") or "").replace("s3n://", "s3://").rstrip("/")
        if not log_uri.startswith("s3://"):
            return None
        bucket, _, prefix = log_uri.removeprefix("s3://").partition("/")
        return bucket, f"{prefix}/{handle['cluster_id']}/steps/{handle['step_id']}".lstrip("/")

    def links(self, handle: RunHandle) -> dict[str, str]:
        region = self._emr().conn.meta.region_name
        links = {
            "run": f"https://console.aws.amazon.com/emr/home?region={region}#/clusterDetails/{handle['cluster_id']}"
        }
        folder = self._log_folder(handle)
        if folder:
            links["logs"] = f"https://console.aws.amazon.com/s3/buckets/{folder[0]}?region={region}&prefix={folder[1]}/"
        return links

    def fetch_logs(self, handle: RunHandle, succeeded: bool) -> list[str]:
        """The step's stderr and stdout from the cluster's log URI. EMR uploads step logs about
        every 5 minutes, so a step that ran longer has partial copies there before it ends:
        wait (bounded: ``success_log_wait_seconds`` / ``log_wait_seconds``) for copies uploaded
        after the step's EndDateTime, and say so when the tail shown may be incomplete."""
        located = self._log_folder(handle)
        if located is None:
            return [f"(cluster {handle['cluster_id']} has no S3 log URI; step logs are on the master node)"]
        bucket, folder = located
        hook = self._s3()
        wait = float(
            self.options.get("success_log_wait_seconds", 60) if succeeded else self.options.get("log_wait_seconds", 300)
        )
        end = (self._describe(handle)["Status"].get("Timeline") or {}).get("EndDateTime")
        # S3's LastModified has whole seconds: a copy is final if uploaded from the next second on
        final_from = _ceil_second(end) if end is not None else None
        interval = min(10.0, float(self.options.get("poll_interval_seconds", 30)))
        deadline = time.monotonic() + wait
        while True:
            found = {}
            for name in ("stderr", "stdout"):
                head = hook.head_object(f"{folder}/{name}.gz", bucket_name=bucket)
                if head is not None:
                    found[name] = head["LastModified"]
            final = bool(found) and (final_from is None or all(t >= final_from for t in found.values()))
            if final or time.monotonic() >= deadline:
                break
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        if not found:
            return [
                (
                    f"(no step logs under s3://{bucket}/{folder}/ after waiting {wait:.0f} s; EMR uploads them "
                    "about every 5 minutes: look there later)"
                )
            ]
        lines = []
        if not final:
            oldest = min(found.values())
            lines.append(
                f"(the step logs below were uploaded at {oldest:%H:%M:%S} UTC, before the step ended at "
                f"{end:%H:%M:%S} UTC, and no later copy came within {wait:.0f} s: EMR uploads step logs about "
                f"every 5 minutes, so the tail may be incomplete. The full log will be at s3://{bucket}/{folder}/)"
            )
        for name in found:
            key = f"{folder}/{name}.gz"
            text = gzip.decompress(hook.get_key(key, bucket_name=bucket).get()["Body"].read()).decode(
                "utf-8", "replace"
            )
            lines += [f"--- {name} (s3://{bucket}/{key}) ---", *text.splitlines()[-_LOG_TAIL_LINES:]]
        return lines

    def cost(self, handle: RunHandle) -> dict[str, Any] | None:
        """Instance-hours x (EC2 + EMR) from the price table. A transient cluster is the task's
        alone: every instance from launch to termination (or now, while it shuts down). On a
        shared cluster the step is charged the whole cluster while it ran (an upper bound when
        steps run concurrently)."""
        conn = self._emr().conn
        now = datetime.now(timezone.utc)
        timeline = self._describe(handle)["Status"].get("Timeline") or {}
        if handle.get("transient"):
            window, basis = (None, None), "transient cluster: all its instances from launch to termination"
        elif timeline.get("StartDateTime") is None:  # ended before it started: it used nothing
            return None
        else:
            window = (timeline["StartDateTime"], timeline.get("EndDateTime") or now)
            basis = "shared cluster: all its instances while the step ran"
        usage = []
        for page in conn.get_paginator("list_instances").paginate(ClusterId=handle["cluster_id"]):
            for instance in page.get("Instances", []):
                times = (instance.get("Status") or {}).get("Timeline") or {}
                start, end = times.get("CreationDateTime"), times.get("EndDateTime") or now
                if start is None:
                    continue
                if window[0] is not None:
                    start, end = max(start, window[0]), min(end, window[1])
                seconds = max(0.0, (end - start).total_seconds())
                usage.append(
                    InstanceUsage(
                        instance.get("InstanceType", "?"), instance.get("Market", "ON_DEMAND"), seconds / 3600
                    )
                )
        return PriceTable.load().emr_estimate(conn.meta.region_name, usage, basis)


def _ceil_second(moment: datetime) -> datetime:
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)
