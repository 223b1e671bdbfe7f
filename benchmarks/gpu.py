"""Issue 16's GPU rows, on one CUDA device, in one command that ends within its time budget.

    python -m benchmarks gpu --out $OUT

For the CycleGAN step at the paper config (ResNet-9, ngf = ndf = 64, 256x256 crops, batch 1):
step time, TFLOP/s, the share of the bf16 matmul rate measured in the same run, and peak memory,
for the eager fp32 step, the default (bf16), each lever on its own on top of it (channels_last,
frames read from the host instead of kept on the device, torch.compile, CUDA graphs), all of
them together, and the reference implementation (benchmarks/reference.py), timed interleaved in
this process. Then translate img/s at 128x256 and 512x1024 (the real-data profile's generator,
PNGs written by `translate.workers` threads), segmentation training and inference per lever at
512x1024, whether the fastest CycleGAN step follows the eager fp32 loss trajectory within seed
noise, and the step at the real-data profile's 400x400 crops (for `benchmarks projection`).

Parts run in that order while the budget (SIM2REAL_GPU_BUDGET_S, default 420 s) lasts; a part
that would not fit, or is not named in SIM2REAL_GPU_PARTS (default: all of NEEDS_S), is listed
as skipped. gpu.json and gpu.md are rewritten under --out after every part, so a run cut short
keeps what it measured. Peak memory is each candidate's own: what it allocated at its peak
while built and warmed, over what was allocated before. Without CUDA (a check of the script) it
runs on the CPU; --quick makes every size tiny.
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
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import cyclegan, harness, reference, segmentation
from benchmarks.harness import Results, interleaved, measurement, median, table
from pipeline.config import load_params
from pipeline.models.cyclegan import build_generator
from pipeline.train.cyclegan import UnpairedSampler, build_trainer
from pipeline.translate import translate_split

EAGER_MODES = ("fp32", "bf16", "bf16+cl", "bf16+host")
COMPILED_MODES = ("bf16+graphs", "bf16+compile", "bf16+cl+graphs")
# Rough seconds each part needs on an H100 (compiling dominates); skipped when less is left.
NEEDS_S = {
    "eager": 60,
    "translate": 40,
    "compiled": 150,
    "segmentation": 90,
    "trajectory": 60,
    "profile_crop": 30,
}


def device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def paper_config(quick: bool) -> tuple[Any, tuple[int, int]]:
    config, size, _ = cyclegan.configs(quick)["tiny" if quick else "paper"]
    return config, size


def step_candidate(
    config: Any, size: tuple[int, int], mode: str, where: torch.device
) -> Callable[[], None]:
    """A CycleGAN step of `mode` ("+host": frames read from the host each step)."""
    levers = mode.split("+")
    base = cyclegan.with_mode(config, "+".join(lv for lv in levers if lv != "host"))
    if "host" not in levers:
        return cyclegan.step_function(base, size, where)
    torch.manual_seed(base.seed)
    frames = np.random.default_rng(0).integers(0, 256, (cyclegan.FRAMES, *size, 3), np.uint8)
    trainer = build_trainer(base, where, base.precision)
    trainer.wrap(base.compile)
    sampler = UnpairedSampler(
        frames, frames[::-1].copy(), base.batch, base.crop, base.flip,
        torch.Generator().manual_seed(0), where, base.channels_last, False,
    )  # fmt: skip
    return lambda: trainer.step(*sampler.next())


def warmed(build: Callable[[], Callable[[], Any]], where: torch.device) -> tuple[Callable, Results]:
    """Build a candidate and take its first steps: the step, and the seconds that took
    (compiling included) and the memory the candidate took at its peak (CUDA: its own
    allocations; the CPU: the process's peak resident memory)."""
    before = torch.cuda.memory_allocated(where) / 2**20 if where.type == "cuda" else 0.0
    harness.reset_peak_memory(where)
    start = time.perf_counter()
    step = build()
    cyclegan.warm(step, 3)
    facts = {
        "warmup_s": round(time.perf_counter() - start, 2),
        "peak_mb": round(harness.peak_memory_mb(where) - before, 1),
    }
    return step, facts


def time_steps(
    candidates: dict[str, tuple[Callable[[], Any], Results]],
    flops: int,
    matmul: float,
    where: torch.device,
    quick: bool,
) -> list[Results]:
    """Warmed candidates timed interleaved: one row each, with its ratio to the reference."""
    steps = {name: step for name, (step, _) in candidates.items()}
    samples = interleaved(steps, 2 if quick else 5, 2 if quick else 20, where)
    rows = []
    for name, (_, facts) in candidates.items():
        seconds = median(samples[name])
        rows.append(
            {
                "mode": name,
                "ms_per_step": round(seconds * 1e3, 2),
                "tflop_per_s": round(flops / seconds / 1e12, 2),
                "share_of_bf16_matmul": round(flops / seconds / matmul, 4),
                **facts,
            }
        )
    reference_row = next((r for r in rows if r["mode"] == "reference fp32"), None)
    for row in rows:
        if reference_row:
            row["x_reference"] = round(reference_row["ms_per_step"] / row["ms_per_step"], 3)
    return rows


def smooth_frames(count: int, size: tuple[int, int], where: torch.device) -> np.ndarray:
    """(count, H, W, 3) uint8 frames of smooth colour fields: they compress like photos, where
    noise would make PNG encoding several times slower than on real frames."""
    generator = torch.Generator(where).manual_seed(0)
    coarse = torch.rand(count, 3, size[0] // 16, size[1] // 16, generator=generator, device=where)
    fine = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear")
    return (fine * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def translate_rows(quick: bool, where: torch.device) -> list[Results]:
    """img/s of translate_split (PNGs written by worker threads) and of the generator alone."""
    params = load_params()
    workers = max(1, (os.cpu_count() or 2) - 1)
    generator = build_generator("resnet_6blocks" if quick else "resnet_9blocks", 4 if quick else 64)
    rows = []
    for size, count in (
        (((32, 64), 8), ((64, 128), 4))
        if quick
        else (
            ((128, 256), 512),
            ((512, 1024), 128),
        )
    ):
        frames = smooth_frames(count, size, where)
        names = [f"{i:05d}" for i in range(count)]
        batch = params.translate.batch if quick else 32
        with tempfile.TemporaryDirectory() as tmp:
            translate_split(generator, frames[:batch], names[:batch], f"{tmp}/warm", batch,
                            "bf16", where, workers=workers)  # fmt: skip
            whole = translate_split(
                generator, frames, names, f"{tmp}/run", batch, "bf16", where, workers=workers
            )
        rows.append(
            {
                "size": f"{size[0]}x{size[1]}",
                "frames": count,
                "batch": batch,
                "workers": workers,
                "img_per_s": whole.img_per_s,
            }
        )
    return rows


def trajectory(quick: bool, where: torch.device, mode: str) -> Results:
    """Late-training cycle loss of `mode` against eager fp32 (seed 0) and eager fp32's own
    seed-to-seed spread (seeds 0, 1), on structured frames (smooth colour fields)."""
    config, size = paper_config(quick)
    steps = 20 if quick else 200
    frames = smooth_frames(16, size, where)

    def late_cycle_loss(run_mode: str, seed: int) -> float:
        run_config = dataclasses.replace(cyclegan.with_mode(config, run_mode), seed=seed)
        torch.manual_seed(seed)
        trainer = build_trainer(run_config, where, run_config.precision)
        trainer.wrap(run_config.compile)
        sampler = UnpairedSampler(
            frames, frames[::-1].copy(), 1, run_config.crop, True,
            torch.Generator().manual_seed(seed), where, run_config.channels_last, False,
        )  # fmt: skip
        late = []
        for step in range(steps):
            losses, _ = trainer.step(*sampler.next())
            if step >= steps // 2:
                late.append(losses["loss_cycle_sim"] + losses["loss_cycle_real"])
        return float(torch.stack(late).mean())

    fp32 = [late_cycle_loss("fp32", seed) for seed in (0, 1)]
    fastest = late_cycle_loss(mode, 0)
    return {
        "mode": mode,
        "steps": steps,
        "fp32_seed0": round(fp32[0], 4),
        "fp32_seed1": round(fp32[1], 4),
        "fastest_seed0": round(fastest, 4),
        "within_seed_noise": abs(fastest - fp32[0]) <= abs(fp32[1] - fp32[0]),
    }


def segmentation_rows(quick: bool, where: torch.device, deadline: float) -> list[Results]:
    seg = load_params().train_seg
    config = dataclasses.replace(
        seg, crop=(32, 64) if quick else (512, 1024), batch=2 if quick else 8
    )
    size = config.crop
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        split = segmentation.fake_split(Path(tmp), 16, size)
        for kind in ("train", "inference"):
            modes = ("fp32", "bf16", "bf16+cl", "bf16+cl+compile")
            calls, facts = {}, {}
            for mode in modes:
                if "compile" in mode and time.monotonic() + 60 > deadline:
                    continue
                if kind == "train":
                    build = functools.partial(segmentation.train_step, config, mode, split, where)
                else:
                    build = functools.partial(
                        segmentation.inference_step, config, mode, size, config.batch, where
                    )
                calls[mode], facts[mode] = warmed(build, where)
            samples = interleaved(calls, 2 if quick else 5, 1 if quick else 5, where)
            for mode, seconds in samples.items():
                ms = median(seconds) * 1e3
                rows.append(
                    {
                        "kind": kind,
                        "mode": mode,
                        "ms_per_step": round(ms, 2),
                        "img_per_s": round(config.batch / ms * 1e3, 1),
                        **facts[mode],
                    }
                )
    return rows


@measurement("gpu", page="gpu", section=lambda r: gpu_section(r))
def gpu(quick: bool) -> Results:
    """Issue 16's GPU rows (module doc); on the CPU when there is no CUDA."""
    where = device()
    if where.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as train_cyclegan sets it: fixed crops
    budget = float(os.environ.get("SIM2REAL_GPU_BUDGET_S", 420))
    deadline = time.monotonic() + budget
    results: Results = {"facts": harness.machine(), "budget_s": budget, "skipped": {}}
    if where.type == "cuda":
        results["facts"]["cuda"] = torch.version.cuda
    size = 512 if quick else 8192
    matmul = harness.matmul_flops(where, torch.bfloat16, size, 3 if quick else 10)
    results["bf16_matmul_tflop_per_s"] = round(matmul / 1e12, 1)
    config, frame_size = paper_config(quick)
    results["config"] = {"netG": config.netG, "ngf": config.ngf, "crop": list(config.crop)}
    with FlopCounterMode(display=False) as counter:
        cyclegan.step_function(cyclegan.with_mode(config, "fp32"), frame_size, where)()
    flops = counter.get_total_flops()
    results["flops_per_step"] = flops
    harness.partial(results)

    parts = os.environ.get("SIM2REAL_GPU_PARTS", ",".join(NEEDS_S)).split(",")

    def fits(part: str) -> bool:
        if part not in parts:
            results["skipped"][part] = "not in SIM2REAL_GPU_PARTS"
            return False
        left = deadline - time.monotonic()
        if left < NEEDS_S[part] * (0.1 if quick else 1):
            results["skipped"][part] = f"{left:.0f} s of the budget left, needs ~{NEEDS_S[part]}"
            return False
        return True

    def candidate(mode: str) -> tuple[Callable[[], Any], Results]:
        if mode == "reference fp32":
            args = (config.netG, config.ngf, config.ndf, config.crop, config.batch, where)
            return warmed(lambda: reference.reference_step(*args), where)
        return warmed(lambda: step_candidate(config, frame_size, mode, where), where)

    with_reference = ["reference fp32"] if reference.folder() else []
    if not with_reference:
        results["skipped"]["reference"] = f"no checkout at {reference.DEFAULT_FOLDER}"
    if fits("eager"):
        candidates = {mode: candidate(mode) for mode in [*with_reference, *EAGER_MODES]}
        results["eager"] = time_steps(candidates, flops, matmul, where, quick)
        harness.partial(results)
    if fits("translate"):
        results["translate"] = translate_rows(quick, where)
        harness.partial(results)
    if fits("compiled"):
        candidates = {mode: candidate(mode) for mode in [*with_reference, "bf16"]}
        for mode in COMPILED_MODES:  # each compiles as it is warmed: check the time between
            if time.monotonic() + NEEDS_S["compiled"] / 3 > deadline:
                results["skipped"][mode] = "budget"
                continue
            candidates[mode] = candidate(mode)
        results["compiled"] = time_steps(candidates, flops, matmul, where, quick)
        harness.partial(results)
    if fits("segmentation"):
        compile_deadline = deadline if "compiled" in parts else time.monotonic()
        results["segmentation"] = segmentation_rows(quick, where, compile_deadline)
        harness.partial(results)
    compiled_ok = any(r["mode"] == "bf16+graphs" for r in results.get("compiled", []))
    if fits("trajectory"):
        results["trajectory"] = trajectory(quick, where, "bf16+graphs" if compiled_ok else "bf16")
        harness.partial(results)
    if fits("profile_crop"):
        profile = dataclasses.replace(config, crop=(64, 64) if quick else (400, 400))
        mode = "bf16+graphs" if compiled_ok else "bf16"
        frames = (64, 64) if quick else (512, 1024)
        step, _ = warmed(lambda: step_candidate(profile, frames, mode, where), where)
        seconds = median(interleaved({mode: step}, 3, 2 if quick else 20, where)[mode])
        results["profile_crop"] = {"mode": mode, "crop": list(profile.crop), "s_per_step": seconds}
    return results


def gpu_section(results: Results) -> str:
    facts = results["facts"]
    step_columns = [
        ("mode", "mode"),
        ("ms_per_step", "ms/step"),
        ("x_reference", "x reference"),
        ("tflop_per_s", "TFLOP/s"),
        ("share_of_bf16_matmul", "share of bf16 matmul"),
        ("peak_mb", "peak MB"),
        ("warmup_s", "warm-up s"),
    ]
    lines = [
        f"Device: {facts['device']}, torch {facts['torch']}, CUDA {facts.get('cuda')}; "
        f"bf16 matmul {results['bf16_matmul_tflop_per_s']} TFLOP/s (measured in this run); "
        f"CycleGAN {results['config']}, {results['flops_per_step'] / 1e12:.3f} TFLOP per step.",
        "",
    ]
    for part, title in (("eager", "CycleGAN step, eager levers"),
                        ("compiled", "CycleGAN step, compiled")):  # fmt: skip
        if part in results:
            lines += [f"## {title}", "", table(results[part], step_columns), ""]
    if "translate" in results:
        lines += [
            "## translate (the profile's generator, ResNet-9 ngf 64 (tiny with --quick), bf16; "
            "PNGs written by worker threads)",
            "",
            table(results["translate"], [("size", "size"), ("frames", "frames"),
                  ("batch", "batch"), ("workers", "workers"), ("img_per_s", "img/s")]),
            "",
        ]  # fmt: skip
    if "segmentation" in results:
        lines += [
            "## Segmentation at the profile's 512x1024 crops, batch 8 (tiny with --quick)",
            "",
            table(results["segmentation"], [("kind", "kind"), ("mode", "mode"),
                  ("ms_per_step", "ms/step"), ("img_per_s", "img/s"), ("peak_mb", "peak MB")]),
            "",
        ]  # fmt: skip
    if "trajectory" in results:
        t = results["trajectory"]
        lines += [
            "## Loss trajectory",
            "",
            f"Mean cycle loss over the last half of {t['steps']} steps: eager fp32 seed 0 "
            f"{t['fp32_seed0']}, seed 1 {t['fp32_seed1']}; {t['mode']} seed 0 "
            f"{t['fastest_seed0']}: within seed noise: {t['within_seed_noise']}.",
            "",
        ]
    if "profile_crop" in results:
        p = results["profile_crop"]
        lines += [f"Real-data profile step ({p['crop']} crops, {p['mode']}): "
                  f"{p['s_per_step'] * 1e3:.1f} ms.", ""]  # fmt: skip
    if results["skipped"]:
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items())]
    return "\n".join(lines) + "\n"
