"""The bench page's GPU rows on one CUDA device, in one command that ends within its time budget
(docs/speed.md, 'On one GPU': how to run it on a GPU machine without a package registry).

Parts, in order, while SIM2REAL_GPU_BUDGET_S (default 420 s) lasts; one that would not fit, or is
not in SIM2REAL_GPU_PARTS (default: all of NEEDS_S), is listed as skipped. eager, compiled: the
CycleGAN step at the paper config per lever and with all of them, and the reference's: ms/step,
TFLOP/s, share of the bf16 matmul rate measured in the run, peak memory (what the candidate
allocated at its peak while built and warmed) and ratio to the reference. translate: img/s of
translate_split (ResNet-9, PNGs written by worker threads). segmentation: training and inference
per lever at 512x1024, batch 8. trajectory: whether the fastest step keeps the eager fp32 loss
trajectory within seed noise. profile_crop: the step at the real-data profile's 400x400 crops
(for `benchmarks projection`). The page is saved after every part; without CUDA it runs on the
CPU (a check of the script).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import harness as h
from benchmarks.harness import Results, Step, measurement, table
from pipeline.config import CycleGANConfig, load_params
from pipeline.models.cyclegan import build_generator
from pipeline.translate import translate_split

EAGER_MODES = ("fp32", "bf16", "bf16+cl", "bf16+host")
COMPILED_MODES = ("bf16+graphs", "bf16+compile", "bf16+cl+graphs")
# Rough seconds each part needs on an H100 (compiling dominates); skipped when less is left.
NEEDS_S = {"eager": 60, "translate": 40, "compiled": 150, "segmentation": 90}
NEEDS_S |= {"trajectory": 60, "profile_crop": 30}


def warmed(build: Callable[[], Step], where: torch.device) -> tuple[Step, Results]:
    """A built candidate after its first three steps, with the seconds that took (compiling
    included) and its peak memory (CUDA: its own allocations; CPU: the process's peak RSS)."""
    before = torch.cuda.memory_allocated(where) / 2**20 if where.type == "cuda" else 0.0
    if where.type == "cuda":
        torch.cuda.reset_peak_memory_stats(where)
    start = time.perf_counter()
    step = build()
    h.warm(step, 3)
    peak = round(h.peak_memory_mb(where) - before, 1)
    return step, {"warmup_s": round(time.perf_counter() - start, 2), "peak_mb": peak}


def time_steps(
    candidates: dict[str, tuple[Step, Results]], flops: int, matmul: float, where: Any, quick: bool
) -> list[Results]:
    """Warmed candidates timed interleaved: one row each, with its ratio to the reference."""
    steps = {name: step for name, (step, _) in candidates.items()}
    samples = h.interleaved(steps, 2 if quick else 5, 2 if quick else 20, where)
    rows = []
    for name, (_, facts) in candidates.items():
        seconds = h.median(samples[name])
        rate = flops / seconds
        rows.append({"mode": name, "ms_per_step": round(seconds * 1e3, 2),
                     "tflop_per_s": round(rate / 1e12, 2),
                     "share_of_bf16_matmul": round(rate / matmul, 4), **facts})  # fmt: skip
    reference = next((r["ms_per_step"] for r in rows if r["mode"] == "reference fp32"), None)
    for row in rows:
        if reference:
            row["x_reference"] = round(reference / row["ms_per_step"], 3)
    return rows


def smooth_frames(count: int, size: tuple[int, int], where: torch.device) -> np.ndarray:
    """(count, H, W, 3) uint8 frames of smooth colour fields: they compress like photos, where
    noise would make PNG encoding several times slower than on real frames."""
    generator = torch.Generator(where).manual_seed(0)
    coarse = torch.rand(count, 3, size[0] // 16, size[1] // 16, generator=generator, device=where)
    fine = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear")
    return (fine * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def translate_rows(quick: bool, where: torch.device) -> list[Results]:
    """img/s of translate_split (PNGs written by worker threads), bf16."""
    batch = load_params().translate.batch if quick else 32
    workers = max(1, (os.cpu_count() or 2) - 1)
    generator = build_generator("resnet_6blocks" if quick else "resnet_9blocks", 4 if quick else 64)
    translate = functools.partial(translate_split, generator, batch=batch, precision="bf16",
                                  device=where, workers=workers)  # fmt: skip
    sizes = [((32, 64), 8), ((64, 128), 4)] if quick else [((128, 256), 512), ((512, 1024), 128)]
    rows = []
    for size, count in sizes:
        frames, names = smooth_frames(count, size, where), [f"{i:05d}" for i in range(count)]
        with tempfile.TemporaryDirectory() as tmp:
            translate(frames[:batch], names[:batch], f"{tmp}/warm")
            whole = translate(frames, names, f"{tmp}/run")
        rows.append({"size": f"{size[0]}x{size[1]}", "frames": count, "batch": batch,
                     "workers": workers, "img_per_s": whole.img_per_s})  # fmt: skip
    return rows


def trajectory(
    config: CycleGANConfig, size: tuple[int, int], quick: bool, where: torch.device, mode: str
) -> Results:
    """Late-training cycle loss of `mode` against eager fp32 (seed 0) and eager fp32's own
    seed-to-seed spread (seeds 0, 1), on smooth frames read from the host, batch 1."""
    steps, frames = 20 if quick else 200, smooth_frames(16, size, where)

    def late_cycle_loss(run_mode: str, seed: int) -> float:
        run_config = dataclasses.replace(config, seed=seed, batch=1, flip=True)
        step = h.cyclegan_step(run_config, f"{run_mode}+host", size, where, frames)
        late = []
        for i in range(steps):
            losses, _ = step()
            if i >= steps // 2:
                late.append(losses["loss_cycle_sim"] + losses["loss_cycle_real"])
        return float(torch.stack(late).mean())

    fp32 = [late_cycle_loss("fp32", seed) for seed in (0, 1)]
    fastest = late_cycle_loss(mode, 0)
    noise = abs(fastest - fp32[0]) <= abs(fp32[1] - fp32[0])
    return {"mode": mode, "steps": steps, "fp32_seed0": round(fp32[0], 4),
            "fp32_seed1": round(fp32[1], 4), "fastest_seed0": round(fastest, 4),
            "within_seed_noise": noise}  # fmt: skip


def segmentation_rows(quick: bool, where: torch.device, deadline: float) -> list[Results]:
    crop, batch = ((32, 64), 2) if quick else ((512, 1024), 8)
    config = dataclasses.replace(load_params().train_seg, crop=crop, batch=batch)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        split = h.fake_split(Path(tmp), 16, crop)
        for kind in ("train", "inference"):
            calls, facts = {}, {}
            for mode in ("fp32", "bf16", "bf16+cl", "bf16+cl+compile"):
                if "compile" in mode and time.monotonic() + 60 > deadline:
                    continue
                if kind == "train":
                    build = functools.partial(h.seg_train_step, config, mode, split, where)
                else:
                    build = functools.partial(
                        h.seg_inference_step, config, mode, crop, batch, where
                    )
                calls[mode], facts[mode] = warmed(build, where)
            samples = h.interleaved(calls, 2 if quick else 5, 1 if quick else 5, where)
            for mode, seconds in samples.items():
                ms = h.median(seconds) * 1e3
                rows.append({"kind": kind, "mode": mode, "ms_per_step": round(ms, 2),
                             "img_per_s": round(batch / ms * 1e3, 1), **facts[mode]})  # fmt: skip
    return rows


@measurement("gpu", page="gpu", render=lambda r: gpu_section(r))
def gpu(quick: bool) -> Results:
    """The GPU rows (module doc); on the CPU when there is no CUDA."""
    where = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if where.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train_cyclegan sets it: fixed crops
    budget = float(os.environ.get("SIM2REAL_GPU_BUDGET_S", 420))
    deadline = time.monotonic() + budget
    results: Results = {"facts": h.machine(), "budget_s": budget, "skipped": {}}
    if where.type == "cuda":
        results["facts"]["cuda"] = torch.version.cuda
    matmul = h.matmul_flops(where, torch.bfloat16, 512 if quick else 8192, 3 if quick else 10)
    results["bf16_matmul_tflop_per_s"] = round(matmul / 1e12, 1)
    config, frame_size, _ = h.cyclegan_configs(quick)["tiny" if quick else "paper"]
    results["config"] = {"netG": config.netG, "ngf": config.ngf, "crop": list(config.crop)}
    flops = results["flops_per_step"] = h.count_flops(
        h.cyclegan_step(config, "fp32", frame_size, where)
    )
    h.partial(results)
    parts = os.environ.get("SIM2REAL_GPU_PARTS", ",".join(NEEDS_S)).split(",")

    def fits(part: str) -> bool:
        left = deadline - time.monotonic()
        if part not in parts:
            results["skipped"][part] = "not in SIM2REAL_GPU_PARTS"
        elif left < NEEDS_S[part] * (0.1 if quick else 1):
            results["skipped"][part] = f"{left:.0f} s of the budget left, needs ~{NEEDS_S[part]}"
        return part not in results["skipped"]

    def candidate(mode: str) -> tuple[Step, Results]:
        if mode == "reference fp32":
            return warmed(lambda: h.reference_step(config, where), where)
        return warmed(lambda: h.cyclegan_step(config, mode, frame_size, where), where)

    with_reference = ["reference fp32"] if h.reference_folder() else []
    if not with_reference:
        results["skipped"]["reference"] = f"no checkout at {h.REFERENCE}"
    if fits("eager"):
        candidates = {mode: candidate(mode) for mode in [*with_reference, *EAGER_MODES]}
        results["eager"] = time_steps(candidates, flops, matmul, where, quick)
        h.partial(results)
    if fits("translate"):
        results["translate"] = translate_rows(quick, where)
        h.partial(results)
    if fits("compiled"):
        candidates = {mode: candidate(mode) for mode in [*with_reference, "bf16"]}
        for mode in COMPILED_MODES:  # each compiles as it is warmed: check the time between
            if time.monotonic() + NEEDS_S["compiled"] / 3 > deadline:
                results["skipped"][mode] = "budget"
            else:
                candidates[mode] = candidate(mode)
        results["compiled"] = time_steps(candidates, flops, matmul, where, quick)
        h.partial(results)
    if fits("segmentation"):
        compile_deadline = deadline if "compiled" in parts else time.monotonic()
        results["segmentation"] = segmentation_rows(quick, where, compile_deadline)
        h.partial(results)
    compiled = any(r["mode"] == "bf16+graphs" for r in results.get("compiled", []))
    fastest = "bf16+graphs" if compiled else "bf16"
    if fits("trajectory"):
        results["trajectory"] = trajectory(config, frame_size, quick, where, fastest)
        h.partial(results)
    if fits("profile_crop"):
        profile = dataclasses.replace(config, crop=(64, 64) if quick else (400, 400))
        frames = (64, 64) if quick else (512, 1024)
        step, _ = warmed(lambda: h.cyclegan_step(profile, fastest, frames, where), where)
        seconds = h.median(h.interleaved({fastest: step}, 3, 2 if quick else 20, where)[fastest])
        results["profile_crop"] = {
            "mode": fastest,
            "crop": list(profile.crop),
            "s_per_step": seconds,
        }
    return results


def gpu_section(results: Results) -> str:
    facts = results["facts"]
    lines = [
        f"Device: {facts['device']}, torch {facts['torch']}, CUDA {facts.get('cuda')}; "
        f"bf16 matmul {results['bf16_matmul_tflop_per_s']} TFLOP/s (measured in this run); "
        f"CycleGAN {results['config']}, {results['flops_per_step'] / 1e12:.3f} TFLOP per step.",
        "",
    ]
    steps = "mode|ms_per_step=ms/step|x_reference=x reference|tflop_per_s=TFLOP/s|"
    steps += "share_of_bf16_matmul=share of bf16 matmul|peak_mb=peak MB|warmup_s=warm-up s"
    for part, title, columns in (
        ("eager", "CycleGAN step, eager levers", steps),
        ("compiled", "CycleGAN step, compiled", steps),
        ("translate", "translate (the profile's generator, ResNet-9 ngf 64 (tiny with --quick), "
         "bf16; PNGs written by worker threads)", "size|frames|batch|workers|img_per_s=img/s"),
        ("segmentation", "Segmentation at the profile's 512x1024 crops, batch 8 (tiny with "
         "--quick)", "kind|mode|ms_per_step=ms/step|img_per_s=img/s|peak_mb=peak MB"),
    ):  # fmt: skip
        if part in results:
            lines += [f"## {title}", "", table(results[part], columns), ""]
    if "trajectory" in results:
        t = results["trajectory"]
        lines += ["## Loss trajectory", "", f"Mean cycle loss over the last half of {t['steps']} "
                  f"steps: eager fp32 seed 0 {t['fp32_seed0']}, seed 1 {t['fp32_seed1']}; "
                  f"{t['mode']} seed 0 {t['fastest_seed0']}: within seed noise: "
                  f"{t['within_seed_noise']}.", ""]  # fmt: skip
    if "profile_crop" in results:
        p = results["profile_crop"]
        lines += [f"Real-data profile step ({p['crop']} crops, {p['mode']}): "
                  f"{p['s_per_step'] * 1e3:.1f} ms.", ""]  # fmt: skip
    if results["skipped"]:
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items())]
    return "\n".join(lines) + "\n"
