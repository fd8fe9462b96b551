"""The fixtures both suites share, without Airflow: tests/cluster/conftest.py (the Python 3.9
run) and tests/conftest.py (the main suite) import them from here."""

from __future__ import annotations

import os
import sys
import urllib.request

import pytest

from .support import ROOT


@pytest.fixture(scope="session")
def spark():
    """One classic local SparkSession for the tests that run job classes in-process."""
    # workers import the checkout's jobs package, and this venv's packages
    if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture
def aws_endpoint(monkeypatch):
    """moto's server on a free local port; boto3 (Airflow's AWS hooks too, and jobs started
    from the test) reach it through AWS_ENDPOINT_URL, with throwaway credentials."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto keeps its state in the process, across servers: every test starts empty
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    yield endpoint
    server.stop()
