#!/usr/bin/env python3
"""Run docker-compose.yaml's Airflow stack without Docker: each Airflow service of the compose
file as a process of this machine, with the environment, command, mounts, start order and
health checks the compose file gives it, against this machine's PostgreSQL and Redis.

    .venv/bin/python scripts/stack.py init-env    # .env with fresh secrets (once; git-ignored)
    .venv/bin/python scripts/stack.py up          # start; Ctrl-C stops every process
    .venv/bin/python scripts/stack.py down        # stop a stack started by another shell

The compose file is the one source of truth: nothing here names an Airflow setting the file
does not set, except what a container gets from its image or from having a host of its own:

- The image: AIRFLOW_HOME=/opt/airflow and the entrypoint (`_AIRFLOW_DB_MIGRATE`,
  `_AIRFLOW_WWW_USER_CREATE`, `airflow <command>`), as apache/airflow's
  scripts/docker/entrypoint_prod.sh does them. Airflow comes from .venv, not from ./Dockerfile.
- A filesystem per container: each service gets `<root>/<service>/` as its `/`, and every
  path under /opt/airflow in its environment and command points there. Each service runs in
  a mount namespace of its own (`unshare --mount`) where its volumes are real bind mounts
  there (`:ro` ones read-only); named volumes are folders under `<root>/volumes/`.
- A network per container: the services `postgres` and `redis` are this machine's servers (a
  database and a Redis database index of the stack's own), `airflow-apiserver` is
  127.0.0.1:<port>, and each port a component listens on (API, scheduler health, log
  servers) is a free one, set through the config option that names it.

`restart: always` is not emulated: a process that dies is reported, never restarted."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# Services this machine runs itself, and where: (host, port) for the compose service name.
NATIVE_SERVERS = {"postgres": ("127.0.0.1", 5432), "redis": ("127.0.0.1", 6379)}
# Ports an Airflow component listens on inside its container, and the option that moves it.
LISTEN_OPTIONS = {
    8080: "AIRFLOW__API__PORT",
    8974: "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
    8793: "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    8794: "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
}
IMAGE_HOME = "/opt/airflow"
# Set in every service's environment and inherited by all it starts: what a container's cgroup
# is to `docker compose down`, the way to find the processes that left the service's session
# (a warm Spark Connect server does, on purpose).
MARKER = "SPARK_PORTABLE_STACK_SERVICE"
SECRETS = {
    "AIRFLOW__API_AUTH__JWT_SECRET": lambda: secrets.token_urlsafe(32),
    "AIRFLOW__CORE__FERNET_KEY": lambda: __import__("cryptography.fernet").fernet.Fernet.generate_key().decode(),
    "_AIRFLOW_WWW_USER_PASSWORD": lambda: secrets.token_urlsafe(16),
}


class StackError(Exception):
    """The compose file cannot be run as written, or a service did not come up."""


# --- the compose file, as `docker compose config` reads it ---------------------------------

def interpolate(value, env: dict[str, str], where: str = ""):
    """Compose's interpolation over a parsed file: $$, $VAR, ${VAR}, ${VAR:-default},
    ${VAR-default}, ${VAR:+alternative}, ${VAR+alternative}, ${VAR:?error}, ${VAR?error}, with
    defaults interpolated in turn. A required variable without a value, and any other use of
    `$`, is an error (an unset plain variable is blank, as compose makes it, with a warning)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, where) for v in value]
    return _expand(value, env, where) if isinstance(value, str) else value


