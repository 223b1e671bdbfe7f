"""SYNTHIA reader on a fixture in the real layout: genuine 16-bit label PNGs, every defect kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.config import DataConfig, DatasetSpec
from pipeline.data.demo import DemoSpec, generate
from pipeline.data.index import DatasetError, Sample
from pipeline.data.labels import to_train_ids
from pipeline.data.prepare import decode_sample, prepare_all, prepare_split
from pipeline.data.split import PreparedSplit
from pipeline.data.synthia import SYNTHIA_LABEL_IDS, index_synthia
from pipeline.io import read_first_channel_16bit
from tests.conftest import write_image, write_png16

# The SYNTHIA -> Cityscapes train id table UDA work uses (DAFormer's convert_datasets/synthia.py),
# written out by hand: SYNTHIA id -> train id. Ids 0 (void), 13 (parking slot), 14 (road work)
# and 22 (lane marking) are ignored.
EXPECTED_TRAIN_ID = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9,
    1: 10, 10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}  # fmt: skip


def _label(ids: np.ndarray, instance: int = 1234) -> np.ndarray:
    """(H, W, 3) uint16 SYNTHIA label: class ids, an instance channel, a constant third one."""
    channels = np.zeros((*ids.shape, 3), dtype=np.uint16)
    channels[..., 0] = ids
    channels[..., 1] = instance  # above 255, so a reader that took the wrong channel sees it
    channels[..., 2] = 7
    return channels


def _frame(rng: np.random.Generator, h: int = 24, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # SYNTHIA ids of road, sidewalk, building, car, lane marking and void.
    ids = rng.choice(np.array([3, 4, 2, 8, 22, 0], dtype=np.uint16), size=(h, w))
    return image, ids


@pytest.fixture
def synthia_root(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "synthia"
    for i in range(3):
        image, ids = _frame(rng)
        write_image(root / "RGB" / f"{i:07d}.png", image)
        write_png16(root / "GT" / "LABELS" / f"{i:07d}.png", _label(ids))
    return root


def test_pillow_loses_synthia_ids_and_the_reader_keeps_them(tmp_path):
    ids = np.arange(24, dtype=np.uint16).reshape(4, 6) % 23
    ids[0, 0] = 300  # an id above 255 (unknown to the table) must survive too
    path = write_png16(tmp_path / "label.png", _label(ids))
    # The trap: Pillow keeps each 16-bit sample's high byte, so ids 0..255 all read as 0.
    pillow = np.asarray(Image.open(path))
    assert pillow.dtype == np.uint8 and not pillow[..., 0][ids < 256].any()
    decoded = read_first_channel_16bit(path)
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, ids)
    # RGBA and grey 16-bit files carry the ids in their first channel too.
    rgba = np.dstack([_label(ids), np.full(ids.shape, 65535, np.uint16)])
    assert np.array_equal(read_first_channel_16bit(write_png16(tmp_path / "a.png", rgba)), ids)
    assert np.array_equal(read_first_channel_16bit(write_png16(tmp_path / "g.png", ids)), ids)


def test_label_table_is_the_usual_synthia_to_cityscapes_mapping():
    expected = np.full(2**16, 255, dtype=np.uint8)
    expected[list(EXPECTED_TRAIN_ID)] = list(EXPECTED_TRAIN_ID.values())
    assert np.array_equal(SYNTHIA_LABEL_IDS.train_ids(np.arange(2**16, dtype=np.uint16)), expected)
    # Ids 0..22 are SYNTHIA's table; anything else is unknown.
    ids = np.array([0, 13, 22, 23, 300, 65535, 300], dtype=np.uint16)
    assert SYNTHIA_LABEL_IDS.unknown_ids(ids) == {23: 1, 300: 2, 65535: 1}


def test_index_pairs_by_stem(synthia_root):
    index = index_synthia(synthia_root)
    assert [s.name for s in index.samples] == ["0000000", "0000001", "0000002"]
    for sample in index.samples:
        assert sample.label == synthia_root / "GT" / "LABELS" / sample.image.name
    assert all(s.city is None for s in index.samples)
    assert index.skipped == []


def test_missing_labels_duplicates_and_list_files(synthia_root):
    image, _ = _frame(np.random.default_rng(1))
    write_image(synthia_root / "RGB" / "0000003.png", image)  # no label
    write_image(synthia_root / "RGB" / "0000001.jpg", image)  # second image named 0000001
    index = index_synthia(synthia_root)
    assert [s.name for s in index.samples] == ["0000000", "0000001", "0000002"]
    reasons = sorted((s.file.rsplit("/", 1)[-1], s.reason) for s in index.skipped)
    assert reasons == [
        ("0000001.png", "duplicate frame name '0000001'"),
        ("0000003.png", "image without label"),
    ]
    (synthia_root / "split.txt").write_text("0000002\n0000000.png\n0000009\n")
    listed = index_synthia(synthia_root, "split.txt")
    assert [s.name for s in listed.samples] == ["0000002", "0000000"]  # in the list's order
    assert any("0000009" in s.file and "not found" in s.reason for s in listed.skipped)
    (synthia_root / "evil.txt").write_text("../../etc/passwd\n")
    with pytest.raises(DatasetError, match="outside the dataset root"):
        index_synthia(synthia_root, "evil.txt")


def test_missing_and_empty_roots(tmp_path):
    with pytest.raises(DatasetError, match=r"SYNTHIA root .* does not exist"):
        index_synthia(tmp_path / "nope")
    (tmp_path / "nolabels" / "RGB").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no GT/LABELS/ folder"):
        index_synthia(tmp_path / "nolabels")
    (tmp_path / "empty" / "RGB").mkdir(parents=True)
    (tmp_path / "empty" / "GT" / "LABELS").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"SYNTHIA root .* no usable image/label pairs"):
        index_synthia(tmp_path / "empty")


def test_decode_maps_ids_and_skips_defects(synthia_root):
    rng = np.random.default_rng(2)
    labels, images = synthia_root / "GT" / "LABELS", synthia_root / "RGB"
    image, ids = _frame(rng)
    write_png16(labels / "0000000.png", _label(ids))
    write_png16(labels / "0000001.png", _label(ids[:-4]))  # size mismatch
    data = (labels / "0000002.png").read_bytes()
    (labels / "0000002.png").write_bytes(data[: len(data) // 2])  # truncated label
    write_image(images / "0000003.png", np.full((24, 40, 3), 9, np.uint8))  # blank frame
    write_png16(labels / "0000003.png", _label(ids))
    write_image(images / "0000004.png", image)
    (labels / "0000004.png").write_bytes(b"")  # empty label
    write_image(images / "0000005.png", image)
    data = (images / "0000005.png").read_bytes()
    (images / "0000005.png").write_bytes(data[: len(data) // 2])  # truncated image
    write_png16(labels / "0000005.png", _label(ids))
    write_image(images / "0000006.png", image)
    unknown = ids.copy()
    unknown[0, :5] = 40  # outside SYNTHIA's table
    write_png16(labels / "0000006.png", _label(unknown))

    decoded = {
        s.name: decode_sample(s, (12, 20), keep_native=True, label_ids=SYNTHIA_LABEL_IDS)
        for s in index_synthia(synthia_root).samples
    }
    good = decoded["0000000"]
    assert good.skipped is None
    expected = np.vectorize(lambda v: EXPECTED_TRAIN_ID.get(int(v), 255))(ids).astype(np.uint8)
    assert np.array_equal(good.label_native, expected)
    assert set(np.unique(good.label)) <= {0, 1, 2, 13, 255}
    reasons = {name: d.skipped.reason for name, d in decoded.items() if d.skipped}
    assert "but label 0000001.png is 40x20" in reasons["0000001"]
    assert "unreadable" in reasons["0000002"]
    assert "blank" in reasons["0000003"]
    assert "empty file" in reasons["0000004"]
    assert "unreadable" in reasons["0000005"]
    assert reasons["0000006"] == "label ids outside the label table: 40 (5 px)"
    assert decoded["0000006"].skipped.file.endswith("GT/LABELS/0000006.png")
    assert decoded["0000002"].skipped.file.endswith("GT/LABELS/0000002.png")


def test_a_synthia_label_read_as_cityscapes_ids_is_refused_not_misread(tmp_path):
    """data.source.kind=gta5 on a SYNTHIA copy skips its labels with a reason; no zeros slip in."""
    image, ids = _frame(np.random.default_rng(3))
    sample = Sample(
        "x",
        write_image(tmp_path / "x.png", image),
        write_png16(tmp_path / "l.png", _label(ids)),
    )
    decoded = decode_sample(sample, (12, 20))
    assert "has mode RGB; expected an 8-bit id map" in decoded.skipped.reason


def test_prepare_with_a_synthia_source(tmp_path):
    """The demo's SYNTHIA copy prepares to the GTA5 copy's labels, minus what SYNTHIA lacks."""
    spec = DemoSpec(
        seed=1, n_source=4, n_target_train=3, n_target_val=2, size=(32, 64), synthia=True
    )
    generate(spec, tmp_path / "demo")
    data = DataConfig(
        source=DatasetSpec("synthia", str(tmp_path / "demo" / "synthia")),
        target=DatasetSpec("cityscapes", str(tmp_path / "demo" / "cityscapes")),
        size=(16, 32),
        max_skipped=0,
        max_unknown_share=0.0,
        val_label_size=None,
    )
    prepare_all(data, 1, tmp_path / "prepared", tmp_path / "data.json")
    sim = PreparedSplit.open(tmp_path / "prepared" / "sim", need_labels=True)
    assert sim.names == ["0000000", "0000001", "0000002", "0000003"]
    for row, name in enumerate(sim.names):
        gta5_label = tmp_path / "demo" / "gta5" / "labels" / f"{int(name) + 1:05d}.png"
        expected = to_train_ids(np.asarray(Image.open(gta5_label)))
        expected[np.isin(expected, [9, 14, 16])] = 255  # terrain, truck, train
        expected = np.asarray(Image.fromarray(expected).resize((32, 16), Image.NEAREST))
        assert np.array_equal(sim.labels[row], expected)
    report = json.loads((tmp_path / "data.json").read_text())["splits"]["sim"]
    assert report["class_pixels"]["terrain"] == 0 and report["class_pixels"]["road"] > 0
    assert report["skipped"] == 0 and report["kept"] == 4


def test_prepare_split_reads_synthia_labels_with_workers(synthia_root, tmp_path):
    """Worker processes look the label table up by kind; results equal the in-process decode."""
    for i in range(3, 9):  # enough frames for the process pool
        image, ids = _frame(np.random.default_rng(i))
        write_image(synthia_root / "RGB" / f"{i:07d}.png", image)
        write_png16(synthia_root / "GT" / "LABELS" / f"{i:07d}.png", _label(ids))
    index = index_synthia(synthia_root)
    report = prepare_split(
        index, tmp_path / "sim", (12, 20), workers=2, label_ids=SYNTHIA_LABEL_IDS
    )
    split = PreparedSplit.open(tmp_path / "sim", need_labels=True)
    assert report.kept == 9 and report.skipped == []
    for row, sample in enumerate(index.samples):
        single = decode_sample(sample, (12, 20), label_ids=SYNTHIA_LABEL_IDS)
        assert np.array_equal(split.labels[row], single.label)
