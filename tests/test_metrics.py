"""Confusion matrix and scores: hand-worked values and agreement with cityscapesscripts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cityscapesscripts.helpers.labels import id2label, trainId2label
from PIL import Image

from pipeline.data.labels import CLASS_NAMES, PROTOCOL_CLASSES
from pipeline.metrics import (
    ConfusionMatrix,
    cityscapes_reference_scores,
    protocol_mious,
    scores,
    scores_to_json,
)

NAMES4 = ("a", "b", "c", "d")
# Rows ground truth, columns prediction. Class c is predicted once (on a b pixel) but never in
# the ground truth; class d appears nowhere.
HAND = np.array(
    [
        [5, 1, 0, 0],
        [2, 3, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
)


def _assert_same_scores(a: dict, b: dict) -> None:
    """Equal up to rounding, NaN matching NaN, including the per-class dicts."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            _assert_same_scores(a[key], b[key])
        else:
            assert a[key] == pytest.approx(b[key], nan_ok=True), key


def test_hand_worked_scores() -> None:
    s = scores(HAND, NAMES4)
    iou = s["per_class_iou"]
    assert iou["a"] == pytest.approx(5 / 8)  # tp 5, fn 1, fp 2
    assert iou["b"] == pytest.approx(3 / 7)  # tp 3, fn 3, fp 1
    # Absent from the ground truth but predicted: tp 0, fp 1 -> 0, as cityscapesscripts has it.
    assert iou["c"] == 0.0
    assert math.isnan(iou["d"])  # tp + fp + fn == 0
    assert s["miou"] == pytest.approx((5 / 8 + 3 / 7 + 0.0) / 3)
    assert s["pixel_accuracy"] == pytest.approx(8 / 12)
    acc = s["per_class_accuracy"]
    assert acc["a"] == pytest.approx(5 / 6)
    assert acc["b"] == pytest.approx(3 / 6)
    assert math.isnan(acc["c"]) and math.isnan(acc["d"])
    assert s["mean_class_accuracy"] == pytest.approx((5 / 6 + 3 / 6) / 2)
    assert s["fwiou"] == pytest.approx(0.5 * 5 / 8 + 0.5 * 3 / 7)
    assert all(type(v) is float for v in (s["miou"], s["fwiou"], *iou.values()))


def _hand_matrix_19() -> np.ndarray:
    """A 19-class matrix whose protocol means are worked out by hand below."""
    t = {name: i for i, name in enumerate(CLASS_NAMES)}
    m = np.zeros((19, 19), dtype=np.int64)
    m[t["road"], t["road"]] = 8
    m[t["road"], t["terrain"]] = 2  # road predicted as terrain: a road miss under every protocol
    m[t["sidewalk"], t["sidewalk"]] = 3
    m[t["sidewalk"], t["road"]] = 1
    m[t["building"], t["building"]] = 5
    m[t["wall"], t["wall"]] = 1
    m[t["wall"], t["building"]] = 1
    m[t["vegetation"], t["vegetation"]] = 6
    m[t["terrain"], t["vegetation"]] = 4  # terrain is in the ground truth, never hit: IoU 0
    m[t["car"], t["car"]] = 4
    m[t["car"], t["truck"]] = 2  # truck only predicted: IoU 0; train appears nowhere: NaN
    return m


def test_protocol_means_by_hand() -> None:
    s = scores(_hand_matrix_19())
    iou = s["per_class_iou"]
    by_hand = {
        "road": 8 / 11,  # tp 8, fn 2 (as terrain), fp 1 (a sidewalk pixel)
        "sidewalk": 3 / 4,
        "building": 5 / 6,
        "wall": 1 / 2,
        "vegetation": 6 / 10,  # fp 4: terrain pixels
        "terrain": 0.0,
        "car": 4 / 6,
        "truck": 0.0,
    }
    for name, value in by_hand.items():
        assert iou[name] == pytest.approx(value), name
    assert all(math.isnan(iou[name]) for name in CLASS_NAMES if name not in by_hand)
    common = 8 / 11 + 3 / 4 + 5 / 6 + 6 / 10 + 4 / 6
    means = protocol_mious(iou)
    assert means["miou19"] == pytest.approx((common + 1 / 2 + 0 + 0) / 8) == s["miou"]
    assert means["miou16"] == pytest.approx((common + 1 / 2) / 6)
    assert means["miou13"] == pytest.approx(common / 5)


def test_protocol_classes() -> None:
    assert len(PROTOCOL_CLASSES[16]) == 16 and len(PROTOCOL_CLASSES[13]) == 13
    assert set(CLASS_NAMES) - set(PROTOCOL_CLASSES[16]) == {"terrain", "truck", "train"}
    assert set(PROTOCOL_CLASSES[16]) - set(PROTOCOL_CLASSES[13]) == {"wall", "fence", "pole"}
    # A protocol with no defined class has no mean.
    means = protocol_mious(scores(np.zeros((19, 19), dtype=np.int64))["per_class_iou"])
    assert all(math.isnan(v) for v in means.values())


