"""Measurements that train on the demo data of the last `dvc repro` (through the real training
functions, params.yaml's settings):

- quality: does the fast default precision keep quality? CycleGAN (`train_cyclegan`) at fp32 and
  at the default, every sim frame translated, scored by the colour-histogram distance to real and
  the FCN-score (the pipeline's oracle net on translated sim, at the evaluate stage's precision
  for every row, so the instrument does not change), and loss curves over the last quarter of
  training; segmentation (`train_segmentation`, oracle variant: the largest and least noisy mIoU)
  at fp32 without channels_last and at the default, scored on real val at label resolution. The
  default also runs with a second seed: the page compares |default - fp32| with |seed 0 - seed 1|.
  About 15 minutes on 2 cores.
- convergence: is the segmentation net trained to convergence? The oracle (the
  best-posed problem, so the one furthest from converged if any is) at train_seg.iters and at 3x
  as many, scored on real val (working resolution) ten times along each run. Converged: the
  default run's curve is flat over its last fifth and the longer schedule gains under 2 mIoU.
"""

from __future__ import annotations

import csv
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import CPU, Results, measurement, table
from pipeline import runtime
from pipeline.colour_stats import channel_stats, domain_shift_report
from pipeline.config import load_params
from pipeline.data.split import PreparedSplit
from pipeline.evaluate import evaluate_images, native_labels
from pipeline.models.cyclegan import translate_batch
from pipeline.models.generator_folder import load_trained_generator
from pipeline.models.model_folder import load_model
from pipeline.tracking.base import NullTracker
from pipeline.train.cyclegan import train_cyclegan
from pipeline.train.segmentation import train_segmentation

PREPARED, ORACLE = Path("data/prepared"), Path("models/seg/oracle")
CURVE_KEYS = ("loss_cycle_sim", "loss_cycle_real", "loss_gan_sim2real", "loss_disc_real")
CHECKS, LONGER = 10, 3  # convergence: validation passes per run; the longer run's factor


