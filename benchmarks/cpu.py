"""The CPU speed measurements of reports/bench.md: each stage's throughput per lever, the CycleGAN
step's FLOP rate against this CPU's matmul rate and against the reference implementation, compile
times, and scoring against cityscapesscripts. Configurations and modes: benchmarks.harness.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks import harness as h
from benchmarks.harness import CPU, RATE_COLUMNS, Results, measurement
from pipeline.config import load_params
from pipeline.data.labels import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    TRAIN_ID_TO_ID,
    to_train_ids,
)
from pipeline.metrics import ConfusionMatrix, cityscapes_reference_scores
from pipeline.models.cyclegan import build_generator, translate_batch
from pipeline.runtime import resolve_precision


def with_memory(rows: list[Results], model: str, name: str, quick: bool) -> list[Results]:
    """`rows` with each mode's peak RSS over two full-size training steps in a fresh process
    (quick runs skip the fresh processes: seconds of imports each)."""
    for row in [] if quick else rows:
        job = {"model": model, "name": name, "mode": row["mode"]}
        row["peak_rss_mb"] = h.isolated("benchmarks.harness:two_steps_memory", **job).get("peak_mb")
    return rows


def time_cyclegan_steps(
    name: str, quick: bool, modes: tuple[str, ...], rounds: int, reference: bool = False
) -> tuple[int, dict[str, float], dict[str, list[float]]]:
    """Each mode's step (and the reference's) at config `name`, warmed, then timed interleaved:
    (threads, warm-up seconds, samples)."""
    config, size, _ = h.cyclegan_configs(quick)[name]
    threads = h.use_threads(config.threads)
    steps = {"reference fp32": h.reference_step(config, CPU)} if reference else {}
    steps |= {mode: h.cyclegan_step(config, mode, size, CPU) for mode in modes}
    warmup = {mode: round(h.warm(step), 2) for mode, step in steps.items()}
    calls = 1 if quick or name == "paper" else 10
    return threads, warmup, h.interleaved(steps, 2 if quick else rounds, calls)


def translate_rows(name: str, quick: bool, modes: tuple[str, ...]) -> list[Results]:
    config, size, batch = h.cyclegan_configs(quick)[name]
    h.use_threads(load_params().translate.threads)
    frames = h.random_frames(batch, size)
    calls = {}
    for mode in modes:
        levers = mode.split("+")
        generator = build_generator(config.netG, config.ngf, config.norm).eval()
        if "cl" in levers:
            generator = generator.to(memory_format=torch.channels_last)
        if "compile" in levers:
            generator = torch.compile(generator, dynamic=False)
        calls[mode] = lambda g=generator, p=levers[0]: translate_batch(g, frames, p, CPU)
    samples = h.interleaved(calls, 2 if quick else 5, warmup=2)
    return h.rate_rows(samples, batch, config=name, kind="translate")


@measurement(
    "cyclegan",
    page="bench",
    title="CycleGAN (training step, translation)",
    columns=f"{RATE_COLUMNS}|warmup_s=warm-up s|gflop_per_s=GFLOP/s"
    "|share_of_matmul=share of matmul peak",
    intro="Modes: fp32 eager, bf16 autocast, +cl channels_last, +compile torch.compile of the "
    "step's two phases (warm-up includes compiling, from the inductor cache when warm).",
)
def cyclegan(quick: bool) -> Results:
    """Every config and mode; the demo step's FLOP rate against this CPU's matmul rate."""
    modes = ("fp32", "bf16") if quick else ("fp32", "bf16", "bf16+cl", "bf16+compile")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    matmul = {k: h.matmul_flops(CPU, v, 256 if quick else 2048, 3) / 1e9 for k, v in dtypes.items()}
    rows: list[Results] = []
    for name, (config, _, _) in h.cyclegan_configs(quick).items():
        _, warmup, samples = time_cyclegan_steps(name, quick, modes, rounds=3)
        train = h.rate_rows(samples, config.batch, config=name, kind="train")
        for row in train:
            row["s_per_step"] = round(h.median(samples[row["mode"]]), 4)
            row["warmup_s"] = warmup[row["mode"]]
        rows += with_memory(train, "cyclegan", name, quick) + translate_rows(name, quick, modes[:3])
    first, (config, frame_size, _) = next(iter(h.cyclegan_configs(quick).items()))
    flops = h.count_flops(h.cyclegan_step(config, "fp32", frame_size, CPU))
    for row in rows:
        if row["config"] == first and row["kind"] == "train":
            achieved = flops * row["img_per_s"] / config.batch / 1e9
            row["gflop_per_s"] = round(achieved, 2)
            row["share_of_matmul"] = round(achieved / matmul[row["mode"].split("+")[0]], 4)
    ceiling = ", ".join(f"{k} {v:.1f}" for k, v in matmul.items())
    return {
        "matmul_gflop_per_s": {k: round(v, 1) for k, v in matmul.items()},
        "flops_config": first,
        "flops_per_step": flops,
        "rows": rows,
        "notes": [
            f"Dense matmul ceiling on this CPU (GFLOP/s): {ceiling}.",
            f"One CycleGAN training step at the {first} config: {flops / 1e9:.2f} GFLOP (torch "
            "flop counter).",
        ],
    }


@measurement(
    "reference",
    page="bench",
    title="CycleGAN step against the reference",
    columns="config|threads|mode|s_per_step=s/step|x_reference=x reference|spread=min-max s"
    "|warmup_s=warm-up s",
    intro="The reference's `optimize_parameters()` (fp32, its defaults) and this project's step "
    "(sampling included) on the same machine, threads and crop, timed interleaved in one "
    "process; `x reference` is the reference's time over the row's. The CPU targets: "
    ">= 2.5x at the paper config, >= 1.5x at the demo config.",
)
def against_reference(quick: bool) -> Results:
    """The CPU targets: our step against the reference's `optimize_parameters()`."""
    if h.reference_folder() is None:
        return {"skipped": f"no reference checkout at {h.REFERENCE}"}
    default = load_params().cyclegan
    levers = [resolve_precision(default.precision, CPU)] + ["cl"] * default.channels_last
    levers += {"eager": [], "default": ["compile"], "reduce-overhead": ["graphs"]}[default.compile]
    modes = ("+".join(levers), "bf16+compile")  # params.yaml's own levers, and compiled
    rows: list[Results] = []
    for name in h.cyclegan_configs(quick):
        threads, warmup, samples = time_cyclegan_steps(name, quick, modes, 5, reference=True)
        base = h.median(samples["reference fp32"])
        for mode, seconds in samples.items():
            rows.append({"config": name, "threads": threads, "mode": mode,
                         "s_per_step": round(h.median(seconds), 4),
                         "x_reference": round(base / h.median(seconds), 3),
                         "spread": f"{min(seconds):.3g}-{max(seconds):.3g}",
                         "warmup_s": warmup[mode]})  # fmt: skip
    return {"rows": rows}


