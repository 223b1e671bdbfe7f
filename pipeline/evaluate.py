"""Score a trained segmentation net on labelled frames: confusion matrix, scores, predictions.

Real val is scored at label resolution, as cityscapesscripts does: the net sees the working-size
image and its logits are upsampled (bilinear) to the label's own size before the argmax. Under
torchrun each rank scores a strided shard of the frames and the integer confusion matrices are
summed, so the scores equal a single-process run exactly.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import dist
from pipeline.data.augment import normalize, to_unit_float
from pipeline.data.labels import CLASS_NAMES, NUM_CLASSES
from pipeline.io import atomic_path, save_npy, write_json
from pipeline.metrics import ConfusionMatrix, scores_to_json
from pipeline.report import confusion_figure
from pipeline.runtime import autocast
from pipeline.segment import upsampled_argmax

# Scalar scores logged as "val_<name>" for every variant, so runs compare column by column.
SUMMARY_SCORES = ("pixel_accuracy", "mean_class_accuracy", "miou", "fwiou")


@dataclasses.dataclass
class Evaluation:
    confusion: ConfusionMatrix
    predictions: np.ndarray  # (keep, h, w) uint8 train ids of the first `keep` frames
    n_images: int


def native_labels(split_root: str | Path) -> np.ndarray:
    """(N, h, w) uint8 train ids of a prepared val split at the label files' own resolution."""
    path = Path(split_root) / "labels_native.npy"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: scoring happens at label resolution; prepare the val split with "
            f"the prepare stage, which writes it"
        )
    return np.load(path, mmap_mode="r")


@torch.inference_mode()
def evaluate_images(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    batch: int,
    precision: str,
    device: torch.device,
    keep: int = 0,
) -> Evaluation:
    """Predict `images` and count them against `labels`.

    Args:
        model: a net mapping normalized (B, 3, H, W) images to (B, C, H, W) logits.
        images: (N, H, W, 3) uint8 at the working resolution (a memmap is fine).
        labels: (N, h, w) uint8 train ids, 255 = ignore; logits are resized to (h, w).
        batch: frames per forward pass.
        precision: a resolved precision ("fp32", "bf16", "fp16").
        device: where the net runs.
        keep: how many leading frames' predictions to return.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label maps")
    model = model.to(device).eval()
    label_size = tuple(labels.shape[1:])
    confusion = ConfusionMatrix(NUM_CLASSES, device=device)
    keep = min(keep, len(images))
    kept = torch.zeros((keep, *label_size), dtype=torch.int32, device=device)
    mine = np.asarray(dist.shard(len(images)))
    for start in range(0, len(mine), batch):
        index = mine[start : start + batch]
        x = normalize(to_unit_float(torch.from_numpy(images[index]).to(device)))
        with autocast(precision, device):
            logits = model(x)  # (B, C, H, W)
        # One frame at a time: (C, h, w) float logits at Cityscapes' 1024 x 2048 are 160 MB.
        prediction = torch.stack(
            [upsampled_argmax(frame, label_size) for frame in logits.float()]
        )  # (B, h, w)
        target = torch.from_numpy(np.asarray(labels[index])).to(device)
        confusion.update(target, prediction)
        first = index < keep
        if first.any():
            kept[torch.from_numpy(index[first]).to(device)] = prediction[
                torch.from_numpy(first).to(device)
            ].int()
    # Ranks hold disjoint frames, so sums are the single-process result.
    dist.all_reduce_sum(confusion.matrix)
    dist.all_reduce_sum(kept)
    return Evaluation(confusion, kept.cpu().numpy().astype(np.uint8), len(images))


def metrics_json(evaluation: Evaluation) -> dict[str, Any]:
    """Scores with NaN as null plus n_images, in the layout `dvc metrics show` reads."""
    result = scores_to_json(evaluation.confusion.scores(CLASS_NAMES))
    result["n_images"] = evaluation.n_images
    return result


def tracking_metrics(result: dict[str, Any], prefix: str = "val_") -> dict[str, float]:
    """Flat metric names, the same for every variant: val_miou, val_iou_traffic_light, ..."""
    metrics = {f"{prefix}{name}": result[name] for name in SUMMARY_SCORES}
    for key, short in (("per_class_iou", "iou"), ("per_class_accuracy", "acc")):
        for name, value in result[key].items():
            metrics[f"{prefix}{short}_{_slug(name)}"] = value
    return {k: v for k, v in metrics.items() if v is not None}


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def confusion_frame(matrix: np.ndarray) -> pd.DataFrame:
    """(C, C) counts with class names; rows are ground truth, columns prediction."""
    frame = pd.DataFrame(np.asarray(matrix), index=list(CLASS_NAMES), columns=list(CLASS_NAMES))
    frame.index.name = "ground_truth"
    return frame


def class_table(result: dict[str, Any], matrix: np.ndarray) -> pd.DataFrame:
    """One row per class: IoU, accuracy, ground-truth and predicted pixel counts."""
    matrix = np.asarray(matrix)
    return pd.DataFrame(
        {
            "class": list(CLASS_NAMES),
            "iou": [result["per_class_iou"][name] for name in CLASS_NAMES],
            "accuracy": [result["per_class_accuracy"][name] for name in CLASS_NAMES],
            "gt_pixels": matrix.sum(axis=1).tolist(),
            "predicted_pixels": matrix.sum(axis=0).tolist(),
        }
    )


def write_evaluation(
    evaluation: Evaluation,
    metrics_path: str | Path,
    confusion_path: str | Path,
    predictions_path: str | Path,
) -> dict[str, Any]:
    """Write the metrics JSON, the confusion CSV and the kept predictions; return the metrics."""
    result = metrics_json(evaluation)
    write_json(metrics_path, result)
    with atomic_path(confusion_path) as tmp:
        confusion_frame(evaluation.confusion.matrix.cpu().numpy()).to_csv(tmp)
    save_npy(predictions_path, evaluation.predictions)
    return result


def log_evaluation(tracker: Any, result: dict[str, Any], matrix: np.ndarray, title: str) -> None:
    """Scores as metrics, the per-class table and the confusion figure, into `tracker`'s run."""
    import matplotlib.pyplot as plt

    tracker.log_metrics(tracking_metrics(result))
    tracker.log_metrics({"val_n_images": result["n_images"]})
    tracker.log_table(class_table(result, matrix), "val_per_class")
    figure = confusion_figure(matrix, title)
    try:
        tracker.log_figure(figure, "val_confusion")
    finally:
        plt.close(figure)
