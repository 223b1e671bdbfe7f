"""The label table agrees with cityscapesscripts, for every id."""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import id2label, trainId2label

from pipeline.data import labels


def test_nineteen_train_classes_in_order():
    assert labels.NUM_CLASSES == 19
    assert labels.CLASS_NAMES[0] == "road" and labels.CLASS_NAMES[-1] == "bicycle"
    for train_id, name in enumerate(labels.CLASS_NAMES):
        assert trainId2label[train_id].name == name
        assert tuple(labels.CLASS_COLORS[train_id]) == trainId2label[train_id].color


def test_id_to_train_id_matches_cityscapesscripts_for_all_256_values():
    ids = np.arange(256, dtype=np.uint8)
    mapped = labels.to_train_ids(ids)
    for value in range(256):
        label = id2label.get(value)
        expected = label.trainId if label is not None and 0 <= label.trainId < 255 else 255
        assert mapped[value] == expected, value


def test_round_trip_train_id_to_label_id():
    train_ids = np.arange(19, dtype=np.uint8)
    assert np.array_equal(labels.to_train_ids(labels.TRAIN_ID_TO_ID[train_ids]), train_ids)


def test_unknown_ids_are_listed_with_their_pixels():
    ids = np.array([[7, 8, 34], [200, 0, 33]], dtype=np.uint8)
    assert labels.CITYSCAPES_LABEL_IDS.unknown_ids(ids) == {34: 1, 200: 1}
    assert labels.CITYSCAPES_LABEL_IDS.unknown_ids(ids[:1, :2]) == {}
    assert list(labels.to_train_ids(ids).ravel()) == [0, 1, 255, 255, 255, 18]
