"""An EMR cluster for tests: moto's EMR API (the real boto3/EmrHook code path talks to it over
HTTP) plus a thread that plays the cluster's part, because moto never runs a step.

For each step the code under test adds, the thread reads the step's ``spark-submit``
arguments back from moto, downloads the job file and the ``--py-files`` bundle from moto's
S3, runs the same arguments with pyspark's local spark-submit (the job talks to moto's S3
for its context and messages, as it would on EMR), uploads stdout/stderr gzipped where EMR
puts step logs, and sets the step's state from the exit code. moto has no CancelSteps; the
harness adds it (the step becomes CANCELLED and its local process is stopped).
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


class FakeCluster:
    def __init__(self, endpoint: str, log_uri: str, name: str = "asp-test") -> None:
        self.endpoint = endpoint
        self.s3 = boto3.client("s3", region_name=REGION)
        self.cluster_id = boto3.client("emr", region_name=REGION).run_job_flow(
            Name=name,
            ReleaseLabel="emr-7.5.0",
            LogUri=log_uri,
            Applications=[{"Name": "Spark"}],
            Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
            JobFlowRole="EMR_EC2_DefaultRole",
            ServiceRole="EMR_DefaultRole",
        )["JobFlowId"]
        self.log_uri = log_uri.rstrip("/")
        self.hold = False  # when True, new steps stay RUNNING and are not run
        self.seen: dict[str, dict[str, Any]] = {}  # step id -> what the harness did
        self._procs: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-emr", daemon=True)
        self._thread.start()

    def steps(self) -> list:
        return list(_backend().clusters[self.cluster_id].steps)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for proc in self._procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for step in self.steps():
                if step.id not in self.seen and step.state in ("PENDING", "RUNNING") and not self.hold:
                    self.seen[step.id] = {"args": list(step.args)}
                    threading.Thread(target=self._run, args=(step,), daemon=True).start()
                proc = self._procs.get(step.id)
                if step.state == "CANCELLED" and proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            time.sleep(0.2)

    def _fetch(self, uri: str, folder: Path) -> str:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        local = folder / Path(key).name
        self.s3.download_file(bucket, key, str(local))
        return str(local)

    def _run(self, step) -> None:
        record = self.seen[step.id]
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
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYTHONPATH": "",  # only what the step ships (--py-files) and pyspark itself
        }
        env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW")}
        # the step's --conf spark.pyspark.python=python3 names the cluster's Python; use ours
        cmd = [a.replace("spark.pyspark.python=python3", f"spark.pyspark.python={sys.executable}") for a in cmd]
        cmd = [
            a.replace("spark.pyspark.driver.python=python3", f"spark.pyspark.driver.python={sys.executable}")
            for a in cmd
        ]
        proc = subprocess.Popen(
            cmd, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self._procs[step.id] = proc
        out, err = proc.communicate()
        record.update(
            returncode=proc.returncode, stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace")
        )
        bucket, _, prefix = self.log_uri.removeprefix("s3://").partition("/")
        for name, data in (("stdout", out), ("stderr", err)):
            key = f"{prefix}/{self.cluster_id}/steps/{step.id}/{name}.gz".lstrip("/")
            self.s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(data))
        if step.state == "CANCELLED":
            return
        if proc.returncode == 0:
            step.state = "COMPLETED"
        else:
            step.state = "FAILED"
            step.last_state_change_reason = f"Step failed with exitCode {proc.returncode}"
