"""Self-training: ClassMix on hand-made pairs, pseudo-label weights, the EMA teacher, rare-class
sampling, MIC's block masks, and the loop (learning, exact resume after an interruption, DACS and
MIC, a warm-started teacher)."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import (
    FeatureDistanceSpec,
    MaskingSpec,
    SelfTrainingSpec,
    VariantSpec,
    WarmStartSpec,
)
from pipeline.data.augment import PairedAugment
from pipeline.data.demo import render_frame
from pipeline.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from pipeline.data.split import PreparedSplit
from pipeline.data.tensors import normalize, to_unit_float
from pipeline.losses import label_patches, masked_feature_distance
from pipeline.models.segmentation import build_segmentation_model
from pipeline.tracking.base import NullTracker
from pipeline.train.run import Interrupted
from pipeline.train.segmentation import start_run, train_segmentation
from pipeline.train.segmentation_steps import TrainingSplits, build_step
from pipeline.train.self_training import (
    FeatureDistance,
    RareClassSampler,
    SourceCrops,
    StrongAugment,
    block_mask,
    blur_kernel_size,
    class_dominates,
    class_mix,
    class_mix_masks,
    ema_update,
    mask_images,
    pseudo_label_crop,
    pseudo_labels,
)
from pipeline.weights import load_weights
from tests.conftest import params_section

I = IGNORE_INDEX  # noqa: E741


def st_spec(**overrides) -> SelfTrainingSpec:
    """DACS's settings with rare-class sampling, the crop rules and pseudo-label crop off."""
    settings = {
        "target": "real",
        "ema_decay": 0.99,
        "confidence": 0.968,
        "rare_class_temperature": 0.01,
        "rare_class_min_crop_ratio": 0.0,
        "crop_max_class_share": 1.0,
        "pseudo_label_ignore_top": 0.0,
        "pseudo_label_ignore_bottom": 0.0,
        **overrides,
    }
    return SelfTrainingSpec(**settings)


def test_class_mix_pastes_the_chosen_classes_with_their_labels() -> None:
    source = torch.full((1, 3, 2, 3), 1.0)
    target = torch.full((1, 3, 2, 3), 0.0)
    source_labels = torch.tensor([[[0, 0, 5], [7, I, 5]]])
    pseudo = torch.tensor([[[2, 2, 2], [3, 3, I]]])
    mask = torch.tensor([[[False, False, True], [False, False, True]]])  # class 5 pasted
    images, labels, weights = class_mix(
        source, source_labels, target, pseudo, torch.tensor(0.25), mask
    )
    assert torch.equal(images[0, 0], mask[0].float())  # source pixels where pasted
    assert labels.tolist() == [[[2, 2, 5], [3, 3, 5]]]
    assert weights.tolist() == [[[0.25, 0.25, 1.0], [0.25, 0.25, 1.0]]]


def test_class_mix_masks_take_half_the_classes_rounded_up_never_ignored_pixels() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([[[0, 1, 2], [2, I, 0]], [[4, 4, 4], [I, I, 4]]])
    for _ in range(20):
        masks = class_mix_masks(labels)
        first = set(labels[0][masks[0]].tolist())
        assert len(first) == 2 and first <= {0, 1, 2}  # ceil(3 / 2) of the classes present
        for cls in first:  # a class is pasted whole
            assert masks[0][labels[0] == cls].all()
        assert masks[1].tolist() == [[True, True, True], [False, False, True]]
        assert not masks[:, labels[0] == I].any()


def test_pseudo_labels_weight_by_the_share_of_confident_valid_pixels() -> None:
    logits = torch.zeros(1, NUM_CLASSES, 1, 4)
    logits[0, 3, 0, 0] = 20.0  # confident
    logits[0, 5, 0, 1] = 20.0  # confident but padding
    logits[0, 7, 0, 2] = 2.0  # not confident
    valid = torch.tensor([[[True, False, True, True]]])
    labels, weight = pseudo_labels(logits, 0.968, valid)
    assert labels[0, 0, 0] == 3 and labels[0, 0, 1] == IGNORE_INDEX and labels[0, 0, 2] == 7
    assert weight.item() == pytest.approx(1 / 3)  # one confident pixel of three valid ones


