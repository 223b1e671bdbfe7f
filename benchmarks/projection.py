"""Projected wall time of each stage under the real-data profile (profiles/gta5_cityscapes.yaml)
on one H100 and on N of them. These are projections, not measurements:

- work: the FLOPs of one CycleGAN step, one generator pass and one segmentation step at the
  profile's sizes, counted by torch's flop counter on the CPU at a small size and scaled by
  pixels (every layer is a convolution: cost grows with pixels);
- rates: from reports/gpu.json (`python -m benchmarks gpu` on an H100, copied into reports/) when
  it exists, else issue 16's measured H100 rate of this project's eager bf16 step (0.120 s for
  1.87 TFLOP: 15.6 TFLOP/s), applied to every GPU stage: an upper bound, since larger convolutions
  run at a higher rate than that small, launch-bound step;
- prepare runs on the CPU: this machine's decode-and-resize time per native frame, over the
  profile's `prepare.workers`;
- N GPUs: training at an assumed 90 % DDP scaling efficiency, translation and evaluation
  sharded perfectly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.harness import Results, isolated, measurement, table
from benchmarks.scaling import prepare_seconds_per_native_frame
from pipeline.config import Params, apply_profile, parse_params, read_yaml_mapping
from pipeline.data.labels import NUM_CLASSES
from pipeline.models.cyclegan import build_generator
from pipeline.models.segmentation import build_segmentation_model
from pipeline.train.cyclegan import build_trainer

PROFILE = Path("profiles/gta5_cityscapes.yaml")
GPU_RESULTS = Path("reports/gpu.json")
GTA5_FRAMES, CITYSCAPES_TRAIN, CITYSCAPES_VAL = 24_966, 2_975, 500
DOCUMENTED_TFLOP_PER_S = 1.87 / 0.120  # issue 16: eager bf16 step on one H100
DDP_EFFICIENCY = 0.9
GPUS = (1, 4, 8)
CPU = torch.device("cpu")


def profile_params() -> Params:
    return parse_params(apply_profile(read_yaml_mapping("params.yaml"), read_yaml_mapping(PROFILE)))


def counted(function: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def work(params: Params, small: tuple[int, int]) -> dict[str, float]:
    """FLOPs per CycleGAN step, generator pass (one frame) and segmentation training step and
    inference (one frame) at the profile's sizes, counted at `small` and scaled by pixels."""
    pixels = small[0] * small[1]
    cyclegan = dataclasses.replace(params.cyclegan, crop=small, precision="fp32")
    trainer = build_trainer(cyclegan, CPU, "fp32")
    batch = torch.rand(cyclegan.batch, 3, *small) * 2 - 1
    generator = build_generator(cyclegan.netG, cyclegan.ngf, cyclegan.norm).eval()
    seg = params.train_seg
    net = build_segmentation_model(seg.arch, seg.encoder, NUM_CLASSES)
    images = torch.rand(1, 3, *small)

    def seg_step() -> None:
        net(images).sum().backward()

    with torch.no_grad():
        generator_flops = counted(lambda: generator(images))
        seg_inference = counted(lambda: net.eval()(images))
    net.train()
    crop, size = params.cyclegan.crop, params.data.size
    return {
        "cyclegan_step": counted(lambda: trainer.step(batch, batch)) * crop[0] * crop[1] / pixels,
        "generator_frame": generator_flops * size[0] * size[1] / pixels,
        "seg_step": counted(seg_step) * seg.batch * seg.crop[0] * seg.crop[1] / pixels,
        "seg_frame": seg_inference * size[0] * size[1] / pixels,
    }


def measured_rates() -> dict[str, Any]:
    """Seconds per unit of work measured by the GPU benchmark (reports/gpu.json), if any."""
    if not GPU_RESULTS.is_file():
        return {}
    gpu = json.loads(GPU_RESULTS.read_text()).get("gpu", {})
    rates: dict[str, Any] = {"device": gpu.get("facts", {}).get("device")}
    if "profile_crop" in gpu:
        rates["cyclegan_step"] = gpu["profile_crop"]["s_per_step"]
    for row in gpu.get("translate", []):
        if row["size"] == "512x1024" and row.get("img_per_s"):
            rates["generator_frame"] = 1 / row["img_per_s"]
    seg = {(r["kind"], r["mode"]): r for r in gpu.get("segmentation", []) if "ms_per_step" in r}
    fastest = {kind: min((r["ms_per_step"] for (k, _), r in seg.items() if k == kind), default=None)
               for kind in ("train", "inference")}  # fmt: skip
    if fastest["train"]:
        rates["seg_step"] = fastest["train"] / 1e3
    if fastest["inference"]:
        rates["seg_frame"] = fastest["inference"] / 1e3 / 8  # the benchmark's batch of 8
    return rates


