"""Fixtures of the job-side tests, without Airflow (tests/conftest.py is not loaded when pytest
is given this folder: see pytest.ini here)."""

from __future__ import annotations

import os
import sys
import urllib.request

import pytest

from jobs.common import wat

from .support import ROOT

for _var in ("SPARK_REMOTE", "SPARK_PORTABLE_CONTEXT", "SPARK_PORTABLE_MESSAGES"):
    os.environ.pop(_var, None)
# jobs started from the tests import the checkout, as a cluster imports the code bundle (the
# main suite's venv has it installed; .cluster/venv has not: it has no Airflow to install it with)
if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def spark():
    """One classic local SparkSession for the tests that run job classes in-process."""
    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers need this venv's packages
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
    """moto's server on a free local port; boto3 (and jobs started from the test) reach it
    through AWS_ENDPOINT_URL, with throwaway credentials."""
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


# The WAT readers this Python has: FastWARC 2 (3.10+) and the pure-Python one (every Python;
# the only one on 3.9). Every in-process WAT test runs with each, so both give the same
# records, counters and CorruptInputError (code and byte) for the same bytes.
READERS = {"fastwarc": wat._fastwarc_records, "python": wat._python_records} if wat.FASTWARC else {
    "python": wat._python_records}
_READER_MODULES = {"test_wat", "test_inputs", "test_input_integrity", "test_wat_readers"}


def pytest_generate_tests(metafunc):
    module = metafunc.module.__name__.rpartition(".")[2]
    if (module in _READER_MODULES and "wat_reader" in metafunc.fixturenames and len(READERS) > 1
            and metafunc.definition.get_closest_marker("spark") is None):  # Spark workers use the default
        metafunc.parametrize("wat_reader", list(READERS), indirect=True)


@pytest.fixture(autouse=True)
def wat_reader(request, monkeypatch):
    """The WAT reader the test runs with (parametrized above where there is a choice)."""
    name = getattr(request, "param", None)
    if name is not None:
        monkeypatch.setattr(wat, "_records", READERS[name])
    return name or ("fastwarc" if wat._records is wat._fastwarc_records else "python")