def _expand(text: str, env: dict[str, str], where: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise StackError(f"{where}: unclosed '${{' in {text!r}")
            out.append(_substitute(text[i + 2 : j - 1], env, where))
            i = j
        elif name := re.match(r"[A-Za-z_]\w*", text[i + 1 :]):
            out.append(env.get(name.group(0), ""))
            i += 1 + name.end()
        else:
            raise StackError(f"{where}: invalid interpolation at {text[i:i + 12]!r} (a literal $ is written $$)")
    return "".join(out)


def _substitute(body: str, env: dict[str, str], where: str) -> str:
    match = re.fullmatch(r"([A-Za-z_]\w*)(?:(:?[-?+])(.*))?", body, re.DOTALL)
    if not match:
        raise StackError(f"{where}: invalid interpolation '${{{body}}}'")
    name, op, arg = match.groups()
    current = env.get(name)
    if op is None:
        return current or ""
    given = bool(current) if op.startswith(":") else current is not None
    if op.endswith("-"):
        return current if given else _expand(arg, env, where)
    if op.endswith("+"):
        return _expand(arg, env, where) if given else ""
    if not given:
        raise StackError(f"{where}: required variable {name} is missing a value: {_expand(arg, env, where)}")
    return current


def read_env_file(path: Path, shell: dict[str, str] | None = None) -> dict[str, str]:
    """An .env file as compose reads it: `KEY=VALUE` or `export KEY=VALUE`; comments, blank
    lines and an unquoted value's ` # comment` skipped; 'single-quoted' values literal,
    "double-quoted" ones with \\n, \\t, \\" and \\\\ escapes; unquoted and double-quoted values
    interpolated from the lines above and ``shell``."""
    env: dict[str, str] = {}
    if not path.exists():
        return env
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"(?:export\s+)?([A-Za-z_][\w.-]*)\s*=\s*(.*)", line)
        if not match:
            raise StackError(f"{path}:{number}: not KEY=VALUE")
        key, value = match.groups()
        scope = {**env, **(shell or {})}
        if value.startswith("'"):
            if not value.endswith("'") or len(value) < 2:
                raise StackError(f"{path}:{number}: unclosed single quote")
            value = value[1:-1]
        elif value.startswith('"'):
            if not re.fullmatch(r'"(?:[^"\\]|\\.)*"', value):
                raise StackError(f"{path}:{number}: unclosed double quote")
            value = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), value[1:-1])
            value = _expand(value, scope, f"{path}:{number}")
        else:
            value = _expand(re.sub(r"\s+#.*$", "", value), scope, f"{path}:{number}")
        env[key] = value
    return env


def load_compose(path: Path, env: dict[str, str]) -> dict:
    import yaml  # merge keys (<<: *anchor) are resolved by PyYAML's SafeLoader

    return interpolate(yaml.safe_load(path.read_text()), env, path.name)


# --- one compose service as a process ---------------------------------------------------------


@dataclass
class Service:
    name: str
    spec: dict
    rootfs: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    mounts: list[tuple[str, str, bool]] = field(default_factory=list)  # host, target, read-only
    last_probe: str = ""
    proc: subprocess.Popen | None = None
    log: Path | None = None