@measurement("projection", page="bench", section=lambda r: projection_section(r))
def projection(quick: bool) -> Results:
    """Projected wall time per stage of the real-data profile on 1 and N H100s."""
    params = profile_params()
    flops = work(params, (32, 64) if quick else (64, 128))
    measured = measured_rates()
    seconds_per = {
        key: measured.get(key, flops[key] / (DOCUMENTED_TFLOP_PER_S * 1e12)) for key in flops
    }
    if quick:  # tiny frames, in this process
        prepare = prepare_seconds_per_native_frame(1052 // 8, 1914 // 8, 1)
    else:
        prepare = isolated(
            "benchmarks.scaling:prepare_seconds_per_native_frame", height=1052, width=1914, frames=2
        )
    variants = len(params.train_seg.variants)
    cg, seg = params.cyclegan, params.train_seg
    stages: list[tuple[str, str, float | None, str, float]] = [
        (
            "prepare",
            f"{GTA5_FRAMES + CITYSCAPES_TRAIN + CITYSCAPES_VAL} frames, "
            f"{params.prepare.workers} CPU workers",
            prepare["seconds_per_frame"]
            * (GTA5_FRAMES + CITYSCAPES_TRAIN + CITYSCAPES_VAL)
            / params.prepare.workers
            if "seconds_per_frame" in prepare
            else None,
            "CPU, measured here",
            0.0,
        ),
        (
            "train_cyclegan",
            f"{cg.iters} steps ({cg.iters * cg.batch / GTA5_FRAMES:.1f} GTA5 epochs), "
            f"{list(cg.crop)} crops",
            cg.iters * seconds_per["cyclegan_step"],
            "measured" if "cyclegan_step" in measured else "documented rate",
            DDP_EFFICIENCY,
        ),
        (
            "translate",
            f"{GTA5_FRAMES} frames at {list(params.data.size)}",
            GTA5_FRAMES * seconds_per["generator_frame"],
            "measured" if "generator_frame" in measured else "documented rate",
            1.0,
        ),
        (
            "train_seg",
            f"{variants} variants x {seg.iters} steps "
            f"({seg.iters * seg.batch / GTA5_FRAMES:.1f} GTA5 epochs), batch {seg.batch}",
            variants * seg.iters * seconds_per["seg_step"],
            "measured" if "seg_step" in measured else "documented rate",
            DDP_EFFICIENCY,
        ),
        (
            "evaluate",
            f"{variants} variants x {CITYSCAPES_VAL} frames",
            variants * CITYSCAPES_VAL * seconds_per["seg_frame"],
            "measured" if "seg_frame" in measured else "documented rate",
            1.0,
        ),
    ]
    rows = []
    for stage, amount, seconds, source, efficiency in stages:
        row: Results = {"stage": stage, "work": amount, "rate": source}
        for gpus in GPUS:
            if seconds is not None:
                scale = 1 if efficiency == 0 else gpus * efficiency if gpus > 1 else 1
                row[f"hours_{gpus}"] = round(seconds / scale / 3600, 2)
        rows.append(row)
    return {
        "profile": str(PROFILE),
        "device": measured.get("device") or "H100 (documented rate)",
        "tflop": {k: round(v / 1e12, 4) for k, v in flops.items()},
        "rows": rows,
    }


def projection_section(results: Results) -> str:
    columns = [("stage", "stage"), ("work", "work"), ("rate", "rate from")]
    columns += [(f"hours_{g}", f"{g} GPU{'s' if g > 1 else ''} h") for g in GPUS]
    tflop = results["tflop"]
    return "\n".join(
        [
            f"## Projected wall time of the real-data profile ({results['profile']})",
            "",
            f"PROJECTIONS, not measurements (benchmarks/projection.py says how): device "
            f"{results['device']}. Work per unit: CycleGAN step {tflop['cyclegan_step']} TFLOP, "
            f"generator pass per frame {tflop['generator_frame']} TFLOP, segmentation step "
            f"{tflop['seg_step']} TFLOP, segmentation inference per frame {tflop['seg_frame']} "
            f"TFLOP. prepare is CPU work and does not scale with GPUs.",
            "",
            table(results["rows"], columns),
            "",
        ]
    )
