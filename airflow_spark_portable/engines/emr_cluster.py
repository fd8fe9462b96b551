"""Transient EMR clusters: the profile's ``emr.cluster`` section as a RunJobFlow request.

One cluster per task try, named after the try (``dag.task.mapN.run.tryN``) and tagged with
what cost attribution needs; it runs the task's one step and terminates itself when the step
ends, whatever its outcome (``KeepJobFlowAliveWhenNoSteps=False``). Profile shape::

    emr:
      s3_root: s3://bucket/spark-portable
      cluster:
        release_label: emr-7.5.0
        log_uri: s3://bucket/emr-logs/       # default: {s3_root}/logs/
        subnet_ids: [subnet-a, subnet-b]     # fleets pick the cheapest zone among them
        instance_fleets:                     # or instance_groups (below)
          master: {instance_types: [m5.xlarge, m5a.xlarge], on_demand: 1}
          core:   {instance_types: [r5.2xlarge, r5a.2xlarge], on_demand: 2}
          task:   {instance_types: [r5.2xlarge, r5a.2xlarge, r5d.2xlarge], spot: 8}
        # instance_groups:
        #   master: {instance_type: m5.xlarge}
        #   core:   {instance_type: m5.2xlarge, count: 2}
        #   task:   {instance_type: m5.2xlarge, count: 4, market: spot}
        python_requirements: jobs/requirements.txt   # pip-installed on every node at bootstrap,
                                             # with boto3 (always: the job side needs it)
        bootstrap_actions: [{name: ..., path: s3://..., args: [...]}]
        configurations: [...]                # EMR Configurations, as in the API
        tags: {team: research}
        run_job_flow: {EbsRootVolumeSize: 32} # any other RunJobFlow field, as in the API

Spot capacity in a fleet falls back to on-demand when spot is not granted within
``spot_timeout_minutes`` (``spot_fallback: on_demand``, the default; ``terminate`` fails the
cluster instead). Instance groups cannot fall back; use fleets for spot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_spark_portable.engines.base import safe_tags
from airflow_spark_portable.exceptions import SparkPortableConfigError

CLUSTER_KEYS = {
    "release_label",
    "log_uri",
    "job_flow_role",
    "service_role",
    "subnet_ids",
    "ec2_key_name",
    "instance_fleets",
    "instance_groups",
    "applications",
    "bootstrap_actions",
    "configurations",
    "tags",
    "python_requirements",
    "run_job_flow",
}
ROLES = ("master", "core", "task")
_FLEET_KEYS = {"instance_types", "on_demand", "spot", "spot_timeout_minutes", "spot_fallback", "ebs_gb"}
_GROUP_KEYS = {"instance_type", "count", "market", "ebs_gb"}
_SPOT_FALLBACK = {"on_demand": "SWITCH_TO_ON_DEMAND", "terminate": "TERMINATE_CLUSTER"}
# RunJobFlow fields this module sets from the keys above; run_job_flow may not override them.
_OWNED_FIELDS = {
    "Name",
    "Steps",
    "Tags",
    "LogUri",
    "ReleaseLabel",
    "Instances",
    "BootstrapActions",
    "Applications",
    "Configurations",
    "JobFlowRole",
    "ServiceRole",
}


def _count(value: Any, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SparkPortableConfigError(f"{where} = {value!r} must be a whole number >= {minimum}")
    return value


def _ebs(size: Any, where: str) -> dict[str, Any]:
    return {
        "EbsBlockDeviceConfigs": [
            {
                "VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": _count(size, f"{where}: ebs_gb", 1)},
                "VolumesPerInstance": 1,
            }
        ]
    }


def _roles(raw: Any, where: str, keys: set[str]) -> dict[str, dict[str, Any]]:
    unknown = set(raw) - set(ROLES) if isinstance(raw, Mapping) else set()
    if unknown:
        raise SparkPortableConfigError(f"{where} has unknown roles {sorted(unknown)}; use {', '.join(ROLES)}")
    if not isinstance(raw, Mapping) or "master" not in raw:
        raise SparkPortableConfigError(f"{where} must be a mapping with a master entry (and core, task if wanted)")
    out = {}
    for role, body in raw.items():
        if not isinstance(body, Mapping):
            raise SparkPortableConfigError(f"{where}.{role} must be a mapping")
        bad = set(body) - keys
        if bad:
            raise SparkPortableConfigError(f"{where}.{role} has unknown keys {sorted(bad)}; allowed: {sorted(keys)}")
        out[role] = dict(body)
    return out


def instance_fleets(raw: Any, where: str) -> list[dict[str, Any]]:
    fleets = []
    for role, body in _roles(raw, where, _FLEET_KEYS).items():
        at = f"{where}.{role}"
        types = body.get("instance_types")
        if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
            raise SparkPortableConfigError(f"{at}: instance_types must be a non-empty list, e.g. [m5.xlarge]")
        on_demand = _count(body.get("on_demand", 0), f"{at}: on_demand")
        spot = _count(body.get("spot", 0), f"{at}: spot")
        if on_demand + spot == 0:
            raise SparkPortableConfigError(f"{at} asks for no capacity: set on_demand and/or spot")
        if role == "master" and on_demand + spot != 1:
            raise SparkPortableConfigError(f"{at}: a master fleet has exactly one instance (on_demand: 1 or spot: 1)")
        fallback = body.get("spot_fallback", "on_demand")
        if fallback not in _SPOT_FALLBACK:
            raise SparkPortableConfigError(f"{at}: spot_fallback = {fallback!r} must be on_demand or terminate")
        configs = [{"InstanceType": t, "WeightedCapacity": 1} for t in types]
        if "ebs_gb" in body:
            for config in configs:
                config["EbsConfiguration"] = _ebs(body["ebs_gb"], at)
        fleet = {
            "Name": role,
            "InstanceFleetType": role.upper(),
            "TargetOnDemandCapacity": on_demand,
            "TargetSpotCapacity": spot,
            "InstanceTypeConfigs": configs,
        }
        if spot:
            fleet["LaunchSpecifications"] = {
                "SpotSpecification": {
                    "TimeoutDurationMinutes": _count(
                        body.get("spot_timeout_minutes", 10), f"{at}: spot_timeout_minutes", 5
                    ),
                    "TimeoutAction": _SPOT_FALLBACK[fallback],
                    "AllocationStrategy": "price-capacity-optimized",
                }
            }
        fleets.append(fleet)
    return fleets


def instance_groups(raw: Any, where: str) -> list[dict[str, Any]]:
    groups = []
    for role, body in _roles(raw, where, _GROUP_KEYS).items():
        at = f"{where}.{role}"
        if not isinstance(body.get("instance_type"), str) or not body["instance_type"]:
            raise SparkPortableConfigError(f"{at}: instance_type is required, e.g. m5.xlarge")
        count = _count(body.get("count", 1), f"{at}: count", 1)
        if role == "master" and count not in (1, 3):
            raise SparkPortableConfigError(f"{at}: count must be 1 (or 3 for high availability)")
        market = str(body.get("market", "on_demand")).lower()
        if market not in ("on_demand", "spot"):
            raise SparkPortableConfigError(f"{at}: market = {market!r} must be on_demand or spot")
        group = {
            "Name": role,
            "InstanceRole": role.upper(),
            "Market": market.upper(),
            "InstanceType": body["instance_type"],
            "InstanceCount": count,
        }
        if "ebs_gb" in body:
            group["EbsConfiguration"] = _ebs(body["ebs_gb"], at)
        groups.append(group)
    return groups


def _bootstrap_actions(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SparkPortableConfigError(f"{where}: bootstrap_actions must be a list of {{name, path, args}}")
    actions = []
    for i, item in enumerate(raw):
        at = f"{where}: bootstrap_actions[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"name", "path", "args"} or not item.get("path"):
            raise SparkPortableConfigError(f"{at} must be a mapping with path (s3://...) and optional name, args")
        if not str(item["path"]).startswith("s3://"):
            raise SparkPortableConfigError(f"{at}: path = {item['path']!r} must be an s3:// URI")
        args = item.get("args", [])
        if not isinstance(args, list):
            raise SparkPortableConfigError(f"{at}: args must be a list of strings")
        actions.append(
            {
                "Name": str(item.get("name") or f"bootstrap-{i}"),
                "ScriptBootstrapAction": {"Path": str(item["path"]), "Args": [str(a) for a in args]},
            }
        )
    return actions


def validate(raw: Any, where: str, s3_root: str) -> dict[str, Any]:
    """Check the ``cluster`` mapping; return it normalised (the request is built per try)."""
    where = f"{where}: cluster"
    if not isinstance(raw, Mapping):
        raise SparkPortableConfigError(f"{where} must be a mapping (release_label, instance_fleets, ...)")
    unknown = set(raw) - CLUSTER_KEYS
    if unknown:
        raise SparkPortableConfigError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(CLUSTER_KEYS)}")
    if not str(raw.get("release_label", "")).startswith("emr-"):
        raise SparkPortableConfigError(f"{where}: release_label = {raw.get('release_label')!r} must be like emr-7.5.0")
    layouts = [k for k in ("instance_fleets", "instance_groups") if raw.get(k)]
    if len(layouts) != 1:
        raise SparkPortableConfigError(
            f"{where} needs exactly one of instance_fleets, instance_groups; it has {layouts or 'neither'}"
        )
    instances: dict[str, Any] = {"KeepJobFlowAliveWhenNoSteps": False, "TerminationProtected": False}
    subnets = raw.get("subnet_ids") or []
    if not isinstance(subnets, list) or not all(isinstance(s, str) for s in subnets):
        raise SparkPortableConfigError(f"{where}: subnet_ids must be a list of subnet ids")
    if raw.get("instance_fleets"):
        instances["InstanceFleets"] = instance_fleets(raw["instance_fleets"], f"{where}.instance_fleets")
        if subnets:
            instances["Ec2SubnetIds"] = subnets
    else:
        instances["InstanceGroups"] = instance_groups(raw["instance_groups"], f"{where}.instance_groups")
        if len(subnets) > 1:
            raise SparkPortableConfigError(
                f"{where}: instance groups run in one subnet; list one, or use instance_fleets"
            )
        if subnets:
            instances["Ec2SubnetId"] = subnets[0]
    if raw.get("ec2_key_name"):
        instances["Ec2KeyName"] = str(raw["ec2_key_name"])
    log_uri = str(raw.get("log_uri") or f"{s3_root}/logs/")
    if not log_uri.startswith("s3://"):
        raise SparkPortableConfigError(
            f"{where}: log_uri = {log_uri!r} must be an s3:// URI (step logs are read from it)"
        )
    applications = raw.get("applications", ["Spark"])
    if not isinstance(applications, list) or "Spark" not in applications:
        raise SparkPortableConfigError(f"{where}: applications must be a list that includes Spark")
    configurations = raw.get("configurations", [])
    if not isinstance(configurations, list):
        raise SparkPortableConfigError(f"{where}: configurations must be a list, as in the EMR API")
    extra = raw.get("run_job_flow") or {}
    if not isinstance(extra, Mapping) or set(extra) & (_OWNED_FIELDS - {"Instances"}):
        raise SparkPortableConfigError(
            f"{where}: run_job_flow must be a mapping of other RunJobFlow fields; "
            f"{sorted(set(extra) & _OWNED_FIELDS) if isinstance(extra, Mapping) else extra!r} are set from this "
            "section's own keys"
        )
    extra = dict(extra)
    # Instances fields the keys above do not cover (security groups, Placement, ...) merge in
    more = extra.pop("Instances", {})
    owned = {"KeepJobFlowAliveWhenNoSteps", "TerminationProtected", "InstanceFleets", "InstanceGroups"}
    if not isinstance(more, Mapping) or set(more) & owned:
        raise SparkPortableConfigError(
            f"{where}: run_job_flow.Instances may not set {sorted(owned)}: they come from instance_fleets / "
            "instance_groups, and a transient cluster always ends with its step"
        )
    instances.update(more)
    tags = raw.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise SparkPortableConfigError(f"{where}: tags must be a mapping of tag names to values")
    requirements = raw.get("python_requirements")
    if requirements is not None and (not isinstance(requirements, str) or not requirements):
        raise SparkPortableConfigError(f"{where}: python_requirements must be a path, e.g. jobs/requirements.txt")
    return {
        "release_label": str(raw["release_label"]),
        "log_uri": log_uri,
        "job_flow_role": str(raw.get("job_flow_role", "EMR_EC2_DefaultRole")),
        "service_role": str(raw.get("service_role", "EMR_DefaultRole")),
        "instances": instances,
        "applications": [{"Name": str(a)} for a in applications],
        "bootstrap_actions": _bootstrap_actions(raw.get("bootstrap_actions"), where),
        "configurations": list(configurations),
        "tags": {str(k): str(v) for k, v in tags.items()},
        "python_requirements": requirements,
        "run_job_flow": dict(extra),
    }


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in safe_tags(tags).items()]


def run_job_flow_request(
    cluster: dict[str, Any],
    name: str,
    step: dict[str, Any],
    tags: Mapping[str, str],
    extra_bootstrap: list[dict[str, Any]],
) -> dict[str, Any]:
    """The RunJobFlow request for one task try: its one step, its tags, then gone."""
    return {
        **cluster["run_job_flow"],
        "Name": name,
        "ReleaseLabel": cluster["release_label"],
        "LogUri": cluster["log_uri"],
        "Applications": cluster["applications"],
        "Instances": cluster["instances"],
        "Steps": [{**step, "ActionOnFailure": "TERMINATE_CLUSTER"}],
        "BootstrapActions": [*extra_bootstrap, *cluster["bootstrap_actions"]],
        "Configurations": cluster["configurations"],
        "JobFlowRole": cluster["job_flow_role"],
        "ServiceRole": cluster["service_role"],
        "VisibleToAllUsers": True,
        "Tags": tag_list({**cluster["tags"], **tags}),
    }


# What the job side needs on every node besides the job's own requirements: the runtime's S3
# channel uses boto3, which EMR 7.x documents nowhere for its python3 (3.9). Pinned to a release that
# supports Python 3.9 (boto3 1.43 needs 3.10).
BOTO3_REQUIREMENT = "boto3==1.42.97"

# Installs boto3 and the job's Python requirements on every node (the first bootstrap action,
# so user actions can rely on them). $1: the cluster's Python; then pip requirement specifiers,
# and ``--requirement s3://...`` for a requirements file on S3 (copied to the node first).
REQUIREMENTS_BOOTSTRAP = """#!/bin/bash
# airflow-spark-portable: pip-install what a job needs on an EMR node.
set -euo pipefail
python="$1"
shift
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = --requirement ]; then
    local_copy="$(mktemp)"
    aws s3 cp "$2" "$local_copy"
    args+=(--requirement "$local_copy")
    shift 2
  else
    args+=("$1")
    shift
  fi
done
sudo "$python" -m pip install --quiet "${args[@]}"
"""
