"""Device, precision and determinism choices shared by the training and inference stages, and
the progress bar every long loop shows."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm


def pick_device() -> torch.device:
    """CUDA when present (the local rank's GPU under torchrun), else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


# oneDNN's instruction sets with bf16 matrix units (its ONEDNN_MAX_CPU_ISA names, lower case).
ONEDNN_BF16_ISAS = frozenset(
    {
        "avx512_core_bf16",
        "avx512_core_fp16",
        "avx512_core_amx",
        "avx512_core_amx_fp16",
        "avx10_1_512",
        "avx10_1_512_amx",
        "avx10_1_512_amx_fp16",
        "all",
    }
)


def cpu_has_bf16_acceleration() -> bool:
    """True on CPUs with AMX or AVX512-BF16, where bf16 autocast is a real speed-up.

    False when ONEDNN_MAX_CPU_ISA (or its older name DNNL_MAX_CPU_ISA) caps oneDNN, which runs
    bf16 convolutions and matmuls, below those units: with torch's and MKL's kernels capped too
    (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS), such a process computes what a CPU without
    them computes, in fp32."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        cap = os.environ.get(name, "").strip().lower()
        if cap and cap not in ONEDNN_BF16_ISAS:
            return False
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX512_BF16", "AMX_BF16") or "AMX" in capability:
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn "auto" into the fastest precision that holds quality on `device`.

    bf16 on CUDA and on CPUs with bf16 matrix units (measured: see benchmarks/), fp32 elsewhere.
    fp16 needs a grad scaler and is CUDA-only.
    """
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_bf16_acceleration() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast context for a resolved precision ("fp32" disables it)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "img",
    initial: int = 0,
    enabled: bool = True,
) -> tqdm:
    """A tqdm progress bar on stderr, drawn only when stderr is a terminal.

    Under DVC, CI or a redirect to a file the redraws are carriage-return noise in the log, so
    the bar stays silent there (tqdm's `disable=None`). `enabled=False` silences it everywhere,
    e.g. on every rank but the main one. Iterate it, or call `update` on it, as on any tqdm.
    """
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        initial=initial,
        dynamic_ncols=True,
        disable=None if enabled else True,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int) -> None:
    """0 keeps torch's default (one thread per core)."""
    if threads > 0:
        torch.set_num_threads(threads)


def use_compile_cache(folder: str | Path) -> None:
    """Keep torch.compile's caches (inductor's compiled graphs, Triton kernels) in `folder`, so
    a later process compiling the same graphs loads them instead of compiling again (seconds
    instead of minutes). A TORCHINDUCTOR_CACHE_DIR set by the user wins."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(folder).resolve()))