def test_ema_teacher_copies_then_averages() -> None:
    student, teacher = nn.Linear(2, 1), nn.Linear(2, 1)
    ema_update(teacher, student, decay=0.99, step=0)  # step 0: a plain copy
    assert torch.equal(teacher.weight, student.weight)
    before = teacher.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    ema_update(teacher, student, decay=0.99, step=1000)
    torch.testing.assert_close(teacher.weight, 0.99 * before + 0.01 * student.weight)
    before = teacher.weight.clone()
    ema_update(teacher, student, decay=0.99, step=1)  # warm-up: min(1 - 1/2, 0.99) = 0.5
    torch.testing.assert_close(teacher.weight, 0.5 * before + 0.5 * student.weight)


@pytest.mark.parametrize("temperature", [0.01, 0.5])
def test_rare_class_sampling_draws_classes_by_exp_of_rarity(temperature: float) -> None:
    counts = np.zeros((100, NUM_CLASSES), dtype=np.int64)
    counts[:, 0] = 10_000  # road in every frame
    counts[7, 5] = 500  # a pole in frame 7 only
    share = np.array([100 * 10_000, 500]) / (100 * 10_000 + 500)  # road, pole
    p_road, p_pole = np.exp((1 - share) / temperature) / np.exp((1 - share) / temperature).sum()
    torch.manual_seed(0)
    rows = RareClassSampler(counts, temperature).sample(4000)
    # Frame 7 comes for the pole, and for road one time in 100.
    assert np.mean(rows == 7) == pytest.approx(p_pole + p_road / 100, abs=0.03)
    assert RareClassSampler(counts, temperature=0.0).sample(4000).tolist().count(7) < 100


def test_strong_augmentation_jitters_four_batches_in_five_and_blurs_half(monkeypatch) -> None:
    """DACS / DAFormer: jitter when U(0, 1) > 0.2, blur when another U(0, 1) > 0.5, both drawn
    once per batch and applied to every image of it (the previous code jittered one image in
    five, each on its own)."""
    import pipeline.train.self_training as self_training

    calls: list[tuple[str, int]] = []
    real_blur = self_training.gaussian_blur2d

    def blur(images, kernel, sigma):
        calls.append(("blur", len(images)))
        return real_blur(images, kernel, sigma)

    monkeypatch.setattr(self_training, "gaussian_blur2d", blur)
    torch.manual_seed(0)
    augment = StrongAugment((16, 32))
    jitter_module = augment.jitter
    augment.jitter = lambda x: (calls.append(("jitter", len(x))), jitter_module(x))[1]
    images = torch.rand(4, 3, 16, 32)
    jittered = blurred = 0
    draws = 2000
    for _ in range(draws):
        state = torch.get_rng_state()
        jitter = torch.rand(()).item() > 0.2
        blur_now = torch.rand(()).item() > 0.5
        torch.set_rng_state(state)
        calls.clear()
        augment(images)
        assert calls == [("jitter", 4)] * jitter + [("blur", 4)] * blur_now
        jittered += jitter
        blurred += blur_now
    assert jittered / draws == pytest.approx(0.8, abs=0.03)
    assert blurred / draws == pytest.approx(0.5, abs=0.03)


def test_blur_kernels_follow_dacs_transforms_per_axis() -> None:
    # floor(ceil(0.1 n) - 0.5 + ceil(0.1 n) % 2), dacs_transforms.gaussian_blur's formula
    for side in (16, 64, 128, 512, 1024, 720, 33):
        size = math.ceil(0.1 * side)
        assert blur_kernel_size(side) == math.floor(size - 0.5 + size % 2)
    assert StrongAugment((512, 512)).kernel == (51, 51)
    assert StrongAugment((64, 128)).kernel == (7, 13)


