"""EMR clusters for tests: moto's EMR API (the real boto3/EmrHook code path talks to it over
HTTP) plus a thread that plays every cluster's part, because moto never runs anything.

What it emulates, and where each behaviour is documented, is in tests/harness/README.md
("EMR and S3"). In short:

- Nodes are EMR 7.x nodes: ``python3`` is a bare Python 3.9 (``.cluster/node``, built by
  ``scripts/cluster_env.sh node``: no boto3, no pandas/pyarrow/numpy) with a node-local site
  folder that ``pip install`` writes to, and steps run Spark 3.5.2 (``.cluster/spark``, on the
  step's PYTHONPATH as EMR puts /usr/lib/spark/python there). The long-running cluster a test
  gets has boto3 preinstalled (``preinstalled=``, like a custom AMI); transient clusters get
  bare nodes and only what their bootstrap actions install. The nodes' package index is a
  local wheelhouse (``.cluster/wheels``) holding what ``wheelhouse()`` fetched.
- Bootstrap actions run in order (scripts from moto's S3, ``aws s3 cp`` and ``sudo``
  stand-ins); a failing one ends the cluster TERMINATED_WITH_ERRORS / BOOTSTRAP_FAILURE.
- Steps queue: PENDING -> RUNNING only while fewer than the cluster's StepConcurrencyLevel
  steps are RUNNING or CANCEL_PENDING, in submission order; AddJobFlowSteps refuses more than
  256 active steps with a ValidationException.
- CancelSteps (which moto lacks) answers per the API reference and makes the step
  CANCEL_PENDING; the step stays live until its process is gone. SEND_INTERRUPT sends SIGTERM
  to the step's own process only, TERMINATE_PROCESS SIGKILL to its whole process tree.
- ``--deploy-mode cluster`` runs the driver (a "YARN application") detached from the step
  process, which only waits for it: cancelling the step does not stop it; terminating the
  cluster does. ``running_applications()`` names the Spark applications still alive.
- Step logs: partial ``stdout.gz``/``stderr.gz`` copies every ``log_period`` seconds while the
  step runs, the final copy ``log_lag`` seconds after it ends.
- Cluster state changes carry EMR's StateChangeReason codes (moto's model returns them).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psutil

from airflow_spark_portable.engines.emr_cluster import BOTO3_REQUIREMENT

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[2]
CLUSTER_ENV = ROOT / ".cluster"
NODE_PYTHON = CLUSTER_ENV / "node" / "bin" / "python3"  # EMR 7.x's /usr/bin/python3 (3.9)
SPARK_PYTHON = CLUSTER_ENV / "spark"  # EMR's /usr/lib/spark/python
SPARK_HOME = SPARK_PYTHON / "pyspark"  # Spark 3.5.2, as in emr-7.5.0
WHEELHOUSE = CLUSTER_ENV / "wheels"
ACTIVE_STEP_LIMIT = 256
ACTIVE_STATES = ("PENDING", "RUNNING", "CANCEL_PENDING")  # what counts toward the limit
SLOT_STATES = ("RUNNING", "CANCEL_PENDING")  # a step holds its slot until its process is gone
# The message EMR returns with the ValidationException (as recorded in Yelp/mrjob's EMR mock)
STEP_LIMIT_MESSAGE = (
    "Maximum number of active steps(State = 'Running', 'Pending' or 'Cancel_Pending') for cluster exceeded."
)
# What a cluster's StateChangeReason says, by code (API reference: ClusterStateChangeReason)
REASONS = {
    "ALL_STEPS_COMPLETED": "Steps completed",
    "STEP_FAILURE": "Shut down as step failed",
    "USER_REQUEST": "Terminated by user request",
    "BOOTSTRAP_FAILURE": "On the master instance ({instance}), bootstrap action {n} returned a non-zero return code",
    "INSTANCE_FAILURE": "The master node was terminated by the user or failed",
    "VALIDATION_ERROR": "The requested instance type is not supported in the requested Availability Zone",
    "INTERNAL_ERROR": "An internal error occurred",
}
# ... and the codes that end a cluster TERMINATED_WITH_ERRORS
_FAILURE_CODES = {
    "BOOTSTRAP_FAILURE",
    "INSTANCE_FAILURE",
    "INSTANCE_FLEET_TIMEOUT",
    "VALIDATION_ERROR",
    "INTERNAL_ERROR",
    "STEP_FAILURE",
}

# Patched moto handlers and the cluster player change the same objects from different threads.
LOCK = threading.RLock()


# -- the node environment -------------------------------------------------------------------

_prepared: set[str] = set()


def _locked(name: str):
    CLUSTER_ENV.mkdir(exist_ok=True)
    handle = open(CLUSTER_ENV / f".{name}.lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def cluster_env() -> None:
    """``scripts/cluster_env.sh node`` once per process (idempotent; ~20 s the first time)."""
    if "env" in _prepared:
        return
    with _locked("env"):
        done = subprocess.run(
            ["bash", str(ROOT / "scripts" / "cluster_env.sh"), "node"],
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/cluster_env.sh node failed:\n{done.stdout}\n{done.stderr}")
    _prepared.add("env")


def _digest(items) -> str:
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


def wheelhouse(*requirements: str) -> Path:
    """The fake nodes' package index: ``requirements`` and their dependencies as wheels for the
    node's Python 3.9, fetched once (pip download, the machine's ordinary index)."""
    cluster_env()
    stamp = WHEELHOUSE / f".fetched-{_digest(requirements)}"
    if requirements and not stamp.exists():
        with _locked("wheels"):
            if not stamp.exists():
                WHEELHOUSE.mkdir(parents=True, exist_ok=True)
                done = subprocess.run(
                    [str(NODE_PYTHON), "-m", "pip", "download", "--quiet", "--dest", str(WHEELHOUSE), *requirements],
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=False,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"pip download {requirements} failed:\n{done.stderr}")
                stamp.touch()
    return WHEELHOUSE


def node_image(*requirements: str) -> Path | None:
    """A site folder with ``requirements`` preinstalled (what a custom AMI or the cluster
    owner's bootstrap put on an existing cluster's nodes), built once and shared read-only."""
    if not requirements:
        return None
    wheelhouse(*requirements)
    image = CLUSTER_ENV / "images" / _digest(requirements)
    if not (image / ".done").exists():
        with _locked("images"):
            if not (image / ".done").exists():
                subprocess.run(["rm", "-rf", str(image)], check=True)
                done = subprocess.run(
                    [
                        str(NODE_PYTHON),
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--no-index",
                        "--find-links",
                        str(WHEELHOUSE),
                        "--target",
                        str(image / "site"),
                        *requirements,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=False,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"pip install {requirements} failed:\n{done.stderr}")
                (image / ".done").touch()
    return image / "site"


# -- moto, made as strict as EMR ----------------------------------------------------------


def _backend():
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.emr.models import emr_backends

    return emr_backends[DEFAULT_ACCOUNT_ID][REGION]


_patched = False


def patch_moto() -> None:
    """Make moto's EMR model behave as documented where the engine depends on it (idempotent;
    moto's server runs in this process, so its classes are patched here)."""
    global _patched
    if _patched:
        return
    from moto.core.responses import ActionResult
    from moto.emr import models
    from moto.emr.exceptions import InvalidRequestException, ValidationException
    from moto.emr.responses import ElasticMapReduceResponse

    def add_steps(self, steps):
        with LOCK:
            state = getattr(self, "state", None)  # (None while RunJobFlow builds the cluster)
            if state is not None and state.startswith("TERMINAT"):
                raise ValidationException(
                    "A job flow that is shutting down, terminated, or finished may not be modified."
                )
            active = sum(1 for s in self.steps if s.state in ACTIVE_STATES)
            if active + len(steps) > ACTIVE_STEP_LIMIT:
                raise ValidationException(STEP_LIMIT_MESSAGE)
            if (getattr(self, "step_concurrency_level", None) or 1) > 1 and any(
                s.get("action_on_failure", "TERMINATE_CLUSTER") != "CONTINUE" for s in steps
            ):
                raise ValidationException(
                    "Steps with an ActionOnFailure other than CONTINUE cannot be added while StepConcurrencyLevel > 1"
                )
            added = [models.Step(state="PENDING", **step) for step in steps]  # the player starts them
            self.steps.extend(added)
            return added

    def cluster_status(self):
        reason = {"Message": getattr(self, "last_state_change_reason", None)}
        if getattr(self, "state_change_code", None):
            reason["Code"] = self.state_change_code
        return {
            "State": self.state,
            "StateChangeReason": reason,
            "Timeline": {
                "CreationDateTime": self.creation_datetime,
                "EndDateTime": self.end_datetime,
                "ReadyDateTime": self.ready_datetime,
            },
        }

    def step_status(self):
        status = {
            "State": self.state,
            "StateChangeReason": {"Message": getattr(self, "last_state_change_reason", None)},
            "Timeline": {
                "CreationDateTime": self.creation_date_time,
                "EndDateTime": self.end_date_time,
                "StartDateTime": self.start_date_time,
            },
        }
        if getattr(self, "failure_details", None):
            status["FailureDetails"] = self.failure_details
        return status

    def terminate_job_flows(self, job_flow_ids):
        with LOCK:
            clusters = [self.clusters[i] for i in job_flow_ids]
            protected = [c for c in clusters if c.termination_protected]
            if protected:
                raise ValidationException(
                    "Could not shut down one or more job flows since they are termination protected."
                )
            for cluster in clusters:
                if not cluster.state.startswith("TERMINAT"):
                    set_cluster_state(cluster, "TERMINATING", "USER_REQUEST")
            return clusters

    def cancel_steps(self) -> ActionResult:
        cluster_id = self._get_param("ClusterId")
        step_ids = self._get_param("StepIds", [])
        option = self._get_param("StepCancellationOption") or "SEND_INTERRUPT"
        if option not in ("SEND_INTERRUPT", "TERMINATE_PROCESS"):
            raise ValidationException(f"Invalid StepCancellationOption: {option}")
        if len(step_ids) > ACTIVE_STEP_LIMIT:
            raise ValidationException("A maximum of 256 steps are allowed in each CancelSteps request.")
        cluster = self.backend.describe_cluster(cluster_id)  # InvalidRequestException if unknown
        if cluster.state.startswith("TERMINAT"):
            raise InvalidRequestException(f"Cluster {cluster_id} is terminated or terminating.")
        infos = []
        with LOCK:
            for step_id in step_ids:
                step = self.backend.describe_step(cluster_id, step_id)
                if step is None:
                    infos.append({"StepId": step_id, "Status": "FAILED", "Reason": f"Step {step_id} does not exist."})
                elif step.state in ACTIVE_STATES:
                    step.state = "CANCEL_PENDING"
                    step.cancel_request = (option, time.monotonic())
                    infos.append({"StepId": step_id, "Status": "SUBMITTED"})
                else:
                    infos.append(
                        {"StepId": step_id, "Status": "FAILED", "Reason": f"Step {step_id} is already {step.state}."}
                    )
        return ActionResult({"CancelStepsInfoList": infos})

    models.Cluster.add_steps = add_steps
    models.Cluster.status = property(cluster_status)
    models.Step.status = property(step_status)
    models.Step.start = lambda self: None  # a step starts when the player runs it, not when added
    models.ElasticMapReduceBackend.terminate_job_flows = terminate_job_flows
    ElasticMapReduceResponse.cancel_steps = cancel_steps
    _patch_s3_conditional_writes()
    _patched = True


