"""Scoring: cityscapesscripts' pixel-level evaluator against pipeline.metrics.ConfusionMatrix.

Both score the same label-id PNGs (random blob ground truths with ignore regions, predictions
wrong on about 20 % of the pixels); the scores must agree. Times: cityscapesscripts on the PNG
lists (it reads the files itself); ours reading the same PNGs and mapping ids; ours on train-id
tensors already in memory. One torch thread, as the reference has.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.harness import Results, measurement
from pipeline.data.labels import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    TRAIN_ID_TO_ID,
    to_train_ids,
)
from pipeline.metrics import ConfusionMatrix, cityscapes_reference_scores


def label_maps(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 train-id ground truth of ~16-pixel blobs with ignore patches, and a
    prediction wrong on about 20 % of the pixels."""
    cells = (max(1, height // 16), max(1, width // 16))
    coarse = rng.integers(0, NUM_CLASSES, size=cells, dtype=np.uint8)
    coarse[rng.random(cells) < 0.1] = IGNORE_INDEX
    rows = np.arange(height) * cells[0] // height  # (H,) coarse row of each pixel
    cols = np.arange(width) * cells[1] // width  # (W,)
    truth = coarse[rows[:, None], cols[None, :]]
    prediction = np.where(truth == IGNORE_INDEX, 0, truth).astype(np.uint8)
    wrong = rng.random((height, width)) < 0.2
    prediction[wrong] = rng.integers(0, NUM_CLASSES, size=int(wrong.sum()), dtype=np.uint8)
    return truth, prediction


def read_train_ids(path: Path) -> torch.Tensor:
    return torch.from_numpy(to_train_ids(np.array(Image.open(path))))


@measurement("scoring", page="bench", section=lambda r: scoring_section(r))
def scoring(quick: bool) -> Results:
    """Our confusion-matrix scores against cityscapesscripts': equal, and how much faster."""
    # Imported here: its helpers need packages that GPU machines without a registry lack.
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval

    count, (height, width) = (10, (128, 256)) if quick else (100, (512, 1024))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            truths, predictions, pairs = [], [], []
            for i in range(count):
                truth, prediction = label_maps(rng, height, width)
                pairs.append((torch.from_numpy(truth), torch.from_numpy(prediction)))
                truths.append(Path(tmp) / f"bench_{i:06d}_000019_gtFine_labelIds.png")
                predictions.append(Path(tmp) / f"bench_{i:06d}_000019_pred_labelIds.png")
                Image.fromarray(TRAIN_ID_TO_ID[truth]).save(truths[-1])
                Image.fromarray(TRAIN_ID_TO_ID[prediction]).save(predictions[-1])
            start = time.perf_counter()
            theirs = cityscapes_reference_scores(predictions, truths)
            cityscapes_s = time.perf_counter() - start
            with_io = ConfusionMatrix()
            start = time.perf_counter()
            for truth_file, prediction_file in zip(truths, predictions, strict=True):
                with_io.update(read_train_ids(truth_file), read_train_ids(prediction_file))
            ours_with_io_s = time.perf_counter() - start
        in_memory = ConfusionMatrix()
        start = time.perf_counter()
        for truth, prediction in pairs:
            in_memory.update(truth, prediction)
        ours_no_io_s = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    ours = in_memory.scores()
    differences = [
        float(abs(ours["per_class_iou"][name] - theirs["classScores"][name]))
        for name in CLASS_NAMES
        if not math.isnan(ours["per_class_iou"][name])
    ]
    match = bool(
        torch.equal(with_io.matrix, in_memory.matrix)
        and all(
            math.isnan(ours["per_class_iou"][name]) == math.isnan(theirs["classScores"][name])
            for name in CLASS_NAMES
        )
        and max(differences, default=0.0) <= 1e-6
        and abs(ours["miou"] - theirs["averageScoreClasses"]) <= 1e-6
    )
    return {
        "num_images": count,
        "size": [height, width],
        "cityscapes_cython": bool(cs_eval.CSUPPORT),
        "torch_threads": 1,
        "cityscapes_s": cityscapes_s,
        "ours_with_io_s": ours_with_io_s,
        "ours_no_io_s": ours_no_io_s,
        "ratio_with_io": cityscapes_s / ours_with_io_s,
        "ratio_no_io": cityscapes_s / ours_no_io_s,
        "miou": ours["miou"],
        "max_iou_difference": max(differences, default=0.0),
        "scores_match": match,
    }


def scoring_section(results: Results) -> str:
    return "\n".join(
        [
            "## Scoring against cityscapesscripts",
            "",
            "```",
            json.dumps(results, indent=1),
            "```",
            "",
        ]
    )
