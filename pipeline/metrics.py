"""Semantic-segmentation scores on the 19 Cityscapes train classes.

The per-class IoU and its mean follow cityscapesscripts' evaluator
(``evalPixelLevelSemanticLabeling.getIouScoreForLabel`` and ``getScoreAverage``) exactly:

* ground-truth pixels with the ignore index are never counted, whatever was predicted;
* IoU = tp / (tp + fp + fn), and it is NaN only when tp + fp + fn == 0, i.e. the class is
  neither in the ground truth nor predicted on a non-ignored pixel;
* a class that is absent from the ground truth but predicted somewhere therefore scores
  IoU 0 (not NaN) and pulls the mean down, as in the official evaluator;
* the mean IoU averages the non-NaN entries.

Per-class accuracy (recall) is NaN for classes absent from the ground truth, and the mean
class accuracy averages the rest.

The SYNTHIA -> Cityscapes protocols (16 and 13 classes, :data:`PROTOCOL_CLASSES`) keep the IoUs of
the full 19-class matrix and average only the protocol's classes, NaN entries left out as above
(:func:`protocol_mious`).
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipeline.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PROTOCOL_CLASSES


class ConfusionMatrix:
    """Running (num_classes, num_classes) int64 confusion matrix.

    Rows are ground truth, columns are prediction. ``ignore_index`` must be at least
    ``num_classes`` (255 here). For data-parallel evaluation, reduce the tensor in place, e.g.
    ``torch.distributed.all_reduce(cm.matrix)`` (the property returns the stored tensor, not a
    copy), or gather the matrices and fold them in with :meth:`add_`.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        device: torch.device | str | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        # update() bins ignored pixels in a histogram row of their own, so the ignore index
        # must lie above the class ids (255 in this project); the cap bounds that histogram.
        if not num_classes <= ignore_index < 2**16:
            raise ValueError(
                f"ignore_index must be in [num_classes, 65536), got {ignore_index} for "
                f"{num_classes} classes"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @property
    def matrix(self) -> Tensor:
        """The accumulated counts, shape (C, C); the stored tensor itself."""
        return self._matrix

    @matrix.setter
    def matrix(self, value: Tensor | np.ndarray) -> None:
        self._matrix = self._checked(value).to(self._matrix.device).clone()

    def _checked(self, value: Tensor | np.ndarray | ConfusionMatrix) -> Tensor:
        if isinstance(value, ConfusionMatrix):
            value = value.matrix
        value = torch.as_tensor(value)
        c = self.num_classes
        if value.shape != (c, c):
            raise ValueError(f"expected a ({c}, {c}) matrix, got {tuple(value.shape)}")
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"confusion matrix must hold integer counts, got {value.dtype}")
        return value.to(torch.int64)

    def update(self, target: Tensor, prediction: Tensor) -> None:
        """Count one batch of label maps.

        Args:
            target: ground-truth train ids, any shape, ``ignore_index`` where unlabelled.
            prediction: predicted train ids (e.g. the argmax over logits), same shape.

        Pixels whose ground truth is the ignore index are skipped. Predictions outside
        [0, C) are skipped too (cityscapesscripts would count them as misses, but an argmax
        over C logits never produces them). Ground-truth values outside [0, C) other than the
        ignore index raise ValueError, since they mean a broken label mapping. Inputs may be
        on any device; the range checks synchronise with it once or twice per call.
        """
        if target.shape != prediction.shape:
            raise ValueError(
                f"target {tuple(target.shape)} and prediction {tuple(prediction.shape)} differ"
            )
        for name, t in (("target", target), ("prediction", prediction)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise TypeError(f"{name} must hold integer class ids, got {t.dtype}")
        c = self.num_classes
        ignore = self.ignore_index
        target = target.reshape(-1)  # (N,)
        prediction = prediction.to(target.device).reshape(-1)  # (N,)
        if target.numel() == 0:
            return

        # Range checks run on the input dtype, before a narrowing cast could wrap ids around.
        t_min, t_max = torch.aminmax(target)
        if t_min < 0 or t_max > ignore:
            self._raise_bad_targets(target)
        # int32 halves the memory traffic of int64 (this is memory-bound) and holds the largest
        # index below, ignore * (C + 1) + C; uint8 inputs would overflow there.
        index_dtype = torch.int32 if (ignore + 1) * (c + 1) < 2**31 else torch.int64
        target = target.to(index_dtype)
        p_min, p_max = torch.aminmax(prediction)
        if p_min < 0 or p_max >= c:
            # Out-of-range predictions go to an extra column C, dropped below.
            valid = (prediction >= 0) & (prediction < c)
            prediction = torch.where(valid, prediction.to(index_dtype), c)
        else:
            prediction = prediction.to(index_dtype)
        # Cell (target, prediction) of an (ignore + 1, C + 1) grid, flattened row-major. Row
        # `ignore` collects the ignored pixels and is dropped, so no mask pass is needed.
        index = torch.add(prediction, target, alpha=c + 1)
        counts = torch.bincount(index, minlength=(ignore + 1) * (c + 1)).view(ignore + 1, c + 1)
        if bool(counts[c:ignore].any()):
            self._raise_bad_targets(target)
        self._matrix += counts[:c, :c].to(self._matrix.device)

    def _raise_bad_targets(self, target: Tensor) -> None:
        c, ignore = self.num_classes, self.ignore_index
        bad = (target < 0) | ((target >= c) & (target != ignore))
        values = torch.unique(target[bad]).tolist()
        raise ValueError(f"target holds ids {values} outside [0, {c}) that are not {ignore}")

    def add_(self, other: Tensor | np.ndarray | ConfusionMatrix) -> ConfusionMatrix:
        """Add another (C, C) count matrix in place, e.g. one gathered from another rank."""
        self._matrix += self._checked(other).to(self._matrix.device)
        return self

    def __iadd__(self, other: Tensor | np.ndarray | ConfusionMatrix) -> ConfusionMatrix:
        return self.add_(other)

    def reset(self) -> None:
        """Zero the counts."""
        self._matrix.zero_()

    def to(self, device: torch.device | str) -> ConfusionMatrix:
        """Move the counts, e.g. to the GPU before an NCCL all-reduce."""
        self._matrix = self._matrix.to(device)
        return self

    def scores(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """:func:`scores` of the accumulated matrix."""
        if class_names is None:
            class_names = (
                CLASS_NAMES if self.num_classes == NUM_CLASSES else _numbered(self.num_classes)
            )
        return scores(self._matrix, class_names)


def _numbered(num_classes: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(num_classes))


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def scores(matrix: np.ndarray | Tensor, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """Scores of a confusion matrix (rows ground truth, columns prediction).

    Returns a dict of plain floats, NaN where undefined:
    ``pixel_accuracy`` (correct / all counted pixels), ``mean_class_accuracy`` (mean recall
    over classes present in the ground truth), ``miou`` (cityscapesscripts' class average),
    ``fwiou`` (IoU weighted by ground-truth pixel frequency), ``per_class_iou`` and
    ``per_class_accuracy`` ({class name: value}). See the module docstring for when an entry
    is NaN.
    """
    if isinstance(matrix, Tensor):
        matrix = matrix.detach().cpu().numpy()
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {m.shape}")
    if len(class_names) != m.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {m.shape[0]}-class matrix")
    m = m.astype(np.float64)

    tp = np.diag(m)  # (C,)
    gt = m.sum(axis=1)  # (C,) ground-truth pixels per class
    predicted = m.sum(axis=0)  # (C,) predicted pixels per class (ignored GT already excluded)
    union = gt + predicted - tp  # tp + fn + fp
    total = m.sum()

    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        recall = np.where(gt > 0, tp / gt, np.nan)
    present = gt > 0
    return {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
        "mean_class_accuracy": _nanmean(recall),
        "miou": _nanmean(iou),
        # Classes present in the ground truth all have a defined IoU (union >= gt > 0).
        "fwiou": float((gt[present] / total * iou[present]).sum()) if total > 0 else math.nan,
        "per_class_iou": {name: float(v) for name, v in zip(class_names, iou, strict=True)},
        "per_class_accuracy": {name: float(v) for name, v in zip(class_names, recall, strict=True)},
    }


def protocol_mious(per_class_iou: Mapping[str, float]) -> dict[str, float]:
    """`{"miou19": ..., "miou16": ..., "miou13": ...}` from a :func:`scores` per-class IoU dict.

    Each IoU was computed on the full matrix, so a road pixel predicted as terrain still counts
    against road under the 16-class protocol; the protocols differ only in which classes the
    mean takes (NaN where none of them is defined).
    """
    return {
        f"miou{count}": _nanmean(np.array([per_class_iou[name] for name in names], dtype=float))
        for count, names in PROTOCOL_CLASSES.items()
    }


def scores_to_json(scores: Mapping[str, Any]) -> dict[str, Any]:
    """Copy of a :func:`scores` dict with NaN replaced by None, ready for ``json.dump``."""

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: convert(v) for key, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        if isinstance(value, float) and math.isnan(value):
            return None
        return value

    return convert(scores)


def cityscapes_reference_scores(
    prediction_files: Sequence[str | Path], ground_truth_files: Sequence[str | Path]
) -> dict[str, Any]:
    """Run cityscapesscripts' pixel-level evaluator on pairs of label-id PNGs.

    Both lists hold single-channel PNGs of Cityscapes label ids (not train ids), paired by
    position. Returns the evaluator's result dict: ``classScores`` {label name: IoU, NaN for
    ids ignored in evaluation}, ``averageScoreClasses`` (the mean IoU) and ``confMatrix``
    (34 x 34 nested lists indexed by label id), among others. Used to cross-check
    :func:`scores`; it is much slower than :class:`ConfusionMatrix`.
    """
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval

    if len(prediction_files) != len(ground_truth_files):
        raise ValueError(
            f"{len(prediction_files)} predictions for {len(ground_truth_files)} ground truths"
        )
    # The evaluator reads its settings from a module-level object; copy it so this call
    # leaves the module's defaults alone.
    args = copy.copy(cs_eval.args)
    args.quiet = True
    args.evalInstLevelScore = False  # would need *_instanceIds.png next to every label file
    # Its pixel-accuracy path calls np.in1d, which NumPy 2.4 removed, and it counts the
    # ignored pixels rather than the evaluated ones; pixel accuracy comes from confMatrix.
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.colorized = False
    args.bold = ""
    args.nocol = ""
    args.evalLabels = []
    args.predictionPath = None
    args.predictionWalk = None
    with tempfile.TemporaryDirectory() as tmp:
        # Never written with JSONOutput off; pointed away from the repo regardless.
        args.exportFile = str(Path(tmp) / "resultPixelLevelSemanticLabeling.json")
        args.cityscapesPath = tmp
        try:
            return cs_eval.evaluateImgLists(
                [str(p) for p in prediction_files], [str(p) for p in ground_truth_files], args
            )
        except SystemExit as exc:
            # Its printError() prints the reason and calls sys.exit(-1).
            raise RuntimeError("cityscapesscripts evaluation failed (see its output)") from exc