add_cancel_steps_to_moto = patch_moto  # the name tests used before


S3_LATENCY = {"seconds": 0.0}


def set_s3_latency(seconds: float) -> None:
    """Delay every S3 object request moto serves by ``seconds`` (a real S3 round trip is tens of
    milliseconds; moto's is one): races between a check and a write get as wide as on AWS."""
    S3_LATENCY["seconds"] = seconds


def _patch_s3_conditional_writes() -> None:
    """moto checks ``If-None-Match: *`` and then writes, unlocked: two concurrent creates can
    both succeed. S3 lets exactly one win (the others get 412 or 409): serialise them."""
    from moto.s3.responses import S3Response

    original = S3Response.put_object
    if getattr(original, "_atomic", False):
        return
    lock = threading.Lock()

    def put_object(self):
        if self.headers.get("If-None-Match") == "*":
            with lock:
                return original(self)
        return original(self)

    put_object._atomic = True
    S3Response.put_object = put_object
    key_response = S3Response.key_response

    def delayed_key_response(self, *args, **kwargs):
        if S3_LATENCY["seconds"]:
            time.sleep(S3_LATENCY["seconds"])
        return key_response(self, *args, **kwargs)

    S3Response.key_response = delayed_key_response


def set_cluster_state(cluster, state: str, code: str | None = None, message: str | None = None) -> None:
    from moto.core.utils import utcnow

    cluster.state = state
    if code is not None:
        cluster.state_change_code = code
        cluster.last_state_change_reason = message or REASONS.get(code, code)
    if state.startswith("TERMINATED"):
        cluster.end_datetime = cluster.end_datetime or utcnow()
        for group in cluster.instance_groups:
            group.end_date_time = cluster.end_datetime
            group.state = "TERMINATED"


