"""CycleGAN: training-step and translation speed per lever, the step's FLOP rate against the
machine's matmul rate, and the step against the reference implementation.

Configurations: `demo` is params.yaml's cyclegan section on frames of data.size; `paper` the
published setting (resnet_9blocks, ngf = ndf = 64, batch 1, 256x256 crops of 286x286 frames).
A mode names the levers on top of fp32 eager: `bf16` (autocast), `cl` (channels_last),
`compile` (torch.compile of the step's phases, "default" mode), `graphs` ("reduce-overhead":
CUDA graphs). Every comparison is timed in one process, interleaved (see harness).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from benchmarks import reference
from benchmarks.harness import (
    RATE_COLUMNS,
    Results,
    interleaved,
    isolated,
    matmul_flops,
    measurement,
    median,
    peak_memory_mb,
    rate_rows,
    table,
    use_threads,
)
from pipeline.config import CycleGANConfig, load_params
from pipeline.models.cyclegan import build_generator
from pipeline.train.cyclegan import UnpairedSampler, build_trainer, frames_fit_on_device
from pipeline.translate import translate_batch

FRAMES = 8  # random frames each domain draws from
CPU = torch.device("cpu")


def configs(quick: bool) -> dict[str, tuple[CycleGANConfig, tuple[int, int], int]]:
    """name -> (training config, frame size (H, W), translation batch)."""
    params = load_params()
    if quick:
        tiny = dataclasses.replace(
            params.cyclegan, netG="resnet_6blocks", ngf=4, ndf=4, crop=(32, 32), pool_size=4
        )
        return {"tiny": (tiny, (32, 64), 2)}
    paper = dataclasses.replace(
        params.cyclegan, netG="resnet_9blocks", ngf=64, ndf=64, batch=1, crop=(256, 256)
    )
    return {
        "demo": (params.cyclegan, params.data.size, params.translate.batch),
        "paper": (paper, (286, 286), 1),
    }


def with_mode(config: CycleGANConfig, mode: str) -> CycleGANConfig:
    """`config` with a mode's levers: "bf16+cl+compile" -> precision, channels_last, compile."""
    levers = mode.split("+")
    compile = "eager"
    if "compile" in levers or "graphs" in levers:
        compile = "reduce-overhead" if "graphs" in levers else "default"
    return dataclasses.replace(
        config, precision=levers[0], channels_last="cl" in levers, compile=compile
    )


def step_function(
    config: CycleGANConfig, size: tuple[int, int], device: torch.device
) -> Callable[[], None]:
    """One training step as `train_cyclegan` runs it (sampling included) on random frames."""
    torch.manual_seed(config.seed)
    frames = np.random.default_rng(0).integers(0, 256, (FRAMES, *size, 3), dtype=np.uint8)
    trainer = build_trainer(config, device, config.precision)
    trainer.wrap(config.compile)
    on_device = frames_fit_on_device(device, frames, frames)
    sampler = UnpairedSampler(
        frames,
        frames[::-1].copy(),
        config.batch,
        config.crop,
        config.flip,
        torch.Generator(device if on_device else CPU).manual_seed(0),
        device,
        config.channels_last,
        on_device,
    )
    return lambda: trainer.step(*sampler.next())


def warm(step: Callable[[], Any], calls: int = 2) -> float:
    """Seconds the first `calls` calls took (compilation, allocator and kernel warm-up)."""
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return time.perf_counter() - start


def step_memory(config: dict[str, Any], size: list[int], mode: str) -> Results:
    """Peak memory of two steps in a fresh process (run through `isolated`)."""
    base = CycleGANConfig(**{**config, "crop": tuple(config["crop"])})
    warm(step_function(with_mode(base, mode), tuple(size), CPU))
    return {"peak_mb": peak_memory_mb(CPU)}


def flops_per_step(config: CycleGANConfig, size: tuple[int, int]) -> int:
    """FLOPs of one training step (torch's counter, on an eager fp32 step)."""
    from torch.utils.flop_counter import FlopCounterMode

    step = step_function(with_mode(config, "fp32"), size, CPU)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def train_rows(name: str, quick: bool, modes: tuple[str, ...]) -> list[Results]:
    config, size, _ = configs(quick)[name]
    use_threads(config.threads)
    steps = {mode: step_function(with_mode(config, mode), size, CPU) for mode in modes}
    warmup = {mode: round(warm(step), 2) for mode, step in steps.items()}
    rounds, calls = (2, 1) if quick else (3, 1 if name == "paper" else 10)
    samples = interleaved(steps, rounds, calls)
    rows = rate_rows(samples, config.batch, config=name, kind="train")
    for row in rows:
        mode = row["mode"]
        row["s_per_step"] = round(median(samples[mode]), 4)
        row["warmup_s"] = warmup[mode]
        if not quick:  # quick runs skip the fresh processes (seconds of imports) memory needs
            memory = isolated(
                "benchmarks.cyclegan:step_memory",
                config=dataclasses.asdict(config),
                size=list(size),
                mode=mode,
            )
            row["peak_rss_mb"] = memory.get("peak_mb")
    return rows


