"""EMR clusters for tests: moto's EMR API (the real boto3/EmrHook code path talks to it over
HTTP) plus a thread that plays every cluster's part, because moto never runs anything.

For each cluster it first runs the bootstrap actions (scripts downloaded from moto's S3, run
with bash on a "node": a bin folder whose ``python3`` is this interpreter with a node-local
site folder that pip installs into, ``aws s3 cp`` and ``sudo`` stand-ins); a failing action
ends the cluster TERMINATED_WITH_ERRORS and cancels its steps, as EMR does. Then, for each
step, it reads the ``spark-submit`` arguments back from moto, downloads the job file and the
``--py-files`` bundle from moto's S3, runs the same arguments with pyspark's local
spark-submit (the job talks to moto's S3 for its context and messages, as on EMR), uploads
stdout/stderr gzipped where EMR puts step logs, and sets the step's state from the exit
code. A cluster without KeepJobFlowAliveWhenNoSteps terminates when its steps are done.
moto has no CancelSteps; the harness adds it (the step becomes CANCELLED and its local
process is stopped).
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3

from airflow_spark_portable.engines.local import pyspark_home

REGION = "us-east-1"


def add_cancel_steps_to_moto() -> None:
    from moto.core.responses import ActionResult
    from moto.emr.responses import ElasticMapReduceResponse

    def cancel_steps(self) -> ActionResult:
        cluster_id = self._get_param("ClusterId")
        infos = []
        for step_id in self._get_param("StepIds", []):
            step = self.backend.describe_step(cluster_id, step_id)
            if step is not None and step.state in ("PENDING", "RUNNING"):
                step.state = "CANCELLED"
                step.last_state_change_reason = "Cancelled by the user (CancelSteps)"
                infos.append({"StepId": step_id, "Status": "SUBMITTED", "Reason": ""})
            else:
                infos.append({"StepId": step_id, "Status": "FAILED", "Reason": "not pending or running"})
        return ActionResult({"CancelStepsInfoList": infos})

    ElasticMapReduceResponse.cancel_steps = cancel_steps


def _backend():
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.emr.models import emr_backends

    return emr_backends[DEFAULT_ACCOUNT_ID][REGION]


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


class FakeCluster:
    """A long-running cluster (``cluster_id``) and the player of every cluster in moto."""

    def __init__(self, endpoint: str, log_uri: str, name: str = "asp-test") -> None:
        self.endpoint = endpoint
        self.s3 = boto3.client("s3", region_name=REGION)
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
        )["JobFlowId"]
        self.hold = False  # when True, new steps stay RUNNING and are not run
        self.seen: dict[str, dict[str, Any]] = {}  # step id -> what the harness did
        self.nodes: dict[str, Path] = {}  # cluster id -> its node folder (bin/, site/)
        self.bootstrap_output: dict[str, str] = {}
        self._procs: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-emr", daemon=True)
        self._thread.start()

    @staticmethod
    def cluster(cluster_id: str):
        return _backend().clusters[cluster_id]

    def steps(self, cluster_id: str | None = None) -> list:
        return list(self.cluster(cluster_id or self.cluster_id).steps)

    def transient_clusters(self) -> list:
        return [c for c in _backend().clusters.values() if c.id != self.cluster_id]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for proc in self._procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for cluster in list(_backend().clusters.values()):
                if cluster.state.startswith("TERMINATED"):
                    continue
                if cluster.id not in self.nodes:
                    self._boot(cluster)
                    continue
                for step in cluster.steps:
                    if step.id not in self.seen and step.state in ("PENDING", "RUNNING") and not self.hold:
                        self.seen[step.id] = {"args": list(step.args)}
                        threading.Thread(target=self._run, args=(cluster, step), daemon=True).start()
                    proc = self._procs.get(step.id)
                    if step.state == "CANCELLED" and proc is not None and proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGTERM)
                if (
                    not cluster.keep_job_flow_alive_when_no_steps
                    and cluster.steps
                    and all(s.state not in ("PENDING", "RUNNING") for s in cluster.steps)
                ):
                    self._terminate(cluster, "TERMINATED", "Steps completed")
            time.sleep(0.2)

    @staticmethod
    def _terminate(cluster, state: str, reason: str) -> None:
        cluster.terminate()
        cluster.state = state
        cluster.last_state_change_reason = reason
        for group in cluster.instance_groups:
            group.end_date_time = cluster.end_datetime
            group.state = "TERMINATED"

    def _boot(self, cluster) -> None:
        """Make the cluster's node and run its bootstrap actions on it, in order."""
        node = Path(tempfile.mkdtemp(prefix=f"emr-node-{cluster.id}-"))
        (node / "bin").mkdir()
        (node / "site").mkdir()
        shims = {
            **_SHIMS,
            "python3": (
                f"#!/bin/sh\nexport PYTHONPATH={node / 'site'}${{PYTHONPATH:+:$PYTHONPATH}}\n"
                f'export PIP_TARGET={node / "site"}\nexec {sys.executable} "$@"\n'
            ),
        }
        for name, text in shims.items():
            (node / "bin" / name).write_text(text)
            (node / "bin" / name).chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env["PATH"] = f"{node / 'bin'}:{env['PATH']}"
        output = []
        for i, action in enumerate(cluster.bootstrap_actions, 1):
            script = Path(self._fetch(action.script_path, node))
            proc = subprocess.run(
                ["bash", str(script), *action.args], env=env, cwd=node, capture_output=True, text=True
            )
            output.append(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                self.bootstrap_output[cluster.id] = "".join(output)
                for step in cluster.steps:
                    step.state = "CANCELLED"
                self._terminate(
                    cluster,
                    "TERMINATED_WITH_ERRORS",
                    f"On the master instance, bootstrap action {i} returned a non-zero return code",
                )
                break
        self.bootstrap_output[cluster.id] = "".join(output)
        self.nodes[cluster.id] = node

    def _fetch(self, uri: str, folder: Path) -> str:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        local = folder / Path(key).name
        self.s3.download_file(bucket, key, str(local))
        return str(local)

    def _run(self, cluster, step) -> None:
        from moto.core.utils import utcnow

        record = self.seen[step.id]
        python = str(self.nodes[cluster.id] / "bin" / "python3")
        step.start_date_time = step.start_date_time or utcnow()
        args = list(step.args)
        assert args[0] == "spark-submit", args
        folder = Path(tempfile.mkdtemp(prefix=f"emr-{step.id}-"))
        local_args, i = [], 1
        while i < len(args):
            arg = args[i]
            if arg == "--deploy-mode":  # YARN's; the local master runs the driver here
                i += 2
                continue
            if arg == "--py-files":
                local_args += [arg, self._fetch(args[i + 1], folder)]
                i += 2
                continue
            if arg.startswith("s3://") and arg.endswith(".py") and "application" not in record:
                record["application"] = arg
                local_args.append(self._fetch(arg, folder))
                i += 1
                continue
            local_args.append(arg)
            i += 1
        cmd = [str(pyspark_home() / "bin" / "spark-submit"), "--master", "local[1]", *local_args]
        env = {
            **os.environ,
            "SPARK_HOME": str(pyspark_home()),
            "PYSPARK_PYTHON": python,
            "PYSPARK_DRIVER_PYTHON": python,
            "PYTHONPATH": "",  # only what the step ships (--py-files), pyspark and the node's installs
        }
        env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW")}
        # the step's --conf spark.pyspark.python=python3 names the cluster's Python: the node's
        cmd = [a.replace("python=python3", f"python={python}") if a.startswith("spark.pyspark.") else a for a in cmd]
        proc = subprocess.Popen(
            cmd, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self._procs[step.id] = proc
        out, err = proc.communicate()
        record.update(
            returncode=proc.returncode, stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace")
        )
        bucket, _, prefix = cluster.log_uri.rstrip("/").removeprefix("s3://").partition("/")
        for name, data in (("stdout", out), ("stderr", err)):
            key = f"{prefix}/{cluster.id}/steps/{step.id}/{name}.gz".lstrip("/")
            self.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(data))
        step.end_date_time = utcnow()
        if step.state == "CANCELLED":
            return
        if proc.returncode == 0:
            step.state = "COMPLETED"
        else:
            step.state = "FAILED"
            step.last_state_change_reason = f"Step failed with exitCode {proc.returncode}"
