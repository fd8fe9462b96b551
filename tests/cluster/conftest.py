"""Fixtures of the job-side tests, without Airflow (tests/conftest.py is not loaded when pytest
is given this folder: see pytest.ini here)."""

from __future__ import annotations

import os

import pytest

from jobs.common import wat

from .fixtures import aws_endpoint, spark  # noqa: F401 (fixtures)
from .support import ROOT

for _var in ("SPARK_REMOTE", "SPARK_PORTABLE_CONTEXT", "SPARK_PORTABLE_MESSAGES"):
    os.environ.pop(_var, None)
# jobs started from the tests import the checkout, as a cluster imports the code bundle (the
# main suite's venv has it installed; .cluster/venv has not: it has no Airflow to install it with)
if str(ROOT) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


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
