"""Decode, check, resize and cache both datasets once, so training never touches a PNG.

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
Per-class pixel counts and every skipped file with its reason go to the data report; the kept
frames' hashes go to the dataset identity file (pipeline.data.identity) beside the splits.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.config import DataConfig
from pipeline.data.identity import SplitHasher, build_identity, file_sha256, write_identity
from pipeline.data.index import DatasetError, DatasetIndex, Sample, Skipped
from pipeline.data.labels import (
    CITYSCAPES_LABEL_IDS,
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    LabelIds,
)
from pipeline.data.synthia import SYNTHIA_LABEL_IDS
from pipeline.io import (
    ImageReadError,
    atomic_path,
    read_json,
    read_rgb,
    resize_rgb,
    save_npy,
    write_json,
)

# A frame whose pixels all lie within this many grey levels of each other is blank (GTA5 has a few
# all-black captures); it carries no content, and its label would teach the net nonsense.
BLANK_RANGE = 2

# How each dataset kind (data.source.kind / data.target.kind) encodes its label files.
LABEL_IDS: dict[str, LabelIds] = {
    "gta5": CITYSCAPES_LABEL_IDS,
    "cityscapes": CITYSCAPES_LABEL_IDS,
    "synthia": SYNTHIA_LABEL_IDS,
}


@dataclasses.dataclass(frozen=True)
class Decoded:
    name: str
    image: np.ndarray | None  # (H, W, 3) uint8, working resolution
    label: np.ndarray | None  # (H, W) uint8 train ids, working resolution
    label_native: np.ndarray | None  # (h, w) uint8 train ids, label file resolution
    unknown_ids: int  # pixels whose label id is outside the dataset's label table
    skipped: Skipped | None
    file_digests: str = ""  # sha256 of the image file, then of the label file, for the identity


@dataclasses.dataclass(frozen=True)
class _Job:
    size: tuple[int, int]
    keep_native: bool
    kind: str  # key of LABEL_IDS; the table itself (64K entries for SYNTHIA) is not sent per job


def decode_sample(
    sample: Sample,
    size: tuple[int, int],
    keep_native: bool = False,
    label_ids: LabelIds = CITYSCAPES_LABEL_IDS,
) -> Decoded:
    """Read one frame and its label, check them, resize to `size` (H, W). Defects -> skipped.

    `label_ids` says how the label file encodes classes (see LABEL_IDS).
    """

    def skip(reason: str, file: Path = sample.image) -> Decoded:
        return Decoded(sample.name, None, None, None, 0, Skipped(str(file), reason))

    try:
        file_digests = file_sha256(sample.image)
        image = read_rgb(sample.image)
    except (ImageReadError, OSError) as err:
        return skip(str(err).split(": ", 1)[-1])
    if int(image.max()) - int(image.min()) <= BLANK_RANGE:
        return skip("blank frame (a single colour)")
    label_native = None
    unknown = 0
    if sample.label is not None:
        try:
            file_digests += file_sha256(sample.label)
            ids = label_ids.read(sample.label)
        except (ImageReadError, OSError) as err:
            return skip(str(err).split(": ", 1)[-1], sample.label)
        if ids.shape != image.shape[:2]:
            return skip(
                f"image is {image.shape[1]}x{image.shape[0]} but label {sample.label.name} is "
                f"{ids.shape[1]}x{ids.shape[0]}"
            )
        unknown = label_ids.unknown_pixels(ids)
        label_native = label_ids.train_ids(ids)
    height, width = size
    resized = resize_rgb(image, size)
    label = None
    if label_native is not None:
        label = np.asarray(
            Image.fromarray(label_native).resize((width, height), Image.NEAREST), dtype=np.uint8
        )
    return Decoded(
        sample.name,
        resized,
        label,
        label_native if keep_native else None,
        unknown,
        None,
        file_digests,
    )


def _decode_job(args: tuple[Sample, _Job]) -> Decoded:
    sample, job = args
    return decode_sample(sample, job.size, job.keep_native, LABEL_IDS[job.kind])


@dataclasses.dataclass
class SplitReport:
    found: int
    kept: int
    skipped: list[Skipped]
    unknown_label_pixels: int
    class_pixels: list[int]  # per train id, at the working resolution
    has_labels: bool
    content: SplitHasher  # the kept frames' names and file hashes, for the dataset identity

    def to_json(self) -> dict:
        total = max(1, sum(self.class_pixels))
        return {
            "found": self.found,
            "kept": self.kept,
            "skipped": len(self.skipped),
            "has_labels": self.has_labels,
            "unknown_label_pixels": self.unknown_label_pixels,
            "class_pixels": dict(zip(CLASS_NAMES, self.class_pixels)),
            "class_pixel_share": {
                name: round(count / total, 6) for name, count in zip(CLASS_NAMES, self.class_pixels)
            },
        }


def prepare_split(
    index: DatasetIndex,
    out_dir: str | Path,
    size: tuple[int, int],
    workers: int,
    keep_native: bool = False,
    desc: str = "prepare",
    kind: str = "cityscapes",
) -> SplitReport:
    """Decode `index` with `workers` processes into a prepared split folder at `out_dir`.

    `kind` is the dataset kind, which decides how label files are read (LABEL_IDS).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = index.samples
    height, width = size
    skipped = list(index.skipped)
    names: list[str] = []
    city_of = {sample.name: sample.city for sample in samples}
    frame_class_pixels: list[np.ndarray] = []  # (C,) per kept frame
    unknown = 0
    has_labels = any(s.label is not None for s in samples)
    native_shape: tuple[int, int] | None = None
    content = SplitHasher()

    # Arrays are filled in place through memmaps at temp names and renamed when complete.
    with (
        atomic_path(out_dir / "images.npy") as images_tmp,
        atomic_path(out_dir / "labels.npy") as labels_tmp,
    ):
        images = np.lib.format.open_memmap(
            images_tmp, mode="w+", dtype=np.uint8, shape=(len(samples), height, width, 3)
        )
        labels = np.lib.format.open_memmap(
            labels_tmp, mode="w+", dtype=np.uint8, shape=(len(samples), height, width)
        )
        natives: list[np.ndarray] = []
        jobs = [(sample, _Job(size, keep_native, kind)) for sample in samples]
        for decoded in _map(_decode_job, jobs, workers, desc):
            if decoded.skipped is not None:
                skipped.append(decoded.skipped)
                continue
            if keep_native and decoded.label_native is not None:
                if native_shape is None:
                    native_shape = decoded.label_native.shape
                if decoded.label_native.shape != native_shape:
                    skipped.append(
                        Skipped(
                            decoded.name,
                            f"label size {decoded.label_native.shape} differs from the split's "
                            f"{native_shape}",
                        )
                    )
                    continue
                natives.append(decoded.label_native)
            row = len(names)
            images[row] = decoded.image
            labels[row] = decoded.label if decoded.label is not None else IGNORE_INDEX
            counts = np.zeros(NUM_CLASSES, dtype=np.int64)
            if decoded.label is not None:
                counts = np.bincount(decoded.label.ravel(), minlength=256)[:NUM_CLASSES]
            frame_class_pixels.append(counts)
            unknown += decoded.unknown_ids
            names.append(decoded.name)
            content.add(decoded.name, decoded.file_digests)
        images.flush()
        labels.flush()
        kept = len(names)
        if kept < len(samples):
            images = _truncate(images, kept, images_tmp)
            labels = _truncate(labels, kept, labels_tmp)
        del images, labels
        if kept == 0:
            raise DatasetError(f"{desc}: every frame was skipped; see the data report")
    if keep_native and natives:
        save_npy(out_dir / "labels_native.npy", np.stack(natives))
    class_pixels = np.stack(frame_class_pixels)  # (N, C)
    if has_labels:
        save_npy(out_dir / "class_pixels.npy", class_pixels)
    cities = [city_of[name] for name in names]
    if keep_native and all(city is not None for city in cities):
        write_json(out_dir / "cities.json", cities)
    write_json(out_dir / "names.json", names)
    return SplitReport(
        found=len(samples) + len(index.skipped),
        kept=kept,
        skipped=skipped,
        unknown_label_pixels=unknown,
        class_pixels=class_pixels.sum(axis=0).tolist(),
        has_labels=has_labels,
        content=content,
    )


