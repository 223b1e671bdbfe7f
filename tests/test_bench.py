"""The benchmark harness and its measurements, run end to end at tiny sizes (numbers are not
asserted: a benchmark is a measurement, never a timed test)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from benchmarks import cpu, profile, scaling, training
from benchmarks.harness import interleaved, isolated, main, merge_block, rate_rows, table
from pipeline import runtime
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # measurements read params.yaml like the stages do


def test_entry_point_runs_measurements_and_writes_their_page(tmp_path):
    main(["--quick", "--out", str(tmp_path), "scoring", "cyclegan"])
    bench = json.loads((tmp_path / "bench_quick.json").read_text())
    assert bench["scoring"]["scores_match"] is True
    assert set(bench["runs"]) == {"scoring", "cyclegan"}
    rows = bench["cyclegan"]["rows"]
    assert {(r["kind"], r["mode"]) for r in rows} == {
        (kind, mode) for kind in ("train", "translate") for mode in ("fp32", "bf16")
    }
    assert all(r["img_per_s"] > 0 for r in rows) and bench["cyclegan"]["flops_per_step"] > 0
    page = (tmp_path / "bench_quick.md").read_text()
    assert page.startswith("# Benchmarks") and "## Scoring against cityscapesscripts" in page
    assert "| tiny | train | fp32 |" in page
    assert page.index("<!-- measurement scoring -->") < page.index("<!-- /measurement scoring -->")


def test_a_projection_keeps_every_other_measurement_of_the_page_byte_for_byte(tmp_path):
    """The committed page (two sittings of measurements) gains the projection's own block; not
    one byte of the measured sections changes."""
    for suffix in (".md", ".json"):
        shutil.copy(REPO_ROOT / "reports" / f"bench{suffix}", tmp_path / f"bench_quick{suffix}")
    before = (tmp_path / "bench_quick.md").read_text()
    measured = json.loads((tmp_path / "bench_quick.json").read_text())
    assert "| demo | train | fp32 | 3.94 |" in before  # a measured row the page must keep
    main(["--quick", "--out", str(tmp_path), "projection"])
    after = (tmp_path / "bench_quick.md").read_text()
    assert after.startswith(before)
    assert after[len(before) :].lstrip("\n").startswith("<!-- measurement projection -->")
    assert "PROJECTIONS, not measurements" in after[len(before) :]
    data = json.loads((tmp_path / "bench_quick.json").read_text())
    assert {k: data[k] for k in ("cyclegan", "reference")} == {
        k: measured[k] for k in ("cyclegan", "reference")
    }
    assert {k: data["runs"][k] for k in ("cyclegan", "reference")} == {
        k: measured["runs"][k] for k in ("cyclegan", "reference")
    }
    assert data["projection"]["rows"][0]["stage"] == "prepare"


def test_a_rerun_replaces_only_its_own_block():
    page = "# T\n\nprose\n"
    page = merge_block(page, "a", "A rows, first sitting\n")
    page = merge_block(page, "b", "B rows\n")
    rerun = merge_block(page, "a", "A rows, second sitting\n")
    assert rerun == page.replace("A rows, first sitting", "A rows, second sitting")
    assert rerun.count("<!-- measurement a -->") == 1 and rerun.startswith("# T\n\nprose\n")


def test_interleaved_timing_takes_every_candidate_in_turn():
    calls: list[str] = []
    samples = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, 2)
    assert calls == ["a", "a", "b", "b"] * 3
    assert all(len(seconds) == 3 and min(seconds) >= 0 for seconds in samples.values())


def test_table_and_ratios():
    rows = rate_rows({"fp32": [0.5, 0.5], "bf16": [1 / 3]}, 1)
    assert table(rows, "mode|img_per_s=img/s|speedup=x fp32") == (
        "| mode | img/s | x fp32 |\n|---|---:|---:|\n| fp32 | 2 | 1 |\n| bf16 | 3 | 1.5 |"
    )


def test_isolated_jobs_run_in_a_fresh_process_and_failures_are_named():
    assert isolated("os:getpid") != os.getpid()
    assert "StatisticsError" in isolated("statistics:median", data=[])["error"]


def test_reference_comparison_is_skipped_without_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM2REAL_REFERENCE", str(tmp_path))
    assert "no reference checkout" in cpu.against_reference(True)["skipped"]


def test_gpu_suite_runs_on_the_cpu_and_skips_what_is_not_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("SIM2REAL_GPU_PARTS", "eager,translate")
    monkeypatch.setenv("SIM2REAL_REFERENCE", str(tmp_path))  # no reference: its row is skipped
    main(["--quick", "--out", str(tmp_path), "gpu"])
    results = json.loads((tmp_path / "gpu_quick.json").read_text())["gpu"]
    assert [row["mode"] for row in results["eager"]] == ["fp32", "bf16", "bf16+cl", "bf16+host"]
    assert all(row["share_of_bf16_matmul"] > 0 and row["peak_mb"] > 0 for row in results["eager"])
    assert [row["size"] for row in results["translate"]] == ["32x64", "64x128"]
    assert {"reference", "compiled", "segmentation"} <= results["skipped"].keys()
    assert "## CycleGAN step, eager levers" in (tmp_path / "gpu_quick.md").read_text()


def test_projection_of_the_real_data_profile():
    results = scaling.projection(True)
    rows = {row["stage"]: row for row in results["rows"]}
    assert list(rows) == ["prepare", "train_cyclegan", "translate", "train_seg", "evaluate"]
    assert "8.0 GTA5 epochs" in rows["train_cyclegan"]["work"]
    for stage in ("train_cyclegan", "train_seg"):
        assert rows[stage]["hours_8"] < rows[stage]["hours_1"]
    assert rows["prepare"]["hours_8"] == rows["prepare"]["hours_1"]  # CPU work
    assert rows["translate"]["hours_8"] == pytest.approx(rows["translate"]["hours_1"] / 8, abs=0.01)


def test_scaling_exponent_of_linear_and_quadratic_growth():
    assert scaling.exponent([1, 2, 4], [3.0, 6.0, 12.0]) == pytest.approx(1.0)
    assert scaling.exponent([1, 2, 4], [1.0, 4.0, 16.0]) == pytest.approx(2.0)


def test_profile_categories_and_onednn_log_parsing():
    assert profile.categorise("aten::convolution_backward") == "conv backward"
    assert profile.categorise("aten::mkldnn_convolution") == "conv forward"
    assert profile.categorise("aten::native_group_norm_backward") == "norm backward"
    assert profile.categorise("aten::native_group_norm") == "norm forward"
    assert profile.categorise("aten::reflection_pad2d_backward") == "reflection pad"
    assert profile.categorise("something::new") == "other"
    log = [
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit_bf16:avx512_core_bf16,"
        "forward_training,src:bf16,attr,,1x64x18x34,2.5",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16,attr,,64x64x3x3,0.5",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit_bf16:avx512_core_bf16,"
        "backward_data,src:bf16,attr,,1x64x18x34,1.5",
        "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,x,y,z,a,,b,9.0",
        '{"ms_per_step": 1.0}',
    ]
    summary = profile.onednn_summary(log, steps=2)
    assert summary == {"convolution jit_bf16:avx512_core_bf16": 2.0, "reorder jit:uni": 0.25}


@pytest.mark.parametrize(("model", "mode"), [("cyclegan", "bf16"), ("seg", "bf16+cl")])
def test_profile_of_the_real_step(model, mode):
    result = profile.profile_mode(model, True, mode, steps=1)
    assert result["ms_per_step"] > 0 and result["categories"]["conv backward"] > 0
    if runtime.cpu_has_bf16_acceleration():
        # Without AVX512-BF16 / AMX, oneDNN runs no bf16 convolution (torch's fallback does).
        assert any(key.startswith("convolution ") for key in result["onednn"])
    section = profile.model_section("x", {"fp32": result, mode: result})
    assert "| total | " in section and f"x fp32 ({mode})" in section


def test_quality_page_compares_default_with_fp32_and_seed_noise(tmp_path):
    curves = tmp_path / "curves.csv"
    keys = ["step", *training.CURVE_KEYS]
    lines = [",".join(keys)] + [",".join([str(s)] + [str(float(s))] * 4) for s in (1, 2, 3, 4)]
    curves.write_text("\n".join(lines) + "\n")
    assert training.late_means(curves)["loss_cycle_sim"] == pytest.approx(4.0)
    seg = {"part": "seg", "final_loss": 0.3, "pixel_accuracy": 0.9}
    rows = [
        {**seg, "precision": "fp32", "seed": 0, "miou": 0.50},
        {**seg, "precision": "bf16+cl", "seed": 0, "miou": 0.51},
        {**seg, "precision": "bf16+cl", "seed": 1, "miou": 0.48},
    ]
    page = training.quality_page({"torch": "t", "rows": rows})
    assert "| miou | 0.5000 | 0.5100 | +0.0100 | 0.0300 |" in page
