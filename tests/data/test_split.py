"""The prepared-split writer and reader: what goes in comes out, a failed write leaves nothing."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.split import CITIES, PreparedSplit, SplitWriter


def _frames(count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 4, 6, 3), dtype=np.uint8)
    labels = rng.choice(np.array([0, 1, 18, 255], dtype=np.uint8), size=(count, 4, 6))
    return images, labels


def test_written_split_reads_back_cut_to_the_frames_added(tmp_path):
    images, labels = _frames(3)
    with SplitWriter(tmp_path, capacity=5, size=(4, 6)) as writer:
        writer.add("a", images[0], labels[0], labels[0][:2], city="ulm")
        writer.add("b", images[1], None, labels[1][:2], city="ulm")
        writer.add("c", images[2], labels[2], labels[2][:2], city=None)
    split = PreparedSplit.open(tmp_path, need_labels=True)
    assert split.names == ["a", "b", "c"]
    assert np.array_equal(split.images, images)
    assert np.array_equal(split.labels[[0, 2]], labels[[0, 2]])
    assert (split.labels[1] == 255).all()  # a frame without a label is all ignore
    assert np.array_equal(np.load(tmp_path / "labels_native.npy"), labels[:, :2])
    counts = split.class_pixels()
    assert counts[0, 0] == (labels[0] == 0).sum() and counts[2, 18] == (labels[2] == 18).sum()
    assert not counts[1].any() and counts.sum() == (labels[[0, 2]] != 255).sum()
    assert split.cities is None and not (tmp_path / CITIES).exists()  # "c" has no city


def test_a_failure_inside_the_block_leaves_no_split(tmp_path):
    images, labels = _frames(2)
    with (
        pytest.raises(RuntimeError, match="decoder died"),
        SplitWriter(tmp_path, capacity=2, size=(4, 6)) as writer,
    ):
        writer.add("a", images[0], labels[0])
        raise RuntimeError("decoder died")
    assert list(tmp_path.iterdir()) == []  # neither arrays nor their temps


def test_native_labels_come_with_every_frame_at_one_size(tmp_path):
    images, labels = _frames(2)
    with (
        pytest.raises(ValueError, match="differs from the split's"),
        SplitWriter(tmp_path, capacity=2, size=(4, 6)) as writer,
    ):
        writer.add("a", images[0], labels[0], labels[0])
        writer.add("b", images[1], labels[1], labels[1][:2])
    with (
        pytest.raises(ValueError, match="every frame of a split or none"),
        SplitWriter(tmp_path, capacity=2, size=(4, 6)) as writer,
    ):
        writer.add("a", images[0], labels[0], labels[0])
        writer.add("b", images[1], labels[1])
    assert list(tmp_path.iterdir()) == []
