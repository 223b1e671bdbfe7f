"""The datasets' settings (``data``), the generated demo sets' (``demo_data``) and
``prepare``'s."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Literal

from pipeline.config.base import RUNTIME, check


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where one dataset lives and which reader understands its layout.

    kind: gta5 and synthia (source only) and cityscapes read those sets' own layouts; folder
    reads any simulator's or fleet's frames from the `images` / `labels` folders
    (pipeline/data/folder.py; docs/data.md shows each supported dataset's settings).
    """

    kind: Literal["gta5", "synthia", "cityscapes", "folder"]
    root: str
    # Optional file of frame names (one per line) restricting the source set, e.g. a split.
    list_file: str | None = None
    # How the label files encode classes: a shipped map's name or a file under label_maps/
    # (pipeline/data/label_map.py); null: the kind's own table (gta5, cityscapes, synthia).
    label_map: str | None = None
    # kind folder only: the image and label folders under root ("{split}" becomes the split's
    # folder name) and the endings of file stems that are not part of the frame's name
    # (ACDC's "_rgb_anon" and "_gt_labelIds", say).
    images: str | None = None
    labels: str | None = None
    image_suffix: str | None = None
    label_suffix: str | None = None
    # The split folders kinds cityscapes and folder read: the source and the target's unlabelled
    # frames come from train_split, the target's scored frames from val_split.
    train_split: str = "train"
    val_split: str = "val"

    def validate(self, key: str, side: str) -> None:
        kinds = (
            ("gta5", "synthia", "cityscapes", "folder")
            if side == "source"
            else ("cityscapes", "folder")
        )
        check(self.kind in kinds, f"{key}.kind", self.kind, " or ".join(repr(k) for k in kinds))
        layout = ("images", "labels", "image_suffix", "label_suffix")
        if self.kind != "folder":
            for name in layout:
                value = getattr(self, name)
                check(value is None, f"{key}.{name}", value, "null (only kind 'folder' reads it)")
        else:
            for name in ("images", "labels"):
                value = getattr(self, name)
                check(value is not None, f"{key}.{name}", value, "a folder under root")
            check(
                self.label_map is not None,
                f"{key}.label_map",
                self.label_map,
                "a label map (a shipped map's name or a file under label_maps/) for kind 'folder'",
            )
            if side == "target":
                for name in ("images", "labels"):
                    value = getattr(self, name)
                    check(
                        "{split}" in value,
                        f"{key}.{name}",
                        value,
                        "a folder holding {split} (train and val frames must differ)",
                    )
        if self.kind in ("gta5", "synthia"):
            for name, default in (("train_split", "train"), ("val_split", "val")):
                value = getattr(self, name)
                check(
                    value == default,
                    f"{key}.{name}",
                    value,
                    f"{default!r} (kind {self.kind} has no splits)",
                )
        if side == "target":
            check(
                self.train_split != self.val_split,
                f"{key}.val_split",
                self.val_split,
                f"a split other than train_split ({self.train_split!r})",
            )
        if self.list_file is not None:
            check(
                side == "source" and self.kind != "cityscapes",
                f"{key}.list_file",
                self.list_file,
                "null (a frame list restricts a gta5, synthia or folder source)",
            )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: DatasetSpec
    target: DatasetSpec
    size: tuple[int, int]  # working resolution (H, W)
    # Stop when more than this many files are skipped as unreadable or inconsistent.
    max_skipped: int
    # A label whose ids outside its label map cover more than this share of the frame is
    # skipped; below it those pixels are ignored (and counted in reports/data.json).
    max_unknown_share: float
    # The size (H, W) val labels are scored at, resized to it (nearest) when frames differ in
    # size (Mapillary Vistas); null: each label file's own size, which must then agree.
    val_label_size: tuple[int, int] | None

    def __post_init__(self) -> None:
        self.source.validate("data.source", "source")
        self.target.validate("data.target", "target")
        check(
            all(s > 0 and s % 4 == 0 for s in self.size),
            "data.size",
            list(self.size),
            "[H, W], both positive multiples of 4 (the generators downsample twice)",
        )
        check(self.max_skipped >= 0, "data.max_skipped", self.max_skipped, "an integer >= 0")
        check(
            0.0 <= self.max_unknown_share < 1.0,
            "data.max_unknown_share",
            self.max_unknown_share,
            "a share from 0 (any unknown id skips the frame) to below 1",
        )
        if self.val_label_size is not None:
            check(
                all(s > 0 for s in self.val_label_size),
                "data.val_label_size",
                list(self.val_label_size),
                "[H, W], both positive, or null",
            )


@dataclasses.dataclass(frozen=True)
class DemoDataConfig:
    seed: int
    n_source: int
    n_target_train: int
    n_target_val: int
    size: tuple[int, int]  # native size the generator draws at (H, W)
    workers: int = field(metadata=RUNTIME)
    # Also write the sim frames in the SYNTHIA layout (data/demo/synthia), for
    # data.source.kind=synthia; off, the demo output is unchanged.
    synthia: bool

    def __post_init__(self) -> None:
        check(self.workers >= 1, "demo_data.workers", self.workers, "an integer >= 1")
        for name in ("n_source", "n_target_train", "n_target_val"):
            value = getattr(self, name)
            check(value > 0, f"demo_data.{name}", value, "an integer > 0")
        check(
            all(s >= 32 for s in self.size),
            "demo_data.size",
            list(self.size),
            "[H, W], both >= 32",
        )


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    workers: int = field(metadata=RUNTIME)

    def __post_init__(self) -> None:
        check(self.workers >= 1, "prepare.workers", self.workers, "an integer >= 1")
