"""Typed, validated view of ``params.yaml``.

Every section of ``params.yaml`` maps onto one frozen dataclass below. Loading walks the dataclass
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
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
import shlex
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml
from cityscapesscripts.helpers.labels import trainId2label

# The 19 train classes by name, for the settings that name classes. The data layer's label
# table (pipeline.data.labels) sits above config, so the names come from the same library table.
TRAIN_CLASS_NAMES = tuple(trainId2label[train_id].name for train_id in range(19))

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


# Field metadata of settings that may change between a kill and a resume (see the module doc).
RUNTIME = {"runtime": True}


class ConfigError(ValueError):
    """A setting in params.yaml is missing, unknown, mistyped or out of range."""


def _fail(key: str, value: Any, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"params.yaml: {key} = {value!r} is not allowed; expected {allowed}")


def _check(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        _fail(key, value, allowed)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where one dataset lives and which reader understands its layout.

    kind: gta5 and synthia (source only) and cityscapes read those sets' own layouts; folder
    reads any simulator's or fleet's frames from the `images` / `labels` folders
    (pipeline/data/folder.py; docs/data.md shows each supported dataset's settings).
    """

    kind: Literal["gta5", "synthia", "cityscapes", "folder"]
    root: str
    # Optional file of frame names (one per line) restricting the source set, e.g. a split.
    list_file: str | None = None
    # How the label files encode classes: a shipped map's name or a file under label_maps/
    # (pipeline/data/label_map.py); null: the kind's own table (gta5, cityscapes, synthia).
    label_map: str | None = None
    # kind folder only: the image and label folders under root ("{split}" becomes the split's
    # folder name) and the endings of file stems that are not part of the frame's name
    # (ACDC's "_rgb_anon" and "_gt_labelIds", say).
    images: str | None = None
    labels: str | None = None
    image_suffix: str | None = None
    label_suffix: str | None = None
    # The split folders kinds cityscapes and folder read: the source and the target's unlabelled
    # frames come from train_split, the target's scored frames from val_split.
    train_split: str = "train"
    val_split: str = "val"

    def validate(self, key: str, side: str) -> None:
        kinds = (
            ("gta5", "synthia", "cityscapes", "folder")
            if side == "source"
            else ("cityscapes", "folder")
        )
        _check(self.kind in kinds, f"{key}.kind", self.kind, " or ".join(repr(k) for k in kinds))
        layout = ("images", "labels", "image_suffix", "label_suffix")
        if self.kind != "folder":
            for name in layout:
                value = getattr(self, name)
                _check(value is None, f"{key}.{name}", value, "null (only kind 'folder' reads it)")
        else:
            for name in ("images", "labels"):
                value = getattr(self, name)
                _check(value is not None, f"{key}.{name}", value, "a folder under root")
            _check(
                self.label_map is not None,
                f"{key}.label_map",
                self.label_map,
                "a label map (a shipped map's name or a file under label_maps/) for kind 'folder'",
            )
            if side == "target":
                for name in ("images", "labels"):
                    value = getattr(self, name)
                    _check(
                        "{split}" in value,
                        f"{key}.{name}",
                        value,
                        "a folder holding {split} (train and val frames must differ)",
                    )
        if self.kind in ("gta5", "synthia"):
            for name, default in (("train_split", "train"), ("val_split", "val")):
                value = getattr(self, name)
                _check(
                    value == default,
                    f"{key}.{name}",
                    value,
                    f"{default!r} (kind {self.kind} has no splits)",
                )
        if side == "target":
            _check(
                self.train_split != self.val_split,
                f"{key}.val_split",
                self.val_split,
                f"a split other than train_split ({self.train_split!r})",
            )
        if self.list_file is not None:
            _check(
                side == "source" and self.kind != "cityscapes",
                f"{key}.list_file",
                self.list_file,
                "null (a frame list restricts a gta5, synthia or folder source)",
            )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: DatasetSpec
    target: DatasetSpec
    size: tuple[int, int]  # working resolution (H, W)
    # Stop when more than this many files are skipped as unreadable or inconsistent.
    max_skipped: int
    # A label whose ids outside its label map cover more than this share of the frame is
    # skipped; below it those pixels are ignored (and counted in reports/data.json).
    max_unknown_share: float
    # The size (H, W) val labels are scored at, resized to it (nearest) when frames differ in
    # size (Mapillary Vistas); null: each label file's own size, which must then agree.
    val_label_size: tuple[int, int] | None

    def __post_init__(self) -> None:
        self.source.validate("data.source", "source")
        self.target.validate("data.target", "target")
        _check(
            all(s > 0 and s % 4 == 0 for s in self.size),
            "data.size",
            list(self.size),
            "[H, W], both positive multiples of 4 (the generators downsample twice)",
        )
        _check(self.max_skipped >= 0, "data.max_skipped", self.max_skipped, "an integer >= 0")
        _check(
            0.0 <= self.max_unknown_share < 1.0,
            "data.max_unknown_share",
            self.max_unknown_share,
            "a share from 0 (any unknown id skips the frame) to below 1",
        )
        if self.val_label_size is not None:
            _check(
                all(s > 0 for s in self.val_label_size),
                "data.val_label_size",
                list(self.val_label_size),
                "[H, W], both positive, or null",
            )


@dataclasses.dataclass(frozen=True)
class DemoDataConfig:
    seed: int
    n_source: int
    n_target_train: int
    n_target_val: int
    size: tuple[int, int]  # native size the generator draws at (H, W)
    workers: int = field(metadata=RUNTIME)
    # Also write the sim frames in the SYNTHIA layout (data/demo/synthia), for
    # data.source.kind=synthia; off, the demo output is unchanged.
    synthia: bool

    def __post_init__(self) -> None:
        _check(self.workers >= 1, "demo_data.workers", self.workers, "an integer >= 1")
        for name in ("n_source", "n_target_train", "n_target_val"):
            value = getattr(self, name)
            _check(value > 0, f"demo_data.{name}", value, "an integer > 0")
        _check(
            all(s >= 32 for s in self.size),
            "demo_data.size",
            list(self.size),
            "[H, W], both >= 32",
        )


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    workers: int = field(metadata=RUNTIME)

    def __post_init__(self) -> None:
        _check(self.workers >= 1, "prepare.workers", self.workers, "an integer >= 1")


