"""Cityscapes reader.

Layout: `leftImg8bit/SPLIT/CITY/CITY_SEQ_FRAME_leftImg8bit.png` with labels at
`gtFine/SPLIT/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png` (pixel values are Cityscapes label ids).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.index import DatasetError, DatasetIndex, Sample, Skipped, require_dir

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def index_cityscapes(root: str | Path, split: str, require_labels: bool) -> DatasetIndex:
    """Index one split. Without `require_labels`, images whose labels are missing are kept."""
    root = Path(root)
    require_dir(root, "Cityscapes")
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DatasetError(f"Cityscapes root {root} has no leftImg8bit/{split}/ folder")
    label_dir = root / "gtFine" / split

    samples: list[Sample] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    for image in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        name = image.name[: -len(IMAGE_SUFFIX)]  # CITY_SEQ_FRAME, unique across cities
        if name in seen:
            skipped.append(Skipped(str(image), f"duplicate frame name {name!r}"))
            continue
        seen.add(name)
        label = label_dir / image.parent.name / f"{name}{LABEL_SUFFIX}"
        if not label.is_file():
            if require_labels:
                skipped.append(Skipped(str(image), "image without gtFine labelIds"))
                continue
            label = None
        samples.append(Sample(name=name, image=image, label=label, city=image.parent.name))
    if not samples:
        raise DatasetError(
            f"Cityscapes root {root} holds no usable frames under leftImg8bit/{split}/CITY/"
            f"*{IMAGE_SUFFIX}"
        )
    return DatasetIndex(samples=samples, skipped=skipped)
