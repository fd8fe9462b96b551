"""The run report (airflow_spark_portable/report.py) on known inputs."""

from __future__ import annotations

import json

import pytest

from airflow_spark_portable import report
from airflow_spark_portable.costs import InstanceUsage, PriceTable, local_estimate


def _emr_task(hours: float) -> dict:
    cost = PriceTable.load().emr_estimate("us-east-1", [InstanceUsage("r5d.2xlarge", "ON_DEMAND", hours)], "test")
    return {"rows": 1, "spark_portable": {"engine": "emr", "wall_seconds": 60.0, "cost": cost}}


def test_a_run_is_priced_as_it_ran_and_all_emr_and_all_databricks():
    metrics = {
        "pair.edges[0]": _emr_task(10.0),
        "pair.edges[1]": _emr_task(10.0),
        # 8 core-hours on a laptop = 2 node-hours of the 4-vCPU reference type (m5.xlarge)
        "pair.nodes[0]": {
            "spark_portable": {"engine": "local", "wall_seconds": 7200.0, "cost": local_estimate(4, 2.0)}
        },
        "plan": ["not", "a", "spark", "task"],
    }
    result = report.build(metrics, PriceTable.load())
    assert result["tasks"] == 3
    totals = result["totals"]
    assert totals["actual"]["total"] == pytest.approx(20 * (0.576 + 0.144))  # what the EMR steps cost
    assert totals["emr"]["total"] == pytest.approx(20 * (0.576 + 0.144) + 2 * (0.192 + 0.048))
    dbx_platform = 20 * 1.8 * 0.15 + 2 * 0.69 * 0.15
    assert totals["databricks"]["platform"] == pytest.approx(dbx_platform)
    assert totals["databricks"]["total"] == pytest.approx(20 * 0.576 + 2 * 0.192 + dbx_platform)
    # the published comparison: the surcharge is ~20% of an all-EMR bill, ~32% of all-Databricks
    assert totals["emr"]["platform"] / totals["emr"]["total"] == pytest.approx(0.20, abs=0.005)
    assert totals["databricks"]["platform"] / totals["databricks"]["total"] == pytest.approx(0.32, abs=0.005)
    edges = next(r for r in result["steps"] if r["step"] == "edges")
    assert edges["engine"] == "emr" and edges["tasks"] == 2 and edges["wall_seconds"] == 120.0
    nodes = next(r for r in result["steps"] if r["step"] == "nodes")
    assert nodes["actual"]["total"] == 0 and nodes["emr"]["total"] == pytest.approx(2 * 0.24)


def test_the_report_renders_a_table_and_a_readable_chart(tmp_path):
    result = report.build({"pair.edges[0]": _emr_task(10.0)}, PriceTable.load())
    paths = report.write(result, tmp_path / "r", "common_crawl_graph manual__1")
    page = (tmp_path / "r" / "report.html").read_text()
    # three bars (this run, all EMR, all Databricks), each split into EC2 and the platform fee
    assert page.count('fill="#4e79a7"') == 4 and page.count('fill="#f28e2b"') == 4  # 3 bars + legend
    assert "this run" in page and "all EMR" in page and "all Databricks" in page
    assert "This run cost USD 7.20; all-EMR it would have cost USD 7.20, all-Databricks USD 8.46." in page
    table = (tmp_path / "r" / "report.md").read_text()
    assert "| edges | emr | 1 | 60.0 | 7.20 | 7.20 | 8.46 |" in table
    assert json.loads((tmp_path / "r" / "report.json").read_text())["tasks"] == 1
    assert set(paths) == {"json", "markdown", "html"}


def test_the_report_lists_every_task_state_and_names_what_did_not_succeed(tmp_path):
    states = {"plan": "success", "pair.edges[0]": "success", "pair.edges[1]": "failed",
              "pair.graph[1]": "upstream_failed", "pair.graph[0]": "skipped"}
    problems = report.not_succeeded(states, {"pair.edges[1]": "CC-MAIN-2024-10 / steel"})
    assert problems == ["pair.edges[1] (CC-MAIN-2024-10 / steel): failed", "pair.graph[0]: skipped",
                        "pair.graph[1]: upstream_failed"]
    assert report.not_succeeded(states, skipped_ok=True) == ["pair.edges[1]: failed", "pair.graph[1]: upstream_failed"]
    result = report.build({"pair.edges[0]": _emr_task(1.0)}, PriceTable.load(), task_states=states, problems=problems)
    assert result["tasks"] == 1 and result["problems"] == problems
    report.write(result, tmp_path, "run")
    markdown = (tmp_path / "report.md").read_text()
    assert "**3 task(s) did not succeed** (not priced):" in markdown
    assert "- pair.edges[1] (CC-MAIN-2024-10 / steel): failed" in markdown and "pair.edges[1] failed" in markdown
    page = (tmp_path / "report.html").read_text()
    assert "3 task(s) did not succeed" in page and "<td>pair.graph[1]</td><td>upstream_failed</td>" in page
