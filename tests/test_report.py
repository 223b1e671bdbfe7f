"""Comparison report: numbers equal the metrics files, gap-closure arithmetic, figures written."""

from __future__ import annotations

import json
import math
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from pipeline.cli import readme
from pipeline.config import DataConfig, DatasetSpec
from pipeline.data.identity import SplitHasher, build_identity, write_identity
from pipeline.data.labels import CLASS_NAMES
from pipeline.report import figures, pages, scores, tables, write
from tests.conftest import TEST_PARAMS

VARIANTS = ["source_only", "fda", "cyclegan", "source_st", "cyclegan_st", "oracle"]


def _metrics(rng, miou, pixel_accuracy):
    per_class = {name: float(rng.uniform(0, 1)) for name in CLASS_NAMES}
    per_class["rider"] = None  # absent from ground truth
    return {
        "pixel_accuracy": pixel_accuracy,
        "mean_class_accuracy": float(rng.uniform(0, 1)),
        "miou": miou,
        "fwiou": float(rng.uniform(0, 1)),
        "per_class_iou": per_class,
        "per_class_accuracy": dict(per_class),
        "n_images": 3,
    }


@pytest.fixture
def metrics_dir(tmp_path):
    rng = np.random.default_rng(0)
    values = {
        "source_only": (0.2, 0.5),
        "fda": (0.2, 0.6),
        "cyclegan": (0.35, 0.8),
        "source_st": (0.3, 0.7),
        "cyclegan_st": (0.45, 0.85),
        "oracle": (0.6, 0.9),
    }
    folder = tmp_path / "metrics"
    folder.mkdir()
    for variant, (miou, acc) in values.items():
        (folder / f"{variant}.json").write_text(json.dumps(_metrics(rng, miou, acc)))
    return folder


def test_gap_closed_arithmetic():
    assert scores.gap_closed(0.2, 0.2, 0.6) == 0.0
    assert scores.gap_closed(0.6, 0.2, 0.6) == 1.0
    assert scores.gap_closed(0.35, 0.2, 0.6) == pytest.approx(0.375)
    assert scores.gap_closed(0.1, 0.2, 0.6) == pytest.approx(-0.25)
    assert math.isnan(scores.gap_closed(0.5, 0.6, 0.6))  # no gap to close
    assert math.isnan(scores.gap_closed(0.5, 0.6, 0.4))  # oracle below source


def test_table_equals_metrics_files(metrics_dir):
    table = scores.add_gap_closure(scores.load_metrics(metrics_dir, VARIANTS))
    assert list(table.index) == VARIANTS
    for variant in VARIANTS:
        data = json.loads((metrics_dir / f"{variant}.json").read_text())
        for key in scores.SUMMARY:
            assert table.loc[variant, key] == data[key]
        for name in CLASS_NAMES:
            expected = data["per_class_iou"][name]
            value = table.loc[variant, f"iou_{name}"]
            assert (math.isnan(value) and expected is None) or value == expected
    assert table.loc["source_only", "gap_closed_miou"] == 0.0
    assert table.loc["oracle", "gap_closed_miou"] == 1.0
    assert table.loc["fda", "gap_closed_miou"] == 0.0
    assert table.loc["cyclegan", "gap_closed_miou"] == pytest.approx(0.375)
    assert table.loc["cyclegan", "gap_closed_pixel_accuracy"] == pytest.approx(0.75)
    markdown = pages.comparison_markdown(table, "demo (0123456789ab)")
    assert "Dataset **demo (0123456789ab)**" in markdown
    assert "| cyclegan | 80.0 |" in markdown and "| 37% | 75% |" in markdown
    assert "54.0" in markdown and "not this run" in markdown


# Four variants, so each one's made-up scores below follow from its position.
SYNTHIA_VARIANTS = ["source_only", "cyclegan", "fda", "oracle"]


def _synthia_metrics_dir(tmp_path):
    """Metrics files as a SYNTHIA run (evaluate.classes 16) writes them, with two cities."""
    folder = tmp_path / "synthia_metrics"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i, variant in enumerate(SYNTHIA_VARIANTS):
        data = _metrics(rng, 0.3 + 0.1 * i, 0.6)
        data.update(miou19=0.25 + 0.1 * i, miou16=0.3 + 0.1 * i, miou13=0.35 + 0.1 * i, classes=16)
        data["per_city"] = {
            city: {"miou": 0.2 + 0.1 * i + 0.05 * k, "n_images": 2 + k}
            for k, city in enumerate(["ulm", "aachen"])
        }
        (folder / f"{variant}.json").write_text(json.dumps(data))
    return folder