def first_step_seconds(name: str, quick: bool, mode: str) -> Results:
    """Seconds from nothing to the end of the first step in a fresh process (build, compile)
    and of the second (run through `isolated` with a given inductor cache folder)."""
    config, size, _ = h.cyclegan_configs(quick)[name]
    start = time.perf_counter()
    step = h.cyclegan_step(config, mode, size, CPU)
    step()
    first = time.perf_counter() - start
    return {"first_step_s": round(first, 2), "second_step_s": round(h.warm(step, 1), 3)}


@measurement(
    "compile_cache",
    page="bench",
    title="Compile time of the demo step (fresh process each)",
    columns="run|first_step_s=to first step s|second_step_s=second step s",
)
def compile_cache(quick: bool) -> Results:
    """Cold and warm compile of the demo step: an empty inductor cache, then the same one."""
    job = {"name": next(iter(h.cyclegan_configs(quick))), "quick": quick, "mode": "bf16+compile"}
    with tempfile.TemporaryDirectory() as cache:
        env = {"TORCHINDUCTOR_CACHE_DIR": cache}
        cold = h.isolated("benchmarks.cpu:first_step_seconds", env=env, **job)
        warm = h.isolated("benchmarks.cpu:first_step_seconds", env=env, **job)
    eager = h.isolated("benchmarks.cpu:first_step_seconds", **{**job, "mode": "bf16"})
    return {
        "config": job["name"],
        "rows": [
            {"run": "eager (bf16)", **eager},
            {"run": "compiled, empty inductor cache", **cold},
            {"run": "compiled, warm inductor cache", **warm},
        ],
        "notes": [
            "The stage keeps inductor's cache in `.cache/inductor` (git-ignored), so only the "
            "first compiled run of a configuration pays the cold time."
        ],
    }