def _truncate(array: np.memmap, rows: int, path: Path) -> np.ndarray:
    """Rewrite the first `rows` rows of a memmapped .npy at `path` as the whole file."""
    head = np.array(array[:rows])
    del array
    with open(path, "wb") as handle:
        np.save(handle, head)
    return head


def _map(
    fn: Callable[[tuple[Sample, _Job]], Decoded],
    jobs: Sequence[tuple[Sample, _Job]],
    workers: int,
    desc: str,
):
    progress = tqdm(total=len(jobs), desc=desc, unit="img", dynamic_ncols=True)
    try:
        if workers <= 1 or len(jobs) < 8:
            for job in jobs:
                yield fn(job)
                progress.update()
            return
        # Order is kept (imap), so the arrays follow the index's sorted order.
        context = multiprocessing.get_context("fork")
        with context.Pool(workers) as pool:
            for decoded in pool.imap(fn, jobs, chunksize=4):
                yield decoded
                progress.update()
    finally:
        progress.close()


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
        if not (root / "images.npy").is_file():
            raise DatasetError(
                f"{root}: not a prepared split (no images.npy); run the prepare stage first"
            )
        names = read_json(root / "names.json")
        images = np.load(root / "images.npy", mmap_mode="r")
        labels = None
        if (root / "labels.npy").is_file():
            labels = np.load(root / "labels.npy", mmap_mode="r")
        if need_labels and labels is None:
            raise DatasetError(f"{root}: split has no labels.npy")
        if len(names) != len(images) or (labels is not None and len(labels) != len(images)):
            raise DatasetError(
                f"{root}: names.json ({len(names)}), images.npy ({len(images)}) and labels.npy "
                f"({None if labels is None else len(labels)}) disagree in length"
            )
        cities = None
        if (root / "cities.json").is_file():
            cities = read_json(root / "cities.json")
            if len(cities) != len(names):
                raise DatasetError(
                    f"{root}: cities.json ({len(cities)}) and names.json ({len(names)}) disagree "
                    f"in length"
                )
        return cls(root=root, names=names, images=images, labels=labels, cities=cities)

    def class_pixels(self) -> np.ndarray:
        """(N, 19) pixels of each train class per frame, as prepare counted them."""
        path = self.root / "class_pixels.npy"
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