def late_means(curves_csv: Path) -> dict[str, float]:
    """Mean of each loss over the last quarter of the logged steps."""
    with open(curves_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    late = rows[len(rows) * 3 // 4 :]
    return {key: float(np.mean([float(row[key]) for row in late])) for key in CURVE_KEYS}


def scores(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """mIoU and pixel accuracy, at the evaluate stage's precision for every row."""
    evaluate = load_params().evaluate
    precision = runtime.resolve_precision(evaluate.precision, CPU)
    found = evaluate_images(
        model, images, labels, evaluate.batch, precision, CPU
    ).confusion.scores()
    return {key: round(float(found[key]), 4) for key in ("miou", "pixel_accuracy")}


def cyclegan_run(precision: str, seed: int) -> Results:
    params = load_params()
    config = dataclasses.replace(params.cyclegan, precision=precision, seed=seed)
    sim = PreparedSplit.open(PREPARED / "sim", need_labels=True)
    real = PreparedSplit.open(PREPARED / "real_train")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        metrics = train_cyclegan(config, sim.images, real.images, tmp, NullTracker(),
                                 curves_path=Path(tmp) / "curves.csv", device=CPU)  # fmt: skip
        seconds = time.perf_counter() - start
        late = late_means(Path(tmp) / "curves.csv")
        generator = load_trained_generator(Path(tmp) / "gen_sim2real.safetensors", CPU)
    batch = params.translate.batch
    translated = np.concatenate(
        [
            translate_batch(generator, sim.images[i : i + batch], metrics["precision"], CPU)
            for i in range(0, len(sim.images), batch)
        ]
    )
    shift = domain_shift_report(
        channel_stats(sim.images), channel_stats(translated), channel_stats(real.images)
    )
    fcn = scores(load_model(ORACLE), translated, sim.labels)  # the instrument
    return {
        "part": "cyclegan",
        "precision": metrics["precision"],
        "seed": seed,
        "train_seconds": round(metrics["train_seconds"], 1),
        "wall_seconds": round(seconds, 1),
        "img_per_s": metrics["img_per_s"],
        "hist_distance_after": shift["hist_distance_after"],
        "fcn_miou": fcn["miou"],
        "fcn_pixel_accuracy": fcn["pixel_accuracy"],
        **{f"late_{key}": round(value, 4) for key, value in late.items()},
    }


def seg_run(precision: str, channels_last: bool, seed: int) -> Results:
    seg = load_params().train_seg
    config = dataclasses.replace(seg, precision=precision, channels_last=channels_last, seed=seed)
    runtime.set_threads(config.threads)
    spec = config.variants["oracle"]
    images = PreparedSplit.open(spec.images)
    labels = PreparedSplit.open(spec.labels, need_labels=True)
    val = PreparedSplit.open(PREPARED / "real_val")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train_segmentation(config, "oracle", images, labels, None, tmp, NullTracker())
        seconds = time.perf_counter() - start
        model = load_model(tmp)
    found = scores(model, val.images, native_labels(PREPARED / "real_val"))
    return {
        "part": "seg",
        "precision": runtime.resolve_precision(precision, CPU) + ("+cl" if channels_last else ""),
        "seed": seed,
        "wall_seconds": round(seconds, 1),
        "final_loss": round(result["loss"], 4),
        "miou": found["miou"],
        "pixel_accuracy": found["pixel_accuracy"],
    }


def noise_table(rows: list[Results], metrics: Sequence[str]) -> list[str]:
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
    columns = "metric|fp32|default|delta=default - fp32|spread=seed-to-seed (default)"
    return ["", table(cells, columns)]


def quality_page(results: Results) -> str:
    if "skipped" in results:
        return f"Skipped: {results['skipped']}.\n"
    cyclegan = [r for r in results["rows"] if r["part"] == "cyclegan"]
    seg = [r for r in results["rows"] if r["part"] == "seg"]
    late = "|".join(f"late_{key}" for key in CURVE_KEYS)
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
        table(cyclegan, f"precision|seed|hist_distance_after|fcn_miou|fcn_pixel_accuracy|{late}"),
        *noise_table(
            cyclegan,
            ["hist_distance_after", "fcn_miou", "late_loss_cycle_sim", "late_loss_cycle_real"],
        ),
        "",
        "## Segmentation (oracle variant, scored on real val)",
        "",
        table(seg, "precision|seed|final_loss|miou|pixel_accuracy"),
        *noise_table(seg, ["final_loss", "miou", "pixel_accuracy"]),
    ]
    return "\n".join(lines) + "\n"


@measurement("quality", page="quality", render=lambda r: quality_page(r))
def quality(quick: bool) -> Results:
    """The default precision against fp32, and the default's seed-to-seed spread, on the demo
    data of the last `dvc repro` (quick: one CycleGAN run only)."""
    if not (PREPARED / "sim").is_dir() or not ORACLE.is_dir():
        return {"skipped": f"needs {PREPARED} and {ORACLE}: run `dvc repro` first", "rows": []}
    params = load_params()
    seeds = [0] if quick else [0, 1]
    default = runtime.resolve_precision(params.cyclegan.precision, CPU)
    runs = [("fp32", 0), *((default, s) for s in seeds)][: 1 if quick else None]
    rows = [cyclegan_run(precision, seed) for precision, seed in runs]
    if not quick:
        seg = params.train_seg
        rows.append(seg_run("fp32", False, 0))
        rows += [seg_run(seg.precision, seg.channels_last, seed) for seed in seeds]
    return {"torch": torch.__version__, "rows": rows}


@measurement("convergence", page="convergence", render=lambda r: convergence_page(r))
def convergence(quick: bool) -> Results:
    """Whether the oracle segmentation net converges: the default schedule against 3x as long."""
    if not (PREPARED / "real_val").is_dir():
        return {"skipped": f"needs {PREPARED}: run `dvc repro` first"}
    base = load_params().train_seg
    spec = base.variant("oracle")
    runs = {}
    for label, iters in (("default", base.iters), (f"{LONGER}x", LONGER * base.iters)):
        config = dataclasses.replace(base, iters=iters, val_every=max(1, iters // CHECKS),
                                     checkpoint_every=iters, threads=0)  # fmt: skip
        images = PreparedSplit.open(spec.images)
        labels = PreparedSplit.open(spec.labels, need_labels=True)
        val = PreparedSplit.open(PREPARED / "real_val", need_labels=True)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            train_segmentation(config, "oracle", images, labels, None, out, NullTracker(), val)
            lines = (Path(out) / "val_curve.csv").read_text().splitlines()
        curve = [dict(zip(lines[0].split(","), map(float, row.split(",")))) for row in lines[1:]]
        runs[label] = {"iters": iters, "seconds": time.perf_counter() - start, "curve": curve}
    default, longer = runs["default"], runs[f"{LONGER}x"]
    fifth = [row for row in default["curve"] if row["step"] >= 0.8 * default["iters"]]
    return {
        "variant": "oracle",
        "settings": {k: v for k, v in dataclasses.asdict(base).items() if k != "variants"},
        "runs": runs,
        "last_fifth_gain": fifth[-1]["monitor_miou"] - fifth[0]["monitor_miou"],
        "longer_gain": longer["curve"][-1]["monitor_miou"] - default["curve"][-1]["monitor_miou"],
    }


def convergence_page(result: Results) -> str:
    if "skipped" in result:
        return f"Skipped: {result['skipped']}.\n"
    longer_label = next(label for label in result["runs"] if label != "default")
    runs = {"default": result["runs"]["default"], "longer": result["runs"][longer_label]}
    steps = sorted({row["step"] for run in runs.values() for row in run["curve"]})
    rows = [
        {"step": int(step)}
        | {
            label: next((100 * r["monitor_miou"] for r in run["curve"] if r["step"] == step), None)
            for label, run in runs.items()
        }
        for step in steps
    ]
    columns = "step|" + "|".join(f"{label}={run['iters']} iters" for label, run in runs.items())
    flat = abs(result["last_fifth_gain"]) < 0.02
    small = result["longer_gain"] < 0.02
    lines = [
        f"The `{result['variant']}` net: mIoU (%) on the real val split at the working "
        "resolution, ten times per run; params.yaml's train_seg settings, the longer run only "
        "multiplies iters.",
        "",
        table(rows, columns),
        "",
        f"- last fifth of the default run: {100 * result['last_fifth_gain']:+.1f} mIoU "
        f"({'flat' if flat else 'still rising'}: threshold 2.0)",
        f"- {longer_label} schedule: {100 * result['longer_gain']:+.1f} mIoU over the default "
        f"({'under' if small else 'over'} the 2.0 threshold)",
        f"- wall time: {runs['default']['seconds']:.0f} s and {runs['longer']['seconds']:.0f} s",
    ]
    return "\n".join(lines) + "\n"
