"""The blocks a segmentation variant is made of (FDA, self-training with MIC and DAFormer's
feature distance, a warm start, labelled target frames) and the rows trained or scored beside the
variants (ensembles, self-supervised rounds)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config.base import TRAIN_CLASS_NAMES, VAL_SPLIT, check


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
        check(
            self.mask_block_size > 0,
            f"{key}.mask_block_size",
            self.mask_block_size,
            "an integer > 0",
        )
        check(0 < self.mask_ratio < 1, f"{key}.mask_ratio", self.mask_ratio, "a number in (0, 1)")
        check(self.weight > 0, f"{key}.weight", self.weight, "a number > 0")


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
        check(self.weight > 0, f"{key}.weight", self.weight, "a number > 0")
        for i, name in enumerate(self.classes):
            check(
                name in TRAIN_CLASS_NAMES,
                f"{key}.classes[{i}]",
                name,
                f"one of the 19 classes: {', '.join(TRAIN_CLASS_NAMES)}",
            )
        check(bool(self.classes), f"{key}.classes", list(self.classes), "at least one class")
        check(
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
        check_schedule(key, self.warmup, self.head_lr_mult)


def check_schedule(key: str, warmup: float, head_lr_mult: float) -> None:
    """train_seg's learning-rate shape, or a warm start's own (`key`: the section)."""
    check(0 <= warmup < 1, f"{key}.warmup", warmup, "a number in [0, 1)")
    check(head_lr_mult > 0, f"{key}.head_lr_mult", head_lr_mult, "a number > 0")


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
        check(0 <= self.ema_decay < 1, f"{key}.ema_decay", self.ema_decay, "a number in [0, 1)")
        check(0 < self.confidence < 1, f"{key}.confidence", self.confidence, "a number in (0, 1)")
        check(
            self.rare_class_temperature >= 0,
            f"{key}.rare_class_temperature",
            self.rare_class_temperature,
            "a number >= 0 (0 samples source frames uniformly)",
        )
        check(
            0 <= self.rare_class_min_crop_ratio <= 1,
            f"{key}.rare_class_min_crop_ratio",
            self.rare_class_min_crop_ratio,
            "a number in [0, 1] (0: no crop redraw)",
        )
        check(
            0 < self.crop_max_class_share <= 1,
            f"{key}.crop_max_class_share",
            self.crop_max_class_share,
            "a number in (0, 1] (1: off)",
        )
        for side in ("top", "bottom"):
            share = getattr(self, f"pseudo_label_ignore_{side}")
            check(
                0 <= share < 1,
                f"{key}.pseudo_label_ignore_{side}",
                share,
                "a share of the crop height in [0, 1)",
            )
        check(
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
        check(self.weight > 0, f"{key}.weight", self.weight, "a number > 0")
        check(self.ita > 0, f"{key}.ita", self.ita, "a number > 0")


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
        check(
            Path(self.split).name != VAL_SPLIT,
            f"{key}.split",
            self.split,
            f"a labelled split other than {VAL_SPLIT}, the split every variant is scored on "
            f"(the target's train split: data/prepared/real_train)",
        )
        check(self.frames > 0, f"{key}.frames", self.frames, "an integer > 0")
        check(self.seed >= 0, f"{key}.seed", self.seed, "an integer >= 0")
        check(self.weight > 0, f"{key}.weight", self.weight, "a number > 0")


@dataclasses.dataclass(frozen=True)
class EnsembleSpec:
    """FDA's multi-band transfer (Yang & Soatto 2020, evaluation_multi.py): the class
    probabilities of three trained variants averaged, each weighted 1/3 (FDA: its nets of beta
    0.01, 0.05 and 0.09). Three exactly: dvc.yaml declares each member's model files."""

    members: tuple[str, ...]

    def validate(self, key: str, variants: Mapping[str, Any]) -> None:
        check(
            len(self.members) == ENSEMBLE_SIZE and len(set(self.members)) == ENSEMBLE_SIZE,
            f"{key}.members",
            list(self.members),
            f"{ENSEMBLE_SIZE} different variants",
        )
        for i, member in enumerate(self.members):
            check(
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
        check(0 <= self.quantile < 1, f"{key}.quantile", self.quantile, "a number in [0, 1)")
        check(
            0 < self.max_threshold <= 1,
            f"{key}.max_threshold",
            self.max_threshold,
            "a probability in (0, 1]",
        )
        check(self.weight > 0, f"{key}.weight", self.weight, "a number > 0")
        check(
            Path(self.split).name != VAL_SPLIT,
            f"{key}.split",
            self.split,
            f"a split other than {VAL_SPLIT}, the split every variant is scored on",
        )


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
        check(0 <= self.fda_beta < 0.5, f"{key}.fda_beta", self.fda_beta, "a number in [0, 0.5)")
        check(
            self.fda_beta == 0 or self.fda_style is not None,
            f"{key}.fda_style",
            self.fda_style,
            "a prepared split folder when fda_beta > 0",
        )
        if self.fda_entropy is not None:
            check(
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
