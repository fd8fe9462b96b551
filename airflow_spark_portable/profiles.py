"""Named compute sizes, mapped per engine, from one YAML file users edit.

    profiles:
      small:
        description: one laptop or one small node
        spark_conf: {spark.sql.shuffle.partitions: "8"}   # every engine
        local: {cores: 2, driver_memory: 2g, conf: {}}
        emr: {...}
        databricks: {...}

The common part is checked when the file is read; an engine's section is checked by that
engine (``Engine.validate_profile``) when a task picks it, so a file can carry sections
for engines this deployment never uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_spark_portable.exceptions import SparkPortableConfigError

ENGINE_SECTIONS = ("local", "emr", "databricks")
PROFILE_KEYS = frozenset({"description", "spark_conf", *ENGINE_SECTIONS})
VERSIONS = (1,)  # of the file's layout; a file without ``version:`` is version 1


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first_line: int, line: int) -> None:
        super().__init__(key, first_line, line)
        self.key, self.first_line, self.line = key, first_line, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # <<: keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first_line = lines.get(key)
            except TypeError:  # an unhashable key: the SafeLoader reports it
                continue
            if first_line is not None:
                raise _DuplicateKey(key, first_line, line)
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class Profile:
    name: str
    source: str  # the file it came from, for error messages
    description: str = ""
    spark_conf: dict[str, str] = field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, engine: str) -> dict[str, Any]:
        try:
            return self.engines[engine]
        except KeyError:
            have = sorted(self.engines) or ["none"]
            raise SparkPortableConfigError(
                f"profile {self.name!r} in {self.source} has no {engine!r} section (it has: "
                f"{', '.join(have)}); add an {engine!r} section to it or pick a profile that has one"
            ) from None


def spark_conf_strings(raw: Any, where: str) -> dict[str, str]:
    """Spark conf as str -> str; YAML numbers and booleans become Spark's spelling."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SparkPortableConfigError(f"{where} must be a mapping of Spark conf keys to values, got {raw!r}")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise SparkPortableConfigError(f"{where}: conf key {key!r} must be a non-empty string")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif not isinstance(value, (str, int, float)):
            raise SparkPortableConfigError(
                f"{where}: conf {key!r} = {value!r} must be a string, number or boolean"
            )
        out[key] = str(value)
    return out


class Profiles:
    def __init__(self, profiles: dict[str, Profile], source: str) -> None:
        self._profiles = profiles
        self.source = source

    @property
    def names(self) -> list[str]:
        return sorted(self._profiles)

    def get(self, name: str) -> Profile:
        try:
            return self._profiles[name]
        except KeyError:
            raise SparkPortableConfigError(
                f"unknown profile {name!r}; {self.source} defines: {', '.join(self.names)}. "
                "Pick one of those or add it to the file"
            ) from None

    @classmethod
    def load(cls, path: Path) -> Profiles:
        if not path.is_file():
            raise SparkPortableConfigError(
                f"profiles file {path} does not exist; create it (see profiles.yaml in the project) "
                "or point [spark_portable] profiles_file / AIRFLOW__SPARK_PORTABLE__PROFILES_FILE at yours"
            )
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
        except _DuplicateKey as dup:
            raise SparkPortableConfigError(
                f"{path}: key {dup.key!r} is given twice in one mapping, on lines {dup.first_line} and "
                f"{dup.line}; keep one of them"
            ) from None
        except yaml.YAMLError as exc:
            raise SparkPortableConfigError(f"profiles file {path} is not valid YAML: {exc}") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str) -> Profiles:
        if not isinstance(data, Mapping) or not isinstance(data.get("profiles"), Mapping) or not data["profiles"]:
            raise SparkPortableConfigError(
                f"{source} must be a mapping with a non-empty 'profiles:' mapping of name -> profile"
            )
        unknown_top = set(data) - {"version", "profiles"}
        if unknown_top:
            raise SparkPortableConfigError(
                f"{source}: unknown top-level keys {sorted(unknown_top)}; allowed: version, profiles"
            )
        version = data.get("version", 1)
        if isinstance(version, bool) or version not in VERSIONS:
            raise SparkPortableConfigError(
                f"{source}: version: {version!r} is not a version this provider reads; supported: "
                f"{', '.join(map(str, VERSIONS))} (write one of those, or upgrade the provider)"
            )
        profiles = {}
        for name, body in data["profiles"].items():
            where = f"{source}: profile {name!r}"
            if not isinstance(body, Mapping):
                raise SparkPortableConfigError(f"{where} must be a mapping, got {body!r}")
            unknown = set(body) - PROFILE_KEYS
            if unknown:
                raise SparkPortableConfigError(
                    f"{where} has unknown keys {sorted(unknown)}; allowed: {', '.join(sorted(PROFILE_KEYS))}"
                )
            engines = {}
            for engine in ENGINE_SECTIONS:
                if engine in body:
                    section = body[engine]
                    if not isinstance(section, Mapping):
                        raise SparkPortableConfigError(f"{where}: section {engine!r} must be a mapping")
                    engines[engine] = dict(section)
            profiles[str(name)] = Profile(
                name=str(name),
                source=source,
                description=str(body.get("description") or ""),
                spark_conf=spark_conf_strings(body.get("spark_conf"), f"{where}: spark_conf"),
                engines=engines,
            )
        return cls(profiles, source)
