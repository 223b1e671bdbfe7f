"""The whole chain on a team's own data: a CARLA-style source (rgb/ + semantic/, the tag in the
red channel) and a fleet-style target (images/{train,val}, labels/val of train ids), with only
`data.*` changed from the settings the chain's own end-to-end test runs (docs/data.md's blocks).
tests/test_own_data_targets_e2e.py runs the other documented targets."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import TEST_PARAMS, temp_checkout
from tests.data.test_layouts import _write_carla, _write_target, doc_blocks
from tests.test_pipeline_e2e import TINY, _merge, _run

pytestmark = pytest.mark.slow


def _repro_through_the_report(root, params: dict, side: str) -> dict[str, str]:
    """`dvc repro` in a checkout of `root` with `params`; the data's `side` (the folder one) is
    named with its map in the dataset identity, val keeps its 2 frames, and the comparison lists
    every variant. Returns the checkout's environment."""
    env = temp_checkout(root, params)
    _run([sys.executable, "-m", "dvc", "repro"], root, env)
    identity = json.loads((root / "data/prepared/dataset.json").read_text())
    assert identity[side]["kind"] == "folder" and "label_map_sha256" in identity[side]
    assert identity["splits"]["real_val"]["frames"] == 2
    comparison = (root / "reports/comparison.md").read_text()
    for variant in params["train_seg"]["variants"]:
        assert f"| {variant} |" in comparison, variant
    return env


def test_dvc_repro_runs_through_the_report_on_carla_and_a_fleet(tmp_path):
    rng = np.random.default_rng(0)
    data_root = tmp_path / "data"
    for _ in range(3):  # 9 CARLA frames in three towns' folders and at the top
        _write_carla(data_root / "carla", rng)
    _write_target("Your fleet", data_root / "fleet", rng)
    root = tmp_path / "repo"
    root.mkdir()
    params = _merge(yaml.safe_load(TEST_PARAMS.read_text()), TINY)
    params["cut"]["translators"] = {"fastcut": {"mode": "fastcut"}}  # as the chain's own test
    blocks = doc_blocks()
    params["data"]["source"] = {**blocks["CARLA"]["source"], "root": str(data_root / "carla")}
    params["data"]["target"] = {**blocks["Your fleet"]["target"], "root": str(data_root / "fleet")}
    env = _repro_through_the_report(root, params, "source")
    # Editing the map re-prepares the data: the shipped maps are a dependency of prepare.
    status = _run([sys.executable, "-m", "dvc", "status", "prepare"], root, env)
    assert "changed" not in status.stdout
    carla = root / "pipeline/data/label_maps/carla.yaml"
    carla.write_text(carla.read_text().replace("14: car", "14: truck"))
    status = _run([sys.executable, "-m", "dvc", "status", "prepare"], root, env)
    assert "pipeline/data/label_maps" in status.stdout
