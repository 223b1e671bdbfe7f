"""The 19 Cityscapes train classes, taken from cityscapesscripts' label table.

GTA5 labels use the same Cityscapes label ids, so one lookup converts both datasets; other
datasets describe their own ids with a `LabelIds` (SYNTHIA: pipeline/data/synthia.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS

from pipeline.io import read_label_ids

IGNORE_INDEX = 255
NUM_CLASSES = 19

_TRAIN_LABELS = sorted(
    (label for label in _CITYSCAPES_LABELS if 0 <= label.trainId < IGNORE_INDEX),
    key=lambda label: label.trainId,
)
assert [label.trainId for label in _TRAIN_LABELS] == list(range(NUM_CLASSES))

CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in _TRAIN_LABELS)
# (19, 3) uint8 RGB colours of the train classes, in train-id order.
CLASS_COLORS = np.array([label.color for label in _TRAIN_LABELS], dtype=np.uint8)
# Label ids of the table; anything else in a label file is outside it.
KNOWN_LABEL_IDS = frozenset(label.id for label in _CITYSCAPES_LABELS if label.id >= 0)

# (256,) uint8 lookup: Cityscapes label id -> train id, 255 for ignored and unknown ids.
ID_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _label in _CITYSCAPES_LABELS:
    if 0 <= _label.id < 256 and 0 <= _label.trainId < IGNORE_INDEX:
        ID_TO_TRAIN_ID[_label.id] = _label.trainId

# (256,) uint8 lookup: train id -> Cityscapes label id (ignore -> 0 'unlabeled'), for writing
# predictions in the format the official evaluator reads.
TRAIN_ID_TO_ID = np.zeros(256, dtype=np.uint8)
for _label in _TRAIN_LABELS:
    TRAIN_ID_TO_ID[_label.trainId] = _label.id

# (256, 3) uint8 lookup: train id -> colour, black for ignore.
TRAIN_ID_TO_COLOR = np.zeros((256, 3), dtype=np.uint8)
TRAIN_ID_TO_COLOR[:NUM_CLASSES] = CLASS_COLORS


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a uint8 Cityscapes label-id map to train ids (255 = ignore)."""
    return ID_TO_TRAIN_ID[label_ids]


# Classes each evaluation protocol averages (evaluate.classes). SYNTHIA labels no terrain, truck
# or train, so SYNTHIA -> Cityscapes is scored on the other 16; the 13-class variant most papers
# report beside it also drops wall, fence and pole.
_NOT_IN_16 = ("terrain", "truck", "train")
_NOT_IN_13 = (*_NOT_IN_16, "wall", "fence", "pole")
PROTOCOL_CLASSES: dict[int, tuple[str, ...]] = {
    19: CLASS_NAMES,
    16: tuple(name for name in CLASS_NAMES if name not in _NOT_IN_16),
    13: tuple(name for name in CLASS_NAMES if name not in _NOT_IN_13),
}


@dataclasses.dataclass(frozen=True)
class LabelIds:
    """How one dataset's label files encode classes: a decoder and an id -> train id table."""

    read: Callable[[Path], np.ndarray]  # label file -> (H, W) uint8 or uint16 ids
    to_train_id: np.ndarray  # (K,) uint8 lookup covering every value of the id dtype
    known: np.ndarray  # (K,) bool: ids in the dataset's label table
    # Ids are packed R << 16 | G << 8 | B colours (a label map of encoding "color").
    color: bool = False

    def train_ids(self, ids: np.ndarray) -> np.ndarray:
        """(H, W) ids -> (H, W) uint8 train ids, 255 for ignored and unknown ids."""
        return self.to_train_id[ids]

    def unknown_ids(self, ids: np.ndarray) -> dict[int, int]:
        """Each id of (H, W) `ids` outside the dataset's label table, ascending, with how many
        pixels carry it; empty when every id is in the table."""
        values, pixels = np.unique(ids[~self.known[ids]], return_counts=True)
        return dict(zip(values.tolist(), pixels.tolist()))

    def describe(self, value: int) -> str:
        """An id as its label file holds it: the number, or "R,G,B" for a colour."""
        if not self.color:
            return str(value)
        return f"{value >> 16},{(value >> 8) & 255},{value & 255}"


def _known_mask(ids: frozenset[int], size: int) -> np.ndarray:
    known = np.zeros(size, dtype=bool)
    known[list(ids)] = True
    return known


# Cityscapes and GTA5: 8-bit maps of Cityscapes label ids.
CITYSCAPES_LABEL_IDS = LabelIds(read_label_ids, ID_TO_TRAIN_ID, _known_mask(KNOWN_LABEL_IDS, 256))


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) train ids -> (H, W, 3) uint8 Cityscapes colours."""
    return TRAIN_ID_TO_COLOR[train_ids]
