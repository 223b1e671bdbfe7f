"""Typed, validated view of ``params.yaml``.

Every section of ``params.yaml`` maps onto one frozen dataclass. Loading walks the dataclass
fields, so an unknown key, a wrong type or an out-of-range value fails before any stage does work,
with a message that names the key (``cyclegan.crop``), the value and what is allowed.

Stages load the file once (``load_params``) and hand each pipeline function only the section it
needs.

A profile (``profiles/*.yaml``) is a set of changes to ``params.yaml`` in its own layout, such as
the published-scale settings for the real sets. ``python -m pipeline.cli.profile --profile FILE``
checks params.yaml with the profile applied and prints the profile as ``dvc exp run`` arguments
(``-S key=value``), so DVC records it as an experiment's changed parameters.

``params.yaml`` is the one source of default values: the dataclasses give a default only where a
key may be absent altogether (an optional list file, FDA off), never a second tunable value. A
field marked ``runtime`` (``field(metadata=RUNTIME)``) is a knob that changes how fast or how
loudly a run goes, not what it computes: a checkpoint written under other runtime values still
resumes, and no stage's outputs depend on it. Every other field defines the run
(``run_settings``) and is a DVC param of each stage that reads it, no more, no less
(tests/test_dvc_yaml.py derives the lists from these marks).

The package's modules, each importing only those above it:

- ``base``: ConfigError and its one-line message, the ``check`` that raises it, the ``runtime``
  mark, shared constants.
- ``convert``: YAML values into dataclasses by their type hints (``build``), and back out into
  plain values (``to_dict``, ``run_settings``).
- ``data``, ``translators``, ``variants``, ``train_seg``, ``params``: the sections' dataclasses,
  ending in `Params`, the whole file.
- ``loading``: params files read and checked (``load_params``).
- ``profiles``: profiles and ``-S`` overrides applied, and written as ``dvc exp run`` arguments.
- ``paths``: the files and folders the settings name, checked before the chain starts.

Every public name is importable from ``pipeline.config`` itself.
"""

from pipeline.config.base import (
    RUNTIME,
    TRAIN_CLASS_NAMES,
    VAL_SPLIT,
    ConfigError,
    Precision,
    check,
    fail,
)
from pipeline.config.convert import (
    build,
    convert,
    flatten_mapping,
    run_settings,
    to_dict,
    type_name,
)
from pipeline.config.data import DataConfig, DatasetSpec, DemoDataConfig, PrepareConfig
from pipeline.config.loading import (
    PARAMS_FILE,
    load_params,
    load_yaml,
    parse_params,
    read_yaml_mapping,
)
from pipeline.config.params import (
    DistributedConfig,
    EvaluateConfig,
    FidConfig,
    Params,
    ReportConfig,
    SlidingWindowSpec,
    TrackingConfig,
    cut_config,
)
from pipeline.config.paths import check_paths, random_init_warning
from pipeline.config.profiles import (
    apply_profile,
    parse_override,
    profile_arguments,
    profile_params,
    resolve_profiles,
)
from pipeline.config.train_seg import TrainSegConfig
from pipeline.config.translators import (
    CUT_MODE_DEFAULTS,
    CUTConfig,
    CycleGANConfig,
    TranslateConfig,
    TranslatorTraining,
)
from pipeline.config.variants import (
    ENSEMBLE_SIZE,
    EnsembleSpec,
    FDAEntropySpec,
    FeatureDistanceSpec,
    MaskingSpec,
    RoundSpec,
    SelfTrainingSpec,
    TargetLabelsSpec,
    VariantSpec,
    WarmStartSpec,
    check_schedule,
)

__all__ = [
    "CUT_MODE_DEFAULTS",
    "ENSEMBLE_SIZE",
    "PARAMS_FILE",
    "RUNTIME",
    "TRAIN_CLASS_NAMES",
    "VAL_SPLIT",
    "CUTConfig",
    "ConfigError",
    "CycleGANConfig",
    "DataConfig",
    "DatasetSpec",
    "DemoDataConfig",
    "DistributedConfig",
    "EnsembleSpec",
    "EvaluateConfig",
    "FDAEntropySpec",
    "FeatureDistanceSpec",
    "FidConfig",
    "MaskingSpec",
    "Params",
    "Precision",
    "PrepareConfig",
    "ReportConfig",
    "RoundSpec",
    "SelfTrainingSpec",
    "SlidingWindowSpec",
    "TargetLabelsSpec",
    "TrackingConfig",
    "TrainSegConfig",
    "TranslateConfig",
    "TranslatorTraining",
    "VariantSpec",
    "WarmStartSpec",
    "apply_profile",
    "build",
    "check",
    "check_paths",
    "check_schedule",
    "convert",
    "cut_config",
    "fail",
    "flatten_mapping",
    "load_params",
    "load_yaml",
    "parse_override",
    "parse_params",
    "profile_arguments",
    "profile_params",
    "random_init_warning",
    "read_yaml_mapping",
    "resolve_profiles",
    "run_settings",
    "to_dict",
    "type_name",
]
