"""Warm Spark Connect servers: what makes ``engine="local"`` fast.

A cold spark-submit spends ~20 s starting a JVM and a SparkContext, for every task. In its
default ``connect`` mode the local engine instead keeps one Spark Connect server per
(Spark settings, code version) on the host and runs each task's job as a plain Python
process against it (``SPARK_REMOTE``), in a Spark Connect session of its own. The jobs do
not change: they run on Spark Connect exactly as on Databricks serverless.

A server is owned by a small supervisor process (``python -m ...local_connect serve``)
that starts the JVM, publishes where it listens, and stops it once no job has used it for
``local_connect_idle_timeout`` seconds. Its state lives in ``<work_dir>/connect/<key>/``:

- ``server.json``: supervisor pid, port and auth token (absent = not running)
- ``spec.json``, ``spark.properties``: the server's settings; its Spark conf reaches
  spark-submit as ``--properties-file``, never as ``--conf`` (``ps`` shows arguments)
- ``server.log``: the supervisor's and the JVM's output
- ``sessions/slot-N.lock`` + ``slot-N.session``: session slots. A job holds one slot
  (a flock; the kernel drops it when its holder dies) and uses the slot's Spark Connect
  session, which the runtime resets first. Reusing sessions matters: Spark starts a Python
  worker daemon per session (~1 s per job) and never stops it (~50 MB each).

The server listens on 127.0.0.1 only and requires a random token, so other local users
cannot borrow it. Edited job code needs no new server: Python workers import ``jobs.*``
from disk when their session's daemon starts, so a slot's session is only reused by jobs
of the same code version (``code_version``) and replaced otherwise. When a server is idle
and has more worker daemons than slots, the supervisor stops them all and empties the
slots, so daemons of replaced sessions do not pile up.

Everything under the work dir is the task owner's only (files 0600, folders 0700): conf
may hold credentials, and the token opens the server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from airflow_spark_portable.redaction import redacted
from airflow_spark_portable.runtime.transport import open_private, private_dir, write_private

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
_START_TIMEOUT_SECONDS = 180.0
_STOP_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.5
_COMPACT_AFTER_IDLE_SECONDS = 30.0

# spark.sql.* keys that Spark fixes when the server starts (a session cannot change them);
# every other spark.sql.* key is set per job, in the job's own session.
_STATIC_SQL_PREFIXES = (
    "spark.sql.warehouse.dir",
    "spark.sql.catalogImplementation",
    "spark.sql.extensions",
    "spark.sql.catalog.",
    "spark.sql.hive.",
    "spark.sql.connect.",
    "spark.sql.artifact.",
    "spark.sql.ui.",
    "spark.sql.queryExecutionListeners",
    "spark.sql.streaming.streamingQueryListeners",
    "spark.sql.cache.serializer",
    "spark.sql.globalTempDatabase",
    "spark.sql.legacy.sessionInitWithConfigDefaults",
)
# Set on every server unless the profile says otherwise.
_SERVER_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.log.level": "WARN",
    # A job process that died without interrupting its query (SIGKILL) leaves an execution
    # nobody reattaches to; Spark interrupts such executions after this long.
    "spark.connect.execute.manager.detachedTimeout": "60s",
}


def split_conf(conf: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(server conf, session conf): session conf is what one job may set for itself."""
    server, session = {}, {}
    for key, value in conf.items():
        per_session = key.startswith("spark.sql.") and not key.startswith(_STATIC_SQL_PREFIXES)
        (session if per_session else server)[key] = value
    return server, session


