"""Which data a result came from: the identity file the prepare stage writes.

prepare reads every frame it keeps, so it also hashes them, and writes
`<prepared>/dataset.json`: both roots and readers, the working size, each split's frame count and
the sha256 of its frames (names and the bytes of each image and label file, in order), and one
digest over the splits. Only content enters the digest: the same files under another root give
the same digest, a regenerated or edited set another one.

Later stages find the file beside the prepared split they read (`identity_of_split`), and use it
to tag MLflow runs, to filter `python -m pipeline.compare`, and to title figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import DataConfig
from pipeline.data.label_map import resolve_label_map
from pipeline.io import read_json, write_json

IDENTITY_FILE = "dataset.json"
SHORT_DIGEST = 12


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SplitHasher:
    """sha256 over a split's frames in order: each frame's name and its files' sha256."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.frames = 0

    def add(self, name: str, file_digests: str) -> None:
        self._digest.update(f"{name}\0{file_digests}\n".encode())
        self.frames += 1

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def dataset_name(source_root: str, target_root: str) -> str:
    """A readable name from the two roots: the folder they share when they are siblings
    (data/demo/gta5 + data/demo/cityscapes -> "demo"), else both folder names ("gta5+cityscapes").
    """
    source, target = Path(os.path.abspath(source_root)), Path(os.path.abspath(target_root))
    if source.parent == target.parent and source.parent.name:
        return source.parent.name
    return f"{source.name}+{target.name}"


@dataclasses.dataclass(frozen=True)
class DatasetIdentity:
    name: str
    source: dict[str, Any]  # kind, root, list_file
    target: dict[str, Any]  # kind, root
    size: tuple[int, int]  # working resolution (H, W)
    splits: dict[str, dict[str, Any]]  # split -> {"frames": int, "sha256": str}
    digest: str  # sha256 over the splits' names and hashes

    @property
    def short_digest(self) -> str:
        return self.digest[:SHORT_DIGEST]

    @property
    def label(self) -> str:
        """ "demo (1a2b3c4d5e6f)": what figures and tables print."""
        return f"{self.name} ({self.short_digest})"

    def root_of(self, split: str) -> str:
        """The raw data root a prepared split came from (sim: source, real_*: target)."""
        return self.source["root"] if split == "sim" else self.target["root"]

    def is_under(self, folder: str | Path) -> bool:
        """Whether both roots lie inside `folder` (the demo data's folder, say)."""
        folder = Path(os.path.abspath(folder))
        return all(
            Path(os.path.abspath(spec["root"])).is_relative_to(folder)
            for spec in (self.source, self.target)
        )

    def params(self) -> dict[str, Any]:
        """Flat MLflow params: roots, size, frames per split, digest."""
        params: dict[str, Any] = {
            "data.source.kind": self.source["kind"],
            "data.source.root": self.source["root"],
            "data.target.kind": self.target["kind"],
            "data.target.root": self.target["root"],
            "data.size": f"{self.size[0]}x{self.size[1]}",
            "data.digest": self.digest,
        }
        for split, info in self.splits.items():
            params[f"data.frames.{split}"] = info["frames"]
        return params

    def tags(self) -> dict[str, str]:
        """What `compare --dataset` filters on: the name and the short digest."""
        return {"dataset": self.name, "dataset_digest": self.short_digest}

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "size": list(self.size)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DatasetIdentity:
        fields = {f.name for f in dataclasses.fields(cls)}
        known = {key: value for key, value in data.items() if key in fields}
        return cls(**{**known, "size": tuple(data["size"])})


def build_identity(data: DataConfig, splits: Mapping[str, SplitHasher]) -> DatasetIdentity:
    summary = {name: {"frames": h.frames, "sha256": h.hexdigest()} for name, h in splits.items()}
    digest = hashlib.sha256()
    for name in sorted(summary):
        digest.update(f"{name}\0{summary[name]['sha256']}\n".encode())
    sides = {"source": dataclasses.asdict(data.source), "target": dataclasses.asdict(data.target)}
    for side, spec in sides.items():
        # A label map decides what the label files mean, so its bytes are content too; without
        # one (the kind's own table, fixed by the code) the digest is the frames' alone.
        if spec["label_map"] is not None:
            path = resolve_label_map(spec["label_map"], f"data.{side}.label_map")
            spec["label_map_sha256"] = file_sha256(path)
            digest.update(f"label_map.{side}\0{spec['label_map_sha256']}\n".encode())
    return DatasetIdentity(
        name=dataset_name(data.source.root, data.target.root),
        source=sides["source"],
        target=sides["target"],
        size=tuple(data.size),
        splits=summary,
        digest=digest.hexdigest(),
    )


def write_identity(prepared_dir: str | Path, identity: DatasetIdentity) -> None:
    write_json(Path(prepared_dir) / IDENTITY_FILE, identity.to_json())


def read_identity(prepared_dir: str | Path) -> DatasetIdentity:
    """The identity of the prepared dataset in `prepared_dir`; a missing file is named."""
    path = Path(prepared_dir) / IDENTITY_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the prepare stage writes it; rerun `dvc repro prepare`"
        )
    return DatasetIdentity.from_json(read_json(path))


def identity_of_split(split_root: str | Path) -> tuple[DatasetIdentity, str] | None:
    """The identity of the prepared dataset `split_root` belongs to, with the split's name;
    None for a folder that is not a prepared split (a translated split, say)."""
    split_root = Path(split_root)
    if not (split_root.parent / IDENTITY_FILE).is_file():
        return None
    identity = read_identity(split_root.parent)
    if split_root.name not in identity.splits:
        return None
    return identity, split_root.name
