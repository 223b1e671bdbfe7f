"""Model weights on disk: safetensors for every model file DVC tracks, reference .pth for import.

safetensors is the field's exchange format for weights: a JSON header and raw tensor bytes, so
reading a file unpickles nothing, tensors are memory-mapped instead of copied, and the same
weights always give the same bytes (tensors ordered by dtype and name, no timestamps). A
`torch.save` zip, by contrast, records the temp file's name and a per-save id, so DVC would see
a changed model where the weights are identical.

Training checkpoints (optimizer state, RNG states, under checkpoints/, not cached by DVC) stay
`torch.save` files, loaded with `weights_only=True` by pipeline.train.checkpoint.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pipeline.io import atomic_path

SUFFIX = ".safetensors"


class WeightsError(ValueError):
    """A weights file cannot be read as weights; the message names it."""


def save_weights(path: str | Path, state: Mapping[str, torch.Tensor]) -> None:
    """Write a state dict as safetensors, atomically.

    Tensors are copied to CPU and made contiguous; identical weights give identical bytes.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise WeightsError(f"{path}: model weights are written as {SUFFIX} files")
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file (memory-mapped) or a reference .pth/.pt file.

    Reference files (such as pytorch-CycleGAN-and-pix2pix's ``latest_net_G_A.pth``) are read
    with `weights_only=True`: a file carrying pickled objects other than tensors is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    if path.suffix == SUFFIX:
        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:
            raise WeightsError(f"{path}: not a readable safetensors file ({err})") from err
    loaded = load_weights_only(path, WeightsError, "weights file")
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise WeightsError(f"{path}: expected a state dict of tensors, got {type(loaded).__name__}")
    return dict(loaded)


def load_weights_only(path: str | Path, error: type[Exception], what: str) -> Any:
    """`torch.load(weights_only=True)` onto the CPU: tensors and plain values only. A pickled
    payload or an unreadable file raises `error` naming `path` (and `what` it should have been).
    train.checkpoint reads its checkpoints through this too."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(
            f"{path}: refused to load; it holds objects other than tensors and plain values "
            f"(possibly a pickled code payload). Only weights-only files are accepted."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise error(f"{path}: unreadable {what} ({err})") from err


# Keys named per kind in a mismatch message: enough to tell which net a file is for.
_KEYS_SHOWN = 5


def _some(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    return shown + (f", ... ({len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else "")


def state_mismatch(
    own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]
) -> str | None:
    """Why the state dict `given` (a file's) does not load into a module whose state is `own`,
    in one line (a few keys of each kind, and how many more), or None when every key and shape
    fits."""
    missing = [key for key in own if key not in given]
    unexpected = [key for key in given if key not in own]
    mismatched = [
        f"{key} {tuple(given[key].shape)} vs {tuple(own[key].shape)}"
        for key in own
        if key in given and given[key].shape != own[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_some(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch (file vs net): {_some(mismatched)}")
    return "; ".join(problems) or None
