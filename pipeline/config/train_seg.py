"""The segmentation nets' training settings (``train_seg``): the shared recipe, and the
variants, ensembles and rounds, checked against each other."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Literal

from pipeline.config.base import RUNTIME, ConfigError, Precision, check
from pipeline.config.variants import EnsembleSpec, RoundSpec, VariantSpec, check_schedule


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
        check(len(self.variants) > 0, "train_seg.variants", self.variants, "at least one variant")
        self._check_rows()
        for name, spec in self.variants.items():
            check(
                name.replace("_", "").isalnum(),
                "train_seg.variants",
                name,
                "variant names of letters, digits and '_'",
            )
            spec.validate(f"train_seg.variants.{name}")
            self._check_variant_links(name, spec)
        for name in ("iters", "batch", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            check(value > 0, f"train_seg.{name}", value, "an integer > 0")
        check(0 < self.lr < 10, "train_seg.lr", self.lr, "a number in (0, 10)")
        check(self.weight_decay >= 0, "train_seg.weight_decay", self.weight_decay, ">= 0")
        for i, word in enumerate(self.no_weight_decay):
            check(
                word.strip() == word and "." not in word,
                f"train_seg.no_weight_decay[{i}]",
                word,
                "a word of parameter names (e.g. norm), without dots or spaces",
            )
        check(0 <= self.momentum < 1, "train_seg.momentum", self.momentum, "in [0, 1)")
        check(self.poly_power >= 0, "train_seg.poly_power", self.poly_power, ">= 0")
        check_schedule("train_seg", self.warmup, self.head_lr_mult)
        check(
            all(c > 0 and c % 32 == 0 for c in self.crop),
            "train_seg.crop",
            list(self.crop),
            "[H, W], positive multiples of 32 (the encoder downsamples 5 times)",
        )
        check(
            0 < self.scale[0] <= self.scale[1],
            "train_seg.scale",
            list(self.scale),
            "[min, max] with 0 < min <= max",
        )
        check(
            0 <= self.color_jitter <= 0.5, "train_seg.color_jitter", self.color_jitter, "[0, 0.5]"
        )
        check(self.threads >= 0, "train_seg.threads", self.threads, "an integer >= 0")
        check(self.val_every >= 0, "train_seg.val_every", self.val_every, "an integer >= 0")

    def _check_rows(self) -> None:
        """Ensembles and rounds: names no other row has, members and sources that exist, and
        no row that depends on itself (a round labelled by an ensemble of that round)."""
        trained = {**self.variants, **self.rounds}
        for section, rows, others in (
            ("ensembles", self.ensembles, set(self.variants)),
            ("rounds", self.rounds, {*self.variants, *self.ensembles}),
        ):
            for name in rows:
                check(
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
            check(
                spec.variant in self.variants,
                f"{key}.variant",
                spec.variant,
                f"a variant of train_seg.variants: one of {', '.join(self.variants)}",
            )
            base = self.variants[spec.variant]
            for side in ("images", "labels"):
                check(
                    getattr(spec, side) == getattr(base, side),
                    f"{key}.{side}",
                    getattr(spec, side),
                    f"{getattr(base, side)}, variant {spec.variant}'s {side}",
                )
            check(
                spec.pseudo_labels in rows and spec.pseudo_labels != name,
                f"{key}.pseudo_labels",
                spec.pseudo_labels,
                f"another row: a variant, ensemble or round ({', '.join(rows)})",
            )
        for name, spec in self.rounds.items():
            seen, todo = set(), [spec.pseudo_labels]
            while todo:
                row = todo.pop()
                check(
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
            check(
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
            check(
                source is None,
                f"{key}.warm_start.init_from",
                spec.warm_start.init_from,
                f"a variant not warm-started from this one "
                f"(cycle {' -> '.join(chain)} -> {source})",
            )
        distance = spec.self_training.feature_distance if spec.self_training is not None else None
        if distance is not None:
            check(
                self.encoder_weights is not None,
                f"{key}.self_training.feature_distance",
                dataclasses.asdict(distance),
                "absent while train_seg.encoder_weights is null (the distance anchors the "
                "student to the features of the pretrained encoder it starts from)",
            )
        mic = spec.self_training.mic if spec.self_training is not None else None
        if mic is not None:
            check(
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
