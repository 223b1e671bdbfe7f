"""Evaluation at label resolution, sharding, the train -> evaluate stages and their MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from pipeline.cli import compare as compare_command
from pipeline.data.identity import read_identity
from pipeline.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from pipeline.data.tensors import normalize, to_unit_float
from pipeline.evaluate import evaluate_images, metrics_json, protocol_scores, tracking_metrics
from pipeline.metrics import scores
from pipeline.models.model_folder import weights_digest
from pipeline.tracking.models import MODEL_DIGEST_TAG
from pipeline.tracking.runs import open_tracker, search_runs
from stages import demo_data, evaluate_translation, prepare, train_seg
from stages import evaluate as evaluate_stage
from tests.conftest import TEST_PARAMS

# Working size 64 x 128; the demo's label files are 128 x 256, so scoring upsamples 2x.
TINY = {
    "data": {"size": [64, 128]},
    "demo_data": {"n_source": 6, "n_target_train": 6, "n_target_val": 5, "size": [128, 256]},
    "train_seg": {"iters": 4, "batch": 2, "crop": [32, 64], "checkpoint_every": 2, "log_every": 2},
    "evaluate": {"batch": 2, "saved_predictions": 3},
    "tracking": {"experiment": "tiny", "enabled": True},
}


def make_repo(root: Path) -> None:
    """params.yaml (the repo's, shrunk) and prepared demo data under `root`; run from `root`."""
    params = yaml.safe_load(TEST_PARAMS.read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    demo_data.main(["--out", "data/demo"])
    prepare.main(["--out", "data/prepared", "--report", "reports/data.json"])


def train_and_evaluate(variant: str) -> dict[str, Path]:
    """Run the two stages as dvc.yaml does; return the output paths."""
    paths = {
        "model": Path(f"models/seg/{variant}"),
        "metrics": Path(f"reports/metrics/{variant}.json"),
        "confusion": Path(f"reports/confusion/{variant}.csv"),
        "predictions": Path(f"reports/predictions/{variant}.npy"),
    }
    train_seg.main(["--variant", variant, "--out", str(paths["model"])])
    evaluate_stage.main(
        ["--variant", variant, "--val", "data/prepared/real_val"]
        + [f"--{name}={path}" for name, path in paths.items()]
    )
    return paths


class ColourNet(nn.Module):
    """A fixed random 3x3 conv: cheap logits that vary over pixels and classes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, NUM_CLASSES, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _val(count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 64, 3) images and (N, 64, 128) labels with an ignore band: labels are 2x larger."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 32, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, (count, 64, 128)).astype(np.uint8)
    labels[:, :5] = IGNORE_INDEX
    return images, labels


def test_scores_at_label_resolution_match_a_hand_count_of_the_saved_predictions() -> None:
    images, labels = _val()
    model = ColourNet()
    cpu = torch.device("cpu")
    evaluation = evaluate_images(model, images, labels, 2, "fp32", cpu, keep=len(images))
    assert evaluation.predictions.shape == labels.shape
    assert evaluation.predictions.dtype == np.uint8

    # Logits are upsampled to the label size before the argmax (not predictions afterwards).
    with torch.no_grad():
        logits = model(normalize(to_unit_float(torch.from_numpy(images[:1]))))  # (1, C, 32, 64)
        logits = F.interpolate(logits, size=(64, 128), mode="bilinear")
    assert np.array_equal(evaluation.predictions[0], logits.argmax(1)[0].numpy())

    valid = labels != IGNORE_INDEX
    pairs = labels[valid].astype(np.int64) * NUM_CLASSES + evaluation.predictions[valid]
    by_hand = np.bincount(pairs, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)
    assert np.array_equal(evaluation.confusion.matrix.numpy(), by_hand)
    scores = evaluation.confusion.scores()
    assert scores["pixel_accuracy"] == pytest.approx(np.trace(by_hand) / by_hand.sum())
    union = by_hand.sum(0) + by_hand.sum(1) - np.diag(by_hand)
    assert scores["miou"] == pytest.approx(np.mean(np.diag(by_hand)[union > 0] / union[union > 0]))


def test_sharded_evaluation_sums_to_the_single_process_result(monkeypatch) -> None:
    images, labels = _val(7)
    cpu = torch.device("cpu")
    whole = evaluate_images(ColourNet(), images, labels, 3, "fp32", cpu, keep=4)
    matrix, predictions = 0, 0
    for rank in range(3):
        monkeypatch.setattr("pipeline.dist.shard", lambda n, r=rank: range(r, n, 3))
        part = evaluate_images(ColourNet(), images, labels, 3, "fp32", cpu, keep=4)
        # What all_reduce_sum does across ranks.
        matrix = matrix + part.confusion.matrix
        predictions = predictions + part.predictions.astype(np.int64)
    assert torch.equal(matrix, whole.confusion.matrix)
    assert np.array_equal(predictions, whole.predictions)


CITIES = ["bonn", "aachen", "bonn", "ulm", "aachen", "bonn", "ulm"]


def test_per_city_matrices_sum_exactly_to_the_overall_matrix(monkeypatch) -> None:
    images, labels = _val(len(CITIES))
    cpu = torch.device("cpu")
    # Batches of 3 mix cities, so every batch is split between city matrices.
    whole = evaluate_images(ColourNet(), images, labels, 3, "fp32", cpu, cities=CITIES)
    assert list(whole.city_confusion) == ["aachen", "bonn", "ulm"]
    assert whole.city_images == {"aachen": 2, "bonn": 3, "ulm": 2}
    summed = sum(city.matrix for city in whole.city_confusion.values())
    assert torch.equal(summed, whole.confusion.matrix)
    for city, confusion in whole.city_confusion.items():
        rows = [i for i, c in enumerate(CITIES) if c == city]
        alone = evaluate_images(ColourNet(), images[rows], labels[rows], 3, "fp32", cpu)
        assert torch.equal(confusion.matrix, alone.confusion.matrix), city
    # Sharded over 3 ranks, each rank's city matrices add up to the single-process ones.
    parts = {city: 0 for city in whole.city_confusion}
    for rank in range(3):
        monkeypatch.setattr("pipeline.dist.shard", lambda n, r=rank: range(r, n, 3))
        part = evaluate_images(ColourNet(), images, labels, 3, "fp32", cpu, cities=CITIES)
        for city, confusion in part.city_confusion.items():
            parts[city] = parts[city] + confusion.matrix
    for city, matrix in parts.items():
        assert torch.equal(matrix, whole.city_confusion[city].matrix), city


def test_metrics_json_holds_the_protocol_mean_and_per_city_scores() -> None:
    images, labels = _val(len(CITIES))
    cpu = torch.device("cpu")
    evaluation = evaluate_images(ColourNet(), images, labels, 4, "fp32", cpu, cities=CITIES)
    result = metrics_json(evaluation, classes=16)
    json.dumps(result, allow_nan=False)
    overall = scores(evaluation.confusion.matrix)
    assert result["miou19"] == pytest.approx(overall["miou"])
    assert result["miou"] == result["miou16"] and result["classes"] == 16
    assert result["pixel_accuracy"] == pytest.approx(overall["pixel_accuracy"])
    assert set(result["per_city"]) == {"aachen", "bonn", "ulm"}
    for city, confusion in evaluation.city_confusion.items():
        expected = protocol_scores(confusion.matrix, 16)
        got = result["per_city"][city]
        assert got["miou"] == pytest.approx(expected["miou16"]) and got["n_images"] > 0
        assert got["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])
    flat = tracking_metrics(result)
    assert flat["val_miou16"] == result["miou16"]
    assert flat["val_ulm_miou"] == result["per_city"]["ulm"]["miou"]
    assert (
        metrics_json(evaluate_images(ColourNet(), images, labels, 4, "fp32", cpu))["per_city"] == {}
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A tiny repo whose oracle was trained and evaluated by the real stages, logging to SQLite."""
    root = tmp_path_factory.mktemp("repo")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        make_repo(root)
        train_and_evaluate("oracle")
        yield root


def test_stages_write_metrics_confusion_and_predictions(repo) -> None:
    metrics = json.loads((repo / "reports/metrics/oracle.json").read_text())
    assert set(metrics) == {
        "pixel_accuracy",
        "mean_class_accuracy",
        "miou",
        "miou19",
        "miou16",
        "miou13",
        "classes",
        "fwiou",
        "per_class_iou",
        "per_class_accuracy",
        "n_images",
        "per_city",
        "inference",
    }
    assert metrics["n_images"] == 5 and metrics["classes"] == 19
    assert metrics["inference"] == "whole frame"  # evaluate.sliding_window null
    assert metrics["miou"] == metrics["miou19"]
    # The demo's val frames all sit in one city folder.
    assert set(metrics["per_city"]) == {"democity"}
    assert metrics["per_city"]["democity"]["n_images"] == 5
    assert metrics["per_city"]["democity"]["miou"] == pytest.approx(metrics["miou"])
    assert list(metrics["per_class_iou"]) == list(CLASS_NAMES)
    assert 0.0 <= metrics["miou"] <= 1.0
    confusion = pd.read_csv(repo / "reports/confusion/oracle.csv", index_col=0)
    assert list(confusion.columns) == list(CLASS_NAMES) and list(confusion.index) == list(
        CLASS_NAMES
    )
    assert confusion.index.name == "ground_truth"
    predictions = np.load(repo / "reports/predictions/oracle.npy")
    native = np.load(repo / "data/prepared/real_val/labels_native.npy")
    assert predictions.shape == (3, *native.shape[1:]) and predictions.dtype == np.uint8
    # The CSV is the matrix the scores came from.
    counts = confusion.to_numpy()
    assert metrics["pixel_accuracy"] == pytest.approx(np.trace(counts) / counts.sum())


def test_the_variant_run_carries_training_curves_and_scores(repo) -> None:
    run_id = json.loads((repo / "models/seg/oracle/run.json").read_text())["run_id"]
    runs = search_runs("tiny")
    row = runs.set_index("run_id").loc[run_id]
    assert row["tags.stage"] == "train_seg" and row["tags.variant"] == "oracle"
    assert row["tags.mlflow.runName"] == "oracle" and row["status"] == "FINISHED"
    metrics = json.loads((repo / "reports/metrics/oracle.json").read_text())
    assert row["metrics.val_miou"] == pytest.approx(metrics["miou"])
    assert row["metrics.val_iou_road"] == pytest.approx(metrics["per_class_iou"]["road"])
    assert np.isfinite(row["metrics.loss"]) and row["params.train_seg.arch"] == "Unet"
    from mlflow import MlflowClient

    artifacts = {a.path for a in MlflowClient().list_artifacts(run_id)}
    assert {"val_per_class.json", "val_confusion.json"} <= artifacts


def test_compare_prints_the_variant_run_under_its_dataset(repo, capsys) -> None:
    compare_command.main(["--experiment", "tiny"])
    lines = capsys.readouterr().out.splitlines()
    identity = read_identity(repo / "data/prepared")
    assert lines[0].startswith(f"dataset {identity.label}")
    assert "mIoU" in lines[1] and lines[2].split()[0] == "oracle"


def test_a_tracking_failure_stops_the_stage_after_the_metrics_file_is_written(
    repo, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(repo)
    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.safetensors", "model.json"):
        (model / name).symlink_to(repo / "models/seg/oracle" / name)
    (model / "run.json").write_text(json.dumps({"run_id": "0" * 32}))  # no such run
    metrics = tmp_path / "metrics.json"
    with pytest.raises(SystemExit) as stopped:
        evaluate_stage.main(
            [
                "--variant=oracle",
                f"--model={model}",
                "--val=data/prepared/real_val",
                f"--metrics={metrics}",
                f"--confusion={tmp_path / 'c.csv'}",
                f"--predictions={tmp_path / 'p.npy'}",
            ]
        )
    assert stopped.value.code == 2 and "not found" in capsys.readouterr().err
    assert json.loads(metrics.read_text())["n_images"] == 5


def test_fcn_score_of_an_identity_translation_equals_raw_sim(repo, monkeypatch) -> None:
    monkeypatch.chdir(repo)
    cyclegan = open_tracker(True, "tiny", "cyclegan", tags={"stage": "train_cyclegan"})
    cyclegan.finish()
    run_file = repo / "models/cyclegan/run.json"
    run_file.parent.mkdir(parents=True)
    run_file.write_text(json.dumps({"run_id": cyclegan.run_id}))
    # A translation that changes nothing must score exactly like the raw frames.
    translated = repo / "data/translated"
    translated.mkdir(parents=True)
    for name in ("images.npy", "names.json"):
        (translated / name).symlink_to(repo / "data/prepared/sim" / name)
    evaluate_translation.main(
        [
            "--oracle=models/seg/oracle",
            "--sim=data/prepared/sim",
            "--translated=data/translated",
            "--real=data/prepared/real_train",
            "--translator=models/cyclegan",
            "--out=reports/translators/cyclegan/scores.json",
        ]
    )
    scores = json.loads((repo / "reports/translators/cyclegan/scores.json").read_text())
    assert scores["translated"] == scores["raw_sim"]
    assert set(scores["raw_sim"]) == {"pixel_accuracy", "mean_class_accuracy", "miou"}
    # No Inception weights file in the settings: FID / KID say why they are missing.
    assert scores["fid_kid"] == {"computed": False, "why": "fid.inception_weights is null (README)"}
    row = search_runs("tiny").set_index("run_id").loc[cyclegan.run_id]
    assert row["metrics.fcn_translated_miou"] == pytest.approx(scores["translated"]["miou"])


def test_the_registered_model_segments_frames_of_any_size(repo, monkeypatch) -> None:
    """What a data team does: load the registered variant by name and segment their frames."""
    import mlflow

    from pipeline.segment import Segmenter

    monkeypatch.chdir(repo)
    client = mlflow.MlflowClient()
    (version,) = client.search_model_versions("name = 'tiny-oracle'")
    identity = read_identity(repo / "data/prepared")
    assert version.tags == {
        "variant": "oracle",
        "dataset": identity.name,
        "dataset_digest": identity.short_digest,
        MODEL_DIGEST_TAG: weights_digest(repo / "models/seg/oracle"),
    }
    run_id = json.loads((repo / "models/seg/oracle/run.json").read_text())["run_id"]
    assert version.run_id == run_id
    model = mlflow.pyfunc.load_model(f"models:/tiny-oracle/{version.version}")
    local = Segmenter.from_folder(repo / "models/seg/oracle")
    rng = np.random.default_rng(0)
    for size in ((256, 512), (1024, 2048)):
        frame = rng.integers(0, 256, (1, *size, 3), dtype=np.uint8)
        ids = model.predict(frame)
        assert ids.shape == (1, *size) and ids.dtype == np.uint8 and ids.max() < NUM_CLASSES
        assert np.array_equal(ids, local.predict(frame))


def test_runs_carry_the_data_they_read(repo) -> None:
    from mlflow import MlflowClient

    run_id = json.loads((repo / "models/seg/oracle/run.json").read_text())["run_id"]
    run = MlflowClient().get_run(run_id)
    identity = read_identity(repo / "data/prepared")
    contexts = {
        i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"]
        for i in run.inputs.dataset_inputs
    }
    name = identity.name
    assert contexts == {f"{name}/real_train": "training", f"{name}/real_val": "evaluation"}
    assert run.data.tags["dataset_digest"] == identity.short_digest
    assert run.data.params["data.target.root"] == identity.target["root"]
