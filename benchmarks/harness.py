"""The one benchmark harness: registry and entry point, report pages, fresh-process jobs,
interleaved timing, memory, tables, and the workloads (this project's steps as the stages run
them, and the reference CycleGAN's).

Pages: a measurement writes only its own part of its page: the block between `<!-- measurement
NAME -->` and `<!-- /measurement NAME -->` of <page>.md and the keys NAME and runs.NAME (command,
machine) of <page>.json. Every other byte stays, so no run replaces what another measurement or
an earlier sitting measured. A page only one measurement writes is that measurement's own.

Timing: candidates are compared inside one process, `interleaved` (each round times every
candidate once), so a change in the machine's load hits all alike and their ratios hold. Peak
memory, which a process only ever raises, comes from a fresh process (`isolated`).

Configurations: `demo` is params.yaml on frames of data.size; `paper` the published setting
(CycleGAN: resnet_9blocks, ngf = ndf = 64, batch 1, 256x256 crops of 286x286 frames;
segmentation: 512x1024 crops, batch 2); `tiny` (--quick) a few channels at 32x64. A mode names
levers on top of fp32 eager: `bf16` autocast, `cl` channels_last, `compile` torch.compile,
`graphs` its "reduce-overhead" (CUDA graphs), `host` (CycleGAN frames read from the host each
step), as in "bf16+cl+compile".

The reference (junyanz/pytorch-CycleGAN-and-pix2pix, or its smaller fork zenml-io/... at 00d5574)
is never copied in: put a checkout in `.ref/pytorch-CycleGAN-and-pix2pix` (git-ignored) or point
SIM2REAL_REFERENCE at one. Only its `models/` and `util/` are imported; `optimize_parameters()`
runs on random tensors with its own defaults (DataParallel on CUDA, cudnn.benchmark, fp32).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
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
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config import CycleGANConfig, TrainSegConfig, load_params
from pipeline.data.split import PreparedSplit
from pipeline.data.tensors import normalize
from pipeline.io import write_json, write_text
from pipeline.runtime import autocast

# The training modules (and their packages) are imported where a workload needs them, so that
# a fresh process measuring peak memory holds only what its own step needs, as a stage would.

Results = dict[str, Any]
Step = Callable[[], Any]
Run = Callable[[bool], Results]  # quick -> results
CPU = torch.device("cpu")
DEFAULT_THREADS = torch.get_num_threads()  # one per core, before a measurement sets its own
REFERENCE = Path(".ref/pytorch-CycleGAN-and-pix2pix")
TITLES = {"bench": "Benchmarks", "profile": "Training-step profiles", "gpu": "GPU benchmarks",
          "quality": "Quality of the fast defaults against fp32",
          "convergence": "Convergence of the segmentation net"}  # fmt: skip
PAGE_NOTE = (
    "Each section is one measurement's, rewritten only by `python -m benchmarks NAME` (the line "
    "under it gives the command and machine). The machine may be shared: compare rows within one "
    "table (measured interleaved in one process), not across sections."
)
RATE_COLUMNS = "config|kind|mode|img_per_s=img/s|speedup=x fp32|peak_rss_mb=peak RSS MB"
median = statistics.median


@dataclasses.dataclass(frozen=True)
class Measurement:
    run: Run
    page: str
    title: str = ""
    columns: str = ""  # of its table of results["rows"] (see `table`)
    intro: str = ""
    render: Callable[[Results], str] | None = None  # instead of title, intro, table and notes

    def section(self, results: Results) -> str:
        if self.render:
            return self.render(results)
        if "skipped" in results:
            return f"## {self.title}\n\nSkipped: {results['skipped']}.\n"
        parts = [self.intro, table(results["rows"], self.columns), *results.get("notes", [])]
        return f"## {self.title}\n\n" + "\n\n".join(p for p in parts if p) + "\n"


MEASUREMENTS: dict[str, Measurement] = {}
_partial: list[Callable[[Results], None]] = []  # the page writer of the running measurement


def measurement(name: str, page: str, **layout: Any) -> Callable[[Run], Run]:
    """Register the decorated function under `name` (`layout`: Measurement's other fields)."""

    def register(run: Run) -> Run:
        MEASUREMENTS[name] = Measurement(run, page, **layout)
        return run

    return register


def partial(results: Results) -> None:
    """Save a long measurement's results so far: a run cut short keeps them."""
    for write in _partial:
        write(results)


def merge_block(page: str, name: str, text: str) -> str:
    """`page` with measurement `name`'s block set to `text` (appended when it has none)."""
    start, end = f"<!-- measurement {name} -->\n", f"<!-- /measurement {name} -->\n"
    block = f"{start}{text.rstrip()}\n{end}"
    head, found, rest = page.partition(start)
    if found and end in rest:
        return head + block + rest.split(end, 1)[1]
    return f"{page}\n{block}" if page else block


def save(stem: Path, page: str, name: str, results: Results, run: Results) -> None:
    """Write measurement `name`'s results and `run` (command, machine) into its part of
    <stem>.json and <stem>.md (module doc)."""
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    shared = [m.page for m in MEASUREMENTS.values()].count(page) > 1
    data = json.loads(json_path.read_text()) if shared and json_path.is_file() else {}
    data[name] = results
    data.setdefault("runs", {})[name] = run
    write_json(json_path, data)
    m = run["machine"]
    provenance = (
        f"Command: `{run['command']}`. Machine: {m['platform']}, {m['cpus']} CPUs, "
        f"{m['processor']}, device {m['device']}; torch {m['torch']} ({m['cpu_capability']}), "
        f"{m['threads']} threads; load average at the start {m['load_average']}."
        + (" QUICK mode: tiny sizes, not representative." if run["quick"] else "")
    )
    text = md_path.read_text() if shared and md_path.is_file() else ""
    text = text or f"# {TITLES[page]}\n\n{PAGE_NOTE}\n"
    section = MEASUREMENTS[name].section(results).rstrip()
    write_text(md_path, merge_block(text, name, f"{section}\n\n{provenance}\n"))


def main(argv: Sequence[str] | None = None) -> dict[str, Results]:
    """`python -m benchmarks [NAME ...] [--quick] [--out DIR]`: run the named measurements
    (default: those of reports/bench.md), each saving its part of <out>/<page>.md and .json."""
    from benchmarks import cpu, gpu, profile, scaling, training, translators  # noqa: F401

    bench = [name for name, entry in MEASUREMENTS.items() if entry.page == "bench"]
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=main.__doc__)
    parser.add_argument("names", nargs="*", help=f"measurements (default: {' '.join(bench)})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes; <page>_quick pages")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--list", action="store_true", help="name every measurement")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement {unknown[0]}; --list names them")
    if args.list:
        for name, entry in MEASUREMENTS.items():
            print(f"{name:14s} page {entry.page:12s} {(entry.run.__doc__ or '').splitlines()[0]}")
        return {}
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Results] = {}
    for name in args.names or bench:
        entry = MEASUREMENTS[name]
        stem = args.out / (f"{entry.page}_quick" if args.quick else entry.page)
        run = {"command": command, "machine": machine(), "quick": args.quick}
        _partial[:] = [functools.partial(save, stem, entry.page, name, run=run)]
        print(f"--- {name}", flush=True)
        results[name] = entry.run(args.quick)
        save(stem, entry.page, name, results[name], run)
        print(entry.section(results[name]), flush=True)
    return results


