"""The code bundle remote engines ship: reproducible, named by content, runtime without Airflow."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import zipfile

from airflow_spark_portable.artifacts import build_code_bundle
from conftest import ROOT


def test_bundle_holds_the_jobs_and_the_runtime_but_not_the_airflow_side():
    bundle = build_code_bundle(ROOT)
    names = set(zipfile.ZipFile(io.BytesIO(bundle.data)).namelist())
    assert names == set(bundle.files)
    assert {"jobs/__init__.py", "jobs/edges.py", "jobs/common/wat.py", "airflow_spark_portable/__init__.py"} <= names
    assert "airflow_spark_portable/runtime/job.py" in names
    assert not any(n.startswith(("airflow_spark_portable/operators", "airflow_spark_portable/engines")) for n in names)
    assert not any(n.startswith(("tests/", "dags/", "scripts/", "benchmarks/")) for n in names)  # not packages


def test_bundle_is_reproducible_and_named_by_its_content(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "jobs", project / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    first, again = build_code_bundle(project), build_code_bundle(project)
    assert first.data == again.data and first.sha256 == again.sha256
    (project / "jobs" / "common" / "urls.py").write_text("# edited\n", encoding="utf-8")
    edited = build_code_bundle(project)
    assert edited.sha256 != first.sha256


def test_runtime_imports_from_the_bundle_without_airflow(tmp_path):
    bundle = tmp_path / "code.zip"
    bundle.write_bytes(build_code_bundle(ROOT).data)
    # -I: no site-packages, so Airflow (and everything else installed) is out of reach
    code = (
        f"import sys; sys.path.insert(0, {str(bundle)!r})\n"
        "import airflow_spark_portable.runtime as r, airflow_spark_portable as p\n"
        "assert 'airflow' not in sys.modules\n"
        "print(p.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(bundle))