# -- the cluster player ---------------------------------------------------------------------


_SHIMS = {
    # EMR nodes have the AWS CLI; here `aws s3 cp` reads moto's S3 through boto3
    "aws": f"""#!{sys.executable}
import sys, boto3
assert sys.argv[1:3] == ["s3", "cp"], sys.argv
bucket, _, key = sys.argv[3].removeprefix("s3://").partition("/")
boto3.client("s3").download_file(bucket, key, sys.argv[4])
""",
    "sudo": '#!/bin/sh\nexec "$@"\n',
}

# spark-submit --deploy-mode cluster, as the step sees it: it waits for the application YARN
# runs elsewhere and exits with its outcome (spark.yarn.submit.waitAppCompletion=true).
_YARN_CLIENT = """
import os, sys, time
status, app = sys.argv[1], sys.argv[2]
print(f"INFO Client: Submitted application {app}", file=sys.stderr, flush=True)
while not os.path.exists(status):
    print(f"INFO Client: Application report for {app} (state: RUNNING)", file=sys.stderr, flush=True)
    time.sleep(0.5)
code = int(open(status).read())
print(f"INFO Client: Application report for {app} (state: FINISHED, final status: "
      f"{'SUCCEEDED' if code == 0 else 'FAILED'})", file=sys.stderr, flush=True)
sys.exit(code)
"""

