"""`sim2real-compare`: runs of two datasets never share a table; filters; chain order."""

from __future__ import annotations

import pytest

from pipeline import compare
from pipeline.cli.compare import main
from pipeline.tracking.runs import MlflowTracker

SCORES = {  # variant: (miou, pixel accuracy)
    "oracle": (0.6, 0.9),
    "fda": (0.25, 0.6),
    "source_only": (0.2, 0.5),
    "cyclegan": (0.4, 0.8),
}


def _variant_run(variant, dataset, digest, miou, accuracy, commit) -> str:
    tags = {
        "stage": "train_seg",
        "variant": variant,
        "dataset": dataset,
        "dataset_digest": digest,
        "git_commit": commit,
    }
    tracker = MlflowTracker("cmp", variant, tags=tags)
    tracker.log_metrics(
        {
            "val_miou": miou,
            "val_pixel_accuracy": accuracy,
            "val_mean_class_accuracy": miou,
            "val_fwiou": accuracy,
        }
    )
    tracker.finish()
    return tracker.run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        store = tmp_path_factory.mktemp("store") / "mlflow.db"
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
        ids = {}
        for variant, (miou, accuracy) in SCORES.items():
            run = _variant_run(variant, "demo", "aaaa11112222", miou, accuracy, "c1")
            ids["demo", variant] = run
        # A second dataset, with other numbers; cyclegan trained twice there (newest counts).
        _variant_run("source_only", "city", "bbbb33334444", 0.1, 0.3, "c2")
        _variant_run("cyclegan", "city", "bbbb33334444", 0.15, 0.35, "c2")
        ids["city", "cyclegan"] = _variant_run("cyclegan", "city", "bbbb33334444", 0.2, 0.4, "c3")
        yield ids


def test_datasets_get_their_own_tables_in_chain_order(runs) -> None:
    runs_frame = compare.finished_variant_runs("cmp")
    tables = compare.tables_by_dataset(runs_frame, ["source_only", "cyclegan", "fda", "oracle"])
    assert set(tables) == {"demo (aaaa11112222)", "city (bbbb33334444)"}
    demo = tables["demo (aaaa11112222)"]
    assert list(demo.index) == ["source_only", "cyclegan", "fda", "oracle"]
    assert demo.loc["cyclegan", "miou"] == 0.4
    assert demo.loc["cyclegan", "gap_closed_miou"] == pytest.approx(0.5)
    assert demo.loc["fda", "gap_closed_pixel_accuracy"] == pytest.approx(0.25)
    city = tables["city (bbbb33334444)"]
    assert list(city.index) == ["source_only", "cyclegan"]
    assert city.loc["cyclegan", "run"] == runs["city", "cyclegan"]  # the newest of the two
    assert city["gap_closed_miou"].isna().all()  # no oracle there: no gap to measure


def test_filters_by_dataset_digest_and_commit(runs) -> None:
    assert compare.finished_variant_runs("cmp", dataset="city")["tags.dataset"].eq("city").all()
    by_digest = compare.finished_variant_runs("cmp", dataset="aaaa11")
    assert sorted(by_digest["tags.variant"]) == sorted(SCORES)
    assert list(compare.finished_variant_runs("cmp", commit="c3")["run_id"]) == [
        runs["city", "cyclegan"]
    ]
    assert compare.finished_variant_runs("cmp", dvc_exp="nope").empty


def test_command_prints_percent_and_gap_closed(runs, capsys) -> None:
    main(["--experiment", "cmp", "--dataset", "demo"])
    out = capsys.readouterr().out
    assert "dataset demo (aaaa11112222)" in out and "city" not in out
    lines = out.splitlines()
    header = lines[1]
    assert "mIoU" in header and "gap closed (mIoU)" in header
    cyclegan = next(line for line in lines if line.startswith("   cyclegan"))
    assert "40.0" in cyclegan.split() and "50%" in cyclegan.split()
    main(["--experiment", "cmp", "--dataset", "nowhere"])
    assert "match" in capsys.readouterr().out
