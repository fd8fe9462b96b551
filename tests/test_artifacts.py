"""The code bundle remote engines ship: reproducible, named by content, runtime without Airflow."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import zipfile

import boto3
import pytest
from conftest import ROOT
from harness.emr_cluster import patch_moto, set_s3_latency

from airflow_spark_portable.artifacts import ArtifactConflict, build_code_bundle
from airflow_spark_portable.engines.emr import EmrEngine


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


# -- racing first uploads: real threads against moto's S3, through the EMR engine's S3Hook --


@pytest.fixture
def bucket(aws_endpoint):
    patch_moto()  # moto's If-None-Match check made atomic, as S3's is
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="asp-artifacts")
    return "asp-artifacts"


def test_concurrent_first_uploads_of_one_artifact_all_succeed(bucket):
    """Mapped tasks that start together upload the same new code bundle at once: every one
    must succeed ("already there, same bytes" is success), none may overwrite another's."""
    s3 = boto3.client("s3", region_name="us-east-1")
    threads = 8
    set_s3_latency(0.05)  # S3's round trip, not moto's: checks and writes interleave as on AWS
    try:
        _race(bucket, s3, threads)
    finally:
        set_s3_latency(0.0)


def _race(bucket: str, s3, threads: int) -> None:
    for round_ in range(4):
        data = f"round {round_}: ".encode() + os.urandom(64 * 1024)
        barrier = threading.Barrier(threads)
        results: list = [None] * threads

        def upload(i: int, barrier=barrier, results=results, data=data) -> None:
            engine = EmrEngine({"aws_conn_id": None}, logging.getLogger(f"test.upload.{i}"))
            barrier.wait()
            time.sleep(random.random() * 0.2)  # stagger: checks and puts interleave every way
            try:
                results[i] = engine.put_artifact(f"s3://{bucket}/root", "code.zip", data)
            except Exception as exc:  # noqa: BLE001 - the assertion below shows it
                results[i] = exc

        workers = [threading.Thread(target=upload, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert errors == [], errors
        (path,) = set(results)
        key = path.removeprefix(f"s3://{bucket}/")
        assert key == f"root/artifacts/{hashlib.sha256(data).hexdigest()[:20]}/code.zip"
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_an_artifact_path_holding_other_bytes_is_an_error_not_a_success(bucket):
    s3 = boto3.client("s3", region_name="us-east-1")
    data = b"the real bundle" * 1000
    key = f"root/artifacts/{hashlib.sha256(data).hexdigest()[:20]}/code.zip"
    s3.put_object(Bucket=bucket, Key=key, Body=data[:100])  # a partial (or foreign) object
    engine = EmrEngine({"aws_conn_id": None})
    with pytest.raises(ArtifactConflict, match="holds 100 bytes .* not the 15000-byte artifact .*Delete that object"):
        engine.put_artifact(f"s3://{bucket}/root", "code.zip", data)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data[:100]  # never overwritten

    s3.delete_object(Bucket=bucket, Key=key)  # once deleted, the next run uploads it again
    assert engine.put_artifact(f"s3://{bucket}/root", "code.zip", data) == f"s3://{bucket}/{key}"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data
