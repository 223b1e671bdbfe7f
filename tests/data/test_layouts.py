"""Every dataset layout docs/data.md shows, on small fixtures written in that layout: its settings
block runs through prepare, and its labels come out as the right train ids."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from pipeline.config import ConfigError, DataConfig, DatasetSpec, build
from pipeline.data.demo import DemoSpec, generate
from pipeline.data.folder import index_folder
from pipeline.data.index import DatasetError
from pipeline.data.label_map import LabelMapError, load_label_map, resolve_label_map, shipped_maps
from pipeline.data.labels import CITYSCAPES_LABEL_IDS, CLASS_NAMES, IGNORE_INDEX
from pipeline.data.prepare import decode_sample, prepare_all
from pipeline.data.split import PreparedSplit
from pipeline.preflight import check_dataset
from tests.conftest import REPO_ROOT, write_image, write_palette_label

H, W = 24, 40  # native frame size; the working size too, so labels are compared unresized
TRAIN = {name: index for index, name in enumerate(CLASS_NAMES)}


def doc_blocks() -> dict[str, dict]:
    """docs/data.md's settings blocks by their heading's first word(s) before any comma."""
    text = (REPO_ROOT / "docs" / "data.md").read_text()
    found = {}
    for title, body in re.findall(r"^### ([^\n]+)\n\n```yaml\n(.*?)```", text, flags=re.S | re.M):
        found[title.split(" (")[0].split(",")[0].strip()] = yaml.safe_load(body)
    return found


def _ids(values: list[int], rng: np.random.Generator) -> np.ndarray:
    """(H, W) ids: each of `values` in its own band of columns, so each surely occurs."""
    ids = np.zeros((H, W), dtype=np.int64)
    bands = np.array_split(np.arange(W), len(values))
    for value, band in zip(values, bands):
        ids[:, band] = value
    return ids[:, rng.permutation(W)]


def _image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


# Per layout: source ids written into its labels -> the train class each must become, by the
# dataset's published table (CARLA's ref_sensors, Mapillary's config, Cityscapes' labels.py).
EXPECTED = {
    "CARLA": {1: "road", 14: "car", 24: "road", 11: "sky", 0: None},
    "Your fleet": {0: "road", 13: "car", 10: "sky", 255: None},
    "Mapillary Vistas v1.2": {13: "road", 55: "car", 27: "sky", 19: "person", 65: None},
    "BDD100K": {0: "road", 13: "car", 11: "person", 255: None},
    "ACDC": {7: "road", 26: "car", 23: "sky", 0: None},
    "Dark Zurich": {7: "road", 26: "car", 23: "sky", 0: None},
}


def _write_carla(root, rng):
    for sub in ("Town01/", "Town02/", ""):
        ids = _ids(list(EXPECTED["CARLA"]), rng)
        rgb_label = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)  # instance ids in G and B
        rgb_label[..., 0] = ids
        write_image(root / "rgb" / f"{sub}000123.png", _image(rng))
        write_image(root / "semantic" / f"{sub}000123.png", rgb_label)
    return ids


def _write_ids(path, ids, palette: bool):
    if palette:
        return write_palette_label(path, ids)
    return write_image(path, ids.astype(np.uint8), mode="L")


def _write_target(name, root, rng):
    """Two train frames (no labels) and two labelled val frames in `name`'s layout."""
    values = list(EXPECTED[name])
    for split in ("train", "val"):
        for i in range(2):
            ids = _ids(values, rng)
            if name == "Your fleet":
                image, label = f"images/{split}/f{i}.jpg", f"labels/{split}/f{i}.png"
            elif name == "Mapillary Vistas v1.2":
                folder = {"train": "training", "val": "validation"}[split]
                image, label = f"{folder}/images/m{i}.jpg", f"{folder}/v1.2/labels/m{i}.png"
            elif name == "BDD100K":
                image = f"images/10k/{split}/b{i}.jpg"
                label = f"labels/sem_seg/masks/{split}/b{i}.png"
            elif name == "ACDC":
                stem = f"GOPR035{i}/GOPR035{i}_frame_00000{i}"
                image = f"rgb_anon/night/{split}/{stem}_rgb_anon.png"
                label = f"gt/night/{split}/{stem}_gt_labelIds.png"
            else:  # Dark Zurich
                stem = f"GOPR035{i}/GOPR035{i}_frame_00000{i}"
                image = f"rgb_anon/{split}/night/{stem}_rgb_anon.png"
                label = f"gt/{split}/night/{stem}_gt_labelIds.png"
            write_image(root / image, _image(rng))
            if split == "val":
                _write_ids(root / label, ids, palette=name == "Mapillary Vistas v1.2")
    return values


