"""How `prepare` and `translate` scale with the number of frames (N, 2N, 4N, each in a fresh
process for its peak memory), and what that projects for the real sets on this machine."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import Results, isolated, measurement, peak_memory_mb, table
from pipeline.config import load_params

GTA5_FRAMES, GTA5_SIZE = 24_966, (1052, 1914)
CITYSCAPES_FRAMES, CITYSCAPES_SIZE = 2_975 + 500, (1024, 2048)
CPU = torch.device("cpu")


def prepare_seconds(frames: int, size: list[int]) -> Results:
    """Prepare `frames` demo frames (decode, check, resize to half size, cache), 2 workers."""
    from pipeline.data.demo import DemoSpec, generate
    from pipeline.data.gta5 import index_gta5
    from pipeline.data.prepare import prepare_split

    with tempfile.TemporaryDirectory() as tmp:
        generate(DemoSpec(0, frames, 1, 1, tuple(size)), tmp, workers=2)
        index = index_gta5(Path(tmp) / "gta5")
        start = time.perf_counter()
        prepare_split(index, Path(tmp) / "prepared", (size[0] // 2, size[1] // 2), workers=2)
        seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), "peak_rss_mb": peak_memory_mb(CPU)}


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
        start = time.perf_counter()
        for sample in samples:
            decode_sample(sample, (512, 1024))
    return {"seconds_per_frame": round((time.perf_counter() - start) / frames, 4)}


def translate_seconds(frames: int, size: list[int], workers: int) -> Results:
    """Translate and write `frames` random frames with the demo generator (random weights)."""
    from pipeline.models.cyclegan import build_generator
    from pipeline.runtime import resolve_precision, set_threads
    from pipeline.translate import translate_split

    params = load_params()
    config = params.cyclegan
    set_threads(params.translate.threads)
    generator = build_generator(config.netG, config.ngf, config.norm).eval()
    images = np.random.default_rng(0).integers(0, 256, (frames, *size, 3), dtype=np.uint8)
    names = [f"{i:05d}" for i in range(frames)]
    precision = resolve_precision(params.translate.precision, CPU)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        translate_split(
            generator, images, names, tmp, params.translate.batch, precision, CPU, workers=workers
        )
        seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), "peak_rss_mb": peak_memory_mb(CPU)}


def exponent(counts: list[int], seconds: list[float]) -> float:
    """Slope of log(time) against log(N): 1.0 is linear."""
    slope, _ = np.polyfit(np.log(counts), np.log(seconds), 1)
    return round(float(slope), 3)


@measurement("scaling", page="bench", section=lambda r: scaling_section(r))
def scaling(quick: bool) -> Results:
    """prepare and translate at N, 2N, 4N frames; the real sets' prepare time projected."""
    params = load_params()
    base = 8 if quick else 100
    counts = [base, 2 * base, 4 * base]
    frame_size = [64, 128] if quick else list(params.demo_data.size)
    workers = params.translate.workers
    rows = []
    for stage, job, kwargs in (
        ("prepare", "prepare_seconds", {"size": frame_size}),
        ("translate", "translate_seconds", {"size": list(params.data.size), "workers": workers}),
    ):
        runs = [isolated(f"benchmarks.scaling:{job}", frames=n, **kwargs) for n in counts]
        row: Results = {"stage": stage}
        for n, run in zip(counts, runs):
            row[f"n{n}"] = run.get("seconds", run.get("error"))
        row["peak_rss_mb"] = "/".join(str(run.get("peak_rss_mb")) for run in runs)
        if all("seconds" in run for run in runs):
            row["exponent"] = exponent(counts, [run["seconds"] for run in runs])
        rows.append(row)
    shrink = 8 if quick else 1
    native = {
        name: isolated(
            "benchmarks.scaling:prepare_seconds_per_native_frame",
            height=size[0] // shrink,
            width=size[1] // shrink,
            frames=2 if quick else 4,
        )
        for name, size in (("gta5", GTA5_SIZE), ("cityscapes", CITYSCAPES_SIZE))
    }
    results: Results = {"counts": counts, "rows": rows, "native": native}
    if all("seconds_per_frame" in v for v in native.values()):
        per_frame = {k: v["seconds_per_frame"] for k, v in native.items()}
        results["prepare_minutes"] = {
            "gta5": round(per_frame["gta5"] * GTA5_FRAMES / params.prepare.workers / 60, 1),
            "cityscapes": round(
                per_frame["cityscapes"] * CITYSCAPES_FRAMES / params.prepare.workers / 60, 1
            ),
            "workers": params.prepare.workers,
        }
    translate = rows[1]
    if "exponent" in translate:
        # Generator cost grows with pixels: the demo rate scaled to 512x1024 frames.
        rate = counts[-1] / translate[f"n{counts[-1]}"]
        rate *= params.data.size[0] * params.data.size[1] / (512 * 1024)
        results["translate_gta5_512x1024_minutes"] = round(GTA5_FRAMES / rate / 60, 1)
    return results


def scaling_section(results: Results) -> str:
    counts = results["counts"]
    lines = [
        "## Scaling with frames (N, 2N, 4N)",
        "",
        table(
            results["rows"],
            [
                ("stage", "stage"),
                *((f"n{n}", f"N={n} s") for n in counts),
                ("peak_rss_mb", "peak RSS MB"),
                ("exponent", "exponent"),
            ],
        ),
        "",
    ]
    if "prepare_minutes" in results:
        p = results["prepare_minutes"]
        lines.append(
            f"Projected `prepare` on the real sets at native size to 512x1024 with "
            f"{p['workers']} workers: GTA5 {p['gta5']} min, Cityscapes {p['cityscapes']} min."
        )
    if "translate_gta5_512x1024_minutes" in results:
        lines.append(
            f"Projected `translate` of GTA5 at 512x1024 on this CPU (demo generator): "
            f"{results['translate_gta5_512x1024_minutes']} min."
        )
    return "\n".join(lines) + "\n"
