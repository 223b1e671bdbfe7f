"""Measure CycleGAN training and translation speed per precision / memory-format mode.

Every measurement runs in its own subprocess (a clean allocator, its own peak RSS, no compile
caches shared between modes) on random frames, through the real training loop
(``train_cyclegan``) and the real translation call (``translate_batch``):

* ``train``: images per second over timed intervals of ``--steps`` steps each, after one
  warm-up interval; median over ``--repeats`` intervals. Only step time counts, not sampling
  grids or checkpoints.
* ``translate``: images per second of ``translate_batch`` on batches of ``translate.batch``
  frames at the working size, median over ``--repeats`` batches after one warm-up batch.
* ``peak_rss_mb``: the subprocess's peak resident memory.

Configurations: ``demo`` is the ``cyclegan`` section of params.yaml on frames of ``data.size``;
``paper`` is the published setting (resnet_9blocks, ngf = ndf = 64, batch 1, 256x256 crops of
286x286 frames). Modes: fp32, bf16 (autocast), +cl (channels_last), +compile (torch.compile,
with ``--compile``). ``speedup`` is relative to fp32 eager of the same configuration and run.

Run from the repository root: ``python -m benchmarks.cyclegan_speed --out reports/speed.json``
(``--quick`` for tiny sizes that finish in seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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

from pipeline.config import CycleGANConfig, load_params
from pipeline.io import write_json

MODES = ("fp32", "bf16", "fp32+cl", "bf16+cl")
COMPILE_MODES = ("fp32+compile", "bf16+cl+compile")
FRAMES = 8  # random frames each domain draws from


class _Recorder:
    """Tracker stand-in keeping the per-interval img_per_s; pipeline.tracking is not imported,
    so mlflow does not inflate the measured RSS."""

    def __init__(self) -> None:
        self.img_per_s: list[float] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # Interval rows carry the losses; the run's closing summary carries train_seconds.
        if "img_per_s" in metrics and "train_seconds" not in metrics:
            self.img_per_s.append(float(metrics["img_per_s"]))

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def configs(quick: bool = False) -> dict[str, tuple[CycleGANConfig, tuple[int, int], int]]:
    """name -> (training config, frame size (H, W), translation batch)."""
    params = load_params()
    if quick:
        tiny = dataclasses.replace(
            params.cyclegan, netG="resnet_6blocks", ngf=8, ndf=8, crop=(32, 32), pool_size=4
        )
        return {"tiny": (tiny, (32, 64), 4)}
    paper = dataclasses.replace(
        params.cyclegan,
        netG="resnet_9blocks",
        ngf=64,
        ndf=64,
        n_layers_D=3,
        batch=1,
        crop=(256, 256),
    )
    return {
        "demo": (params.cyclegan, params.data.size, params.translate.batch),
        "paper": (paper, (286, 286), 1),
    }


def _mode_settings(mode: str) -> dict[str, Any]:
    parts = mode.split("+")
    return {
        "precision": parts[0],
        "channels_last": "cl" in parts,
        "compile": "compile" in parts,
    }


def _measure(job: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process (the subprocess side)."""
    from pipeline.train.cyclegan import train_cyclegan
    from pipeline.translate import translate_batch

    config = CycleGANConfig(**{**job["config"], "crop": tuple(job["config"]["crop"])})
    settings = _mode_settings(job["mode"])
    height, width = job["size"]
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (FRAMES, height, width, 3), dtype=np.uint8)
    device = torch.device("cpu")
    steps, repeats = job["steps"], job["repeats"]
    start = time.perf_counter()
    if job["kind"] == "train":
        iters = steps * (repeats + 1)
        config = dataclasses.replace(
            config,
            **settings,
            iters=iters,
            decay_from=iters,
            log_every=steps,
            checkpoint_every=iters,
            sample_every=iters,
        )
        recorder = _Recorder()
        with tempfile.TemporaryDirectory() as out_dir:
            train_cyclegan(config, frames, frames[::-1].copy(), out_dir, recorder, device=device)
        timed = recorder.img_per_s[1:]  # the first interval is the warm-up
    else:
        from pipeline.models.cyclegan import build_generator

        if config.threads:
            torch.set_num_threads(config.threads)
        generator = build_generator(config.netG, config.ngf, config.norm).eval()
        if settings["channels_last"]:
            generator = generator.to(memory_format=torch.channels_last)
        if settings["compile"]:
            generator = torch.compile(generator)
        batch = frames[: job["batch"]]
        timed = []
        for i in range(repeats + 1):
            tic = time.perf_counter()
            translate_batch(generator, batch, settings["precision"], device)
            if i:
                timed.append(len(batch) / (time.perf_counter() - tic))
    img_per_s = statistics.median(timed)
    return {
        "img_per_s": round(img_per_s, 3),
        "s_per_it": round(config.batch / img_per_s, 4) if job["kind"] == "train" else None,
        "samples": [round(v, 3) for v in timed],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def _run_in_subprocess(job: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.cyclegan_speed", "--job", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'config':<7} {'kind':<10} {'mode':<16} {'img/s':>8} {'s/it':>8} {'speedup':>8} "
        f"{'RSS MB':>8}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['config']:<7} {row['kind']:<10} {row['mode']:<16} {row['error']}")
            continue
        s_per_it = f"{row['s_per_it']:.3f}" if row["s_per_it"] else "-"
        speedup = f"{row['speedup']:.2f}x" if row.get("speedup") else "-"
        lines.append(
            f"{row['config']:<7} {row['kind']:<10} {row['mode']:<16} {row['img_per_s']:>8.2f} "
            f"{s_per_it:>8} {speedup:>8} {row['peak_rss_mb']:>8.0f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the measurements; print a table; return (and with --out, write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny nets and frames, seconds")
    parser.add_argument("--configs", nargs="+", help="subset of: demo paper (tiny with --quick)")
    parser.add_argument("--modes", nargs="+", help=f"subset of {MODES + COMPILE_MODES}")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument("--kinds", nargs="+", default=["train", "translate"])
    parser.add_argument("--steps", type=int, help="training steps per timed interval")
    parser.add_argument("--repeats", type=int, default=3, help="timed intervals / batches")
    parser.add_argument("--threads", type=int, help="torch threads (default: cyclegan.threads)")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # one measurement, in a subprocess
    args = parser.parse_args(argv)
    if args.job:
        result = _measure(json.loads(args.job))
        print(json.dumps(result))
        return result

    configs_by_name = configs(args.quick)
    if args.configs:
        configs_by_name = {name: configs_by_name[name] for name in args.configs}
    modes = args.modes or (MODES + COMPILE_MODES if args.compile else MODES)
    if args.quick and not args.modes:
        modes = ("fp32", "bf16")
    rows: list[dict[str, Any]] = []
    for config_name, (config, size, translate_batch_size) in configs_by_name.items():
        if args.threads is not None:
            config = dataclasses.replace(config, threads=args.threads)
        steps = args.steps or (3 if args.quick or config_name == "paper" else 10)
        baseline: dict[str, float] = {}
        for kind in args.kinds:
            for mode in modes:
                job = {
                    "config": dataclasses.asdict(config),
                    "size": list(size),
                    "mode": mode,
                    "kind": kind,
                    "steps": steps,
                    "repeats": args.repeats,
                    "batch": translate_batch_size,
                }
                row = {"config": config_name, "kind": kind, "mode": mode}
                row.update(_run_in_subprocess(job))
                if "img_per_s" in row:
                    if mode == "fp32":
                        baseline[kind] = row["img_per_s"]
                    row["speedup"] = (
                        round(row["img_per_s"] / baseline[kind], 3) if kind in baseline else None
                    )
                rows.append(row)
                print(_table([row]).splitlines()[-1], flush=True)
    results = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": args.threads or torch.get_num_threads(),
        "rows": rows,
    }
    print(_table(rows))
    if args.out:
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
