"""Hand-checked values of the CycleGAN objectives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.losses import GANLoss, cycle_loss, identity_loss, patch_nce, robust_entropy


def test_lsgan_on_constant_prediction() -> None:
    loss = GANLoss("lsgan")
    prediction = torch.full((2, 1, 3, 3), 0.3)
    assert loss(prediction, True).item() == pytest.approx(0.49)  # (0.3 - 1)^2
    assert loss(prediction, False).item() == pytest.approx(0.09)  # (0.3 - 0)^2


def test_lsgan_averages_over_patches() -> None:
    prediction = torch.tensor([[[[0.0, 2.0]]]])
    # Real target 1: errors (-1, 1) -> mean of squares 1; fake target 0: (0, 4) -> 2.
    assert GANLoss("lsgan")(prediction, True).item() == pytest.approx(1.0)
    assert GANLoss("lsgan")(prediction, False).item() == pytest.approx(2.0)


def test_vanilla_is_bce_with_logits() -> None:
    loss = GANLoss("vanilla")
    assert loss(torch.zeros(1, 1, 4, 4), True).item() == pytest.approx(math.log(2))
    logits = torch.randn(3, 1, 5, 5)
    torch.testing.assert_close(
        loss(logits, True), F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    )
    torch.testing.assert_close(
        loss(logits, False), F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    )
    # -log(sigmoid(-x)) = softplus(x) for the fake label.
    torch.testing.assert_close(loss(logits, False), F.softplus(logits).mean())


@pytest.mark.parametrize("mode", ["lsgan", "vanilla"])
def test_loss_is_float32_for_low_precision_predictions(mode: str) -> None:
    prediction = torch.linspace(-3, 3, 64).reshape(1, 1, 8, 8)
    expected = GANLoss(mode)(prediction.double(), True)
    low = prediction.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = GANLoss(mode)(low, True)
    values = [under_autocast, GANLoss(mode)(low, True)]
    for value in values:
        assert value.dtype == torch.float32
        # bf16 rounding of the inputs only; the reduction itself runs in float32.
        assert value.item() == pytest.approx(expected.item(), rel=1e-2)


@pytest.mark.parametrize("mode", ["lsgan", "vanilla"])
def test_real_label_is_minimised_by_high_logits(mode: str) -> None:
    prediction = torch.zeros(1, 1, 2, 2, requires_grad=True)
    GANLoss(mode)(prediction, True).backward()
    assert (prediction.grad < 0).all()


def test_unknown_mode_raises() -> None:
    with pytest.raises(ValueError, match=r"'wgan'.*lsgan.*vanilla"):
        GANLoss("wgan")


def test_cycle_and_identity_are_mean_absolute_error() -> None:
    original = torch.zeros(1, 3, 2, 2)
    other = torch.full((1, 3, 2, 2), -0.5)
    other[0, 0, 0, 0] = 1.5
    expected = (11 * 0.5 + 1.5) / 12
    assert cycle_loss(other, original).item() == pytest.approx(expected)
    assert identity_loss(other, original).item() == pytest.approx(expected)
    assert cycle_loss(original, original).item() == 0.0


def test_patch_nce_by_hand() -> None:
    """Tap 1: one image, two patches. Query 0 = (1, 0) meets keys (0.6, 0.8) and (0, 1): cosines
    0.6 (its own) and 0; query 1 = (0, 1): 0.8 and 1 (its own). Tap 2: two images of one patch
    each: a patch has no other patch of its image to confuse it with, so 0 (other images' patches
    are no negatives). The loss is the mean over taps."""
    temperature = 0.5
    tap1_queries = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], requires_grad=True)  # (1, 2, 2)
    tap1_keys = torch.tensor([[[0.6, 0.8], [0.0, 1.0]]], requires_grad=True)
    tap2_queries = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (2, 1, 2)
    tap2_keys = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
    loss = patch_nce([tap1_queries, tap2_queries], [tap1_keys, tap2_keys], temperature)
    # Row 0: logits (0.6, 0) / T, positive first; row 1: (0.8, 1) / T, positive second.
    row0 = math.log(1 + math.exp((0.0 - 0.6) / temperature))
    row1 = math.log(1 + math.exp((0.8 - 1.0) / temperature))
    assert loss.item() == pytest.approx(((row0 + row1) / 2 + 0.0) / 2, rel=1e-6)
    loss.backward()
    assert tap1_queries.grad.abs().sum() > 0 and tap1_keys.grad is None  # keys are detached


def test_patch_nce_is_float32_under_autocast() -> None:
    queries = F.normalize(torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    keys = F.normalize(queries + 0.1, dim=-1)
    expected = patch_nce([queries], [keys], 0.07)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = patch_nce([queries.bfloat16()], [keys.bfloat16()], 0.07)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05)


def test_fdas_robust_entropy_is_the_normalised_entropy_squared_to_the_power_ita() -> None:
    uniform = torch.zeros(1, 19, 2, 3)
    assert robust_entropy(uniform, 2.0).item() == pytest.approx(1.0)  # H = log 19 / log 19
    certain = torch.full((1, 19, 2, 3), -50.0)
    certain[:, 4] = 50.0
    assert robust_entropy(certain, 2.0).item() < 1e-15  # (0 + 1e-8)^2
    torch.manual_seed(0)
    logits = torch.randn(2, 19, 4, 5) * 3
    entropy = torch.distributions.Categorical(logits=logits.movedim(1, -1)).entropy()
    expected = ((entropy / math.log(19)) ** 2 + 1e-8) ** 1.5
    assert robust_entropy(logits, 1.5).item() == pytest.approx(expected.mean().item(), rel=1e-5)
    # Crop padding counts for nothing.
    valid = torch.zeros(2, 4, 5, dtype=torch.bool)
    valid[0, :2] = True
    assert robust_entropy(logits, 1.5, valid).item() == pytest.approx(
        expected[0, :2].mean().item(), rel=1e-5
    )
