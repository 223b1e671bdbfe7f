"""Time cityscapesscripts' pixel-level evaluator against pipeline.metrics.ConfusionMatrix.

Both score the same label-id PNGs (random blob ground truths with ignore regions and noisy
predictions); the script checks that the per-class IoUs and the mean agree and reports:

* ``cityscapes_s``: ``evaluateImgLists`` on the PNG lists (it reads the files itself);
* ``ours_with_io_s``: reading the same PNGs, mapping label ids to train ids, ``update``;
* ``ours_no_io_s``: ``update`` on train-id tensors already in memory;
* ``ratio_with_io`` / ``ratio_no_io``: cityscapes time over ours.

Run from the repository root: ``python -m benchmarks.scoring_speed [--quick | --size HxW]``.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval
from PIL import Image

from pipeline.data.labels import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    TRAIN_ID_TO_ID,
    to_train_ids,
)
from pipeline.metrics import ConfusionMatrix, cityscapes_reference_scores


def _parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    try:
        return int(height), int(width)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x1024, got {text!r}") from None


def _label_maps(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) uint8 train-id ground truth of 16 x 16-pixel-ish blobs with ignore patches, and a
    prediction that is wrong on about 20 % of the pixels."""
    cells = (max(1, height // 16), max(1, width // 16))
    coarse = rng.integers(0, NUM_CLASSES, size=cells, dtype=np.uint8)
    coarse[rng.random(cells) < 0.1] = IGNORE_INDEX
    rows = np.arange(height) * cells[0] // height  # (H,) coarse row of each pixel
    cols = np.arange(width) * cells[1] // width  # (W,)
    gt = coarse[rows[:, None], cols[None, :]]
    prediction = np.where(gt == IGNORE_INDEX, 0, gt).astype(np.uint8)
    wrong = rng.random((height, width)) < 0.2
    prediction[wrong] = rng.integers(0, NUM_CLASSES, size=int(wrong.sum()), dtype=np.uint8)
    return gt, prediction


def _read_train_ids(path: Path) -> torch.Tensor:
    return torch.from_numpy(to_train_ids(np.array(Image.open(path))))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the measurement and return its results (also printed as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=_parse_size, default=(512, 1024), help="HxW")
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="10 images of 128x256")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 matches the single-threaded reference, and on small shared "
        "machines OpenMP wake-ups can cost more than the counting itself",
    )
    args = parser.parse_args(argv)
    height, width = (128, 256) if args.quick else args.size
    num_images = 10 if args.quick else args.num_images

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = _measure(num_images, height, width, args.seed)
    finally:
        torch.set_num_threads(previous_threads)
    print(json.dumps(result, indent=2))
    return result


def _measure(num_images: int, height: int, width: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        gt_files, pred_files, pairs = [], [], []
        for i in range(num_images):
            gt, prediction = _label_maps(rng, height, width)
            pairs.append((torch.from_numpy(gt), torch.from_numpy(prediction)))
            gt_files.append(Path(tmp) / f"bench_{i:06d}_000019_gtFine_labelIds.png")
            pred_files.append(Path(tmp) / f"bench_{i:06d}_000019_pred_labelIds.png")
            Image.fromarray(TRAIN_ID_TO_ID[gt]).save(gt_files[-1])
            Image.fromarray(TRAIN_ID_TO_ID[prediction]).save(pred_files[-1])

        start = time.perf_counter()
        theirs = cityscapes_reference_scores(pred_files, gt_files)
        cityscapes_s = time.perf_counter() - start

        with_io = ConfusionMatrix()
        start = time.perf_counter()
        for gt_file, pred_file in zip(gt_files, pred_files, strict=True):
            with_io.update(_read_train_ids(gt_file), _read_train_ids(pred_file))
        ours_with_io_s = time.perf_counter() - start

    no_io = ConfusionMatrix()
    start = time.perf_counter()
    for gt, prediction in pairs:
        no_io.update(gt, prediction)
    ours_no_io_s = time.perf_counter() - start

    ours = no_io.scores()
    # Their per-class scores are numpy floats; cast so the result stays JSON-friendly.
    differences = [
        float(abs(ours["per_class_iou"][name] - theirs["classScores"][name]))
        for name in CLASS_NAMES
        if not math.isnan(ours["per_class_iou"][name])
    ]
    scores_match = bool(
        torch.equal(with_io.matrix, no_io.matrix)
        and all(
            math.isnan(ours["per_class_iou"][name]) == math.isnan(theirs["classScores"][name])
            for name in CLASS_NAMES
        )
        and max(differences, default=0.0) <= 1e-6
        and abs(ours["miou"] - theirs["averageScoreClasses"]) <= 1e-6
    )

    return {
        "num_images": num_images,
        "size": [height, width],
        "cityscapes_cython": bool(cs_eval.CSUPPORT),
        "torch_threads": torch.get_num_threads(),
        "cityscapes_s": cityscapes_s,
        "ours_with_io_s": ours_with_io_s,
        "ours_no_io_s": ours_no_io_s,
        "ratio_with_io": cityscapes_s / ours_with_io_s,
        "ratio_no_io": cityscapes_s / ours_no_io_s,
        "miou": ours["miou"],
        "max_iou_difference": max(differences, default=0.0),
        "scores_match": scores_match,
    }


if __name__ == "__main__":
    raise SystemExit(0 if main()["scores_match"] else 1)
