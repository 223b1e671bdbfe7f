"""Training objectives: CycleGAN's adversarial, cycle-consistency and identity losses, CUT's
PatchNCE, and the segmentation loss every segmentation step (supervised, DACS, MIC) trains with."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.data.labels import IGNORE_INDEX

GAN_MODES: tuple[str, ...] = ("lsgan", "vanilla")


class GANLoss(nn.Module):
    """Adversarial loss on raw discriminator outputs against a constant real / fake target.

    ``"lsgan"`` is the least-squares GAN objective used by CycleGAN (mean squared error to
    1 for real, 0 for fake); ``"vanilla"`` is the original GAN objective as binary
    cross-entropy on logits. The prediction is cast to float32 first so that the loss is
    not computed in reduced precision under bf16 / fp16 autocast, and the target is built
    from it, so any device and shape (e.g. PatchGAN maps (N, 1, h, w)) works.
    """

    def __init__(self, mode: str = "lsgan"):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown GAN loss mode {mode!r}; expected one of {GAN_MODES}")
        self.mode = mode

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """Mean loss of ``prediction`` (discriminator logits) against the real or fake label."""
        prediction = prediction.float()
        target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
        if self.mode == "lsgan":
            return F.mse_loss(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Cycle-consistency loss: mean absolute error between e.g. G_real->sim(G_sim->real(sim))
    and sim."""
    return F.l1_loss(reconstructed.float(), original.float())


def identity_loss(same: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Identity loss: mean absolute error between e.g. G_sim->real(real) and real, which
    discourages the generator from changing images already in its target domain."""
    return F.l1_loss(same.float(), original.float())


class SegmentationLoss(nn.Module):
    """Cross-entropy (plus Dice for "ce+dice"); pixels labelled IGNORE_INDEX count for nothing."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.dice = None
        if kind == "ce+dice":
            # Imported here: smp, timm and torchvision take ~2 s to load, and the translators'
            # stages import this module for their own losses.
            import segmentation_models_pytorch as smp

            self.dice = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE_INDEX)

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """`logits` (B, C, H, W) float32, `target` (B, H, W) int64 -> scalar; `weight` (B, H, W)
        scales each pixel's cross-entropy (pseudo-labels count by their confidence)."""
        # Mean over labelled pixels; a crop with none (all padding or void) gives 0, not NaN.
        pixels = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
        total = (pixels if weight is None else pixels * weight).sum()
        loss = total / (target != IGNORE_INDEX).sum().clamp(min=1)
        if self.dice is not None:
            loss = loss + self.dice(logits, target)
        return loss


def robust_entropy(logits: Tensor, ita: float, valid: Tensor | None = None) -> Tensor:
    """FDA's robust entropy (Yang & Soatto 2020, model/deeplab.py) of (B, C, H, W) `logits`:
    per pixel H = -sum_c p log p / log C (FDA divides by 2.9444, log 19, "change when classes is
    not 19"), then (H^2 + 1e-8)^ita, the mean over pixels (over `valid` (B, H, W) ones when given:
    crop padding counts for nothing). ita > 0.5 weighs confident pixels' entropy down, so the
    term pushes the uncertain ones."""
    log_p = F.log_softmax(logits.float(), dim=1)
    entropy = -(log_p.exp() * log_p).sum(dim=1) / math.log(logits.shape[1])  # (B, H, W)
    robust = (entropy.square() + 1e-8).pow(ita)
    if valid is None:
        return robust.mean()
    return (robust * valid).sum() / valid.sum().clamp(min=1)


def label_patches(labels: Tensor, factor: int, min_share: float, num_classes: int) -> Tensor:
    """(B, H, W) train ids (IGNORE_INDEX for none) -> (B, H // factor, W // factor): each
    factor x factor patch's most frequent label (ignore counting as one), or IGNORE_INDEX where
    that covers less than `min_share` of the patch, as DAFormer's `downscale_label_ratio`."""
    one_hot = F.one_hot(
        torch.where(labels == IGNORE_INDEX, num_classes, labels), num_classes + 1
    )  # (B, H, W, C + 1), ignore as the last class
    shares = F.avg_pool2d(one_hot.permute(0, 3, 1, 2).float(), kernel_size=factor)
    share, patch = shares.max(dim=1)  # (B, h, w)
    patch[(patch == num_classes) | (share < min_share)] = IGNORE_INDEX
    return patch


def masked_feature_distance(features: Tensor, reference: Tensor, mask: Tensor) -> Tensor:
    """Mean over the `mask` (B, h, w) pixels of the L2 distance between (B, C, h, w) `features`
    and `reference` across channels (DAFormer's `masked_feat_dist`). With no pixel in the mask
    DAFormer's mean is NaN and its gradient zero; here it is 0, with the same zero gradient."""
    distance = torch.linalg.vector_norm(features.float() - reference.float(), dim=1)  # (B, h, w)
    picked = distance[mask]
    return picked.mean() if picked.numel() else distance.sum() * 0.0


def patch_nce(
    queries: Sequence[torch.Tensor], keys: Sequence[torch.Tensor], temperature: float
) -> torch.Tensor:
    """PatchNCE (Park et al. 2020): per tap, each query patch must pick its own location's key
    among all key patches of the same image; the mean over taps of the mean cross-entropy.

    `queries` and `keys` hold one (N, P, C) tensor per tap, rows of unit length, so the logits
    are cosines over `temperature`. Keys are detached, as in the reference. The reference also
    lists the positive twice (once as the positive, once on the diagonal masked to -10 / T); its
    weight there, exp(-10 / 0.07), is below float precision, so this is the same loss. Computed
    in float32 whatever autocast is on.
    """
    per_tap = []
    with torch.autocast(queries[0].device.type, enabled=False):
        for query, key in zip(queries, keys, strict=True):
            logits = torch.bmm(query.float(), key.detach().float().transpose(1, 2))  # (N, P, P)
            count, patches = logits.shape[:2]
            target = torch.arange(patches, device=logits.device).repeat(count)
            per_tap.append(F.cross_entropy(logits.flatten(0, 1) / temperature, target))
    return torch.stack(per_tap).mean()
