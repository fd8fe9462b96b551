"""``engine="local"``: Spark on the Airflow worker itself, for development and small data.

Two modes (``[spark_portable] local_mode``, or ``engine_options={"local_mode": ...}``):

- ``connect`` (default): the job runs as a plain Python process against a warm Spark
  Connect server that this engine starts once per host and reuses (see local_connect.py).
  No JVM start per task; a kill stops the job process and interrupts its Spark session.
- ``submit``: one pyspark ``spark-submit`` per task, as on a cluster. A kill takes down
  spark-submit's whole process group (JVM, Python driver, Python workers).

Either way the job's output streams into the task log live, and a host-wide slot cap keeps
parallel tasks from running more jobs at once than there are cores.

No secret is ever on a command line, where ``ps`` shows it to every local user: Spark conf
reaches spark-submit as a 0600 ``--properties-file``, and the job's application_args are
read from its 0600 context file by a small launcher that gives the job the ``sys.argv``
the task asked for (``LAUNCHER``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import IO, Any

from airflow_spark_portable import settings
from airflow_spark_portable.engines import local_connect
from airflow_spark_portable.engines.base import CANCELLED, FAILED, SUCCEEDED, Engine, JobSpec, RunHandle, RunResult
from airflow_spark_portable.exceptions import SparkPortableConfigError
from airflow_spark_portable.pipes import Channel, LocalChannel
from airflow_spark_portable.profiles import Profile, spark_conf_strings
from airflow_spark_portable.redaction import java_option_secret_keys, redacted, refuse
from airflow_spark_portable.runtime import protocol
from airflow_spark_portable.runtime.job import CODE_VERSION_ENV, SESSION_CONF_ENV, SESSION_FILE_ENV, read_session_file
from airflow_spark_portable.runtime.transport import open_private, private_dir, write_private

_MEMORY = re.compile(r"^\d+[kmgt]?$", re.IGNORECASE)
_SECTION_KEYS = {"cores", "driver_memory", "conf"}
_KILL_GRACE_SECONDS = 3.0  # Airflow's supervisor escalates to SIGKILL after 5 s
_LOG_TAIL_LINES = 60

# Runs the job file as ``python <file> <application_args>`` would, with the arguments taken
# from the context file (0600) instead of the command line (``ps``). argv: [launcher, file].
LAUNCHER = """\
import json, os, runpy, sys
app = sys.argv[1]
with open(os.environ[%r], encoding="utf-8") as fh:
    sys.argv[:] = [app, *json.load(fh)["application_args"]]
sys.path[0] = os.path.dirname(os.path.abspath(app))
del fh
runpy.run_path(app, run_name="__main__")
""" % protocol.ENV_CONTEXT


def pyspark_home() -> Path:
    """The pyspark package folder: it is the SPARK_HOME its bundled spark-submit needs."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise SparkPortableConfigError(
            "engine='local' needs pyspark on the Airflow worker: pip install 'airflow-spark-portable[local]'"
        )
    home = Path(next(iter(spec.submodule_search_locations)))
    if not (home / "bin" / "spark-submit").is_file():
        raise SparkPortableConfigError(f"pyspark at {home} has no bin/spark-submit; reinstall pyspark from PyPI")
    return home


def _require_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return
    if shutil.which("java") is None:
        raise SparkPortableConfigError(
            "engine='local' needs Java (17 or 21) on the Airflow worker: install a JDK or set JAVA_HOME"
        )


def _die_with_parent() -> None:  # runs in the child between fork and exec
    # If the Airflow task process is SIGKILLed (no on_kill), the kernel still stops spark-submit.
    # The runtime's orphan watchdog then stops the Python driver the JVM leaves behind.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalSlots:
    """A counting semaphore shared by every task on this host, made of flock()ed files.

    The kernel drops a lock when its holder dies, so a killed task never leaks a slot.
    """

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = folder
        self.size = size

    def acquire(self, log, poll_seconds: float = 1.0) -> IO[str]:
        private_dir(self.folder)
        waiting_since = None
        while True:
            for index in range(self.size):
                fd = open_private(self.folder / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT)
                handle = open(fd, "a+")  # noqa: SIM115 - held until release
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                if waiting_since is not None:
                    log.info("Got a local Spark slot after %.0f s", time.monotonic() - waiting_since)
                return handle
            if waiting_since is None:
                waiting_since = time.monotonic()
                log.info(
                    "All %d local Spark slots on this host are busy; waiting. Raise "
                    "[spark_portable] local_max_parallel to run more jobs at once.",
                    self.size,
                )
            time.sleep(poll_seconds)

    @staticmethod
    def release(handle: IO[str]) -> None:
        handle.close()  # closing the file drops the flock


