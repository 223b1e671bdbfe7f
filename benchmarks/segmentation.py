"""Segmentation: training-step and inference speed per lever, and the share of a training step
spent waiting for data.

The step is the loop's own pieces (`sample_batch` from memory-mapped arrays, `PairedAugment`,
`build_segmentation_model`, `SegmentationLoss`, `make_optimizer`, autocast). Configurations:
`demo` is params.yaml's train_seg section on frames of data.size; `paper` 512x1024 crops,
batch 2. Modes as in benchmarks.cyclegan (fp32, bf16, +cl, +compile).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.harness import (
    RATE_COLUMNS,
    Results,
    interleaved,
    isolated,
    measurement,
    median,
    peak_memory_mb,
    rate_rows,
    table,
    use_threads,
)
from pipeline.config import TrainSegConfig, load_params
from pipeline.data.augment import PairedAugment
from pipeline.data.split import PreparedSplit
from pipeline.data.tensors import normalize
from pipeline.losses import SegmentationLoss
from pipeline.models.segmentation import build_segmentation_model
from pipeline.runtime import autocast
from pipeline.train.segmentation import make_optimizer, sample_batch

CPU = torch.device("cpu")


def configs(quick: bool) -> dict[str, tuple[TrainSegConfig, tuple[int, int], int]]:
    """name -> (train_seg config, frame size (H, W), inference batch)."""
    params = load_params()
    seg = params.train_seg
    if quick:
        return {"tiny": (dataclasses.replace(seg, crop=(32, 64), batch=2), (32, 64), 2)}
    return {
        "demo": (seg, params.data.size, params.evaluate.batch),
        "paper": (dataclasses.replace(seg, crop=(512, 1024), batch=2), (512, 1024), 1),
    }


def fake_split(root: Path, frames: int, size: tuple[int, int]) -> PreparedSplit:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8))
    np.save(root / "labels.npy", rng.integers(0, 19, (frames, *size), dtype=np.uint8))
    (root / "names.json").write_text(json.dumps([f"{i:05d}" for i in range(frames)]))
    return PreparedSplit.open(root, need_labels=True)


def model_for(
    config: TrainSegConfig, mode: str, device: torch.device
) -> tuple[nn.Module, nn.Module, str, torch.memory_format]:
    """The net of a mode: (its module, what to call: compiled with "+compile"), precision and
    memory format."""
    precision, *levers = mode.split("+")
    memory_format = torch.channels_last if "cl" in levers else torch.contiguous_format
    torch.manual_seed(config.seed)
    model = build_segmentation_model(config.arch, config.encoder).to(
        device, memory_format=memory_format
    )
    net = torch.compile(model, dynamic=False) if "compile" in levers else model
    return model, net, precision, memory_format


def train_step(
    config: TrainSegConfig, mode: str, split: PreparedSplit, device: torch.device
) -> Callable[[], float]:
    """One training step as the loop runs it; each call returns its seconds of data wait."""
    model, net, precision, memory_format = model_for(config, mode, device)
    model.train()
    optimizer = make_optimizer(model.parameters(), config)
    augment = PairedAugment(config.crop, config.scale, config.flip, config.color_jitter)
    loss_fn = SegmentationLoss(config.loss)

    def step() -> float:
        start = time.perf_counter()
        x, y = sample_batch(split, split, config.batch)
        x, y = augment(x.to(device), y.to(device))
        x = normalize(x).contiguous(memory_format=memory_format)
        waited = time.perf_counter() - start
        with autocast(precision, device):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return waited

    return step


def inference_step(
    config: TrainSegConfig, mode: str, size: tuple[int, int], batch: int, device: torch.device
) -> Callable[[], Any]:
    """The evaluator's forward pass and argmax on a (batch, 3, H, W) batch."""
    model, net, precision, memory_format = model_for(config, mode, device)
    model.eval()
    images = normalize(torch.rand(batch, 3, *size, device=device))
    images = images.contiguous(memory_format=memory_format)

    def step() -> Any:
        with torch.inference_mode(), autocast(precision, device):
            return net(images).float().argmax(1)

    return step


def train_memory(name: str, quick: bool, mode: str) -> Results:
    """Peak memory of two training steps in a fresh process (run through `isolated`)."""
    config, size, _ = configs(quick)[name]
    with tempfile.TemporaryDirectory() as tmp:
        step = train_step(config, mode, fake_split(Path(tmp), 8, size), CPU)
        step()
        step()
    return {"peak_mb": peak_memory_mb(CPU)}


@measurement("segmentation", page="bench", section=lambda r: segmentation_section(r))
def segmentation(quick: bool) -> Results:
    """Training step and inference per mode, demo and 512x1024; the data-wait share."""
    modes = ("fp32", "bf16") if quick else ("fp32", "bf16", "bf16+cl")
    rows: list[Results] = []
    for name, (config, size, batch) in configs(quick).items():
        use_threads(config.threads)
        with tempfile.TemporaryDirectory() as tmp:
            split = fake_split(Path(tmp), 8, size)
            steps = {mode: train_step(config, mode, split, CPU) for mode in modes}
            waits: dict[str, list[float]] = {mode: [] for mode in modes}
            timed = {
                mode: (lambda step=steps[mode], wait=waits[mode]: wait.append(step()))
                for mode in modes
            }
            for call in timed.values():
                call()
            rounds, calls = (2, 1) if quick else (3, 1 if name == "paper" else 4)
            samples = interleaved(timed, rounds, calls)
        train = rate_rows(samples, config.batch, config=name, kind="train")
        for row in train:
            mode = row["mode"]
            row["data_wait_share"] = round(median(waits[mode]) / median(samples[mode]), 4)
            if not quick:  # quick runs skip the fresh processes peak memory needs
                memory = isolated(
                    "benchmarks.segmentation:train_memory", name=name, quick=quick, mode=mode
                )
                row["peak_rss_mb"] = memory.get("peak_mb")
        calls = {mode: inference_step(config, mode, size, batch, CPU) for mode in modes}
        for call in calls.values():
            call()
        samples = interleaved(calls, 2 if quick else 3)
        inference = rate_rows(samples, batch, config=name, kind="inference")
        rows += train + inference
    return {"rows": rows}


def segmentation_section(results: Results) -> str:
    return "\n".join(
        [
            "## Segmentation (training step, inference)",
            "",
            table(
                results["rows"],
                [*RATE_COLUMNS, ("data_wait_share", "data wait share")],
            ),
            "",
        ]
    )
