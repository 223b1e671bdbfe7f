"""Checkpoint files: atomic, rotated, weights-only, RNG states that resume exactly."""

from __future__ import annotations

import errno
import os
import random

import numpy as np
import pytest
import torch

from pipeline.train import checkpoint


class Payload:
    """Unpickling this runs code: exactly what a weights-only load must refuse."""

    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_pickled_payload_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "step_00000001.pt"
    torch.save({"model": {"w": torch.ones(2)}, "evil": Payload()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="refused to load"):
        checkpoint.load_checkpoint(path)
    assert not (tmp_path / "pwned_by_checkpoint").exists()


def test_save_rotates_and_lists_only_complete_files(tmp_path):
    for step in (10, 20, 30):
        checkpoint.save_checkpoint(tmp_path, step, {"step": step, "w": torch.full((3,), step)})
    (tmp_path / ".step_00000040.pt.abc.tmp").write_bytes(b"half")  # what a kill leaves
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert names == ["step_00000020.pt", "step_00000030.pt"]
    state = checkpoint.latest_checkpoint(tmp_path)
    assert state["step"] == 30 and torch.equal(state["w"], torch.full((3,), 30))


def test_truncated_checkpoint_is_reported(tmp_path):
    path = checkpoint.save_checkpoint(tmp_path, 1, {"w": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.load_checkpoint(path)


def test_rng_state_round_trip_through_a_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    checkpoint.save_checkpoint(tmp_path, 1, {"rng": checkpoint.rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(checkpoint.latest_checkpoint(tmp_path)["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_full_disk_names_the_path_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    checkpoint.save_checkpoint(tmp_path, 1, {"w": torch.ones(1)})
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # bytes hit the temp file, then the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"step_00000002\.pt.*No space left"):
        checkpoint.save_checkpoint(tmp_path, 2, {"w": torch.full((1,), 2.0)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001.pt"]
    assert checkpoint.latest_checkpoint(tmp_path)["w"].item() == 1


def test_unwritable_output_folder_is_named(tmp_path):
    blocker = tmp_path / "models"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OSError, match=str(blocker)):
        checkpoint.save_checkpoint(blocker / "checkpoints", 1, {"w": torch.ones(1)})


def test_check_compatible_names_the_changed_setting():
    checkpoint.check_compatible({"netG": "a", "ngf": 8}, {"netG": "a", "ngf": 8}, "x.pt")
    with pytest.raises(checkpoint.CheckpointError, match="ngf: 8 -> 16"):
        checkpoint.check_compatible({"netG": "a", "ngf": 8}, {"netG": "a", "ngf": 16}, "x.pt")


def test_orphan_temp_from_a_killed_save_is_removed_by_the_next_save(tmp_path):
    checkpoint.save_checkpoint(tmp_path, 1, {"w": torch.ones(1)})
    orphan = tmp_path / ".step_00000002.pt.x1y2.tmp"  # what a SIGKILL mid-save leaves
    orphan.write_bytes(b"half")
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["step_00000001.pt"]
    checkpoint.save_checkpoint(tmp_path, 2, {"w": torch.ones(1)})
    assert not orphan.exists()
