"""Score a trained segmentation net on labelled frames: confusion matrix, scores, predictions.

Real val is scored at label resolution, as cityscapesscripts does: the net sees the working-size
image (whole, or in sliding windows: evaluate.sliding_window) and its logits are upsampled
(bilinear) to the label's own size before the argmax. Under torchrun each rank scores a strided
shard of the frames and the integer confusion matrices are summed, so the scores equal a
single-process run exactly. Frames that carry a city (the sub-folder the Cityscapes reader found
them in) are also counted in one matrix per city; those add up to the overall matrix.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import dist
from pipeline.config import EvaluateConfig
from pipeline.data.labels import CLASS_NAMES, NUM_CLASSES
from pipeline.data.split import PreparedSplit, check_same_frames
from pipeline.data.tensors import normalize, to_unit_float
from pipeline.io import atomic_path, save_npy, write_json
from pipeline.metrics import ConfusionMatrix, protocol_mious, scores, scores_to_json
from pipeline.runtime import autocast, pick_device, resolve_precision
from pipeline.segment import WHOLE_FRAME, Inference, logits_of, upsampled_argmax
from pipeline.tracking.base import Tracker

# Scalar scores logged as "val_<name>" for every variant, so runs compare column by column.
SUMMARY_SCORES = ("pixel_accuracy", "mean_class_accuracy", "miou", "fwiou")
PROTOCOL_SCORES = ("miou19", "miou16", "miou13")


@dataclasses.dataclass(frozen=True)
class EvaluationOutputs:
    """Where `evaluate_variant` writes, as dvc.yaml declares it."""

    metrics: Path  # every score (JSON)
    confusion: Path  # the confusion matrix (CSV)
    predictions: Path  # the kept predictions (.npy)


@dataclasses.dataclass
class Evaluation:
    confusion: ConfusionMatrix
    predictions: np.ndarray  # (keep, h, w) uint8 train ids of the first `keep` frames
    n_images: int
    # One matrix per city, in sorted city order; empty when the frames carry no city.
    city_confusion: dict[str, ConfusionMatrix] = dataclasses.field(default_factory=dict)
    city_images: dict[str, int] = dataclasses.field(default_factory=dict)


def inference_of(config: EvaluateConfig) -> Inference:
    """evaluate.sliding_window as the inference that scores."""
    spec = config.sliding_window
    return WHOLE_FRAME if spec is None else Inference(spec.window, spec.stride)


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
    cities: Sequence[str] | None = None,
    inference: Inference = WHOLE_FRAME,
) -> Evaluation:
    """Predict `images` and count them against `labels`, overall and per city.

    Args:
        model: a net mapping normalized (B, 3, H, W) images to (B, C, H, W) logits.
        images: (N, H, W, 3) uint8 at the working resolution (a memmap is fine).
        labels: (N, h, w) uint8 train ids, 255 = ignore; logits are resized to (h, w).
        batch: frames per forward pass.
        precision: a resolved precision ("fp32", "bf16", "fp16").
        device: where the net runs.
        keep: how many leading frames' predictions to return.
        cities: each frame's city (N names), or None for no per-city matrices.
        inference: the whole working-size frame, or sliding windows over it.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} label maps")
    if cities is not None and len(cities) != len(images):
        raise ValueError(f"{len(images)} images but {len(cities)} cities")
    city_names = sorted(set(cities)) if cities is not None else []
    position = {name: k for k, name in enumerate(city_names)}
    # (N,) index into city_names per frame.
    city_index = np.array([position[c] for c in cities]) if cities is not None else None
    city_confusion = [ConfusionMatrix(NUM_CLASSES, device=device) for _ in city_names]
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
            logits = logits_of(model, x, inference)  # (B, C, H, W)
        # One frame at a time: (C, h, w) float logits at Cityscapes' 1024 x 2048 are 160 MB.
        prediction = torch.stack(
            [upsampled_argmax(frame, label_size) for frame in logits.float()]
        )  # (B, h, w)
        target = torch.from_numpy(np.asarray(labels[index])).to(device)
        confusion.update(target, prediction)
        if city_index is not None:
            for k in np.unique(city_index[index]):
                rows = torch.from_numpy(city_index[index] == k).to(device)
                city_confusion[k].update(target[rows], prediction[rows])
        first = index < keep
        if first.any():
            kept[torch.from_numpy(index[first]).to(device)] = prediction[
                torch.from_numpy(first).to(device)
            ].int()
    # Ranks hold disjoint frames, so sums are the single-process result.
    dist.all_reduce_sum(confusion.matrix)
    for city in city_confusion:
        dist.all_reduce_sum(city.matrix)
    dist.all_reduce_sum(kept)
    return Evaluation(
        confusion,
        kept.cpu().numpy().astype(np.uint8),
        len(images),
        city_confusion=dict(zip(city_names, city_confusion)),
        city_images={name: int((city_index == k).sum()) for k, name in enumerate(city_names)},
    )


def protocol_scores(matrix: torch.Tensor | np.ndarray, classes: int) -> dict[str, Any]:
    """Scores of a 19-class matrix with `miou` averaged over the `classes` protocol (19, 16, 13).

    Adds `miou19`, `miou16` and `miou13` side by side and `classes`; pixel accuracy, class
    accuracy and fwIoU stay over all 19 classes, as no protocol redefines them.
    """
    result = scores(matrix, CLASS_NAMES)
    means = protocol_mious(result["per_class_iou"])
    return {**result, "miou": means[f"miou{classes}"], **means, "classes": classes}