def test_empty_matrix_is_all_nan() -> None:
    s = scores(np.zeros((3, 3), dtype=np.int64), ("x", "y", "z"))
    assert all(math.isnan(s[k]) for k in ("pixel_accuracy", "mean_class_accuracy", "miou", "fwiou"))


def test_scores_accepts_tensor_and_checks_names() -> None:
    _assert_same_scores(scores(torch.from_numpy(HAND), NAMES4), scores(HAND, NAMES4))
    with pytest.raises(ValueError, match="class names"):
        scores(HAND, NAMES4[:3])


def test_scores_to_json_replaces_nan() -> None:
    out = scores_to_json(scores(HAND, NAMES4))
    assert out["per_class_iou"]["d"] is None
    assert out["per_class_iou"]["c"] == 0.0
    json.dumps(out, allow_nan=False)


def test_update_counts_and_skips_ignore() -> None:
    target = torch.tensor([[0, 0, 1, 255], [2, 255, 1, 1]])
    prediction = torch.tensor([[0, 1, 1, 2], [2, 0, 0, 1]])
    cm = ConfusionMatrix(num_classes=3)
    cm.update(target, prediction)
    expected = torch.tensor([[1, 1, 0], [1, 2, 0], [0, 0, 1]])
    torch.testing.assert_close(cm.matrix, expected)
    assert cm.matrix.dtype == torch.int64
    # A second batch accumulates; uint8 inputs must not overflow in target * C + prediction.
    cm.update(target.to(torch.uint8), prediction.to(torch.uint8))
    torch.testing.assert_close(cm.matrix, 2 * expected)
    cm.reset()
    assert int(cm.matrix.sum()) == 0


def test_out_of_range_predictions_are_skipped() -> None:
    cm = ConfusionMatrix(num_classes=3)
    # Prediction 255 on GT 0 would land in cell 0 * 3 + 255 of a naive flattened bincount;
    # 2**32 + 1 would wrap around to class 1 in a careless int32 cast.
    cm.update(torch.tensor([0, 1, 2, 1]), torch.tensor([255, -1, 2, 2**32 + 1]))
    torch.testing.assert_close(cm.matrix, torch.diag(torch.tensor([0, 0, 1])))


@pytest.mark.parametrize("bad", [3, 100, 256, -1, 2**32 + 1])
def test_target_ids_outside_the_classes_raise(bad: int) -> None:
    cm = ConfusionMatrix(num_classes=3)
    with pytest.raises(ValueError, match=rf"\[{bad}\] outside"):
        cm.update(torch.tensor([0, 255, bad, 2]), torch.tensor([0, 0, 0, 0]))
    assert int(cm.matrix.sum()) == 0


