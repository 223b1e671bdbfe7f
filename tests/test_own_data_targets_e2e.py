"""The Mapillary, BDD100K and ACDC (Cityscapes as the source) layouts of docs/data.md, each from
its files through prepare, training, scoring on its val split and the report.

Only `prepare` reads a dataset's layout; every later stage reads the prepared arrays, the same
for any layout. So these runs train the two variants that bracket the comparison (source_only
and oracle) and leave the adapted ones, which tests/test_own_data_e2e.py runs on a folder
target, and tests/test_pipeline_e2e.py on the demo's layouts, out.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml

from pipeline.data.demo import DemoSpec, generate
from tests.conftest import TEST_PARAMS
from tests.data.test_layouts import H, W, _write_carla, _write_target, doc_blocks
from tests.test_own_data_e2e import _repro_through_the_report
from tests.test_pipeline_e2e import TINY, _merge, _run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("target_name", ["Mapillary Vistas v1.2", "BDD100K", "ACDC"])
def test_dvc_repro_runs_through_the_report_on_each_documented_target(tmp_path, target_name):
    rng = np.random.default_rng(0)
    data_root = tmp_path / "data"
    blocks = doc_blocks()
    block = blocks[target_name]
    _write_target(target_name, data_root / "target", rng)
    if target_name == "ACDC":
        # The doc's real-to-real pairing: Cityscapes (the demo generator's layout) as the source.
        generate(DemoSpec(0, 6, 1, 1, (H, W)), data_root / "demo")
        source = {**block["source"], "root": str(data_root / "demo" / "cityscapes")}
    else:
        for _ in range(3):
            _write_carla(data_root / "carla", rng)
        source = {**blocks["CARLA"]["source"], "root": str(data_root / "carla")}
    params = _merge(yaml.safe_load(TEST_PARAMS.read_text()), TINY)
    variants = params["train_seg"]["variants"]
    params["train_seg"]["variants"] = {name: variants[name] for name in ("source_only", "oracle")}
    params["data"]["source"] = source
    params["data"]["target"] = {**block["target"], "root": str(data_root / "target")}
    if "val_label_size" in block:
        params["data"]["val_label_size"] = [H, W]  # the fixture's label size
    root = tmp_path / "repo"
    root.mkdir()
    env = _repro_through_the_report(root, params, "target")
    status = _run([sys.executable, "-m", "dvc", "status", "--json"], root, env)
    assert json.loads(status.stdout or "{}") == {}
