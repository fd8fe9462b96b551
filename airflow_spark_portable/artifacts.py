"""What a cluster needs to run a job file: one zip of Python code, named by its content.

Remote engines (EMR, Databricks) ship the job's project packages (``jobs/`` with
``jobs/common``) and the job runtime (``airflow_spark_portable/runtime``, without the Airflow
side of this package) as one zip that Spark puts on the Python path (``--py-files``). The zip
is byte-for-byte reproducible (sorted entries, fixed timestamps), so its SHA-256 names it:
an unchanged project uploads nothing, and two runs never write to the same mutable key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import airflow_spark_portable

_FIXED_TIME = (2020, 1, 1, 0, 0, 0)
# The runtime and the import-free package root: what a job imports from us on a cluster.
_RUNTIME_FILES = ("__init__.py", "runtime")


@dataclass(frozen=True)
class CodeBundle:
    data: bytes
    sha256: str
    files: tuple[str, ...]


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts and not p.name.startswith("."))


def project_packages(code_root: Path) -> list[Path]:
    """Top-level packages of the project (folders with ``__init__.py``), except our own."""
    return sorted(
        p
        for p in code_root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and (p / "__init__.py").is_file()
        and p.name != "airflow_spark_portable"
    )


def _code_entries(code_root: Path) -> dict[str, bytes]:
    """Archive path -> bytes: the project's packages plus the job runtime."""
    entries: dict[str, bytes] = {}
    for package in project_packages(code_root):
        for path in _python_files(package):
            entries[path.relative_to(code_root).as_posix()] = path.read_bytes()
    ours = Path(airflow_spark_portable.__file__).parent
    for item in _RUNTIME_FILES:
        target = ours / item
        for path in [target] if target.is_file() else _python_files(target):
            entries[f"airflow_spark_portable/{path.relative_to(ours).as_posix()}"] = path.read_bytes()
    return entries


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[name])
    return buffer.getvalue()


def build_code_bundle(code_root: Path) -> CodeBundle:
    """The zip for ``--py-files``: the project's packages plus the job runtime."""
    entries = _code_entries(code_root)
    data = _zip(entries)
    return CodeBundle(data=data, sha256=hashlib.sha256(data).hexdigest(), files=tuple(sorted(entries)))


class ArtifactExists(Exception):
    """Raised by a platform's ``put`` when the path was taken between the check and the write
    (another run's first upload of the same artifact won the race)."""


class ArtifactConflict(RuntimeError):
    """The content-addressed path holds other bytes than its name promises."""


_VERIFY_TRIES = 5


def put_once(root: str, name: str, data: bytes, exists, put, log, read=None) -> str:
    """Store ``data`` at ``{root}/artifacts/<sha256>/<name>`` through a platform's ``exists``
    and ``put``: named by content, so it is uploaded once and never overwritten, and concurrent
    runs cannot race on a mutable path. Returns the path.

    Two runs may upload the same new artifact at once: ``put`` must then write only if the path
    is free (S3 ``If-None-Match: *``) and raise ``ArtifactExists`` if it was taken; that is
    success when the path holds these very bytes. With ``read`` (path -> bytes, or None while
    nothing is there) an artifact found in place is checked to be these bytes: a partial or
    foreign object at the path is an error (``ArtifactConflict``), never a silent success."""
    digest = hashlib.sha256(data).hexdigest()
    path = f"{root}/artifacts/{digest[:20]}/{name}"
    if exists(path):
        _verify(path, data, digest, read)
        log.info("Artifact unchanged, not uploaded: %s", path)
        return path
    for attempt in range(_VERIFY_TRIES):
        try:
            put(path, data)
        except ArtifactExists:
            if _verify(path, data, digest, read, missing_ok=attempt + 1 < _VERIFY_TRIES):
                log.info("Artifact uploaded by a concurrent run, same content: %s", path)
                return path
            time.sleep(0.2 * (attempt + 1))  # the other upload is still under way: try again
            continue
        log.info("Uploaded %s (%d bytes)", path, len(data))
        return path
    raise ArtifactConflict(f"{path}: could not be written nor read back after {_VERIFY_TRIES} tries")


def _verify(path: str, data: bytes, digest: str, read, missing_ok: bool = False) -> bool:
    """True if ``path`` holds ``data`` (or cannot be read: no ``read``); False if it is not there
    (yet) and ``missing_ok``; raises ``ArtifactConflict`` for other bytes."""
    if read is None:
        return True
    found = read(path)
    if found is None:
        if missing_ok:
            return False
        raise ArtifactConflict(f"{path}: the artifact vanished while it was being uploaded; run the task again")
    if found != data:
        raise ArtifactConflict(
            f"{path} holds {len(found)} bytes (sha256 {hashlib.sha256(found).hexdigest()[:20]}...), not the "
            f"{len(data)}-byte artifact (sha256 {digest[:20]}...) its content-addressed name promises: a partial "
            "or foreign upload. Delete that object; the next run uploads the artifact again"
        )
    return True


WHEEL_DIST = "spark_portable_code"


def build_code_wheel(code_root: Path) -> tuple[str, bytes]:
    """(file name, bytes) of the same code as a pure-Python wheel, for platforms that install
    libraries rather than take ``--py-files`` (Databricks task libraries, serverless
    environments). Its version carries the content hash, so changed code is a new wheel."""
    entries = _code_entries(code_root)
    digest = hashlib.sha256(_zip(entries)).hexdigest()[:16]
    version = f"0+{digest}"
    info = f"{WHEEL_DIST}-{version}.dist-info"
    entries[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {WHEEL_DIST}\nVersion: {version}\n".encode()
    entries[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: airflow-spark-portable\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in sorted(entries.items())
    ]
    entries[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    return f"{WHEEL_DIST}-{version}-py3-none-any.whl", _zip(entries)
