"""Segmentation training loop on 8 tiny frames: loss, names check, FDA, outputs, kill and resume,
the step factory, warm starts (weights, warm-up, the head's rate, exact resume)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import FDAEntropySpec, TrainSegConfig, VariantSpec, WarmStartSpec
from pipeline.data.demo import render_frame
from pipeline.data.labels import IGNORE_INDEX, NUM_CLASSES
from pipeline.data.split import PreparedSplit
from pipeline.losses import SegmentationLoss
from pipeline.tracking.base import NullTracker
from pipeline.train.checkpoint import CheckpointError, list_checkpoints
from pipeline.train.run import Interrupted
from pipeline.train.segmentation import (
    lr_factor,
    parameter_groups,
    poly_factor,
    start_run,
    train_segmentation,
)
from pipeline.train.segmentation_steps import (
    Student,
    SupervisedStep,
    TrainingSplits,
    build_step,
    sample_batch,
)
from pipeline.weights import load_weights, save_weights
from tests.conftest import params_section

SIZE = (64, 128)


def write_split(root: Path, domain: str, count: int, drop: str | None = None) -> PreparedSplit:
    """A prepared split of demo frames; `drop` leaves that frame out, as a broken translation."""
    frames = [render_frame(0, domain, i, SIZE) for i in range(count)]
    names = [f"{i:05d}" for i in range(count)]
    keep = [i for i, name in enumerate(names) if name != drop]
    root.mkdir(parents=True)
    np.save(root / "images.npy", np.stack([frames[i][0] for i in keep]))
    np.save(root / "labels.npy", np.stack([frames[i][1] for i in keep]))
    (root / "names.json").write_text(json.dumps([names[i] for i in keep]))
    return PreparedSplit.open(root)


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, PreparedSplit]:
    root = tmp_path_factory.mktemp("prepared")
    return {name: write_split(root / name, name, 8) for name in ("sim", "real")}


# Warm-up over half of tiny_config's 6 steps, so the test sees it (DAFormer's share, 0.0375,
# rounds to no step at all here).
WARM_START = WarmStartSpec("source_only", warmup=0.5, head_lr_mult=10.0)


def tiny_config(**overrides) -> TrainSegConfig:
    settings = {
        "variants": {
            "source_only": VariantSpec(images="sim", labels="sim"),
            "fda": VariantSpec(images="sim", labels="sim", fda_beta=0.1, fda_style="real"),
            "warm": VariantSpec(images="sim", labels="sim", warm_start=WARM_START),
        },
        # A light encoder keeps checkpoints small (the loop, not the net, is under test here).
        "encoder": "tu-mobilenetv3_small_100",
        "iters": 6,
        "batch": 2,
        "crop": (32, 64),
        "checkpoint_every": 100,
        "log_every": 2,
        "channels_last": True,
        "threads": 1,
        **overrides,
    }
    return params_section("train_seg", **settings)


def test_poly_decay_is_a_pure_function_of_the_step() -> None:
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100, 0.9) == 0.0
    assert poly_factor(150, 100, 0.9) == 0.0


def test_warm_up_climbs_linearly_from_daformers_ratio_then_follows_poly_decay() -> None:
    """mmcv's linear warm-up as DAFormer configures it (warmup_ratio 1e-6): update 0 runs at
    1e-6 of the rate, update k at 1e-6 + (1 - 1e-6) k / warmup_steps, the full rate from
    warmup_steps on (the previous rule, (k + 1) / warmup_steps, ran update 0 at a quarter)."""
    ramp = [1e-6 + (1 - 1e-6) * k / 4 for k in range(4)]
    assert [lr_factor(step, 100, 1.0, 4) for step in range(5)] == pytest.approx(
        [ramp[0] * 1.0, ramp[1] * 0.99, ramp[2] * 0.98, ramp[3] * 0.97, 0.96], rel=1e-12
    )
    assert lr_factor(0, 100, 1.0, 4) == pytest.approx(1e-6, rel=1e-9)
    assert lr_factor(50, 100, 0.9, 4) == poly_factor(50, 100, 0.9)
    assert lr_factor(0, 100, 0.9, 0) == 1.0  # no warm-up


def test_norm_parameters_train_without_weight_decay_when_named() -> None:
    """DAFormer's paramwise_cfg: every parameter whose name holds "norm" (or "pos_block") has
    weight decay 0, in the encoder and the head alike; the head keeps its rate."""
    from pipeline.models.segmentation import build_segmentation_model

    model = build_segmentation_model("Segformer", "mit_b0", NUM_CLASSES, None)
    groups = parameter_groups(model, 1e-3, 10.0, ("norm", "pos_block"))
    names = {id(param): name for name, param in model.named_parameters()}
    assert sum(len(g["params"]) for g in groups) == len(names)
    for group in groups:
        group_names = [names[id(param)] for param in group["params"]]
        no_decay = group.get("weight_decay") == 0.0
        assert all(("norm" in name) == no_decay for name in group_names)
        in_head = group.get("lr") == pytest.approx(1e-2)
        assert all(name.startswith("encoder.") != in_head for name in group_names)
    # MiT-B0's 60 LayerNorm tensors are the encoder's; the decoder's batch norm is named
    # fuse_stage.1 and keeps its decay, as DAFormer's head "bn" does.
    assert [len(g["params"]) for g in groups] == [60, len(names) - 60 - 13, 13]
    # No words: the encoder and head groups of before.
    assert [len(g["params"]) for g in parameter_groups(model, 1e-3, 10.0)] == [
        len(names) - 13,
        13,
    ]


def test_an_unknown_step_is_named_with_the_known_ones(tmp_path, splits) -> None:
    setup = start_run(tiny_config(), "source_only", tmp_path, NullTracker())
    with pytest.raises(ValueError, match=r"'fixmatch'; known steps: supervised, dacs, mic"):
        build_step(
            "fixmatch",
            setup.student,
            tiny_config(),
            "source_only",
            TrainingSplits(*[splits["sim"]] * 2),
        )


@pytest.mark.parametrize("kind", ["ce", "ce+dice"])
def test_ignored_pixels_contribute_no_gradient(kind: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, NUM_CLASSES, 8, 8, requires_grad=True)
    target = torch.randint(0, NUM_CLASSES, (2, 8, 8))
    target[:, :3] = IGNORE_INDEX
    SegmentationLoss(kind)(logits, target).backward()
    assert torch.count_nonzero(logits.grad[:, :, :3]) == 0
    assert (logits.grad[:, :, 3:].abs().sum(dim=1) > 0).all()

    # Labels on ignored pixels do not matter at all: changing them changes nothing.
    other = target.clone()
    other[:, :3] = 0
    other[:, :3] = IGNORE_INDEX
    assert SegmentationLoss(kind)(logits, other) == SegmentationLoss(kind)(logits, target)


def test_a_crop_with_no_labelled_pixel_gives_zero_loss_not_nan() -> None:
    logits = torch.randn(1, NUM_CLASSES, 4, 4, requires_grad=True)
    loss = SegmentationLoss("ce")(logits, torch.full((1, 4, 4), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_a_translation_missing_a_frame_is_named(tmp_path, splits) -> None:
    translated = write_split(tmp_path / "translated", "sim", 8, drop="00003")
    config = tiny_config()
    with pytest.raises(ValueError, match="first missing: 00003"):
        train_segmentation(
            config, "source_only", translated, splits["sim"], None, tmp_path / "out", NullTracker()
        )


def test_fda_swaps_appearance_not_labels_and_trains(tmp_path, splits) -> None:
    torch.manual_seed(0)
    plain, plain_labels = sample_batch(splits["sim"], splits["sim"], 4)
    torch.manual_seed(0)
    swapped, labels = sample_batch(splits["sim"], splits["sim"], 4, splits["real"], 0.1)
    assert torch.equal(labels, plain_labels)
    assert swapped.min() >= 0 and swapped.max() <= 1
    # The low frequencies now follow real images: the mean colour moves towards theirs.
    real_mean = torch.from_numpy(splits["real"].images[:].astype(np.float32) / 255).mean((0, 1, 2))
    assert (swapped.mean((0, 2, 3)) - real_mean).abs().sum() < (
        plain.mean((0, 2, 3)) - real_mean
    ).abs().sum()

    config = tiny_config(iters=2)
    out = tmp_path / "fda"
    result = train_segmentation(
        config, "fda", splits["sim"], splits["sim"], splits["real"], out, NullTracker()
    )
    assert result["steps"] == 2 and np.isfinite(result["loss"])


def test_fdas_entropy_term_labels_the_style_frames_and_moves_the_net(tmp_path, splits) -> None:
    """With fda_entropy the step also pushes the entropy of the net's predictions on the frames
    that styled the batch (FDA's train.py); the source loss and its draws are unchanged."""
    entropy = FDAEntropySpec(weight=0.005, ita=2.0)
    config = tiny_config(iters=2)
    net = torch.nn.Conv2d(3, NUM_CLASSES, 3, padding=1)
    student = Student(net, torch.device("cpu"), "fp32", torch.preserve_format, net)
    grads = {}
    for name, spec in (("swap", None), ("entropy", entropy), ("heavy", FDAEntropySpec(50.0, 2.0))):
        student.model.zero_grad()
        torch.manual_seed(0)
        step = SupervisedStep(
            student, config, splits["sim"], splits["sim"], splits["real"], 0.1, spec
        )
        values = step(0)
        grads[name] = student.model.weight.grad.clone()
        if spec is None:
            assert set(values) == {"loss"}
            loss = values["loss"]
        else:
            assert set(values) == {"loss", "loss_entropy"}
            assert values["loss"] == loss  # the same source batch and crop
            assert 0 < values["loss_entropy"] <= 1 + 1e-6
    # The term adds weight x its own gradient: a heavier weight moves the net further.
    light = (grads["entropy"] - grads["swap"]).norm().item()
    heavy = (grads["heavy"] - grads["swap"]).norm().item()
    assert light > 0 and heavy == pytest.approx(light * 1e4, rel=1e-3)
    result = train_segmentation(
        tiny_config(iters=2, variants={"fda": VariantSpec("sim", "sim", 0.1, "real", entropy)}),
        "fda",
        splits["sim"],
        splits["sim"],
        splits["real"],
        tmp_path / "fda",
        NullTracker(),
    )
    assert result["steps"] == 2 and np.isfinite(result["loss"])


class SignalAt(NullTracker):
    """A tracker that sends this process SIGTERM while logging `step`, like a pre-emption."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log_metrics(self, metrics, step=None) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, splits) -> Path:
    """A 6-step run that nothing interrupts."""
    out = tmp_path_factory.mktemp("straight")
    train_segmentation(
        tiny_config(), "source_only", splits["sim"], splits["sim"], None, out, NullTracker()
    )
    return out


def test_a_finished_run_writes_its_outputs(straight, splits) -> None:
    spec = json.loads((straight / "model.json").read_text())
    assert spec["arch"] == "Unet" and spec["encoder"] == "tu-mobilenetv3_small_100"
    assert spec["num_classes"] == NUM_CLASSES == len(spec["classes"])
    # The working size the net was trained at: the prepared frames' size.
    assert spec["input_size"] == list(splits["sim"].images.shape[1:3])
    with open(straight / "curve.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    config = tiny_config()
    for row in rows:
        # The rate the interval's last update used (update number step - 1, 0-based).
        expected = config.lr * poly_factor(int(row["step"]) - 1, config.iters, config.poly_power)
        assert float(row["lr"]) == pytest.approx(expected)
        assert np.isfinite(float(row["loss"]))
    assert [p.name for p in list_checkpoints(straight / "checkpoints")] == ["step_00000006.pt"]
    state = load_weights(straight / "model.safetensors")
    assert state["segmentation_head.0.weight"].shape[0] == NUM_CLASSES


def test_killed_and_resumed_run_matches_an_uninterrupted_one_bit_for_bit(
    tmp_path, splits, straight
) -> None:
    config = tiny_config()
    out = tmp_path / "resumed"
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="step 2"):
        train_segmentation(
            config, "source_only", splits["sim"], splits["sim"], None, out, SignalAt(2)
        )
    assert signal.getsignal(signal.SIGTERM) is handler
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000002.pt"]
    assert not (out / "model.safetensors").exists()

    result = train_segmentation(
        config, "source_only", splits["sim"], splits["sim"], None, out, NullTracker()
    )
    assert result["resumed_from"] == 2 and result["steps"] == 6
    # Same weights, same bytes: safetensors files carry no per-save ids.
    assert (straight / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert (out / "curve.csv").read_text() == (straight / "curve.csv").read_text()


def test_checkpoints_of_other_settings_are_refused_runtime_knobs_resume(
    tmp_path, splits, straight
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(straight, out)
    sim = splits["sim"]
    with pytest.raises(CheckpointError, match=r"lr: 0.001 -> 0.0005"):
        train_segmentation(tiny_config(lr=5e-4), "source_only", sim, sim, None, out, NullTracker())
    # Cadence is not a setting of the run: the finished checkpoint is taken as it is.
    result = train_segmentation(
        tiny_config(log_every=3), "source_only", sim, sim, None, out, NullTracker()
    )
    assert result["resumed_from"] == 6 and result["steps"] == 6


def test_warm_start_loads_the_source_net_and_daformers_schedule_applies(tmp_path, straight) -> None:
    (tmp_path / "source_only").mkdir()
    shutil.copy(straight / "model.safetensors", tmp_path / "source_only")
    # The warm start's own schedule: warm-up over half of the 6 steps (3 updates at 1/3, 2/3, 1
    # of the poly rate), the decoder and head at 10x; train_seg's (none, one rate) is the other
    # variants'.
    config = tiny_config()
    assert (
        len(
            start_run(
                config, "source_only", tmp_path / "cold", NullTracker()
            ).optimizer.param_groups
        )
        == 1
    )
    setup = start_run(config, "warm", tmp_path / "warm", NullTracker())
    source = load_weights(straight / "model.safetensors")
    state = setup.student.model.state_dict()
    assert all(torch.equal(state[name], value) for name, value in source.items())
    encoder, head = setup.optimizer.param_groups
    names = {id(p): n for n, p in setup.student.model.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in encoder["params"]} == {"encoder"}
    assert {names[id(p)].split(".")[0] for p in head["params"]} == {
        "decoder",
        "segmentation_head",
    }
    # The first update runs at DAFormer's warm-up ratio 1e-6 of the rate, the head's at 10x.
    assert encoder["lr"] == pytest.approx(config.lr * 1e-6)
    assert head["lr"] == pytest.approx(10 * config.lr * 1e-6)


def test_a_missing_or_foreign_warm_start_file_is_named(tmp_path, splits) -> None:
    sim, missing = splits["sim"], tmp_path / "source_only" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match=f"{missing}: no trained net to warm-start from"):
        train_segmentation(tiny_config(), "warm", sim, sim, None, tmp_path / "warm", NullTracker())
    save_weights(missing, {"weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=f"{missing}: not a net of this train_seg.arch"):
        train_segmentation(tiny_config(), "warm", sim, sim, None, tmp_path / "warm", NullTracker())


def test_a_warm_started_run_resumes_bit_for_bit_and_its_source_defines_it(
    tmp_path, splits, straight
) -> None:
    (tmp_path / "source_only").mkdir()
    shutil.copy(straight / "model.safetensors", tmp_path / "source_only")
    sim, config = splits["sim"], tiny_config(warmup=0.5, head_lr_mult=10.0)
    train_segmentation(config, "warm", sim, sim, None, tmp_path / "warm", NullTracker())
    out = tmp_path / "resumed"  # a sibling of source_only too
    with pytest.raises(Interrupted, match="step 2"):
        train_segmentation(config, "warm", sim, sim, None, out, SignalAt(2))
    result = train_segmentation(config, "warm", sim, sim, None, out, NullTracker())
    assert result["resumed_from"] == 2
    warm = (tmp_path / "warm" / "model.safetensors").read_bytes()
    assert (
        (out / "model.safetensors").read_bytes()
        == warm
        != (straight / "model.safetensors").read_bytes()
    )
    assert (out / "curve.csv").read_text() == (tmp_path / "warm" / "curve.csv").read_text()
    # Another source net is another run: its checkpoint is refused, not continued.
    save_weights(
        tmp_path / "source_only" / "model.safetensors", load_weights(out / "model.safetensors")
    )
    with pytest.raises(CheckpointError, match="warm_start_sha256"):
        train_segmentation(config, "warm", sim, sim, None, out, NullTracker())


def test_one_rate_for_the_whole_net_keeps_one_parameter_group(tmp_path) -> None:
    """head_lr_mult 1 (the default): one group, as before the setting existed, so the demo's
    optimizer and its checkpoints are unchanged."""
    setup = start_run(tiny_config(), "source_only", tmp_path, NullTracker())
    assert len(setup.optimizer.param_groups) == 1


def test_a_dpt_on_dinov2_trains_and_its_model_folder_predicts_the_same(tmp_path, splits) -> None:
    """The ViT path end to end through the loop: bf16 + channels_last steps, the model folder
    written, and `load_model` rebuilding the 16 px-patch encoder the weights were trained in."""
    from pipeline.models.model_folder import load_model

    config = tiny_config(arch="DPT", encoder="tu-vit_small_patch14_dinov2", iters=2)
    out = tmp_path / "dpt"
    result = train_segmentation(
        config, "source_only", splits["sim"], splits["sim"], None, out, NullTracker()
    )
    assert result["steps"] == 2 and np.isfinite(result["loss"])
    model = load_model(out)
    images = torch.from_numpy(splits["real"].images[:2].astype(np.float32) / 255)
    logits = model(images.permute(0, 3, 1, 2))
    assert logits.shape == (2, NUM_CLASSES, *SIZE) and torch.isfinite(logits).all()
    trained = load_weights(out / "model.safetensors")
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
