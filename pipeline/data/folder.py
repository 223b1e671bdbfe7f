"""The generic folder layout (data.*.kind = folder): any simulator's or fleet's frames.

Images live under `root/IMAGES` and labels under `root/LABELS`, where IMAGES and LABELS are
settings and may hold `{split}` (replaced by the split's folder name: ACDC's `rgb_anon/night/
{split}`, Mapillary's `{split}/images`). An image `IMAGES/SUB/STEM<image_suffix>.EXT` (EXT one
of png, jpg, jpeg, webp; sub-folders at any depth) pairs with the label
`LABELS/SUB/STEM<label_suffix>.png`; the frame's name is `SUB/STEM`, so frames in different
sub-folders may share a stem, and its group (per-group scores, as Cityscapes' cities) is SUB.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.index import (
    DatasetError,
    DatasetIndex,
    Sample,
    Skipped,
    inside_root,
    read_list,
    require_dir,
)

FOLDER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SPLIT = "{split}"


def split_folder(pattern: str, split: str) -> str:
    """A folder setting with `{split}` filled in."""
    return pattern.replace(SPLIT, split)


def _files(folder: Path, suffixes: tuple[str, ...], ending: str) -> dict[str, list[Path]]:
    """Frame name (relative path without extension and `ending`) -> its files, for every file
    below `folder` with one of `suffixes` whose stem ends with `ending`; hidden entries skipped."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in suffixes or not path.stem.endswith(ending):
            continue
        stem = path.stem[: len(path.stem) - len(ending)] if ending else path.stem
        if not stem:
            continue
        found.setdefault(relative.with_name(stem).as_posix(), []).append(path)
    return found


def index_folder(
    root: str | Path,
    images: str,
    labels: str | None,
    split: str,
    image_suffix: str = "",
    label_suffix: str = "",
    require_labels: bool = True,
    list_file: str | Path | None = None,
    what: str = "folder dataset",
) -> DatasetIndex:
    """Index one split of a folder-layout dataset (see the module doc).

    Without `require_labels` (the target's train split) images without a label are kept and
    `labels` may be None. Labels without an image, a second image of the same name and, with
    `require_labels`, images without a label are skipped with their reason. A list file (one
    name a line, as `SUB/STEM`) restricts the frames.
    """
    root = Path(root)
    require_dir(root, what)
    image_dir = root / split_folder(images, split)
    inside_root(root, split_folder(images, split), f"{what} images")
    if not image_dir.is_dir():
        raise DatasetError(f"{what} root {root} has no {split_folder(images, split)}/ folder")
    label_dir = None
    if labels is not None:
        label_dir = root / split_folder(labels, split)
        inside_root(root, split_folder(labels, split), f"{what} labels")
        if not label_dir.is_dir() and require_labels:
            raise DatasetError(f"{what} root {root} has no {split_folder(labels, split)}/ folder")

    skipped: list[Skipped] = []
    image_files = _files(image_dir, FOLDER_IMAGE_SUFFIXES, image_suffix)
    images_of: dict[str, Path] = {}
    for name, paths in image_files.items():
        images_of[name] = paths[0]
        skipped += [Skipped(str(p), f"duplicate frame name {name!r}") for p in paths[1:]]
    label_of: dict[str, Path] = {}
    if label_dir is not None and label_dir.is_dir():
        for name, paths in _files(label_dir, (".png",), label_suffix).items():
            label_of[name] = paths[0]
            if name not in images_of:
                skipped.append(Skipped(str(paths[0]), "label without image"))

    names = sorted(images_of)
    if list_file is not None:
        names = read_list(root, image_dir, Path(list_file), images_of, skipped, what, posix=True)
    samples = []
    for name in names:
        label = label_of.get(name)
        if label is None and require_labels:
            skipped.append(Skipped(str(images_of[name]), "image without label"))
            continue
        group = str(Path(name).parent.as_posix())
        samples.append(
            Sample(
                name=name, image=images_of[name], label=label, city=None if group == "." else group
            )
        )
    if not samples:
        wanted = f"*{image_suffix}.png|jpg|jpeg|webp" + (
            f" with labels *{label_suffix}.png" if require_labels else ""
        )
        raise DatasetError(
            f"{what} root {root} holds no usable frames under {split_folder(images, split)}/ "
            f"({wanted}; {len(images_of)} images, {len(label_of)} labels)"
        )
    return DatasetIndex(samples=samples, skipped=skipped)
