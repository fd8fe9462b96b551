"""Deployment settings: the ``[spark_portable]`` section of the Airflow configuration.

Every option can come from ``airflow.cfg`` or ``AIRFLOW__SPARK_PORTABLE__<OPTION>``. The
options and their defaults are declared in ``get_provider_info()["config"]`` so that
``airflow config list`` documents them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SECTION = "spark_portable"

DEFAULTS: dict[str, str] = {
    "project_root": "",
    "profiles_file": "",
    "default_profile": "small",
    "work_dir": "",
    "local_max_parallel": "",
    "local_mode": "connect",
    "local_connect_idle_timeout": "600",
    "price_table": "",
}

LOCAL_MODES = ("connect", "submit")


def airflow_conf():
    """Airflow's configuration object (task SDK's on 3.1+, core's on 3.0)."""
    try:
        from airflow.sdk.configuration import conf  # Airflow >= 3.1
    except ImportError:  # Airflow 3.0
        from airflow.configuration import conf
    return conf


def get(option: str) -> str:
    value = airflow_conf().get(SECTION, option, fallback=None)
    return DEFAULTS[option] if value is None else str(value).strip()


def project_root() -> Path | None:
    value = get("project_root")
    return Path(value).expanduser() if value else None


def profiles_file() -> Path | None:
    value = get("profiles_file")
    return Path(value).expanduser() if value else None


def price_table() -> Path | None:
    value = get("price_table")
    return Path(value).expanduser() if value else None


def default_profile() -> str:
    return get("default_profile")


def work_dir() -> Path:
    """Where the local engine keeps each task try's context and messages."""
    value = get("work_dir")
    return Path(value).expanduser() if value else Path(tempfile.gettempdir()) / "airflow-spark-portable"


def local_max_parallel() -> int:
    value = get("local_max_parallel")
    if not value:
        return os.cpu_count() or 1
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(
            f"[{SECTION}] local_max_parallel = {value!r} must be a whole number >= 1 "
            f"(AIRFLOW__SPARK_PORTABLE__LOCAL_MAX_PARALLEL); leave it empty for one per CPU core"
        )
    return number


def local_mode() -> str:
    value = get("local_mode").lower()
    if value not in LOCAL_MODES:
        raise ValueError(
            f"[{SECTION}] local_mode = {value!r} must be one of {', '.join(LOCAL_MODES)} "
            "(AIRFLOW__SPARK_PORTABLE__LOCAL_MODE)"
        )
    return value


def local_connect_idle_timeout() -> float:
    value = get("local_connect_idle_timeout")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise ValueError(
            f"[{SECTION}] local_connect_idle_timeout = {value!r} must be a number of seconds >= 0 "
            "(AIRFLOW__SPARK_PORTABLE__LOCAL_CONNECT_IDLE_TIMEOUT)"
        )
    return seconds
