"""FID and KID of translated frames against real ones: how far a translator's output
distribution lies from the real training frames, in Inception-v3 pool features.

torchmetrics computes both (FrechetInceptionDistance, KernelInceptionDistance) on torch-fidelity's
Inception-v3, the network FID was defined with (TF's 2015-12-05 weights). Nothing is downloaded:
the weights come from a local file (`fid.inception_weights`; docs/translators.md, "Translation
quality" says how to save it once). Without one, the scores are reported as not computed.

The features are extracted once and handed to both metrics through an identity "feature
extractor": each metric would otherwise run the Inception net over every frame again.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.weights import WeightsError, load_weights_only

FEATURES = 2048  # Inception-v3's pool features, FID's standard layer
KID_SUBSETS = 100  # torchmetrics' default: KID is the mean of the unbiased MMD over subsets
# The KID paper's subset size, capped at the frames there are (then every subset is the whole
# set and kid_std is 0).
KID_SUBSET_SIZE = 1000


class _Features(nn.Module):
    """Passes precomputed (B, FEATURES) features through, so the metrics only accumulate them."""

    num_features = FEATURES

    def forward(self, features: Tensor) -> Tensor:
        return features


def inception_net(weights: str | Path) -> nn.Module:
    """torch-fidelity's Inception-v3 feature extractor with the state dict in `weights`.

    The file is opened with `weights_only=True` first (torch-fidelity's own loader unpickles
    anything), and a file that is no Inception-v3 state dict is refused with its path.
    """
    from torchmetrics.image.fid import NoTrainInceptionV3

    path = Path(weights)
    state = load_weights_only(path, WeightsError, "Inception-v3 weights file")
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected an Inception-v3 state dict, got {type(state)}")
    try:
        return NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(FEATURES)],
            feature_extractor_weights_path=str(path),
        )
    except RuntimeError as err:  # load_state_dict: missing / unexpected keys, wrong shapes
        raise WeightsError(
            f"{path}: not torch-fidelity's Inception-v3 weights ({str(err).splitlines()[0]})"
        ) from err


def _batches(images: np.ndarray, batch: int) -> Iterator[Tensor]:
    """(N, H, W, 3) uint8 frames as (B, 3, H, W) uint8 tensors, the Inception net's input."""
    for start in range(0, len(images), batch):
        chunk = np.ascontiguousarray(images[start : start + batch])
        yield torch.from_numpy(chunk).permute(0, 3, 1, 2)


@torch.no_grad()
def inception_features(
    net: nn.Module, images: np.ndarray, batch: int, device: torch.device
) -> Tensor:
    """(N, FEATURES) float64 pool features of (N, H, W, 3) uint8 frames (resized to 299 inside)."""
    net = net.to(device)
    parts = [net(chunk.to(device)).double().cpu() for chunk in _batches(images, batch)]
    return torch.cat(parts).reshape(len(images), FEATURES)


def fid_kid(real: Tensor, fake: Tensor, seed: int = 0) -> dict[str, float]:
    """FID, and KID's mean and standard deviation over subsets, of two (N, FEATURES) sets.

    KID draws its subsets from torch's global RNG; `seed` fixes them without disturbing it.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    fid = FrechetInceptionDistance(feature=_Features())
    subset_size = min(KID_SUBSET_SIZE, len(real), len(fake))
    with warnings.catch_warnings():
        # "will save all extracted features": these are (N, 2048) float64, a few MB per 1k frames.
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(
            feature=_Features(), subsets=KID_SUBSETS, subset_size=subset_size
        )
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid": float(kid_mean),
        "kid_std": float(kid_std),
    }


def translation_distances(
    weights: str | Path | None,
    real: np.ndarray,
    images: dict[str, np.ndarray],
    batch: int,
    device: torch.device,
) -> dict[str, Any]:
    """FID / KID of each named (N, H, W, 3) uint8 frame set (e.g. raw and translated sim)
    against `real`, or a note saying why they were not computed (no weights file set)."""
    if weights is None:
        return {"computed": False, "why": "fid.inception_weights is null (README)"}
    net = inception_net(weights)
    real_features = inception_features(net, real, batch, device)
    scores: dict[str, Any] = {"computed": True, "inception_weights": str(weights)}
    for name, frames in images.items():
        scores[name] = fid_kid(real_features, inception_features(net, frames, batch, device))
    return scores