def _data(source: dict, target: dict, **extra) -> DataConfig:
    raw = {"source": source, "target": target, "size": [H, W], "max_skipped": 0}
    raw |= {"max_unknown_share": 0.0, "val_label_size": None} | extra
    return build(DataConfig, raw, "data")


def _expected_train_ids(ids: np.ndarray, table: dict) -> np.ndarray:
    out = np.full(ids.shape, IGNORE_INDEX, dtype=np.uint8)
    for value, name in table.items():
        if name is not None:
            out[ids == value] = TRAIN[name]
    return out


@pytest.mark.parametrize(
    "target_name", ["Your fleet", "Mapillary Vistas v1.2", "BDD100K", "ACDC", "Dark Zurich"]
)
def test_each_documented_layout_prepares_with_the_right_train_ids(tmp_path, target_name):
    blocks = doc_blocks()
    rng = np.random.default_rng(0)
    carla_ids = _write_carla(tmp_path / "carla", rng)
    _write_target(target_name, tmp_path / "target", rng)
    block = blocks[target_name]
    source = {**blocks["CARLA"]["source"], "root": str(tmp_path / "carla")}
    if target_name == "ACDC":
        # The doc's real-to-real pairing: Cityscapes as the labelled source.
        generate(DemoSpec(0, 2, 1, 1, (H, W)), tmp_path / "demo")
        source = {**block["source"], "root": str(tmp_path / "demo" / "cityscapes")}
    target = {**block["target"], "root": str(tmp_path / "target")}
    extra = {k: v for k, v in block.items() if k not in ("source", "target")}
    if "val_label_size" in extra:
        extra["val_label_size"] = [H, W]
    data = _data(source, target, **extra)
    for side, spec in (("source", data.source), ("target", data.target)):
        check_dataset(spec, f"data.{side}", side)
    prepare_all(data, 1, tmp_path / "prepared", tmp_path / "data.json")

    report = json.loads((tmp_path / "data.json").read_text())
    assert report["skipped"] == []
    splits = report["splits"]
    assert splits["real_train"]["kept"] == 2 and splits["real_val"]["kept"] == 2
    val = PreparedSplit.open(tmp_path / "prepared" / "real_val")
    table = EXPECTED[target_name]
    assert set(np.unique(val.labels).tolist()) == {
        TRAIN[n] for n in table.values() if n is not None
    } | {IGNORE_INDEX}
    if target_name != "ACDC":
        sim = PreparedSplit.open(tmp_path / "prepared" / "sim")
        # Sub-folders stay in the names; the flat frame keeps its bare stem.
        assert sim.names == ["000123", "Town01/000123", "Town02/000123"]
        expected = _expected_train_ids(carla_ids, EXPECTED["CARLA"])
        assert np.array_equal(sim.labels[0], expected)


def test_a_label_map_file_maps_each_id_by_its_table(tmp_path):
    """Fleet-style labels with the doc's own map format, in every encoding."""
    rng = np.random.default_rng(1)
    ids = _ids([1, 2, 0, 9], rng)
    maps = tmp_path / "label_maps"
    maps.mkdir()
    (maps / "fleet.yaml").write_text("encoding: ids\nclasses: {0: ignore, 1: road, 2: car}\n")
    (maps / "fleet_rgb.yaml").write_text(
        'encoding: color\nclasses: {"0,0,0": ignore, "128,64,128": road, "0,0,142": car}\n'
    )
    colours = np.array([[0, 0, 0], [128, 64, 128], [0, 0, 142]] + [[9, 9, 9]] * 7, np.uint8)
    for map_name, write in (
        ("fleet", lambda path: write_image(path, ids.astype(np.uint8), mode="L")),
        ("fleet_rgb", lambda path: write_image(path, colours[ids])),
    ):
        root = tmp_path / map_name
        write_image(root / "images/train/a.png", _image(rng))
        write_image(root / "images/val/a.png", _image(rng))
        write(root / "labels/val/a.png")
        table = load_label_map(maps / f"{map_name}.yaml")
        decoded = table.train_ids(table.read(root / "labels/val/a.png"))
        expected = _expected_train_ids(ids, {1: "road", 2: "car", 0: None, 9: None})
        assert np.array_equal(decoded, expected)
        # Id 9 / colour 9,9,9 is in neither map: unknown, listed by value as the file holds it.
        unknown = table.unknown_ids(table.read(root / "labels/val/a.png"))
        assert [table.describe(v) for v in unknown] == ["9" if map_name == "fleet" else "9,9,9"]