def test_daformer_blurs_each_mixed_image_with_its_own_sigma_and_mic_one_per_batch() -> None:
    images = torch.rand(1, 3, 32, 32).expand(3, -1, -1, -1).contiguous()  # three equal images
    for per_image, distinct in ((True, 3), (False, 1)):
        augment = StrongAugment((32, 32), per_image_sigma=per_image)
        torch.manual_seed(1)
        while True:  # a batch blurred and not jittered
            state = torch.get_rng_state()
            jitter, blur = torch.rand(()).item() > 0.2, torch.rand(()).item() > 0.5
            if blur and not jitter:
                break
        torch.set_rng_state(state)
        out = augment(images)
        assert len({tuple(o.flatten()[:8].tolist()) for o in out}) == distinct


def test_the_rare_class_crop_rule_keeps_the_drawn_class_in_the_crop() -> None:
    """DAFormer's min_crop_ratio: a frame drawn for class c is cropped again (up to 10 times)
    until the crop holds more than 0.5 * 3000 px of c at 1280x720; without the rule the class
    is often cropped out."""
    label = np.zeros((64, 256), dtype=np.uint8)
    label[:, 240:] = 5  # a narrow strip of class 5 at the right edge
    augment = PairedAugment((32, 64), (1.0, 1.0), False, 0.0)
    image = torch.zeros(1, 3, 64, 256)
    labels = torch.from_numpy(label)[None].long()
    kept = {}
    for ratio in (0.0, 0.5):
        spec = st_spec(rare_class_min_crop_ratio=ratio)
        crops = SourceCrops(augment, spec, (64, 256))
        torch.manual_seed(0)
        threshold = 0.5 * 3000 / (1280 * 720) * 64 * 256
        shown = [(crops(image, labels, [5])[1] == 5).sum() > threshold for _ in range(600)]
        kept[ratio] = float(np.mean(shown))
    # A random crop shows the strip with p (about 1 in 11); up to 11 draws: 1 - (1 - p)^11.
    assert kept[0.0] < 0.15
    assert kept[0.5] == pytest.approx(1 - (1 - kept[0.0]) ** 11, abs=0.06)


def test_the_class_share_crop_rule_redraws_crops_one_class_dominates() -> None:
    label = np.zeros((64, 256), dtype=np.uint8)
    label[:, 200:] = 5
    augment = PairedAugment((32, 64), (1.0, 1.0), False, 0.0)
    image = torch.zeros(1, 3, 64, 256)
    labels = torch.from_numpy(label)[None].long()
    spec = st_spec(rare_class_temperature=0.0, crop_max_class_share=0.75)
    crops = SourceCrops(augment, spec, (64, 256))
    torch.manual_seed(0)
    dominated = [class_dominates(crops(image, labels, [None])[1][0], 0.75) for _ in range(400)]
    torch.manual_seed(0)
    plain = [class_dominates(augment(image, labels)[1][0], 0.75) for _ in range(400)]
    # Up to 11 draws, the last kept unchecked: p^11 of crops stay dominated.
    assert np.mean(plain) > 0.7
    assert np.mean(dominated) == pytest.approx(np.mean(plain) ** 11, abs=0.06)
    assert class_dominates(torch.zeros(4, 4, dtype=torch.long), 0.75)  # one class only
    assert class_dominates(torch.tensor([[0, 0, 0, 1]]), 0.75)  # 3 of 4 is 0.75
    assert not class_dominates(torch.tensor([[0, 0, 1, 1], [I, I, I, I]]), 0.75)


