"""Label maps: how a dataset's label files encode classes, read from a small YAML file.

A map names the encoding and every id of the dataset's own label table::

    # My fleet's annotation tool: one id per pixel, grey PNG.
    encoding: ids            # ids | red | color
    classes:
      0: ignore              # known, but no Cityscapes train class
      1: road                # one of the 19 train class names (pipeline.data.labels.CLASS_NAMES)
      7: car

- `ids`: a single-channel PNG (grey, 8 or 16 bit, or palette indices) holds the id;
- `red`: the id sits in the red channel of an RGB PNG (CARLA's semantic camera writes the tag
  there), at the file's bit depth;
- `color`: each class has its own RGB colour; keys are "R,G,B".

An id (or colour) the map does not list is unknown: prepare counts such pixels per id and
skips a frame where they cover more than `data.max_unknown_share` (the rest become ignore).

`data.source.label_map` / `data.target.label_map` name a shipped map by its file stem (the YAML
files in pipeline/data/label_maps/), or a YAML file under `label_maps/` at the repository root,
where a team keeps its own: both folders are dependencies of the prepare stage, so `dvc repro`
re-prepares a dataset when its map changes. null means the dataset kind's own table (Cityscapes
label ids for gta5 and cityscapes, SYNTHIA's table for synthia).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from pipeline.config import load_yaml
from pipeline.data.index import DatasetError
from pipeline.data.labels import CITYSCAPES_LABEL_IDS, CLASS_NAMES, IGNORE_INDEX, LabelIds
from pipeline.io import read_first_channel_16bit, read_id_map, read_rgb_codes

SHIPPED_DIR = Path(__file__).with_name("label_maps")
# A team's own maps: relative to the working directory, which is the repository root in every
# stage DVC runs.
USER_DIR = Path("label_maps")
IGNORE = "ignore"
ENCODINGS = ("ids", "red", "color")
_COLOR_KEY = re.compile(r"^\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*$")


class LabelMapError(DatasetError):
    """A label map is missing, malformed or names a class that does not exist; the message
    names the file and the entry."""


def shipped_maps() -> tuple[str, ...]:
    """The names of the maps that ship with sim2real, sorted."""
    return tuple(sorted(path.stem for path in SHIPPED_DIR.glob("*.yaml")))


def resolve_label_map(value: str, key: str) -> Path:
    """The file a `label_map` setting names: a shipped map's name, or a YAML file under
    label_maps/. `key` names the setting in the error."""
    if value in shipped_maps():
        return SHIPPED_DIR / f"{value}.yaml"
    path = Path(value)
    inside = (Path.cwd() / path).resolve().is_relative_to((Path.cwd() / USER_DIR).resolve())
    if not inside:
        raise LabelMapError(
            f"params.yaml: {key} = {value!r} is not allowed; expected a shipped map "
            f"({', '.join(shipped_maps())}) or a .yaml file under {USER_DIR}/ (the folder the "
            f"prepare stage depends on)"
        )
    if not path.is_file():
        raise LabelMapError(f"params.yaml: {key} = {value!r}: no such file")
    return path


@functools.cache
def load_label_map(path: str | Path) -> LabelIds:
    """Parse a label map file into the lookup tables prepare uses (cached per path)."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except OSError as err:
        raise LabelMapError(f"{path}: cannot read the label map ({err.strerror or err})") from err
    except Exception as err:  # yaml's errors carry the line; keep the message on one line
        reason = " ".join(str(err).split())
        raise LabelMapError(f"{path}: not a YAML label map ({reason})") from err
    if not isinstance(raw, dict) or set(raw) != {"encoding", "classes"}:
        raise LabelMapError(f"{path}: expected exactly the keys 'encoding' and 'classes'")
    encoding = raw["encoding"]
    if encoding not in ENCODINGS:
        raise LabelMapError(f"{path}: encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
    classes = raw["classes"]
    if not isinstance(classes, dict) or not classes:
        raise LabelMapError(f"{path}: 'classes' must map ids to class names")
    train_id_of = {name: index for index, name in enumerate(CLASS_NAMES)}
    size = 2**24 if encoding == "color" else 2**16
    to_train_id = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(size, dtype=bool)
    for key, name in classes.items():
        code = _code(key, encoding, path)
        if name != IGNORE and name not in train_id_of:
            raise LabelMapError(
                f"{path}: {key!r} maps to {name!r}, which is no train class; expected one of "
                f"{', '.join(CLASS_NAMES)} or {IGNORE}"
            )
        if known[code]:
            raise LabelMapError(f"{path}: {key!r} is listed twice")
        known[code] = True
        if name != IGNORE:
            to_train_id[code] = train_id_of[name]
    read = {"ids": read_id_map, "red": read_first_channel_16bit, "color": read_rgb_codes}
    return LabelIds(read[encoding], to_train_id, known, color=encoding == "color")


def _code(key: object, encoding: str, path: Path) -> int:
    if encoding == "color":
        match = _COLOR_KEY.match(str(key))
        channels = [int(group) for group in match.groups()] if match else []
        if not channels or max(channels) > 255:
            raise LabelMapError(f"{path}: colour key {key!r} is not 'R,G,B' with values 0-255")
        red, green, blue = channels
        return (red << 16) | (green << 8) | blue
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < 2**16:
        raise LabelMapError(f"{path}: id {key!r} is not an integer from 0 to 65535")
    return key


def label_ids_for(kind: str, label_map: str | None, key: str) -> LabelIds:
    """The tables a dataset's labels are read with: its label map, else its kind's own."""
    if label_map is not None:
        return load_label_map(resolve_label_map(label_map, key))
    if kind == "synthia":
        from pipeline.data.synthia import SYNTHIA_LABEL_IDS

        return SYNTHIA_LABEL_IDS
    if kind in ("gta5", "cityscapes"):
        return CITYSCAPES_LABEL_IDS
    raise LabelMapError(f"params.yaml: {key} is null; a {kind} dataset needs a label map")
