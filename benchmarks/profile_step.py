"""Where a training step spends its time, per precision / layout mode (torch.profiler + oneDNN).

Profiles the real CycleGAN step (``pipeline.train.cyclegan.CycleGANTrainer.step``) and the real
segmentation step (the pieces the training loop uses, via ``benchmarks.seg_speed``) on random
frames at the demo config (params.yaml) or the paper config, each mode in its own process:
``--steps`` steps after warm-up. Every operator's *self* CPU time is grouped into categories
(convolutions forward/backward, normalisation, padding, dtype casts and layout copies,
optimizer, ...), so the table says which part bf16 speeds up and which part it does not. A second
pass over the same number of steps with oneDNN's verbose log on says which kernel each
convolution ran (AMX or AVX512-BF16) and how long the layout reorders around it took.

``python -m benchmarks.profile_step --out reports/profile.md`` (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import load_params
from pipeline.io import write_text

MODES = ("fp32", "bf16", "bf16+cl")
TITLES = {"cyclegan": "CycleGAN", "seg": "Segmentation"}
ONEDNN_MARK = "--- onednn verbose ---"

# (category, substrings of aten op names), first match wins. Order matters: the backward
# variants are matched before their forward names.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("conv backward", ("convolution_backward",)),
    ("norm backward", ("group_norm_backward", "batch_norm_backward")),
    ("conv forward", ("mkldnn_convolution", "_convolution", "conv2d", "conv_transpose")),
    ("norm forward", ("group_norm", "batch_norm", "instance_norm")),
    ("pooling and upsampling", ("max_pool", "upsample", "interpolate", "avg_pool")),
    ("reflection pad", ("reflection_pad",)),
    ("optimizer (Adam)", ("_foreach", "adam")),
    ("dtype casts and copies", ("copy_", "_to_copy", "aten::to", "clone", "contiguous")),
    (
        "activations",
        ("relu", "leaky_relu", "tanh", "threshold_backward", "leaky_relu_backward"),
    ),
    (
        "losses and reductions",
        ("mse_loss", "l1_loss", "nll_loss", "log_softmax", "abs", "mean", "sum", "sgn", "sign"),
    ),
    (
        "allocation, views, concatenation",
        ("empty", "zeros", "fill_", "zero_", "view", "reshape", "as_strided", "aten::cat"),
    ),
    ("elementwise", ("add", "mul", "sub", "div", "where", "neg")),
)


def categorise(op_name: str) -> str:
    name = op_name.lower()
    for category, needles in CATEGORIES:
        if any(needle in name for needle in needles):
            return category
    return "other"


def _seg_job(config_name: str, mode: str, threads: int) -> dict[str, Any]:
    """The job benchmarks.seg_speed measures for this config (same sizes and batch)."""
    from benchmarks import seg_speed

    params = load_params()
    return {
        **seg_speed.configs(params)[config_name],
        "mode": mode,
        "threads": threads,
        "arch": params.train_seg.arch,
        "encoder": params.train_seg.encoder,
    }


def default_threads(model: str) -> int:
    """What the stage itself would use: cyclegan.threads, or train_seg.threads (0: all cores)."""
    params = load_params()
    threads = params.cyclegan.threads if model == "cyclegan" else params.train_seg.threads
    return threads or torch.get_num_threads()


def _cyclegan_step(job: dict[str, Any]) -> Callable[[], Any]:
    from pipeline import runtime
    from pipeline.train.cyclegan import UnpairedSampler, build_trainer

    precision, *flags = job["mode"].split("+")
    from benchmarks import cyclegan_speed

    config, size, _ = cyclegan_speed.configs()[job["config"]]
    config = dataclasses.replace(config, channels_last="cl" in flags)
    runtime.set_threads(job["threads"])
    device = torch.device("cpu")
    torch.manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 256, (8, *size, 3), dtype=np.uint8)
    trainer = build_trainer(config, device, precision)
    sampler = UnpairedSampler(
        frames,
        frames[::-1].copy(),
        config.batch,
        config.crop,
        config.flip,
        torch.Generator().manual_seed(0),
        device,
        config.channels_last,
    )

    def step() -> None:
        trainer.step(*sampler.next())

    return step


def _profile(job: dict[str, Any]) -> dict[str, Any]:
    """One model and mode, in this process: ms per step by category, and the top operators."""
    from torch.profiler import ProfilerActivity, profile

    if job["model"] == "cyclegan":
        step = _cyclegan_step(job)
    else:
        from benchmarks.seg_speed import build_train_step

        split_dir = Path(tempfile.mkdtemp(prefix="profile_seg_"))
        step = build_train_step(_seg_job(job["config"], job["mode"], job["threads"]), split_dir)
    for _ in range(job["warmup"]):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(job["steps"]):
            step()
    per_category: dict[str, float] = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        # self time only, so nested ops (conv2d -> convolution -> mkldnn_convolution) count once
        ms = event.self_cpu_time_total / 1000 / job["steps"]
        per_category[categorise(event.key)] += ms
        per_op[event.key] += ms
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:12]
    # oneDNN's own log of the same steps: which kernel each convolution ran (AMX or AVX512 bf16)
    # and how long the layout reorders around it took. Parsed from stdout by the parent.
    print(ONEDNN_MARK, flush=True)
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        for _ in range(job["steps"]):
            step()
    print(ONEDNN_MARK, flush=True)
    if job["model"] != "cyclegan":
        shutil.rmtree(split_dir, ignore_errors=True)
    return {
        "ms_per_step": round(sum(per_category.values()), 2),
        "categories": {k: round(v, 2) for k, v in per_category.items()},
        "top_ops": [[k, round(v, 2)] for k, v in top],
    }


def _run(job: dict[str, Any]) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.profile_step", "--job", json.dumps(job)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise RuntimeError(f"profiling {job['mode']} failed: {tail}")
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    result["onednn"] = _onednn_summary(lines, job["steps"])
    return result


def _onednn_summary(lines: list[str], steps: int) -> dict[str, float]:
    """ms per step of each oneDNN (primitive, implementation), from its verbose exec lines:
    ``onednn_verbose,v1,primitive,exec,cpu,<primitive>,<implementation>,...,<ms>``."""
    totals: dict[str, float] = defaultdict(float)
    for line in lines:
        fields = line.split(",")
        if len(fields) > 7 and fields[:4] == ["onednn_verbose", "v1", "primitive", "exec"]:
            totals[f"{fields[5]} {fields[6]}"] += float(fields[-1]) / steps
    return {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def markdown(model: str, config_name: str, results: dict[str, dict[str, Any]], threads: int) -> str:
    modes = list(results)
    base = modes[0]
    categories = sorted(
        {c for r in results.values() for c in r["categories"]},
        key=lambda c: -results[base]["categories"].get(c, 0.0),
    )
    lines = [
        f"## {TITLES[model]} training step, {config_name} config, {threads} thread(s)",
        "",
        "Self CPU time per step by operator category (ms), from torch.profiler; "
        f"'x {base}' is the {base} time over the mode's time (above 1: faster).",
        "",
        "| category | "
        + " | ".join(f"{m} ms | share" for m in modes)
        + " | "
        + " | ".join(f"x {base} ({m})" for m in modes[1:])
        + " |",
        "|---|" + "---:|---:|" * len(modes) + "---:|" * (len(modes) - 1),
    ]

    def ms(mode: str, category: str) -> float:
        if category == "total":
            return results[mode]["ms_per_step"]
        return results[mode]["categories"].get(category, 0.0)

    for category in [*categories, "total"]:
        cells = [f"{ms(m, category):.1f} | {ms(m, category) / ms(m, 'total'):.0%}" for m in modes]
        ratios = [
            f"{ms(base, category) / ms(m, category):.2f}" if ms(m, category) > 0 else "-"
            for m in modes[1:]
        ]
        lines.append(f"| {category} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    for mode in modes:
        lines += ["", f"Top operators, {mode} (ms per step, self time):", ""]
        lines += [f"- `{name}` {ms:.1f}" for name, ms in results[mode]["top_ops"]]
    lines += [
        "",
        "oneDNN primitives by kernel (ms per step, from ONEDNN_VERBOSE on the same number of "
        "steps; 'reorder' is converting tensors between torch's layout and oneDNN's blocked one):",
        "",
        "| primitive and kernel | " + " | ".join(modes) + " |",
        "|---|" + "---:|" * len(modes),
    ]
    kernels = sorted(
        {k for r in results.values() for k in r["onednn"]},
        key=lambda k: -max(r["onednn"].get(k, 0.0) for r in results.values()),
    )
    for kernel in kernels:
        cells = [f"{results[m]['onednn'].get(kernel, 0.0):.1f}" for m in modes]
        lines.append(f"| `{kernel}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cpu_facts() -> str:
    """CPU model and its bf16 matrix features, from /proc/cpuinfo (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU: unknown (no /proc/cpuinfo)"
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    flags = set(next((line for line in info.splitlines() if line.startswith("flags")), "").split())
    features = ", ".join(
        f"{flag} {'yes' if flag in flags else 'no'}"
        for flag in ("avx512_bf16", "amx_bf16", "amx_tile")
    )
    return f"CPU: {model}, {torch.get_num_threads()} cores; {features}"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cyclegan", "seg"], help="cyclegan, seg")
    parser.add_argument("--configs", nargs="+", default=["demo"], help="demo and/or paper")
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--steps", type=int, default=20, help="profiled steps (demo config)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0: what the stage uses")
    parser.add_argument("--out", type=Path, help="write the markdown here")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        result = _profile(json.loads(args.job))
        print(json.dumps(result))
        return ""
    sections = [
        "# Training-step profiles",
        "",
        f"Command: `python -m benchmarks.profile_step {' '.join(argv or sys.argv[1:])}`; "
        f"torch {torch.__version__}, ATen CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}. {cpu_facts()}.",
        "",
    ]
    for model in args.models:
        threads = args.threads or default_threads(model)
        for config_name in args.configs:
            # The paper configs take seconds per step: profile fewer.
            steps = args.steps if config_name == "demo" else max(2, args.steps // 10)
            warmup = args.warmup if config_name == "demo" else 1
            if model == "seg" and config_name == "demo":
                steps = max(2, args.steps // 2)
            results = {}
            for mode in args.modes:
                job = {
                    "model": model,
                    "config": config_name,
                    "mode": mode,
                    "steps": steps,
                    "warmup": warmup,
                    "threads": threads,
                }
                results[mode] = _run(job)
                print(f"{model} {config_name} {mode}: {results[mode]['ms_per_step']} ms/step")
            sections.append(markdown(model, config_name, results, threads))
    text = "\n".join(sections)
    print(text)
    if args.out:
        write_text(args.out, text)
    return text


if __name__ == "__main__":
    main()
