"""The real sets' cost: how `prepare` and `translate` scale with the number of frames on this
machine, and the projected wall time of every stage under the real-data profile on GPUs.

The projection (`projection`) is PROJECTIONS, not measurements:
- work: the FLOPs of one CycleGAN step, one generator pass and one segmentation step at the
  profile's sizes, counted by torch's flop counter on the CPU at a small size and scaled by
  pixels (every layer is a convolution: cost grows with pixels);
- rates: from reports/gpu.json (`python -m benchmarks gpu` on an H100, copied into reports/) when
  it exists, else an assumed H100 rate for the eager bf16 step (0.120 s for its 1.87 TFLOP:
  15.6 TFLOP/s; not measured by this project), applied to every GPU stage: an upper bound,
  since larger convolutions run at a higher rate than that small, launch-bound step;
- prepare runs on the CPU: the measuring host's decode-and-resize time per native frame, over the
  profile's `prepare.workers`;
- N GPUs: training at an assumed 90 % DDP scaling efficiency, translation and evaluation
  sharded perfectly.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import harness as h
from benchmarks.harness import CPU, Results, measurement
from pipeline.config import Params, apply_profile, load_params, parse_params, read_yaml_mapping

GTA5_FRAMES, GTA5_SIZE = 24_966, (1052, 1914)
CITYSCAPES_TRAIN, CITYSCAPES_VAL, CITYSCAPES_SIZE = 2_975, 500, (1024, 2048)
PROFILE = Path("profiles/gta5_cityscapes.yaml")
GPU_RESULTS = Path("reports/gpu.json")
DOCUMENTED_TFLOP_PER_S = 1.87 / 0.120  # assumed, not measured: eager bf16 step on one H100
DDP_EFFICIENCY = 0.9
GPUS = (1, 4, 8)
NATIVE_JOB = "benchmarks.scaling:prepare_seconds_per_native_frame"


def prepare_seconds(frames: int, size: list[int]) -> Results:
    """Prepare `frames` demo frames (decode, check, resize to half size, cache), 2 workers."""
    from pipeline.data.demo import DemoSpec, generate
    from pipeline.data.gta5 import index_gta5
    from pipeline.data.prepare import prepare_split

    with tempfile.TemporaryDirectory() as tmp:
        generate(DemoSpec(0, frames, 1, 1, tuple(size)), tmp, workers=2)
        index, half = index_gta5(Path(tmp) / "gta5"), (size[0] // 2, size[1] // 2)
        _, seconds = h.timed(lambda: prepare_split(index, Path(tmp) / "prepared", half, workers=2))
    return {"seconds": round(seconds, 3), "peak_rss_mb": h.peak_memory_mb(CPU)}


def prepare_seconds_per_native_frame(height: int, width: int, frames: int) -> Results:
    """Per-frame prepare cost at a real set's native size, resized to 512x1024 (one worker)."""
    from pipeline.data.demo import render_frame
    from pipeline.data.index import Sample
    from pipeline.data.labels import TRAIN_ID_TO_ID
    from pipeline.data.prepare import decode_sample
    from pipeline.io import write_png

    with tempfile.TemporaryDirectory() as tmp:
        samples = []
        for i in range(frames):
            image, label = render_frame(0, "real", i, (height, width))
            write_png(Path(tmp) / f"{i}.png", image)
            write_png(Path(tmp) / f"{i}_label.png", TRAIN_ID_TO_ID[label])
            samples.append(Sample(str(i), Path(tmp) / f"{i}.png", Path(tmp) / f"{i}_label.png"))
        _, seconds = h.timed(lambda: [decode_sample(sample, (512, 1024)) for sample in samples])
    return {"seconds_per_frame": round(seconds / frames, 4)}


def translate_seconds(frames: int, size: list[int], workers: int) -> Results:
    """Translate and write `frames` random frames with the demo generator (random weights)."""
    from pipeline.models.cyclegan import build_generator
    from pipeline.runtime import resolve_precision, set_threads
    from pipeline.translate import translate_split

    params = load_params()
    config = params.cyclegan
    set_threads(params.translate.threads)
    generator = build_generator(config.netG, config.ngf, config.norm).eval()
    names = [f"{i:05d}" for i in range(frames)]
    precision = resolve_precision(params.translate.precision, CPU)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        translate_split(
            generator, h.random_frames(frames, tuple(size)), names, tmp, params.translate.batch,
            precision, CPU, workers=workers,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), "peak_rss_mb": h.peak_memory_mb(CPU)}


def exponent(counts: list[int], seconds: list[float]) -> float:
    """Slope of log(time) against log(N): 1.0 is linear."""
    slope, _ = np.polyfit(np.log(counts), np.log(seconds), 1)
    return round(float(slope), 3)


