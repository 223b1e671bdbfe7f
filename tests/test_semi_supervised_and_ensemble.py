"""A few labelled target frames beside a variant (semi-supervised), FDA's multi-band transfer (an
ensemble of three trained nets) and its self-supervised round (pseudo-labels by a trained row):
the draw, the step, the thresholds, the stages, MLflow, the report's marks and every bad
setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from mlflow import MlflowClient
from torch import nn

from pipeline.config import ConfigError, EnsembleSpec, TargetLabelsSpec, parse_params
from pipeline.data.index import DatasetError
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.split import PreparedSplit
from pipeline.models.ensemble import ProbabilityAverage
from pipeline.models.model_folder import ModelFolderError, load_model, write_ensemble
from pipeline.report.pages import comparison_markdown
from pipeline.report.rows import RowNote, Rows, comparison_rows, row_notes
from pipeline.segment import Segmenter, upsampled_argmax
from pipeline.tracking.runs import search_runs
from pipeline.train.semi_supervised import WithTargetLabels, draw_target_frames
from stages import demo_data, prepare, train_seg
from stages import ensemble as ensemble_stage
from stages import evaluate as evaluate_stage
from tests.conftest import TEST_PARAMS, params_section
from tests.test_evaluate import TINY
from tests.train.test_segmentation_loop import write_split

REAL_TRAIN = "data/prepared/real_train"
TARGET_LABELS = {"split": REAL_TRAIN, "frames": 3, "seed": 0, "weight": 1.0}
FDA_STYLE = {"images": "data/prepared/sim", "labels": "data/prepared/sim", "fda_style": REAL_TRAIN}
VARIANTS = {
    "fda_b01": {**FDA_STYLE, "fda_beta": 0.01},
    "fda_b05": {**FDA_STYLE, "fda_beta": 0.05},
    "fda_b09": {**FDA_STYLE, "fda_beta": 0.09},
    "sim_ssl3": {
        "images": "data/prepared/sim",
        "labels": "data/prepared/sim",
        "target_labels": TARGET_LABELS,
    },
}
ENSEMBLES = {"fda_mbt": {"members": ["fda_b01", "fda_b05", "fda_b09"]}}
ROUND = {
    "variant": "fda_b01",
    "images": "data/prepared/sim",
    "labels": "data/prepared/sim",
    "pseudo_labels": "fda_mbt",
    "split": REAL_TRAIN,
    "quantile": 0.66,
    "max_threshold": 0.9,
    "weight": 1.0,
}


def _params(**train_seg) -> dict:
    params = yaml.safe_load(TEST_PARAMS.read_text())
    params["train_seg"].update(train_seg)
    return params


def _bad(message: str, **train_seg) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_params(_params(**train_seg))


class Conv(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, NUM_CLASSES, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_the_ensemble_returns_its_members_mean_softmax() -> None:
    """FDA's evaluation_multi.py: softmax of each net, averaged 1/3 each."""
    members = [Conv(seed) for seed in range(3)]
    x = torch.randn(2, 3, 16, 24)
    mean = sum(m(x).softmax(dim=1) for m in members) / 3
    assert torch.allclose(ProbabilityAverage(members)(x), mean, atol=1e-7)


def test_the_scored_labels_are_the_argmax_of_the_probabilities_resized_as_fda_does() -> None:
    """FDA resizes the averaged probabilities to label size (bilinear) before the argmax; so
    does the evaluate stage with the ensemble's output. Resizing log-probabilities instead
    would relabel many pixels of these noisy frames."""
    members = [Conv(seed) for seed in range(3)]
    x = torch.randn(4, 3, 32, 64)
    with torch.no_grad():
        probabilities = ProbabilityAverage(members)(x)
    ours = torch.stack([upsampled_argmax(frame, (64, 128)) for frame in probabilities])
    fda = F.interpolate(probabilities, size=(64, 128), mode="bilinear").argmax(dim=1)
    assert torch.equal(ours, fda)
    of_logs = F.interpolate(probabilities.log(), size=(64, 128), mode="bilinear").argmax(dim=1)
    assert (of_logs != fda).float().mean() > 0.01