def test_the_cityscapes_map_file_is_cityscapesscripts_table():
    shipped = load_label_map(resolve_label_map("cityscapes_ids", "k"))
    ids = np.arange(256, dtype=np.uint8)
    assert np.array_equal(shipped.train_ids(ids), CITYSCAPES_LABEL_IDS.train_ids(ids))
    assert np.array_equal(shipped.known[:256], CITYSCAPES_LABEL_IDS.known)


def test_every_shipped_map_parses_and_names_real_classes():
    assert {"carla", "carla_0.9.13", "mapillary_v1.2", "mapillary_v2.0", "cityscapes_ids",
            "train_ids", "idd_level3"} <= set(shipped_maps())  # fmt: skip
    for name in shipped_maps():
        table = load_label_map(resolve_label_map(name, "k"))
        assert table.known.sum() >= 19, name
        assert set(np.unique(table.to_train_id[table.known])) <= set(range(19)) | {IGNORE_INDEX}


def decode_sample_of(root):
    table = load_label_map(resolve_label_map("carla", "k"))
    index = index_folder(root, "rgb", "semantic", "train")
    return [decode_sample(sample, (H, W), label_ids=table) for sample in index.samples]


def test_unknown_ids_below_the_share_become_ignore_and_are_counted(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "carla"
    ids = _ids([1, 14], rng)
    ids[0, :3] = 200  # 3 pixels of a tag CARLA does not have
    label = np.zeros((H, W, 3), dtype=np.uint8)
    label[..., 0] = ids
    write_image(root / "rgb/a.png", _image(rng))
    write_image(root / "semantic/a.png", label)
    fleet = tmp_path / "fleet"
    for split in ("train", "val"):
        write_image(fleet / f"images/{split}/f.png", _image(rng))
    write_image(fleet / "labels/val/f.png", np.zeros((H, W), np.uint8), mode="L")
    blocks = doc_blocks()
    source = {**blocks["CARLA"]["source"], "root": str(root)}
    target = {**blocks["Your fleet"]["target"], "root": str(fleet)}
    # By default a single unknown pixel skips the frame (here the only one, so prepare stops).
    with pytest.raises(DatasetError, match="sim: every frame was skipped"):
        prepare_all(_data(source, target), 1, tmp_path / "p0", tmp_path / "d0.json")
    (frame,) = decode_sample_of(root)
    assert frame.skipped.reason == "label ids outside the label table: 200 (3 px)"
    prepare_all(
        _data(source, target, max_unknown_share=0.01), 1, tmp_path / "p1", tmp_path / "d1.json"
    )
    report = json.loads((tmp_path / "d1.json").read_text())
    assert report["splits"]["sim"]["unknown_id_pixels"] == {"200": 3}
    sim = PreparedSplit.open(tmp_path / "p1" / "sim")
    assert (sim.labels[0][0, :3] == IGNORE_INDEX).all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("encoding: ids\nclasses: {1: roadway}\n", "'roadway', which is no train class"),
        ("encoding: rgb\nclasses: {1: road}\n", "encoding 'rgb' is not one of"),
        ("encoding: ids\nclasses: {70000: road}\n", "id 70000 is not an integer from 0"),
        ("encoding: color\nclasses: {'1,2': road}\n", "colour key '1,2'"),
        ("encoding: ids\n", "exactly the keys"),
        ("encoding: [ids\n", "not a YAML label map"),
    ],
)
def test_a_bad_label_map_is_named_with_its_entry(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(LabelMapError, match=re.escape(message)) as err:
        load_label_map(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_label_map_outside_label_maps_is_refused(tmp_path):
    with pytest.raises(LabelMapError, match=r"data\.source\.label_map = '/etc/map\.yaml'"):
        resolve_label_map("/etc/map.yaml", "data.source.label_map")


def test_folder_reader_names_its_defects(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "sim"
    write_image(root / "rgb/a.png", _image(rng))
    write_image(root / "rgb/a.jpg", _image(rng))  # same name: a duplicate
    write_image(root / "rgb/b.png", _image(rng))  # no label
    (root / "rgb/notes.txt").write_text("not an image")  # ignored: not an image suffix
    for name in ("a", "orphan"):
        write_image(root / f"semantic/{name}.png", np.zeros((H, W, 3), np.uint8))
    index = index_folder(root, "rgb", "semantic", "train")
    assert [s.name for s in index.samples] == ["a"]
    reasons = sorted((p.split("/")[-1], r) for p, r in ((s.file, s.reason) for s in index.skipped))
    assert reasons == [
        ("a.png", "duplicate frame name 'a'"),
        ("b.png", "image without label"),
        ("orphan.png", "label without image"),
    ]
    with pytest.raises(DatasetError, match="has no pictures/ folder"):
        index_folder(root, "pictures", "semantic", "train")
    with pytest.raises(DatasetError, match="does not exist"):
        index_folder(tmp_path / "nowhere", "rgb", "semantic", "train")


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (
            {"kind": "folder", "root": "r", "labels": "l", "label_map": "carla"},
            "data.source.images",
        ),
        ({"kind": "folder", "root": "r", "images": "i", "labels": "l"}, "data.source.label_map"),
        ({"kind": "gta5", "root": "r", "images": "i"}, "data.source.images"),
        ({"kind": "gta5", "root": "r", "train_split": "x"}, "data.source.train_split"),
    ],
)
def test_bad_layout_settings_name_the_key(spec, key):
    target = {"kind": "cityscapes", "root": "t"}
    with pytest.raises(ConfigError, match=re.escape(key)):
        _data(spec, target)


def test_a_target_folder_without_split_is_refused():
    source = {"kind": "gta5", "root": "r"}
    target = {"kind": "folder", "root": "t", "images": "images", "labels": "labels/{split}"}
    with pytest.raises(ConfigError, match=r"data\.target\.images = 'images'.*\{split\}"):
        _data(source, {**target, "label_map": "train_ids"})


def test_check_data_prints_the_summary_and_writes_overlays(tmp_path):
    """The check command of docs/data.md, as written there, on a CARLA + fleet pair."""
    rng = np.random.default_rng(4)
    _write_carla(tmp_path / "carla", rng)
    _write_target("Your fleet", tmp_path / "fleet", rng)
    blocks = doc_blocks()
    params = yaml.safe_load((REPO_ROOT / "tests" / "params.yaml").read_text())
    params["data"]["source"] = blocks["CARLA"]["source"]
    params["data"]["target"] = blocks["Your fleet"]["target"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    text = (REPO_ROOT / "docs" / "data.md").read_text()
    (command,) = [c for c in re.findall(r"```bash\n(.*?)```", text, re.S) if "check-data" in c]
    command = command.replace("/data/carla", str(tmp_path / "carla"))
    command = command.replace("/data/fleet", str(tmp_path / "fleet"))
    argv = command.split()[1:]
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.check_data", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert "== sim: data.source, kind folder" in run.stdout
    assert "kept by prepare: 3 of 3 decoded" in run.stdout
    assert "car " in run.stdout and "absent:" in run.stdout
    assert len(list((tmp_path / "reports/check_data/sim").glob("*.png"))) == 3
    # A map that names no CARLA tag 14 would show it as unknown, and prepare would stop.
    (tmp_path / "label_maps").mkdir()
    (tmp_path / "label_maps/partial.yaml").write_text(
        "encoding: red\nclasses: {0: ignore, 1: road, 11: sky, 24: road}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.check_data", *argv,
         "-S", "data.source.label_map=label_maps/partial.yaml"],
        cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 1
    assert "ids outside the label map: 14 (" in run.stdout
    assert "label ids outside the label table: 14" in run.stdout


def test_a_check_data_command_with_a_missing_root_names_it(tmp_path):
    spec = DatasetSpec("folder", str(tmp_path / "none"), images="rgb", labels="semantic",
                       label_map="carla")  # fmt: skip
    check_dataset(spec, "data.source", "source")  # a missing root is check_paths' to name
    (tmp_path / "none").mkdir()
    with pytest.raises(ConfigError, match=r"data\.source\.images = 'rgb'"):
        check_dataset(spec, "data.source", "source")