class LocalEngine(Engine):
    name = "local"
    streams_output = True

    def __init__(self, options=None, log=None) -> None:
        super().__init__(options, log)
        self._procs: dict[int, subprocess.Popen[str]] = {}
        self._cancelled: set[int] = set()

    @classmethod
    def validate_profile(cls, profile: Profile) -> dict[str, Any]:
        section, where = cls.profile_section(profile, _SECTION_KEYS)
        cores = section.get("cores", 1)
        if cores != "*" and (isinstance(cores, bool) or not isinstance(cores, int) or cores < 1):
            raise SparkPortableConfigError(f"{where}: cores = {cores!r} must be a whole number >= 1 or '*'")
        memory = str(section.get("driver_memory", "1g"))
        if not _MEMORY.match(memory):
            raise SparkPortableConfigError(f"{where}: driver_memory = {memory!r} must look like 512m or 4g")
        return {"cores": cores, "driver_memory": memory, "conf": spark_conf_strings(section.get("conf"), where)}

    @property
    def mode(self) -> str:
        mode = self.options.get("local_mode") or settings.local_mode()
        if mode not in settings.LOCAL_MODES:
            raise SparkPortableConfigError(
                f"engine_options local_mode={mode!r} must be one of {', '.join(settings.LOCAL_MODES)}"
            )
        return mode

    def open_channel(self, spec: JobSpec) -> Channel:
        for folder in (settings.work_dir(), settings.work_dir() / "runs"):  # also ones made before 0700
            private_dir(folder)
        return LocalChannel(settings.work_dir() / "runs" / spec.name)

    def channel_for(self, handle: RunHandle) -> Channel:
        return LocalChannel(Path(handle["channel_dir"]))

    def command(self, spec: JobSpec, channel: LocalChannel) -> list[str]:
        """spark-submit's command line (``submit`` mode): conf and application_args travel
        in 0600 files of the channel folder, never on the command line."""
        section = self.validate_profile(spec.profile)
        properties = local_connect.write_properties(channel.folder / "spark.properties", spec.spark_conf)
        launcher = channel.folder / "launch.py"
        write_private(launcher, LAUNCHER)
        cmd = [
            str(pyspark_home() / "bin" / "spark-submit"),
            "--master", f"local[{section['cores']}]",
            "--driver-memory", section["driver_memory"],
            "--name", spec.name,
            "--properties-file", str(properties),
        ]  # fmt: skip
        return [*cmd, str(launcher), str(spec.application)]

    def server_spec(self, spec: JobSpec) -> local_connect.ServerSpec:
        """The Spark Connect server a job needs (``connect`` mode)."""
        section = self.validate_profile(spec.profile)
        server_conf, _ = local_connect.split_conf(spec.spark_conf)
        return local_connect.ServerSpec(
            cores=str(section["cores"]),
            driver_memory=section["driver_memory"],
            conf=server_conf,
            code_root=str(spec.code_root),
            python=sys.executable,
            spark_home=str(pyspark_home()),
        )

    def base_environment(self, spec: JobSpec) -> dict[str, str]:
        # The worker's Airflow settings (DB URLs, fernet key, connections) stay out of the job.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
        env.pop("SPARK_REMOTE", None)  # the mode decides, not whatever the worker had set
        env.update(
            SPARK_HOME=str(pyspark_home()),
            PYSPARK_PYTHON=sys.executable,
            PYSPARK_DRIVER_PYTHON=sys.executable,
            PYTHONPATH=os.pathsep.join(p for p in (str(spec.code_root), env.get("PYTHONPATH", "")) if p),
            PYTHONUNBUFFERED="1",
        )
        return env

    def environment(self, spec: JobSpec, channel: Channel) -> dict[str, str]:
        env = self.base_environment(spec)
        env.update(channel.bootstrap_env())
        env.update(spec.env)
        return env

    def submit(self, spec: JobSpec, channel: Channel) -> RunHandle:
        refuse(
            java_option_secret_keys(spec.spark_conf),
            "spark-submit puts Java options on the JVM's command line, which ps shows to every local user",
            "give the job the secret in env= (a process's environment is readable by its user only) or a "
            "Hadoop credential provider file (hadoop.security.credential.provider.path)",
        )
        _require_java()
        mode = self.mode
        env = self.environment(spec, channel)
        slots = LocalSlots(settings.work_dir() / "slots", settings.local_max_parallel())
        slot = slots.acquire(self.log)
        lease = None
        cores = self.validate_profile(spec.profile)["cores"]
        handle: RunHandle = {
            "engine": self.name,
            "mode": mode,
            "name": spec.name,
            "channel_dir": str(channel.folder),
            "cores": (os.cpu_count() or 1) if cores == "*" else cores,
            "started": time.time(),
        }
        try:
            if mode == "connect":
                server_spec = self.server_spec(spec)
                servers = local_connect.ConnectServers(
                    settings.work_dir() / "connect", settings.local_connect_idle_timeout()
                )
                lease = servers.lease(server_spec, self.base_environment(spec), self.log)
                cmd = self._connect_job(spec, server_spec, lease, env)
                handle.update(session_file=str(lease.session_file), server_dir=str(lease.server.state_dir))
            else:
                assert isinstance(channel, LocalChannel)
                cmd = self.command(spec, channel)
            self.log.info("Running: %s", " ".join(redacted(cmd)))
            self.log.info("Job arguments (from its context file): %s", redacted(spec.application_args))
            self.log.info("Job environment variables set by the task: %s", sorted(spec.env) or "none")
            proc = subprocess.Popen(  # an argument list: no shell ever sees templated values
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=spec.code_root,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,  # its own process group, so cancel() reaches every child
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, no locks taken
            )
        except BaseException:
            if lease is not None:
                lease.release()
            slots.release(slot)
            raise
        proc._spark_portable_hold = (slot, lease)  # type: ignore[attr-defined]
        self._procs[proc.pid] = proc
        handle["pid"] = proc.pid
        return handle

    def _connect_job(
        self, spec: JobSpec, server_spec: local_connect.ServerSpec, lease: local_connect.Lease, env: dict[str, str]
    ) -> list[str]:
        """The job as a plain Python process on the leased server (``connect`` mode)."""
        _, session_conf = local_connect.split_conf(spec.spark_conf)
        for what, conf in (("Server", server_spec.conf), ("Session", session_conf)):
            shown = redacted([f"{k}={v}" for k, v in sorted(conf.items())])
            self.log.info("%s conf: %s", what, " ".join(shown) or "none")
        env.update(
            SPARK_REMOTE=lease.server.remote,
            SPARK_CONNECT_AUTHENTICATE_TOKEN=lease.server.token,  # env: never on a command line
            **{
                SESSION_CONF_ENV: json.dumps(session_conf),
                SESSION_FILE_ENV: str(lease.session_file),
                CODE_VERSION_ENV: local_connect.code_version(spec.code_root),
            },
        )
        return [sys.executable, "-c", LAUNCHER, str(spec.application)]

    def wait(self, handle: RunHandle) -> RunResult:
        proc = self._procs[handle["pid"]]
        what = "spark-submit" if handle.get("mode") != "connect" else "the job process"
        tail: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                self.log.info("%s", line)
            code = proc.wait()
        finally:
            # Also reached on KeyboardInterrupt (Airflow's first signal is SIGINT).
            local_connect.stop_group(proc, _KILL_GRACE_SECONDS)
            # Killed by a signal, the job had no chance to finish its query; one that raised
            # or exited did (Connect queries are synchronous), and keeps its warm session.
            if proc.returncode is not None and proc.returncode < 0:
                self._interrupt_session(handle)
            slot, lease = proc._spark_portable_hold  # type: ignore[attr-defined]
            if lease is not None:
                lease.release()
            if handle.get("session_file"):
                # the runtime writes it with the default mode; its folder is 0700 meanwhile
                with contextlib.suppress(OSError):
                    os.chmod(handle["session_file"], 0o600)
            LocalSlots.release(slot)
            self._procs.pop(proc.pid, None)
        if proc.pid in self._cancelled:
            return RunResult(CANCELLED, f"{what} was cancelled", list(tail))
        if code == 0:
            return RunResult(SUCCEEDED, "", list(tail))
        reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return RunResult(FAILED, f"{what} {reason}", list(tail))

    def cancel(self, handle: RunHandle) -> None:
        proc = self._procs.get(handle["pid"])
        if proc is None:
            return
        self._cancelled.add(proc.pid)
        self.log.info("Cancelling the job (process group %d)", proc.pid)
        local_connect.stop_group(proc, _KILL_GRACE_SECONDS)
        self._interrupt_session(handle)

    def _interrupt_session(self, handle: RunHandle) -> None:
        """Connect mode: stop what the job's session still runs on the shared server (the
        server would otherwise finish a killed job's query for nobody)."""
        if handle.get("mode") != "connect" or handle.get("interrupted"):
            return
        handle["interrupted"] = True
        server = local_connect.Server.read(Path(handle["server_dir"]))
        session_file = Path(handle["session_file"])
        session_id = read_session_file(session_file).get("session_id", "")
        if server is None or not session_id:
            return  # the server is gone and its work with it, or the job never opened a session
        try:
            said = local_connect.interrupt_session(f"{server.remote}/;session_id={session_id}", server.token)
            self.log.info("Interrupted and closed the job's Spark Connect session: %s", said)
        except (OSError, subprocess.SubprocessError) as exc:
            self.log.warning("Could not interrupt the job's Spark Connect session: %s", exc)
        # The next job in this slot starts a fresh session rather than one left mid-way.
        session_file.unlink(missing_ok=True)

    def cost(self, handle: RunHandle) -> dict[str, Any]:
        """Nothing is billed, but the work is measured (core-hours), so a report can price the
        same run on a cluster (``report.py``)."""
        from airflow_spark_portable.costs import local_estimate

        hours = (time.time() - handle.get("started", time.time())) / 3600
        return local_estimate(int(handle.get("cores", 1)), hours)
