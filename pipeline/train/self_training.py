"""Self-training on unlabelled real frames: DACS (Tranheden et al., WACV 2021) with DAFormer's
rare-class sampling (Hoyer et al., CVPR 2022).

Each step the student learns from a labelled source batch and from a mixed batch: ClassMix pastes
the pixels of half the classes of each source frame onto a real frame, whose other pixels carry the
pseudo-labels of a teacher, an exponential moving average of the student. Pseudo-labelled pixels
count by the share of the teacher's confident pixels in the batch, so early, uncertain teachers
teach little. Source frames are drawn by class, rare classes more often, so that poles, signs and
people are seen, and (DAFormer's crop rules, when set) a frame's crop is redrawn until it shows
the class it was drawn for. The mixed images get DACS's strong colour jitter and blur (kornia),
decided once per batch as in the reference code.

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
from kornia.filters import gaussian_blur2d
from torch import Tensor, nn

from pipeline.config import FeatureDistanceSpec, SelfTrainingSpec, TrainSegConfig
from pipeline.data.augment import PairedAugment
from pipeline.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from pipeline.data.split import PreparedSplit
from pipeline.data.tensors import IMAGENET_MEAN, to_unit_float
from pipeline.losses import SegmentationLoss, label_patches, masked_feature_distance
from pipeline.models.segmentation import load_encoder_weights
from pipeline.train.run import Stateful

if TYPE_CHECKING:  # the step registry imports this one for its step factory
    from pipeline.train.segmentation_steps import Student

# DAFormer's rare-class sampling counts a GTA5 frame as showing a class from 3000 of its
# 1914 x 1052 pixels on: the same share of a frame at any working resolution. Its crop rule
# counts the crop's pixels at the 1280 x 720 its pipeline resizes GTA5 frames to.
RARE_CLASS_MIN_SHARE = 3000 / (1914 * 1052)
RARE_CLASS_CROP_SHARE = 3000 / (1280 * 720)
# Both crop rules give up after this many redraws and keep the last crop (uda_dataset.py's
# and mmseg RandomCrop's `range(10)`).
CROP_REDRAWS = 10
# DACS's strong augmentation of mixed images, as DACS (utils/transformsgpu.py) and DAFormer
# (mmseg/models/utils/dacs_transforms.py) run it: colour jitter of strength 0.2 on a batch when a
# uniform draw exceeds 0.2 (4 batches in 5), Gaussian blur when another exceeds 0.5 (1 in 2),
# sigma 0.15-1.15, the kernel ~10% of each side.
JITTER_STRENGTH, JITTER_THRESHOLD, BLUR_THRESHOLD = 0.2, 0.2, 0.5
BLUR_SIGMA = (0.15, 1.15)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> None:
    """teacher <- a * teacher + (1 - a) * student over the parameters, a = min(1 - 1/(step + 1),
    decay), as DAFormer's `_update_ema(step)`: step 0 copies the student, later steps average
    over longer spans. Buffers (batch-norm statistics) stay the teacher's own."""
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


def pseudo_label_crop(weight: Tensor, top: float, bottom: float) -> Tensor:
    """(B, H, W) pseudo-label weights with the top `top` and bottom `bottom` shares of the rows
    set to 0, rounded to whole rows (DAFormer's pseudo_weight_ignore_top / _bottom, which zero
    the weights after the confident share is counted over the whole crop)."""
    height = weight.shape[-2]
    rows_top, rows_bottom = round(top * height), round(bottom * height)
    if rows_top == 0 and rows_bottom == 0:
        return weight
    weight = weight.clone()
    weight[:, :rows_top] = 0
    weight[:, height - rows_bottom :] = 0
    return weight


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
    elsewhere: one weight (0-d) or one per pixel (B, H, W)).
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
        return self.sample_with_classes(batch)[0]

    def sample_with_classes(self, batch: int) -> tuple[np.ndarray, list[int | None]]:
        """(batch,) frame indices and the class each was drawn for (None when drawn
        uniformly)."""
        if self.temperature == 0 or not self.classes:
            return torch.randint(self.frames, (batch,)).numpy(), [None] * batch
        drawn = torch.multinomial(self.class_probability, batch, replacement=True).tolist()
        rows = [self.frames_with[c][torch.randint(len(self.frames_with[c]), ())] for c in drawn]
        return torch.stack(rows).numpy(), [self.classes[c] for c in drawn]


