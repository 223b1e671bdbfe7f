"""The benchmark harness: every measurement of the performance issue from one entry point.

Each measurement runs in its own process (the per-topic scripts spawn one per mode), so peak RSS
and allocator state are per measurement. Results go to reports/bench.json and reports/bench.md:
machine and torch facts, then one row per measurement (median img/s over repeats, peak memory,
ratio to its fp32-eager twin measured in the same run), the CycleGAN step's achieved FLOP rate
against this machine's measured dense-matmul rate, and the prepare/translate scaling exponents
with projections for the real GTA5 and Cityscapes sets.

`python -m benchmarks.run` (about 15-25 minutes on 2 cores), `--quick` (under a minute: tiny sizes,
for the test suite to show the harness runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.io import write_json, write_text

GTA5_FRAMES, GTA5_SIZE = 24_966, (1052, 1914)
CITYSCAPES_FRAMES, CITYSCAPES_SIZE = 2_975 + 500, (1024, 2048)


def _job(name: str, **kwargs: Any) -> dict[str, Any]:
    """Run `_measure_<name>(**kwargs)` in a fresh process and return its JSON result."""
    payload = json.dumps({"name": name, "kwargs": kwargs})
    command = [sys.executable, "-m", "benchmarks.run", "--job", payload]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
        return {"error": tail}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _measure_matmul(size: int, dtype: str, repeats: int) -> dict[str, Any]:
    """Dense-matmul rate: the ceiling a conv net's FLOP rate is compared with."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a = torch.randn(size, size, dtype=torch_dtype)
    b = torch.randn(size, size, dtype=torch_dtype)
    a @ b
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - tic)
    return {"gflop_per_s": round(2 * size**3 / statistics.median(times) / 1e9, 1)}


def _measure_cyclegan_flops(config: dict[str, Any], size: list[int]) -> dict[str, Any]:
    """FLOPs of one CycleGAN training step: the real loop for 2 steps minus 1 step."""
    import dataclasses

    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.config import CycleGANConfig
    from pipeline.tracking import NullTracker
    from pipeline.train.cyclegan import train_cyclegan

    base = CycleGANConfig(**{**config, "crop": tuple(config["crop"])})
    frames = np.random.default_rng(0).integers(0, 256, (4, *size, 3), dtype=np.uint8)
    counts = []
    for iters in (1, 2):
        run = dataclasses.replace(
            base,
            iters=iters,
            decay_from=iters,
            checkpoint_every=iters,
            sample_every=10**6,
            precision="fp32",
            compile=False,
        )
        with tempfile.TemporaryDirectory() as out, FlopCounterMode(display=False) as counter:
            train_cyclegan(run, frames, frames, out, NullTracker())
        counts.append(counter.get_total_flops())
    return {"flops_per_step": counts[1] - counts[0]}