def translate_rows(name: str, quick: bool, modes: tuple[str, ...]) -> list[Results]:
    config, size, batch = configs(quick)[name]
    use_threads(load_params().translate.threads)
    frames = np.random.default_rng(0).integers(0, 256, (batch, *size, 3), dtype=np.uint8)
    calls = {}
    for mode in modes:
        levers = mode.split("+")
        generator = build_generator(config.netG, config.ngf, config.norm).eval()
        if "cl" in levers:
            generator = generator.to(memory_format=torch.channels_last)
        if "compile" in levers:
            generator = torch.compile(generator, dynamic=False)
        calls[mode] = lambda g=generator, p=levers[0]: translate_batch(g, frames, p, CPU)
    for call in calls.values():
        warm(call)
    return rate_rows(interleaved(calls, 2 if quick else 5), batch, config=name, kind="translate")


@measurement("cyclegan", page="bench", section=lambda r: cyclegan_section(r))
def cyclegan(quick: bool) -> Results:
    """Every config and mode; the demo step's FLOP rate against this CPU's matmul rate."""
    modes = ("fp32", "bf16") if quick else ("fp32", "bf16", "bf16+cl", "bf16+compile")
    size = 256 if quick else 2048
    matmul = {
        "fp32": matmul_flops(CPU, torch.float32, size, 3) / 1e9,
        "bf16": matmul_flops(CPU, torch.bfloat16, size, 3) / 1e9,
    }
    rows: list[Results] = []
    for name in configs(quick):
        rows += train_rows(name, quick, modes)
        rows += translate_rows(name, quick, modes[:3])
    first = next(iter(configs(quick)))
    config, frame_size, _ = configs(quick)[first]
    flops = flops_per_step(config, frame_size)
    for row in rows:
        if row["config"] == first and row["kind"] == "train":
            achieved = flops * row["img_per_s"] / config.batch / 1e9
            row["gflop_per_s"] = round(achieved, 2)
            row["share_of_matmul"] = round(achieved / matmul[row["mode"].split("+")[0]], 4)
    return {
        "matmul_gflop_per_s": {k: round(v, 1) for k, v in matmul.items()},
        "flops_config": first,
        "flops_per_step": flops,
        "rows": rows,
    }


def cyclegan_section(results: Results) -> str:
    matmul = results["matmul_gflop_per_s"]
    return "\n".join(
        [
            "## Dense matmul ceiling",
            "",
            table(
                [{"dtype": k, "gflop_per_s": v} for k, v in matmul.items()],
                [("dtype", "dtype"), ("gflop_per_s", "GFLOP/s")],
            ),
            "",
            "## CycleGAN (training step, translation)",
            "",
            "Modes: fp32 eager, bf16 autocast, +cl channels_last, +compile torch.compile of the "
            "step's two phases (warm-up includes compiling, from the inductor cache when warm).",
            "",
            table(
                results["rows"],
                [
                    *RATE_COLUMNS,
                    ("warmup_s", "warm-up s"),
                    ("gflop_per_s", "GFLOP/s"),
                    ("share_of_matmul", "share of matmul peak"),
                ],
            ),
            "",
            f"One CycleGAN training step at the {results['flops_config']} config: "
            f"{results['flops_per_step'] / 1e9:.2f} GFLOP (torch flop counter).",
            "",
        ]
    )


def reference_rows(name: str, quick: bool, modes: tuple[str, ...]) -> list[Results]:
    """The reference's step and ours, timed interleaved in this process, same threads."""
    config, size, _ = configs(quick)[name]
    threads = use_threads(config.threads)
    steps = {
        "reference fp32": reference.reference_step(
            config.netG, config.ngf, config.ndf, config.crop, config.batch, CPU
        )
    }
    steps.update({mode: step_function(with_mode(config, mode), size, CPU) for mode in modes})
    warmup = {mode: round(warm(step), 2) for mode, step in steps.items()}
    rounds, calls = (2, 1) if quick else (5, 1 if name == "paper" else 10)
    samples = interleaved(steps, rounds, calls)
    base = median(samples["reference fp32"])
    return [
        {
            "config": name,
            "threads": threads,
            "mode": mode,
            "s_per_step": round(median(samples[mode]), 4),
            "x_reference": round(base / median(samples[mode]), 3),
            "spread": f"{min(samples[mode]):.3g}-{max(samples[mode]):.3g}",
            "warmup_s": warmup[mode],
        }
        for mode in steps
    ]


