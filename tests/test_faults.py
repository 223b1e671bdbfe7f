"""Fault injection: SIGKILL the long stages at random points, feed every kind of bad file.

Each killed stage is rerun until it finishes; the result must equal an uninterrupted run
exactly (weights bit-identical on CPU, translated files byte-identical), and no half-written file
may ever be taken as finished.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import DataConfig, DatasetSpec
from pipeline.data.demo import DemoSpec
from pipeline.data.prepare import prepare_all
from tests.conftest import REPO_ROOT, random_frame, tiny_workspace, write_image, write_palette_label

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TINY = {
    "data": {"size": [32, 64]},
    "cyclegan": {
        "ngf": 4,
        "ndf": 4,
        "iters": 40,
        "decay_from": 20,
        "crop": [32, 64],
        "checkpoint_every": 4,
        "log_every": 4,
        "sample_every": 20,
        "pool_size": 4,
        "threads": 1,
    },
    "translate": {"batch": 2, "threads": 1},
    "train_seg": {
        "iters": 30,
        "batch": 2,
        "crop": [32, 64],
        "checkpoint_every": 3,
        "log_every": 3,
        "threads": 1,
    },
    "tracking": {"enabled": False},
}
KILLS = 3


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    spec = DemoSpec(seed=2, n_source=24, n_target_train=8, n_target_val=4, size=(32, 64))
    return tiny_workspace(tmp_path_factory.mktemp("faults"), spec, TINY)


def _command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def _run(work: Path, command: list[str]) -> None:
    result = subprocess.run(
        command, cwd=work, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]


def _kill_and_rerun(
    work: Path,
    command: list[str],
    progress: callable,
    rng: random.Random,
    max_delay: float = 0.6,
) -> int:
    """SIGKILL `command` KILLS times, at most `max_delay` s after `progress()` shows work, then
    run it to the end; returns how many kills landed before the command finished."""
    kills = 0
    for _ in range(KILLS):
        process = subprocess.Popen(
            command, cwd=work, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        start = progress()
        deadline = time.time() + 120
        while progress() == start and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, max_delay))
        if process.poll() is None:
            process.kill()
            kills += 1
        process.wait()
    _run(work, command)
    return kills


def _checkpoint_steps(out: Path) -> int:
    """Changes whenever a new checkpoint lands (step numbers of the files present, summed)."""
    return sum(int(p.stem.split("_")[1]) for p in (out / "checkpoints").glob("step_*.pt"))


def _assert_same_weights(a: Path, b: Path) -> None:
    # safetensors files of identical weights are identical bytes.
    assert a.read_bytes() == b.read_bytes(), f"{a} and {b} differ"


def test_train_cyclegan_killed_resumes_bit_identical(work):
    rng = random.Random(0)
    args = ["--prepared", "data/prepared", "--metrics"]
    _run(
        work,
        _command(
            "stages.train_cyclegan", *args, "ref.json", "--out", "ref_cg", "--curves", "ref.csv"
        ),
    )
    out = work / "killed_cg"
    count = lambda: _checkpoint_steps(out)  # noqa: E731
    kills = _kill_and_rerun(
        work,
        _command(
            "stages.train_cyclegan", *args, "k.json", "--out", "killed_cg", "--curves", "k.csv"
        ),
        count,
        rng,
    )
    assert kills >= 1
    for name in ("gen_sim2real.safetensors", "gen_real2sim.safetensors"):
        _assert_same_weights(work / "ref_cg" / name, out / name)
    assert not list(out.rglob("*.tmp"))


def test_translate_killed_resumes_with_identical_files(work):
    rng = random.Random(1)
    args = ["--prepared", "data/prepared", "--generator", "ref_cg"]
    if not (work / "ref_cg" / "gen_sim2real.safetensors").is_file():
        pytest.skip("needs the CycleGAN run of the previous test")
    _run(work, _command("stages.translate", *args, "--out", "ref_tr", "--metrics", "rt.json"))
    out = work / "killed_tr" / "images"
    kills = _kill_and_rerun(
        work,
        _command("stages.translate", *args, "--out", "killed_tr", "--metrics", "kt.json"),
        lambda: len(list(out.glob("*.png"))) if out.is_dir() else 0,
        rng,
        max_delay=0.0,  # 24 tiny frames translate in well under a second
    )
    reference = sorted((work / "ref_tr" / "images").glob("*.png"))
    assert len(reference) == 24
    for path in reference:
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    assert np.array_equal(
        np.load(work / "ref_tr" / "images.npy"), np.load(work / "killed_tr" / "images.npy")
    )
    assert kills >= 1 and not list((work / "killed_tr").rglob("*.tmp"))


def test_train_seg_killed_resumes_bit_identical(work):
    rng = random.Random(2)
    _run(work, _command("stages.train_seg", "--variant", "oracle", "--out", "ref_seg"))
    out = work / "killed_seg"
    count = lambda: _checkpoint_steps(out)  # noqa: E731
    kills = _kill_and_rerun(
        work, _command("stages.train_seg", "--variant", "oracle", "--out", "killed_seg"), count, rng
    )
    assert kills >= 1
    _assert_same_weights(work / "ref_seg" / "model.safetensors", out / "model.safetensors")


def test_bad_inputs_are_counted_or_named(tmp_path):
    """Every kind of bad file: handled and listed in the data report, or a clear stop."""
    rng = np.random.default_rng(5)
    gta = tmp_path / "gta5"
    good = {}
    for i in range(1, 12):
        image, ids = random_frame(rng)
        good[i] = (image, ids)
        write_image(gta / "images" / f"{i:05d}.png", image)
        write_palette_label(gta / "labels" / f"{i:05d}.png", ids)
    (gta / "images" / "00001.png").write_bytes(b"")  # zero-byte
    data = (gta / "images" / "00002.png").read_bytes()
    (gta / "images" / "00002.png").write_bytes(data[: len(data) // 3])  # truncated
    (gta / "images" / "00003.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # corrupt
    write_image(gta / "images" / "00004.png", good[4][0][..., 0])  # greyscale: converted
    write_image(gta / "images" / "00005.png", np.dstack([good[5][0], good[5][0][..., :1]]))  # RGBA
    write_image(gta / "images" / "00006.png", good[6][0][..., 0].astype(np.uint16) * 257)  # 16-bit
    ids = good[7][1].copy()
    ids[:2] = 200
    write_palette_label(gta / "labels" / "00007.png", ids)  # ids outside the table
    write_palette_label(gta / "labels" / "00008.png", good[8][1][:-3])  # size mismatch
    (gta / "labels" / "00009.png").unlink()  # missing label
    shutil.copy(gta / "images" / "00010.png", gta / "images" / "00010.jpg")  # duplicate name
    write_image(gta / "images" / "00011.png", np.full((24, 40, 3), 7, np.uint8))  # blank
    city = tmp_path / "cityscapes"
    for split in ("train", "val"):
        image, label_ids = random_frame(rng)
        write_image(
            city / "leftImg8bit" / split / "c" / f"c_000000_00000{len(split)}_leftImg8bit.png",
            image,
        )
        write_image(
            city / "gtFine" / split / "c" / f"c_000000_00000{len(split)}_gtFine_labelIds.png",
            label_ids,
        )
    config = DataConfig(
        DatasetSpec("gta5", str(gta)),
        DatasetSpec("cityscapes", str(city)),
        (16, 32),
        max_skipped=20,
        max_unknown_share=0.0,
        val_label_size=None,
    )
    prepare_all(config, 2, tmp_path / "prepared", tmp_path / "data.json")
    report = json.loads((tmp_path / "data.json").read_text())
    reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {
        "00001.png",
        "00002.png",
        "00003.png",
        "00007.png",
        "00008.png",
        "00009.png",
        "00010.png",
        "00011.png",
    }
    assert "empty" in reasons["00001.png"] and "unreadable" in reasons["00002.png"]
    assert "duplicate" in reasons["00010.png"] and "blank" in reasons["00011.png"]
    assert reasons["00007.png"] == "label ids outside the label table: 200 (80 px)"
    assert report["splits"]["sim"]["kept"] == 4  # 4, 5, 6, 10 (.png)
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    with pytest.raises(ValueError, match=str(empty)):
        prepare_all(
            DataConfig(
                DatasetSpec("gta5", str(empty)),
                DatasetSpec("cityscapes", str(city)),
                (16, 32),
                0,
                0.0,
                None,
            ),
            1,
            tmp_path / "p2",
            tmp_path / "d2.json",
        )


def test_translated_folder_missing_frames_is_named(work, tmp_path):
    from pipeline.data.split import PreparedSplit, check_same_frames

    sim = work / "data" / "prepared" / "sim"
    partial = tmp_path / "translated"
    partial.mkdir()
    names = json.loads((sim / "names.json").read_text())
    np.save(partial / "images.npy", np.load(sim / "images.npy")[:-1])
    (partial / "names.json").write_text(json.dumps(names[:-1]))
    with pytest.raises(ValueError, match=names[-1]):
        check_same_frames(PreparedSplit.open(partial), PreparedSplit.open(sim, need_labels=True))