Precision = Literal["fp32", "bf16", "fp16", "auto"]


@dataclasses.dataclass(frozen=True)
class TranslatorTraining:
    """The settings every unpaired translator's training shares (CycleGAN, CUT, FastCUT): the
    PatchGAN discriminator, Adam on the reference's constant-then-linear-decay schedule, the
    crops, and the runtime knobs. Each translator adds its generator and its losses."""

    ngf: int
    ndf: int
    n_layers_D: int
    norm: Literal["instance", "batch"]
    gan_mode: Literal["lsgan", "vanilla"]
    lr: float
    beta1: float
    beta2: float
    iters: int
    # Constant learning rate until this step, then linear decay to zero at `iters`.
    decay_from: int
    batch: int
    crop: tuple[int, int]
    flip: bool
    precision: Precision
    seed: int
    channels_last: bool = field(metadata=RUNTIME)
    # The step's phases run "eager", or through torch.compile in its "default" mode
    # (inductor: fused kernels) or "reduce-overhead" (also CUDA graphs; on the CPU = default).
    compile: Literal["eager", "default", "reduce-overhead"] = field(metadata=RUNTIME)
    checkpoint_every: int = field(metadata=RUNTIME)
    log_every: int = field(metadata=RUNTIME)
    sample_every: int = field(metadata=RUNTIME)
    # A loss that is NaN/inf stops the run (keeping the last good checkpoint) after this many
    # consecutive bad steps; bad steps are skipped, not applied.
    max_bad_steps: int = field(metadata=RUNTIME)
    threads: int = field(metadata=RUNTIME)  # 0 = torch's default


def _check_translator_training(values: Mapping[str, Any], key: Callable[[str], str]) -> None:
    """Range checks of TranslatorTraining's settings (and the generator's crop) in `values`;
    `key` names a setting where it is set."""
    for name in (
        "ngf", "ndf", "n_layers_D", "iters", "batch", "checkpoint_every", "log_every",
        "sample_every",
    ):  # fmt: skip
        _check(values[name] > 0, key(name), values[name], "an integer > 0")
    _check(0 < values["lr"] < 1, key("lr"), values["lr"], "a number in (0, 1)")
    for name in ("beta1", "beta2"):
        _check(0 <= values[name] < 1, key(name), values[name], "a number in [0, 1)")
    _check(
        0 <= values["decay_from"] <= values["iters"],
        key("decay_from"),
        values["decay_from"],
        f"an integer in [0, iters={values['iters']}]",
    )
    # A ResNet generator downsamples twice; a U-Net as many times as its name's size allows.
    netG = values["netG"]
    multiple = {"unet_128": 128, "unet_256": 256}.get(netG, 4)
    _check(
        all(c > 0 and c % multiple == 0 for c in values["crop"]),
        key("crop"),
        list(values["crop"]),
        f"[H, W], positive multiples of {multiple} for netG={netG}",
    )
    _check(values["max_bad_steps"] >= 0, key("max_bad_steps"), values["max_bad_steps"], ">= 0")
    _check(values["threads"] >= 0, key("threads"), values["threads"], "an integer >= 0")


@dataclasses.dataclass(frozen=True)
class CycleGANConfig(TranslatorTraining):
    netG: Literal["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256"]
    lambda_cycle: float
    # Identity weight relative to lambda_cycle, as in the reference (0.5 -> 5.0 absolute).
    lambda_identity: float
    # CyCADA's semantic consistency (Hoffman et al. 2018): a frozen segmentation net trained on
    # sim must label a translated frame as it labels the original. 0 = plain CycleGAN.
    lambda_semantic: float
    pool_size: int

    def __post_init__(self) -> None:
        _check_translator_training(self.__dict__, lambda name: f"cyclegan.{name}")
        for name in ("lambda_cycle", "lambda_identity", "lambda_semantic"):
            value = getattr(self, name)
            _check(value >= 0, f"cyclegan.{name}", value, "a number >= 0")
        _check(self.pool_size >= 0, "cyclegan.pool_size", self.pool_size, "an integer >= 0")


# The paper's defaults of the settings a CUT section may leave null, by mode (Park et al. 2020,
# and their code's `--CUT_mode`): CUT weighs PatchNCE 1 and adds the identity term, FastCUT
# weighs it 10 and replaces the identity term by flip equivariance.
CUT_MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "cut": {"lambda_nce": 1.0, "nce_idt": True, "flip_equivariance": False},
    "fastcut": {"lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True},
}
# ResnetGenerator.model indices up to the last residual block (the encoder the taps may use):
# 10 layers before the first block, then one per block.
_RESNET_BLOCKS = {"resnet_9blocks": 9, "resnet_6blocks": 6}
_TRUNK_START = 10


