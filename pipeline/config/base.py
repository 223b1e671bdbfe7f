"""What every part of the config package shares: the error type and its one-line message
(``params.yaml: KEY = VALUE is not allowed; expected ...``), the check that raises it, the
``runtime`` field mark, and the constants several sections name."""

from __future__ import annotations

import typing
from typing import Any, Literal

from cityscapesscripts.helpers.labels import trainId2label

# The 19 train classes by name, for the settings that name classes. The data layer's label
# table (pipeline.data.labels) sits above config, so the names come from the same library table.
TRAIN_CLASS_NAMES = tuple(trainId2label[train_id].name for train_id in range(19))


# Field metadata of settings that may change between a kill and a resume (see the package doc).
RUNTIME = {"runtime": True}


class ConfigError(ValueError):
    """A setting in params.yaml is missing, unknown, mistyped or out of range."""


def fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"params.yaml: {key} = {value!r} is not allowed; expected {allowed}")


def check(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        fail(key, value, allowed)


Precision = Literal["fp32", "bf16", "fp16", "auto"]


# The prepared split the evaluate stage scores (data/prepared/real_val in dvc.yaml).
VAL_SPLIT = "real_val"