_HOLD = "import time\nwhile True:\n    time.sleep(1)\n"


# A step's processes (and a YARN application's) are its session: each is started as a session
# leader, and Spark's children stay in it (pyspark's daemon makes a process group of its own,
# so process groups would miss the Python workers).


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _members(sid: int | None) -> list[psutil.Process]:
    if sid is None:
        return []
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and _sid(proc.pid) == sid:
            found.append(proc)
    return found


def _alive(sid: int | None) -> bool:
    return bool(_members(sid))


def _kill_session(sid: int | None) -> None:
    for proc in _members(sid):
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@dataclass
class YarnApp:
    """A Spark application YARN runs: its driver's session (cluster mode: detached from the
    step; client mode: the step's own)."""

    name: str
    cluster_id: str
    step_id: str
    deploy_mode: str
    sid: int | None = None
    proc: subprocess.Popen | None = None

    def alive(self) -> bool:
        return _alive(self.sid)


@dataclass
class StepRun:
    cluster: Any
    step: Any
    folder: Path
    proc: subprocess.Popen | None = None
    app: YarnApp | None = None
    cancel_acted: tuple | None = None
    started: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def out(self) -> Path:
        return self.folder / "stdout"

    @property
    def err(self) -> Path:
        return self.folder / "stderr"