def test_the_pseudo_label_crop_zeroes_whole_rows_after_the_share_is_counted() -> None:
    weight = torch.full((2, 512, 4), 0.8)
    out = pseudo_label_crop(weight, 15 / 512, 120 / 512)  # DAFormer's 15 and 120 rows
    assert (out[:, :15] == 0).all() and (out[:, 512 - 120 :] == 0).all()
    assert (out[:, 15 : 512 - 120] == 0.8).all() and (weight == 0.8).all()
    assert pseudo_label_crop(weight, 0.0, 0.0) is weight


def test_block_masks_mask_whole_blocks_at_the_configured_ratio() -> None:
    torch.manual_seed(0)
    kept = block_mask(64, (16, 32), 4, 0.7, torch.device("cpu"))
    assert kept.shape == (64, 1, 16, 32) and kept.dtype == torch.bool
    blocks = kept.float().unfold(2, 4, 4).unfold(3, 4, 4)  # (B, 1, 4, 8, 4, 4)
    # Every 4 x 4 block is all kept or all masked.
    assert torch.equal(blocks.amin(dim=(-2, -1)), blocks.amax(dim=(-2, -1)))
    # 2048 blocks, each masked with probability 0.7: the share is 0.7 within ~3 sigma (0.01).
    assert 1 - kept.float().mean().item() == pytest.approx(0.7, abs=0.03)


def test_masked_pixels_become_zero_after_normalisation() -> None:
    images = torch.rand(2, 3, 8, 8)
    kept = block_mask(2, (8, 8), 4, 0.5, torch.device("cpu"))
    kept[0] = False
    kept[1] = True
    masked = mask_images(images, kept)
    torch.testing.assert_close(normalize(masked[:1]), torch.zeros(1, 3, 8, 8))
    assert torch.equal(masked[1], images[1])


SIZE = (64, 128)


def write_split(root: Path, domain: str, count: int) -> PreparedSplit:
    frames = [render_frame(0, domain, i, SIZE) for i in range(count)]
    root.mkdir(parents=True)
    np.save(root / "images.npy", np.stack([f[0] for f in frames]))
    labels = np.stack([f[1] for f in frames])
    np.save(root / "labels.npy", labels)
    counts = np.stack([np.bincount(x.ravel(), minlength=256)[:NUM_CLASSES] for x in labels])
    np.save(root / "class_pixels.npy", counts)
    (root / "names.json").write_text(json.dumps([f"{i:05d}" for i in range(count)]))
    return PreparedSplit.open(root)


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, PreparedSplit]:
    root = tmp_path_factory.mktemp("prepared")
    return {name: write_split(root / name, name, 6) for name in ("sim", "real")}


def tiny_config(**overrides):
    # DAFormer's crop rules and pseudo-label crop on, so the loop runs every path.
    daformer = {
        "confidence": 0.5,
        "rare_class_min_crop_ratio": 0.5,
        "crop_max_class_share": 0.75,
        "pseudo_label_ignore_top": 15 / 512,
        "pseudo_label_ignore_bottom": 120 / 512,
    }
    spec = st_spec(**daformer)
    mic = st_spec(**daformer, mic=MaskingSpec(mask_block_size=8, mask_ratio=0.7, weight=1.0))
    warm = WarmStartSpec("source_st", warmup=0.0, head_lr_mult=1.0)
    settings = {
        "variants": {
            "source_st": VariantSpec(images="sim", labels="sim", self_training=spec),
            "source_mic": VariantSpec(images="sim", labels="sim", self_training=mic),
            "warm_st": VariantSpec(images="sim", labels="sim", self_training=spec, warm_start=warm),
        },
        "encoder": "tu-mobilenetv3_small_100",
        "iters": 6,
        "batch": 2,
        "crop": (32, 64),
        "checkpoint_every": 100,
        "log_every": 2,
        "threads": 1,
        **overrides,
    }
    return params_section("train_seg", **settings)