@dataclasses.dataclass(frozen=True)
class CUTConfig(TranslatorTraining):
    """Contrastive unpaired translation (Park et al., ECCV 2020): one generator sim -> real,
    trained with an adversarial loss and PatchNCE between patches of its input and its output.

    `translators` names the runs to train (NAME -> overrides of this section's keys);
    `cut_config(params, NAME)` resolves one. A resolved config has no null left and no
    translators of its own.
    """

    netG: Literal["resnet_9blocks", "resnet_6blocks"]  # the taps need ResNet's flat layer list
    mode: Literal["cut", "fastcut"]
    lambda_gan: float
    # null: the mode's paper default (CUT_MODE_DEFAULTS).
    lambda_nce: float | None
    nce_idt: bool | None  # PatchNCE also between real frames and their translation
    flip_equivariance: bool | None  # FastCUT: translate a mirrored input, mirror the queries back
    # Indices into ResnetGenerator.model whose outputs PatchNCE compares (pipeline/models/cut.py).
    nce_layers: tuple[int, ...]
    num_patches: int  # locations sampled per layer and image
    nce_t: float  # temperature of the PatchNCE logits
    netF_nc: int  # width of the per-layer MLP heads
    # Which translators exist is not a setting of any one translator's run: its own entry is.
    translators: dict[str, dict[str, Any]] = field(metadata=RUNTIME)

    def __post_init__(self) -> None:
        _check_cut(self.__dict__, lambda name: f"cut.{name}")
        for name in self.translators:
            self.translator(name)  # each entry fails now, naming its key, not when it trains

    def translator(self, name: str) -> CUTConfig:
        """The settings of translator `name`: this section, its overrides, then the mode's
        defaults for what is still null."""
        if name not in self.translators:
            raise ConfigError(
                f"unknown translator {name!r}; cut.translators in params.yaml has: "
                f"{', '.join(self.translators) or 'none'}"
            )
        _check(
            name.isidentifier() and name.isascii() and name != "cyclegan",
            "cut.translators",
            name,
            "translator names of letters, digits and '_' (not starting with a digit), "
            "other than 'cyclegan'",
        )
        overrides = self.translators[name]
        fields = [f.name for f in dataclasses.fields(CUTConfig) if f.name != "translators"]
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ConfigError(
                f"params.yaml: unknown key cut.translators.{name}.{unknown[0]}; allowed keys "
                f"under cut.translators.{name}: {', '.join(fields)}"
            )

        def key(field_name: str) -> str:
            inside = field_name in overrides
            return f"cut.translators.{name}.{field_name}" if inside else f"cut.{field_name}"

        hints = typing.get_type_hints(CUTConfig)
        values = {f: getattr(self, f) for f in fields}
        values.update({f: _convert(v, hints[f], key(f)) for f, v in overrides.items()})
        for setting, default in CUT_MODE_DEFAULTS[values["mode"]].items():
            if values[setting] is None:
                values[setting] = default
        _check_cut(values, key)
        return CUTConfig(**values, translators={})


def _check_cut(values: Mapping[str, Any], key: Callable[[str], str]) -> None:
    """Range checks of a CUT section or translator; `key` names a setting where it is set."""
    _check_translator_training(values, key)
    for name in ("num_patches", "netF_nc"):
        _check(values[name] > 0, key(name), values[name], "an integer > 0")
    _check(values["lambda_gan"] >= 0, key("lambda_gan"), values["lambda_gan"], "a number >= 0")
    lambda_nce = values["lambda_nce"]
    _check(
        lambda_nce is None or lambda_nce >= 0,
        key("lambda_nce"),
        lambda_nce,
        "a number >= 0, or null for the mode's default",
    )
    _check(values["nce_t"] > 0, key("nce_t"), values["nce_t"], "a number > 0")
    last = _TRUNK_START + _RESNET_BLOCKS[values["netG"]] - 1
    layers = list(values["nce_layers"])
    _check(
        len(layers) > 0
        and all(a < b for a, b in itertools.pairwise(layers))
        and all(0 <= i <= last for i in layers),
        key("nce_layers"),
        layers,
        f"increasing indices of {values['netG']}'s layers, from 0 to {last} (its last "
        "residual block)",
    )


def cut_config(params: Params, name: str) -> CUTConfig:
    """The resolved settings of translator `name` of params.yaml's cut section."""
    return params.cut.translator(name)


