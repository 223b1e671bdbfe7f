"""What a dataset reader returns: the frames it found and the files it had to pass over."""

from __future__ import annotations

import dataclasses
from pathlib import Path


class DatasetError(ValueError):
    """A dataset root is missing, empty or unusable; the message names the path."""


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str  # unique within the split; translated outputs reuse it as their file stem
    image: Path
    label: Path | None


@dataclasses.dataclass(frozen=True)
class Skipped:
    file: str
    reason: str


@dataclasses.dataclass
class DatasetIndex:
    samples: list[Sample]
    skipped: list[Skipped]


def inside_root(root: Path, relative: str, what: str) -> Path:
    """Resolve `relative` under `root`, refusing entries such as '../x' that escape it."""
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise DatasetError(f"{what}: entry {relative!r} points outside the dataset root {root}")
    return candidate


def require_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DatasetError(f"{what} root {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"{what} root {path} is not a folder")
