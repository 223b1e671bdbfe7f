"""GTA5 and Cityscapes readers on fixture folders in the real layouts, defects included."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import DataConfig, DatasetSpec
from pipeline.data.cityscapes import index_cityscapes
from pipeline.data.gta5 import index_gta5
from pipeline.data.index import DatasetError, Sample
from pipeline.data.prepare import decode_sample, prepare_all, prepare_split
from pipeline.data.split import PreparedSplit
from tests.conftest import random_frame, write_image, write_palette_label


@pytest.fixture
def gta5_root(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "gta5"
    for i in range(1, 4):
        image, ids = random_frame(rng)
        write_image(root / "images" / f"{i:05d}.png", image)
        write_palette_label(root / "labels" / f"{i:05d}.png", ids)
    return root


def test_gta5_pairs_images_and_labels(gta5_root):
    index = index_gta5(gta5_root)
    assert [s.name for s in index.samples] == ["00001", "00002", "00003"]
    assert all(s.label.name == s.image.name for s in index.samples)
    assert index.skipped == []


def test_gta5_image_without_label_is_skipped_and_counted(gta5_root):
    image, _ = random_frame(np.random.default_rng(1))
    write_image(gta5_root / "images" / "00004.png", image)
    index = index_gta5(gta5_root)
    assert len(index.samples) == 3
    assert [(s.file.endswith("00004.png"), s.reason) for s in index.skipped] == [
        (True, "image without label")
    ]


def test_gta5_list_file_restricts_and_refuses_escapes(gta5_root):
    (gta5_root / "split.txt").write_text("00002.png\n00003\n00009\n")
    index = index_gta5(gta5_root, "split.txt")
    assert [s.name for s in index.samples] == ["00002", "00003"]
    assert any("00009" in s.file and "not found" in s.reason for s in index.skipped)
    (gta5_root / "evil.txt").write_text("../../etc/passwd\n")
    with pytest.raises(DatasetError, match="outside the dataset root"):
        index_gta5(gta5_root, "evil.txt")


def test_gta5_missing_and_empty_roots(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        index_gta5(tmp_path / "nope")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir()
    with pytest.raises(DatasetError, match="no usable image/label pairs"):
        index_gta5(tmp_path / "empty")
    (tmp_path / "nolabels" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no labels/ folder"):
        index_gta5(tmp_path / "nolabels")


def test_decode_defects_are_skipped_with_reasons(gta5_root, tmp_path):
    rng = np.random.default_rng(2)
    image, ids = random_frame(rng)
    # Size mismatch between image and label.
    write_palette_label(gta5_root / "labels" / "00002.png", ids[:-4])
    # Truncated image.
    data = (gta5_root / "images" / "00003.png").read_bytes()
    (gta5_root / "images" / "00003.png").write_bytes(data[: len(data) // 2])
    # Blank frame and a zero-byte label.
    write_image(gta5_root / "images" / "00005.png", np.zeros((24, 40, 3), np.uint8))
    write_palette_label(gta5_root / "labels" / "00005.png", ids)
    write_image(gta5_root / "images" / "00006.png", image)
    (gta5_root / "labels" / "00006.png").write_bytes(b"")
    reasons = {}
    for sample in index_gta5(gta5_root).samples:
        decoded = decode_sample(sample, (16, 32))
        reasons[sample.name] = decoded.skipped.reason if decoded.skipped else None
    assert reasons["00001"] is None
    assert "but label" in reasons["00002"]
    assert "unreadable" in reasons["00003"]
    assert "blank" in reasons["00005"]
    assert "empty file" in reasons["00006"]


def test_decode_converts_grey_rgba_and_16bit(tmp_path):
    rng = np.random.default_rng(3)
    _, ids = random_frame(rng)
    label = write_palette_label(tmp_path / "l.png", ids)
    grey = write_image(tmp_path / "g.png", rng.integers(0, 256, (24, 40), dtype=np.uint8))
    rgba = write_image(tmp_path / "a.png", rng.integers(0, 256, (24, 40, 4), dtype=np.uint8))
    wide = write_image(tmp_path / "w.png", rng.integers(0, 65535, (24, 40), dtype=np.uint16))
    for path in (grey, rgba, wide):
        decoded = decode_sample(Sample("x", path, label), (12, 20))
        assert decoded.skipped is None, decoded.skipped
        assert decoded.image.shape == (12, 20, 3) and decoded.image.dtype == np.uint8
        assert set(np.unique(decoded.label)) <= {0, 1, 2, 13, 255}


def test_a_label_with_ids_outside_the_table_skips_its_frame_and_is_listed(gta5_root, tmp_path):
    """The frame is left out of the split and the data report names the label file and its
    unknown ids; like any skipped file it counts toward data.max_skipped."""
    _, ids = random_frame(np.random.default_rng(4))
    ids[0, :3] = 250
    ids[1, :2] = 34  # 34 is one past the table's last id (33)
    bad = write_palette_label(gta5_root / "labels" / "00002.png", ids)
    city = tmp_path / "cs"
    _cityscapes(city, "train", "ulm", ["ulm_000000_000019"], with_labels=False)
    _cityscapes(city, "val", "ulm", ["ulm_000001_000019"])

    def run(max_skipped: int, out: str) -> dict:
        data = DataConfig(
            DatasetSpec("gta5", str(gta5_root)),
            DatasetSpec("cityscapes", str(city)),
            (12, 20),
            max_skipped,
            0.0,
            None,
        )
        prepare_all(data, 1, tmp_path / out, tmp_path / f"{out}.json")
        return json.loads((tmp_path / f"{out}.json").read_text())

    report = run(1, "prepared")
    assert report["skipped"] == [
        {
            "split": "sim",
            "file": str(bad),
            "reason": "label ids outside the label table: 34 (2 px), 250 (3 px)",
        }
    ]
    assert report["splits"]["sim"]["kept"] == 2 and report["splits"]["sim"]["skipped"] == 1
    assert PreparedSplit.open(tmp_path / "prepared" / "sim").names == ["00001", "00003"]
    with pytest.raises(DatasetError, match=r"00002\.png: label ids outside"):
        run(0, "strict")


def _cityscapes(root, split, city, stems, with_labels=True):
    rng = np.random.default_rng(len(stems))
    for stem in stems:
        image, ids = random_frame(rng)
        write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
        if with_labels:
            write_image(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)


def test_cityscapes_layout(tmp_path):
    root = tmp_path / "cs"
    _cityscapes(root, "val", "aachen", ["aachen_000000_000019", "aachen_000001_000019"])
    _cityscapes(root, "val", "bonn", ["bonn_000000_000019"])
    (root / "gtFine" / "val" / "bonn" / "bonn_000000_000019_gtFine_labelIds.png").unlink()
    index = index_cityscapes(root, "val", require_labels=True)
    assert [s.name for s in index.samples] == ["aachen_000000_000019", "aachen_000001_000019"]
    assert [s.city for s in index.samples] == ["aachen", "aachen"]
    assert index.skipped[0].reason == "image without gtFine labelIds"
    train = tmp_path / "cs2"
    _cityscapes(train, "train", "ulm", ["ulm_000000_000019"], with_labels=False)
    index = index_cityscapes(train, "train", require_labels=False)
    assert index.samples[0].label is None and index.skipped == []


def test_prepared_val_split_remembers_each_frames_city(tmp_path):
    root = tmp_path / "cs"
    _cityscapes(root, "val", "aachen", ["aachen_000000_000019", "aachen_000001_000019"])
    _cityscapes(root, "val", "bonn", ["bonn_000000_000019", "bonn_000001_000019"])
    # A frame filed under another city's folder keeps the folder it was found in.
    _cityscapes(root, "val", "bonn", ["aachen_000009_000019"])
    broken = root / "leftImg8bit" / "val" / "aachen" / "aachen_000001_000019_leftImg8bit.png"
    broken.write_bytes(b"")
    index = index_cityscapes(root, "val", require_labels=True)
    prepare_split(index, tmp_path / "val", (12, 20), workers=1, keep_native=True)
    val = PreparedSplit.open(tmp_path / "val")
    assert val.names == [
        "aachen_000000_000019",
        "aachen_000009_000019",
        "bonn_000000_000019",
        "bonn_000001_000019",
    ]
    assert val.cities == ["aachen", "bonn", "bonn", "bonn"]
    prepare_split(index, tmp_path / "train", (12, 20), workers=1)
    assert PreparedSplit.open(tmp_path / "train").cities is None


def test_cityscapes_missing_split_and_empty(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        index_cityscapes(tmp_path / "none", "train", require_labels=False)
    (tmp_path / "cs" / "leftImg8bit" / "train" / "ulm").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no usable frames"):
        index_cityscapes(tmp_path / "cs", "train", require_labels=False)
    with pytest.raises(DatasetError, match="no leftImg8bit/val"):
        index_cityscapes(tmp_path / "cs", "val", require_labels=True)
