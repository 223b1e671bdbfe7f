"""Does the fast default precision keep quality? fp32-eager vs the default, on the demo data.

The performance issue asks for the bf16 defaults to hold quality: the same loss trajectory
within noise, translation and mIoU scores within noise of fp32. This script measures that on
the prepared demo splits (run `dvc repro` first), through the real training functions:

* CycleGAN: `train_cyclegan` with params.yaml's cyclegan section at precision fp32 and at the
  default, then every sim frame translated; scored by the colour-histogram distance to real
  and the FCN-score (the pipeline's oracle net, models/seg/oracle, on translated sim, in the
  same precision for every row so the instrument does not change). Loss curves are compared
  over the last quarter of training.
* Segmentation: `train_segmentation` of the oracle variant (real labels: the largest and least
  noisy mIoU) in fp32 without channels_last and at the default; mIoU / pixel accuracy on real val
  at label resolution.

"Within noise" needs the noise: the default is also run with a second seed (`--seeds 0 1`), and
the page compares |default - fp32| with |seed 0 - seed 1| of the default.

`python -m benchmarks quality` (about 15 minutes on 2 cores) writes reports/quality.json and
reports/quality.md.
"""

from __future__ import annotations

import csv
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.harness import Results, measurement, table
from pipeline import runtime
from pipeline.config import load_params
from pipeline.data.split import PreparedSplit
from pipeline.evaluate import evaluate_images, native_labels
from pipeline.segment import load_model
from pipeline.tracking import NullTracker
from pipeline.train.cyclegan import train_cyclegan
from pipeline.train.segmentation import train_segmentation
from pipeline.translate import (
    channel_stats,
    domain_shift_report,
    load_trained_generator,
    translate_batch,
)

PREPARED, ORACLE = Path("data/prepared"), Path("models/seg/oracle")

CURVE_KEYS = ("loss_cycle_sim", "loss_cycle_real", "loss_gan_sim2real", "loss_disc_real")


