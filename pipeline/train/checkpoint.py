"""Checkpoints that resume exactly and never leave a half-written file behind.

A checkpoint is one dict of tensors and plain values (model and optimizer state dicts, scheduler
state, step, RNG states, image pools), saved to a temp name and renamed, so after a kill the folder
holds only complete files. Loading always uses `weights_only=True`: a checkpoint carrying a pickled
payload is refused, never executed.
"""

from __future__ import annotations

import ast
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.io import OutputError, atomic_path, remove_orphan_temps, write_json
from pipeline.weights import load_weights_only

_NAME = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint cannot be used: unreadable, unsafe, or from another configuration."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def save_checkpoint(folder: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `state` as folder/step_XXXXXXXX.pt atomically; keep the newest `keep` files."""
    folder = Path(folder)
    path = folder / checkpoint_name(step)
    remove_orphan_temps(folder)
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as err:  # torch reports a full disk as RuntimeError
            raise OutputError(f"cannot write {path}: {err}") from err
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first (temp files are never listed)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; refuse anything else with a clear error."""
    return load_weights_only(Path(path), CheckpointError, "checkpoint")


def latest_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The newest loadable checkpoint in `folder`, or None when there is none."""
    checkpoints = list_checkpoints(folder)
    return load_checkpoint(checkpoints[-1]) if checkpoints else None


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, as tensors and plain values."""
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "python": repr(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    random.setstate(_parse_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _parse_python_state(text: str) -> tuple:
    # repr() of random.getstate() is (int, tuple-of-ints, None): safe to rebuild without eval.
    return ast.literal_eval(text)


def check_compatible(saved: dict[str, Any], current: dict[str, Any], path: str) -> None:
    """Refuse to resume when settings that shape the weights changed since the checkpoint."""
    changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if changed:
        details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        raise CheckpointError(
            f"{path}: checkpoint was written with other settings ({details}); delete the "
            f"checkpoint folder to start over, or restore the settings to resume"
        )


# The record beside a checkpoint folder: the fingerprint (pipeline.fingerprint) of the run that
# wrote it, that run's MLflow run id (so a resumed run logs into the run it started) and whether
# the run finished.
RUN_RECORD = "run_record.json"


def claim_checkpoint_folder(folder: str | Path, fingerprint: str) -> str | None:
    """Keep `folder`'s checkpoints when they belong to an interrupted run of this fingerprint,
    else clear them.

    A finished run is never resumed: DVC reruns a finished stage only when forced (`dvc repro
    -f`) or when an output went missing, and both ask for the run to be made again. Returns the
    MLflow run id recorded for the interrupted run (a resumed run logs into the same run), or
    None for a fresh start.
    """
    folder = Path(folder)
    record_path = folder / RUN_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    same = record is not None and record.get("fingerprint") == fingerprint
    if same and not record.get("finished", False):
        return record.get("run_id")
    stale = list_checkpoints(folder)
    if same:
        print(
            f"{folder}: this run finished before (dvc repro -f, or an output was removed); "
            f"training starts over",
            file=sys.stderr,
        )
    elif stale:
        print(
            f"{folder}: checkpoints come from other settings, code or data; training starts over",
            file=sys.stderr,
        )
    for path in stale:
        path.unlink()
    record_path.unlink(missing_ok=True)
    return None


def record_run(folder: str | Path, fingerprint: str, run_id: str | None) -> None:
    write_json(Path(folder) / RUN_RECORD, {"fingerprint": fingerprint, "run_id": run_id})


def finish_run_record(folder: str | Path) -> None:
    """Mark the run recorded in `folder` finished and drop its checkpoints: they served only a
    resume, which a finished run never gets (optimizer state makes them large)."""
    folder = Path(folder)
    record = json.loads((folder / RUN_RECORD).read_text())
    write_json(folder / RUN_RECORD, {**record, "finished": True})
    for path in list_checkpoints(folder):
        path.unlink()