@measurement(
    "scaling",
    page="bench",
    title="Scaling with frames (N, 2N, 4N)",
    columns="stage|n1=N s|n2=2N s|n4=4N s|peak_rss_mb=peak RSS MB|exponent",
)
def scaling(quick: bool) -> Results:
    """prepare and translate at N, 2N, 4N frames; the real sets' prepare time projected."""
    params = load_params()
    base = 8 if quick else 100
    counts = [base, 2 * base, 4 * base]
    frame_size = [64, 128] if quick else list(params.demo_data.size)
    translating = {"size": list(params.data.size), "workers": params.translate.workers}
    rows = []
    for stage, job, kwargs in (
        ("prepare", "prepare_seconds", {"size": frame_size}),
        ("translate", "translate_seconds", translating),
    ):
        runs = [h.isolated(f"benchmarks.scaling:{job}", frames=n, **kwargs) for n in counts]
        row: Results = {"stage": stage}
        row["peak_rss_mb"] = "/".join(str(r.get("peak_rss_mb")) for r in runs)
        for n, run in zip(counts, runs):
            row[f"n{n // base}"] = run.get("seconds", run.get("error"))
        if all("seconds" in run for run in runs):
            row["exponent"] = exponent(counts, [run["seconds"] for run in runs])
        rows.append(row)
    notes = [f"N = {base} frames; each run in a fresh process."]
    (shrink, count), workers = (8, 2) if quick else (1, 4), params.prepare.workers
    native = {
        name: h.isolated(
            NATIVE_JOB, height=size[0] // shrink, width=size[1] // shrink, frames=count
        )
        for name, size in (("gta5", GTA5_SIZE), ("cityscapes", CITYSCAPES_SIZE))
    }
    results: Results = {"counts": counts, "rows": rows, "native": native}
    if all("seconds_per_frame" in v for v in native.values()):
        frames = {"gta5": GTA5_FRAMES, "cityscapes": CITYSCAPES_TRAIN + CITYSCAPES_VAL}
        minutes = {k: native[k]["seconds_per_frame"] * n / workers / 60 for k, n in frames.items()}
        results["prepare_minutes"] = {k: round(v, 1) for k, v in minutes.items()}
        results["prepare_minutes"]["workers"] = workers
        notes.append(
            f"Projected `prepare` on the real sets at native size to 512x1024 with "
            f"{workers} workers: GTA5 {minutes['gta5']:.1f} min, Cityscapes "
            f"{minutes['cityscapes']:.1f} min."
        )
    if "exponent" in rows[1]:
        # Generator cost grows with pixels: the demo rate scaled to 512x1024 frames.
        rate = counts[-1] / rows[1]["n4"] * params.data.size[0] * params.data.size[1] / (512 * 1024)
        results["translate_gta5_512x1024_minutes"] = round(GTA5_FRAMES / rate / 60, 1)
        notes.append(
            "Projected `translate` of GTA5 at 512x1024 on this CPU (demo generator): "
            f"{GTA5_FRAMES / rate / 60:.1f} min."
        )
    return results | {"notes": notes}


def profile_params() -> Params:
    return parse_params(apply_profile(read_yaml_mapping("params.yaml"), read_yaml_mapping(PROFILE)))


def work(params: Params, small: tuple[int, int]) -> dict[str, float]:
    """FLOPs per CycleGAN step, generator pass (one frame) and segmentation training step and
    inference (one frame) at the profile's sizes, counted at `small` and scaled by pixels."""
    from pipeline.data.labels import NUM_CLASSES
    from pipeline.models.cyclegan import build_generator
    from pipeline.models.segmentation import build_segmentation_model
    from pipeline.train.cyclegan import build_trainer

    cyclegan = dataclasses.replace(params.cyclegan, crop=small, precision="fp32")
    trainer = build_trainer(cyclegan, CPU, "fp32")
    batch = torch.rand(cyclegan.batch, 3, *small) * 2 - 1
    generator = build_generator(cyclegan.netG, cyclegan.ngf, cyclegan.norm).eval()
    seg = params.train_seg
    net = build_segmentation_model(seg.arch, seg.encoder, NUM_CLASSES)
    images = torch.rand(1, 3, *small)
    with torch.no_grad():
        generator_flops = h.count_flops(lambda: generator(images))
        seg_inference = h.count_flops(lambda: net.eval()(images))
    seg_step = h.count_flops(lambda: net.train()(images).sum().backward())
    cyclegan_step = h.count_flops(lambda: trainer.step(batch, batch))
    pixels, crop, size = small[0] * small[1], params.cyclegan.crop, params.data.size
    return {
        "cyclegan_step": cyclegan_step * crop[0] * crop[1] / pixels,
        "generator_frame": generator_flops * size[0] * size[1] / pixels,
        "seg_step": seg_step * seg.batch * seg.crop[0] * seg.crop[1] / pixels,
        "seg_frame": seg_inference * size[0] * size[1] / pixels,
    }


