"""The prepared-split format: its files, the writer the prepare stage fills and the reader every
later stage opens.

A prepared split is a folder:
    images.npy         (N, H, W, 3) uint8 at the working resolution, read with mmap_mode="r"
    labels.npy         (N, H, W) uint8 train ids (255 = ignore), nearest-resized
    labels_native.npy  (N, h, w) uint8 train ids at the label files' own size (val only: the
                       evaluator scores at label resolution, like cityscapesscripts)
    class_pixels.npy   (N, 19) int64 pixels of each train class per frame, at the working
                       resolution (labelled splits: rare-class sampling draws frames by class)
    cities.json        the sub-folder (city) each frame was found in, in array order (val only,
                       when the reader has sub-folders: the evaluator also scores per city)
    names.json         frame names in array order
A translated split (pipeline.translate) holds images.npy and names.json in this layout, so the
same reader opens it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from types import TracebackType

import numpy as np

from pipeline.data.index import DatasetError
from pipeline.data.labels import IGNORE_INDEX, NUM_CLASSES
from pipeline.io import atomic_path, read_json, save_npy, write_json

IMAGES = "images.npy"
LABELS = "labels.npy"
LABELS_NATIVE = "labels_native.npy"
CLASS_PIXELS = "class_pixels.npy"
CITIES = "cities.json"
NAMES = "names.json"


class SplitWriter:
    """Writes a prepared split folder at `root` one frame at a time, as a context manager.

    images.npy and labels.npy are filled in place through memmaps sized for `capacity` frames
    under temp names; on a clean exit they are cut to the frames added and renamed, then the
    small files are written. An exception inside the block leaves no array under its final name.
    Frames without a label get an all-ignore row; class_pixels.npy is written when any frame
    had a label, labels_native.npy when frames came with native labels (all of them, one size),
    cities.json when every frame came with a city.
    """

    def __init__(self, root: str | Path, capacity: int, size: tuple[int, int]) -> None:
        self.root = Path(root)
        self.capacity = capacity
        self.size = size
        self.names: list[str] = []
        self._cities: list[str | None] = []
        self._natives: list[np.ndarray] = []
        self._class_pixels: list[np.ndarray] = []  # (C,) per frame
        self._labelled = False
        self._stack = contextlib.ExitStack()
        self._images: np.memmap | None = None
        self._labels: np.memmap | None = None

    def __enter__(self) -> SplitWriter:
        height, width = self.size
        with contextlib.ExitStack() as stack:
            self._images_tmp = stack.enter_context(atomic_path(self.root / IMAGES))
            self._labels_tmp = stack.enter_context(atomic_path(self.root / LABELS))
            self._images = np.lib.format.open_memmap(
                self._images_tmp, mode="w+", dtype=np.uint8, shape=(self.capacity, height, width, 3)
            )
            self._labels = np.lib.format.open_memmap(
                self._labels_tmp, mode="w+", dtype=np.uint8, shape=(self.capacity, height, width)
            )
            # Opened: from here on __exit__ renames or removes the temps.
            self._stack = stack.pop_all()
        return self

    @property
    def native_shape(self) -> tuple[int, int] | None:
        """(h, w) of the native labels added so far; every later one must match it."""
        return self._natives[0].shape if self._natives else None

    def add(
        self,
        name: str,
        image: np.ndarray,
        label: np.ndarray | None = None,
        label_native: np.ndarray | None = None,
        city: str | None = None,
    ) -> None:
        """Append one frame: (H, W, 3) uint8 `image`, (H, W) uint8 train-id `label` at the
        working size, (h, w) uint8 `label_native` at the label file's size."""
        row = len(self.names)
        if row == self.capacity:
            raise ValueError(f"{self.root}: more than the {self.capacity} frames it was sized for")
        if (label_native is not None) != bool(self._natives) and row > 0:
            raise ValueError(f"{name}: native labels must come with every frame of a split or none")
        if label_native is not None and self._natives and label_native.shape != self.native_shape:
            raise ValueError(
                f"{name}: native label {label_native.shape} differs from the split's "
                f"{self.native_shape}"
            )
        self._images[row] = image
        self._labels[row] = label if label is not None else IGNORE_INDEX
        counts = np.zeros(NUM_CLASSES, dtype=np.int64)
        if label is not None:
            self._labelled = True
            counts = np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES]
        self._class_pixels.append(counts)
        if label_native is not None:
            self._natives.append(label_native)
        self._cities.append(city)
        self.names.append(name)

    @property
    def class_pixels(self) -> np.ndarray:
        """(N, 19) int64 pixels of each train class per frame added, at the working size."""
        if not self._class_pixels:
            return np.zeros((0, NUM_CLASSES), dtype=np.int64)
        return np.stack(self._class_pixels)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self._finish_arrays()
        except BaseException as err:
            exc_type, exc, traceback = type(err), err, err.__traceback__
            raise
        finally:
            # Unmapped before their files are renamed (clean exit) or removed (an exception).
            self._images = self._labels = None
            self._stack.__exit__(exc_type, exc, traceback)
        if exc_type is None:
            self._write_small_files()

    def _finish_arrays(self) -> None:
        self._images.flush()
        self._labels.flush()
        rows = len(self.names)
        if rows == self.capacity:
            return
        heads = [
            (np.array(self._images[:rows]), self._images_tmp),
            (np.array(self._labels[:rows]), self._labels_tmp),
        ]
        self._images = self._labels = None
        for head, path in heads:
            with open(path, "wb") as handle:
                np.save(handle, head)

    def _write_small_files(self) -> None:
        if self._natives:
            save_npy(self.root / LABELS_NATIVE, np.stack(self._natives))
        if self._labelled:
            save_npy(self.root / CLASS_PIXELS, self.class_pixels)
        if self.names and all(city is not None for city in self._cities):
            write_json(self.root / CITIES, self._cities)
        write_json(self.root / NAMES, self.names)