def class_dominates(labels: Tensor, max_share: float) -> bool:
    """mmseg RandomCrop's cat_max_ratio test failed: the (H, W) crop holds one labelled class
    only, or one class covers `max_share` of its labelled pixels or more."""
    counts = torch.bincount(labels[labels != IGNORE_INDEX].flatten())
    counts = counts[counts > 0]
    return len(counts) <= 1 or bool(counts.max() >= max_share * counts.sum())


class SourceCrops:
    """Augmented source crops under DAFormer's two crop rules, one frame at a time.

    A crop is redrawn while one class dominates it (`crop_max_class_share`, mmseg's
    cat_max_ratio), and the frame's whole augmentation is redrawn while the crop shows too few
    pixels of the class the frame was drawn for (`rare_class_min_crop_ratio`), each up to
    CROP_REDRAWS times after the first draw, the last draw kept unchecked, as uda_dataset.py's
    get_rare_class_sample reruns the pipeline whose RandomCrop redraws inside. A redraw here
    redraws the scale and flip too (mmseg redraws the crop's place only; DAFormer resizes GTA5
    frames to one size, so with train_seg.scale [1, 1] the two agree). With both rules off the
    batch is augmented in one call, as before.
    """

    def __init__(
        self, augment: PairedAugment, spec: SelfTrainingSpec, frame: tuple[int, int]
    ) -> None:
        self.augment = augment
        self.max_share = spec.crop_max_class_share
        self.min_pixels = (
            spec.rare_class_min_crop_ratio * RARE_CLASS_CROP_SHARE * frame[0] * frame[1]
        )
        self.rare_rule = spec.rare_class_min_crop_ratio > 0

    def __call__(
        self, images: Tensor, labels: Tensor, classes: list[int | None]
    ) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) images, (B, H, W) labels, the class each frame was drawn for -> the
        augmented crops, as PairedAugment."""
        if self.max_share >= 1 and not (self.rare_rule and any(c is not None for c in classes)):
            return self.augment(images, labels)
        crops = [self.crop(images[i : i + 1], labels[i : i + 1], c) for i, c in enumerate(classes)]
        return torch.cat([x for x, _ in crops]), torch.cat([y for _, y in crops])

    def crop(self, image: Tensor, label: Tensor, drawn_for: int | None) -> tuple[Tensor, Tensor]:
        x, y = self.crop_without_dominant_class(image, label)
        if self.rare_rule and drawn_for is not None:
            for _ in range(CROP_REDRAWS):
                if (y == drawn_for).sum() > self.min_pixels:
                    break
                x, y = self.crop_without_dominant_class(image, label)
        return x, y

    def crop_without_dominant_class(self, image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        x, y = self.augment(image, label)
        if self.max_share < 1:
            for _ in range(CROP_REDRAWS):
                if not class_dominates(y[0], self.max_share):
                    break
                x, y = self.augment(image, label)
        return x, y


def blur_kernel_size(side: int) -> int:
    """The blur kernel along a side of `side` pixels: ceil(side / 10), less one when even (odd,
    as dacs_transforms.gaussian_blur's floor(ceil(0.1 n) - 0.5 + ceil(0.1 n) % 2))."""
    size = math.ceil(0.1 * side)
    return size if size % 2 else size - 1


class StrongAugment:
    """DACS's augmentation of mixed images, for (B, 3, H, W) floats in [0, 1].

    Whether the batch is jittered and whether it is blurred is drawn once per call, as the
    references draw `color_jitter` and `blur` once per batch; kornia then draws each image's
    jitter factors. DAFormer blurs each mixed image with its own sigma (`strong_transform` runs per
    image); MIC's masked batch shares one (`per_image_sigma=False`). Draws from torch's RNG.
    """

    def __init__(self, crop: tuple[int, int], per_image_sigma: bool = True) -> None:
        self.kernel = (blur_kernel_size(crop[0]), blur_kernel_size(crop[1]))
        self.per_image_sigma = per_image_sigma
        s = JITTER_STRENGTH
        self.jitter = K.ColorJitter(s, s, s, s, p=1.0)

    def __call__(self, images: Tensor) -> Tensor:
        jitter = torch.rand(()).item() > JITTER_THRESHOLD
        blur = torch.rand(()).item() > BLUR_THRESHOLD
        if jitter:
            images = self.jitter(images)
        if blur:
            low, high = BLUR_SIGMA
            count = images.shape[0] if self.per_image_sigma else 1
            sigma = (low + (high - low) * torch.rand(count)).to(images.device)
            sigma = sigma.expand(images.shape[0])[:, None].expand(-1, 2)  # (B, 2): y, x
            images = gaussian_blur2d(images, self.kernel, sigma.to(images.dtype))
        return images


def deepest_features(encoder_output: Any) -> Tensor:
    """The last (deepest) feature map of what an smp encoder returns: a list of maps, or for timm
    ViT encoders (DPT) the pair (maps, class tokens)."""
    if isinstance(encoder_output, tuple) and isinstance(encoder_output[0], list):
        encoder_output = encoder_output[0]
    return encoder_output[-1]


class FeatureDistance:
    """DAFormer's ImageNet feature distance (`FeatureDistanceSpec`): the student's deepest
    encoder features of the source batch, taken from the forward pass that computes its source
    loss, against those of a frozen, eval-mode copy of the encoder as the weights file holds it,
    on the feature pixels whose label patch is one of the chosen classes (`calc_feat_dist`)."""

    def __init__(self, student: Student, config: TrainSegConfig, spec: FeatureDistanceSpec) -> None:
        if config.encoder_weights is None:
            raise ValueError("the feature distance needs train_seg.encoder_weights")
        self.student, self.spec = student, spec
        imagenet = copy.deepcopy(student.model)
        # From the weights file, not the student: a warm-started or resumed student no longer
        # holds the ImageNet encoder the distance anchors to.
        load_encoder_weights(imagenet, config.encoder_weights, config.encoder)
        self.encoder = imagenet.encoder.requires_grad_(False).eval()
        self.classes = torch.tensor(
            [CLASS_NAMES.index(name) for name in spec.classes], device=student.device
        )

    def logits_and_distance(self, source: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The student's (B, C, h, w) logits of `source` (B, 3, h, w) and the mean feature
        distance on its `labels` (B, h, w), both differentiable through the same forward."""
        kept: list[Tensor] = []
        hook = self.student.model.encoder.register_forward_hook(
            lambda module, inputs, output: kept.append(deepest_features(output))
        )
        try:
            logits = self.student(source)
        finally:
            hook.remove()
        features = kept[-1]  # (B, F, h / s, w / s)
        with torch.no_grad():
            reference = deepest_features(self.student.run(source, self.encoder))
        factor = labels.shape[-1] // features.shape[-1]
        patches = label_patches(labels, factor, self.spec.min_class_share, NUM_CLASSES)
        if patches.shape[-2:] != features.shape[-2:]:
            raise ValueError(
                f"the feature distance needs the encoder's deepest features at 1/{factor} of "
                f"the {tuple(labels.shape[-2:])} crop, got {tuple(features.shape[-2:])}"
            )
        mask = torch.isin(patches, self.classes)  # (B, h / s, w / s)
        return logits, masked_feature_distance(features, reference, mask)


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
        self.source_crops = SourceCrops(self.augment, spec, images.images.shape[1:3])  # (H, W)
        # Target frames: geometry only, so the teacher sees them as the student later does.
        self.weak = PairedAugment(config.crop, config.scale, config.flip, 0.0)
        self.strong = StrongAugment(config.crop)
        self.loss = SegmentationLoss(config.loss)
        # The batch is shared: half labelled source frames, half mixed frames (DACS trains on two
        # of each per GPU), so a step costs about what a plain variant's step does, plus the
        # teacher.
        self.pairs = max(1, config.batch // 2)
        distance = spec.feature_distance
        self.distance = FeatureDistance(student, config, distance) if distance else None

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
        rows, classes = self.sampler.sample_with_classes(self.pairs)
        source = to_unit_float(torch.from_numpy(self.images.images[rows])).to(device)
        source_labels = torch.from_numpy(self.labels.labels[rows]).long().to(device)
        source, source_labels = self.source_crops(source, source_labels, classes)  # (B, 3, h, w)
        real, pseudo, pseudo_weight, pseudo_share = self.pseudo_labelled_target()
        mixed, mixed_labels, mixed_weights = class_mix(
            source, source_labels, real, pseudo, pseudo_weight, class_mix_masks(source_labels)
        )
        mixed = self.strong(mixed)

        values: dict[str, Tensor] = {}
        if self.distance is None:
            loss = self.loss(self.student(source), source_labels)
            loss.backward()  # before the mixed forward: one graph in memory at a time
        else:
            logits, distance = self.distance.logits_and_distance(source, source_labels)
            loss = self.loss(logits, source_labels)
            (loss + self.distance.spec.weight * distance).backward()
            values["loss_feature_distance"] = distance
        loss_mix = self.loss(self.student(mixed), mixed_labels, mixed_weights)
        loss_mix.backward()
        values = {"loss": loss, "loss_mix": loss_mix, "pseudo_weight": pseudo_share, **values}
        return values, (real, pseudo, pseudo_weight)

    def pseudo_labelled_target(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A random batch of real frames (B, 3, h, w) (weak augmentation), the teacher's labels
        of them (B, h, w), their per-pixel weight (B, h, w): the share of confident pixels as
        `pseudo_labels`, 0 on the rows the pseudo-label crop drops, and that share (0-d)."""
        device = self.student.device
        real_rows = torch.randint(len(self.target.names), (self.pairs,)).numpy()
        real = to_unit_float(torch.from_numpy(self.target.images[real_rows])).to(device)
        blank = torch.zeros(real.shape[0], *real.shape[2:], dtype=torch.long, device=device)
        real, inside = self.weak(real, blank)  # `inside` is 0 on image pixels, IGNORE on padding
        # The teacher labels the real frames with batch statistics, as in DAFormer.
        with torch.no_grad():
            teacher_logits = self.student(real, self.teacher)
        pseudo, share = pseudo_labels(teacher_logits, self.spec.confidence, inside == 0)
        weight = pseudo_label_crop(
            share.expand_as(pseudo).float(),
            self.spec.pseudo_label_ignore_top,
            self.spec.pseudo_label_ignore_bottom,
        )
        return real, pseudo, weight, share

    def after_update(self, step: int) -> None:
        # DAFormer copies the student at iteration 0 and runs _update_ema(i) at the start of
        # iteration i > 0, after i updates: after update `step` (0-based) that is step + 1.
        ema_update(self.teacher, self.student.model, self.spec.ema_decay, step + 1)


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
        # MIC augments the masked batch with its own draws and one sigma for the batch
        # (masking_consistency_module.py calls strong_transform once on the batch).
        self.strong_masked = StrongAugment(config.crop, per_image_sigma=False)

    def __call__(self, step: int) -> dict[str, Tensor]:
        values, (real, pseudo, pseudo_weight) = self.learn()
        kept = block_mask(
            real.shape[0],
            real.shape[-2:],
            self.mic.mask_block_size,
            self.mic.mask_ratio,
            real.device,
        )
        masked = mask_images(self.strong_masked(real), kept)  # (B, 3, h, w)
        loss_masked = self.loss(self.student(masked), pseudo, pseudo_weight)
        (self.mic.weight * loss_masked).backward()
        return {**values, "loss_masked": loss_masked}


def _frozen_copy(model: nn.Module) -> nn.Module:
    """The teacher: the student's twin, never trained by gradients, in train mode."""
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    return teacher.train()