class SignalAt(NullTracker):
    def __init__(self, step: int) -> None:
        self.step = step

    def log_metrics(self, metrics, step=None) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_self_training_learns_and_resumes_bit_for_bit(tmp_path, splits) -> None:
    sim, real = splits["sim"], splits["real"]
    straight = train_segmentation(
        tiny_config(),
        "source_st",
        sim,
        sim,
        None,
        tmp_path / "straight",
        NullTracker(),
        target=real,
    )
    assert straight["steps"] == 6
    assert np.isfinite(straight["loss"]) and np.isfinite(straight["loss_mix"])
    assert 0.0 <= straight["pseudo_weight"] <= 1.0

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted, match="step 4"):
        train_segmentation(
            tiny_config(), "source_st", sim, sim, None, out, SignalAt(4), target=real
        )
    resumed = train_segmentation(
        tiny_config(), "source_st", sim, sim, None, out, NullTracker(), target=real
    )
    assert resumed["resumed_from"] == 4
    straight_model = (tmp_path / "straight" / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == straight_model
    assert (out / "curve.csv").read_text() == (tmp_path / "straight" / "curve.csv").read_text()


def test_mic_learns_and_resumes_bit_for_bit(tmp_path, splits) -> None:
    sim, real = splits["sim"], splits["real"]
    straight = train_segmentation(
        tiny_config(),
        "source_mic",
        sim,
        sim,
        None,
        tmp_path / "straight",
        NullTracker(),
        target=real,
    )
    assert straight["steps"] == 6 and np.isfinite(straight["loss_masked"])

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted, match="step 2"):
        train_segmentation(
            tiny_config(), "source_mic", sim, sim, None, out, SignalAt(2), target=real
        )
    resumed = train_segmentation(
        tiny_config(), "source_mic", sim, sim, None, out, NullTracker(), target=real
    )
    assert resumed["resumed_from"] == 2
    straight_model = (tmp_path / "straight" / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == straight_model
    assert (out / "curve.csv").read_text() == (tmp_path / "straight" / "curve.csv").read_text()
    assert "loss_masked" in (out / "curve.csv").read_text().splitlines()[0]


def test_the_teacher_after_the_first_update_is_daformers_half_and_half(tmp_path, splits) -> None:
    # DAFormer's _update_ema(1) at the start of iteration 1: 0.5 * initial + 0.5 * student.
    sim, real = splits["sim"], splits["real"]
    config = tiny_config()
    setup = start_run(config, "source_st", tmp_path, NullTracker())
    step = build_step(
        "dacs", setup.student, config, "source_st", TrainingSplits(sim, sim, None, real)
    )
    initial = [p.detach().clone() for p in step.teacher.parameters()]
    with torch.no_grad():
        for p in setup.student.model.parameters():
            p.add_(1.0)
    step.after_update(0)
    for mean, start, now in zip(
        step.teacher.parameters(), initial, setup.student.model.parameters()
    ):
        torch.testing.assert_close(mean, 0.5 * start + 0.5 * now)


def test_a_warm_start_initialises_student_and_teacher(tmp_path, splits) -> None:
    sim, real = splits["sim"], splits["real"]
    config = tiny_config(iters=2)
    train_segmentation(
        config, "source_st", sim, sim, None, tmp_path / "source_st", NullTracker(), target=real
    )
    source = load_weights(tmp_path / "source_st" / "model.safetensors")
    setup = start_run(config, "warm_st", tmp_path / "warm_st", NullTracker())
    step = build_step(
        "dacs", setup.student, config, "warm_st", TrainingSplits(sim, sim, None, real)
    )
    for net in (setup.student.model, step.teacher):
        state = net.state_dict()
        assert all(torch.equal(state[name], value) for name, value in source.items())


def test_label_patches_take_the_class_covering_the_share_as_downscale_label_ratio() -> None:
    # 2 x 2 patches of a 4 x 4 frame: 4/4 road, 3/4 car, 2/4 car (below 0.75), 3/4 ignore.
    labels = torch.tensor(
        [[[0, 0, 13, 13], [0, 0, 13, 2], [13, 13, I, I], [5, 2, I, 13]]], dtype=torch.long
    )
    assert label_patches(labels, 2, 0.75, NUM_CLASSES).tolist() == [[[0, 13], [I, I]]]
    assert label_patches(labels, 2, 0.5, NUM_CLASSES).tolist() == [[[0, 13], [13, I]]]


def test_the_masked_feature_distance_is_the_mean_l2_over_the_mask_and_zero_without_pixels():
    features = torch.zeros(1, 2, 1, 2, requires_grad=True)
    reference = torch.tensor([[[[3.0, 1.0]], [[4.0, 0.0]]]])  # distances 5 and 1
    mask = torch.tensor([[[True, True]]])
    assert masked_feature_distance(features, reference, mask).item() == 3.0
    assert masked_feature_distance(features, reference, ~mask).item() == 0.0
    masked_feature_distance(features, reference, ~mask).backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


@pytest.fixture(scope="module")
def mit_weights(tmp_path_factory) -> Path:
    """An encoder weights file, as a team saves its ImageNet MiT once (random here)."""
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("weights") / "mit_b0.pth"
    torch.save(build_segmentation_model("Segformer", "mit_b0").encoder.state_dict(), path)
    return path


def fd_config(weights: Path, **overrides):
    distance = FeatureDistanceSpec(weight=0.005, classes=CLASS_NAMES, min_class_share=0.5)
    spec = st_spec(confidence=0.5, feature_distance=distance)
    return tiny_config(
        arch="Segformer",
        encoder="mit_b0",
        encoder_weights=str(weights),
        variants={"fd_st": VariantSpec(images="sim", labels="sim", self_training=spec)},
        **overrides,
    )


def test_the_feature_distance_anchors_to_the_weights_file_not_the_student(
    tmp_path, splits, mit_weights
) -> None:
    sim = splits["sim"]
    config = fd_config(mit_weights)
    setup = start_run(config, "fd_st", tmp_path, NullTracker())
    student = setup.student
    # A warm-started (or resumed) student no longer holds the file's encoder.
    with torch.no_grad():
        for param in student.model.encoder.parameters():
            param.add_(0.01)
    spec = config.variants["fd_st"].self_training.feature_distance
    distance = FeatureDistance(student, config, spec)
    file_state = torch.load(mit_weights, weights_only=True)
    assert all(torch.equal(v, file_state[k]) for k, v in distance.encoder.state_dict().items())
    assert not any(p.requires_grad for p in distance.encoder.parameters())

    images = to_unit_float(torch.from_numpy(np.array(sim.images[:2])))
    labels = torch.from_numpy(np.array(sim.labels[:2])).long()
    student.model.eval()  # no stochastic depth: the same net gives the same features
    logits, moved = distance.logits_and_distance(images, labels)
    assert logits.shape == (2, NUM_CLASSES, *SIZE) and moved.item() > 0
    moved.backward()
    decoder_grads = [p.grad for p in student.model.decoder.parameters()]
    assert all(g is None or not g.any() for g in decoder_grads)
    assert any(p.grad is not None and p.grad.any() for p in student.model.encoder.parameters())
    # The hook that took the features is gone with the call.
    assert not student.model.encoder._forward_hooks

    student.model.encoder.load_state_dict(file_state)
    _, same = distance.logits_and_distance(images, labels)
    assert same.item() == 0.0


def test_self_training_with_the_feature_distance_learns_and_logs_it(
    tmp_path, splits, mit_weights
) -> None:
    sim, real = splits["sim"], splits["real"]
    config = fd_config(mit_weights, iters=2, crop=(64, 64))
    summary = train_segmentation(
        config, "fd_st", sim, sim, None, tmp_path / "fd", NullTracker(), target=real
    )
    assert summary["steps"] == 2 and math.isfinite(summary["loss_feature_distance"])
    assert "loss_feature_distance" in (tmp_path / "fd" / "curve.csv").read_text().splitlines()[0]