def late_means(curves_csv: Path) -> dict[str, float]:
    """Mean of each loss over the last quarter of the logged steps."""
    with open(curves_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    late = rows[len(rows) * 3 // 4 :]
    return {key: float(np.mean([float(row[key]) for row in late])) for key in CURVE_KEYS}


def cyclegan_run(precision: str, seed: int, prepared: Path, oracle: Path) -> dict[str, Any]:
    params = load_params()
    config = dataclasses.replace(params.cyclegan, precision=precision, seed=seed)
    device = torch.device("cpu")
    sim = PreparedSplit.open(prepared / "sim", need_labels=True)
    real = PreparedSplit.open(prepared / "real_train")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = train_cyclegan(
            config,
            sim.images,
            real.images,
            tmp,
            NullTracker(),
            curves_path=Path(tmp) / "curves.csv",
            device=device,
        )
        seconds = time.perf_counter() - start
        late = late_means(Path(tmp) / "curves.csv")
        generator = load_trained_generator(Path(tmp) / "gen_sim2real.safetensors", device)
    batch = params.translate.batch
    translated = np.concatenate(
        [
            translate_batch(generator, sim.images[i : i + batch], metrics["precision"], device)
            for i in range(0, len(sim.images), batch)
        ]
    )
    shift = domain_shift_report(
        channel_stats(sim.images), channel_stats(translated), channel_stats(real.images)
    )
    # The instrument: the pipeline's oracle net, at the evaluate stage's precision for every row.
    eval_precision = runtime.resolve_precision(params.evaluate.precision, device)
    fcn = evaluate_images(
        load_model(oracle), translated, sim.labels, params.evaluate.batch, eval_precision, device
    ).confusion.scores()
    return {
        "part": "cyclegan",
        "precision": metrics["precision"],
        "seed": seed,
        "train_seconds": round(metrics["train_seconds"], 1),
        "wall_seconds": round(seconds, 1),
        "img_per_s": metrics["img_per_s"],
        "hist_distance_after": shift["hist_distance_after"],
        "fcn_miou": round(float(fcn["miou"]), 4),
        "fcn_pixel_accuracy": round(float(fcn["pixel_accuracy"]), 4),
        **{f"late_{key}": round(value, 4) for key, value in late.items()},
    }


def seg_run(precision: str, channels_last: bool, seed: int, prepared: Path) -> dict[str, Any]:
    params = load_params()
    config = dataclasses.replace(
        params.train_seg, precision=precision, channels_last=channels_last, seed=seed
    )
    runtime.set_threads(config.threads)
    spec = config.variants["oracle"]
    images = PreparedSplit.open(spec.images)
    labels = PreparedSplit.open(spec.labels, need_labels=True)
    val = PreparedSplit.open(prepared / "real_val")
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train_segmentation(config, "oracle", images, labels, None, tmp, NullTracker())
        seconds = time.perf_counter() - start
        model = load_model(tmp)
    eval_precision = runtime.resolve_precision(params.evaluate.precision, device)
    scores = evaluate_images(
        model,
        val.images,
        native_labels(prepared / "real_val"),
        params.evaluate.batch,
        eval_precision,
        device,
    ).confusion.scores()
    return {
        "part": "seg",
        "precision": runtime.resolve_precision(precision, device)
        + ("+cl" if channels_last else ""),
        "seed": seed,
        "wall_seconds": round(seconds, 1),
        "final_loss": round(result["loss"], 4),
        "miou": round(float(scores["miou"]), 4),
        "pixel_accuracy": round(float(scores["pixel_accuracy"]), 4),
    }


def noise_table(rows: list[dict[str, Any]], metrics: Sequence[str]) -> list[str]:
    """|default - fp32| (same seed 0) against |seed 0 - seed 1| of the default, per metric."""
    fp32 = next((r for r in rows if r["precision"] == "fp32" and r["seed"] == 0), None)
    by_seed = {r["seed"]: r for r in rows if r["precision"] != "fp32"}
    if fp32 is None or 0 not in by_seed:
        return []
    cells = []
    for metric in metrics:
        default = by_seed[0][metric]
        spread = abs(default - by_seed[1][metric]) if 1 in by_seed else float("nan")
        cells.append(
            {
                "metric": metric,
                "fp32": f"{fp32[metric]:.4f}",
                "default": f"{default:.4f}",
                "delta": f"{default - fp32[metric]:+.4f}",
                "spread": f"{spread:.4f}",
            }
        )
    columns = [
        ("metric", "metric"),
        ("fp32", "fp32"),
        ("default", "default"),
        ("delta", "default - fp32"),
        ("spread", "seed-to-seed (default)"),
    ]
    return ["", table(cells, columns)]


def markdown(results: dict[str, Any]) -> str:
    if "skipped" in results:
        return f"Skipped: {results['skipped']}.\n"
    cyclegan = [r for r in results["rows"] if r["part"] == "cyclegan"]
    seg = [r for r in results["rows"] if r["part"] == "seg"]
    lines = [
        f"Demo data, torch {results['torch']}. Speed is measured by `python -m benchmarks` "
        "(reports/bench.md), not here.",
        "",
        "## CycleGAN (params.yaml's cyclegan section)",
        "",
        "FCN-score: the oracle segmentation net on translated sim against sim labels (higher: "
        "content kept and looks real). Histogram distance: translated sim to real train (lower: "
        "closer). `late_*`: mean loss over the last quarter of training.",
        "",
    ]
    keys = [
        "precision",
        "seed",
        "hist_distance_after",
        "fcn_miou",
        "fcn_pixel_accuracy",
        *(f"late_{key}" for key in CURVE_KEYS),
    ]
    lines.append(table(cyclegan, [(key, key) for key in keys]))
    lines += noise_table(
        cyclegan,
        ["hist_distance_after", "fcn_miou", "late_loss_cycle_sim", "late_loss_cycle_real"],
    )
    lines += [
        "",
        "## Segmentation (oracle variant, scored on real val)",
        "",
    ]
    keys = ["precision", "seed", "final_loss", "miou", "pixel_accuracy"]
    lines.append(table(seg, [(key, key) for key in keys]))
    lines += noise_table(seg, ["final_loss", "miou", "pixel_accuracy"])
    return "\n".join(lines) + "\n"


@measurement("quality", page="quality", section=lambda r: markdown(r))
def quality(quick: bool) -> Results:
    """The default precision against fp32, and the default's seed-to-seed spread, on the demo
    data of the last `dvc repro` (quick: one CycleGAN run only)."""
    if not (PREPARED / "sim").is_dir() or not ORACLE.is_dir():
        return {"skipped": f"needs {PREPARED} and {ORACLE}: run `dvc repro` first", "rows": []}
    params = load_params()
    device = torch.device("cpu")
    seeds = [0] if quick else [0, 1]
    rows: list[dict[str, Any]] = []
    default = runtime.resolve_precision(params.cyclegan.precision, device)
    for precision, seed in [("fp32", 0), *((default, s) for s in seeds)][: 1 if quick else None]:
        rows.append(cyclegan_run(precision, seed, PREPARED, ORACLE))
        print(rows[-1], flush=True)
    if not quick:
        seg = params.train_seg
        rows.append(seg_run("fp32", False, 0, PREPARED))
        for seed in seeds:
            rows.append(seg_run(seg.precision, seg.channels_last, seed, PREPARED))
            print(rows[-1], flush=True)
    return {"torch": torch.__version__, "rows": rows}