@dataclasses.dataclass(frozen=True)
class PreparedSplit:
    """A prepared split opened for reading: arrays are memory-mapped, not loaded."""

    root: Path
    names: list[str]
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray | None  # (N, H, W) uint8
    cities: list[str] | None = None  # each frame's sub-folder, where prepare kept them

    @classmethod
    def open(cls, root: str | Path, need_labels: bool = False) -> PreparedSplit:
        root = Path(root)
        if not (root / IMAGES).is_file():
            raise DatasetError(
                f"{root}: not a prepared split (no {IMAGES}); run the prepare stage first"
            )
        names = read_json(root / NAMES)
        images = np.load(root / IMAGES, mmap_mode="r")
        labels = None
        if (root / LABELS).is_file():
            labels = np.load(root / LABELS, mmap_mode="r")
        if need_labels and labels is None:
            raise DatasetError(f"{root}: split has no {LABELS}")
        if len(names) != len(images) or (labels is not None and len(labels) != len(images)):
            raise DatasetError(
                f"{root}: {NAMES} ({len(names)}), {IMAGES} ({len(images)}) and {LABELS} "
                f"({None if labels is None else len(labels)}) disagree in length"
            )
        cities = None
        if (root / CITIES).is_file():
            cities = read_json(root / CITIES)
            if len(cities) != len(names):
                raise DatasetError(
                    f"{root}: {CITIES} ({len(cities)}) and {NAMES} ({len(names)}) disagree "
                    f"in length"
                )
        return cls(root=root, names=names, images=images, labels=labels, cities=cities)

    def class_pixels(self) -> np.ndarray:
        """(N, 19) pixels of each train class per frame, as prepare counted them."""
        path = self.root / CLASS_PIXELS
        if not path.is_file():
            raise DatasetError(f"{path}: not found; rerun the prepare stage, which writes it")
        counts = np.load(path)
        if counts.shape != (len(self.names), NUM_CLASSES):
            raise DatasetError(f"{path}: shape {counts.shape}, expected ({len(self.names)}, 19)")
        return counts


def check_same_frames(images: PreparedSplit, labels: PreparedSplit) -> None:
    """The image split must hold exactly the label split's frames, in the same order."""
    if images.names == labels.names:
        return
    have = set(images.names)
    missing = [name for name in labels.names if name not in have]
    if missing:
        raise ValueError(
            f"{images.root} lacks {len(missing)} of the {len(labels.names)} frames of "
            f"{labels.root} (first missing: {missing[0]}); regenerate it from that split"
        )
    labelled = set(labels.names)
    extra = next((name for name in images.names if name not in labelled), None)
    if extra is not None:
        raise ValueError(f"{images.root} holds frame {extra}, which {labels.root} has no label for")
    raise ValueError(f"{images.root} and {labels.root} list the same frames in another order")
