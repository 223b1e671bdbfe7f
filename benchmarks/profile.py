"""Where a training step spends its time, per mode (torch.profiler and oneDNN's own log).

The real CycleGAN and segmentation steps (benchmarks.harness) on random frames, each mode in a
fresh process. Every operator's *self* CPU time is grouped into categories (convolutions forward
/ backward, normalisation, padding, dtype casts and layout copies, optimizer, ...), so the page
says which part a lever speeds up and which it does not. A second pass over as many steps with
oneDNN's verbose log on says which kernel each convolution ran (AMX or AVX512-BF16) and how long
the layout reorders around it took.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from benchmarks import harness as h
from benchmarks.harness import Results, measurement, table

MODES = ("fp32", "bf16", "bf16+cl")
TITLES = {"cyclegan": "CycleGAN", "seg": "Segmentation"}
# (category, substrings of aten op names), first match wins: backward names before forward.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("conv backward", ("convolution_backward",)),
    ("norm backward", ("group_norm_backward", "batch_norm_backward")),
    ("conv forward", ("mkldnn_convolution", "_convolution", "conv2d", "conv_transpose")),
    ("norm forward", ("group_norm", "batch_norm", "instance_norm")),
    ("pooling and upsampling", ("max_pool", "upsample", "interpolate", "avg_pool")),
    ("reflection pad", ("reflection_pad",)),
    ("optimizer (Adam)", ("_foreach", "adam")),
    ("dtype casts and copies", ("copy_", "_to_copy", "aten::to", "clone", "contiguous")),
    ("activations", ("relu", "leaky_relu", "tanh", "threshold_backward")),
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


def onednn_summary(lines: list[str], steps: int) -> dict[str, float]:
    """ms per step of each oneDNN (primitive, implementation), from its verbose exec lines:
    ``onednn_verbose,v1,primitive,exec,cpu,<primitive>,<implementation>,...,<ms>``."""
    totals: dict[str, float] = defaultdict(float)
    for line in lines:
        fields = line.split(",")
        if len(fields) > 7 and fields[:4] == ["onednn_verbose", "v1", "primitive", "exec"]:
            totals[f"{fields[5]} {fields[6]}"] += float(fields[-1]) / steps
    return {k: round(v, 2) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def profile_mode(model: str, quick: bool, mode: str, steps: int) -> Results:
    """One model and mode, in this process: ms per step by category, top operators, oneDNN."""
    from torch.profiler import ProfilerActivity, profile

    configs = h.cyclegan_configs(quick) if model == "cyclegan" else h.seg_configs(quick)
    name = next(iter(configs))
    h.use_threads(configs[name][0].threads)
    step = h.train_step(model, configs, name, mode, Path(tempfile.mkdtemp()))
    h.warm(step, 1 if quick else 5)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    per_category: dict[str, float] = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        # Self time only, so nested ops (conv2d -> convolution -> mkldnn_convolution) count once.
        ms = event.self_cpu_time_total / 1000 / steps
        per_category[categorise(event.key)] += ms
        per_op[event.key] += ms
    # oneDNN writes its log to the process's stdout: send that to a file while it is on.
    with tempfile.TemporaryFile("w+") as log:
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                for _ in range(steps):
                    step()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        onednn = onednn_summary(log.read().splitlines(), steps)
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:12]
    return {
        "ms_per_step": round(sum(per_category.values()), 2),
        "categories": {k: round(v, 2) for k, v in per_category.items()},
        "top_ops": [[k, round(v, 2)] for k, v in top],
        "onednn": onednn,
        "threads": torch.get_num_threads(),
    }


@measurement("profile", page="profile", render=lambda r: profile_page(r))
def step_profiles(quick: bool) -> Results:
    """Where each training step's time goes, by operator category and oneDNN kernel."""
    results: Results = {"cpu": cpu_facts(), "models": {}}
    for model, steps in (("cyclegan", 20), ("seg", 10)):
        job = {"model": model, "quick": quick, "steps": 1 if quick else steps}
        results["models"][model] = {
            mode: h.isolated("benchmarks.profile:profile_mode", mode=mode, **job)
            for mode in (MODES[:2] if quick else MODES)
        }
    return results


def cpu_facts() -> str:
    """CPU model and its bf16 matrix features, from /proc/cpuinfo (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "CPU: unknown (no /proc/cpuinfo)"
    names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    flags = set(next((line for line in info if line.startswith("flags")), "").split())
    features = ", ".join(
        f"{flag} {'yes' if flag in flags else 'no'}"
        for flag in ("avx512_bf16", "amx_bf16", "amx_tile")
    )
    return f"CPU: {names[0] if names else 'unknown'}, {os.cpu_count()} cores; {features}"


def profile_page(results: Results) -> str:
    sections = [
        f"torch {torch.__version__}, ATen CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}. {results['cpu']}.",
        "",
    ]
    for model, by_mode in results["models"].items():
        failed = {mode: r["error"] for mode, r in by_mode.items() if "error" in r}
        if failed:
            sections += [f"## {TITLES[model]}: failed: {failed}", ""]
        else:
            sections.append(model_section(TITLES[model], by_mode))
    return "\n".join(sections)


def model_section(title: str, results: dict[str, Results]) -> str:
    modes = list(results)
    base = modes[0]

    def ms(mode: str, category: str) -> float:
        if category == "total":
            return results[mode]["ms_per_step"]
        return results[mode]["categories"].get(category, 0.0)

    categories = sorted(
        {c for r in results.values() for c in r["categories"]}, key=lambda c: -ms(base, c)
    )
    rows = []
    for category in [*categories, "total"]:
        row = {"category": category}
        for m in modes:
            row[f"{m} ms"] = f"{ms(m, category):.1f}"
            row[f"{m} share"] = f"{ms(m, category) / ms(m, 'total'):.0%}"
            faster = ms(base, category) / ms(m, category) if ms(m, category) > 0 else None
            row[f"x {m}"] = "-" if faster is None else f"{faster:.2f}"
        rows.append(row)
    columns = ["category", *(f"{m} ms|{m} share=share" for m in modes)]
    columns += [f"x {m}=x {base} ({m})" for m in modes[1:]]
    lines = [
        f"## {title} training step, {results[base]['threads']} thread(s)",
        "",
        "Self CPU time per step by operator category (ms), from torch.profiler; "
        f"'x {base}' is the {base} time over the mode's time (above 1: faster).",
        "",
        table(rows, "|".join(columns)),
    ]
    for mode in modes:
        lines += ["", f"Top operators, {mode} (ms per step, self time):", ""]
        lines += [f"- `{name}` {value:.1f}" for name, value in results[mode]["top_ops"]]
    kernels = sorted(
        {k for r in results.values() for k in r["onednn"]},
        key=lambda k: -max(r["onednn"].get(k, 0.0) for r in results.values()),
    )
    onednn = [
        {"kernel": f"`{k}`", **{m: f"{results[m]['onednn'].get(k, 0.0):.1f}" for m in modes}}
        for k in kernels
    ]
    lines += [
        "",
        "oneDNN primitives by kernel (ms per step, from ONEDNN_VERBOSE on the same number of "
        "steps; 'reorder' is converting tensors between torch's layout and oneDNN's blocked one):",
        "",
        table(onednn, "|".join(["kernel=primitive and kernel", *modes])),
    ]
    return "\n".join(lines) + "\n"