def code_version(code_root: Path) -> str:
    """Hash of the Python code workers may import from ``code_root``: its top-level
    modules and packages (not data, not virtualenvs, not hidden folders)."""
    digest = hashlib.sha256()
    files = sorted(code_root.glob("*.py"))
    for package in sorted(code_root.iterdir()) if code_root.is_dir() else []:
        if package.is_dir() and not package.name.startswith(".") and (package / "__init__.py").is_file():
            files += sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(code_root)).encode() + b"\0")
        with contextlib.suppress(OSError):  # a file removed while we hash: the next run sees it
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ServerSpec:
    """Everything that makes two servers different. Equal specs share one server."""

    cores: str
    driver_memory: str
    conf: dict[str, str]
    code_root: str  # on the Python workers' path
    python: str
    spark_home: str

    @property
    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def server_conf(self, port: int) -> dict[str, str]:
        """All of the server's Spark conf; it goes to a properties file, not the command line."""
        return {
            **_SERVER_DEFAULTS,
            **self.conf,
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(port),
            # Sessions are lent to one job after another, and each new job process numbers its
            # plans from 0 again: a cached plan would give it the previous job's analysis,
            # including the file listing of a path rewritten since (stale rows, FILE_NOT_EXIST).
            # Always on, whatever the profile says: a re-run must read what is there now.
            "spark.connect.session.planCache.enabled": "false",
        }

    def command(self, properties_file: Path) -> list[str]:
        cmd = [
            str(Path(self.spark_home) / "bin" / "spark-submit"),
            "--class", SERVER_CLASS,
            "--master", f"local[{self.cores}]",
            "--driver-memory", self.driver_memory,
            "--name", f"airflow-spark-portable connect server {self.key}",
            "--properties-file", str(properties_file),
        ]  # fmt: skip
        return [*cmd, "spark-internal"]


def _escape_property(text: str, key: bool) -> str:
    """``text`` as java.util.Properties.load reads it back."""
    out = []
    for i, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char in "\n\r\t\f":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\f": "\\f"}[char])
        elif char in "=:#!" or (char == " " and (key or i == 0)):
            out.append("\\" + char)
        elif ord(char) > 126 or ord(char) < 32:
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else char)
        else:
            out.append(char)
    return "".join(out)


def write_properties(path: Path, conf: Mapping[str, str]) -> Path:
    """Spark conf as a 0600 ``--properties-file``: conf on a command line is readable by
    every local user (``ps``) for as long as the process lives."""
    lines = [f"{_escape_property(k, True)}={_escape_property(str(v), False)}" for k, v in sorted(conf.items())]
    write_private(path, "".join(line + "\n" for line in lines))
    return path


