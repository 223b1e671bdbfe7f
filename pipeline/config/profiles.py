"""Profiles (``profiles/*.yaml``) and ``-S key=value`` overrides applied over params.yaml,
checked, and written back as ``dvc exp run`` arguments."""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.base import ConfigError
from pipeline.config.convert import flatten_mapping
from pipeline.config.loading import PARAMS_FILE, load_yaml, parse_params, read_yaml_mapping
from pipeline.config.params import Params


def apply_profile(raw: Mapping[str, Any], profile: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` (params.yaml as read) with every value the profile sets replaced, and the entries it
    adds inside a section (a variant, a translator) added; parse_params then checks every key."""
    return _apply_flat(raw, flatten_mapping(profile, ""))


def _apply_flat(raw: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`apply_profile` of changes keyed by dotted path (``cyclegan.iters``)."""
    merged = copy.deepcopy(dict(raw))
    for key, value in changes.items():
        *sections, leaf = key.split(".")
        node = merged
        for depth, section in enumerate(sections):
            if depth > 0 and section not in node:
                node[section] = {}  # a new entry, e.g. train_seg.variants.NAME
            if not isinstance(node.get(section), Mapping):
                where = ".".join(sections[: depth + 1])
                raise ConfigError(f"profile key {key}: params.yaml has no section {where}")
            node = node[section]
        node[leaf] = value
    return merged


def _has_key(raw: Mapping[str, Any], key: str) -> bool:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def parse_override(argument: str) -> tuple[str, Any]:
    """A ``key=value`` override as ``dvc exp run -S`` takes it: (key, value as DVC reads it). A
    leading ``+`` (DVC's mark for a new key) is dropped from the key."""
    key, sep, text = argument.partition("=")
    key = key.strip().removeprefix("+")
    if not sep or not key or not all(key.split(".")):
        raise ConfigError(f"override {argument!r}: expected KEY=VALUE, e.g. cyclegan.iters=10")
    try:
        value = load_yaml(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {argument!r}: the value is not valid YAML ({err})") from err
    return key, value


def resolve_profiles(
    profiles: Sequence[str | Path],
    params: str | Path = PARAMS_FILE,
    overrides: Sequence[str] = (),
) -> tuple[Params, list[str]]:
    """params.yaml with `profiles` applied in order, then the user's `overrides` (``key=value``:
    a key the user sets is the user's, whatever a profile says), checked; and the same changes
    as `dvc exp run` arguments (``-S key=value``), each key once. A ConfigError names what was
    applied."""
    changes: dict[str, Any] = {}
    for profile in profiles:
        changes.update(flatten_mapping(read_yaml_mapping(profile), ""))
    for argument in overrides:
        key, value = parse_override(argument)
        changes[key] = value
    raw = read_yaml_mapping(params)
    try:
        resolved = parse_params(_apply_flat(raw, changes))
    except ConfigError as err:
        applied = ", ".join(str(p) for p in profiles) or "no profile"
        with_overrides = " and the -S overrides" if overrides else ""
        raise ConfigError(f"{applied}{with_overrides} applied over {params}: {err}") from err
    arguments = []
    for key, value in changes.items():
        # JSON is YAML, the syntax DVC parses -S values with; a value is quoted only where
        # xargs would split it (a string, a list of class names with spaces).
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        text = shlex.quote(text) if isinstance(value, str) or " " in text else text
        add = "" if _has_key(raw, key) else "+"  # DVC's (Hydra's) syntax for a new key
        arguments.append(f"-S {add}{key}={text}")
    return resolved, arguments


def profile_params(
    profiles: Sequence[str | Path],
    params: str | Path = PARAMS_FILE,
    overrides: Sequence[str] = (),
) -> Params:
    """`resolve_profiles`' checked params."""
    return resolve_profiles(profiles, params, overrides)[0]


def profile_arguments(
    profiles: Sequence[str | Path],
    params: str | Path = PARAMS_FILE,
    overrides: Sequence[str] = (),
) -> list[str]:
    """`resolve_profiles`' ``-S`` arguments."""
    return resolve_profiles(profiles, params, overrides)[1]
