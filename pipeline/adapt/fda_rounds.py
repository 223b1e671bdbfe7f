"""FDA's self-supervised round: pseudo-labels of the target's train frames by a trained row.

FDA (Yang & Soatto 2020) labels every Cityscapes train frame with its multi-band average
(getSudoLabel_multi.py): the argmax class and its probability per pixel; then, per class c, the
threshold is the confidence at the 0.66 quantile of the pixels predicted as c (the sorted
confidences' element at round(0.66 n)), capped at 0.9, and pixels less confident than their
class's threshold become ignore. SStrain.py then trains again with a batch of those frames each
step beside the FDA source batch. `pseudo_label_split` is the labelling; the training is the
segmentation loop's, with the pseudo-labelled split added (pipeline.train.semi_supervised).

FDA keeps every pixel's probability in memory (float64, 12 GB for Cityscapes at 512 x 1024);
here the confidences are kept as 16-bit levels (1/65535 apart) in memory-mapped files, and the
per-class quantile is read exactly from their histogram: the thresholds are FDA's on confidences
rounded to that grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.data.labels import IGNORE_INDEX, NUM_CLASSES
from pipeline.data.split import PreparedSplit
from pipeline.data.tensors import normalize, to_unit_float
from pipeline.models.ensemble import class_probabilities
from pipeline.runtime import autocast

LEVELS = 65535  # confidences as uint16 levels: level = round(p * LEVELS)


def class_thresholds(histogram: np.ndarray, quantile: float, max_threshold: float) -> np.ndarray:
    """(C,) threshold levels from (C, LEVELS + 1) counts of each class's confidence levels: the
    level of the sorted confidences' element at round(quantile * n), as FDA indexes them (0 for
    a class no pixel is predicted as), capped at max_threshold."""
    thresholds = np.zeros(len(histogram), dtype=np.int64)
    for c, counts in enumerate(histogram):
        total = int(counts.sum())
        if total == 0:
            continue
        position = min(int(np.round(total * quantile)), total - 1)
        # The first level whose running count passes `position`: sorted[position]'s level.
        thresholds[c] = int(np.searchsorted(np.cumsum(counts), position, side="right"))
    return np.minimum(thresholds, round(max_threshold * LEVELS))


@torch.inference_mode()
def pseudo_label_split(
    model: nn.Module,
    split: PreparedSplit,
    work_dir: Path,
    batch: int,
    precision: str,
    device: torch.device,
    quantile: float,
    max_threshold: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(N, H, W) uint8 pseudo-labels of `split`'s frames at the working size (a memmap under
    `work_dir`) and what the rule did: each class's threshold and the share of pixels kept."""
    work_dir.mkdir(parents=True, exist_ok=True)
    shape = (len(split.names), *split.images.shape[1:3])
    labels = np.lib.format.open_memmap(work_dir / "labels.npy", "w+", np.uint8, shape)
    levels = np.lib.format.open_memmap(work_dir / "confidence.npy", "w+", np.uint16, shape)
    histogram = np.zeros(NUM_CLASSES * (LEVELS + 1), dtype=np.int64)
    model = model.to(device).eval()
    for start in range(0, shape[0], batch):
        frames = np.array(split.images[start : start + batch])  # a copy: the memmap is read-only
        x = normalize(to_unit_float(torch.from_numpy(frames)))
        with autocast(precision, device):
            probabilities = class_probabilities(model, x.to(device))
        confidence, predicted = probabilities.float().max(dim=1)  # (B, H, W) each
        level = torch.round(confidence * LEVELS).to(torch.int64)
        histogram += np.bincount(
            (predicted * (LEVELS + 1) + level).flatten().cpu().numpy(),
            minlength=len(histogram),
        )
        labels[start : start + batch] = predicted.cpu().numpy().astype(np.uint8)
        levels[start : start + batch] = level.cpu().numpy().astype(np.uint16)
    thresholds = class_thresholds(
        histogram.reshape(NUM_CLASSES, LEVELS + 1), quantile, max_threshold
    )
    kept = 0
    for k in range(shape[0]):
        frame = labels[k]
        frame[levels[k] < thresholds[frame]] = IGNORE_INDEX
        kept += int((frame != IGNORE_INDEX).sum())
    labels.flush()
    summary = {
        "thresholds": [float(t) / LEVELS for t in thresholds],
        "kept_share": kept / float(np.prod(shape)),
    }
    return labels, summary
