"""GTA5 ("Playing for Data") reader: `images/NNNNN.png` with `labels/NNNNN.png`.

Labels are 8-bit palette PNGs whose indices are Cityscapes label ids. The real set has known
defects (frames without labels, image/label size mismatches, a few blank or truncated files);
indexing records the ones visible from file names, decoding (in prepare) the rest.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.index import (
    DatasetError,
    DatasetIndex,
    Sample,
    Skipped,
    inside_root,
    require_dir,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def index_gta5(root: str | Path, list_file: str | Path | None = None) -> DatasetIndex:
    """Pair every image with its label by file stem; a list file (one name a line) restricts it."""
    root = Path(root)
    require_dir(root, "GTA5")
    image_dir, label_dir = root / "images", root / "labels"
    if not image_dir.is_dir():
        raise DatasetError(f"GTA5 root {root} has no images/ folder (expected images/NNNNN.png)")
    if not label_dir.is_dir():
        raise DatasetError(f"GTA5 root {root} has no labels/ folder (expected labels/NNNNN.png)")

    images: dict[str, Path] = {}
    skipped: list[Skipped] = []
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in images:
            skipped.append(Skipped(str(path), f"duplicate frame name {path.stem!r}"))
            continue
        images[path.stem] = path
    labels = {p.stem: p for p in sorted(label_dir.glob("*.png")) if p.is_file()}

    names = sorted(images)
    if list_file is not None:
        names = _read_list(root, Path(list_file), images, skipped)

    samples = []
    for name in names:
        label = labels.get(name)
        if label is None:
            skipped.append(Skipped(str(images[name]), "image without label"))
            continue
        samples.append(Sample(name=name, image=images[name], label=label))
    if not samples:
        raise DatasetError(
            f"GTA5 root {root} holds no usable image/label pairs "
            f"({len(images)} images, {len(labels)} labels)"
        )
    return DatasetIndex(samples=samples, skipped=skipped)


def _read_list(
    root: Path, list_file: Path, images: dict[str, Path], skipped: list[Skipped]
) -> list[str]:
    if not list_file.is_absolute():
        list_file = root / list_file
    if not list_file.is_file():
        raise DatasetError(f"GTA5 list file {list_file} not found")
    names = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        # Entries may be bare names, file names or paths under images/; all must stay in root.
        path = inside_root(root / "images", entry, f"{list_file}:{line_no}")
        name = Path(entry).stem
        if name not in images:
            skipped.append(Skipped(str(path), f"listed in {list_file.name} but not found"))
            continue
        names.append(name)
    return names