def test_synthia_report_sets_protocols_side_by_side_with_cities_and_its_references(tmp_path):
    folder = _synthia_metrics_dir(tmp_path)
    table = scores.add_gap_closure(scores.load_metrics(folder, SYNTHIA_VARIANTS))
    assert table.loc["fda", "miou13"] == pytest.approx(0.55)
    cities = scores.load_city_metrics(folder, SYNTHIA_VARIANTS)
    assert list(cities.index) == ["aachen", "ulm"] and list(cities["n_images"]) == [3, 2]
    assert cities.loc["aachen", "oracle"] == pytest.approx(0.55)
    data_report = {
        "splits": {
            "sim": {
                "class_pixels": {n: (0 if n in ("terrain", "truck") else 5) for n in CLASS_NAMES}
            }
        }
    }
    missing = scores.source_missing_classes(data_report)
    assert missing == ["terrain", "truck"]
    markdown = pages.comparison_markdown(
        table,
        "synthia-demo",
        classes=16,
        source_missing=missing,
        cities=cities,
        source_kind="synthia",
    )
    # mIoU is the 16-class mean; the other two protocols stand beside it.
    assert "| variant | pixel acc. | class acc. | mIoU | mIoU19 | mIoU13 | fwIoU |" in markdown
    assert "| cyclegan | 60.0 |" in markdown and "| 40.0 | 35.0 | 45.0 |" in markdown
    assert "labels no terrain, truck" in markdown
    assert "## mIoU by city (16 classes, %)" in markdown
    assert "| aachen | 3 | 25.0 | 35.0 | 45.0 | 55.0 |" in markdown
    # SYNTHIA's published rows replace the GTA5 ones.
    assert "| DAFormer | DAFormer (MiT-B5) | 60.9 | 67.4 | DAFormer paper |" in markdown
    assert "| DACS (self-training, ClassMix) | DeepLabv2 ResNet-101 | 48.3 | - |" in markdown
    assert "CyCADA (Hoffman" not in markdown


def test_gta5_report_keeps_one_miou_column(metrics_dir):
    table = scores.add_gap_closure(scores.load_metrics(metrics_dir, VARIANTS))
    markdown = pages.comparison_markdown(
        table, "demo", cities=scores.load_city_metrics(metrics_dir, VARIANTS)
    )
    assert "mIoU16" not in markdown and "by city" not in markdown
    assert "| mIoU | fwIoU |" in markdown and "CyCADA (Hoffman" in markdown


def test_missing_metrics_file_is_named(metrics_dir):
    with pytest.raises(FileNotFoundError, match=r"extra\.json"):
        scores.load_metrics(metrics_dir, [*VARIANTS, "extra"])


def _identity(work, roots: str) -> None:
    """A dataset identity file, as prepare writes it, for data under work/`roots`."""
    data = DataConfig(
        DatasetSpec("gta5", str(work / roots / "gta5")),
        DatasetSpec("cityscapes", str(work / roots / "cityscapes")),
        (16, 32),
        0,
        0.0,
        None,
    )
    hashers = {split: SplitHasher() for split in ("sim", "real_train", "real_val")}
    for split, hasher in hashers.items():
        hasher.add(split, roots)
    write_identity(work / "data" / "prepared", build_identity(data, hashers))


