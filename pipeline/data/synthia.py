"""SYNTHIA (RAND-CITYSCAPES) reader: `RGB/NNNNNNN.png` with `GT/LABELS/NNNNNNN.png`.

Labels are 16-bit-per-channel colour PNGs: the first channel holds the SYNTHIA class id, the
second an instance id. The ids are SYNTHIA's own (the table in the set's README), not Cityscapes
label ids; `SYNTHIA_CLASSES` maps each to a Cityscapes class, whose train id comes from
cityscapesscripts. This is the mapping UDA work uses (e.g. DAFormer's
tools/convert_datasets/synthia.py): terrain, truck and train exist in the table but never occur
in the renders, which is why SYNTHIA -> Cityscapes is scored on 16 (or 13) classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import name2label

from pipeline.data.index import DatasetIndex, index_flat_pairs
from pipeline.data.labels import IGNORE_INDEX, LabelIds
from pipeline.io import read_first_channel_16bit

# (SYNTHIA id, SYNTHIA class, Cityscapes class or None). Lane markings and road works have no
# Cityscapes class and are ignored, as in the usual table; void and parking slots map to
# Cityscapes classes that are themselves ignored in training and evaluation.
SYNTHIA_CLASSES: tuple[tuple[int, str, str | None], ...] = (
    (0, "void", "unlabeled"),
    (1, "sky", "sky"),
    (2, "building", "building"),
    (3, "road", "road"),
    (4, "sidewalk", "sidewalk"),
    (5, "fence", "fence"),
    (6, "vegetation", "vegetation"),
    (7, "pole", "pole"),
    (8, "car", "car"),
    (9, "traffic sign", "traffic sign"),
    (10, "pedestrian", "person"),
    (11, "bicycle", "bicycle"),
    (12, "motorcycle", "motorcycle"),
    (13, "parking-slot", "parking"),
    (14, "road-work", None),
    (15, "traffic light", "traffic light"),
    (16, "terrain", "terrain"),
    (17, "rider", "rider"),
    (18, "truck", "truck"),
    (19, "bus", "bus"),
    (20, "train", "train"),
    (21, "wall", "wall"),
    (22, "lanemarking", None),
)


def _synthia_label_ids() -> LabelIds:
    # Covers every uint16 value, so any decoded id indexes it; unknown ids map to ignore.
    to_train_id = np.full(2**16, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(2**16, dtype=bool)
    for synthia_id, _, cityscapes_name in SYNTHIA_CLASSES:
        known[synthia_id] = True
        if cityscapes_name is not None:
            train_id = name2label[cityscapes_name].trainId
            if 0 <= train_id < IGNORE_INDEX:
                to_train_id[synthia_id] = train_id
    return LabelIds(read_first_channel_16bit, to_train_id, known)


SYNTHIA_LABEL_IDS = _synthia_label_ids()


def index_synthia(root: str | Path, list_file: str | Path | None = None) -> DatasetIndex:
    """Pair every `RGB/` image with its `GT/LABELS/` file by stem; a list file restricts it."""
    return index_flat_pairs(Path(root), "RGB", "GT/LABELS", "SYNTHIA", list_file)