def test_bad_arguments_raise() -> None:
    cm = ConfusionMatrix(num_classes=3)
    with pytest.raises(TypeError):
        cm.update(torch.tensor([0.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="differ"):
        cm.update(torch.zeros(2, dtype=torch.int64), torch.zeros(3, dtype=torch.int64))
    for ignore_index in (2, -1, 2**16):
        with pytest.raises(ValueError, match="ignore_index"):
            ConfusionMatrix(num_classes=3, ignore_index=ignore_index)


@pytest.mark.parametrize(
    ("num_classes", "ignore_index", "dtype"),
    [(19, 255, torch.int64), (19, 255, torch.uint8), (5, 5, torch.int32)],
)
def test_bincount_matches_naive_loop(
    num_classes: int, ignore_index: int, dtype: torch.dtype
) -> None:
    g = torch.Generator().manual_seed(0)
    cm = ConfusionMatrix(num_classes, ignore_index)
    naive = np.zeros((num_classes, num_classes), dtype=np.int64)
    for _ in range(3):
        target = torch.randint(0, num_classes, (2, 17, 23), generator=g)
        target[torch.rand(target.shape, generator=g) < 0.2] = ignore_index
        prediction = torch.randint(0, num_classes, target.shape, generator=g)
        cm.update(target.to(dtype), prediction.to(dtype))
        for t, p in zip(target.flatten().tolist(), prediction.flatten().tolist(), strict=True):
            if t != ignore_index:
                naive[t, p] += 1
    np.testing.assert_array_equal(cm.matrix.numpy(), naive)
    cm.update(torch.zeros(0, dtype=dtype), torch.zeros(0, dtype=dtype))
    np.testing.assert_array_equal(cm.matrix.numpy(), naive)


def test_merge_like_an_all_reduce() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 19, (4, 8, 8), generator=g)
    prediction = torch.randint(0, 19, (4, 8, 8), generator=g)
    whole = ConfusionMatrix()
    whole.update(target, prediction)
    ranks = [ConfusionMatrix(), ConfusionMatrix()]
    ranks[0].update(target[:2], prediction[:2])
    ranks[1].update(target[2:], prediction[2:])
    # all_reduce(SUM) adds in place on the tensor returned by .matrix.
    reduced = ranks[0].matrix
    reduced += ranks[1].matrix
    torch.testing.assert_close(ranks[0].matrix, whole.matrix)
    merged = ConfusionMatrix()
    merged += ranks[1]
    merged.add_(ranks[1].matrix.numpy())
    torch.testing.assert_close(merged.matrix, 2 * ranks[1].matrix)
    restored = ConfusionMatrix()
    restored.matrix = whole.matrix
    _assert_same_scores(restored.scores(), whole.scores())
    with pytest.raises(ValueError):
        merged.add_(torch.zeros(3, 3, dtype=torch.int64))


def _blob_maps(seed: int, height: int = 64, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A (H, W) ground truth of coarse class blobs with ignore regions, and a noisy prediction.

    Class 16 (train) never occurs in the ground truth but is sprinkled into the prediction;
    class 17 (motorcycle) occurs nowhere.
    """
    g = torch.Generator().manual_seed(seed)
    classes = torch.tensor([c for c in range(19) if c not in (16, 17)])
    coarse = classes[torch.randint(0, len(classes), (1, 1, 4, 8), generator=g)].float()
    gt = F.interpolate(coarse, size=(height, width), mode="nearest")[0, 0].long()
    ignore = F.interpolate(
        (torch.rand(1, 1, 8, 16, generator=g) < 0.15).float(), size=(height, width)
    )[0, 0]
    gt[ignore.bool()] = 255
    prediction = gt.clone()
    flip = torch.rand(gt.shape, generator=g) < 0.25
    prediction[flip] = classes[torch.randint(0, len(classes), (int(flip.sum()),), generator=g)]
    prediction[torch.rand(gt.shape, generator=g) < 0.01] = 16
    # Predictions are always train classes, also where the ground truth is ignored.
    prediction[prediction == 255] = 0
    return gt.numpy(), prediction.numpy()


def _to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)  # ignore -> 0 'unlabeled', ignored in evaluation
    for tid in range(19):
        lut[tid] = trainId2label[tid].id
    return lut[train_ids]


def test_agrees_with_cityscapesscripts(tmp_path: Path) -> None:
    cm = ConfusionMatrix()
    gt_files, pred_files = [], []
    for i in range(6):
        gt, prediction = _blob_maps(seed=i)
        cm.update(torch.from_numpy(gt), torch.from_numpy(prediction))
        gt_files.append(tmp_path / f"city_{i:06d}_000019_gtFine_labelIds.png")
        pred_files.append(tmp_path / f"city_{i:06d}_000019_pred.png")
        Image.fromarray(_to_label_ids(gt)).save(gt_files[-1])
        Image.fromarray(_to_label_ids(prediction)).save(pred_files[-1])

    ours = cm.scores()
    theirs = cityscapes_reference_scores(pred_files, gt_files)

    assert math.isnan(ours["per_class_iou"]["motorcycle"])
    assert ours["per_class_iou"]["train"] == 0.0  # predicted but absent from the ground truth
    for tid in range(19):
        name = trainId2label[tid].name
        expected = theirs["classScores"][name]
        got = ours["per_class_iou"][name]
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(
            expected, abs=1e-6
        ), name
    assert ours["miou"] == pytest.approx(theirs["averageScoreClasses"], abs=1e-6)
    # The protocols average cityscapesscripts' own per-class IoUs over their classes.
    means = protocol_mious(ours["per_class_iou"])
    for count, names in PROTOCOL_CLASSES.items():
        expected = np.nanmean([theirs["classScores"][name] for name in names])
        assert means[f"miou{count}"] == pytest.approx(expected, abs=1e-6), count
    assert means["miou16"] > ours["miou"]  # 'train' (IoU 0 here) is out of the 16

    # Their matrix is indexed by label id; on the train classes' rows and columns it must
    # equal ours, which also fixes pixel accuracy (their own pixel-accuracy path is unusable).
    label_ids = [trainId2label[tid].id for tid in range(19)]
    full = np.array(theirs["confMatrix"], dtype=np.int64)
    np.testing.assert_array_equal(full[np.ix_(label_ids, label_ids)], cm.matrix.numpy())
    evaluated = [i for i in range(full.shape[0]) if not id2label[i].ignoreInEval]
    pixel_accuracy = full[evaluated, evaluated].sum() / full[evaluated].sum()
    assert ours["pixel_accuracy"] == pytest.approx(pixel_accuracy, abs=1e-12)
