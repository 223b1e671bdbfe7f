"""What a dataset reader returns (the frames it found and the files it had to pass over), and the
pairing of flat image and label folders that the GTA5 and SYNTHIA readers share."""

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
    # The sub-folder the reader found the image in (the city, for Cityscapes); None in flat layouts.
    city: str | None = None


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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def index_flat_pairs(
    root: Path, image_dir: str, label_dir: str, what: str, list_file: str | Path | None = None
) -> DatasetIndex:
    """Pair `root/image_dir/NAME.png` (or .jpg) with `root/label_dir/NAME.png` by file stem.

    A list file (one name a line; bare names, file names or paths under `image_dir`, relative to
    `root` unless absolute) restricts the set. Images without a label, a second image with the
    same stem and listed names that do not exist are skipped with their reason. `what` names the
    dataset in messages.
    """
    require_dir(root, what)
    images_path, labels_path = root / image_dir, root / label_dir
    for folder in (image_dir, label_dir):
        if not (root / folder).is_dir():
            raise DatasetError(
                f"{what} root {root} has no {folder}/ folder (expected {folder}/NAME.png)"
            )

    images: dict[str, Path] = {}
    skipped: list[Skipped] = []
    for path in sorted(images_path.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in images:
            skipped.append(Skipped(str(path), f"duplicate frame name {path.stem!r}"))
            continue
        images[path.stem] = path
    labels = {p.stem: p for p in sorted(labels_path.glob("*.png")) if p.is_file()}

    names = sorted(images)
    if list_file is not None:
        names = read_list(root, images_path, Path(list_file), images, skipped, what)

    samples = []
    for name in names:
        label = labels.get(name)
        if label is None:
            skipped.append(Skipped(str(images[name]), "image without label"))
            continue
        samples.append(Sample(name=name, image=images[name], label=label))
    if not samples:
        raise DatasetError(
            f"{what} root {root} holds no usable image/label pairs "
            f"({len(images)} images, {len(labels)} labels)"
        )
    return DatasetIndex(samples=samples, skipped=skipped)


def read_list(
    root: Path,
    image_dir: Path,
    list_file: Path,
    images: dict[str, Path],
    skipped: list[Skipped],
    what: str,
    posix: bool = False,
) -> list[str]:
    """The names a list file keeps, in its order; listed names without an image are skipped.
    With `posix`, names keep their sub-folders (`SUB/STEM`, the folder layout's names)."""
    if not list_file.is_absolute():
        list_file = root / list_file
    if not list_file.is_file():
        raise DatasetError(f"{what} list file {list_file} not found")
    names = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        # Entries may be bare names, file names or paths under the image folder; all stay in root.
        path = inside_root(image_dir, entry, f"{list_file}:{line_no}")
        name = Path(entry).stem
        if posix:
            name = Path(entry).as_posix()
            if Path(entry).suffix.lower() in (*IMAGE_SUFFIXES, ".webp"):
                name = Path(entry).with_suffix("").as_posix()
        if name not in images:
            skipped.append(Skipped(str(path), f"listed in {list_file.name} but not found"))
            continue
        names.append(name)
    return names