def metrics_json(evaluation: Evaluation, classes: int = 19) -> dict[str, Any]:
    """Scores with NaN as null plus n_images, in the layout `dvc metrics show` reads.

    `miou` follows the `classes` protocol (see protocol_scores); `per_city` holds each city's
    summary scores and frame count.
    """
    result = protocol_scores(evaluation.confusion.matrix, classes)
    result["n_images"] = evaluation.n_images
    per_city = {}
    for city, confusion in evaluation.city_confusion.items():
        city_scores = protocol_scores(confusion.matrix, classes)
        per_city[city] = {key: city_scores[key] for key in (*SUMMARY_SCORES, *PROTOCOL_SCORES)}
        per_city[city]["n_images"] = evaluation.city_images[city]
    result["per_city"] = per_city
    return scores_to_json(result)


def tracking_metrics(result: dict[str, Any], prefix: str = "val_") -> dict[str, float]:
    """Flat metric names, the same for every variant: val_miou, val_iou_traffic_light, ...

    Per-city scores get the city in the name: val_frankfurt_miou.
    """
    metrics = {f"{prefix}{name}": result[name] for name in (*SUMMARY_SCORES, *PROTOCOL_SCORES)}
    for key, short in (("per_class_iou", "iou"), ("per_class_accuracy", "acc")):
        for name, value in result[key].items():
            metrics[f"{prefix}{short}_{_slug(name)}"] = value
    for city, city_scores in result["per_city"].items():
        for name in (*SUMMARY_SCORES, *PROTOCOL_SCORES):
            metrics[f"{prefix}{_slug(city)}_{name}"] = city_scores[name]
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
    classes: int = 19,
    inference: str = WHOLE_FRAME.describe(),
) -> dict[str, Any]:
    """Write the metrics JSON, the confusion CSV and the kept predictions; return the metrics.

    `classes` is the protocol the headline `miou` averages (evaluate.classes); `inference` how
    the net saw the frames (`Inference.describe`), recorded beside the scores.
    """
    result = {**metrics_json(evaluation, classes), "inference": inference}
    write_json(metrics_path, result)
    with atomic_path(confusion_path) as tmp:
        confusion_frame(evaluation.confusion.matrix.cpu().numpy()).to_csv(tmp)
    save_npy(predictions_path, evaluation.predictions)
    return result


# Scores of the FCN-score, as the CycleGAN paper reports it.
FCN_SCORES = ("pixel_accuracy", "mean_class_accuracy", "miou")


def fcn_score(
    oracle: nn.Module,
    sim: PreparedSplit,
    translated: PreparedSplit,
    batch: int,
    precision: str,
    device: torch.device,
) -> dict[str, dict[str, float]]:
    """The CycleGAN paper's FCN-score: the oracle net (trained on real labels) labels the
    translated sim frames and the raw ones, each scored against the sim labels at the working
    resolution. The more the translation looks real while keeping its content, the closer the
    translated score gets to the oracle's own real-val score."""
    check_same_frames(translated, sim)
    result = {}
    for name, split in (("translated", translated), ("raw_sim", sim)):
        evaluation = evaluate_images(oracle, split.images, sim.labels, batch, precision, device)
        scores = evaluation.confusion.scores()
        result[name] = {key: scores[key] for key in FCN_SCORES}
    return result


def evaluate_variant(
    config: EvaluateConfig,
    model: nn.Module,
    val_root: Path,
    outputs: EvaluationOutputs,
    tracker: Tracker,
    title: str,
) -> dict[str, Any] | None:
    """Score `model` on the prepared real val split at label resolution (sharded under torchrun),
    write the scores, the confusion matrix and the kept predictions (rank 0), then log them to
    `tracker` (the variant's training run). Files come first: a tracking failure must not lose
    the scores. Returns the scores on rank 0, None elsewhere."""
    device = pick_device()
    val = PreparedSplit.open(val_root)
    evaluation = evaluate_images(
        model,
        val.images,
        native_labels(val_root),
        config.batch,
        resolve_precision(config.precision, device),
        device,
        keep=config.saved_predictions,
        cities=val.cities,
        inference=inference_of(config),
    )
    if not dist.is_main():
        return None
    result = write_evaluation(
        evaluation,
        outputs.metrics,
        outputs.confusion,
        outputs.predictions,
        config.classes,
        inference_of(config).describe(),
    )
    print(
        f"{title}: mIoU ({config.classes} classes) {result['miou']:.4f}, pixel accuracy "
        f"{result['pixel_accuracy']:.4f} on {result['n_images']} frames -> {outputs.metrics}"
    )
    matrix = evaluation.confusion.matrix.cpu().numpy()
    tracker.log_data({"evaluation": [val_root]})
    tracker.log_metrics(tracking_metrics(result))
    tracker.log_metrics({"val_n_images": result["n_images"]})
    tracker.set_tags({"eval_inference": result["inference"]})
    tracker.log_table(class_table(result, matrix), "val_per_class")
    tracker.log_table(confusion_frame(matrix).reset_index(), "val_confusion")
    return result
