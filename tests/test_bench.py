"""The benchmark harness runs end to end in --quick mode (tiny sizes; numbers not asserted)."""

from __future__ import annotations

import json

import pytest

from benchmarks import run
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_quick_harness_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the harness reads params.yaml like the stages do
    run.main(["--quick", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "bench_quick.json").read_text())
    assert results["scoring"]["scores_match"] is True
    assert {row["mode"] for row in results["cyclegan"]} >= {"fp32", "bf16"}
    assert all("img_per_s" in row for row in results["segmentation"]), results["segmentation"]
    assert results["cyclegan_flops"]["flops_per_step"] > 0
    assert "exponent" in (tmp_path / "bench_quick.md").read_text()


def test_exponent_of_linear_and_quadratic_growth():
    assert run._exponent([1, 2, 4], [3.0, 6.0, 12.0]) == pytest.approx(1.0)
    assert run._exponent([1, 2, 4], [1.0, 4.0, 16.0]) == pytest.approx(2.0)