@dataclasses.dataclass(frozen=True)
class TranslateConfig:
    batch: int
    precision: Precision
    threads: int = field(metadata=RUNTIME)  # 0 = torch's default
    # Threads that encode and write PNGs (and count colours) while the next batch translates.
    workers: int = field(metadata=RUNTIME)

    def __post_init__(self) -> None:
        _check(self.batch > 0, "translate.batch", self.batch, "an integer > 0")
        _check(self.threads >= 0, "translate.threads", self.threads, "an integer >= 0")
        _check(self.workers >= 1, "translate.workers", self.workers, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
    """MIC's masked image consistency (Hoyer et al., CVPR 2023): the student also learns the
    teacher's pseudo-labels of target frames from copies with random blocks masked out, so it must
    read the context of what it cannot see."""

    # Side of the square blocks, in pixels at the working resolution. MIC masks 64 px blocks of
    # frames at Cityscapes' full 2048 px width (1/32 of it); at a 256 px working width the same
    # share of the scene is 8 px. Both sides of train_seg.crop must be multiples of it.
    mask_block_size: int
    mask_ratio: float  # each block is masked with this probability (MIC: 0.7)
    weight: float  # weight of the masked loss beside DACS's two (MIC's lambda: 1)

    def validate(self, key: str) -> None:
        _check(
            self.mask_block_size > 0,
            f"{key}.mask_block_size",
            self.mask_block_size,
            "an integer > 0",
        )
        _check(0 < self.mask_ratio < 1, f"{key}.mask_ratio", self.mask_ratio, "a number in (0, 1)")
        _check(self.weight > 0, f"{key}.weight", self.weight, "a number > 0")


@dataclasses.dataclass(frozen=True)
class FeatureDistanceSpec:
    """DAFormer's ImageNet feature distance (Hoyer et al., CVPR 2022, dacs.py `calc_feat_dist`):
    on source frames, the student's deepest encoder features are pulled towards those of a
    frozen copy of the ImageNet encoder it started from, on the feature pixels whose label patch
    is at least `min_class_share` one of `classes`, so that what ImageNet knows of things is not
    overwritten by the synthetic frames. Needs train_seg.encoder_weights."""

    # Weight of the mean L2 distance beside the source loss (DAFormer's lambda: 0.005).
    weight: float
    # The classes it applies to; DAFormer's "thing" classes (dacs_a999_fdthings.py: train ids
    # 6, 7, 11-18): traffic light, traffic sign, person, rider, car, truck, bus, train,
    # motorcycle, bicycle.
    classes: tuple[str, ...]
    # A feature pixel takes the class that covers this share of its label patch or more, else
    # none (DAFormer's scale_min_ratio: 0.75).
    min_class_share: float

    def validate(self, key: str) -> None:
        _check(self.weight > 0, f"{key}.weight", self.weight, "a number > 0")
        for i, name in enumerate(self.classes):
            _check(
                name in TRAIN_CLASS_NAMES,
                f"{key}.classes[{i}]",
                name,
                f"one of the 19 classes: {', '.join(TRAIN_CLASS_NAMES)}",
            )
        _check(bool(self.classes), f"{key}.classes", list(self.classes), "at least one class")
        _check(
            0 < self.min_class_share <= 1,
            f"{key}.min_class_share",
            self.min_class_share,
            "a number in (0, 1]",
        )


@dataclasses.dataclass(frozen=True)
class WarmStartSpec:
    """Start the student (and its teacher) from another variant's trained net, as DAFormer starts
    from a pretrained one, on DAFormer's schedule. The schedule is the variant's own, in place of
    train_seg.warmup and head_lr_mult: those suit the variants that start from scratch (or from
    the encoder weights file), which a warm-started one does not."""

    init_from: str  # a variant of train_seg.variants: its models/seg/NAME/model.safetensors
    # As train_seg's two, for this variant alone (DAFormer: 0.0375, a linear warm-up over 1500
    # of 40000 iterations, and the decoder and head at 10x the rate).
    warmup: float
    head_lr_mult: float

    def validate(self, key: str) -> None:
        _check_schedule(key, self.warmup, self.head_lr_mult)


def _check_schedule(key: str, warmup: float, head_lr_mult: float) -> None:
    """train_seg's learning-rate shape, or a warm start's own (`key`: the section)."""
    _check(0 <= warmup < 1, f"{key}.warmup", warmup, "a number in [0, 1)")
    _check(head_lr_mult > 0, f"{key}.head_lr_mult", head_lr_mult, "a number > 0")


@dataclasses.dataclass(frozen=True)
class SelfTrainingSpec:
    """Self-training on unlabelled target frames, as DACS (Tranheden et al. 2021) with DAFormer's
    rare-class sampling (Hoyer et al. 2022): a student learns from labelled source batches and
    from ClassMix batches whose target pixels carry an EMA teacher's pseudo-labels. DAFormer's
    crop rules and pseudo-label crop are settings of their own (off: DACS)."""

    target: str  # a prepared split of unlabelled real frames (labels, if any, are not read)
    # teacher = EMA of the student: DACS 0.99 (trainUDA.py), DAFormer and MIC 0.999
    # (configs/daformer/..._a999_daformer_mitb5_s0.py, configs/_base_/uda/dacs_a999_fdthings.py)
    ema_decay: float
    # A teacher pixel counts as confident above this softmax probability; the share of
    # confident pixels weights the pseudo-labelled loss (DACS: 0.968).
    confidence: float
    # Rare-class sampling temperature: source frames are drawn by class, class c with
    # probability proportional to exp((1 - share of c) / T); DAFormer: 0.01. 0 = uniform.
    rare_class_temperature: float
    # DAFormer's crop rule for a frame drawn for class c: its crop is redrawn (up to 10 times)
    # until it holds more than this ratio of the frame rule's 3000 pixels of c (at DAFormer's
    # 1280x720 GTA5 frames, as a share of the frame here); DAFormer: 0.5 (min_crop_ratio). 0 =
    # no redraw.
    rare_class_min_crop_ratio: float
    # mmseg's RandomCrop cat_max_ratio on source crops: redrawn (up to 10 times) while one class
    # covers this share of the crop's labelled pixels or more; DAFormer's GTA5 pipeline: 0.75.
    # 1 = off.
    crop_max_class_share: float
    # DAFormer's pseudo-label crop: pseudo-labels of the top and bottom rows of each target crop
    # weigh 0, as shares of the crop height; DAFormer: 15 and 120 of its 512 rows (the ego car's
    # hood and the rectification border of Cityscapes). 0 = none.
    pseudo_label_ignore_top: float
    pseudo_label_ignore_bottom: float
    # MIC's masked image consistency on top of DACS; absent = plain DACS.
    mic: MaskingSpec | None = None
    # DAFormer's ImageNet feature distance on source frames; absent = none (DACS).
    feature_distance: FeatureDistanceSpec | None = None

    def validate(self, key: str) -> None:
        _check(0 <= self.ema_decay < 1, f"{key}.ema_decay", self.ema_decay, "a number in [0, 1)")
        _check(0 < self.confidence < 1, f"{key}.confidence", self.confidence, "a number in (0, 1)")
        _check(
            self.rare_class_temperature >= 0,
            f"{key}.rare_class_temperature",
            self.rare_class_temperature,
            "a number >= 0 (0 samples source frames uniformly)",
        )
        _check(
            0 <= self.rare_class_min_crop_ratio <= 1,
            f"{key}.rare_class_min_crop_ratio",
            self.rare_class_min_crop_ratio,
            "a number in [0, 1] (0: no crop redraw)",
        )
        _check(
            0 < self.crop_max_class_share <= 1,
            f"{key}.crop_max_class_share",
            self.crop_max_class_share,
            "a number in (0, 1] (1: off)",
        )
        for side in ("top", "bottom"):
            share = getattr(self, f"pseudo_label_ignore_{side}")
            _check(
                0 <= share < 1,
                f"{key}.pseudo_label_ignore_{side}",
                share,
                "a share of the crop height in [0, 1)",
            )
        _check(
            self.pseudo_label_ignore_top + self.pseudo_label_ignore_bottom < 1,
            f"{key}.pseudo_label_ignore_bottom",
            self.pseudo_label_ignore_bottom,
            "a share that leaves rows with pseudo_label_ignore_top (their sum < 1)",
        )
        if self.mic is not None:
            self.mic.validate(f"{key}.mic")
        if self.feature_distance is not None:
            self.feature_distance.validate(f"{key}.feature_distance")


@dataclasses.dataclass(frozen=True)
class FDAEntropySpec:
    """FDA's entropy term (Yang & Soatto 2020, train.py): each step the net also labels the
    batch's style (target) frames, and their robust entropy, mean over pixels of
    (H(p)^2 + 1e-8)^ita with H normalised by log 19, is added at `weight`. FDA's published run:
    weight 0.005, ita 2.0, from the first step (--switch2entropy=0)."""

    weight: float
    ita: float

    def validate(self, key: str) -> None:
        _check(self.weight > 0, f"{key}.weight", self.weight, "a number > 0")
        _check(self.ita > 0, f"{key}.ita", self.ita, "a number > 0")


@dataclasses.dataclass(frozen=True)
class TargetLabelsSpec:
    """A few labelled target frames beside the variant's own training set (semi-supervised
    adaptation): `frames` frames of `split` drawn once, reproducibly (`seed`, apart from
    train_seg.seed so that a seed sweep keeps the same frames), and each step a batch of them
    adds its supervised loss at `weight`. The report marks such a variant as using target
    labels, so it is never ranked as if it saw none."""

    split: str  # a prepared split with labels.npy (the target's train split), never val
    frames: int
    seed: int
    weight: float

    def validate(self, key: str) -> None:
        _check(
            Path(self.split).name != VAL_SPLIT,
            f"{key}.split",
            self.split,
            f"a labelled split other than {VAL_SPLIT}, the split every variant is scored on "
            f"(the target's train split: data/prepared/real_train)",
        )
        _check(self.frames > 0, f"{key}.frames", self.frames, "an integer > 0")
        _check(self.seed >= 0, f"{key}.seed", self.seed, "an integer >= 0")
        _check(self.weight > 0, f"{key}.weight", self.weight, "a number > 0")


@dataclasses.dataclass(frozen=True)
class EnsembleSpec:
    """FDA's multi-band transfer (Yang & Soatto 2020, evaluation_multi.py): the class
    probabilities of three trained variants averaged, each weighted 1/3 (FDA: its nets of beta
    0.01, 0.05 and 0.09). Three exactly: dvc.yaml declares each member's model files."""

    members: tuple[str, ...]

    def validate(self, key: str, variants: Mapping[str, Any]) -> None:
        _check(
            len(self.members) == ENSEMBLE_SIZE and len(set(self.members)) == ENSEMBLE_SIZE,
            f"{key}.members",
            list(self.members),
            f"{ENSEMBLE_SIZE} different variants",
        )
        for i, member in enumerate(self.members):
            _check(
                member in variants,
                f"{key}.members[{i}]",
                member,
                f"a trained variant or round: one of {', '.join(variants)}",
            )


ENSEMBLE_SIZE = 3


@dataclasses.dataclass(frozen=True)
class RoundSpec:
    """FDA's self-supervised round (Yang & Soatto 2020, getSudoLabel_multi.py then SStrain.py):
    a trained row (FDA: the multi-band average) labels the target's train frames, each class
    keeping only its most confident pixels, and `variant`'s recipe is trained again with a batch
    of those pseudo-labelled frames added each step at `weight`."""

    variant: str  # the recipe trained again: a variant of train_seg.variants
    # The variant's own training set, repeated here so dvc.yaml can declare it.
    images: str
    labels: str
    pseudo_labels: str  # the row that labels: a variant, an ensemble or an earlier round
    split: str  # the target frames it labels (the target's train split)
    # Per class, pixels below this quantile of the confidences of the pixels predicted as that
    # class are ignored (FDA: 0.66, so each class keeps its most confident third) ...
    quantile: float
    # ... the threshold capped at this probability (FDA: 0.9).
    max_threshold: float
    weight: float  # of the pseudo-labelled loss (SStrain.py: 1)

    def validate(self, key: str) -> None:
        _check(0 <= self.quantile < 1, f"{key}.quantile", self.quantile, "a number in [0, 1)")
        _check(
            0 < self.max_threshold <= 1,
            f"{key}.max_threshold",
            self.max_threshold,
            "a probability in (0, 1]",
        )
        _check(self.weight > 0, f"{key}.weight", self.weight, "a number > 0")
        _check(
            Path(self.split).name != VAL_SPLIT,
            f"{key}.split",
            self.split,
            f"a split other than {VAL_SPLIT}, the split every variant is scored on",
        )


# The prepared split the evaluate stage scores (data/prepared/real_val in dvc.yaml).
VAL_SPLIT = "real_val"


@dataclasses.dataclass(frozen=True)
class VariantSpec:
    """One segmentation training set: images, the labels that go with them, optional FDA and
    optional self-training on target frames."""

    images: str  # a prepared split folder (images.npy + names.json) or a translated folder
    labels: str  # a prepared split folder with labels.npy whose names.json matches `images`
    # Fourier Domain Adaptation: swap the low-frequency amplitude with a random image of
    # `fda_style` (a prepared split folder). 0 turns it off.
    fda_beta: float = 0.0
    fda_style: str | None = None
    # FDA's entropy term on the style frames' predictions; absent = the style swap alone.
    fda_entropy: FDAEntropySpec | None = None
    self_training: SelfTrainingSpec | None = None
    warm_start: WarmStartSpec | None = None
    # Labelled target frames trained on beside the rest; absent = unsupervised adaptation.
    target_labels: TargetLabelsSpec | None = None

    def validate(self, key: str) -> None:
        _check(0 <= self.fda_beta < 0.5, f"{key}.fda_beta", self.fda_beta, "a number in [0, 0.5)")
        _check(
            self.fda_beta == 0 or self.fda_style is not None,
            f"{key}.fda_style",
            self.fda_style,
            "a prepared split folder when fda_beta > 0",
        )
        if self.fda_entropy is not None:
            _check(
                self.fda_beta > 0 and self.self_training is None,
                f"{key}.fda_entropy",
                dataclasses.asdict(self.fda_entropy),
                "a block only on an FDA variant (fda_beta > 0) without self_training",
            )
            self.fda_entropy.validate(f"{key}.fda_entropy")
        if self.self_training is not None:
            self.self_training.validate(f"{key}.self_training")
        if self.warm_start is not None:
            self.warm_start.validate(f"{key}.warm_start")
        if self.target_labels is not None:
            self.target_labels.validate(f"{key}.target_labels")

    @property
    def step(self) -> str:
        """The name of the training step this variant's settings ask for (the segmentation
        loop's step objects): "mic" with a self_training block holding a mic block, "dacs" with
        a self_training block alone, else "supervised"."""
        if self.self_training is None:
            return "supervised"
        return "dacs" if self.self_training.mic is None else "mic"

    def inputs(self) -> list[str]:
        """Every prepared split this variant's training reads."""
        splits = [self.images, self.labels, self.fda_style]
        if self.self_training is not None:
            splits.append(self.self_training.target)
        if self.target_labels is not None:
            splits.append(self.target_labels.split)
        return [split for split in dict.fromkeys(splits) if split is not None]


@dataclasses.dataclass(frozen=True)
class TrainSegConfig:
    # Which variants exist is not a setting of any one variant's run: its own entry is.
    variants: dict[str, VariantSpec] = field(metadata=RUNTIME)
    # Nets averaged from trained variants (FDA's multi-band transfer), scored beside them; as
    # with `variants`, which exist is no setting of any variant's run.
    ensembles: dict[str, EnsembleSpec] = field(metadata=RUNTIME)
    # FDA's self-supervised rounds, trained and scored beside the variants; as `variants`.
    rounds: dict[str, RoundSpec] = field(metadata=RUNTIME)
    arch: str
    encoder: str
    # None: random init (offline default). A path: a local state dict for the encoder.
    encoder_weights: str | None
    iters: int
    batch: int
    optimizer: Literal["adamw", "sgd"]
    lr: float
    weight_decay: float
    momentum: float
    poly_power: float
    # Share of iters over which the rate climbs linearly to its poly value (DAFormer warms up
    # over 1500 of its 40000 iterations: 0.0375; 0 = none).
    warmup: float
    # Learning-rate factor of the decoder and segmentation head over the encoder's: a pretrained
    # encoder moves slowly, a fresh head fast (DAFormer: 10; 1 = one rate).
    head_lr_mult: float
    # Parameters whose name holds one of these words train without weight decay (DAFormer's
    # paramwise_cfg: decay_mult 0 on "norm" and "pos_block"); [] = weight decay on every one.
    no_weight_decay: tuple[str, ...]
    loss: Literal["ce", "ce+dice"]
    crop: tuple[int, int]
    scale: tuple[float, float]
    flip: bool
    color_jitter: float
    precision: Precision
    seed: int
    channels_last: bool = field(metadata=RUNTIME)
    # Batch-norm statistics synced over GPUs (DDP); one process is unaffected.
    sync_bn: bool = field(metadata=RUNTIME)
    checkpoint_every: int = field(metadata=RUNTIME)
    log_every: int = field(metadata=RUNTIME)
    threads: int = field(metadata=RUNTIME)
    # Score the net on the real val split every this many steps (val_curve.csv, MLflow);
    # 0 = never. Monitoring only: nothing is selected by it.
    val_every: int = field(metadata=RUNTIME)

    def __post_init__(self) -> None:
        _check(len(self.variants) > 0, "train_seg.variants", self.variants, "at least one variant")
        self._check_rows()
        for name, spec in self.variants.items():
            _check(
                name.replace("_", "").isalnum(),
                "train_seg.variants",
                name,
                "variant names of letters, digits and '_'",
            )
            spec.validate(f"train_seg.variants.{name}")
            self._check_variant_links(name, spec)
        for name in ("iters", "batch", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            _check(value > 0, f"train_seg.{name}", value, "an integer > 0")
        _check(0 < self.lr < 10, "train_seg.lr", self.lr, "a number in (0, 10)")
        _check(self.weight_decay >= 0, "train_seg.weight_decay", self.weight_decay, ">= 0")
        for i, word in enumerate(self.no_weight_decay):
            _check(
                word.strip() == word and "." not in word,
                f"train_seg.no_weight_decay[{i}]",
                word,
                "a word of parameter names (e.g. norm), without dots or spaces",
            )
        _check(0 <= self.momentum < 1, "train_seg.momentum", self.momentum, "in [0, 1)")
        _check(self.poly_power >= 0, "train_seg.poly_power", self.poly_power, ">= 0")
        _check_schedule("train_seg", self.warmup, self.head_lr_mult)
        _check(
            all(c > 0 and c % 32 == 0 for c in self.crop),
            "train_seg.crop",
            list(self.crop),
            "[H, W], positive multiples of 32 (the encoder downsamples 5 times)",
        )
        _check(
            0 < self.scale[0] <= self.scale[1],
            "train_seg.scale",
            list(self.scale),
            "[min, max] with 0 < min <= max",
        )
        _check(
            0 <= self.color_jitter <= 0.5, "train_seg.color_jitter", self.color_jitter, "[0, 0.5]"
        )
        _check(self.threads >= 0, "train_seg.threads", self.threads, "an integer >= 0")
        _check(self.val_every >= 0, "train_seg.val_every", self.val_every, "an integer >= 0")

    def _check_rows(self) -> None:
        """Ensembles and rounds: names no other row has, members and sources that exist, and
        no row that depends on itself (a round labelled by an ensemble of that round)."""
        trained = {**self.variants, **self.rounds}
        for section, rows, others in (
            ("ensembles", self.ensembles, set(self.variants)),
            ("rounds", self.rounds, {*self.variants, *self.ensembles}),
        ):
            for name in rows:
                _check(
                    name.replace("_", "").isalnum() and name not in others,
                    f"train_seg.{section}",
                    name,
                    "names of letters, digits and '_' that no variant, ensemble or round has",
                )
        for name, ensemble in self.ensembles.items():
            ensemble.validate(f"train_seg.ensembles.{name}", trained)
        rows = [*self.variants, *self.ensembles, *self.rounds]
        for name, spec in self.rounds.items():
            key = f"train_seg.rounds.{name}"
            spec.validate(key)
            _check(
                spec.variant in self.variants,
                f"{key}.variant",
                spec.variant,
                f"a variant of train_seg.variants: one of {', '.join(self.variants)}",
            )
            base = self.variants[spec.variant]
            for side in ("images", "labels"):
                _check(
                    getattr(spec, side) == getattr(base, side),
                    f"{key}.{side}",
                    getattr(spec, side),
                    f"{getattr(base, side)}, variant {spec.variant}'s {side}",
                )
            _check(
                spec.pseudo_labels in rows and spec.pseudo_labels != name,
                f"{key}.pseudo_labels",
                spec.pseudo_labels,
                f"another row: a variant, ensemble or round ({', '.join(rows)})",
            )
        for name, spec in self.rounds.items():
            seen, todo = set(), [spec.pseudo_labels]
            while todo:
                row = todo.pop()
                _check(
                    row != name,
                    f"train_seg.rounds.{name}.pseudo_labels",
                    spec.pseudo_labels,
                    f"a row that does not depend on round {name} itself",
                )
                if row in seen:
                    continue
                seen.add(row)
                if row in self.ensembles:
                    todo.extend(self.ensembles[row].members)
                elif row in self.rounds:
                    todo.append(self.rounds[row].pseudo_labels)

    def _check_variant_links(self, name: str, spec: VariantSpec) -> None:
        """What a variant's settings ask of the others and of the shared ones: a warm start from
        another variant (no cycle), MIC blocks that tile the crop."""
        key = f"train_seg.variants.{name}"
        if spec.warm_start is not None:
            others = [other for other in self.variants if other != name]
            _check(
                spec.warm_start.init_from in others,
                f"{key}.warm_start.init_from",
                spec.warm_start.init_from,
                f"another variant of train_seg.variants: one of {', '.join(others)}",
            )
            chain, source = [name], spec.warm_start.init_from
            while source is not None and source not in chain:
                chain.append(source)
                warm = self.variants[source].warm_start if source in self.variants else None
                source = warm.init_from if warm is not None else None
            _check(
                source is None,
                f"{key}.warm_start.init_from",
                spec.warm_start.init_from,
                f"a variant not warm-started from this one "
                f"(cycle {' -> '.join(chain)} -> {source})",
            )
        distance = spec.self_training.feature_distance if spec.self_training is not None else None
        if distance is not None:
            _check(
                self.encoder_weights is not None,
                f"{key}.self_training.feature_distance",
                dataclasses.asdict(distance),
                "absent while train_seg.encoder_weights is null (the distance anchors the "
                "student to the features of the pretrained encoder it starts from)",
            )
        mic = spec.self_training.mic if spec.self_training is not None else None
        if mic is not None:
            _check(
                all(c % mic.mask_block_size == 0 for c in self.crop),
                f"{key}.self_training.mic.mask_block_size",
                mic.mask_block_size,
                f"a divisor of both sides of train_seg.crop={list(self.crop)}",
            )

    def schedule(self, name: str) -> tuple[float, float]:
        """Variant `name`'s (warmup, head_lr_mult): its warm start's, else train_seg's."""
        warm_start = self.variants[name].warm_start
        if warm_start is not None:
            return warm_start.warmup, warm_start.head_lr_mult
        return self.warmup, self.head_lr_mult

    def variant(self, name: str) -> VariantSpec:
        """The entry of `variants` called `name`, or a ConfigError listing the ones there are."""
        if name not in self.variants:
            raise ConfigError(
                f"unknown variant {name!r}; train_seg.variants in params.yaml has: "
                f"{', '.join(self.variants)}"
            )
        return self.variants[name]


@dataclasses.dataclass(frozen=True)
class SlidingWindowSpec:
    """`window`-sized crops of the working-size frame every `stride` pixels (H, W each), their
    logits averaged where they overlap: mmseg's slide_inference, which HRDA and MIC score with
    (1024x1024 windows, stride 512, on 1024x2048 frames)."""

    window: tuple[int, int]
    stride: tuple[int, int]

    def validate(self, key: str) -> None:
        _check(
            all(side > 0 and side % 32 == 0 for side in self.window),
            f"{key}.window",
            list(self.window),
            "[H, W], positive multiples of 32 (the encoder downsamples 5 times)",
        )
        _check(
            all(0 < step <= side for step, side in zip(self.stride, self.window)),
            f"{key}.stride",
            list(self.stride),
            f"[H, W], each in [1, its side of {key}.window={list(self.window)}]",
        )


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    batch: int
    precision: Precision
    # Predictions on the first N val frames are kept for the report's prediction grid.
    saved_predictions: int
    # Classes the headline mIoU averages: 19 (Cityscapes), 16 (the SYNTHIA protocol: no terrain,
    # truck, train) or 13 (also no wall, fence, pole). All three are reported either way.
    classes: Literal[19, 16, 13]
    # null: the net sees each working-size val frame whole (DAFormer's protocol when the working
    # size is 512x1024); else sliding windows over it (HRDA's and MIC's protocol at 1024x2048).
    sliding_window: SlidingWindowSpec | None

    def __post_init__(self) -> None:
        _check(self.batch > 0, "evaluate.batch", self.batch, "an integer > 0")
        if self.sliding_window is not None:
            self.sliding_window.validate("evaluate.sliding_window")


@dataclasses.dataclass(frozen=True)
class FidConfig:
    # torch-fidelity's Inception-v3 state dict (a local file) for the translators' FID / KID;
    # null: not computed (README, "Translation quality").
    inception_weights: str | None


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    n_samples: int

    def __post_init__(self) -> None:
        _check(self.n_samples > 0, "report.n_samples", self.n_samples, "an integer > 0")


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    experiment: str
    enabled: bool
    # Also log each trained model to MLflow (and register the segmentation nets). DVC's cache
    # keeps every model already; false keeps each model once, there, and the MLflow run records
    # the model folder and its weights digest instead.
    log_models: bool


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How `stages/launch.py` starts training stages: one process, or torchrun."""

    nproc_per_node: int
    nnodes: int
    rdzv_endpoint: str

    def __post_init__(self) -> None:
        _check(self.nproc_per_node >= 1, "distributed.nproc_per_node", self.nproc_per_node, ">= 1")
        _check(self.nnodes >= 1, "distributed.nnodes", self.nnodes, ">= 1")


@dataclasses.dataclass(frozen=True)
class Params:
    data: DataConfig
    demo_data: DemoDataConfig
    prepare: PrepareConfig
    cyclegan: CycleGANConfig
    cut: CUTConfig
    translate: TranslateConfig
    train_seg: TrainSegConfig
    evaluate: EvaluateConfig
    fid: FidConfig
    report: ReportConfig
    # Where runs are logged and how many processes train: neither changes an output.
    tracking: TrackingConfig = field(metadata=RUNTIME)
    distributed: DistributedConfig = field(metadata=RUNTIME)

    def __post_init__(self) -> None:
        # Crops are cut from images at the working resolution, so they must fit inside it. The
        # cut section's crop is only a default: each named translator's own must fit, named
        # where it is set.
        translators = [
            (f"cut.translators.{name}.crop" if "crop" in entry else "cut.crop", name)
            for name, entry in self.cut.translators.items()
        ]
        for key, crop in (
            ("cyclegan.crop", self.cyclegan.crop),
            *((key, self.cut.translator(name).crop) for key, name in translators),
            ("train_seg.crop", self.train_seg.crop),
        ):
            _check(
                crop[0] <= self.data.size[0] and crop[1] <= self.data.size[1],
                key,
                list(crop),
                f"a crop no bigger than data.size={list(self.data.size)}",
            )


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if args[1:] == (Ellipsis,):
            return f"a list of {_type_name(args[0])}s"
        return f"a list of {len(args)} {_type_name(args[0])}s"
    if origin is dict:
        return f"a mapping of names to {_type_name(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        keys = ", ".join(f.name for f in dataclasses.fields(tp))
        return f"a mapping with keys {keys}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(
        tp, str(tp)
    )


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Turn a YAML value into `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is Literal:
        _check(value in typing.get_args(tp), key, value, _type_name(tp))
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            _check(type(None) in args, key, value, _type_name(tp))
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            # One type besides null (an optional block): its own error names the inner key.
            raise errors[0]
        _fail(key, value, _type_name(tp))
    if origin is tuple and typing.get_args(tp)[1:] == (Ellipsis,):
        _check(isinstance(value, list | tuple), key, value, _type_name(tp))
        item = typing.get_args(tp)[0]
        return tuple(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        args = typing.get_args(tp)
        _check(
            isinstance(value, list | tuple) and len(value) == len(args),
            key,
            value,
            _type_name(tp),
        )
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        _check(isinstance(value, Mapping), key, value, _type_name(tp))
        value_type = typing.get_args(tp)[1]
        return {str(k): _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value  # checked by the section that holds it (cut.translators' overrides)
    if tp is bool:
        _check(isinstance(value, bool), key, value, "true/false")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, value, "an integer")
        return value
    if tp is float:
        _check(
            isinstance(value, int | float) and not isinstance(value, bool), key, value, "a number"
        )
        return float(value)
    if tp is str:
        _check(isinstance(value, str) and value != "", key, value, "a non-empty string")
        return value
    raise TypeError(f"unsupported config type {tp} for {key}")


def _build(cls: type, raw: Any, key: str) -> Any:
    _check(isinstance(raw, Mapping), key, raw, _type_name(cls))
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{key}." if key else ""
        raise ConfigError(
            f"params.yaml: unknown key {where}{unknown[0]}; allowed keys under "
            f"{key or 'the top level'}: {', '.join(fields)}"
        )
    kwargs = {}
    for name, spec in fields.items():
        sub = f"{key}.{name}" if key else name
        if name in raw:
            kwargs[name] = _convert(raw[name], hints[name], sub)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise ConfigError(f"params.yaml: missing key {sub} ({_type_name(hints[name])})")
    return cls(**kwargs)


def parse_params(raw: Mapping[str, Any]) -> Params:
    """Validate a params mapping (as read from YAML) into `Params`."""
    return _build(Params, raw, "")


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml; a missing or malformed file names itself in the error."""
    return parse_params(read_yaml_mapping(path))


def run_settings(config: Any) -> dict[str, Any]:
    """The fields of a config section that define a run (all but the ``runtime`` ones), as plain
    values (tuples become lists), so they compare equal to a checkpoint's saved copy."""
    plain = to_dict(config)
    return {
        spec.name: plain[spec.name]
        for spec in dataclasses.fields(config)
        if not spec.metadata.get("runtime")
    }


def to_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a config section, for logging (tuples become lists)."""
    return _lists(dataclasses.asdict(config))


def _lists(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _lists(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


def flatten_mapping(mapping: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.update(flatten_mapping(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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


def check_paths(params: Params, generated: Path) -> None:
    """The files and folders params.yaml names that must exist before the chain starts: the
    two dataset roots (and a frame list), and local weights files (encoder, Inception); roots inside
    `generated` (the demo data, which a stage writes) need not exist yet. ConfigError names the
    key and the path."""
    for key, spec in (("data.source", params.data.source), ("data.target", params.data.target)):
        if not Path(spec.root).is_dir() and not Path(spec.root).is_relative_to(generated):
            _fail(f"{key}.root", spec.root, "an existing folder in the dataset's layout")
        if spec.list_file is not None and not Path(spec.list_file).is_file():
            _fail(f"{key}.list_file", spec.list_file, "an existing file of frame names, or null")
    for key, weights in (
        ("train_seg.encoder_weights", params.train_seg.encoder_weights),
        ("fid.inception_weights", params.fid.inception_weights),
    ):
        if weights is not None and not Path(weights).is_file():
            _fail(key, weights, "an existing local weights file, or null")


def random_init_warning(params: Params, generated: Path) -> str | None:
    """What starting the segmentation encoders from random weights costs on real data, or None
    (the demo, whose roots lie inside `generated`, or a weights file is set)."""
    roots = [Path(params.data.source.root), Path(params.data.target.root)]
    if params.train_seg.encoder_weights is not None or all(
        root.is_relative_to(generated) for root in roots
    ):
        return None
    return (
        "warning: train_seg.encoder_weights is null, so every segmentation net starts from "
        "random weights. Every published GTA5 -> Cityscapes result starts from ImageNet-"
        "pretrained encoders (DeepLabV2-ResNet-101: source only 37.3, DACS 52.1 mIoU; DAFormer "
        "on MiT-B5: 68.3); from random weights expect far lower scores for every variant. "
        "README, 'Backbones': save a pretrained encoder once and point this setting at it."
    )
