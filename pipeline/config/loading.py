"""Reading params files: YAML as DVC reads it, a file that must hold a mapping, and
params.yaml as the checked `Params`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.base import ConfigError
from pipeline.config.convert import build
from pipeline.config.params import Params

PARAMS_FILE = Path("params.yaml")


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats.

    DVC writes params.yaml through a YAML 1.2 writer, which spells small numbers without a dot
    (``lr: 6e-05``, whatever ``-S`` spelling it was given). YAML 1.1, which PyYAML implements,
    needs the dot, so PyYAML alone reads such a value as the string '6e-05'. The extra resolver
    reads every YAML 1.2 float as DVC meant it; strings and the other types are as in 1.1.
    """


# YAML 1.2 core schema floats: an exponent without a dot (1e-4, 6e-05), besides 1.1's forms.
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def load_yaml(text: str) -> Any:
    """YAML text as DVC reads it (YAML 1.2 floats; see `_Yaml12Loader`)."""
    return yaml.load(text, Loader=_Yaml12Loader)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping; a missing or malformed file names itself."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found")
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return dict(raw)


def parse_params(raw: Mapping[str, Any]) -> Params:
    """Validate a params mapping (as read from YAML) into `Params`."""
    return build(Params, raw, "")


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; a missing or malformed file names itself in the error."""
    return parse_params(read_yaml_mapping(path))