def _measure_prepare(frames: int, size: list[int]) -> dict[str, Any]:
    """Time to prepare `frames` demo frames (decode, check, resize, cache) with 2 workers."""
    from pipeline.data.demo import DemoSpec, generate
    from pipeline.data.gta5 import index_gta5
    from pipeline.data.prepare import prepare_split

    with tempfile.TemporaryDirectory() as tmp:
        generate(DemoSpec(0, frames, 1, 1, tuple(size)), tmp, workers=2)
        index = index_gta5(Path(tmp) / "gta5")
        tic = time.perf_counter()
        prepare_split(index, Path(tmp) / "prepared", (size[0] // 2, size[1] // 2), workers=2)
        seconds = time.perf_counter() - tic
    return {"seconds": round(seconds, 3), "peak_rss_mb": _peak_rss_mb()}


def _measure_prepare_native(height: int, width: int, frames: int) -> dict[str, Any]:
    """Per-frame prepare cost at a real dataset's native size (one worker)."""
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
        tic = time.perf_counter()
        for sample in samples:
            decode_sample(sample, (512, 1024))
        per_frame = (time.perf_counter() - tic) / frames
    return {"seconds_per_frame": round(per_frame, 4)}


def _measure_translate(frames: int, size: list[int], config: dict[str, Any]) -> dict[str, Any]:
    """Time to translate and write `frames` frames with the demo generator (random weights)."""
    from pipeline.models.cyclegan import build_generator
    from pipeline.runtime import pick_device, resolve_precision
    from pipeline.translate import translate_split

    generator = build_generator(config["netG"], config["ngf"], config["norm"]).eval()
    images = np.random.default_rng(0).integers(0, 256, (frames, *size, 3), dtype=np.uint8)
    names = [f"{i:05d}" for i in range(frames)]
    device = pick_device()
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        translate_split(
            generator, images, names, Path(tmp), 16, resolve_precision("auto", device), device
        )
        seconds = time.perf_counter() - tic
    return {"seconds": round(seconds, 3), "peak_rss_mb": _peak_rss_mb()}


def _exponent(ns: Sequence[int], seconds: Sequence[float]) -> float:
    """Slope of log(time) against log(N): 1.0 is linear."""
    slope, _ = np.polyfit(np.log(ns), np.log(seconds), 1)
    return round(float(slope), 3)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def run(quick: bool) -> dict[str, Any]:
    from benchmarks import cyclegan_speed, scoring_speed, seg_speed
    from pipeline.config import load_params

    params = load_params()
    results: dict[str, Any] = {"machine": machine(), "quick": quick}
    matmul_size = 256 if quick else 2048
    results["matmul"] = {
        dtype: _job("matmul", size=matmul_size, dtype=dtype, repeats=3 if quick else 10)
        for dtype in ("fp32", "bf16")
    }
    results["cyclegan"] = cyclegan_speed.main(
        ["--quick"]
        if quick
        else ["--configs", "demo", "paper", "--modes", "fp32", "bf16", "bf16+cl"]
    )["rows"]
    results["segmentation"] = seg_speed.main(["--quick"] if quick else [])["rows"]
    results["scoring"] = scoring_speed.main(["--quick"] if quick else [])

    # Achieved FLOP rate of the CycleGAN step (demo config) against the matmul ceiling.
    import dataclasses

    cyclegan_config = dataclasses.asdict(params.cyclegan)
    size = [32, 64] if quick else list(params.data.size)
    if quick:
        cyclegan_config.update(ngf=4, ndf=4, crop=[32, 64])
    flops = _job("cyclegan_flops", config=cyclegan_config, size=size)
    results["cyclegan_flops"] = flops
    demo_rows = [r for r in results["cyclegan"] if r.get("kind") == "train" and "img_per_s" in r]
    for row in demo_rows:
        precision = "bf16" if row["mode"].startswith("bf16") else "fp32"
        peak = results["matmul"][precision].get("gflop_per_s")
        if row["config"] in ("demo", "quick") and "flops_per_step" in flops and peak:
            achieved = flops["flops_per_step"] * row["img_per_s"] / params.cyclegan.batch / 1e9
            row["achieved_gflop_per_s"] = round(achieved, 2)
            row["share_of_matmul_peak"] = round(achieved / peak, 4)

    # Scaling with the number of frames: N, 2N, 4N.
    base_n = 8 if quick else 100
    ns = [base_n, 2 * base_n, 4 * base_n]
    frame_size = [64, 128] if quick else list(params.demo_data.size)
    prepare = [_job("prepare", frames=n, size=frame_size) for n in ns]
    translate = [
        _job("translate", frames=n, size=list(params.data.size), config=cyclegan_config) for n in ns
    ]
    scaling: dict[str, Any] = {"frames": ns, "prepare": prepare, "translate": translate}
    for name, rows in (("prepare", prepare), ("translate", translate)):
        if all("seconds" in r for r in rows):
            scaling[f"{name}_exponent"] = _exponent(ns, [r["seconds"] for r in rows])
    native = _job(
        "prepare_native",
        height=GTA5_SIZE[0] // (8 if quick else 1),
        width=GTA5_SIZE[1] // (8 if quick else 1),
        frames=2 if quick else 4,
    )
    cityscapes = _job(
        "prepare_native",
        height=CITYSCAPES_SIZE[0] // (8 if quick else 1),
        width=CITYSCAPES_SIZE[1] // (8 if quick else 1),
        frames=2 if quick else 4,
    )
    workers = params.prepare.workers
    if "seconds_per_frame" in native and "seconds_per_frame" in cityscapes:
        scaling["projection_prepare_minutes"] = {
            "gta5": round(native["seconds_per_frame"] * GTA5_FRAMES / workers / 60, 1),
            "cityscapes": round(
                cityscapes["seconds_per_frame"] * CITYSCAPES_FRAMES / workers / 60, 1
            ),
            "workers": workers,
            "working_size": [512, 1024],
        }
    translate_rows = [r for r in results["cyclegan"] if r.get("kind") == "translate"]
    default_translate = next(
        (r for r in translate_rows if r["mode"] == "bf16" and r["config"] == "demo"), None
    )
    if default_translate and "img_per_s" in default_translate:
        # Generator cost grows with pixels: scale the demo rate to 512x1024 frames.
        pixels = params.data.size[0] * params.data.size[1]
        rate = default_translate["img_per_s"] * pixels / (512 * 1024)
        scaling["projection_translate_minutes_gta5_512x1024"] = round(GTA5_FRAMES / rate / 60, 1)
    results["scaling"] = scaling
    return results


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {m['platform']}, {m['cpus']} CPUs, {m['processor']}, device {m['device']}; "
        f"torch {m['torch']} ({m['cpu_capability']}), {m['threads']} threads. "
        f"{'QUICK mode: tiny sizes, not representative.' if results['quick'] else ''}",
        "Command: `python -m benchmarks.run`. Ratios compare modes measured in the same run.",
        "",
        "## Dense matmul ceiling",
        "",
        "| dtype | GFLOP/s |",
        "|---|---:|",
    ]
    for dtype, row in results["matmul"].items():
        lines.append(f"| {dtype} | {_fmt(row.get('gflop_per_s'))} |")
    lines += [
        "",
        "## CycleGAN (training step, translation)",
        "",
        "| config | kind | mode | img/s | x fp32 | peak RSS MB | GFLOP/s | share of matmul peak |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["cyclegan"]:
        lines.append(
            f"| {r['config']} | {r['kind']} | {r['mode']} | {_fmt(r.get('img_per_s'))} "
            f"| {_fmt(r.get('speedup'))} | {_fmt(r.get('peak_rss_mb'))} "
            f"| {_fmt(r.get('achieved_gflop_per_s'))} | {_fmt(r.get('share_of_matmul_peak'))} |"
        )
    if "flops_per_step" in results["cyclegan_flops"]:
        lines.append("")
        lines.append(
            f"One CycleGAN training step at the demo config: "
            f"{results['cyclegan_flops']['flops_per_step'] / 1e9:.2f} GFLOP (torch flop counter)."
        )
    lines += [
        "",
        "Where the step's time goes, per operator and per oneDNN kernel: "
        "`reports/profile.md` (`python -m benchmarks.profile_step`).",
    ]
    lines += [
        "",
        "## Segmentation (training step, inference)",
        "",
        "| config | kind | mode | img/s | x fp32 | peak RSS MB | data wait share |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results["segmentation"]:
        lines.append(
            f"| {r['config']} | {r['kind']} | {r['mode']} | {_fmt(r.get('img_per_s'))} "
            f"| {_fmt(r.get('speedup'))} | {_fmt(r.get('peak_rss_mb'))} "
            f"| {_fmt(r.get('data_wait_share'))} |"
        )
    s = results["scoring"]
    lines += ["", "## Scoring against cityscapesscripts", "", "```", json.dumps(s, indent=1), "```"]
    sc = results["scaling"]
    lines += [
        "",
        "## Scaling with frames (N, 2N, 4N)",
        "",
        "| stage | " + " | ".join(f"N={n} s" for n in sc["frames"]) + " | peak RSS MB | exponent |",
        "|---|" + "---:|" * (len(sc["frames"]) + 2),
    ]
    for name in ("prepare", "translate"):
        rows = sc[name]
        times = " | ".join(_fmt(r.get("seconds")) for r in rows)
        rss = "/".join(_fmt(r.get("peak_rss_mb")) for r in rows)
        lines.append(f"| {name} | {times} | {rss} | {_fmt(sc.get(f'{name}_exponent'))} |")
    if "projection_prepare_minutes" in sc:
        p = sc["projection_prepare_minutes"]
        lines += [
            "",
            f"Projected `prepare` on the real sets at native size to 512x1024 with {p['workers']} "
            f"workers: GTA5 {p['gta5']} min, Cityscapes {p['cityscapes']} min.",
        ]
    if "projection_translate_minutes_gta5_512x1024" in sc:
        lines.append(
            f"Projected `translate` of GTA5 at 512x1024 on this CPU (demo generator): "
            f"{sc['projection_translate_minutes_gta5_512x1024']} min."
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        job = json.loads(args.job)
        result = globals()[f"_measure_{job['name']}"](**job["kwargs"])
        print(json.dumps(result))
        return result
    results = run(args.quick)
    stem = "bench_quick" if args.quick else "bench"
    write_json(args.out / f"{stem}.json", results)
    write_text(args.out / f"{stem}.md", markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
