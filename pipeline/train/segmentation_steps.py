"""The segmentation loop's step objects: what a step is (`SegmentationStep`), the net it trains
and how that net runs (`Student`), the splits it reads (`TrainingSplits`), and which step a
variant runs (`build_step`, by the name its settings give).

- `SupervisedStep` (here): batches drawn at random (with replacement) from the memory-mapped
  prepared arrays (`sample_styled_batch`); FDA, when the variant asks for it, swaps each sim
  image's low-frequency amplitude with a random real image's before augmentation.
- `DACSStep` and `MICStep` (pipeline.train.self_training): self-training on unlabelled real
  frames.
- `WithTargetLabels` (pipeline.train.semi_supervised) adds labelled or pseudo-labelled target
  frames to any of them.

Every random draw comes from torch's global generator, which the run layer seeds per rank and
checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from pipeline import runtime
from pipeline.adapt.fda import fda_transfer
from pipeline.config import FDAEntropySpec, TargetLabelsSpec, TrainSegConfig
from pipeline.data.augment import PairedAugment
from pipeline.data.split import PreparedSplit
from pipeline.data.tensors import normalize, to_unit_float
from pipeline.losses import SegmentationLoss, robust_entropy
from pipeline.train.run import Stateful
from pipeline.train.self_training import DACSStep, MICStep
from pipeline.train.semi_supervised import WithTargetLabels


def sample_styled_batch(
    images: PreparedSplit,
    labels: PreparedSplit,
    batch: int,
    style: PreparedSplit | None = None,
    fda_beta: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """A random batch: (B, 3, H, W) float images in [0, 1], (B, H, W) int64 labels, and the
    (B, 3, H, W) `style` frames that styled them (None without FDA).

    With `fda_beta` > 0, each image takes the low-frequency amplitude of a random `style` image.
    """
    index = torch.randint(len(images.names), (batch,)).numpy()
    x = to_unit_float(torch.from_numpy(images.images[index]))  # (B, 3, H, W)
    y = torch.from_numpy(labels.labels[index]).long()  # (B, H, W)
    if fda_beta <= 0:
        return x, y, None
    assert style is not None
    style_index = torch.randint(len(style.names), (batch,)).numpy()
    target = to_unit_float(torch.from_numpy(style.images[style_index]))
    # In [0, 255] as the FDA paper does; the amplitude swap can overshoot the range slightly.
    x = fda_transfer(x * 255.0, target * 255.0, fda_beta).clamp_(0.0, 255.0) / 255.0
    return x, y, target


def sample_batch(
    images: PreparedSplit,
    labels: PreparedSplit,
    batch: int,
    style: PreparedSplit | None = None,
    fda_beta: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """`sample_styled_batch` without the style frames."""
    x, y, _ = sample_styled_batch(images, labels, batch, style, fda_beta)
    return x, y


@dataclasses.dataclass(frozen=True)
class TrainingSplits:
    """The prepared splits a variant trains on; `style` (FDA), `target` (self-training) and
    `target_labels` (labelled target frames) only where its step reads them."""

    images: PreparedSplit
    labels: PreparedSplit
    style: PreparedSplit | None = None
    target: PreparedSplit | None = None
    target_labels: PreparedSplit | None = None
    # FDA's self-supervised round: pseudo-labelled target frames and their loss weight.
    pseudo_labels: tuple[PreparedSplit, float] | None = None


@dataclasses.dataclass
class Student:
    """The net the steps train, and how it runs."""

    model: nn.Module  # the plain net: its state dict is what gets saved and what a teacher copies
    device: torch.device
    precision: str
    memory_format: torch.memory_format
    # What the steps call: `model` until the run resumes, then DDP-wrapped under torchrun.
    net: nn.Module

    def __call__(self, images: Tensor, net: nn.Module | None = None) -> Tensor:
        """(B, 3, h, w) images in [0, 1] -> (B, C, h, w) float32 logits of the student (or of
        `net`, e.g. its teacher, run the same way)."""
        return self.run(images, self.net if net is None else net).float()  # (B, C, h, w)

    def run(self, images: Tensor, module: nn.Module) -> Any:
        """What `module` (the net, a teacher, an encoder) returns for (B, 3, h, w) images in
        [0, 1], normalised and in the student's precision and memory format."""
        x = normalize(images).contiguous(memory_format=self.memory_format)
        with runtime.autocast(self.precision, self.device):
            return module(x)


class SegmentationStep(Protocol):
    """What the loop asks of a step object."""

    def state(self) -> dict[str, Stateful]:
        """What the run must checkpoint beside the student, optimizer and schedule (a teacher)."""
        ...

    def params(self) -> dict[str, Any]:
        """Facts of the data to log as run params (how many frames)."""
        ...

    def __call__(self, step: int) -> dict[str, Tensor]:
        """Draw the batches of update `step` (0-based), run the forward and backward passes
        (gradients left for the optimizer); return the values to log by name."""
        ...

    def after_update(self, step: int) -> None:
        """Follow the optimizer's update of the student (the EMA teacher)."""
        ...