@measurement("reference", page="bench", section=lambda r: reference_section(r))
def against_reference(quick: bool) -> Results:
    """Issue 16's CPU targets: our step against the reference's `optimize_parameters()`."""
    if reference.folder() is None:
        return {"skipped": f"no reference checkout at {reference.DEFAULT_FOLDER}"}
    default = load_params().cyclegan
    modes = (with_mode_name(default), "bf16+compile")
    rows: list[Results] = []
    for name in configs(quick):
        rows += reference_rows(name, quick, modes)
    return {"rows": rows}


def with_mode_name(config: CycleGANConfig) -> str:
    """The mode name of a config's own levers (params.yaml's defaults: "bf16")."""
    from pipeline.runtime import resolve_precision

    levers = [resolve_precision(config.precision, CPU)]
    levers += ["cl"] if config.channels_last else []
    levers += {"eager": [], "default": ["compile"], "reduce-overhead": ["graphs"]}[config.compile]
    return "+".join(levers)


def reference_section(results: Results) -> str:
    if "skipped" in results:
        return f"## CycleGAN step against the reference\n\nSkipped: {results['skipped']}.\n"
    return "\n".join(
        [
            "## CycleGAN step against the reference",
            "",
            "The reference's `optimize_parameters()` (fp32, its defaults) and this project's "
            "step (sampling included) on the same machine, threads and crop, timed interleaved "
            "in one process; `x reference` is the reference's time over the row's. Issue 16's "
            "CPU targets: >= 2.5x at the paper config, >= 1.5x at the demo config.",
            "",
            table(
                results["rows"],
                [
                    ("config", "config"),
                    ("threads", "threads"),
                    ("mode", "mode"),
                    ("s_per_step", "s/step"),
                    ("x_reference", "x reference"),
                    ("spread", "min-max s"),
                    ("warmup_s", "warm-up s"),
                ],
            ),
            "",
        ]
    )


def first_step_seconds(config: dict[str, Any], size: list[int], mode: str) -> Results:
    """Seconds from nothing to the end of the first step in a fresh process (imports, build,
    compile) and of the second (run through `isolated` with a given inductor cache folder)."""
    start = time.perf_counter()
    base = CycleGANConfig(**{**config, "crop": tuple(config["crop"])})
    step = step_function(with_mode(base, mode), tuple(size), CPU)
    step()
    first = time.perf_counter() - start
    return {"first_step_s": round(first, 2), "second_step_s": round(warm(step, 1), 3)}


@measurement("compile_cache", page="bench", section=lambda r: compile_cache_section(r))
def compile_cache(quick: bool) -> Results:
    """Cold and warm compile of the demo step: an empty inductor cache, then the same one."""
    name = next(iter(configs(quick)))
    config, size, _ = configs(quick)[name]
    job = {"config": dataclasses.asdict(config), "size": list(size), "mode": "bf16+compile"}
    with tempfile.TemporaryDirectory() as cache:
        env = {"TORCHINDUCTOR_CACHE_DIR": cache}
        cold = isolated("benchmarks.cyclegan:first_step_seconds", env=env, **job)
        warm_run = isolated("benchmarks.cyclegan:first_step_seconds", env=env, **job)
    eager = isolated("benchmarks.cyclegan:first_step_seconds", **{**job, "mode": "bf16"})
    return {"config": name, "cold": cold, "warm": warm_run, "eager": eager}


def compile_cache_section(results: Results) -> str:
    rows = [
        {"run": run, **results[key]}
        for run, key in (
            ("eager (bf16)", "eager"),
            ("compiled, empty inductor cache", "cold"),
            ("compiled, warm inductor cache", "warm"),
        )
    ]
    return "\n".join(
        [
            f"## Compile time ({results['config']} config, fresh process each)",
            "",
            table(
                rows,
                [
                    ("run", "run"),
                    ("first_step_s", "to first step s"),
                    ("second_step_s", "second step s"),
                ],
            ),
            "",
            "The stage keeps inductor's cache in `.cache/inductor` (git-ignored), so only the "
            "first compiled run of a configuration pays the cold time.",
            "",
        ]
    )
