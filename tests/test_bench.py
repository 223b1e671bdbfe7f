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


def test_profile_categories_and_onednn_log_parsing():
    from benchmarks import profile_step as prof

    assert prof.categorise("aten::convolution_backward") == "conv backward"
    assert prof.categorise("aten::mkldnn_convolution") == "conv forward"
    assert prof.categorise("aten::native_group_norm_backward") == "norm backward"
    assert prof.categorise("aten::native_group_norm") == "norm forward"
    assert prof.categorise("aten::reflection_pad2d_backward") == "reflection pad"
    assert prof.categorise("something::new") == "other"
    log = [
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit_bf16:avx512_core_bf16,"
        "forward_training,src:bf16,attr,,1x64x18x34,2.5",
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:bf16,attr,,64x64x3x3,0.5",
        "onednn_verbose,v1,primitive,exec,cpu,convolution,jit_bf16:avx512_core_bf16,"
        "backward_data,src:bf16,attr,,1x64x18x34,1.5",
        "onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,x,y,z,a,,b,9.0",
        '{"ms_per_step": 1.0}',
    ]
    summary = prof._onednn_summary(log, steps=2)
    assert summary == {"convolution jit_bf16:avx512_core_bf16": 2.0, "reorder jit:uni": 0.25}


@pytest.mark.parametrize(
    ("model", "mode"), [("cyclegan", "fp32"), ("cyclegan", "bf16"), ("seg", "bf16+cl")]
)
def test_profile_job_runs_the_real_step(monkeypatch, model, mode):
    from benchmarks import profile_step as prof

    monkeypatch.chdir(REPO_ROOT)
    job = {"model": model, "config": "demo", "mode": mode, "steps": 1, "warmup": 1, "threads": 1}
    result = prof._run(job)
    assert result["ms_per_step"] > 0
    assert result["categories"]["conv backward"] > 0
    assert any(key.startswith("convolution ") for key in result["onednn"])


def test_quality_page_compares_default_with_fp32_and_seed_noise(tmp_path):
    from benchmarks import quality

    curves = tmp_path / "curves.csv"
    keys = ["step", *quality.CURVE_KEYS]
    lines = [",".join(keys)] + [",".join([str(s)] + [str(float(s))] * 4) for s in (1, 2, 3, 4)]
    curves.write_text("\n".join(lines) + "\n")
    assert quality._late_means(curves)["loss_cycle_sim"] == pytest.approx(4.0)

    rows = [
        {
            "part": "seg",
            "precision": "fp32",
            "seed": 0,
            "miou": 0.50,
            "final_loss": 0.3,
            "pixel_accuracy": 0.9,
        },
        {
            "part": "seg",
            "precision": "bf16+cl",
            "seed": 0,
            "miou": 0.51,
            "final_loss": 0.3,
            "pixel_accuracy": 0.9,
        },
        {
            "part": "seg",
            "precision": "bf16+cl",
            "seed": 1,
            "miou": 0.48,
            "final_loss": 0.3,
            "pixel_accuracy": 0.9,
        },
    ]
    page = quality.markdown({"command": "x", "torch": "t", "rows": rows})
    assert "| miou | 0.5000 | 0.5100 | +0.0100 | 0.0300 |" in page