def isolated(function: str, env: Mapping[str, str] | None = None, **kwargs: Any) -> Results:
    """`module:function(**kwargs)` (JSON-able in and out) run in a fresh Python process, with
    `env` added to its environment; on failure {"error": its last line of stderr}."""
    job = [sys.executable, "-m", "benchmarks.harness", json.dumps([function, kwargs])]
    done = subprocess.run(job, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def use_threads(setting: int) -> int:
    """Set torch's threads as a stage does for its `threads` setting (0: one per core)."""
    torch.set_num_threads(setting or DEFAULT_THREADS)
    return setting or DEFAULT_THREADS


def interleaved(
    candidates: Mapping[str, Step], rounds: int, calls: int = 1, device: Any = CPU, warmup: int = 0
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one sample per round: each round times `calls`
    calls of every candidate in turn, after `warmup` untimed calls of each."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for call in candidates.values():
        warm(call, warmup)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, call in candidates.items():
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                call()
            sync()
            samples[name].append((time.perf_counter() - start) / calls)
    return samples


def timed(call: Step) -> tuple[Any, float]:
    """What `call()` returns, and the seconds it took."""
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def warm(step: Step, calls: int = 2) -> float:
    """Seconds the first `calls` calls took (compilation, allocator and kernel warm-up)."""
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return time.perf_counter() - start


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory allocated since the last reset (CUDA), or this process's peak resident
    memory (CPU)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def count_flops(function: Step) -> int:
    """FLOPs of one call, by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode  # 80 MB: not in memory-measuring jobs

    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def matmul_flops(device: torch.device, dtype: torch.dtype, size: int, rounds: int) -> float:
    """FLOP/s of a dense (size x size) @ (size x size) product: the ceiling a conv net's rate
    is compared with. Random operands (zeros run faster than real data on some chips)."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    samples = interleaved({"matmul": lambda: a @ b}, rounds, device=device, warmup=1)
    return 2 * size**3 / median(samples["matmul"])


def machine() -> Results:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def table(rows: Sequence[Mapping[str, Any]], columns: str) -> str:
    """A markdown table of `rows`; `columns` is "key|key=header|...". Numbers right-aligned."""
    pairs = [(c.partition("=")[0], c.partition("=")[2] or c) for c in columns.split("|")]

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
        return str(value)

    numeric = [
        any(isinstance(row.get(key), int | float) for row in rows)
        and not any(isinstance(row.get(key), str) for row in rows)
        for key, _ in pairs
    ]
    lines = ["| " + " | ".join(header for _, header in pairs) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(cell(row.get(key)) for key, _ in pairs) + " |" for row in rows]
    return "\n".join(lines)


def rate_rows(samples: Mapping[str, Sequence[float]], images: int, **fields: Any) -> list[Results]:
    """One row per candidate of an `interleaved` run: `fields`, its mode, images per second
    (`images` per call, median call), and that rate over the fp32 row's (`speedup`)."""
    rates = {mode: round(images / median(seconds), 3) for mode, seconds in samples.items()}
    rows = [{**fields, "mode": mode, "img_per_s": rate} for mode, rate in rates.items()]
    for row in rows:
        if rates.get("fp32"):
            row["speedup"] = round(row["img_per_s"] / rates["fp32"], 3)
    return rows


def cyclegan_configs(quick: bool) -> dict[str, tuple[CycleGANConfig, tuple[int, int], int]]:
    """name -> (training config, frame size (H, W), translation batch)."""
    params, replace = load_params(), dataclasses.replace
    if quick:
        tiny = replace(params.cyclegan, netG="resnet_6blocks", ngf=4, ndf=4, crop=(32, 32))
        return {"tiny": (replace(tiny, pool_size=4), (32, 64), 2)}
    paper = replace(params.cyclegan, netG="resnet_9blocks", ngf=64, ndf=64, batch=1)
    return {
        "demo": (params.cyclegan, params.data.size, params.translate.batch),
        "paper": (replace(paper, crop=(256, 256)), (286, 286), 1),
    }


def seg_configs(quick: bool) -> dict[str, tuple[TrainSegConfig, tuple[int, int], int]]:
    """name -> (train_seg config, frame size (H, W), inference batch)."""
    params, replace = load_params(), dataclasses.replace
    if quick:
        return {"tiny": (replace(params.train_seg, crop=(32, 64), batch=2), (32, 64), 2)}
    return {
        "demo": (params.train_seg, params.data.size, params.evaluate.batch),
        "paper": (replace(params.train_seg, crop=(512, 1024), batch=2), (512, 1024), 1),
    }


def random_frames(count: int, size: tuple[int, int]) -> np.ndarray:
    """(count, H, W, 3) uint8 noise, seeded."""
    return np.random.default_rng(0).integers(0, 256, (count, *size, 3), dtype=np.uint8)


def cyclegan_step(
    config: CycleGANConfig, mode: str, size: tuple[int, int], device: Any, frames: Any = None
) -> Step:
    """One training step of `config` with `mode`'s levers as train_cyclegan runs it (sampling
    included) on `frames` (default: 8 random ones of `size`); a call returns its losses."""
    from pipeline.train.cyclegan import build_trainer
    from pipeline.train.translator import UnpairedSampler, frames_fit_on_device

    levers = mode.split("+")
    compile = "default" if "compile" in levers else "eager"
    compile = "reduce-overhead" if "graphs" in levers else compile
    config = dataclasses.replace(
        config, precision=levers[0], channels_last="cl" in levers, compile=compile
    )
    frames = random_frames(8, size) if frames is None else frames
    torch.manual_seed(config.seed)
    trainer = build_trainer(config, device, config.precision)
    trainer.wrap(config.compile)
    on_device = "host" not in levers and frames_fit_on_device(device, frames, frames)
    draws = torch.Generator(device if on_device else CPU).manual_seed(config.seed)
    sampler = UnpairedSampler(
        frames, frames[::-1].copy(), config.batch, config.crop, config.flip, draws, device,
        config.channels_last, on_device,
    )  # fmt: skip
    return lambda: trainer.step(*sampler.next())


def reference_folder() -> Path | None:
    """Where the reference checkout is, or None when there is none."""
    path = Path(os.environ.get("SIM2REAL_REFERENCE", REFERENCE))
    return path if (path / "models" / "cycle_gan_model.py").is_file() else None


def reference_step(config: CycleGANConfig, device: torch.device) -> Step:
    """One reference training step (both generators, then both discriminators) per call, at
    `config`'s netG, ngf, ndf, crop and batch."""
    path = reference_folder()
    if path is None:
        raise FileNotFoundError(f"no reference checkout at {REFERENCE} (see {__name__})")
    sys.path.insert(0, str(path.resolve()))
    from models.cycle_gan_model import CycleGANModel  # the reference's own package

    # fmt: off
    options = types.SimpleNamespace(
        gpu_ids=[device.index or 0] if device.type == "cuda" else [], isTrain=True,
        checkpoints_dir=os.environ.get("TMPDIR", "/tmp"), name="reference",
        preprocess="resize_and_crop",  # its default; turns cudnn.benchmark on
        input_nc=3, output_nc=3, ngf=config.ngf, ndf=config.ndf, netG=config.netG, netD="basic",
        n_layers_D=3, norm="instance", no_dropout=True, init_type="normal", init_gain=0.02,
        lambda_identity=0.5, lambda_A=10.0, lambda_B=10.0, pool_size=50, gan_mode="lsgan",
        lr=0.0002, beta1=0.5, direction="AtoB",
    )
    # fmt: on
    model = CycleGANModel(options)
    # Random images in [-1, 1], as its data loader hands them over (on the host).
    sim, real = (torch.rand(config.batch, 3, *config.crop) * 2 - 1 for _ in range(2))

    def step() -> None:
        model.set_input({"A": sim, "B": real, "A_paths": None, "B_paths": None})
        model.optimize_parameters()

    return step


def fake_split(root: Path, frames: int, size: tuple[int, int]) -> PreparedSplit:
    """A prepared split of random frames and labels, as the prepare stage writes one."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", rng.integers(0, 256, (frames, *size, 3), dtype=np.uint8))
    np.save(root / "labels.npy", rng.integers(0, 19, (frames, *size), dtype=np.uint8))
    (root / "names.json").write_text(json.dumps([f"{i:05d}" for i in range(frames)]))
    return PreparedSplit.open(root, need_labels=True)


def seg_net(config: TrainSegConfig, mode: str, device: Any) -> tuple[Any, Any, str, Any]:
    """A mode's net: its module, what to call (compiled with "+compile"), precision and memory
    format."""
    from pipeline.models.segmentation import build_segmentation_model

    precision, *levers = mode.split("+")
    memory_format = torch.channels_last if "cl" in levers else torch.contiguous_format
    torch.manual_seed(config.seed)
    model = build_segmentation_model(config.arch, config.encoder)
    model = model.to(device, memory_format=memory_format)
    net = torch.compile(model, dynamic=False) if "compile" in levers else model
    return model, net, precision, memory_format


def seg_train_step(config: TrainSegConfig, mode: str, split: PreparedSplit, device: Any) -> Step:
    """One training step as the loop runs it (sample_batch from the memory-mapped arrays,
    PairedAugment, the loss, the optimizer); a call returns its seconds of waiting for data."""
    from pipeline.data.augment import PairedAugment
    from pipeline.losses import SegmentationLoss
    from pipeline.train.segmentation import make_optimizer
    from pipeline.train.segmentation_steps import sample_batch

    model, net, precision, memory_format = seg_net(config, mode, device)
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


def seg_inference_step(
    config: TrainSegConfig, mode: str, size: tuple[int, int], batch: int, device: Any
) -> Step:
    """The evaluator's forward pass and argmax on a (batch, 3, H, W) batch."""
    model, net, precision, memory_format = seg_net(config, mode, device)
    model.eval()
    images = normalize(torch.rand(batch, 3, *size, device=device))
    images = images.contiguous(memory_format=memory_format)

    def step() -> Any:
        with torch.inference_mode(), autocast(precision, device):
            return net(images).float().argmax(1)

    return step


def train_step(model: str, configs: Mapping[str, Any], name: str, mode: str, root: Path) -> Step:
    """A CPU training step of `model` ("cyclegan" or "seg") at `configs[name]` (seg: on a split
    of 8 random frames written under `root`)."""
    config, size, _ = configs[name]
    if model == "cyclegan":
        return cyclegan_step(config, mode, size, CPU)
    return seg_train_step(config, mode, fake_split(root, 8, size), CPU)


def two_steps_memory(model: str, name: str, mode: str) -> Results:
    """Peak memory of two training steps of `model` ("cyclegan" or "seg") at full-size config
    `name`, in a fresh process (run through `isolated`)."""
    configs = cyclegan_configs(False) if model == "cyclegan" else seg_configs(False)
    with tempfile.TemporaryDirectory() as tmp:
        warm(train_step(model, configs, name, mode, Path(tmp)))
    return {"peak_mb": peak_memory_mb(CPU)}


if __name__ == "__main__":  # the fresh process of `isolated`: its result is the last line
    function, kwargs = json.loads(sys.argv[1])
    module, name = function.split(":")
    print(json.dumps(getattr(importlib.import_module(module), name)(**kwargs)))
