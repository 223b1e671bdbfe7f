"""The unpaired translators' settings: what every translator's training shares, CycleGAN's
(``cyclegan``) and CUT's (``cut``) on top of it, and ``translate``'s."""

from __future__ import annotations

import dataclasses
import itertools
import typing
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, Literal

from pipeline.config.base import RUNTIME, ConfigError, Precision, check
from pipeline.config.convert import convert


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
        check(values[name] > 0, key(name), values[name], "an integer > 0")
    check(0 < values["lr"] < 1, key("lr"), values["lr"], "a number in (0, 1)")
    for name in ("beta1", "beta2"):
        check(0 <= values[name] < 1, key(name), values[name], "a number in [0, 1)")
    check(
        0 <= values["decay_from"] <= values["iters"],
        key("decay_from"),
        values["decay_from"],
        f"an integer in [0, iters={values['iters']}]",
    )
    # A ResNet generator downsamples twice; a U-Net as many times as its name's size allows.
    netG = values["netG"]
    multiple = {"unet_128": 128, "unet_256": 256}.get(netG, 4)
    check(
        all(c > 0 and c % multiple == 0 for c in values["crop"]),
        key("crop"),
        list(values["crop"]),
        f"[H, W], positive multiples of {multiple} for netG={netG}",
    )
    check(values["max_bad_steps"] >= 0, key("max_bad_steps"), values["max_bad_steps"], ">= 0")
    check(values["threads"] >= 0, key("threads"), values["threads"], "an integer >= 0")


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
            check(value >= 0, f"cyclegan.{name}", value, "a number >= 0")
        check(self.pool_size >= 0, "cyclegan.pool_size", self.pool_size, "an integer >= 0")


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
        check(
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
        values.update({f: convert(v, hints[f], key(f)) for f, v in overrides.items()})
        for setting, default in CUT_MODE_DEFAULTS[values["mode"]].items():
            if values[setting] is None:
                values[setting] = default
        _check_cut(values, key)
        return CUTConfig(**values, translators={})


def _check_cut(values: Mapping[str, Any], key: Callable[[str], str]) -> None:
    """Range checks of a CUT section or translator; `key` names a setting where it is set."""
    _check_translator_training(values, key)
    for name in ("num_patches", "netF_nc"):
        check(values[name] > 0, key(name), values[name], "an integer > 0")
    check(values["lambda_gan"] >= 0, key("lambda_gan"), values["lambda_gan"], "a number >= 0")
    lambda_nce = values["lambda_nce"]
    check(
        lambda_nce is None or lambda_nce >= 0,
        key("lambda_nce"),
        lambda_nce,
        "a number >= 0, or null for the mode's default",
    )
    check(values["nce_t"] > 0, key("nce_t"), values["nce_t"], "a number > 0")
    last = _TRUNK_START + _RESNET_BLOCKS[values["netG"]] - 1
    layers = list(values["nce_layers"])
    check(
        len(layers) > 0
        and all(a < b for a, b in itertools.pairwise(layers))
        and all(0 <= i <= last for i in layers),
        key("nce_layers"),
        layers,
        f"increasing indices of {values['netG']}'s layers, from 0 to {last} (its last "
        "residual block)",
    )


@dataclasses.dataclass(frozen=True)
class TranslateConfig:
    batch: int
    precision: Precision
    threads: int = field(metadata=RUNTIME)  # 0 = torch's default
    # Threads that encode and write PNGs (and count colours) while the next batch translates.
    workers: int = field(metadata=RUNTIME)

    def __post_init__(self) -> None:
        check(self.batch > 0, "translate.batch", self.batch, "an integer > 0")
        check(self.threads >= 0, "translate.threads", self.threads, "an integer >= 0")
        check(self.workers >= 1, "translate.workers", self.workers, "an integer >= 1")
