"""A few labelled target frames beside any variant's training: semi-supervised adaptation.

A team often holds a few hundred labelled frames of its own fleet. A variant with a
`target_labels` block (config.TargetLabelsSpec) draws `frames` of them once from a labelled
target split, and its step object is wrapped by `WithTargetLabels`: each update also draws a
batch of those frames (with replacement, as the other batches), augments it as the labelled
batch is augmented, and adds its supervised loss at `weight`. The wrapped step, plain, FDA, DACS
or MIC, is unchanged otherwise; its teacher follows the student as before. Labelled target
batches beside the source (and self-training) batches are the usual form of semi-supervised
domain adaptation for segmentation (e.g. Chen et al., CVPR 2021, "Semi-supervised domain
adaptation based on dual-level domain mixing for semantic segmentation").

The frames are drawn from the split's frame order by a generator of their own (`seed`, not
train_seg.seed), so every rerun and every training seed trains on the same frames; their names
go to the run (MLflow: `target_label_frames.json`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.config import TargetLabelsSpec, TrainSegConfig
from pipeline.data.augment import PairedAugment
from pipeline.data.index import DatasetError
from pipeline.data.split import PreparedSplit
from pipeline.data.tensors import to_unit_float
from pipeline.losses import SegmentationLoss


def draw_target_frames(split: PreparedSplit, spec: TargetLabelsSpec) -> np.ndarray:
    """The sorted indices into `split` of the `spec.frames` frames drawn by `spec.seed`."""
    if split.labels is None:
        raise DatasetError(f"{split.root}: target_labels needs a split with labels.npy")
    if spec.frames > len(split.names):
        raise DatasetError(
            f"{split.root}: target_labels.frames is {spec.frames} but the split holds "
            f"{len(split.names)} frames"
        )
    rng = np.random.default_rng(spec.seed)
    return np.sort(rng.choice(len(split.names), size=spec.frames, replace=False))


class WithTargetLabels:
    """A segmentation step plus a supervised loss on a batch of labelled target frames."""

    def __init__(
        self,
        inner: Any,
        student: Any,
        config: TrainSegConfig,
        split: PreparedSplit,
        spec: TargetLabelsSpec,
        kind: str = "target_label",
    ) -> None:
        """`kind` names the loss (loss_<kind>s) and the frame count (<kind>_frames) it logs:
        "target_label", or "pseudo_label" for a self-supervised round's frames."""
        self.inner, self.student, self.split, self.weight = inner, student, split, spec.weight
        self.kind = kind
        self.index = draw_target_frames(split, spec)
        self.batch = config.batch
        self.augment = PairedAugment(config.crop, config.scale, config.flip, config.color_jitter)
        self.loss = SegmentationLoss(config.loss)

    @property
    def names(self) -> list[str]:
        """The drawn frames' names, in the split's order."""
        return [self.split.names[i] for i in self.index]

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def params(self) -> dict[str, Any]:
        return {**self.inner.params(), f"{self.kind}_frames": len(self.index)}

    def __call__(self, step: int) -> dict[str, Tensor]:
        values = self.inner(step)  # its backward passes are done: one graph in memory at a time
        assert self.split.labels is not None
        pick = self.index[torch.randint(len(self.index), (self.batch,)).numpy()]
        device = self.student.device
        x = to_unit_float(torch.from_numpy(self.split.images[pick])).to(device)
        y = torch.from_numpy(self.split.labels[pick]).long().to(device)
        x, y = self.augment(x, y)
        loss = self.loss(self.student(x), y)
        (self.weight * loss).backward()
        return {**values, f"loss_{self.kind}s": loss}

    def after_update(self, step: int) -> None:
        self.inner.after_update(step)
