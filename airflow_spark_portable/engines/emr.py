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
      deploy_mode: client              # client (default): driver output is the step's log
      python: python3                  # the cluster's Python for the driver and workers
      conf: {spark.dynamicAllocation.enabled: "true"}

``engine_options``: ``aws_conn_id`` (default ``aws_default``), ``poll_interval_seconds``
(synchronous waiting), ``log_wait_seconds`` (how long to wait for EMR's log upload after a
failure, default 300) and ``success_log_wait_seconds`` (after a success, default 60).
"""

from __future__ import annotations

import gzip
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_spark_portable.artifacts import build_code_bundle, put_once
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
from airflow_spark_portable.exceptions import SparkPortableConfigError
from airflow_spark_portable.pipes import Channel, S3Channel
from airflow_spark_portable.profiles import Profile, spark_conf_strings
from airflow_spark_portable.redaction import refuse, refuse_secret_args, sensitive_keys

if TYPE_CHECKING:
    from airflow.triggers.base import BaseTrigger

_SECTION_KEYS = {"cluster_id", "cluster_name", "cluster", "s3_root", "deploy_mode", "python", "conf"}
_ACTIVE_CLUSTER = ["STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"]
_ACTIVE_STEP = ["PENDING", "RUNNING"]
_STEP_RESULT = {"COMPLETED": SUCCEEDED, "CANCELLED": CANCELLED, "INTERRUPTED": CANCELLED, "FAILED": FAILED}
_LOG_TAIL_LINES = 200
# Cluster end reasons that are not a failure of the cluster itself.
_USER_ENDED = {"USER_REQUEST", "ALL_STEPS_COMPLETED", "STEP_FAILURE"}


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
        section = self.validate_profile(spec.profile)
        return S3Channel(f"{section['s3_root']}/runs/{spec.name}", self.aws_conn_id)

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
        """``artifacts.put_once`` on S3."""
        hook = self._s3()

        def exists(uri: str) -> bool:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            return hook.check_for_key(key, bucket_name=bucket)

        def put(uri: str, body: bytes) -> None:
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            hook.load_bytes(body, key=key, bucket_name=bucket, replace=False)

        return put_once(s3_root, name, data, exists, put, self.log)

    def upload_artifacts(self, spec: JobSpec, s3_root: str) -> tuple[str, str]:
        """(job file URI, code bundle URI)."""
        bundle = build_code_bundle(spec.code_root)
        return (
            self.put_artifact(s3_root, spec.application.name, spec.application.read_bytes()),
            self.put_artifact(s3_root, "code.zip", bundle.data),
        )

    def requirements_bootstrap(self, spec: JobSpec, section: dict[str, Any]) -> list[dict[str, Any]]:
        """The bootstrap action that pip-installs ``python_requirements`` on every node."""
        relative = section["cluster"]["python_requirements"]
        if not relative:
            return []
        path = spec.code_root / relative
        if not path.is_file():
            raise SparkPortableConfigError(
                f"profile {spec.profile.name!r}: emr.cluster.python_requirements = {relative!r} is not a file "
                f"under the project root {spec.code_root}"
            )
        requirements = self.put_artifact(section["s3_root"], "requirements.txt", path.read_bytes())
        script = self.put_artifact(
            section["s3_root"], "install-requirements.sh", emr_cluster.REQUIREMENTS_BOOTSTRAP.encode()
        )
        return [
            {
                "Name": "spark-portable: python requirements",
                "ScriptBootstrapAction": {"Path": script, "Args": [section["python"], requirements]},
            }
        ]

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
        cluster_id = self.cluster_id(section)
        app_uri, code_uri = self.upload_artifacts(spec, section["s3_root"])
        step = self.step(spec, section, app_uri, code_uri, channel)
        (step_id,) = self._emr().add_job_flow_steps(job_flow_id=cluster_id, steps=[step])
        self.log.info("Added step %s (%s) to EMR cluster %s", step_id, spec.name, cluster_id)
        return self._handle(cluster_id, step_id, spec.name, channel, transient=False)

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
        XCom between tries, so it is found by its name (a transient cluster has the step's)."""
        section = self.validate_profile(spec.profile)
        base = try_base(spec.name)
        conn = self._emr().conn
        if section["cluster"] is None:
            clusters = [(self.cluster_id(section), False)]
        else:
            self.check_connection()
            clusters = [
                (cluster["Id"], True)
                for page in conn.get_paginator("list_clusters").paginate(ClusterStates=_ACTIVE_CLUSTER)
                for cluster in page.get("Clusters", [])
                if try_base(cluster["Name"]) == base
            ]
        for cluster_id, transient in clusters:
            for page in conn.get_paginator("list_steps").paginate(ClusterId=cluster_id, StepStates=_ACTIVE_STEP):
                for step in page.get("Steps", []):
                    if try_base(step["Name"]) == base:
                        channel = S3Channel(f"{section['s3_root']}/runs/{step['Name']}", self.aws_conn_id)
                        return self._handle(cluster_id, step["Id"], step["Name"], channel, transient)
        return None

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
            # A transient cluster that failed (bootstrap, capacity) cancels its step: that is
            # a failure with the cluster's reason, not a user's cancellation.
            cluster = self._emr().conn.describe_cluster(ClusterId=handle["cluster_id"])["Cluster"]["Status"]
            change = cluster.get("StateChangeReason") or {}
            code = change.get("Code")  # set while TERMINATING already, unlike the final state
            if cluster["State"] == "TERMINATED_WITH_ERRORS" or (code and code not in _USER_ENDED):
                state = FAILED
                parts.append(f"cluster {handle['cluster_id']} {code or 'failed'}: {change.get('Message', '')}")
        message = "; ".join(x for x in parts if x)
        if details.get("LogFile"):
            message += f" (log: {details['LogFile']})"
        return RunResult(state, message)

    def wait(self, handle: RunHandle) -> RunResult:
        interval = float(self.options.get("poll_interval_seconds", 30))
        while True:
            step = self._describe(handle)
            if step["Status"]["State"] in _STEP_RESULT:
                return self._result(handle, step)
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

    def result_from_event(self, handle: RunHandle, event) -> RunResult:
        # The trigger's event only says "done" or "error"; the step itself says how it ended.
        return self._result(handle, self._describe(handle))

    # -- cancelling and logs -----------------------------------------------------------

    def cancel(self, handle: RunHandle) -> None:
        self.log.info("Cancelling EMR step %s on cluster %s", handle["step_id"], handle["cluster_id"])
        conn = self._emr().conn
        try:
            response = conn.cancel_steps(
                ClusterId=handle["cluster_id"], StepIds=[handle["step_id"]], StepCancellationOption="SEND_INTERRUPT"
            )
            for info in response.get("CancelStepsInfoList", []):
                if info.get("Status") == "FAILED":
                    self.log.warning("EMR did not cancel step %s: %s", info.get("StepId"), info.get("Reason"))
        finally:  # a transient cluster exists for this step only: never leave it billing
            if handle.get("transient"):
                self.log.info("Terminating transient EMR cluster %s", handle["cluster_id"])
                conn.terminate_job_flows(JobFlowIds=[handle["cluster_id"]])

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
        """The step's stderr and stdout from the cluster's log URI. EMR uploads step logs
        every few minutes, so wait for them a bounded time rather than report nothing."""
        located = self._log_folder(handle)
        if located is None:
            return [f"(cluster {handle['cluster_id']} has no S3 log URI; step logs are on the master node)"]
        bucket, folder = located
        hook = self._s3()
        wait = (
            self.options.get("success_log_wait_seconds", 60) if succeeded else self.options.get("log_wait_seconds", 300)
        )
        deadline = time.monotonic() + float(wait)
        while True:
            found = {name: f"{folder}/{name}.gz" for name in ("stderr", "stdout")}
            found = {n: k for n, k in found.items() if hook.check_for_key(k, bucket_name=bucket)}
            if found or time.monotonic() >= deadline:
                break
            time.sleep(10)
        if not found:
            return [f"(no step logs under s3://{bucket}/{folder}/ yet; EMR uploads them within ~5 minutes)"]
        lines = []
        for name, key in found.items():
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
