"""The one entry point: `python -m benchmarks [NAME ...] [--quick] [--out DIR]`.

Runs the named measurements (default: those of reports/bench.md) and writes each page they belong
to as <out>/<page>.json and <out>/<page>.md, after every measurement and whenever a long one
saves partial results. `--list` names them all; `--quick` uses tiny sizes (for the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks import (  # noqa: F401 (importing a module registers its measurements)
    convergence,
    cyclegan,
    gpu,
    profile,
    projection,
    quality,
    scaling,
    scoring,
    segmentation,
)
from benchmarks.harness import MEASUREMENTS, Results, machine, on_partial
from benchmarks.projection import GPU_RESULTS
from pipeline.io import write_json, write_text

TITLES = {
    "bench": "Benchmarks",
    "profile": "Training-step profiles",
    "quality": "Quality of the fast defaults against fp32",
    "gpu": "GPU benchmarks",
    "convergence": "Convergence of the segmentation net",
}
BENCH = (
    "cyclegan",
    "reference",
    "compile_cache",
    "segmentation",
    "scoring",
    "scaling",
    "projection",
)


def page_text(page: str, results: dict[str, Results], quick: bool, command: str) -> str:
    m = results["machine"]
    lines = [
        f"# {TITLES[page]}",
        "",
        f"Command: `{command}`. Machine: {m['platform']}, {m['cpus']} CPUs, {m['processor']}, "
        f"device {m['device']}; torch {m['torch']} ({m['cpu_capability']}), {m['threads']} "
        f"threads; load average at the start {m['load_average']} (the machine may be shared: "
        "compare rows within one table, measured interleaved in one process, not across runs)."
        + (" QUICK mode: tiny sizes, not representative." if quick else ""),
        "",
    ]
    if page == "bench":
        lines += [gpu_status(), ""]
    for name, result in results.items():
        if name != "machine":
            lines.append(MEASUREMENTS[name].section(result))
    return "\n".join(lines)


def gpu_status() -> str:
    """Whether GPU rows were measured: reports/gpu.json, written by `python -m benchmarks gpu`."""
    if GPU_RESULTS.is_file():
        device = json.loads(GPU_RESULTS.read_text())["gpu"]["facts"]["device"]
        return f"GPU rows: measured on {device}, in reports/gpu.md."
    return (
        "GPU rows: not measured (no GPU was available to these runs). README's Benchmarks "
        "section gives the prepared one-command GPU run; the projection below uses issue 16's "
        "documented H100 rate until its reports/gpu.json exists."
    )


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Results]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"measurements (default: {' '.join(BENCH)})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--list", action="store_true", help="name every measurement")
    args = parser.parse_args(argv)
    if args.list:
        for name, entry in MEASUREMENTS.items():
            summary = (entry.run.__doc__ or "").splitlines()[0]
            print(f"{name:14s} page {entry.page:8s} {summary}")
        return {}
    names = args.names or list(BENCH)
    unknown = [name for name in names if name not in MEASUREMENTS]
    if unknown:
        parser.error(f"unknown measurement {unknown[0]}; --list names them")
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    pages: dict[str, dict[str, Results]] = {}
    for name in names:
        page = MEASUREMENTS[name].page
        results = pages.setdefault(page, {"machine": machine()})
        stem = args.out / (f"{page}_quick" if args.quick else page)

        def write(partial: Results, page: str = page, name: str = name, stem: Path = stem) -> None:
            pages[page][name] = partial
            write_json(stem.with_suffix(".json"), pages[page])
            write_text(stem.with_suffix(".md"), page_text(page, pages[page], args.quick, command))

        on_partial(write)
        print(f"--- {name}", flush=True)
        write(MEASUREMENTS[name].run(args.quick))
        print(MEASUREMENTS[name].section(results[name]), flush=True)
    return pages


if __name__ == "__main__":
    main()
