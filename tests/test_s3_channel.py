"""The S3 pipes transport (for engines whose jobs run on clusters): the orchestrator's
S3Channel (amazon provider's S3Hook) and the job's S3Transport (boto3), against moto's S3
server, with a real job process in between."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest

from airflow_spark_portable.pipes import JobReport, S3Channel
from airflow_spark_portable.runtime.context import JobContext, RunIdentity
from airflow_spark_portable.runtime.transport import open_transport
from conftest import ROOT

JOB = """
from airflow_spark_portable.runtime import open_job
with open_job() as job:
    job.log.info("hello from %s", job.context.partition["crawl"])
    job.report_metrics(rows=42, crawl=job.context.crawl)
"""


@pytest.fixture
def bucket(aws_endpoint):
    boto3.client("s3").create_bucket(Bucket="pipes")
    return "pipes"


def _context(try_number: int = 1) -> JobContext:
    return JobContext(
        engine="emr",
        profile="small",
        run=RunIdentity(dag_id="d", task_id="t", run_id="r", try_number=try_number),
        partition={"crawl": "CC-MAIN-2024-10", "domain": "steel"},
    )


def test_a_job_reads_its_context_and_its_messages_come_back_in_order(bucket):
    channel = S3Channel(f"s3://{bucket}/spark-portable/runs/d.t.r.try1", aws_conn_id=None)
    channel.write_context(_context())
    env = {**os.environ, **channel.bootstrap_env(), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", JOB], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    report = JobReport()
    messages = channel.read_new_messages()
    for message in messages:
        report.add(message)
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    assert report.opened and report.completed and report.failure is None
    assert report.metrics == {"rows": 42, "crawl": "CC-MAIN-2024-10"}
    assert any("hello from CC-MAIN-2024-10" in m.get("text", "") for m in report.logs)
    assert channel.read_new_messages() == []  # nothing is read twice


def test_messages_are_read_incrementally_and_a_rewritten_context_starts_clean(bucket):
    channel = S3Channel(f"s3://{bucket}/runs/x/", aws_conn_id=None)
    channel.write_context(_context())
    job_side = open_transport(channel.context_uri, channel.messages_uri)
    assert job_side.read_context()["partition"] == {"crawl": "CC-MAIN-2024-10", "domain": "steel"}
    for seq in range(1, 12):  # 10 and 11 sort after 9: keys are zero-padded
        job_side.write_message({"type": "log", "seq": seq, "text": str(seq)})
        if seq in (3, 11):
            assert [m["seq"] for m in channel.read_new_messages()] == (
                list(range(1, 4)) if seq == 3 else list(range(4, 12))
            )

    channel.write_context(_context())  # the same try submitted again: old messages are gone
    assert channel.read_new_messages() == []
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="runs/x/").get("Contents", [])]
    assert keys == ["runs/x/context.json"]


def test_each_try_has_its_own_mailbox(bucket):
    first = S3Channel(f"s3://{bucket}/runs/d.t.r.try1", aws_conn_id=None)
    second = S3Channel(f"s3://{bucket}/runs/d.t.r.try2", aws_conn_id=None)
    first.write_context(_context(1))
    second.write_context(_context(2))
    open_transport(first.context_uri, first.messages_uri).write_message({"type": "log", "seq": 1, "text": "one"})
    assert second.read_new_messages() == []
    assert (
        json.loads(boto3.client("s3").get_object(Bucket=bucket, Key="runs/d.t.r.try2/context.json")["Body"].read())[
            "run"
        ]["try_number"]
        == 2
    )


def test_a_malformed_uri_is_a_clear_error():
    with pytest.raises(ValueError, match="is not an s3://bucket/key URI"):
        open_transport("s3://bucket-only", "s3://bucket-only")
