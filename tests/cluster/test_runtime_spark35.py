"""The runtime on Spark 3.5 (EMR 7.x, Databricks 14.x): what differs from Spark 4 is asserted here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .support import ROOT, spark_version
from .test_runtime import SESSION_CONF_CASES


@pytest.mark.spark
@pytest.mark.skipif(spark_version() != (3, 5), reason="Spark 3.5's error conditions (the Python 3.9 run has Spark 3.5.2)")
def test_session_conf_errors_on_spark_3_5():
    # a classic session (an existing cluster's): 3.5 names a static conf _LEGACY_ERROR_TEMP_1325 and
    # gives a bad value no error condition at all; the job's errors say the same as on Spark 4
    out = subprocess.run(
        [sys.executable, "-c", SESSION_CONF_CASES, "classic"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "SPARK_TESTING": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert result["runtime"] == "ok" and result["shuffle_partitions"] == "7" and result["static_same"] == "ok"
    assert result["bad_int"] == (
        "ValueError: Spark conf spark.sql.shuffle.partitions=abc was refused: spark.sql.shuffle.partitions should "
        "be int, but was abc; fix the value where it is set (the task's conf, or the profile's spark_conf or engine "
        "section conf)")
    assert result["bad_bool"].startswith("ValueError: Spark conf spark.sql.adaptive.enabled=maybe was refused: ")
    for case, key, condition in (("static_other", "spark.sql.warehouse.dir=/elsewhere", "_LEGACY_ERROR_TEMP_1325"),
                                 ("core", "spark.executor.memory=64g", "CANNOT_MODIFY_CONFIG")):
        assert result[case].startswith(
            f"ValueError: Spark conf {key} cannot be set per job on a shared Spark application ({condition})"
        ), result[case]
