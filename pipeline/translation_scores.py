"""Scores of a translation, for the evaluate_translation stage: the CycleGAN paper's FCN-score
(pipeline.evaluate.fcn_score) and FID / KID against the real frames (pipeline.fid).

Kept apart from pipeline.evaluate so the segmentation nets' evaluate stages do not depend on the
Inception code they never run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from pipeline.config import Precision
from pipeline.data.split import PreparedSplit
from pipeline.evaluate import fcn_score
from pipeline.fid import translation_distances
from pipeline.io import write_json
from pipeline.runtime import pick_device, resolve_precision
from pipeline.tracking.base import Tracker


def score_translation(
    batch: int,
    precision: Precision,
    oracle: nn.Module,
    sim: PreparedSplit,
    translated: PreparedSplit,
    real: PreparedSplit,
    inception_weights: str | None,
    out: Path,
    tracker: Tracker,
) -> dict[str, Any]:
    """The FCN-score (`fcn_score`) of a translation, and FID / KID of raw and translated sim
    against the real training frames (pipeline.fid; not computed without `inception_weights`),
    written to `out` and logged to `tracker` (the translator's training run) as
    fcn_<split>_<score>, fid_<split> and kid_<split>."""
    device = pick_device()
    result: dict[str, Any] = fcn_score(
        oracle, sim, translated, batch, resolve_precision(precision, device), device
    )
    distances = translation_distances(
        inception_weights,
        real.images,
        {"raw_sim": sim.images, "translated": translated.images},
        batch,
        device,
    )
    result["fid_kid"] = distances
    write_json(out, result)
    print(result)
    metrics = {
        f"fcn_{name}_{key}": value
        for name in ("translated", "raw_sim")
        for key, value in result[name].items()
    }
    if distances["computed"]:
        for name in ("translated", "raw_sim"):
            metrics[f"fid_{name}"] = distances[name]["fid"]
            metrics[f"kid_{name}"] = distances[name]["kid"]
    tracker.log_metrics(metrics)
    return result
