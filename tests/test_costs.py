"""The price model on known inputs (airflow_spark_portable/costs.py, prices/aws.yaml)."""

from __future__ import annotations

import pytest

from airflow_spark_portable.costs import InstanceUsage, PriceTable
from airflow_spark_portable.exceptions import SparkPortableConfigError

TABLE = PriceTable(
    {
        "version": 7,
        "as_of": "2025-01",
        "spot_factor": 0.5,
        "regions": {"us-east-1": {"m5.xlarge": {"ec2": 0.2, "emr": 0.05}, "r5.2xlarge": {"ec2": 0.5, "emr": 0.125}}},
    },
    "/tmp/test-prices.yaml",
)


def test_on_demand_and_spot_hours_are_priced_and_the_emr_fee_is_not_discounted():
    usage = [InstanceUsage("m5.xlarge", "ON_DEMAND", 10.0), InstanceUsage("r5.2xlarge", "SPOT", 4.0)]
    cost = TABLE.emr_estimate("us-east-1", usage, "test")
    assert cost["infrastructure"] == pytest.approx(10 * 0.2 + 4 * 0.5 * 0.5)  # 3.0
    assert cost["platform"] == pytest.approx(10 * 0.05 + 4 * 0.125)  # 1.0
    assert cost["total"] == pytest.approx(4.0) and cost["platform_share"] == pytest.approx(0.25)
    assert cost["instance_hours"] == 14.0 and cost["unpriced"] == {}
    assert cost["price_table"] == "test-prices.yaml v7 (2025-01)" and cost["currency"] == "USD"


def test_types_and_regions_the_table_lacks_are_listed_not_guessed():
    usage = [InstanceUsage("m5.xlarge", "ON_DEMAND", 1.0), InstanceUsage("x2.huge", "ON_DEMAND", 2.0)]
    cost = TABLE.emr_estimate("us-east-1", usage, "test")
    assert cost["total"] == pytest.approx(0.25) and cost["unpriced"] == {"x2.huge": 2.0}
    elsewhere = TABLE.emr_estimate("ap-south-1", usage, "test")
    assert elsewhere["total"] == 0 and elsewhere["unpriced"] == {"m5.xlarge": 1.0, "x2.huge": 2.0}


def test_the_bundled_table_prices_the_published_emr_surcharge_share():
    table = PriceTable.load()
    ec2, emr = table.instance_price("us-east-1", "m5.xlarge")
    assert (ec2, emr) == (0.192, 0.048)
    # EMR's fee is a quarter of the on-demand price for these types: 20% of an all-on-demand bill,
    # the share the seeds' published EMR run shows (Databricks' is ~32%).
    cost = table.emr_estimate("us-east-1", [InstanceUsage("r5.2xlarge", "ON_DEMAND", 100.0)], "test")
    assert cost["platform_share"] == pytest.approx(0.2)
    assert table.instance_price("us-west-2", "r5.2xlarge") == table.instance_price("us-east-1", "r5.2xlarge")


def test_a_broken_table_names_the_file(tmp_path, monkeypatch):
    bad = tmp_path / "prices.yaml"
    bad.write_text("regions: [")
    monkeypatch.setenv("AIRFLOW__SPARK_PORTABLE__PRICE_TABLE", str(bad))
    with pytest.raises(SparkPortableConfigError, match=f"price table {bad}"):
        PriceTable.load()


def test_one_workload_priced_on_emr_and_on_databricks_matches_the_published_shares():
    # the same 10 node-hours of r5d.2xlarge, on demand: EMR's fee is ~20% of the bill,
    # Databricks' DBUs (jobs compute) ~32%, the shares the seeds' published comparison reports
    table = PriceTable.load()
    usage = [InstanceUsage("r5d.2xlarge", "ON_DEMAND", 10.0)]
    emr = table.emr_estimate("us-east-1", usage, "test")
    databricks = table.databricks_estimate("us-east-1", usage, "test", "jobs")
    assert emr["infrastructure"] == databricks["infrastructure"] == pytest.approx(5.76)
    assert emr["platform"] == pytest.approx(1.44) and databricks["platform"] == pytest.approx(10 * 1.8 * 0.15)
    assert emr["platform_share"] == pytest.approx(0.20, abs=0.005)
    assert databricks["platform_share"] == pytest.approx(0.32, abs=0.005)
    with pytest.raises(SparkPortableConfigError, match="no dbu_price for 'serverless'"):
        table.databricks_estimate("us-east-1", usage, "test", "serverless")
