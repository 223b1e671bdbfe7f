"""pipeline.io.claim_folder: a folder is claimed for one producer, identified by its digest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.io import OutputClaimed, claim_folder


def test_a_folder_is_claimed_once_and_refused_to_another_producer(tmp_path: Path) -> None:
    marker = tmp_path / "out" / "made_by.json"
    claim_folder(marker, "tool", "first", "aaa", tmp_path / "out", "*.png")
    assert json.loads(marker.read_text()) == {"tool": "first", "tool_sha256": "aaa"}
    (tmp_path / "out" / "x.png").write_bytes(b"")
    claim_folder(marker, "tool", "first again", "aaa", tmp_path / "out", "*.png")  # its own
    assert json.loads(marker.read_text())["tool"] == "first"
    with pytest.raises(OutputClaimed) as claimed:
        claim_folder(marker, "tool", "second", "bbb", tmp_path / "out", "*.png")
    assert (claimed.value.marked, claimed.value.owner) == (True, "first")
    assert json.loads(marker.read_text())["tool_sha256"] == "aaa"


def test_unmarked_outputs_are_refused_and_other_files_are_not_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an output")
    claim_folder(folder / "a.json", "tool", "first", "aaa", folder, "*.png")
    (folder / "y.png").write_bytes(b"")
    with pytest.raises(OutputClaimed) as claimed:
        claim_folder(folder / "b.json", "tool", "first", "aaa", folder, "*.png")
    assert not claimed.value.marked and not (folder / "b.json").exists()
