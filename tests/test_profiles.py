from __future__ import annotations

import re

import pytest

from airflow_spark_portable.engines.local import LocalEngine
from airflow_spark_portable.exceptions import SparkPortableConfigError
from airflow_spark_portable.profiles import Profiles
from conftest import ROOT


def _profiles(text: str, tmp_path) -> Profiles:
    path = tmp_path / "profiles.yaml"
    path.write_text(text)
    return Profiles.load(path)


def test_shipped_profiles_have_three_sizes_with_local_sections():
    profiles = Profiles.load(ROOT / "profiles.yaml")
    assert {"small", "medium", "large"} <= set(profiles.names)
    small = LocalEngine.validate_profile(profiles.get("small"))
    large = LocalEngine.validate_profile(profiles.get("large"))
    assert small["cores"] == 2 and small["driver_memory"] == "2g"
    assert large["cores"] == "*"
    assert profiles.get("small").spark_conf["spark.sql.shuffle.partitions"] == "4"


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(SparkPortableConfigError, match=r"unknown profile 'huge'.*large, medium, small"):
        Profiles.load(ROOT / "profiles.yaml").get("huge")


def test_profile_without_the_engine_section(tmp_path):
    profiles = _profiles("profiles:\n  tiny:\n    local: {cores: 1}\n", tmp_path)
    with pytest.raises(SparkPortableConfigError, match=r"profile 'tiny' .* has no 'emr' section \(it has: local\)"):
        profiles.get("tiny").section("emr")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("profiles: [", "not valid YAML"),
        ("profiles: {}\n", "non-empty 'profiles:'"),
        ("profile:\n  a: {}\n", "non-empty 'profiles:'"),
        ("profiles:\n  a: {}\nextra: 1\n", r"unknown top-level keys \['extra'\]"),
        ("profiles:\n  a: {locall: {}}\n", r"profile 'a' has unknown keys \['locall'\]"),
        ("profiles:\n  a: {spark_conf: {x: [1]}}\n", r"conf 'x' = \[1\] must be a string"),
        ("profiles:\n  a: {local: 3}\n", "section 'local' must be a mapping"),
    ],
)
def test_malformed_files_are_rejected_with_the_place(tmp_path, text, error):
    with pytest.raises(SparkPortableConfigError, match=error):
        _profiles(text, tmp_path)


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ("{cores: 0}", "cores = 0 must be a whole number"),
        ("{cores: two}", "cores = 'two'"),
        ("{driver_memory: 2 GB}", "driver_memory = '2 GB' must look like 512m or 4g"),
        ("{master: 'yarn'}", r"unknown keys \['master'\]"),
    ],
)
def test_local_section_is_validated(tmp_path, section, error):
    profiles = _profiles(f"profiles:\n  p:\n    local: {section}\n", tmp_path)
    with pytest.raises(SparkPortableConfigError, match=error):
        LocalEngine.validate_profile(profiles.get("p"))


def test_yaml_scalars_become_spark_spelling(tmp_path):
    profiles = _profiles("profiles:\n  p:\n    spark_conf: {a: true, b: 8, c: 0.5}\n", tmp_path)
    assert profiles.get("p").spark_conf == {"a": "true", "b": "8", "c": "0.5"}


def test_missing_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(SparkPortableConfigError, match="AIRFLOW__SPARK_PORTABLE__PROFILES_FILE"):
        Profiles.load(tmp_path / "nope.yaml")


def test_every_shipped_engine_section_validates_and_its_instance_types_are_priced():
    from airflow_spark_portable.costs import PriceTable
    from airflow_spark_portable.engines import get_engine_class

    profiles = Profiles.load(ROOT / "profiles.yaml")
    prices = PriceTable.load()
    for name in profiles.names:
        profile = profiles.get(name)
        for engine in profile.engines:
            section = get_engine_class(engine).validate_profile(profile)
            if engine == "emr" and section["cluster"]:
                fleets = section["cluster"]["instances"]["InstanceFleets"]
                types = {c["InstanceType"] for fleet in fleets for c in fleet["InstanceTypeConfigs"]}
                assert all(prices.instance_price("us-east-1", t) for t in types), (name, types)
                assert (ROOT / section["cluster"]["python_requirements"]).is_file()
            if engine == "databricks" and section["new_cluster"]:
                node = section["new_cluster"]["node_type_id"]
                assert "dbu" in prices.regions[section["region"]][node], (name, node)
                assert (ROOT / section["python_requirements"]).is_file()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        # two profiles of one name: plain YAML keeps the second silently
        (
            "profiles:\n  small:\n    local: {cores: 1}\n  large: {}\n  small:\n    local: {cores: 8}\n",
            r"profiles\.yaml: key 'small' is given twice in one mapping, on lines 2 and 5; keep one of them",
        ),
        (
            "profiles:\n  p:\n    local:\n      cores: 2\n      driver_memory: 2g\n      cores: 4\n",
            r"profiles\.yaml: key 'cores' is given twice in one mapping, on lines 4 and 6; keep one of them",
        ),
        (
            "profiles:\n  p: {spark_conf: {a: 1, a: 2}}\n",
            r"profiles\.yaml: key 'a' is given twice in one mapping, on lines 2 and 2",
        ),
        (
            "version: 1\nprofiles:\n  p: {}\nversion: 1\n",
            r"profiles\.yaml: key 'version' is given twice in one mapping, on lines 1 and 4",
        ),
    ],
)
def test_a_key_given_twice_is_refused_with_both_lines(tmp_path, text, error):
    with pytest.raises(SparkPortableConfigError, match=re.escape(f"{tmp_path}/") + error):
        _profiles(text, tmp_path)


def test_a_merge_key_may_be_overridden(tmp_path):
    # <<: copies a mapping's keys; overriding one of them is not a duplicate
    text = (
        "profiles:\n"
        "  small: {local: &local {cores: 2, driver_memory: 2g}}\n"
        "  medium: {local: {<<: *local, cores: 4}}\n"
    )
    profiles = _profiles(text, tmp_path)
    assert profiles.get("medium").engines["local"] == {"cores": 4, "driver_memory": "2g"}


@pytest.mark.parametrize(("version", "shown"), [("99", "99"), ("2", "2"), ("'1'", "'1'"), ("true", "True")])
def test_an_unknown_file_version_is_refused(tmp_path, version, shown):
    with pytest.raises(
        SparkPortableConfigError,
        match=rf"profiles\.yaml: version: {shown} is not a version this provider reads; supported: 1",
    ):
        _profiles(f"version: {version}\nprofiles:\n  p: {{}}\n", tmp_path)


def test_version_1_or_none_is_read(tmp_path):
    assert _profiles("version: 1\nprofiles:\n  p: {}\n", tmp_path).names == ["p"]
    assert _profiles("profiles:\n  p: {}\n", tmp_path).names == ["p"]
