"""What every measurement shares: the registry, one subprocess runner, interleaved timing, peak
memory, and one table writer.

A measurement is a function `quick -> results` (JSON-able) registered under a name with the
function that renders its results as a section of a report page:

    @measurement("scoring", page="bench", section=scoring_section)
    def scoring(quick: bool) -> dict: ...

Speed comparisons are made inside one process: `interleaved` times every candidate once per
round, round after round, so a change in the machine's load (shared CI or dev machines) hits all
candidates alike and their ratios hold. Peak memory, which a process only ever raises, comes from
a fresh process per candidate (`isolated`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

Results = dict[str, Any]
# torch's own thread count (one per core), before any measurement sets its stage's.
DEFAULT_THREADS = torch.get_num_threads()


@dataclasses.dataclass(frozen=True)
class Measurement:
    name: str
    run: Callable[[bool], Results]  # quick -> results
    section: Callable[[Results], str]  # results -> markdown
    page: str  # the report page it belongs to: "bench", "profile", "quality", "gpu"


MEASUREMENTS: dict[str, Measurement] = {}
# Where `partial` sends a measurement's results so far: the entry point's page writer.
_partial_writers: list[Callable[[Results], None]] = []


def measurement(
    name: str, page: str, section: Callable[[Results], str]
) -> Callable[[Callable[[bool], Results]], Callable[[bool], Results]]:
    """Register the decorated `quick -> results` function under `name`."""

    def register(run: Callable[[bool], Results]) -> Callable[[bool], Results]:
        MEASUREMENTS[name] = Measurement(name, run, section, page)
        return run

    return register


def partial(results: Results) -> None:
    """Save a long measurement's results so far: a run cut short keeps them."""
    for write in _partial_writers:
        write(results)


def on_partial(write: Callable[[Results], None]) -> None:
    """Send the running measurement's `partial` results to `write` (and nowhere else)."""
    _partial_writers[:] = [write]


def isolated(function: str, env: Mapping[str, str] | None = None, **kwargs: Any) -> Results:
    """`module:function(**kwargs)` (JSON-able in and out) run in a fresh Python process, with
    `env` added to its environment; on failure {"error": its last line of stderr}."""
    payload = json.dumps({"function": function, "kwargs": kwargs})
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness", payload],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_job(payload: str) -> None:
    """The subprocess side of `isolated`: run the job, print its result as the last line.
    Only the job's own module is imported, not every measurement's."""
    job = json.loads(payload)
    module, name = job["function"].split(":")
    result = getattr(importlib.import_module(module), name)(**job["kwargs"])
    print(json.dumps(result))


def use_threads(setting: int) -> int:
    """Set torch's threads as a stage does for its `threads` setting (0: one per core)."""
    threads = setting or DEFAULT_THREADS
    torch.set_num_threads(threads)
    return threads


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    candidates: Mapping[str, Callable[[], Any]],
    rounds: int,
    calls: int = 1,
    device: torch.device | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one sample per round: each round times `calls`
    calls of every candidate in turn. Warm the candidates up first."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, call in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                call()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / calls)
    return samples


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory allocated since the last reset (CUDA), or this process's peak
    resident memory (CPU)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def matmul_flops(device: torch.device, dtype: torch.dtype, size: int, rounds: int) -> float:
    """FLOP/s of a dense (size x size) @ (size x size) product: the ceiling a conv net's rate
    is compared with. Random operands (zeros run faster than real data on some chips)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    seconds = median(interleaved({"matmul": lambda: a @ b}, rounds, device=device)["matmul"])
    return 2 * size**3 / seconds


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


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table of `rows` with `columns` as (key, header) pairs; text columns left,
    numbers right."""
    numeric = [
        any(isinstance(row.get(key), int | float) for row in rows)
        and not any(isinstance(row.get(key), str) for row in rows)
        for key, _ in columns
    ]
    lines = [
        "| " + " | ".join(header for _, header in columns) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)


# The columns of `rate_rows` tables, before a measurement's own.
RATE_COLUMNS = [
    ("config", "config"),
    ("kind", "kind"),
    ("mode", "mode"),
    ("img_per_s", "img/s"),
    ("speedup", "x fp32"),
    ("peak_rss_mb", "peak RSS MB"),
]


def rate_rows(samples: Mapping[str, Sequence[float]], images: int, **fields: Any) -> list[Results]:
    """One row per candidate of an `interleaved` run: `fields`, its mode, images per second
    (`images` per call, median call), and that rate over fp32's (`speedup`)."""
    rows = [
        {**fields, "mode": mode, "img_per_s": round(images / median(seconds), 3)}
        for mode, seconds in samples.items()
    ]
    add_ratios(rows, "img_per_s", "fp32")
    return rows


def add_ratios(rows: list[Results], value: str, baseline: str, key: str = "mode") -> None:
    """Give each row `x <baseline>`: its `value` over that of the row whose `key` is
    `baseline` (rows of one comparison, measured in one process)."""
    base = next((row.get(value) for row in rows if row.get(key) == baseline), None)
    for row in rows:
        if base and row.get(value) is not None:
            row["speedup"] = round(row[value] / base, 3)


if __name__ == "__main__":
    run_job(sys.argv[1])
