"""The benchmark page: mean and spread over runs, gap closed, convergence from the val curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import benchmark

VARIANTS = ("source_only", "cyclegan", "oracle")


def _run(root: Path, miou: dict[str, float], curve: list[float], fcn: float | None = None) -> Path:
    (root / "reports" / "metrics").mkdir(parents=True)
    (root / "reports" / "figures").mkdir()
    (root / "reports" / "figures" / "per_class_iou.png").write_bytes(b"png")
    (root / "reports" / "comparison.md").write_text(f"# {root.name}\n")
    (root / "reports" / "comparison.csv").write_text("variant,miou\n" + "".join(
        f"{v},{miou[v]}\n" for v in VARIANTS
    ))  # fmt: skip
    for variant in VARIANTS:
        scores = {"miou": miou[variant], "pixel_accuracy": miou[variant] + 0.3}
        (root / "reports" / "metrics" / f"{variant}.json").write_text(json.dumps(scores))
        folder = root / "models" / "seg" / variant
        folder.mkdir(parents=True)
        rows = "".join(f"{100 * (i + 1)},{m},0.5\n" for i, m in enumerate(curve))
        (folder / "val_curve.csv").write_text(f"step,monitor_miou,monitor_pixel_accuracy\n{rows}")
    if fcn is not None:  # the CycleGAN translator's scores, where its stages write them
        scored = root / "reports" / "translators" / "cyclegan"
        scored.mkdir(parents=True)
        translated = {"miou": fcn, "pixel_accuracy": 0.9}
        (scored / "scores.json").write_text(json.dumps({"translated": translated}))
        (scored / "translate.json").write_text(json.dumps({"hist_distance_after": fcn / 2}))
        (root / "reports" / "cyclegan.json").write_text(json.dumps({"img_per_s": 4.0}))
    return root


def test_page_has_means_spreads_gap_closed_and_last_fifth_gains(tmp_path, capsys) -> None:
    curve = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.86]  # steps 100..1000
    first = _run(tmp_path / "seed0", {"source_only": 0.1, "cyclegan": 0.3, "oracle": 0.5}, curve)
    second = _run(tmp_path / "seed1", {"source_only": 0.2, "cyclegan": 0.3, "oracle": 0.6}, curve)
    out = tmp_path / "page"
    benchmark.main(["--run", str(first), "--run", str(second), "--out", str(out)])
    page = (out / "comparison.md").read_text()
    # cyclegan: mean 30.0, spread 0; source 15.0 -> oracle 55.0: (30 - 15) / 40 = 38%.
    # Last fifth: steps >= 800 -> 0.8 to 0.86, +6.0 points.
    assert "| cyclegan | 30.0 | 0.0 | 60.0 | 0.0 | 38% | 38% | +6.0 |" in page
    assert "| source_only | 15.0 | 10.0 |" in page and "| oracle | 55.0 | 10.0 |" in page
    assert (out / "seed1" / "oracle" / "val_curve.csv").is_file()
    assert json.loads((out / "seed1" / "oracle" / "metrics.json").read_text())["miou"] == 0.6
    runs = json.loads((out / "runs.json").read_text())
    assert runs["seed0"]["variants"]["oracle"]["miou"] == pytest.approx(50.0)


def test_a_missing_curve_reads_as_not_measured(tmp_path) -> None:
    assert benchmark.last_fifth_gain(tmp_path / "val_curve.csv") is None


def test_only_the_named_variants_are_read(tmp_path) -> None:
    curve = [0.1, 0.2]
    run = _run(tmp_path / "seed0", {"source_only": 0.1, "cyclegan": 0.3, "oracle": 0.5}, curve)
    (run / "reports" / "metrics" / "cyclegan.json").unlink()  # a variant this run left out
    out = tmp_path / "page"
    benchmark.main(["--run", str(run), "--out", str(out), "--variants", "source_only", "oracle"])
    page = (out / "comparison.md").read_text()
    assert "| oracle | 50.0 |" in page and "cyclegan" not in page


def test_rankings_hold_only_above_in_every_run_and_beyond_the_spread(tmp_path) -> None:
    curve = [0.1, 0.2]
    runs = [
        _run(tmp_path / f"seed{i}", {"source_only": s, "cyclegan": c, "oracle": 0.9}, curve, fcn)
        for i, (s, c, fcn) in enumerate([(0.10, 0.30, 0.4), (0.12, 0.14, 0.5), (0.14, 0.31, 0.6)])
    ]
    out = tmp_path / "page"
    benchmark.main([*(f"--run={run}" for run in runs), "--out", str(out)])
    page = (out / "comparison.md").read_text()
    # oracle over source_only: above in every run, 78.0 points against a spread of 4.0.
    assert "| oracle | source_only | 78.0 | 4.0 | yes | **yes** |" in page
    # cyclegan over source_only: above in every run (by 2 points in seed1), but the mean
    # difference 13.0 is below cyclegan's spread 17.0: no ranking.
    assert "| cyclegan | source_only | 13.0 | 17.0 | yes | no |" in page
    assert (
        "| variant | seed0 | seed1 | seed2 |" in page
        and "| cyclegan | 30.0 | 14.0 | 31.0 |" in page
    )
    # The translator beside its variant: FCN-score 50.0 (spread 20.0), colour distance 0.25,
    # 4 img/s, downstream = the cyclegan variant, 25.0 mIoU (spread 17.0).
    assert "| cyclegan | 50.0 (20.0) | 0.250 (0.100) | 4.00 (0.00) | 25.0 (17.0) |" in page
    assert "![validation curves](val_curves.png)" in page
    assert (out / "val_curves.png").read_bytes()[:4] == b"\x89PNG"
    runs_json = json.loads((out / "runs.json").read_text())
    assert runs_json["seed2"]["translators"]["cyclegan"]["fcn_miou"] == pytest.approx(60.0)


def test_runs_without_translators_leave_that_section_out(tmp_path) -> None:
    run = _run(tmp_path / "seed0", {"source_only": 0.1, "cyclegan": 0.3, "oracle": 0.5}, [0.1])
    out = tmp_path / "page"
    benchmark.main(["--run", str(run), "--out", str(out)])
    assert "## Translators" not in (out / "comparison.md").read_text()


def test_the_readme_section_is_rewritten_between_its_markers_only(tmp_path) -> None:
    curve = [0.1, 0.2]
    runs = [
        _run(tmp_path / f"seed{i}", {"source_only": s, "cyclegan": c, "oracle": 0.9}, curve, 0.4)
        for i, (s, c) in enumerate([(0.10, 0.30), (0.12, 0.14), (0.14, 0.31)])
    ]
    readme = tmp_path / "README.md"
    readme.write_text(
        "intro\n<!-- benchmark:start -->\nstale numbers\n<!-- benchmark:end -->\noutro\n"
    )
    out = tmp_path / "reports" / "benchmark"
    benchmark.main([*(f"--run={run}" for run in runs), "--out", str(out), "--readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n<!-- benchmark:start -->") and text.endswith("end -->\noutro\n")
    assert "stale numbers" not in text and "[reports/benchmark/comparison.md]" in text
    assert "| oracle | 90.0 | 0.0 |" in text
    # cyclegan is above source_only in every run but within its spread: only the oracle ranks.
    assert "hold (above in every run, by more than the larger spread of the two): " in text
    assert "two): the oracle > every other variant. No other pair" in text
    assert "| cyclegan | 40.0 (0.0) |" in text
    unmarked = tmp_path / "plain.md"
    unmarked.write_text("no markers\n")
    with pytest.raises(SystemExit, match=r"plain\.md: no <!-- benchmark:start -->"):
        benchmark.main([f"--run={runs[0]}", "--out", str(out), "--readme", str(unmarked)])
    assert unmarked.read_text() == "no markers\n"


def test_a_page_of_method_variants_without_an_oracle_has_its_own_readme_block(tmp_path) -> None:
    """Runs that trained no oracle (method variants only): the gap columns say n/a rather
    than fail, and the page goes to its own README block, leaving the main one as it was."""
    runs = [
        _run(tmp_path / f"seed{i}", {"source_only": s, "cyclegan": c, "oracle": 0.9}, [0.1], 0.4)
        for i, (s, c) in enumerate([(0.10, 0.30), (0.12, 0.34), (0.14, 0.31)])
    ]
    main_block = "<!-- benchmark:start -->\nmain table\n<!-- benchmark:end -->\n"
    readme = tmp_path / "README.md"
    readme.write_text(main_block + "<!-- methods:start -->\nstale methods\n<!-- methods:end -->\n")
    out = tmp_path / "reports" / "methods"
    options = ["--readme-marker", "methods", "--title", "Methods"]
    variants = ["--variants", "source_only", "cyclegan"]
    runs_given = [f"--run={run}" for run in runs]
    benchmark.main([*runs_given, "--out", str(out), "--readme", str(readme), *options, *variants])
    page = (out / "comparison.md").read_text()
    assert page.startswith("# Methods\n")
    assert "| cyclegan | 31.7 | 4.0 | 61.7 | 4.0 | n/a | n/a | +0.0 |" in page
    text = readme.read_text()
    assert text.startswith(main_block) and "stale methods" not in text
    assert "--readme README.md --readme-marker methods`" in text
    # cyclegan over source_only: above in every run, 19.7 points against a spread of 4.0.
    assert "two): cyclegan > source_only (+19.7). No other pair" in text


def test_fewer_than_three_runs_are_reported_in_readme_but_not_claimed(tmp_path) -> None:
    runs = [
        _run(tmp_path / f"seed{i}", {"source_only": 0.1, "cyclegan": c, "oracle": 0.9}, [0.1])
        for i, c in enumerate([0.30, 0.34])
    ]
    readme = tmp_path / "README.md"
    readme.write_text("<!-- benchmark:start -->\n<!-- benchmark:end -->\n")
    out = tmp_path / "page"
    benchmark.main([*(f"--run={run}" for run in runs), "--out", str(out), "--readme", str(readme)])
    text = readme.read_text()
    assert "from 2 run(s), fewer than the 3 a claim needs (measured, not claimed): " in text
    assert "Rankings that hold" not in text