class FakeCluster:
    """A long-running cluster (``cluster_id``) and the player of every cluster in moto."""

    def __init__(
        self,
        endpoint: str,
        log_uri: str,
        name: str = "asp-test",
        *,
        step_concurrency_level: int = 1,
        preinstalled: tuple[str, ...] = (BOTO3_REQUIREMENT,),
        log_period: float = 1.0,
        log_lag: float = 1.5,
        cancel_latency: float = 0.0,
    ) -> None:
        cluster_env()
        patch_moto()
        wheelhouse(BOTO3_REQUIREMENT)  # what transient clusters' bootstraps install
        self.endpoint = endpoint
        self.log_period = log_period  # partial step-log uploads while a step runs (EMR: ~5 min)
        self.log_lag = log_lag  # the final upload this long after the step ends
        self.cancel_latency = cancel_latency  # CancelSteps is asynchronous: time before it acts
        self.s3 = boto3.client("s3", region_name=REGION)
        self.image = node_image(*preinstalled)
        self.cluster_id = boto3.client("emr", region_name=REGION).run_job_flow(
            Name=name,
            ReleaseLabel="emr-7.5.0",
            LogUri=log_uri,
            Applications=[{"Name": "Spark"}],
            Instances={
                "InstanceGroups": [
                    {"InstanceRole": "MASTER", "InstanceType": "m5.xlarge", "InstanceCount": 1, "Market": "ON_DEMAND"},
                    {"InstanceRole": "CORE", "InstanceType": "r5.2xlarge", "InstanceCount": 2, "Market": "ON_DEMAND"},
                ],
                "KeepJobFlowAliveWhenNoSteps": True,
            },
            JobFlowRole="EMR_EC2_DefaultRole",
            ServiceRole="EMR_DefaultRole",
            StepConcurrencyLevel=step_concurrency_level,
        )["JobFlowId"]
        self.hold = False  # when True, steps that start run a stand-in process (hold_command)
        self.hold_command = [str(NODE_PYTHON), "-c", _HOLD]
        self.seen: dict[str, dict[str, Any]] = {}  # step id -> what the harness did
        self.nodes: dict[str, Path] = {}  # cluster id -> its node folder (bin/, site/)
        self.bootstrap_output: dict[str, str] = {}
        self.apps: list[YarnApp] = []
        self._runs: dict[str, StepRun] = {}
        self._booting: set[str] = set()
        self._stopping: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-emr", daemon=True)
        self._thread.start()

    # -- what tests look at ------------------------------------------------------------

    @staticmethod
    def cluster(cluster_id: str):
        return _backend().clusters[cluster_id]

    def steps(self, cluster_id: str | None = None) -> list:
        return list(self.cluster(cluster_id or self.cluster_id).steps)

    def transient_clusters(self) -> list:
        return [c for c in _backend().clusters.values() if c.id != self.cluster_id]

    def running_applications(self, cluster_id: str | None = None) -> list[str]:
        """Names of the Spark applications (client-mode step drivers and cluster-mode YARN
        applications) with a process still alive."""
        return [a.name for a in list(self.apps) if (cluster_id is None or a.cluster_id == cluster_id) and a.alive()]

    def processes_alive(self, step_id: str) -> bool:
        """Whether any process the step started (its tree, or its detached driver) is alive."""
        run = self._runs.get(step_id)
        if run is None:
            return False
        return _alive(run.proc.pid if run.proc else None) or (run.app is not None and run.app.alive())

    def process_cmdlines(self, step_id: str) -> list[str]:
        """Command lines of the live processes of the step (its own group and its driver's)."""
        run = self._runs.get(step_id)
        if run is None:
            return []
        sessions = {run.proc.pid if run.proc else None, run.app.sid if run.app else None} - {None}
        found = []
        for sid in sessions:
            for proc in _members(sid):
                try:
                    found.append(" ".join(proc.cmdline()))
                except psutil.NoSuchProcess:
                    pass
        return found

    def fail_cluster(self, cluster_id: str, code: str, message: str | None = None) -> None:
        """What EMR does when the cluster fails (INSTANCE_FAILURE, ...): it terminates with
        errors, ending every process on it."""
        with LOCK:
            set_cluster_state(self.cluster(cluster_id), "TERMINATING", code, message)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for run in list(self._runs.values()):
            if run.proc is not None:
                _kill_session(run.proc.pid)
        for app in list(self.apps):
            _kill_session(app.sid)

    # -- the loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            for cluster in list(_backend().clusters.values()):
                try:
                    self._tick(cluster)
                except Exception as exc:  # a harness bug must show, not stop every cluster
                    print(f"fake-emr: {cluster.id}: {type(exc).__name__}: {exc}", file=sys.stderr)
            time.sleep(0.1)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _tick(self, cluster) -> None:
        with LOCK:
            if cluster.state.startswith("TERMINATED"):
                return
            if cluster.state == "TERMINATING":
                if cluster.id not in self._stopping:
                    self._stopping.add(cluster.id)  # once
                    self._spawn(self._shut_down, cluster)
                return
            if cluster.id not in self.nodes:
                if cluster.id not in self._booting:
                    self._booting.add(cluster.id)
                    set_cluster_state(cluster, "STARTING")
                    self._spawn(self._boot, cluster)
                return
            self._act_on_cancels(cluster)
            level = cluster.step_concurrency_level or 1
            busy = sum(1 for s in cluster.steps if s.state in SLOT_STATES)
            for step in cluster.steps:  # submission order
                if busy >= level:
                    break
                if step.state == "PENDING":
                    self._start(cluster, step)
                    busy += 1
            if cluster.state in ("RUNNING", "WAITING"):
                cluster.state = "RUNNING" if busy else "WAITING"
            if (
                not cluster.keep_job_flow_alive_when_no_steps
                and cluster.steps
                and all(s.state not in ACTIVE_STATES for s in cluster.steps)
            ):
                failed = any(
                    s.state == "FAILED" and s.action_on_failure in ("TERMINATE_CLUSTER", "TERMINATE_JOB_FLOW")
                    for s in cluster.steps
                )
                set_cluster_state(cluster, "TERMINATING", "STEP_FAILURE" if failed else "ALL_STEPS_COMPLETED")

    def _act_on_cancels(self, cluster) -> None:
        from moto.core.utils import utcnow

        for step in cluster.steps:
            request = getattr(step, "cancel_request", None)
            if step.state != "CANCEL_PENDING" or request is None:
                continue
            option, at = request
            if time.monotonic() < at + self.cancel_latency:
                continue
            run = self._runs.get(step.id)
            if run is None:  # never started
                step.state = "CANCELLED"
                step.end_date_time = utcnow()
                step.last_state_change_reason = "Cancelled by the user (CancelSteps)"
                continue
            if run.cancel_acted == request or run.proc is None:
                continue  # done already, or the run thread acts once it has a process
            run.cancel_acted = request
            self._signal(run, option)

    @staticmethod
    def _signal(run: StepRun, option: str) -> None:
        """SEND_INTERRUPT: SIGTERM to the step's own process. TERMINATE_PROCESS: SIGKILL to it
        and every descendant (processes YARN runs for it elsewhere are not descendants)."""
        try:
            root = psutil.Process(run.proc.pid)
        except psutil.NoSuchProcess:
            return
        if option == "SEND_INTERRUPT":
            root.send_signal(signal.SIGTERM)
            return
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = [root]
        for proc in tree:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass

    def _shut_down(self, cluster) -> None:
        """TERMINATING: every instance goes, with every process on it; then TERMINATED (or
        TERMINATED_WITH_ERRORS for a failure's code)."""
        from moto.core.utils import utcnow

        runs = [r for r in list(self._runs.values()) if r.cluster is cluster]
        deadline = time.monotonic() + 30
        while True:  # again and again: a process may be starting while the others are killed
            apps = [a for a in list(self.apps) if a.cluster_id == cluster.id]
            sessions = [r.proc.pid for r in runs if r.proc is not None] + [a.sid for a in apps]
            for sid in sessions:
                _kill_session(sid)
            if time.monotonic() >= deadline or not (
                any(r.proc is not None and r.proc.poll() is None for r in runs) or any(a.alive() for a in apps)
            ):
                break
            time.sleep(0.1)
        for run in runs:
            run.ended.wait(timeout=10)
        with LOCK:
            for step in cluster.steps:
                if step.state in ACTIVE_STATES:
                    step.state = "CANCELLED"
                    step.end_date_time = step.end_date_time or utcnow()
                    step.last_state_change_reason = "Cancelled because the cluster terminated"
            code = getattr(cluster, "state_change_code", None)
            set_cluster_state(cluster, "TERMINATED_WITH_ERRORS" if code in _FAILURE_CODES else "TERMINATED")

    # -- booting -----------------------------------------------------------------------

    def _boot(self, cluster) -> None:
        """Make the cluster's node and run its bootstrap actions on it, in order."""
        node = Path(tempfile.mkdtemp(prefix=f"emr-node-{cluster.id}-"))
        (node / "bin").mkdir()
        (node / "site").mkdir()
        image = self.image if cluster.id == self.cluster_id else None
        path = ":".join(str(p) for p in (node / "site", image, SPARK_PYTHON) if p)
        shims = {
            **_SHIMS,
            "python3": (
                f"#!/bin/sh\nexport PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}\n"
                f'export PIP_TARGET={node / "site"}\nexec {NODE_PYTHON} "$@"\n'
            ),
        }
        for name, text in shims.items():
            (node / "bin" / name).write_text(text)
            (node / "bin" / name).chmod(0o755)
        env = self._env(node)
        # the nodes' package index: the local wheelhouse (EMR nodes reach PyPI)
        env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELHOUSE), PIP_DISABLE_PIP_VERSION_CHECK="1")
        output = []
        with LOCK:
            if cluster.state != "STARTING":  # terminated meanwhile
                self.nodes[cluster.id] = node
                return
            set_cluster_state(cluster, "BOOTSTRAPPING")
        for i, action in enumerate(cluster.bootstrap_actions, 1):
            script = Path(self._fetch(action.script_path, node))
            proc = subprocess.run(
                ["bash", str(script), *action.args], env=env, cwd=node, capture_output=True, text=True, check=False
            )
            output.append(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                self.bootstrap_output[cluster.id] = "".join(output)
                with LOCK:
                    if cluster.state != "BOOTSTRAPPING":  # terminated meanwhile
                        self.nodes[cluster.id] = node
                        return
                    instances = getattr(cluster, "ec2_instances", None) or []
                    instance = getattr(instances[0], "id", "i-0") if instances else "i-0"
                    message = REASONS["BOOTSTRAP_FAILURE"].format(instance=instance, n=i)
                    set_cluster_state(cluster, "TERMINATING", "BOOTSTRAP_FAILURE", message)
                self.nodes[cluster.id] = node
                return
        self.bootstrap_output[cluster.id] = "".join(output)
        with LOCK:
            if cluster.state == "BOOTSTRAPPING":
                set_cluster_state(cluster, "WAITING")
            self.nodes[cluster.id] = node

    def _env(self, node: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYSPARK", "SPARK", "PYTHON"))}
        env["PATH"] = f"{node / 'bin'}:{env['PATH']}"
        return env

    def _fetch(self, uri: str, folder: Path) -> str:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        local = folder / Path(key).name
        self.s3.download_file(bucket, key, str(local))
        return str(local)

    # -- running a step ----------------------------------------------------------------

    def _start(self, cluster, step) -> None:
        from moto.core.utils import utcnow

        step.state = "RUNNING"
        step.start_date_time = utcnow()
        run = StepRun(cluster, step, Path(tempfile.mkdtemp(prefix=f"emr-{step.id}-")))
        self._runs[step.id] = run
        self.seen[step.id] = {"args": list(step.args)}
        self._spawn(self._run, run)
        self._spawn(self._upload_logs, run)

    def _step_command(self, run: StepRun, record: dict) -> tuple[list[str], str, str]:
        """(the local spark-submit command, the deploy mode, the application name)."""
        args = list(run.step.args)
        assert run.step.jar == "command-runner.jar" and args[0] == "spark-submit", (run.step.jar, args)
        local_args, i, mode, name = [], 1, "client", run.step.name
        while i < len(args):
            arg = args[i]
            if arg == "--deploy-mode":  # YARN's; here the harness places the driver
                mode = args[i + 1]
                i += 2
                continue
            if arg == "--name":
                name = args[i + 1]
            if arg == "--py-files":
                local_args += [arg, self._fetch(args[i + 1], run.folder)]
                i += 2
                continue
            if arg.startswith("s3://") and arg.endswith(".py") and "application" not in record:
                record["application"] = arg
                local_args.append(self._fetch(arg, run.folder))
                i += 1
                continue
            local_args.append(arg)
            i += 1
        python = str(self.nodes[run.cluster.id] / "bin" / "python3")
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", "local[1]", *local_args]
        # the step's --conf spark.pyspark.python=python3 names the cluster's Python: the node's
        cmd = [a.replace("python=python3", f"python={python}") if a.startswith("spark.pyspark.") else a for a in cmd]
        return cmd, mode, name

    def _run(self, run: StepRun) -> None:
        from moto.core.utils import utcnow

        step, cluster = run.step, run.cluster
        record = self.seen[step.id]
        node = self.nodes[cluster.id]
        python = str(node / "bin" / "python3")
        env = {
            **self._env(node),
            "SPARK_HOME": str(SPARK_HOME),
            "PYSPARK_PYTHON": python,
            "PYSPARK_DRIVER_PYTHON": python,
            "PYTHONPATH": str(SPARK_PYTHON),  # EMR puts /usr/lib/spark/python there
        }
        out, err = open(run.out, "wb"), open(run.err, "wb")
        try:
            if self.hold:
                record["held"] = True
                cmd, mode, name = list(self.hold_command), "client", step.name
            else:
                cmd, mode, name = self._step_command(run, record)
            record["deploy_mode"] = mode
            app = YarnApp(name, cluster.id, step.id, mode)
            with LOCK:
                if cluster.state.startswith("TERMINAT") or (
                    step.state == "CANCEL_PENDING"
                    and step.cancel_request is not None
                    and time.monotonic() >= step.cancel_request[1] + self.cancel_latency
                ):
                    raise _NotStarted()
                if mode == "cluster":
                    # YARN runs the driver: not a child of the step, which only waits for it
                    app_folder = Path(tempfile.mkdtemp(prefix=f"yarn-{step.id}-"))
                    app.proc = subprocess.Popen(
                        cmd,
                        env=env,
                        cwd=run.folder,
                        stdout=open(app_folder / "stdout", "wb"),
                        stderr=open(app_folder / "stderr", "wb"),
                        start_new_session=True,
                    )
                    app.sid = app.proc.pid
                    status = app_folder / "exit"
                    app_id = f"application_{int(time.time())}_{len(self.apps) + 1:04d}"
                    record.update(app_id=app_id, app_log=app_folder)
                    self._spawn(self._await_app, app, status)
                    run.proc = subprocess.Popen(
                        [python, "-c", _YARN_CLIENT, str(status), app_id],
                        env=env,
                        cwd=run.folder,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    )
                else:
                    run.proc = subprocess.Popen(
                        cmd, env=env, cwd=run.folder, stdout=out, stderr=err, start_new_session=True
                    )
                    app.sid = run.proc.pid
                run.app = app
                self.apps.append(app)
                run.started.set()  # a cancel already requested is acted on by the loop
            returncode = run.proc.wait()
        except _NotStarted:
            returncode = None
        finally:
            out.close()
            err.close()
        record.update(
            returncode=returncode,
            stdout=run.out.read_bytes().decode(errors="replace"),
            stderr=run.err.read_bytes().decode(errors="replace"),
        )
        with LOCK:
            step.end_date_time = utcnow()
            if step.state == "CANCEL_PENDING" or cluster.state.startswith("TERMINAT"):
                step.state = "CANCELLED"
                step.last_state_change_reason = "Cancelled by the user (CancelSteps)"
            elif returncode == 0:
                step.state = "COMPLETED"
            else:
                step.state = "FAILED"
                step.last_state_change_reason = f"Step failed with exitCode {returncode}"
        run.ended.set()

    @staticmethod
    def _await_app(app: YarnApp, status: Path) -> None:
        code = app.proc.wait()
        status.write_text(str(code))

    def _upload_logs(self, run: StepRun) -> None:
        """Partial copies every ``log_period`` s while the step runs, the final one
        ``log_lag`` s after it ends (EMR: about every 5 minutes)."""
        s3 = boto3.client("s3", region_name=REGION)
        log_uri = run.cluster.log_uri.replace("s3n://", "s3://").rstrip("/")
        bucket, _, prefix = log_uri.removeprefix("s3://").partition("/")
        folder = f"{prefix}/{run.cluster.id}/steps/{run.step.id}".lstrip("/")

        def upload() -> None:
            for name, path in (("stdout", run.out), ("stderr", run.err)):
                data = path.read_bytes() if path.exists() else b""
                s3.put_object(Bucket=bucket, Key=f"{folder}/{name}.gz", Body=gzip.compress(data))

        try:
            while not run.ended.wait(timeout=self.log_period):
                if self._stop.is_set():
                    return
                upload()
            if self._stop.wait(timeout=self.log_lag):
                return
            upload()
            self.seen[run.step.id]["logs_final"] = True
        except Exception as exc:  # moto's server stopped under it (test teardown)
            if not self._stop.is_set():
                print(f"fake-emr: log upload of {run.step.id}: {type(exc).__name__}: {exc}", file=sys.stderr)


class _NotStarted(Exception):
    """The step was cancelled (or its cluster ended) before its process started."""