@pytest.fixture
def work(metrics_dir, tmp_path, monkeypatch):
    """Fabricated evaluate outputs and prepared val data (no training needed), as cwd."""
    rng = np.random.default_rng(1)
    work = tmp_path / "work"
    reports = work / "reports"
    shutil.copytree(metrics_dir, reports / "metrics")
    shutil.copy(TEST_PARAMS, work / "params.yaml")
    for variant in VARIANTS:
        confusion = pd.DataFrame(
            rng.integers(0, 100, (19, 19)), index=CLASS_NAMES, columns=CLASS_NAMES
        )
        (reports / "confusion").mkdir(exist_ok=True)
        confusion.to_csv(reports / "confusion" / f"{variant}.csv")
        (reports / "predictions").mkdir(exist_ok=True)
        np.save(
            reports / "predictions" / f"{variant}.npy",
            rng.integers(0, 19, (4, 32, 64), dtype=np.uint8),
        )
    class_pixels = {name: 10 for name in CLASS_NAMES}
    (reports / "data.json").write_text(
        json.dumps({"splits": {"sim": {"class_pixels": class_pixels}}})
    )
    val = work / "data" / "prepared" / "real_val"
    val.mkdir(parents=True)
    np.save(val / "images.npy", rng.integers(0, 256, (5, 16, 32, 3), dtype=np.uint8))
    np.save(val / "labels.npy", rng.integers(0, 19, (5, 16, 32), dtype=np.uint8))
    np.save(val / "labels_native.npy", rng.integers(0, 19, (5, 32, 64), dtype=np.uint8))
    (val / "names.json").write_text(json.dumps([f"f{i}" for i in range(5)]))
    pd.DataFrame({"step": [1, 2, 3], "loss_cycle_sim": [3.0, 2.0, 1.0]}).to_csv(
        reports / "cyclegan_losses.csv", index=False
    )
    (work / "README.md").write_text(
        "intro\n<!-- results:start -->\nold\n<!-- results:end -->\nend\n"
    )
    monkeypatch.chdir(work)
    return work


def test_curves_figure_draws_only_losses_on_the_loss_panel():
    """The learning rate of the run layer's CSV gets its own panel, not a line among losses."""
    curves = pd.DataFrame(
        {
            "step": [25, 50, 75],
            "loss_gan_sim2real": [0.6, 0.5, 0.4],
            "loss_cycle_sim": [5.0, 3.7, 3.1],
            "lr": [2e-4, 2e-4, 1e-4],
        }
    )
    figure = figures.curves_figure(curves, "CycleGAN")
    try:
        loss_axes, lr_axes = figure.axes
        assert [line.get_label() for line in loss_axes.get_lines()] == [
            "loss_gan_sim2real",
            "loss_cycle_sim",
        ]
        assert [list(line.get_ydata()) for line in lr_axes.get_lines()] == [[2e-4, 2e-4, 1e-4]]
    finally:
        plt.close(figure)
    figure = figures.curves_figure(curves.drop(columns="lr"), "no lr column")
    try:
        assert len(figure.axes) == 1 and len(figure.axes[0].get_lines()) == 2
    finally:
        plt.close(figure)


def test_report_stage_writes_table_and_figures(work):
    from stages import report as stage

    _identity(work, "data/demo")
    reports = work / "reports"
    stage.main([])
    assert "\nold\n" in (work / "README.md").read_text()  # README is no output of the stage
    readme.main(["--readme", "README.md", "--demo-data", "data/demo"])
    table = pd.read_csv(reports / "comparison.csv", index_col=0)
    assert table.loc["oracle", "miou"] == pytest.approx(0.6)
    for name in [
        "per_class_iou",
        "predictions",
        "cyclegan_curves",
        *(f"confusion_{v}" for v in VARIANTS),
    ]:
        path = reports / "figures" / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 5000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (work / "README.md").read_text()
    assert (
        "old" not in text
        and "| oracle |" in text
        and "Dataset **demo (" in text
        and text.startswith("intro")
        and text.endswith("end\n")
    )
    for variant in VARIANTS:
        summary = json.loads((work / "metrics" / f"{variant}.json").read_text())
        assert summary["miou"] == round(table.loc[variant, "miou"], 4)
        assert set(summary) == {*scores.SUMMARY, "gap_closed_miou", "gap_closed_pixel_accuracy"}
        per_class = pd.read_csv(reports / "per_class_iou" / f"{variant}.csv")
        assert list(per_class.columns) == ["class", "iou_percent"]
        # rider is absent from the ground truth: no bar for it.
        assert list(per_class["class"]) == [c for c in CLASS_NAMES if c != "rider"]
    assert json.loads((work / "metrics" / "oracle.json").read_text())["gap_closed_miou"] == 1.0
    assert "Dataset **demo (" in (reports / "comparison.md").read_text()


