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

from pipeline.config import DataConfig, DatasetSpec
from pipeline.data.identity import SplitHasher, build_identity, file_sha256, write_identity
from pipeline.data.index import DatasetError, DatasetIndex, Sample, Skipped
from pipeline.data.label_map import label_ids_for
from pipeline.data.labels import CITYSCAPES_LABEL_IDS, CLASS_NAMES, LabelIds
from pipeline.data.split import SplitWriter
from pipeline.io import ImageReadError, read_rgb, resize_rgb, write_json
from pipeline.runtime import progress

# A frame whose pixels all lie within this many grey levels of each other is blank (GTA5 has a few
# all-black captures); it carries no content, and its label would teach the net nonsense.
BLANK_RANGE = 2

# A label with ids outside its table lists this many of them in the skip reason.
SHOWN_UNKNOWN_IDS = 5

# Label tables of the splits being prepared, by split; set before the worker processes fork,
# so a table (16M entries for a colour map) is not sent with every job.
_LABEL_IDS: dict[str, LabelIds] = {}


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
    # Pixels of each id outside the label map (kept frames: below data.max_unknown_share).
    unknown: dict[int, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Job:
    size: tuple[int, int]
    keep_native: bool
    split: str  # key of _LABEL_IDS
    max_unknown_share: float


def decode_sample(
    sample: Sample,
    size: tuple[int, int],
    keep_native: bool = False,
    label_ids: LabelIds = CITYSCAPES_LABEL_IDS,
    max_unknown_share: float = 0.0,
) -> Decoded:
    """Read one frame and its label, check them, resize to `size` (H, W). Defects -> skipped.

    `label_ids` says how the label file encodes classes (pipeline.data.label_map). A label
    whose ids outside that table cover more than `max_unknown_share` of it is a defect too: the
    file is not what its label map says it is; below that share they become ignore.
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
        if sum(unknown.values()) > max_unknown_share * ids.size:
            reason = _unknown_reason(unknown, label_ids)
            if max_unknown_share > 0:
                share = sum(unknown.values()) / ids.size
                reason += f" ({share:.1%} of the frame, above data.max_unknown_share)"
            return skip(reason, sample.label)
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
        unknown if sample.label is not None else {},
    )


def _unknown_reason(unknown: dict[int, int], label_ids: LabelIds) -> str:
    """E.g. 'label ids outside the label table: 200 (80 px), 250 (5 px)'."""
    items = list(unknown.items())
    shown = ", ".join(
        f"{label_ids.describe(value)} ({count} px)" for value, count in items[:SHOWN_UNKNOWN_IDS]
    )
    more = len(items) - SHOWN_UNKNOWN_IDS
    return f"label ids outside the label table: {shown}" + (f" and {more} more" if more > 0 else "")


def _decode_job(args: tuple[Sample, _Job]) -> Decoded:
    sample, job = args
    return decode_sample(
        sample, job.size, job.keep_native, _LABEL_IDS[job.split], job.max_unknown_share
    )


@dataclasses.dataclass
class SplitReport:
    found: int
    kept: int
    skipped: list[Skipped]
    class_pixels: list[int]  # per train id, at the working resolution
    has_labels: bool
    content: SplitHasher  # the kept frames' names and file hashes, for the dataset identity
    # Pixels of each id outside the label map in the kept frames (data.max_unknown_share > 0).
    unknown_ids: dict[str, int] = dataclasses.field(default_factory=dict)

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
            **({"unknown_id_pixels": self.unknown_ids} if self.unknown_ids else {}),
        }


def prepare_split(
    index: DatasetIndex,
    out_dir: str | Path,
    size: tuple[int, int],
    workers: int,
    keep_native: bool = False,
    desc: str = "prepare",
    label_ids: LabelIds = CITYSCAPES_LABEL_IDS,
    max_unknown_share: float = 0.0,
    native_size: tuple[int, int] | None = None,
) -> SplitReport:
    """Decode `index` with `workers` processes into a prepared split folder at `out_dir`.

    `label_ids` says how label files encode classes (pipeline.data.label_map); with
    `keep_native`, `native_size` (H, W) resizes the native labels to one size (nearest), for
    sets whose frames differ in size.
    """
    samples = index.samples
    skipped = list(index.skipped)
    city_of = {sample.name: sample.city for sample in samples}
    content = SplitHasher()
    unknown: dict[str, int] = {}
    _LABEL_IDS[desc] = label_ids
    jobs = [(sample, _Job(size, keep_native, desc, max_unknown_share)) for sample in samples]
    with SplitWriter(out_dir, len(samples), size) as writer:
        for decoded in _map(_decode_job, jobs, workers, desc):
            if decoded.skipped is not None:
                skipped.append(decoded.skipped)
                continue
            for value, pixels in decoded.unknown.items():
                key = label_ids.describe(value)
                unknown[key] = unknown.get(key, 0) + pixels
            native = decoded.label_native
            if native is not None and native_size is not None and native.shape != native_size:
                resized = Image.fromarray(native).resize(native_size[::-1], Image.NEAREST)
                native = np.asarray(resized, dtype=np.uint8)
            if native is not None and writer.native_shape not in (None, native.shape):
                skipped.append(
                    Skipped(
                        decoded.name,
                        f"label size {native.shape} differs from the split's "
                        f"{writer.native_shape} (data.val_label_size scores every label at one "
                        "size)",
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
        unknown_ids=unknown,
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


def index_split(spec: DatasetSpec, split: str, require_labels: bool, what: str) -> DatasetIndex:
    """Index one split of a dataset with the reader of its kind (`split`: a folder name)."""
    from pipeline.data.cityscapes import index_cityscapes
    from pipeline.data.folder import index_folder
    from pipeline.data.gta5 import index_gta5
    from pipeline.data.synthia import index_synthia

    if spec.kind == "gta5":
        return index_gta5(spec.root, spec.list_file)
    if spec.kind == "synthia":
        return index_synthia(spec.root, spec.list_file)
    if spec.kind == "cityscapes":
        return index_cityscapes(spec.root, split, require_labels=require_labels)
    return index_folder(
        spec.root,
        spec.images,
        spec.labels,
        split,
        spec.image_suffix or "",
        spec.label_suffix or "",
        require_labels=require_labels,
        list_file=spec.list_file,
        what=what,
    )


# Each prepared split: (its dataset side, which split folder, whether frames need labels).
SPLITS = {
    "sim": ("source", "train_split", True),
    "real_train": ("target", "train_split", False),
    "real_val": ("target", "val_split", True),
}


def prepare_all(data: DataConfig, workers: int, out_dir: str | Path, report_path: str | Path):
    """Prepare sim, real_train and real_val; write the data report; enforce `data.max_skipped`."""
    out_dir = Path(out_dir)
    specs = {"source": data.source, "target": data.target}
    reports: dict[str, SplitReport] = {}
    for split, (side, split_field, require_labels) in SPLITS.items():
        spec = specs[side]
        index = index_split(
            spec, getattr(spec, split_field), require_labels, f"data.{side} ({spec.kind})"
        )
        reports[split] = prepare_split(
            index,
            out_dir / split,
            data.size,
            workers,
            keep_native=split == "real_val",
            desc=split,
            label_ids=label_ids_for(spec.kind, spec.label_map, f"data.{side}.label_map"),
            max_unknown_share=data.max_unknown_share,
            native_size=data.val_label_size,
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
