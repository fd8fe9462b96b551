"""engines/databricks_rest.py: the only use of the databricks provider's private
``_do_api_call``, for the calls its hook has no public method for. Checked against the fake
workspace on the newest provider (this venv) and on the floor setup.cfg declares, whose hook is
loaded in place of the installed one in a subprocess."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from harness.databricks_api import FakeDatabricks

CHECKS = r"""
import json, sys
floor = sys.argv[1]
if floor:  # the floor provider's package in place of the installed one
    import airflow, airflow.providers as providers
    providers.__path__ = [floor + "/airflow/providers", *providers.__path__]
    for name in [m for m in sys.modules if m.startswith("airflow.providers.databricks")]:
        del sys.modules[name]
import airflow.providers.databricks as provider
from airflow.providers.databricks.hooks.databricks import DatabricksHook
from airflow_spark_portable.engines import databricks_rest as rest

hook = DatabricksHook("dbx", retry_limit=2, retry_delay=0.1)
out = {"version": provider.__version__, "file": provider.__file__, "me": rest.current_identity(hook)}
def code(call):
    try:
        call()
    except rest.DatabricksError as exc:
        return [exc.code, exc.status]
    except Exception as exc:
        found = rest.error_of(exc, "x")
        return ["public method", found.code, found.status] if found else ["other", repr(exc)]
    return None
home = f"/Users/{out['me']}"
body = {"path": home + "/a.txt", "content": "aGk=", "format": "RAW", "overwrite": False}
out["missing"] = code(lambda: rest.call(hook, "GET", "2.0/workspace/get-status", {"path": home + "/nope"}))
out["first_import"] = code(lambda: rest.call(hook, "POST", "2.0/workspace/import", body))
out["second_import"] = code(lambda: rest.call(hook, "POST", "2.0/workspace/import", body))
out["denied"] = code(lambda: rest.call(hook, "GET", "2.0/workspace/list", {"path": "/Users/other@example.com"}))
out["active_runs"] = rest.list_active_submit_runs(hook)
out["get_run_of_nothing"] = code(lambda: hook.get_run(4242))
print("RESULT " + json.dumps(out))
"""


def _floor_version() -> str:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    (match,) = re.findall(r"apache-airflow-providers-databricks>=([\w.]+)", config["options.extras_require"]["databricks"])
    return match


@pytest.fixture(scope="module")
def floor_provider(tmp_path_factory) -> Path:
    """The floor release of the databricks provider, unpacked (from the package index)."""
    version = _floor_version()
    folder = tmp_path_factory.mktemp("provider-floor")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder),
         f"apache-airflow-providers-databricks=={version}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = folder.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder / "unpacked")
    return folder / "unpacked"


@pytest.fixture
def fake(tmp_path):
    fake = FakeDatabricks(tmp_path / "databricks").start()
    fake.add_identity("other@example.com", "dapi-other")
    yield fake
    fake.stop()


def _checks(fake: FakeDatabricks, floor: Path | None) -> dict:
    conn = {"conn_type": "databricks", "host": fake.host, "port": fake.port, "schema": "http", "password": fake.token}
    env = {**os.environ, "AIRFLOW_CONN_DBX": json.dumps(conn)}
    done = subprocess.run(
        [sys.executable, "-c", CHECKS, str(floor or "")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


@pytest.mark.parametrize("provider", ["newest", "floor"])
def test_the_wrapper_gives_error_codes_on_the_floor_and_the_newest_provider(fake, provider, request):
    floor = request.getfixturevalue("floor_provider") if provider == "floor" else None
    out = _checks(fake, floor)
    if floor:
        assert out["version"] == _floor_version() and out["file"].startswith(str(floor))
    else:
        assert out["file"].startswith(sys.prefix)
    assert out["me"] == "runner@example.com"
    assert out["missing"] == ["RESOURCE_DOES_NOT_EXIST", 404]
    assert out["first_import"] is None
    assert out["second_import"][0] == "RESOURCE_ALREADY_EXISTS"
    assert out["denied"] == ["PERMISSION_DENIED", 403]
    assert out["active_runs"] == []
    assert out["get_run_of_nothing"][:2] == ["public method", "INVALID_PARAMETER_VALUE"]
