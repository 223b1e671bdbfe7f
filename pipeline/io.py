"""File helpers shared by every stage: atomic writes and tolerant image decoding.

Every output goes to a temporary name in the destination folder and is renamed into place, so a
kill or a full disk never leaves a half-written file under a name that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# GTA5 frames are 1914x1052; anything this large is hostile or broken, not a street photo.
Image.MAX_IMAGE_PIXELS = 64_000_000


# Files an image folder may hold (sim2real-translate, sim2real-segment).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class OutputError(OSError):
    """An output could not be written; the message names the path."""


class InputError(ValueError):
    """An input folder cannot be used; the message names it."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it is renamed to `path`, else removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    tmp_path = Path(tmp)
    # mkstemp creates 0600; outputs should carry the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_orphan_temps(folder: str | Path) -> int:
    """Delete temp files a killed writer left in `folder` (never taken as outputs); count them.

    Call only where one process writes the folder, before writing: a SIGKILL cannot clean up.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    orphans = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for path in orphans:
        path.unlink(missing_ok=True)
    return len(orphans)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


class OutputClaimed(Exception):
    """A folder holds another producer's outputs: `marked` says whether a marker names their
    producer, `owner` what it names."""

    def __init__(self, marked: bool, owner: Any = None) -> None:
        super().__init__(owner)
        self.marked, self.owner = marked, owner


def claim_folder(
    marker: Path, key: str, producer: str, digest: str, outputs: Path, pattern: str
) -> None:
    """Mark the folder of `marker` as `producer`'s (identified by `digest`): the JSON `marker`
    holds {key: producer, key_sha256: digest}. Raise OutputClaimed when `marker` names another
    digest, or when there is no marker but `outputs` holds files matching `pattern`: a rerun
    would otherwise skip another producer's files as its own, done."""
    if marker.is_file():
        if read_json(marker).get(f"{key}_sha256") == digest:
            return
        raise OutputClaimed(True, read_json(marker).get(key))
    if outputs.is_dir() and any(outputs.glob(pattern)):
        raise OutputClaimed(False)
    write_json(marker, {key: producer, f"{key}_sha256": digest})


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write a (H, W, 3) or (H, W) uint8 array as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


class ImageReadError(ValueError):
    """A file could not be decoded as the image it should be; message says which and why."""


def _open(path: Path) -> Image.Image:
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file")
    try:
        image = Image.open(path)
        image.load()  # decode now so truncated files fail here, not later
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: unreadable image ({err})") from err
    return image


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode any PNG/JPEG into (H, W, 3) uint8 RGB: grayscale, RGBA and 16-bit are converted."""
    path = Path(path)
    image = _open(path)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: keep the top 8 bits instead of clipping at 255.
        wide = np.asarray(image, dtype=np.uint32)
        array = (wide >> 8).astype(np.uint8) if wide.max() > 255 else wide.astype(np.uint8)
        return np.repeat(array[..., None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 at `size` (h, w): PIL bilinear, antialiased when
    shrinking (reducing_gap=None: the exact filter, not a faster approximation)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    resized = Image.fromarray(image).resize((width, height), Image.BILINEAR, reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8)


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in `folder`, sorted; their names without suffix must differ,
    since outputs are named after them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in files]
    duplicate = next((s for s in stems if stems.count(s) > 1), None)
    if duplicate is not None:
        raise InputError(f"{folder}: several files are named {duplicate}.*")
    return files


def read_label_ids(path: str | Path) -> np.ndarray:
    """Decode a label map whose pixel values are ids (8-bit palette or grey) to (H, W) uint8."""
    path = Path(path)
    image = _open(path)
    if image.mode not in ("P", "L"):
        raise ImageReadError(
            f"{path}: label image has mode {image.mode}; expected an 8-bit id map (P or L)"
        )
    # For palette images np.asarray gives the palette indices, which are the label ids.
    return np.asarray(image, dtype=np.uint8)


def read_id_map(path: str | Path) -> np.ndarray:
    """Decode a single-channel id map, 8-bit (grey or palette indices) or 16-bit grey, to
    (H, W) uint8 or uint16."""
    path = Path(path)
    image = _open(path)
    if image.mode in ("P", "L"):
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        ids = np.asarray(image)
        if ids.min() < 0 or ids.max() >= 2**16:
            raise ImageReadError(f"{path}: ids outside 0-65535")
        return ids.astype(np.uint16)
    raise ImageReadError(
        f"{path}: label image has mode {image.mode}; the label map's encoding 'ids' expects a "
        f"single-channel id map (grey or palette; 'red' or 'color' read RGB labels)"
    )


def read_rgb_codes(path: str | Path) -> np.ndarray:
    """Decode a colour label map to (H, W) uint32 codes R << 16 | G << 8 | B."""
    rgb = read_rgb(path).astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def read_first_channel_16bit(path: str | Path) -> np.ndarray:
    """Decode the first channel of a PNG at its full bit depth: (H, W) uint16 (or uint8).

    SYNTHIA stores class ids in the first channel of 16-bit-per-channel colour PNGs. Pillow
    decodes such files to 8-bit RGB by keeping each sample's high byte, which turns every id
    below 256 into 0, so OpenCV (which keeps all 16 bits) decodes them here.
    """
    import cv2

    path = Path(path)
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file")
    # Returns None for truncated or non-image data instead of raising.
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageReadError(f"{path}: unreadable image (OpenCV could not decode it)")
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: {array.dtype} samples; expected 8- or 16-bit integers")
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] in (3, 4):
        # OpenCV orders colour channels BGR(A): the file's first channel (R) is index 2.
        return np.ascontiguousarray(array[..., 2])
    raise ImageReadError(f"{path}: image of shape {array.shape}; expected grey, RGB or RGBA")


def write_png_16bit(path: str | Path, array: np.ndarray) -> None:
    """Write a (H, W, 3) uint16 RGB array as a 16-bit-per-channel PNG, atomically.

    Pillow has no 16-bit colour mode, so OpenCV encodes it (from BGR order, hence the flip).
    """
    import cv2

    if array.dtype != np.uint16 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint16, got {array.shape} {array.dtype}")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array[..., ::-1]))
    if not ok:
        raise OutputError(f"cannot encode {path} as PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def save_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: not found") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
