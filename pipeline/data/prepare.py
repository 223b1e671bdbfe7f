"""Decode, check, resize and cache both datasets once, so training never touches a PNG.

Each split is indexed by its reader, decoded and checked frame by frame, converted to train ids
at the working resolution and written as a prepared split (the format: pipeline.data.split).
Per-class pixel counts and every skipped file with its reason go to the data report; the kept
frames' hashes go to the dataset identity file (pipeline.data.identity) beside the splits.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config import DataConfig
from pipeline.data.identity import SplitHasher, build_identity, file_sha256, write_identity
from pipeline.data.index import DatasetError, DatasetIndex, Sample, Skipped
from pipeline.data.labels import CITYSCAPES_LABEL_IDS, CLASS_NAMES, LabelIds
from pipeline.data.split import SplitWriter
from pipeline.data.synthia import SYNTHIA_LABEL_IDS
from pipeline.io import ImageReadError, read_rgb, resize_rgb, write_json
from pipeline.runtime import progress

# A frame whose pixels all lie within this many grey levels of each other is blank (GTA5 has a few
# all-black captures); it carries no content, and its label would teach the net nonsense.
BLANK_RANGE = 2

# A label with ids outside its table lists this many of them in the skip reason.
SHOWN_UNKNOWN_IDS = 5

# How each dataset kind (data.source.kind / data.target.kind) encodes its label files.
LABEL_IDS: dict[str, LabelIds] = {
    "gta5": CITYSCAPES_LABEL_IDS,
    "cityscapes": CITYSCAPES_LABEL_IDS,
    "synthia": SYNTHIA_LABEL_IDS,
}


def default_signal_handlers() -> None:
    """A process pool's initializer (here and in the demo generator): the worker takes SIGTERM
    as a plain process does and leaves Ctrl-C to the stage.

    Forked workers inherit the stage's handlers (stages/door.py turns SIGTERM into a clean stop
    of the stage); a pool ends its workers with SIGTERM and must see them die at once.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclasses.dataclass(frozen=True)
class Decoded:
    name: str
    image: np.ndarray | None  # (H, W, 3) uint8, working resolution
    label: np.ndarray | None  # (H, W) uint8 train ids, working resolution
    label_native: np.ndarray | None  # (h, w) uint8 train ids, label file resolution
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

    `label_ids` says how the label file encodes classes (see LABEL_IDS). A label holding an id
    outside that table is a defect too: the file is not what the dataset kind says it is.
    """

    def skip(reason: str, file: Path = sample.image) -> Decoded:
        return Decoded(sample.name, None, None, None, Skipped(str(file), reason))

    try:
        file_digests = file_sha256(sample.image)
        image = read_rgb(sample.image)
    except (ImageReadError, OSError) as err:
        return skip(str(err).split(": ", 1)[-1])
    if int(image.max()) - int(image.min()) <= BLANK_RANGE:
        return skip("blank frame (a single colour)")
    label_native = None
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
        unknown = label_ids.unknown_ids(ids)
        if unknown:
            return skip(_unknown_reason(unknown), sample.label)
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
        None,
        file_digests,
    )


def _unknown_reason(unknown: dict[int, int]) -> str:
    """E.g. 'label ids outside the label table: 200 (80 px), 250 (5 px)'."""
    items = list(unknown.items())
    shown = ", ".join(f"{value} ({pixels} px)" for value, pixels in items[:SHOWN_UNKNOWN_IDS])
    more = len(items) - SHOWN_UNKNOWN_IDS
    return f"label ids outside the label table: {shown}" + (f" and {more} more" if more > 0 else "")


def _decode_job(args: tuple[Sample, _Job]) -> Decoded:
    sample, job = args
    return decode_sample(sample, job.size, job.keep_native, LABEL_IDS[job.kind])


@dataclasses.dataclass
class SplitReport:
    found: int
    kept: int
    skipped: list[Skipped]
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
    samples = index.samples
    skipped = list(index.skipped)
    city_of = {sample.name: sample.city for sample in samples}
    content = SplitHasher()
    jobs = [(sample, _Job(size, keep_native, kind)) for sample in samples]
    with SplitWriter(out_dir, len(samples), size) as writer:
        for decoded in _map(_decode_job, jobs, workers, desc):
            if decoded.skipped is not None:
                skipped.append(decoded.skipped)
                continue
            native = decoded.label_native
            if native is not None and writer.native_shape not in (None, native.shape):
                skipped.append(
                    Skipped(
                        decoded.name,
                        f"label size {native.shape} differs from the split's {writer.native_shape}",
                    )
                )
                continue
            city = city_of[decoded.name] if keep_native else None
            writer.add(decoded.name, decoded.image, decoded.label, native, city)
            content.add(decoded.name, decoded.file_digests)
        if not writer.names:
            raise DatasetError(f"{desc}: every frame was skipped; see the data report")
    return SplitReport(
        found=len(samples) + len(index.skipped),
        kept=len(writer.names),
        skipped=skipped,
        class_pixels=writer.class_pixels.sum(axis=0).tolist(),
        has_labels=any(s.label is not None for s in samples),
        content=content,
    )


def _map(
    fn: Callable[[tuple[Sample, _Job]], Decoded],
    jobs: Sequence[tuple[Sample, _Job]],
    workers: int,
    desc: str,
):
    with progress(total=len(jobs), desc=desc, unit="img") as bar:
        if workers <= 1 or len(jobs) < 8:
            for job in jobs:
                yield fn(job)
                bar.update()
            return
        # Order is kept (imap), so the arrays follow the index's sorted order.
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=default_signal_handlers) as pool:
            for decoded in pool.imap(fn, jobs, chunksize=4):
                yield decoded
                bar.update()


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