def test_an_ensemble_folder_loads_as_one_net_and_refuses_members_of_other_nets(tmp_path) -> None:
    from pipeline.models.model_folder import model_spec, write_model
    from pipeline.models.segmentation import build_segmentation_model

    folders = {}
    for seed, name in enumerate(("a", "b", "c")):
        torch.manual_seed(seed)
        net = build_segmentation_model("Unet", "tu-resnet10t", NUM_CLASSES, None)
        write_model(tmp_path / name, net, model_spec("Unet", "tu-resnet10t", (64, 128)))
        folders[name] = tmp_path / name
    spec = write_ensemble(tmp_path / "mbt", folders)
    assert spec["ensemble"] == {"members": ["a", "b", "c"]}
    model = load_model(tmp_path / "mbt")
    assert isinstance(model, ProbabilityAverage)
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        expected = sum(load_model(f)(x).softmax(dim=1) for f in folders.values()) / 3
        assert torch.allclose(model(x), expected, atol=1e-6)
    segmenter = Segmenter.from_folder(tmp_path / "mbt")
    frames = np.zeros((1, 90, 100, 3), dtype=np.uint8)
    assert segmenter.predict(frames).shape == (1, 90, 100)

    net = build_segmentation_model("Unet", "tu-resnet10t", NUM_CLASSES, None)
    write_model(tmp_path / "d", net, model_spec("Unet", "tu-resnet10t", (32, 64)))
    with pytest.raises(ModelFolderError, match=r"d/model.json: its keys input_size differ"):
        write_ensemble(
            tmp_path / "bad", {"a": folders["a"], "b": folders["b"], "d": tmp_path / "d"}
        )


def test_the_drawn_frames_depend_on_their_seed_only(tmp_path) -> None:
    split = write_split(tmp_path / "real", "real", 8)
    spec = TargetLabelsSpec(split=str(split.root), frames=3, seed=0, weight=1.0)
    first = draw_target_frames(split, spec)
    torch.manual_seed(123)
    np.random.seed(123)  # neither global generator is the draw's
    assert np.array_equal(draw_target_frames(split, spec), first)
    assert list(first) == sorted(first) and len(set(first)) == 3
    others = {
        tuple(draw_target_frames(split, TargetLabelsSpec(str(split.root), 3, s, 1.0)))
        for s in range(6)
    }
    assert len(others) > 1
    with pytest.raises(
        DatasetError, match=r"real: target_labels.frames is 9 but the split holds 8"
    ):
        draw_target_frames(split, TargetLabelsSpec(str(split.root), 9, 0, 1.0))
    (split.root / "labels.npy").unlink()
    with pytest.raises(DatasetError, match=r"real: target_labels needs a split with labels.npy"):
        draw_target_frames(PreparedSplit.open(split.root), spec)


class RecordingStep:
    """A step that records its calls and leaves no gradient."""

    def __init__(self) -> None:
        self.calls, self.updates = [], []

    def state(self) -> dict:
        return {"teacher": "kept"}

    def params(self) -> dict:
        return {"train_images": 8}

    def __call__(self, step: int) -> dict:
        self.calls.append(step)
        return {"loss": torch.tensor(1.0)}

    def after_update(self, step: int) -> None:
        self.updates.append(step)


def test_the_labelled_target_batch_adds_its_weighted_loss_to_the_wrapped_step(tmp_path) -> None:
    from pipeline.train.segmentation_steps import Student

    split = write_split(tmp_path / "real", "real", 8)
    config = params_section("train_seg", batch=2, crop=(32, 64), color_jitter=0.0)
    net = Conv(0)
    student = Student(net, torch.device("cpu"), "fp32", torch.contiguous_format, net=net)
    inner = RecordingStep()
    spec = TargetLabelsSpec(str(split.root), frames=2, seed=1, weight=0.5)
    step = WithTargetLabels(inner, student, config, split, spec)
    assert step.state() == {"teacher": "kept"}
    assert step.params() == {"train_images": 8, "target_label_frames": 2}
    assert step.names == [split.names[i] for i in draw_target_frames(split, spec)]
    torch.manual_seed(0)
    values = step(0)
    step.after_update(0)
    assert inner.calls == [0] and inner.updates == [0]
    assert set(values) == {"loss", "loss_target_labels"}
    gradient = net.conv.weight.grad.clone()
    # The same draw and augmentation by hand: the gradient is 0.5 times the loss's.
    net.zero_grad()
    torch.manual_seed(0)
    pick = step.index[torch.randint(2, (2,)).numpy()]
    x = torch.from_numpy(split.images[pick]).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(split.labels[pick]).long()
    x, y = step.augment(x, y)
    loss = step.loss(student(x), y)
    (0.5 * loss).backward()
    assert loss.item() == pytest.approx(values["loss_target_labels"].item(), rel=1e-6)
    assert torch.allclose(net.conv.weight.grad, gradient, atol=1e-7)


