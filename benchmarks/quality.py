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

`python -m benchmarks.quality --out reports/quality` (about 15 minutes on 2 cores) writes
quality.json and quality.md.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import runtime
from pipeline.config import load_params
from pipeline.data.prepare import PreparedSplit
from pipeline.evaluate import evaluate_images, native_labels
from pipeline.io import write_json, write_text
from pipeline.segment import load_model
from pipeline.tracking import NullTracker
from pipeline.train.cyclegan import train_cyclegan
from pipeline.train.segmentation import train_segmentation
from pipeline.translate import domain_shift_report, load_trained_generator, translate_batch

CURVE_KEYS = ("loss_cycle_sim", "loss_cycle_real", "loss_gan_sim2real", "loss_disc_real")


def _late_means(curves_csv: Path) -> dict[str, float]:
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
        late = _late_means(Path(tmp) / "curves.csv")
        generator = load_trained_generator(Path(tmp) / "gen_sim2real.safetensors", device)
    batch = params.translate.batch
    translated = np.concatenate(
        [
            translate_batch(generator, sim.images[i : i + batch], metrics["precision"], device)
            for i in range(0, len(sim.images), batch)
        ]
    )
    shift = domain_shift_report(sim.images, translated, real.images)
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


def _rows_table(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[str]:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(key, "")) for key in keys) + " |" for row in rows]
    return lines


def _noise_lines(rows: list[dict[str, Any]], metrics: Sequence[str]) -> list[str]:
    """|default - fp32| (same seed 0) against |seed 0 - seed 1| of the default, per metric."""
    fp32 = next((r for r in rows if r["precision"] == "fp32" and r["seed"] == 0), None)
    default = [r for r in rows if r["precision"] != "fp32"]
    by_seed = {r["seed"]: r for r in default}
    if fp32 is None or 0 not in by_seed:
        return []
    lines = ["", "| metric | fp32 | default | default - fp32 | seed-to-seed (default) |"]
    lines.append("|---|---:|---:|---:|---:|")
    for metric in metrics:
        delta = by_seed[0][metric] - fp32[metric]
        spread = abs(by_seed[0][metric] - by_seed[1][metric]) if 1 in by_seed else float("nan")
        lines.append(
            f"| {metric} | {fp32[metric]:.4f} | {by_seed[0][metric]:.4f} | {delta:+.4f} "
            f"| {spread:.4f} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    cyclegan = [r for r in results["rows"] if r["part"] == "cyclegan"]
    seg = [r for r in results["rows"] if r["part"] == "seg"]
    lines = [
        "# Quality of the fast defaults against fp32",
        "",
        f"Command: `{results['command']}`; demo data, torch {results['torch']}. Speed is "
        "measured by benchmarks/run.py (reports/bench.md), not here.",
        "",
        "## CycleGAN (params.yaml's cyclegan section)",
        "",
        "FCN-score: the oracle segmentation net on translated sim against sim labels (higher: "
        "content kept and looks real). Histogram distance: translated sim to real train (lower: "
        "closer). `late_*`: mean loss over the last quarter of training.",
        "",
    ]
    lines += _rows_table(
        cyclegan,
        [
            "precision",
            "seed",
            "hist_distance_after",
            "fcn_miou",
            "fcn_pixel_accuracy",
            *(f"late_{key}" for key in CURVE_KEYS),
        ],
    )
    lines += _noise_lines(
        cyclegan,
        ["hist_distance_after", "fcn_miou", "late_loss_cycle_sim", "late_loss_cycle_real"],
    )
    lines += [
        "",
        "## Segmentation (oracle variant, scored on real val)",
        "",
    ]
    lines += _rows_table(seg, ["precision", "seed", "final_loss", "miou", "pixel_accuracy"])
    lines += _noise_lines(seg, ["final_loss", "miou", "pixel_accuracy"])
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--oracle", type=Path, default=Path("models/seg/oracle"))
    parser.add_argument("--parts", nargs="+", default=["cyclegan", "seg"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="for the default")
    parser.add_argument("--out", type=Path, help="folder for quality.json and quality.md")
    args = parser.parse_args(argv)
    params = load_params()
    device = torch.device("cpu")
    rows: list[dict[str, Any]] = []
    if "cyclegan" in args.parts:
        default = runtime.resolve_precision(params.cyclegan.precision, device)
        rows.append(cyclegan_run("fp32", 0, args.prepared, args.oracle))
        print(rows[-1], flush=True)
        for seed in args.seeds:
            rows.append(cyclegan_run(default, seed, args.prepared, args.oracle))
            print(rows[-1], flush=True)
    if "seg" in args.parts:
        seg = params.train_seg
        rows.append(seg_run("fp32", False, 0, args.prepared))
        print(rows[-1], flush=True)
        for seed in args.seeds:
            rows.append(seg_run(seg.precision, seg.channels_last, seed, args.prepared))
            print(rows[-1], flush=True)
    results = {
        "command": "python -m benchmarks.quality "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "torch": torch.__version__,
        "rows": rows,
    }
    text = markdown(results)
    print(text)
    if args.out:
        write_json(args.out / "quality.json", results)
        write_text(args.out / "quality.md", text)
    return results


if __name__ == "__main__":
    main()
