"""Cost estimates: measured instance-hours priced from a versioned table in the repo.

The table (``prices/aws.yaml``, or the file ``[spark_portable] price_table`` names) holds USD
per instance-hour by region and type: the EC2 price (infrastructure) and each platform's
surcharge on top (the EMR fee; Databricks' DBUs per hour times the price of a DBU). Both
platforms are priced from the same hours and the same EC2 prices, so their estimates compare.
An estimate says which table priced it and lists any instance type the table lacks as
unpriced rather than guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from airflow_spark_portable.exceptions import SparkPortableConfigError

BUNDLED_TABLE = Path(__file__).parent / "prices" / "aws.yaml"


@dataclass(frozen=True)
class InstanceUsage:
    instance_type: str
    market: str  # ON_DEMAND | SPOT
    hours: float


class PriceTable:
    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        if not isinstance(data, Mapping) or not isinstance(data.get("regions"), Mapping):
            raise SparkPortableConfigError(f"price table {source} must be a mapping with a 'regions:' mapping")
        self.source = source
        self.label = f"{Path(source).name} v{data.get('version', '?')} ({data.get('as_of', 'undated')})"
        self.currency = str(data.get("currency", "USD"))
        self.spot_factor = float(data.get("spot_factor", 1.0))
        self.dbu_price: Mapping[str, float] = data.get("dbu_price") or {}
        self.regions: Mapping[str, Mapping[str, Mapping[str, float]]] = data["regions"]

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        from airflow_spark_portable import settings

        return _load(str(path or settings.price_table() or BUNDLED_TABLE))

    def instance_price(self, region: str, instance_type: str) -> tuple[float, float] | None:
        """(EC2, EMR) USD per on-demand hour, or None when the table lacks it."""
        entry = (self.regions.get(region) or {}).get(instance_type)
        if not entry:
            return None
        return float(entry.get("ec2", 0.0)), float(entry.get("emr", 0.0))

    def emr_estimate(self, region: str, usage: Iterable[InstanceUsage], basis: str) -> dict[str, Any]:
        return self._estimate(region, usage, basis, lambda entry: float(entry.get("emr", 0.0)))

    def databricks_estimate(
        self, region: str, usage: Iterable[InstanceUsage], basis: str, compute: str = "jobs"
    ) -> dict[str, Any]:
        """EC2 as for EMR, plus DBUs per node-hour x the DBU price of ``compute`` (jobs, all_purpose)."""
        if compute not in self.dbu_price:
            raise SparkPortableConfigError(f"price table {self.source} has no dbu_price for {compute!r} compute")
        per_dbu = float(self.dbu_price[compute])
        return self._estimate(region, usage, basis, lambda entry: float(entry["dbu"]) * per_dbu, needs="dbu")

    def _estimate(self, region, usage, basis, surcharge, needs: str = "ec2") -> dict[str, Any]:
        infrastructure = platform = hours = 0.0
        unpriced: dict[str, float] = {}
        usage = list(usage)
        for item in usage:
            hours += item.hours
            entry = (self.regions.get(region) or {}).get(item.instance_type)
            if not entry or needs not in entry:
                unpriced[item.instance_type] = round(unpriced.get(item.instance_type, 0.0) + item.hours, 4)
                continue
            ec2 = float(entry.get("ec2", 0.0))
            infrastructure += item.hours * ec2 * (self.spot_factor if item.market == "SPOT" else 1.0)
            platform += item.hours * surcharge(entry)
        total = infrastructure + platform
        return {
            "currency": self.currency,
            "infrastructure": round(infrastructure, 6),
            "platform": round(platform, 6),
            "total": round(total, 6),
            "platform_share": round(platform / total, 4) if total else 0.0,
            "instance_hours": round(hours, 4),
            "region": region,
            "basis": basis,
            "price_table": self.label,
            "unpriced": unpriced,
            # the compute it measured, by type and market: what a report re-prices elsewhere
            "usage": _usage_summary(usage),
        }


def _usage_summary(usage: list[InstanceUsage]) -> list[dict[str, Any]]:
    hours: dict[tuple[str, str], float] = {}
    count: dict[tuple[str, str], int] = {}
    for item in usage:
        key = (item.instance_type, item.market)
        hours[key] = hours.get(key, 0.0) + item.hours
        count[key] = count.get(key, 0) + 1
    return [
        {"instance_type": t, "market": m, "instances": count[(t, m)], "hours": round(h, 6)}
        for (t, m), h in sorted(hours.items())
    ]


# A local run is priced elsewhere as node-hours of this type, one per this many core-hours.
REFERENCE_NODE = ("m5.xlarge", 4)


def local_estimate(cores: int, hours: float) -> dict[str, Any]:
    """A local run: zero cost, and the work it did, for pricing the same run elsewhere."""
    node, vcpus = REFERENCE_NODE
    return {
        "currency": "USD",
        "infrastructure": 0.0,
        "platform": 0.0,
        "total": 0.0,
        "platform_share": 0.0,
        "instance_hours": 0.0,
        "region": "local",
        "basis": f"local: not billed ({cores} cores for {hours * 3600:.0f} s)",
        "price_table": "none",
        "unpriced": {},
        "usage": [],
        "work": {
            "cores": cores,
            "core_hours": round(cores * hours, 6),
            "reference_node": node,
            "reference_node_hours": round(cores * hours / vcpus, 6),
        },
    }


def usage_for_pricing(cost: Mapping[str, Any]) -> list[InstanceUsage]:
    """The compute a run used (or, for a local run, its work as reference node-hours)."""
    usage = [InstanceUsage(u["instance_type"], u["market"], float(u["hours"])) for u in cost.get("usage", [])]
    work = cost.get("work")
    if not usage and work:
        usage = [InstanceUsage(work["reference_node"], "ON_DEMAND", float(work["reference_node_hours"]))]
    return usage


@lru_cache(maxsize=4)
def _load(path: str) -> PriceTable:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SparkPortableConfigError(
            f"price table {path}: {exc}. Fix the file or unset [spark_portable] price_table to use the bundled one"
        ) from None
    return PriceTable(data, path)