def test_bad_ensemble_and_target_label_settings_are_named() -> None:
    variants = {**_params()["train_seg"]["variants"], **VARIANTS}
    _bad(
        r"train_seg.ensembles.m.members = \['fda_b01', 'fda_b05'\] is not allowed; expected 3 "
        r"different variants",
        variants=variants,
        ensembles={"m": {"members": ["fda_b01", "fda_b05"]}},
    )
    _bad(
        r"train_seg.ensembles.m.members = \['fda_b01', 'fda_b01', 'fda_b05'\]",
        variants=variants,
        ensembles={"m": {"members": ["fda_b01", "fda_b01", "fda_b05"]}},
    )
    _bad(
        r"train_seg.ensembles.m.members\[2\] = 'nope' is not allowed; expected a trained "
        r"variant or round: one of source_only, ",
        variants=variants,
        ensembles={"m": {"members": ["fda_b01", "fda_b05", "nope"]}},
    )
    _bad(
        r"train_seg.ensembles = 'fda_b01' is not allowed; expected names of letters, digits "
        r"and '_' that no variant, ensemble or round has",
        variants=variants,
        ensembles={"fda_b01": {"members": ["fda_b01", "fda_b05", "fda_b09"]}},
    )
    _bad(
        r"unknown key train_seg.ensembles.m.weights",
        variants=variants,
        ensembles={"m": {"members": ["fda_b01", "fda_b05", "fda_b09"], "weights": [1, 1, 1]}},
    )
    for key, value, message in (
        ("frames", 0, "an integer > 0"),
        ("seed", -1, "an integer >= 0"),
        ("weight", 0.0, "a number > 0"),
        ("split", "data/prepared/real_val", "a labelled split other than real_val"),
    ):
        bad = {**VARIANTS["sim_ssl3"], "target_labels": {**TARGET_LABELS, key: value}}
        _bad(
            rf"train_seg.variants.x.target_labels.{key} = .* is not allowed; expected {message}",
            variants={**variants, "x": bad},
        )
    parsed = parse_params(_params(variants=variants, ensembles=ENSEMBLES)).train_seg
    assert parsed.ensembles == {"fda_mbt": EnsembleSpec(("fda_b01", "fda_b05", "fda_b09"))}
    assert parsed.variants["sim_ssl3"].inputs() == ["data/prepared/sim", REAL_TRAIN]


def test_the_report_marks_semi_supervised_rows_and_ensembles() -> None:
    variants = {**_params()["train_seg"]["variants"], **VARIANTS}
    config = parse_params(_params(variants=variants, ensembles=ENSEMBLES)).train_seg
    notes = row_notes(Rows(config.variants, config.ensembles, config.rounds))
    assert set(notes) == {"sim_ssl3", "fda_mbt"}
    assert notes["sim_ssl3"].mark == "semi-supervised, 3 target labels"
    assert notes["fda_mbt"].mark == "ensemble"
    columns = [
        "pixel_accuracy",
        "mean_class_accuracy",
        "miou",
        "fwiou",
        "gap_closed_miou",
        "gap_closed_pixel_accuracy",
        *(f"iou_{c}" for c in _class_names()),
    ]
    import pandas as pd

    table = pd.DataFrame(0.5, index=["source_only", "sim_ssl3", "fda_mbt"], columns=columns)
    page = comparison_markdown(table, "tiny", notes=notes)
    assert "| sim_ssl3 (semi-supervised, 3 target labels) | 50.0 |" in page
    assert "| fda_mbt (ensemble) | 50.0 |" in page
    assert "- **sim_ssl3**: semi-supervised: also trained on 3 labelled frames of" in page
    assert "- **fda_mbt**: FDA's multi-band transfer: the class probabilities of fda_b01, " in page
    plain = comparison_markdown(table, "tiny")
    assert "semi-supervised" not in plain and "| sim_ssl3 | 50.0 |" in plain
    assert RowNote("m", "t") == RowNote("m", "t")