class NativeStack:
    """The compose file's Airflow services as processes; `up()` starts them in the compose
    file's order and waits on its conditions, `down()` stops them, process by process."""

    def __init__(self, compose: Path, env_file: Path, root: Path, database: str | None = None,
                 redis_db: int | None = None, extra_env: dict[str, str] | None = None,
                 shell_env: dict[str, str] | None = None) -> None:
        self.compose_path = compose
        self.project = compose.parent
        self.root = root
        # as compose: the shell's variables win over the .env file's
        shell = dict(os.environ if shell_env is None else shell_env)
        self.host_env = {**read_env_file(env_file, shell), **(extra_env or {}), **shell}
        # the compose project's own database, as its postgres-db-volume is (<project>_...)
        self.name = project_name(self.project, self.host_env)
        self.database = database or f"{self.name}_airflow"
        self.redis_db = redis_db if redis_db is not None else 1 + zlib.crc32(self.name.encode()) % 13
        self.compose = load_compose(compose, self.host_env)
        self.services: dict[str, Service] = {}
        self.ports: dict[tuple[str, int], int] = {}
        for name, spec in self.compose["services"].items():
            if name in NATIVE_SERVERS:
                continue
            self.services[name] = Service(name, spec, root / name)
        for name in self.services:
            for port in LISTEN_OPTIONS:
                self.ports[(name, port)] = _free_port()

    # -- translation of container values to this machine

    def _check_server_url(self, url, where: str) -> None:
        """A URL to the postgres or redis service must be one that service answers: its port,
        and for PostgreSQL the user, password and database its POSTGRES_* variables create
        (this machine's server trusts local connections and would accept any)."""
        shown = url._replace(netloc=url.netloc.rsplit("@", 1)[-1]).geturl()  # no credentials in errors
        default_port = {"postgres": 5432, "redis": 6379}[url.hostname]
        if (url.port or default_port) != default_port:
            raise StackError(f"{where}: {shown} names port {url.port}; the {url.hostname} service listens on {default_port}")
        if url.hostname == "postgres":
            env = self.compose["services"]["postgres"].get("environment") or {}
            wanted = (env.get("POSTGRES_USER", "postgres"), env.get("POSTGRES_PASSWORD"),
                      env.get("POSTGRES_DB") or env.get("POSTGRES_USER", "postgres"))
            if (url.username, url.password, url.path.lstrip("/")) != wanted:
                raise StackError(f"{where}: {shown} does not log in as the postgres service's POSTGRES_USER / "
                                 "POSTGRES_PASSWORD to its POSTGRES_DB")

    def _native_url(self, match: re.Match, where: str = "") -> str:
        try:
            url = urlsplit(match.group(0))
            host, port = url.hostname, url.port
        except ValueError as err:
            raise StackError(f"{where}: cannot read {match.group(0).split('@')[-1]!r} as a URL: {err}") from None
        path = url.path
        if host in NATIVE_SERVERS:
            self._check_server_url(url, where)
            native_host, native_port = NATIVE_SERVERS[host]
            if url.scheme.startswith(("postgresql", "db+postgresql")):
                path = f"/{self.database}"
            elif url.scheme.startswith("redis"):
                path = f"/{self.redis_db}"
        elif host in self.services:
            if (host, port or 80) not in self.ports:
                raise StackError(f"{where}: {host}:{port or 80}: no Airflow component listens on that port")
            native_host, native_port = "127.0.0.1", self.ports[(host, port or 80)]
        else:
            return match.group(0)
        auth = url.netloc.rsplit("@", 1)[0] + "@" if "@" in url.netloc else ""
        return urlunsplit((url.scheme, f"{auth}{native_host}:{native_port}", path, url.query, url.fragment))

    def native(self, service: Service, text: str, where: str = "") -> str:
        where = f"{service.name}{where}"
        text = re.sub(r"[a-z][a-z0-9+.-]*://[^\s'\";,}]+", lambda m: self._native_url(m, where), text)
        # a service's own localhost:<port> (its health check) is its native port
        text = re.sub(
            r"(?<=//)(localhost|127\.0\.0\.1):(\d+)",
            lambda m: f"127.0.0.1:{self.ports.get((service.name, int(m.group(2))), int(m.group(2)))}",
            text,
        )
        home = str(service.rootfs) + IMAGE_HOME
        text = re.sub(r"(?<![\w/.])/opt/airflow(?=/|\b)", lambda _: home, text)
        entry = f"{shlex.quote(sys.executable)} {shlex.quote(__file__)} entrypoint"
        return re.sub(r"(?<![\w/.])/entrypoint(?![\w/.])", lambda _: entry, text)

    def _prepare(self, service: Service) -> None:
        spec = service.spec
        home = service.rootfs / IMAGE_HOME.lstrip("/")
        home.mkdir(parents=True, exist_ok=True)
        for volume in spec.get("volumes", []):
            source, target, *options = str(volume).split(":")
            if source.startswith((".", "/")):
                host = (self.project / source).resolve()
                if not host.exists():
                    host.mkdir(parents=True)  # as Docker does for a short-syntax bind mount
            else:
                host = self.root / "volumes" / source
                host.mkdir(parents=True, exist_ok=True)
            point = service.rootfs / target.lstrip("/")
            point.parent.mkdir(parents=True, exist_ok=True)
            if host.is_dir():
                point.mkdir(exist_ok=True)
            else:
                point.touch()
            service.mounts.append((str(host), str(point), "ro" in ",".join(options).split(",")))
        env = {k: self.native(service, "" if v is None else str(v), f".environment.{k}")
               for k, v in (spec.get("environment") or {}).items()}
        for port, option in LISTEN_OPTIONS.items():
            env.setdefault(option, str(self.ports[(service.name, port)]))
        env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
        base = {k: os.environ[k] for k in ("LANG", "LC_ALL", "TZ", "JAVA_HOME") if k in os.environ}
        service.env = {
            **base,
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(service.rootfs / "home" / "airflow"),
            "HOSTNAME": socket.gethostname(),
            "AIRFLOW_HOME": str(home),
            "TMPDIR": str(service.rootfs / "tmp"),
            **env,
            MARKER: str(service.rootfs),
        }
        Path(service.env["HOME"]).mkdir(parents=True, exist_ok=True)
        Path(service.env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        command = spec.get("command", [])
        command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        entrypoint = spec.get("entrypoint")
        if entrypoint:
            entry = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
            args = [*entry, *command]
            if entry[:1] == ["/entrypoint"]:  # the image's, in exec form
                args = [sys.executable, __file__, "entrypoint", *entry[1:], *command]
        else:
            args = [sys.executable, __file__, "entrypoint", *command]
        service.args = [self.native(service, a, ".command") for a in args]

    # -- the backing servers

    def _backing_servers(self) -> None:
        import psycopg2
        import redis

        url = urlsplit(self.services["airflow-scheduler"].env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        admin = psycopg2.connect(host=url.hostname, port=url.port, user="postgres", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (url.username,))
            if not cur.fetchone():
                cur.execute(f'CREATE ROLE "{url.username}" LOGIN PASSWORD %s', (url.password,))
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
            if not cur.fetchone():
                cur.execute(f'CREATE DATABASE "{self.database}" OWNER "{url.username}"')
        admin.close()
        host, port = NATIVE_SERVERS["redis"]
        redis.Redis(host=host, port=port, db=self.redis_db).flushdb()  # the compose Redis keeps nothing either

    def drop_database(self) -> None:
        import psycopg2
        import redis

        host, port = NATIVE_SERVERS["postgres"]
        admin = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        admin.close()
        host, port = NATIVE_SERVERS["redis"]
        redis.Redis(host=host, port=port, db=self.redis_db).flushdb()

    # -- start, health, stop

    def _order(self) -> list[str]:
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...] = ()) -> None:
            if name in done or name in NATIVE_SERVERS:
                return
            if name in path:
                raise StackError(f"depends_on cycle: {' -> '.join((*path, name))}")
            for dep in self.services[name].spec.get("depends_on", {}):
                visit(dep, (*path, name))
            done.append(name)

        for name in self.services:
            visit(name)
        return done

    def _start(self, service: Service) -> None:
        service.log = self.root / f"{service.name}.log"
        # a mount namespace of its own: the volumes are bind mounts only this service sees
        namespace = ["unshare", "--mount", "--propagation", "private", *([] if os.getuid() == 0 else ["--map-root-user"])]
        mounts = json.dumps(service.mounts)
        with open(service.log, "ab") as log:
            service.proc = subprocess.Popen(
                [*namespace, sys.executable, __file__, "mount-exec", mounts, "--", *service.args], env=service.env, cwd=service.env["AIRFLOW_HOME"], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        (self.root / f"{service.name}.pid").write_text(str(service.proc.pid))

    def healthy(self, service: Service) -> bool:
        """One probe of the service's health check, within the check's own ``timeout``."""
        test = service.spec.get("healthcheck", {}).get("test")
        if not test:
            raise StackError(f"{service.name} is waited on as service_healthy but has no healthcheck")
        kind, *rest = test
        if kind == "CMD":
            args = [self.native(service, a) for a in rest]
        elif kind == "CMD-SHELL":
            args = ["/bin/sh", "-c", self.native(service, rest[0])]  # what Docker runs CMD-SHELL with
        else:
            raise StackError(f"{service.name}: healthcheck test {kind!r} is not CMD or CMD-SHELL")
        timeout = _seconds(service.spec["healthcheck"].get("timeout", "30s"))
        try:
            done = subprocess.run(args, env=service.env, capture_output=True, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            service.last_probe = f"the health check took longer than its timeout ({timeout:.0f} s)"
            return False
        service.last_probe = f"the health check exited {done.returncode}: {(done.stdout + done.stderr)[-1500:]!r}"
        return done.returncode == 0

    def _wait(self, name: str, condition: str, timeout: float) -> None:
        service = self.services[name]
        check = service.spec.get("healthcheck") or {}
        if condition == "service_healthy" and check:
            # Docker's verdict: unhealthy after start_period and `retries` failed probes, one per
            # interval (probes here come every second, the deadline is Docker's)
            timeout = _seconds(check.get("start_period", "0s")) + int(check.get("retries", 3)) * (
                _seconds(check.get("interval", "30s")) + _seconds(check.get("timeout", "30s")))
        deadline = time.monotonic() + timeout
        while True:
            code = service.proc.poll()
            if condition == "service_completed_successfully":
                if code == 0:
                    return
                if code is not None:
                    raise StackError(f"{name} exited with {code}:\n{self.tail(name)}")
            elif code is not None:
                raise StackError(f"{name} exited with {code} before it was healthy:\n{self.tail(name)}")
            elif condition == "service_healthy" and self.healthy(service) or condition == "service_started":
                return
            if time.monotonic() > deadline:
                raise StackError(f"{name} not {condition} after {timeout:.0f} s ({service.last_probe or 'no probe'}):\n"
                                 f"{self.tail(name)}")
            time.sleep(1)

    def up(self, timeout: float = 300) -> NativeStack:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / ".lock", "w")  # noqa: SIM115 - held while the stack runs
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(f"another stack runs from {self.root}: stop it first (Ctrl-C in its terminal, or "
                             "scripts/stack.py down)") from None
        for service in self.services.values():
            self._prepare(service)
        self._backing_servers()
        try:
            for name in self._order():
                for dep, how in self.services[name].spec.get("depends_on", {}).items():
                    if dep not in NATIVE_SERVERS:
                        self._wait(dep, (how or {}).get("condition", "service_started"), timeout)
                self._start(self.services[name])
            for name, service in self.services.items():
                if service.spec.get("healthcheck") and name != "airflow-init":
                    self._wait(name, "service_healthy", timeout)
        except BaseException:
            self.down()
            raise
        return self

    def dead(self) -> dict[str, int]:
        """Long-running services whose process has ended, with their exit codes."""
        return {n: s.proc.poll() for n, s in self.services.items()
                if n != "airflow-init" and s.proc is not None and s.proc.poll() is not None}

    def down(self, grace: float = 45) -> None:
        """SIGTERM to every service's process group (a Celery warm shutdown lets a running task
        end), SIGKILL to what is left after ``grace`` seconds."""
        running = [s for s in self.services.values() if s.proc is not None and s.proc.poll() is None]
        for service in running:
            _signal_group(service.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for service in running:
            try:
                service.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(service.proc.pid, signal.SIGKILL)  # stragglers in the group (Spark, pools)
            service.proc.wait()
        for service in self.services.values():
            _stop_all(_processes_of(service), grace=15)
            (self.root / f"{service.name}.pid").unlink(missing_ok=True)

    def processes(self, name: str) -> list:
        """The live processes of a service, its own session or not."""
        return _processes_of(self.services[name])

    def tail(self, name: str, chars: int = 4000) -> str:
        log = self.root / f"{name}.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"

    @property
    def api_url(self) -> str:
        """Where the API server's published port (``ports:``) is reached here."""
        published = [str(p).rsplit(":", 1)[-1] for p in self.services["airflow-apiserver"].spec.get("ports", [])]
        if not published:
            raise StackError("airflow-apiserver publishes no port (ports:): the UI and the REST API are unreachable")
        port = int(published[0].split("/")[0])
        if ("airflow-apiserver", port) not in self.ports:
            raise StackError(f"airflow-apiserver publishes container port {port}, where nothing listens")
        return f"http://127.0.0.1:{self.ports[('airflow-apiserver', port)]}"


def project_name(project: Path, env: dict[str, str]) -> str:
    """Compose's project name: COMPOSE_PROJECT_NAME, else the project folder's name, lower
    case, of letters, digits, '_' and '-' only."""
    name = env.get("COMPOSE_PROJECT_NAME") or project.resolve().name
    return re.sub(r"[^a-z0-9_-]", "", name.lower()) or "default"


def _seconds(duration: str | float) -> float:
    """A compose duration ("1m30s", "10s", "500ms") in seconds."""
    if isinstance(duration, (int, float)):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    if not parts or "".join(a + b for a, b in parts) != duration:
        raise StackError(f"not a compose duration: {duration!r}")
    return sum(float(a) * units[b] for a, b in parts)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _processes_of(service: Service | None, root: Path | None = None) -> list:
    """Processes carrying the service's marker (or, with ``root``, any service's of that stack)."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            mark = proc.environ().get(MARKER)
            if mark and (mark == str(service.rootfs) if service else Path(mark).parent == root):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _stop_all(procs: list, grace: float) -> None:
    import psutil

    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the image's entrypoint ---------------------------------------------------------------------


def entrypoint(args: list[str]) -> int:
    """What apache/airflow's /entrypoint does before it runs a command: migrate the DB and
    create the admin user when asked (both `|| true` there, as here), then `bash ...`,
    `python ...` or `airflow <command>`. The admin password goes to `airflow users create` on
    stdin, not on its command line."""
    airflow = str(VENV_BIN / "airflow")
    password = os.environ.pop("_AIRFLOW_WWW_USER_PASSWORD", "")  # in no child's environment
    if os.environ.get("_AIRFLOW_DB_MIGRATE") or os.environ.get("_AIRFLOW_DB_UPGRADE"):
        subprocess.run([airflow, "db", "migrate"], check=False)
    if os.environ.get("_AIRFLOW_WWW_USER_CREATE"):
        if not password:
            print("ERROR! Airflow Admin password not set via _AIRFLOW_WWW_USER_PASSWORD", file=sys.stderr)
            return 1
        user = [
            "--username", os.environ.get("_AIRFLOW_WWW_USER_USERNAME", "admin"),
            "--firstname", os.environ.get("_AIRFLOW_WWW_USER_FIRSTNAME", "Airflow"),
            "--lastname", os.environ.get("_AIRFLOW_WWW_USER_LASTNAME", "Admin"),
            "--email", os.environ.get("_AIRFLOW_WWW_USER_EMAIL", "airflowadmin@example.com"),
            "--role", os.environ.get("_AIRFLOW_WWW_USER_ROLE", "Admin"),
        ]
        subprocess.run([airflow, "users", "create", *user], input=f"{password}\n{password}\n", text=True, check=False)
    if args and args[0] in ("bash", "python"):
        program = "/bin/bash" if args[0] == "bash" else sys.executable
        os.execv(program, [program, *args[1:]])
    if args and args[0] == "airflow":
        args = args[1:]
    os.execv(airflow, [airflow, *args])
    return 0


def mount_exec(mounts: list[tuple[str, str, bool]], args: list[str]) -> int:
    """Inside the service's mount namespace: bind its volumes, then become its command."""
    for host, point, read_only in mounts:
        subprocess.run(["mount", "--bind", host, point], check=True)
        if read_only:
            subprocess.run(["mount", "-o", "remount,bind,ro", point], check=True)
    os.execvpe(args[0], args, os.environ)
    return 0


# --- the command line -----------------------------------------------------------------------


def init_env(path: Path) -> None:
    """Write ``path`` from .env.example with fresh secrets, readable by the owner only."""
    if path.exists():
        raise SystemExit(f"{path} exists: edit it, or remove it to make a new one")
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        if key in SECRETS:
            line = f"{key}={SECRETS[key]()}"
        elif key == "AIRFLOW_UID":
            line = f"AIRFLOW_UID={os.getuid()}"
        lines.append(line)
    path.touch(mode=0o600)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path} (secrets generated; the UI login is admin / _AIRFLOW_WWW_USER_PASSWORD)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("init-env", "up", "down"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--env-file", type=Path, default=ROOT / ".env")
        cmd.add_argument("--compose", type=Path, default=ROOT / "docker-compose.yaml")
        cmd.add_argument("--root", type=Path, default=ROOT / "var" / "stack")
        if name == "down":
            cmd.add_argument("-v", "--volumes", action="store_true",
                             help="also drop the project's database and Redis index (docker compose down -v)")
    sub.add_parser("entrypoint").add_argument("args", nargs=argparse.REMAINDER)
    mount = sub.add_parser("mount-exec")
    mount.add_argument("mounts")
    mount.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    if opts.cmd == "entrypoint":
        return entrypoint(opts.args)
    if opts.cmd == "mount-exec":
        return mount_exec(json.loads(opts.mounts), opts.args[1:] if opts.args[:1] == ["--"] else opts.args)
    if opts.cmd == "init-env":
        init_env(opts.env_file)
        return 0
    if opts.cmd == "down":
        # by the marker, not by the pid files: a pid may have been reused since
        running = _processes_of(None, opts.root.resolve())
        _stop_all(running, grace=45)
        for pid_file in opts.root.glob("*.pid"):
            pid_file.unlink()
        print(f"stopped {len(running)} processes" if running else "no stack was running", file=sys.stderr)
        if opts.volumes:
            stack = NativeStack(opts.compose, opts.env_file, opts.root.resolve())
            stack.drop_database()
            print(f"dropped database {stack.database} and flushed Redis index {stack.redis_db}", file=sys.stderr)
        return 0
    if not opts.env_file.exists():
        raise SystemExit(f"no {opts.env_file}: run `{sys.executable} {__file__} init-env` first")
    def stop(signum, _frame):  # a closed terminal or `kill` stops the stack as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    try:
        stack = NativeStack(opts.compose, opts.env_file, opts.root.resolve()).up()
    except StackError as err:
        raise SystemExit(f"the stack did not come up: {err}")
    if "already exists in the db" in stack.tail("airflow-init"):
        print(f"note: database {stack.database} was there already, with its admin user: the password that works is "
              f"the one it was created with (`{Path(__file__).name} down --volumes` starts afresh)", file=sys.stderr)
    print(f"up: {stack.api_url} (user {stack.host_env.get('_AIRFLOW_WWW_USER_USERNAME', 'admin')}, password from "
          f"{opts.env_file}; database {stack.database}); logs in {opts.root}/*.log; Ctrl-C stops it")
    try:
        while not stack.dead():
            time.sleep(2)
        print(f"stopped: {stack.dead()}; see {opts.root}/<service>.log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stack.down()
        print("stack stopped", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