@measurement(
    "segmentation",
    page="bench",
    title="Segmentation (training step, inference)",
    columns=f"{RATE_COLUMNS}|data_wait_share=data wait share",
)
def segmentation(quick: bool) -> Results:
    """Training step and inference per mode, demo and 512x1024; the data-wait share."""
    modes = ("fp32", "bf16") if quick else ("fp32", "bf16", "bf16+cl")
    rounds, rows = 2 if quick else 3, []
    for name, (config, size, batch) in h.seg_configs(quick).items():
        h.use_threads(config.threads)
        waits: dict[str, list[float]] = {mode: [] for mode in modes}
        with tempfile.TemporaryDirectory() as tmp:
            split = h.fake_split(Path(tmp), 8, size)
            steps = {mode: h.seg_train_step(config, mode, split, CPU) for mode in modes}
            timed = {mode: lambda s=steps[mode], w=waits[mode]: w.append(s()) for mode in modes}
            calls = 1 if quick or name == "paper" else 4
            samples = h.interleaved(timed, rounds, calls, warmup=1)
        train = h.rate_rows(samples, config.batch, config=name, kind="train")
        for row in train:
            wait = h.median(waits[row["mode"]]) / h.median(samples[row["mode"]])
            row["data_wait_share"] = round(wait, 4)
        calls = {mode: h.seg_inference_step(config, mode, size, batch, CPU) for mode in modes}
        samples = h.interleaved(calls, rounds, warmup=1)
        rows += with_memory(train, "seg", name, quick)
        rows += h.rate_rows(samples, batch, config=name, kind="inference")
    return {"rows": rows}


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


def confusion(pairs: Iterable[tuple[Any, Any]]) -> ConfusionMatrix:
    """The confusion matrix of (truth, prediction) train-id maps, or of label-id PNGs."""
    matrix = ConfusionMatrix()
    for pair in pairs:
        matrix.update(*(read_train_ids(p) if isinstance(p, Path) else p for p in pair))
    return matrix


def scoring_section(results: Results) -> str:
    return f"## Scoring against cityscapesscripts\n\n```\n{json.dumps(results, indent=1)}\n```\n"


@measurement("scoring", page="bench", render=scoring_section)
def scoring(quick: bool) -> Results:
    """Our confusion-matrix scores against cityscapesscripts': equal, and how much faster.

    Both score the same label-id PNGs (label_maps); cityscapesscripts reads the files itself,
    ours is timed reading the same PNGs and on train-id tensors already in memory. One torch
    thread, as the reference has."""
    # Imported here: its helpers need packages that GPU machines without a registry lack.
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval

    count, (height, width) = (10, (128, 256)) if quick else (100, (512, 1024))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pairs, files = [], []
            for i in range(count):
                truth, prediction = label_maps(rng, height, width)
                pairs.append((torch.from_numpy(truth), torch.from_numpy(prediction)))
                stem = f"{tmp}/bench_{i:06d}_000019"
                files.append(
                    (Path(f"{stem}_gtFine_labelIds.png"), Path(f"{stem}_pred_labelIds.png"))
                )
                Image.fromarray(TRAIN_ID_TO_ID[truth]).save(files[-1][0])
                Image.fromarray(TRAIN_ID_TO_ID[prediction]).save(files[-1][1])
            truths, predictions = (list(column) for column in zip(*files))
            theirs, cityscapes_s = h.timed(lambda: cityscapes_reference_scores(predictions, truths))
            with_io, ours_with_io_s = h.timed(lambda: confusion(files))
        in_memory, ours_no_io_s = h.timed(lambda: confusion(pairs))
    finally:
        torch.set_num_threads(threads)
    ours = in_memory.scores()
    present = [name for name in CLASS_NAMES if not math.isnan(ours["per_class_iou"][name])]
    differences = [abs(ours["per_class_iou"][n] - theirs["classScores"][n]) for n in present]
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
        "max_iou_difference": float(max(differences, default=0.0)),
        "scores_match": match,
    }