def _class_names() -> list[str]:
    from pipeline.data.labels import CLASS_NAMES

    return list(CLASS_NAMES)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The three FDA nets, their ensemble and a semi-supervised net, by the real stages."""
    root = tmp_path_factory.mktemp("repo")
    params = yaml.safe_load(TEST_PARAMS.read_text())
    for section, values in TINY.items():
        params[section].update(values)
    params["train_seg"]["variants"].update(VARIANTS)
    params["train_seg"]["ensembles"] = ENSEMBLES
    params["train_seg"]["rounds"] = {"fda_ssl": ROUND}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        demo_data.main(["--out", "data/demo"])
        prepare.main(["--out", "data/prepared", "--report", "reports/data.json"])
        for variant in (*ENSEMBLES["fda_mbt"]["members"], "sim_ssl3"):
            train_seg.main(["--variant", variant, "--out", f"models/seg/{variant}"])
        ensemble_stage.main(
            [
                "--ensemble",
                "fda_mbt",
                "--models",
                "models/seg",
                "--out",
                "models/seg/fda_mbt",
                "--example",
                "data/prepared/real_val",
            ]
        )
        evaluate_stage.main(
            [
                "--variant",
                "fda_mbt",
                "--model",
                "models/seg/fda_mbt",
                "--val",
                "data/prepared/real_val",
                "--metrics",
                "reports/metrics/fda_mbt.json",
                "--confusion",
                "reports/confusion/fda_mbt.csv",
                "--predictions",
                "reports/predictions/fda_mbt.npy",
            ]
        )
        train_seg.main(["--round", "fda_ssl", "--out", "models/seg/fda_ssl"])
        yield root


def test_the_ensemble_stage_scores_the_three_nets_average_into_a_run_of_its_own(repo) -> None:
    metrics = json.loads((repo / "reports/metrics/fda_mbt.json").read_text())
    assert metrics["n_images"] == 5 and metrics["inference"] == "whole frame"
    model = load_model(repo / "models/seg/fda_mbt")
    members = [load_model(repo / "models/seg" / m) for m in ENSEMBLES["fda_mbt"]["members"]]
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        expected = sum(m(x).softmax(dim=1) for m in members) / 3
        assert torch.allclose(model(x), expected, atol=1e-6)
    run_id = json.loads((repo / "models/seg/fda_mbt/run.json").read_text())["run_id"]
    row = search_runs("tiny").set_index("run_id").loc[run_id]
    assert row["tags.stage"] == "ensemble" and row["tags.variant"] == "fda_mbt"
    assert row["params.members"] == "fda_b01, fda_b05, fda_b09"
    assert row["metrics.val_miou"] == pytest.approx(metrics["miou"])


def test_the_semi_supervised_run_names_its_frames_and_trains_on_them(repo) -> None:
    run_id = json.loads((repo / "models/seg/sim_ssl3/run.json").read_text())["run_id"]
    row = search_runs("tiny").set_index("run_id").loc[run_id]
    assert row["tags.semi_supervised"] == "true" and row["tags.target_label_frames"] == "3"
    assert row["params.target_label_frames"] == "3"
    path = MlflowClient().download_artifacts(run_id, "target_label_frames.json", str(repo))
    drawn = json.loads(Path(path).read_text())
    split = PreparedSplit.open(repo / REAL_TRAIN)
    spec = TargetLabelsSpec(REAL_TRAIN, 3, 0, 1.0)
    assert drawn == {
        "split": REAL_TRAIN,
        "frames": [split.names[i] for i in draw_target_frames(split, spec)],
    }
    curve = (repo / "models/seg/sim_ssl3/curve.csv").read_text()
    assert "loss_target_labels" in curve.splitlines()[0]


def test_the_settings_blocks_of_docs_data_md_are_valid() -> None:
    """docs/data.md's semi-supervised variant over the shipped settings, and its ensemble over the
    real-data profile (which trains the three FDA nets it names)."""
    from pipeline.config import apply_profile
    from tests.conftest import REPO_ROOT

    text = (REPO_ROOT / "docs/data.md").read_text()
    blocks = {}
    for title in ("A few labelled target frames", "FDA's multi-band transfer"):
        section = text.split(f"## {title}")[1]
        blocks[title] = yaml.safe_load(section.split("```yaml\n")[1].split("```")[0])
    shipped = yaml.safe_load(TEST_PARAMS.read_text())
    semi = parse_params(apply_profile(shipped, blocks["A few labelled target frames"]))
    variant = semi.train_seg.variants["cyclegan_st_ssl100"]
    assert variant.target_labels == TargetLabelsSpec(REAL_TRAIN, 100, 0, 1.0)
    assert variant.step == "dacs"
    profile = yaml.safe_load((REPO_ROOT / "profiles/gta5_cityscapes.yaml").read_text())
    real = apply_profile(shipped, profile)
    shown = blocks["FDA's multi-band transfer"]["train_seg"]["ensembles"]
    assert shown.items() <= real["train_seg"]["ensembles"].items()
    members = parse_params(real).train_seg.ensembles["fda_mbt"].members
    betas = [parse_params(real).train_seg.variants[m].fda_beta for m in members]
    assert betas == [0.01, 0.05, 0.09]


def _fda_thresholds(predicted: np.ndarray, level: np.ndarray, quantile: float, cap: float):
    """getSudoLabel_multi.py's loop, on the same confidence levels: sort each class's
    confidences, take the element at round(quantile * n), cap."""
    from pipeline.adapt.fda_rounds import LEVELS

    thresholds = []
    for c in range(NUM_CLASSES):
        x = np.sort(level[predicted == c])
        thresholds.append(
            0 if len(x) == 0 else x[min(int(np.round(len(x) * quantile)), len(x) - 1)]
        )
    return np.minimum(np.array(thresholds), round(cap * LEVELS))


def test_the_class_thresholds_are_fdas_order_statistic_of_each_class() -> None:
    from pipeline.adapt.fda_rounds import LEVELS, class_thresholds

    rng = np.random.default_rng(0)
    for quantile, cap in ((0.66, 0.9), (0.5, 1.0), (0.0, 0.9)):
        predicted = rng.integers(0, NUM_CLASSES - 2, 5000)  # the last two classes: no pixel
        level = rng.integers(0, LEVELS + 1, 5000)
        histogram = np.zeros((NUM_CLASSES, LEVELS + 1), dtype=np.int64)
        np.add.at(histogram, (predicted, level), 1)
        ours = class_thresholds(histogram, quantile, cap)
        assert np.array_equal(ours, _fda_thresholds(predicted, level, quantile, cap))
        assert ours[-1] == ours[-2] == 0


def test_pseudo_labels_keep_each_classs_confident_pixels_and_ignore_the_rest(tmp_path) -> None:
    from pipeline.adapt.fda_rounds import LEVELS, pseudo_label_split

    split = write_split(tmp_path / "real", "real", 6)
    model = ProbabilityAverage([Conv(seed) for seed in range(3)])
    labels, summary = pseudo_label_split(
        model, split, tmp_path / "work", 4, "fp32", torch.device("cpu"), 0.66, 0.9
    )
    x = torch.from_numpy(np.array(split.images)).permute(0, 3, 1, 2).float() / 255
    from pipeline.data.tensors import normalize

    with torch.no_grad():
        confidence, predicted = model(normalize(x)).max(dim=1)
    level = torch.round(confidence * LEVELS).long().numpy()
    predicted = predicted.numpy()
    thresholds = _fda_thresholds(predicted, level, 0.66, 0.9)
    expected = np.where(level < thresholds[predicted], 255, predicted).astype(np.uint8)
    assert np.array_equal(np.asarray(labels), expected)
    assert summary["thresholds"] == pytest.approx(list(thresholds / LEVELS))
    kept = (expected != 255).mean()
    assert summary["kept_share"] == pytest.approx(kept)
    # Each class keeps about its most confident third (ties at the threshold stay).
    assert 0.3 < kept < 0.5


def test_bad_round_settings_are_named() -> None:
    variants = {**_params()["train_seg"]["variants"], **VARIANTS}
    good = {"variants": variants, "ensembles": ENSEMBLES}
    for key, value, message in (
        ("variant", "nope", "a variant of train_seg.variants"),
        ("images", "data/translated", "data/prepared/sim, variant fda_b01's images"),
        ("pseudo_labels", "nope", "another row: a variant, ensemble or round"),
        ("pseudo_labels", "r", "another row"),
        ("split", "data/prepared/real_val", "a split other than real_val"),
        ("quantile", 1.0, r"a number in \[0, 1\)"),
        ("max_threshold", 0.0, r"a probability in \(0, 1\]"),
        ("weight", 0.0, "a number > 0"),
    ):
        _bad(
            rf"train_seg.rounds.r.{key} = .* is not allowed; expected {message}",
            rounds={"r": {**ROUND, key: value}},
            **good,
        )
    _bad(
        r"train_seg.rounds = 'fda_mbt' is not allowed; expected names of letters",
        rounds={"fda_mbt": ROUND},
        **good,
    )
    # A round labelled by an ensemble that holds it.
    looped = {"m": {"members": ["fda_b01", "fda_b05", "r"]}}
    _bad(
        r"train_seg.rounds.r.pseudo_labels = 'm' is not allowed; expected a row that does not "
        r"depend on round r itself",
        variants=variants,
        ensembles=looped,
        rounds={"r": {**ROUND, "pseudo_labels": "m"}},
    )


def test_rows_come_after_what_they_are_made_from_and_say_what_they_are() -> None:
    variants = {**_params()["train_seg"]["variants"], **VARIANTS}
    rounds = {
        "fda_ssl": ROUND,
        "ssl_of_semi": {
            **ROUND,
            "variant": "sim_ssl3",
            "images": "data/prepared/sim",
            "labels": "data/prepared/sim",
        },
    }
    ensembles = {**ENSEMBLES, "ssl_mbt": {"members": ["fda_ssl", "fda_b05", "fda_b09"]}}
    config = parse_params(_params(variants=variants, ensembles=ensembles, rounds=rounds)).train_seg
    rows = Rows(config.variants, config.ensembles, config.rounds)
    order = comparison_rows(rows)
    assert order[: len(variants)] == list(variants)
    assert order[len(variants) :] == ["fda_mbt", "fda_ssl", "ssl_mbt", "ssl_of_semi"]
    notes = row_notes(rows)
    assert notes["fda_ssl"].mark == "self-supervised round"
    assert "fda_b01's recipe trained again with the pseudo-labels fda_mbt gives" in (
        notes["fda_ssl"].text
    )
    assert notes["ssl_of_semi"].mark == "self-supervised round, semi-supervised"
    assert notes["ssl_mbt"].mark == "ensemble"


def test_the_round_trains_on_its_pseudo_labels_in_a_run_of_its_own(repo) -> None:
    run_id = json.loads((repo / "models/seg/fda_ssl/run.json").read_text())["run_id"]
    row = search_runs("tiny").set_index("run_id").loc[run_id]
    assert row["tags.variant"] == "fda_ssl" and row["tags.round_of"] == "fda_b01"
    assert row["tags.pseudo_labels"] == "fda_mbt" and row.get("tags.semi_supervised") != "true"
    assert row["params.pseudo_label_frames"] == str(
        len(PreparedSplit.open(repo / REAL_TRAIN).names)
    )
    path = MlflowClient().download_artifacts(run_id, "pseudo_labels.json", str(repo))
    summary = json.loads(Path(path).read_text())
    assert len(summary["thresholds"]) == NUM_CLASSES and 0 < summary["kept_share"] < 1
    header = (repo / "models/seg/fda_ssl/curve.csv").read_text().splitlines()[0]
    assert "loss_pseudo_labels" in header and "loss_entropy" not in header
    # The temporary labels are gone; the model folder is a plain one.
    assert not list((repo / "models/seg/fda_ssl").glob(".pseudo_labels_*"))
    assert "ensemble" not in json.loads((repo / "models/seg/fda_ssl/model.json").read_text())
