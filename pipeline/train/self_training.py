"""Self-training on unlabelled real frames: DACS (Tranheden et al., WACV 2021) with DAFormer's
rare-class sampling (Hoyer et al., CVPR 2022).

Each step the student learns from a labelled source batch and from a mixed batch: ClassMix pastes
the pixels of half the classes of each source frame onto a real frame, whose other pixels carry the
pseudo-labels of a teacher, an exponential moving average of the student. Pseudo-labelled pixels
count by the share of the teacher's confident pixels in the batch, so early, uncertain teachers
teach little. Source frames are drawn by class, rare classes more often, so that poles, signs and
people are seen. The mixed images get DACS's strong colour jitter and blur (kornia).

MIC (Hoyer et al., CVPR 2023) adds a third batch: the same real frames with random blocks masked
out, which the student must label as the teacher labelled the whole frames.

`DACSStep` and `MICStep` are the step objects the segmentation loop
(`pipeline.train.segmentation`) calls for a variant with a `self_training` block (with a `mic`
block: MIC). The run layer checkpoints the student, the teacher (the step's `state()`), the
optimizer, the schedule and every random stream, so a resumed run continues bit for bit on CPU
like the other loops.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import kornia.augmentation as K
import numpy as np
import torch
from torch import Tensor, nn

from pipeline.config import SelfTrainingSpec, TrainSegConfig
from pipeline.data.augment import PairedAugment
from pipeline.data.labels import IGNORE_INDEX
from pipeline.data.split import PreparedSplit
from pipeline.data.tensors import IMAGENET_MEAN, to_unit_float
from pipeline.losses import SegmentationLoss
from pipeline.train.run import Stateful

if TYPE_CHECKING:  # the loop module imports this one for its step factory
    from pipeline.train.segmentation import Student

# DAFormer's rare-class sampling counts a GTA5 frame as showing a class from 3000 of its
# 1914 x 1052 pixels on: the same share of a frame at any working resolution.
RARE_CLASS_MIN_SHARE = 3000 / (1914 * 1052)
# DACS's strong augmentation of mixed images (DAFormer's defaults): colour jitter of strength
# 0.2 on one image in five, Gaussian blur (sigma 0.15-1.15, kernel ~10% of the height) on half.
JITTER_STRENGTH, JITTER_PROBABILITY, BLUR_PROBABILITY = 0.2, 0.2, 0.5


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> None:
    """teacher <- a * teacher + (1 - a) * student over the parameters, a = min(1 - 1/(step + 1),
    decay): the teacher copies the student at step 0 and averages over longer spans later, as in
    DAFormer. Buffers (batch-norm statistics) stay the teacher's own."""
    weight = min(1.0 - 1.0 / (step + 1), decay)
    for mean, current in zip(teacher.parameters(), student.parameters(), strict=True):
        mean.lerp_(current.detach(), 1.0 - weight)


def pseudo_labels(logits: Tensor, confidence: float, valid: Tensor) -> tuple[Tensor, Tensor]:
    """The teacher's labels of (B, C, H, W) `logits` and their weight.

    Returns (B, H, W) int64 labels (IGNORE_INDEX where `valid` is false, e.g. crop padding) and
    the share of valid pixels whose softmax probability reaches `confidence` (a 0-d tensor, DACS's
    one weight for every pseudo-labelled pixel of the batch).
    """
    probability, labels = torch.softmax(logits.float(), dim=1).max(dim=1)  # (B, H, W) each
    labels = torch.where(valid, labels, IGNORE_INDEX)
    confident = (probability >= confidence) & valid
    return labels, confident.sum() / valid.sum().clamp(min=1)


def class_mix_masks(labels: Tensor) -> Tensor:
    """(B, H, W) bool: for each source label map, the pixels of a random half of its classes
    (rounded up; ignored pixels never). Draws from torch's global RNG."""
    masks = torch.zeros_like(labels, dtype=torch.bool)
    for i, label in enumerate(labels):
        classes = torch.unique(label)
        classes = classes[classes != IGNORE_INDEX]
        chosen = classes[torch.randperm(len(classes))[: math.ceil(len(classes) / 2)]]
        masks[i] = torch.isin(label, chosen.to(label.device))
    return masks