def measured_rates() -> Results:
    """Seconds per unit of work measured by the GPU benchmark (reports/gpu.json), if any."""
    if not GPU_RESULTS.is_file():
        return {}
    gpu = json.loads(GPU_RESULTS.read_text()).get("gpu", {})
    rates: Results = {"device": gpu.get("facts", {}).get("device")}
    if "profile_crop" in gpu:
        rates["cyclegan_step"] = gpu["profile_crop"]["s_per_step"]
    for row in gpu.get("translate", []):
        if row["size"] == "512x1024" and row.get("img_per_s"):
            rates["generator_frame"] = 1 / row["img_per_s"]
    seg = [row for row in gpu.get("segmentation", []) if "ms_per_step" in row]
    for kind, key, batch in (("train", "seg_step", 1), ("inference", "seg_frame", 8)):
        fastest = min((row["ms_per_step"] for row in seg if row["kind"] == kind), default=None)
        if fastest:  # inference: per frame of the benchmark's batch of 8
            rates[key] = fastest / 1e3 / batch
    return rates


@measurement(
    "projection",
    page="bench",
    title=f"Projected wall time of the real-data profile ({PROFILE})",
    columns="stage|work|rate=rate from|hours_1=1 GPU h|hours_4=4 GPUs h|hours_8=8 GPUs h",
    intro="PROJECTIONS, not measurements (benchmarks/scaling.py says how). prepare is CPU work "
    "and does not scale with GPUs.",
)
def projection(quick: bool) -> Results:
    """PROJECTED (not measured) wall time per stage of the real-data profile on 1 and N H100s."""
    params = profile_params()
    flops = work(params, (32, 64) if quick else (64, 128))
    measured = measured_rates()
    seconds_per = {
        k: measured.get(k, v / (DOCUMENTED_TFLOP_PER_S * 1e12)) for k, v in flops.items()
    }
    if quick:  # tiny frames, in this process
        prepare = prepare_seconds_per_native_frame(1052 // 8, 1914 // 8, 1)
    else:
        prepare = h.isolated(NATIVE_JOB, height=1052, width=1914, frames=2)
    frames = GTA5_FRAMES + CITYSCAPES_TRAIN + CITYSCAPES_VAL
    variants = len(params.train_seg.variants)
    cg, seg, workers = params.cyclegan, params.train_seg, params.prepare.workers

    def row(stage: str, work: str, count: float, key: str, efficiency: float) -> Results:
        """`count` units of `key`'s work on 1 and N GPUs at DDP `efficiency` (0: CPU work)."""
        source = "measured" if key in measured else "assumed rate"
        seconds = count * seconds_per[key] if key in seconds_per else count
        scale = {g: 1 if efficiency == 0 or g == 1 else g * efficiency for g in GPUS}
        hours = {f"hours_{g}": round(seconds / scale[g] / 3600, 2) for g in GPUS if count}
        source = source if key else "CPU, measured here"
        return {"stage": stage, "work": work, "rate": source} | hours

    seg_work = f"{seg.iters} steps ({seg.iters * seg.batch / GTA5_FRAMES:.1f} GTA5 epochs)"
    cg_work = f"{cg.iters} steps ({cg.iters * cg.batch / GTA5_FRAMES:.1f} GTA5 epochs)"
    per_frame = prepare.get("seconds_per_frame", 0)
    # fmt: off
    rows = [
        row("prepare", f"{frames} frames, {workers} CPU workers", per_frame * frames / workers,
            "", 0),
        row("train_cyclegan", f"{cg_work}, {list(cg.crop)} crops", cg.iters, "cyclegan_step",
            DDP_EFFICIENCY),
        row("translate", f"{GTA5_FRAMES} frames at {list(params.data.size)}", GTA5_FRAMES,
            "generator_frame", 1),
        row("train_seg", f"{variants} variants x {seg_work}, batch {seg.batch}",
            variants * seg.iters, "seg_step", DDP_EFFICIENCY),
        row("evaluate", f"{variants} variants x {CITYSCAPES_VAL} frames", variants * CITYSCAPES_VAL,
            "seg_frame", 1),
    ]
    # fmt: on
    tflop = {k: round(v / 1e12, 4) for k, v in flops.items()}
    device = measured.get("device") or "H100 (assumed rate)"
    rates = (
        f"Rates measured on {device} ({GPU_RESULTS})."
        if measured
        else f"GPU rows not measured: an assumed H100 rate until {GPU_RESULTS} exists "
        "(docs/speed.md, 'On one GPU', gives the one-command GPU run)."
    )
    unit = (
        f"Work per unit: CycleGAN step {tflop['cyclegan_step']} TFLOP, generator pass per frame "
        f"{tflop['generator_frame']} TFLOP, segmentation step {tflop['seg_step']} TFLOP, "
        f"segmentation inference per frame {tflop['seg_frame']} TFLOP."
    )
    return {
        "profile": str(PROFILE),
        "device": device,
        "tflop": tflop,
        "rows": rows,
        "notes": [rates, unit],
    }