class SupervisedStep:
    """Plain supervised training on labelled frames, with FDA when `fda_beta` > 0, and FDA's
    entropy term on the style frames' predictions when `entropy` is given."""

    def __init__(
        self,
        student: Student,
        config: TrainSegConfig,
        images: PreparedSplit,
        labels: PreparedSplit,
        style: PreparedSplit | None,
        fda_beta: float,
        entropy: FDAEntropySpec | None = None,
    ) -> None:
        self.student = student
        self.images, self.labels, self.style, self.fda_beta = images, labels, style, fda_beta
        self.entropy = entropy
        self.batch = config.batch
        self.augment = PairedAugment(config.crop, config.scale, config.flip, config.color_jitter)
        # Style (target) frames for the entropy term: geometry only, as the student sees them.
        self.weak = PairedAugment(config.crop, config.scale, config.flip, 0.0) if entropy else None
        self.loss = SegmentationLoss(config.loss)

    def state(self) -> dict[str, Stateful]:
        return {}

    def params(self) -> dict[str, Any]:
        return {"train_images": len(self.images.names)}

    def __call__(self, step: int) -> dict[str, Tensor]:
        device = self.student.device
        x, y, target = sample_styled_batch(
            self.images, self.labels, self.batch, self.style, self.fda_beta
        )
        x, y = self.augment(x.to(device), y.to(device))
        loss = self.loss(self.student(x), y)  # x (B, 3, crop_h, crop_w)
        loss.backward()  # before the target forward: one graph in memory at a time
        if self.entropy is None or self.weak is None or target is None:
            return {"loss": loss}
        # As FDA's train.py: the frames that styled the batch, through the net, entropy only.
        blank = torch.zeros(target.shape[0], *target.shape[2:], dtype=torch.long, device=device)
        target, inside = self.weak(target.to(device), blank)  # inside: 0 on image pixels
        entropy = robust_entropy(self.student(target), self.entropy.ita, inside == 0)
        (self.entropy.weight * entropy).backward()
        return {"loss": loss, "loss_entropy": entropy}

    def after_update(self, step: int) -> None:
        pass


def _supervised(
    student: Student, config: TrainSegConfig, variant: str, splits: TrainingSplits
) -> SupervisedStep:
    spec = config.variants[variant]
    if spec.fda_beta > 0 and splits.style is None:
        raise ValueError(
            f"variant {variant} uses FDA (fda_beta={spec.fda_beta}) but no style split"
        )
    return SupervisedStep(
        student, config, splits.images, splits.labels, splits.style, spec.fda_beta, spec.fda_entropy
    )


def _dacs(
    student: Student, config: TrainSegConfig, variant: str, splits: TrainingSplits
) -> DACSStep:
    spec = config.variants[variant].self_training
    if spec is None:
        raise ValueError(f"variant {variant} has no self_training block")
    if splits.target is None:
        raise ValueError(f"variant {variant} self-trains but no target split was given")
    return DACSStep(student, config, spec, splits.images, splits.labels, splits.target)


def _mic(student: Student, config: TrainSegConfig, variant: str, splits: TrainingSplits) -> MICStep:
    spec = config.variants[variant].self_training
    if spec is None or spec.mic is None:
        raise ValueError(f"variant {variant} has no self_training.mic block")
    if splits.target is None:
        raise ValueError(f"variant {variant} self-trains but no target split was given")
    return MICStep(student, config, spec, splits.images, splits.labels, splits.target)


# The variant's settings choose the step by name (`VariantSpec.step`).
STEPS: dict[str, Callable[[Student, TrainSegConfig, str, TrainingSplits], SegmentationStep]] = {
    "supervised": _supervised,
    "dacs": _dacs,
    "mic": _mic,
}


def build_step(
    name: str, student: Student, config: TrainSegConfig, variant: str, splits: TrainingSplits
) -> SegmentationStep:
    """The step object called `name` (a key of STEPS) for `variant`, with its labelled target
    frames' loss where the variant has a target_labels block."""
    if name not in STEPS:
        raise ValueError(f"unknown segmentation step {name!r}; known steps: {', '.join(STEPS)}")
    step = STEPS[name](student, config, variant, splits)
    spec = config.variants[variant].target_labels
    if spec is not None:
        if splits.target_labels is None:
            raise ValueError(f"variant {variant} trains on target labels but no split was given")
        step = WithTargetLabels(step, student, config, splits.target_labels, spec)
    if splits.pseudo_labels is not None:
        split, weight = splits.pseudo_labels
        every = TargetLabelsSpec(str(split.root), len(split.names), seed=0, weight=weight)
        step = WithTargetLabels(step, student, config, split, every, "pseudo_label")
    return step


def labelled_target_step(step: Any) -> WithTargetLabels | None:
    """The wrapper of `step` that trains on drawn labelled target frames (not pseudo-labels)."""
    while isinstance(step, WithTargetLabels):
        if step.kind == "target_label":
            return step
        step = step.inner
    return None