@dataclass(frozen=True)
class Server:
    """A running server, as ``server.json`` describes it."""

    state_dir: Path
    pid: int  # the supervisor
    port: int
    token: str

    @property
    def remote(self) -> str:
        # "localhost", not 127.0.0.1: pyspark sends a token without TLS only to localhost.
        return f"sc://localhost:{self.port}"

    @classmethod
    def read(cls, state_dir: Path) -> Server | None:
        try:
            data = json.loads((state_dir / "server.json").read_text())
            return cls(state_dir, int(data["pid"]), int(data["port"]), str(data["token"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        return _pid_alive(self.pid) and _port_open(self.port)


class Lease:
    """A session slot of a server, held by one job; the server stays up while any is held."""

    def __init__(self, server: Server, handle: IO[str], session_file: Path) -> None:
        self.server = server
        self.session_file = session_file  # written by the job's runtime (runtime/job.py)
        self._handle = handle

    def release(self) -> None:
        self._handle.close()  # drops the flock


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    with open(open_private(path, os.O_RDWR | os.O_CREAT), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def _slot_locks(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "sessions").glob("slot-*.lock"))


def _live_leases(state_dir: Path) -> int:
    """How many session slots are held right now."""
    live = 0
    for path in _slot_locks(state_dir):
        try:
            with open(open_private(path, os.O_RDWR | os.O_CREAT), "a+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            live += 1
        except OSError:
            pass
    return live


def _take_slot(state_dir: Path) -> tuple[IO[str], Path]:
    """Hold the first free session slot, adding one if all are busy."""
    folder = state_dir / "sessions"
    index = 0
    while True:
        handle = open(open_private(folder / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT), "a+")  # noqa: SIM115 - held until the job ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            index += 1
            continue
        return handle, folder / f"slot-{index}.session"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ConnectServers:
    """The servers of one work dir: find or start the one a job needs, and lease it."""

    def __init__(self, folder: Path, idle_timeout: float) -> None:
        self.folder = folder
        self.idle_timeout = idle_timeout

    def lease(self, spec: ServerSpec, env: Mapping[str, str], log) -> Lease:
        state_dir = self.folder / spec.key
        private_dir(self.folder)
        private_dir(state_dir / "sessions")
        with _locked(self.folder / f"{spec.key}.lock"):
            # The supervisor takes this lock before it stops an idle server, so a server
            # found alive here cannot stop before the slot below is taken.
            server = Server.read(state_dir)
            if server is None or not server.alive():
                server = self._start(spec, state_dir, env, log)
            else:
                log.info("Using the warm Spark Connect server on port %d (%s)", server.port, state_dir)
            handle, session_file = _take_slot(state_dir)
        return Lease(server, handle, session_file)

    def _start(self, spec: ServerSpec, state_dir: Path, env: Mapping[str, str], log) -> Server:
        write_private(state_dir / "spec.json", json.dumps(asdict(spec), indent=2))  # conf may hold keys
        log_path = state_dir / "server.log"
        log.info(
            "Starting a Spark Connect server (local[%s], %s; it stays up for %.0f s after its last job): log %s",
            spec.cores, spec.driver_memory, self.idle_timeout, log_path,
        )  # fmt: skip
        started = time.monotonic()
        with open(open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as out:
            supervisor = subprocess.Popen(  # noqa: S603 - our own module, an argument list
                [sys.executable, "-m", __name__, "serve", str(state_dir), str(self.idle_timeout)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,  # outlives this task; a task kill must not reach it
            )
        deadline = started + _START_TIMEOUT_SECONDS + 5
        while time.monotonic() < deadline:
            server = Server.read(state_dir)
            if server is not None and server.pid == supervisor.pid:
                log.info("Spark Connect server ready on port %d after %.1f s", server.port, time.monotonic() - started)
                return server
            if supervisor.poll() is not None:
                break
            time.sleep(_POLL_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.kill(supervisor.pid, signal.SIGTERM)
        from airflow_spark_portable.exceptions import SparkJobFailed

        raise SparkJobFailed(
            f"the local Spark Connect server did not start (log: {log_path}). Last lines:\n{_tail(log_path)}\n"
            "To run without it, set [spark_portable] local_mode = submit "
            "(AIRFLOW__SPARK_PORTABLE__LOCAL_MODE=submit)."
        )

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop every server of this work dir (tests, and ``... local_connect stop``)."""
        pids = []
        for state_dir in self.folder.glob("*/"):
            server = Server.read(state_dir)
            if server is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(server.pid, signal.SIGTERM)
                    pids.append(server.pid)
        deadline = time.monotonic() + timeout
        for pid in pids:
            while time.monotonic() < deadline and _pid_alive(pid):
                time.sleep(0.2)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    return True


# -- the supervisor (its own process) -------------------------------------------------


def _die_with_parent() -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} supervisor[{os.getpid()}]: {text}", flush=True)


def serve(state_dir: Path, idle_timeout: float) -> int:
    spec = ServerSpec(**json.loads((state_dir / "spec.json").read_text()))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stopping.append("SIGINT"))
    port, token = _free_port(), secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "SPARK_HOME": spec.spark_home,
        "PYSPARK_PYTHON": spec.python,
        "PYTHONPATH": os.pathsep.join(p for p in (spec.code_root, os.environ.get("PYTHONPATH", "")) if p),
        "SPARK_CONNECT_AUTHENTICATE_TOKEN": token,  # env, not --conf: ps shows arguments
    }
    properties = write_properties(state_dir / "spark.properties", spec.server_conf(port))
    command = spec.command(properties)
    _say(f"starting: {' '.join(redacted(command))}")
    jvm = subprocess.Popen(  # noqa: S603
        command,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=spec.code_root,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - if the supervisor is SIGKILLed
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not _port_open(port):
            if jvm.poll() is not None or stopping or time.monotonic() > deadline:
                _say(f"the server did not come up (exit code {jvm.poll()}, stop requested: {bool(stopping)})")
                return 1
            time.sleep(0.2)
        info = state_dir / "server.json"
        # the token is a secret
        write_private(info, json.dumps({"pid": os.getpid(), "jvm_pid": jvm.pid, "port": port, "token": token}))
        _say(f"ready on 127.0.0.1:{port} (JVM pid {jvm.pid})")
        idle_since = time.monotonic()
        while True:
            time.sleep(1.0)
            if jvm.poll() is not None:
                _say(f"the JVM exited with code {jvm.returncode}")
                return 1
            if stopping:
                _say(f"stopping on {stopping[0]}")
                return 0
            if _live_leases(state_dir):
                idle_since = time.monotonic()
                continue
            idle = time.monotonic() - idle_since
            if idle < min(_COMPACT_AFTER_IDLE_SECONDS, idle_timeout):
                continue
            with _locked(state_dir.parent / f"{spec.key}.lock", blocking=False) as got:
                if not got or _live_leases(state_dir):
                    continue  # a job is about to start
                if idle >= idle_timeout:
                    info.unlink(missing_ok=True)  # from now on nobody finds this server
                    _say(f"idle for {idle_timeout:.0f} s; stopping")
                    return 0
                _compact(state_dir, jvm.pid)
    finally:
        published = Server.read(state_dir)
        if published is not None and published.pid == os.getpid():
            (state_dir / "server.json").unlink(missing_ok=True)
        stop_group(jvm, _STOP_GRACE_SECONDS)


def _worker_daemons(jvm_pid: int) -> list[int]:
    """The JVM's pyspark.daemon children (one per Spark Connect session that ran Python)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == jvm_pid and b"pyspark.daemon" in (stat.parent / "cmdline").read_bytes():
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _compact(state_dir: Path, jvm_pid: int) -> None:
    """With no job running (the caller holds the start lock): if sessions were replaced
    and their daemons linger, stop every daemon and forget every slot's session, so the
    next jobs start fresh sessions (Spark cannot restart a live session's daemon)."""
    daemons = _worker_daemons(jvm_pid)
    sessions = list((state_dir / "sessions").glob("slot-*.session"))
    if len(daemons) <= len(sessions):
        return
    for path in sessions:
        path.unlink(missing_ok=True)
    for pid in daemons:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # pyspark's daemon stops its workers on SIGTERM
    _say(f"stopped {len(daemons)} idle Python worker daemons of {len(sessions)} session slots")


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM ``proc``'s whole process group, SIGKILL what is left after ``grace`` seconds.
    A group outlives its leader (a JVM may exit before its Python workers), so survivors
    are looked for even after ``proc`` ended."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


# -- stopping a job's work on the server ----------------------------------------------


def interrupt_session(remote: str, token: str, timeout: float = 60.0) -> str:
    """Interrupt everything a job's session still runs and release the session. Runs the
    client in a subprocess: importing pyspark's Connect client takes seconds and memory
    the Airflow task process should not pay for."""
    env = {**os.environ, "SPARK_REMOTE": remote, "SPARK_CONNECT_AUTHENTICATE_TOKEN": token}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", __name__, "interrupt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return (done.stdout + done.stderr).strip().splitlines()[-1] if (done.stdout + done.stderr).strip() else ""


def _interrupt_from_env() -> int:
    from pyspark.sql import SparkSession

    try:
        spark = SparkSession.builder.remote(os.environ["SPARK_REMOTE"]).getOrCreate()
        interrupted = spark.interruptAll()
        spark.stop()
    except Exception as exc:  # typically: the job released its session itself
        print(f"nothing to interrupt ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})")
        return 0
    print(f"interrupted {len(interrupted)} operation(s)")
    return 0


def main(argv: list[str]) -> int:
    usage = (
        "usage: python -m airflow_spark_portable.engines.local_connect serve STATE_DIR IDLE_SECONDS | interrupt | stop"
    )
    if argv[:1] == ["serve"] and len(argv) == 3:
        return serve(Path(argv[1]), float(argv[2]))
    if argv == ["interrupt"]:
        return _interrupt_from_env()
    if argv == ["stop"]:
        from airflow_spark_portable import settings

        ConnectServers(settings.work_dir() / "connect", 0).stop_all()
        return 0
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
