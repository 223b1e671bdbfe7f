"""Demo generator determinism and the prepare cache against the source files."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.config import DataConfig, DatasetSpec
from pipeline.data.demo import DemoSpec, generate, render_frame
from pipeline.data.gta5 import index_gta5
from pipeline.data.index import DatasetError
from pipeline.data.labels import to_train_ids
from pipeline.data.prepare import prepare_all, prepare_split
from pipeline.data.split import PreparedSplit

SPEC = DemoSpec(seed=3, n_source=6, n_target_train=5, n_target_val=4, size=(64, 128))


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate(SPEC, root)
    return root


def test_generator_is_deterministic(demo, tmp_path):
    generate(SPEC, tmp_path)
    assert _digest(tmp_path) == _digest(demo)
    other = render_frame(SPEC.seed + 1, "sim", 0, SPEC.size)[0]
    assert not np.array_equal(other, render_frame(SPEC.seed, "sim", 0, SPEC.size)[0])


def test_synthia_copy_is_opt_in_and_leaves_the_default_output_unchanged(demo, tmp_path):
    assert sorted(p.name for p in demo.iterdir()) == ["cityscapes", "gta5"]
    counts = generate(dataclasses.replace(SPEC, synthia=True), tmp_path)
    assert counts["synthia"] == SPEC.n_source
    for layout in ("gta5", "cityscapes"):
        assert _digest(tmp_path / layout) == _digest(demo / layout)
    images = sorted((tmp_path / "synthia" / "RGB").glob("*.png"))
    labels = sorted((tmp_path / "synthia" / "GT" / "LABELS").glob("*.png"))
    assert [p.name for p in images] == [f"{i:07d}.png" for i in range(SPEC.n_source)]
    assert [p.name for p in labels] == [p.name for p in images]
    for i, path in enumerate(images):
        assert path.read_bytes() == (demo / "gta5" / "images" / f"{i + 1:05d}.png").read_bytes()


def test_generator_layouts_and_classes(demo):
    assert len(list((demo / "gta5" / "images").glob("*.png"))) == 6
    assert len(list((demo / "gta5" / "labels").glob("*.png"))) == 6
    assert len(list((demo / "cityscapes" / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))) == 4
    classes = set()
    for i in range(20):
        classes |= set(np.unique(render_frame(0, "real", i, (128, 256))[1]).tolist())
    classes.discard(255)
    assert len(classes) >= 12


def test_domains_differ_in_appearance_not_layout():
    def stats(domain):
        saturation, shares = [], np.zeros(256)
        for i in range(12):
            image, label = render_frame(0, domain, i, (64, 128))
            saturation.append((image.max(2).astype(int) - image.min(2)).mean())
            shares += np.bincount(label.ravel(), minlength=256)
        return np.mean(saturation), shares / shares.sum()

    sim_saturation, sim_shares = stats("sim")
    real_saturation, real_shares = stats("real")
    # One street grammar: class shares agree within a few points; appearance differs strongly.
    assert np.abs(sim_shares - real_shares).max() < 0.06
    assert sim_saturation > 1.5 * real_saturation


def test_prepare_cache_matches_source_files(demo, tmp_path):
    data = DataConfig(
        source=DatasetSpec("gta5", str(demo / "gta5")),
        target=DatasetSpec("cityscapes", str(demo / "cityscapes")),
        size=(32, 64),
        max_skipped=0,
        max_unknown_share=0.0,
        val_label_size=None,
    )
    prepare_all(data, workers=2, out_dir=tmp_path / "prepared", report_path=tmp_path / "data.json")
    sim = PreparedSplit.open(tmp_path / "prepared" / "sim", need_labels=True)
    assert sim.images.shape == (6, 32, 64, 3) and sim.labels.shape == (6, 32, 64)
    for row, name in enumerate(sim.names):
        image = Image.open(demo / "gta5" / "images" / f"{name}.png").convert("RGB")
        expected = np.asarray(image.resize((64, 32), Image.BILINEAR, reducing_gap=None))
        assert np.array_equal(sim.images[row], expected)
        ids = np.asarray(Image.open(demo / "gta5" / "labels" / f"{name}.png"))
        expected_label = np.asarray(
            Image.fromarray(to_train_ids(ids)).resize((64, 32), Image.NEAREST)
        )
        assert np.array_equal(sim.labels[row], expected_label)
    val = tmp_path / "prepared" / "real_val"
    native = np.load(val / "labels_native.npy")
    assert native.shape == (4, 64, 128)
    report = json.loads((tmp_path / "data.json").read_text())
    assert report["splits"]["real_val"]["kept"] == 4
    shares = report["splits"]["sim"]["class_pixel_share"]
    assert abs(sum(shares.values()) - 1) < 1e-3


def test_prepare_stops_past_max_skipped_and_keeps_report(demo, tmp_path):
    broken = tmp_path / "gta5"
    (broken / "images").mkdir(parents=True)
    (broken / "labels").mkdir()
    for i, path in enumerate(sorted((demo / "gta5" / "images").glob("*.png"))):
        (broken / "images" / path.name).write_bytes(path.read_bytes() if i else b"garbage")
        (broken / "labels" / path.name).write_bytes(
            (demo / "gta5" / "labels" / path.name).read_bytes()
        )
    data = DataConfig(
        source=DatasetSpec("gta5", str(broken)),
        target=DatasetSpec("cityscapes", str(demo / "cityscapes")),
        size=(32, 64),
        max_skipped=0,
        max_unknown_share=0.0,
        val_label_size=None,
    )
    with pytest.raises(DatasetError, match="max_skipped"):
        prepare_all(data, 1, tmp_path / "prepared", tmp_path / "data.json")
    report = json.loads((tmp_path / "data.json").read_text())
    assert report["skipped"][0]["file"].endswith("00001.png")
    assert PreparedSplit.open(tmp_path / "prepared" / "sim").images.shape[0] == 5


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_prepare_draws_its_progress_bar_only_on_a_terminal(demo, tmp_path, monkeypatch):
    """A log file (DVC, CI, a redirect) gets no carriage-return redraws; a terminal gets the bar."""
    index = index_gta5(demo / "gta5")
    log, terminal = io.StringIO(), _Terminal()
    for stderr in (log, terminal):
        monkeypatch.setattr(sys, "stderr", stderr)
        prepare_split(index, tmp_path / "sim", (16, 32), workers=1, desc="sim")
    assert log.getvalue() == ""
    assert "sim: 100%" in terminal.getvalue()