def write_data_report(path: str | Path, reports: dict[str, SplitReport], size: tuple[int, int]):
    skipped = [
        {"split": split, "file": item.file, "reason": item.reason}
        for split, report in reports.items()
        for item in report.skipped
    ]
    write_json(
        path,
        {
            "size": list(size),
            "splits": {split: report.to_json() for split, report in reports.items()},
            "skipped": skipped,
        },
    )


# Prepared split folder names under the prepare stage's output.
SPLITS = ("sim", "real_train", "real_val")


def prepare_all(data: DataConfig, workers: int, out_dir: str | Path, report_path: str | Path):
    """Prepare sim, real_train and real_val; write the data report; enforce `data.max_skipped`."""
    from pipeline.data.cityscapes import index_cityscapes
    from pipeline.data.gta5 import index_gta5
    from pipeline.data.synthia import index_synthia

    source_reader = {"gta5": index_gta5, "synthia": index_synthia}[data.source.kind]
    out_dir = Path(out_dir)
    indexes = {
        "sim": source_reader(data.source.root, data.source.list_file),
        "real_train": index_cityscapes(data.target.root, "train", require_labels=False),
        "real_val": index_cityscapes(data.target.root, "val", require_labels=True),
    }
    kinds = {"sim": data.source.kind, "real_train": data.target.kind, "real_val": data.target.kind}
    reports: dict[str, SplitReport] = {}
    for split, index in indexes.items():
        reports[split] = prepare_split(
            index,
            out_dir / split,
            data.size,
            workers,
            keep_native=split == "real_val",
            desc=split,
            kind=kinds[split],
        )
    write_data_report(report_path, reports, data.size)
    write_identity(out_dir, build_identity(data, {s: r.content for s, r in reports.items()}))
    skipped = sum(len(r.skipped) for r in reports.values())
    for split, report in reports.items():
        print(
            f"{split}: kept {report.kept} of {report.found} frames, skipped {len(report.skipped)}"
        )
    if skipped > data.max_skipped:
        first = next(s for r in reports.values() for s in r.skipped)
        raise DatasetError(
            f"{skipped} files skipped, more than data.max_skipped={data.max_skipped} "
            f"(first: {first.file}: {first.reason}); see {report_path}"
        )
