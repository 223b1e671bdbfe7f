"""Segmentation training-step and inference speed per precision, and the share of a training
step spent waiting for data.

Each measurement runs in its own subprocess (own peak RSS, clean allocator) through the real
pieces the training loop uses: `sample_batch` from memory-mapped arrays, `PairedAugment`, the smp
model from `build_segmentation_model`, `SegmentationLoss`, AdamW, autocast from
`pipeline.runtime`. Configurations: `demo` is params.yaml's train_seg section on frames of
data.size; `paper` is 512x1024 crops, batch 2 (the torchvision reference's Cityscapes setting,
at the largest crop this machine trains in reasonable time).

`python -m benchmarks.seg_speed [--quick] [--out FILE]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODES = ("fp32", "bf16", "bf16+cl")


def _fake_split(root: Path, n: int, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", rng.integers(0, 256, (n, *size, 3), dtype=np.uint8))
    np.save(root / "labels.npy", rng.integers(0, 19, (n, *size), dtype=np.uint8))
    (root / "names.json").write_text(json.dumps([f"{i:05d}" for i in range(n)]))


def configs(params: Any) -> dict[str, dict[str, Any]]:
    """name -> frame size, crop, batch and timed steps: `demo` from params.yaml (a
    `pipeline.config.Params`), `paper` the 512x1024 batch-2 setting."""
    seg = params.train_seg
    return {
        "demo": dict(size=list(params.data.size), crop=list(seg.crop), batch=seg.batch, steps=8),
        "paper": dict(size=[512, 1024], crop=[512, 1024], batch=2, steps=2),
    }


def _mode(job: dict[str, Any]) -> tuple[str, torch.memory_format]:
    """("bf16+cl" ->) the precision and the memory format of a mode."""
    precision = job["mode"].split("+")[0]
    return precision, torch.channels_last if "+cl" in job["mode"] else torch.contiguous_format


def build_train_step(job: dict[str, Any], split_dir: Path) -> Callable[[], float]:
    """One segmentation training step as the loop runs it, on a fake split written to
    `split_dir`; each call returns the seconds it spent getting data. Also used by
    benchmarks/profile_step.py."""
    from pipeline.data.augment import PairedAugment
    from pipeline.data.prepare import PreparedSplit
    from pipeline.data.tensors import normalize
    from pipeline.models.segmentation import build_segmentation_model
    from pipeline.runtime import autocast
    from pipeline.train.segmentation import SegmentationLoss, sample_batch

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    precision, memory_format = _mode(job)
    device = torch.device("cpu")
    _fake_split(split_dir, 16, tuple(job["size"]), 0)
    split = PreparedSplit.open(split_dir, need_labels=True)
    model = build_segmentation_model(job["arch"], job["encoder"]).to(memory_format=memory_format)
    model.train()
    augment = PairedAugment(tuple(job["crop"]), (0.75, 1.5), True, 0.1)
    loss_fn = SegmentationLoss("ce")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> float:
        start = time.perf_counter()
        images, labels = sample_batch(split, split, job["batch"])
        images, labels = augment(images, labels)
        images = normalize(images).contiguous(memory_format=memory_format)
        data_seconds = time.perf_counter() - start
        with autocast(precision, device):
            logits = model(images)
        loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return data_seconds

    return step


def _measure(job: dict[str, Any]) -> dict[str, Any]:
    from pipeline.data.tensors import normalize
    from pipeline.models.segmentation import build_segmentation_model
    from pipeline.runtime import autocast

    batch = job["batch"]
    step_times, data_times = [], []
    if job["kind"] == "train":
        with tempfile.TemporaryDirectory() as tmp:
            step = build_train_step(job, Path(tmp))
            for i in range(job["steps"] + 1):
                start = time.perf_counter()
                data_seconds = step()
                if i:  # the first step warms up allocators and oneDNN kernels
                    step_times.append(time.perf_counter() - start)
                    data_times.append(data_seconds)
    else:
        torch.set_num_threads(job["threads"])
        torch.manual_seed(0)
        precision, memory_format = _mode(job)
        device = torch.device("cpu")
        model = build_segmentation_model(job["arch"], job["encoder"]).to(
            memory_format=memory_format
        )
        model.eval()
        images = normalize(torch.rand(batch, 3, *job["size"])).contiguous(
            memory_format=memory_format
        )
        with torch.inference_mode():
            for i in range(job["steps"] + 1):
                start = time.perf_counter()
                with autocast(precision, device):
                    model(images).float().argmax(1)
                if i:
                    step_times.append(time.perf_counter() - start)
    median = statistics.median(step_times)
    result = {
        "img_per_s": round(batch / median, 3),
        "step_s": round(median, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if data_times:
        result["data_wait_share"] = round(statistics.median(data_times) / median, 4)
    return result


def _run_in_subprocess(job: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.seg_speed", "--job", json.dumps(job)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--configs", nargs="+", default=["demo", "paper"])
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        result = _measure(json.loads(args.job))
        print(json.dumps(result))
        return result
    from pipeline.config import load_params

    params = load_params()
    seg = params.train_seg
    configs_by_name = configs(params)
    if args.quick:
        configs_by_name = {"quick": dict(size=[64, 128], crop=[64, 128], batch=2, steps=2)}
        args.configs = ["quick"]
    rows = []
    for name in args.configs:
        base: dict[str, float] = {}
        for kind in ("train", "inference"):
            for mode in args.modes:
                job = {
                    **configs_by_name[name],
                    "kind": kind,
                    "mode": mode,
                    "threads": args.threads,
                    "arch": seg.arch,
                    "encoder": seg.encoder,
                }
                if kind == "inference":
                    job["crop"] = job["size"]
                    job["batch"] = params.evaluate.batch if name == "demo" else 1
                row = {"config": name, "kind": kind, "mode": mode, **_run_in_subprocess(job)}
                if "img_per_s" in row:
                    if mode == "fp32":
                        base[kind] = row["img_per_s"]
                    row["speedup"] = (
                        round(row["img_per_s"] / base[kind], 3) if kind in base else None
                    )
                rows.append(row)
                print(json.dumps(row), flush=True)
    results = {"threads": args.threads, "rows": rows}
    if args.out:
        from pipeline.io import write_json

        write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
