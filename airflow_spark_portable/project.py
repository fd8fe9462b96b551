"""Where a task finds its job file and the profiles file.

The *project root* is the folder that holds ``profiles.yaml`` and the ``jobs/`` package
(this repository's top level; in MWAA, wherever the bundle is synced). It is found by
walking up from the DAG file, or set with ``[spark_portable] project_root``.
"""

from __future__ import annotations

from pathlib import Path

from airflow_spark_portable import settings
from airflow_spark_portable.exceptions import SparkPortableConfigError

PROFILES_FILE_NAME = "profiles.yaml"
_SEARCH_LEVELS = 4  # the DAG file's folder and three above it


def find_project_root(dag_file: str | None) -> Path | None:
    configured = settings.project_root()
    if configured is not None:
        if not configured.is_dir():
            raise SparkPortableConfigError(
                f"[spark_portable] project_root = {configured} is not a folder; fix "
                "AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT or unset it to search above the DAG file"
            )
        return configured
    if not dag_file:
        return None
    start = Path(dag_file).resolve().parent
    for folder in [start, *start.parents][:_SEARCH_LEVELS]:
        if (folder / PROFILES_FILE_NAME).is_file():
            return folder
    return None


def _no_root(what: str, dag_file: str | None) -> SparkPortableConfigError:
    return SparkPortableConfigError(
        f"cannot find {what}: no {PROFILES_FILE_NAME} in the DAG file's folder or the "
        f"{_SEARCH_LEVELS - 1} above it ({dag_file or 'DAG file unknown'}). Set [spark_portable] "
        "project_root (AIRFLOW__SPARK_PORTABLE__PROJECT_ROOT) to the folder holding profiles.yaml and jobs/"
    )


def profiles_path(root: Path | None, dag_file: str | None) -> Path:
    configured = settings.profiles_file()
    if configured is not None:
        return configured
    if root is None:
        raise _no_root("the profiles file", dag_file)
    return root / PROFILES_FILE_NAME


def resolve_application(application: object, root: Path | None, dag_file: str | None) -> Path:
    if not isinstance(application, str) or not application.strip().endswith(".py"):
        raise SparkPortableConfigError(
            f"application={application!r} must be the path of a Python job file such as 'jobs/nodes.py'"
        )
    path = Path(application.strip()).expanduser()
    if not path.is_absolute():
        if root is None:
            raise _no_root(f"application {application!r} (a relative path)", dag_file)
        path = root / path
    if not path.is_file():
        raise SparkPortableConfigError(
            f"application={application!r}: no such file {path}. Paths are relative to the project "
            f"root ({root or 'not found'}); check the name or deploy jobs/ next to profiles.yaml"
        )
    return path.resolve()