def class_mix(
    source: Tensor,
    source_labels: Tensor,
    target: Tensor,
    target_labels: Tensor,
    target_weight: Tensor,
    mask: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Paste the `mask` pixels (B, H, W) of `source` (B, 3, H, W) onto `target`.

    Returns the mixed images, their labels (source labels on pasted pixels, the target's
    pseudo-labels elsewhere) and per-pixel loss weights (1 on pasted pixels, `target_weight`
    elsewhere).
    """
    images = torch.where(mask[:, None], source, target)
    labels = torch.where(mask, source_labels, target_labels)
    weights = torch.where(mask, 1.0, target_weight.expand_as(mask).float())
    return images, labels, weights


class RareClassSampler:
    """Source frames drawn by class (DAFormer's rare-class sampling).

    A class is drawn with probability proportional to exp((1 - its pixel share) / temperature),
    then a frame showing it (covering RARE_CLASS_MIN_SHARE of the frame) uniformly; classes no
    frame shows are never drawn. Temperature 0 draws frames uniformly. Uses torch's global RNG.
    """

    def __init__(self, class_pixels: np.ndarray, temperature: float) -> None:
        counts = np.asarray(class_pixels, dtype=np.float64)  # (N, C)
        self.frames = len(counts)
        self.temperature = temperature
        frame_pixels = counts.sum(axis=1, keepdims=True).clip(min=1)
        shows = counts / frame_pixels >= RARE_CLASS_MIN_SHARE  # (N, C)
        self.classes = [c for c in range(counts.shape[1]) if shows[:, c].any()]
        self.frames_with = [torch.from_numpy(np.flatnonzero(shows[:, c])) for c in self.classes]
        share = counts.sum(axis=0) / max(counts.sum(), 1.0)  # (C,)
        if temperature > 0 and self.classes:
            logits = torch.from_numpy((1.0 - share[self.classes]) / temperature)
            self.class_probability = torch.softmax(logits, dim=0)

    def sample(self, batch: int) -> np.ndarray:
        """(batch,) frame indices."""
        if self.temperature == 0 or not self.classes:
            return torch.randint(self.frames, (batch,)).numpy()
        drawn = torch.multinomial(self.class_probability, batch, replacement=True)
        rows = [self.frames_with[c][torch.randint(len(self.frames_with[c]), ())] for c in drawn]
        return torch.stack(rows).numpy()


def strong_augment(crop: tuple[int, int]) -> nn.Module:
    """DACS's augmentation of mixed images, for (B, 3, H, W) floats in [0, 1]."""
    kernel = max(3, 2 * round(0.05 * crop[0]) + 1)  # odd, ~10% of the crop height
    return nn.Sequential(
        K.ColorJitter(
            JITTER_STRENGTH, JITTER_STRENGTH, JITTER_STRENGTH, JITTER_STRENGTH, p=JITTER_PROBABILITY
        ),
        K.RandomGaussianBlur((kernel, kernel), (0.15, 1.15), p=BLUR_PROBABILITY),
    )


class DACSStep:
    """One DACS step with rare-class sampling: a labelled source batch and a ClassMix batch."""

    def __init__(
        self,
        student: Student,
        config: TrainSegConfig,
        spec: SelfTrainingSpec,
        images: PreparedSplit,
        labels: PreparedSplit,
        target: PreparedSplit,
    ) -> None:
        self.student, self.spec = student, spec
        self.images, self.labels, self.target = images, labels, target
        self.teacher = _frozen_copy(student.model)
        self.sampler = RareClassSampler(labels.class_pixels(), spec.rare_class_temperature)
        self.augment = PairedAugment(config.crop, config.scale, config.flip, config.color_jitter)
        # Target frames: geometry only, so the teacher sees them as the student later does.
        self.weak = PairedAugment(config.crop, config.scale, config.flip, 0.0)
        self.strong = strong_augment(config.crop)
        self.loss = SegmentationLoss(config.loss)
        # The batch is shared: half labelled source frames, half mixed frames (DACS trains on two
        # of each per GPU), so a step costs about what a plain variant's step does, plus the
        # teacher.
        self.pairs = max(1, config.batch // 2)

    def state(self) -> dict[str, Stateful]:
        return {"teacher": self.teacher}

    def params(self) -> dict[str, Any]:
        return {"train_images": len(self.images.names), "target_images": len(self.target.names)}

    def __call__(self, step: int) -> dict[str, Tensor]:
        values, _ = self.learn()
        return values

    def learn(self) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor, Tensor]]:
        """DACS's forward and backward passes: the step's values, and the pseudo-labelled real
        batch they used (`pseudo_labelled_target`), for steps that learn more from it."""
        device = self.student.device
        rows = self.sampler.sample(self.pairs)
        source = to_unit_float(torch.from_numpy(self.images.images[rows])).to(device)
        source_labels = torch.from_numpy(self.labels.labels[rows]).long().to(device)
        source, source_labels = self.augment(source, source_labels)  # (B, 3, h, w), (B, h, w)
        real, pseudo, pseudo_weight = self.pseudo_labelled_target()
        mixed, mixed_labels, mixed_weights = class_mix(
            source, source_labels, real, pseudo, pseudo_weight, class_mix_masks(source_labels)
        )
        mixed = self.strong(mixed)

        loss = self.loss(self.student(source), source_labels)
        loss.backward()  # before the mixed forward: one graph in memory at a time
        loss_mix = self.loss(self.student(mixed), mixed_labels, mixed_weights)
        loss_mix.backward()
        values = {"loss": loss, "loss_mix": loss_mix, "pseudo_weight": pseudo_weight}
        return values, (real, pseudo, pseudo_weight)

    def pseudo_labelled_target(self) -> tuple[Tensor, Tensor, Tensor]:
        """A random batch of real frames (B, 3, h, w) (weak augmentation), the teacher's labels
        of them (B, h, w) and their weight (0-d), as `pseudo_labels`."""
        device = self.student.device
        real_rows = torch.randint(len(self.target.names), (self.pairs,)).numpy()
        real = to_unit_float(torch.from_numpy(self.target.images[real_rows])).to(device)
        blank = torch.zeros(real.shape[0], *real.shape[2:], dtype=torch.long, device=device)
        real, inside = self.weak(real, blank)  # `inside` is 0 on image pixels, IGNORE on padding
        # The teacher labels the real frames with batch statistics, as in DAFormer.
        with torch.no_grad():
            teacher_logits = self.student(real, self.teacher)
        pseudo, pseudo_weight = pseudo_labels(teacher_logits, self.spec.confidence, inside == 0)
        return real, pseudo, pseudo_weight

    def after_update(self, step: int) -> None:
        ema_update(self.teacher, self.student.model, self.spec.ema_decay, step)


def block_mask(
    batch: int, size: tuple[int, int], block: int, ratio: float, device: torch.device
) -> Tensor:
    """(B, 1, H, W) bool, true on kept pixels: the (H, W) frame cut into `block`-pixel squares,
    each masked with probability `ratio` (MIC's block masking). H and W are multiples of `block`.
    Draws from torch's global RNG."""
    kept = torch.rand(batch, 1, size[0] // block, size[1] // block, device=device) >= ratio
    return kept.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)


def mask_images(images: Tensor, kept: Tensor) -> Tensor:
    """(B, 3, H, W) images in [0, 1] with the pixels outside `kept` (B, 1, H, W) set to the
    ImageNet mean colour: 0 after normalisation, as MIC zeroes the normalised image."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype)
    return torch.where(kept, images, mean[:, None, None])


class MICStep(DACSStep):
    """DACS, and MIC's masked image consistency (Hoyer et al., CVPR 2023): the student also
    learns the teacher's pseudo-labels of the step's real frames (weighted by confidence as in
    DACS) from a copy with its own strong augmentation and random blocks masked out."""

    def __init__(
        self,
        student: Student,
        config: TrainSegConfig,
        spec: SelfTrainingSpec,
        images: PreparedSplit,
        labels: PreparedSplit,
        target: PreparedSplit,
    ) -> None:
        super().__init__(student, config, spec, images, labels, target)
        assert spec.mic is not None
        self.mic = spec.mic

    def __call__(self, step: int) -> dict[str, Tensor]:
        values, (real, pseudo, pseudo_weight) = self.learn()
        kept = block_mask(
            real.shape[0],
            real.shape[-2:],
            self.mic.mask_block_size,
            self.mic.mask_ratio,
            real.device,
        )
        masked = mask_images(self.strong(real), kept)  # (B, 3, h, w)
        weights = pseudo_weight.expand_as(pseudo).float()
        loss_masked = self.loss(self.student(masked), pseudo, weights)
        (self.mic.weight * loss_masked).backward()
        return {**values, "loss_masked": loss_masked}


def _frozen_copy(model: nn.Module) -> nn.Module:
    """The teacher: the student's twin, never trained by gradients, in train mode."""
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    return teacher.train()