def test_readme_keeps_the_demo_results_when_the_data_is_another_dataset(work):
    from stages import report as stage

    _identity(work, "elsewhere")
    stage.main([])
    with pytest.raises(SystemExit, match="shows the demo data's results; these are elsewhere"):
        readme.main(["--readme", "README.md", "--demo-data", "data/demo"])
    assert "\nold\n" in (work / "README.md").read_text()
    assert "Dataset **elsewhere (" in (work / "reports" / "comparison.md").read_text()


def test_differences_are_marked_when_smaller_than_the_seed_spread(tmp_path):
    table = pd.DataFrame(
        {"miou": [0.10, 0.30, 0.32], "pixel_accuracy": [0.5, 0.7, 0.9]},
        index=pd.Index(["source_only", "cyclegan", "cyclegan_st"], name="variant"),
    )
    (tmp_path / "seeds.json").write_text(
        json.dumps(
            {
                "runs": ["baseline", "seed-1", "seed-2"],
                "variants": {
                    "source_only": {
                        "miou": [0.1, 0.12, 0.09],
                        "miou_spread": 0.03,
                        "pixel_accuracy_spread": 0.02,
                    },
                    "cyclegan": {
                        "miou": [0.3, 0.26, 0.27],
                        "miou_spread": 0.04,
                        "pixel_accuracy_spread": 0.05,
                    },
                    "cyclegan_st": {
                        "miou": [0.32, 0.3, 0.35],
                        "miou_spread": 0.05,
                        "pixel_accuracy_spread": 0.01,
                    },
                },
            }
        )
    )
    spread = scores.load_seed_spread(tmp_path / "seeds.json")
    lines = tables.differences_markdown(table, spread)
    assert "| cyclegan vs source_only | +20.0 | +20.0 |" in lines
    # +2.0 mIoU against a spread of 5.0: within; +20.0 pixel acc. against 5.0: not.
    assert "| cyclegan_st vs cyclegan | +2.0 (within spread) | +20.0 |" in lines
    assert "over 3 runs" in " ".join(lines)
    assert scores.load_seed_spread(tmp_path / "missing.json") is None
    # Stamped with its dataset, the spread is used for that dataset only.
    stamped = json.loads((tmp_path / "seeds.json").read_text()) | {"dataset": "demo (abc)"}
    (tmp_path / "seeds.json").write_text(json.dumps(stamped))
    assert scores.load_seed_spread(tmp_path / "seeds.json", "demo (abc)") is not None
    assert scores.load_seed_spread(tmp_path / "seeds.json", "elsewhere (def)") is None
    assert "single runs" in " ".join(tables.differences_markdown(table, None))


def test_translation_quality_has_a_row_per_translator_cyclegan_first(tmp_path) -> None:
    fcn = {"raw_sim": {"miou": 0.2, "pixel_accuracy": 0.5}}
    fcn["translated"] = {"miou": 0.3, "pixel_accuracy": 0.6}
    folder = tmp_path / "translators"
    for name in ("cut", "cyclegan"):
        (folder / name).mkdir(parents=True)
        (folder / name / "translate.json").write_text(
            json.dumps({"hist_distance_before": 1.5, "hist_distance_after": 0.25})
        )
    fid = {"computed": True, "raw_sim": {"fid": 80.0, "kid": 0.05}}
    fid["translated"] = {"fid": 40.0, "kid": 0.0125}
    (folder / "cyclegan" / "scores.json").write_text(json.dumps({**fcn, "fid_kid": fid}))
    not_computed = {"computed": False, "why": "fid.inception_weights is null (README)"}
    (folder / "cut" / "scores.json").write_text(json.dumps({**fcn, "fid_kid": not_computed}))
    lines = write.translation_scores(tmp_path)
    rows = [line for line in lines if line.startswith("| ") and "translator" not in line]
    assert (
        rows[0] == "| cyclegan | 20.0 -> 30.0 | 50.0 -> 60.0 | 1.500 -> 0.250 | 80.0 -> 40.0 "
        "| 5.00 -> 1.25 |"
    )
    assert rows[1] == "| cut | 20.0 -> 30.0 | 50.0 -> 60.0 | 1.500 -> 0.250 | - | - |"
    assert lines[-1] == "FID / KID not computed: fid.inception_weights is null (README)."
    assert write.translation_scores(tmp_path / "nothing") == []
