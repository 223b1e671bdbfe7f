"""Fourier Domain Adaptation (Yang & Soatto, "FDA: Fourier Domain Adaptation for Semantic
Segmentation", CVPR 2020).

A source image takes on a target image's low-frequency amplitude spectrum (global colour,
illumination, tone) while keeping its own phase (edges, layout), so GTA5 frames can be made to
look like Cityscapes frames without any learning.

The swapped band is the paper's PyTorch code's (``low_freq_mutate`` in utils/__init__.py, the
function its train.py calls): in the unshifted spectrum, the four b x b corner blocks [0, b) and
[n - b, n) on each axis, b = floor(min(H, W) * beta), i.e. the (2b)^2 frequencies -b .. b-1 on
each axis around zero. That band includes -b but not +b, so the mutated spectrum is not
Hermitian; the translated image is the real part of its inverse, as a real image can hold only
the Hermitian part of a spectrum. (Its numpy version swaps the centred (2b + 1)^2 instead; the
torch one is what the published results were trained with.) b = 0 swaps nothing.

beta is relative to the image size, so the number of swapped bins changes with resolution:
beta = 0.01 gives b = 10 on 1024 x 2048 (20 x 20 frequencies) and b = 5 on 512 x 1024, the
size FDA trains at, but b = 1 on 128 x 256 (the mean colour and its three neighbours), and
b = 0 below 100 pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_beta(beta: float) -> None:
    if not 0.0 <= beta < 0.5:  # also rejects NaN
        raise ValueError(f"beta must be in [0, 0.5), got {beta}")


def band_half_size(height: int, width: int, beta: float) -> int:
    """b = floor(min(height, width) * beta), the half-size of the swapped frequency square."""
    _check_beta(beta)
    return math.floor(min(height, width) * beta)


def fda_band_mask(
    height: int, width: int, beta: float, device: torch.device | str | None = None
) -> Tensor:
    """(height, width) bool mask of the swapped frequencies, in unshifted ``fft2`` layout.

    True where -b <= k_y < b and -b <= k_x < b (the four b x b corners), with b from
    :func:`band_half_size`.
    """
    b = band_half_size(height, width, beta)
    # Integer frequencies in fft order: 0, 1, ..., then negative ones.
    fy = torch.fft.fftfreq(height, d=1.0 / height, device=device)  # (H,)
    fx = torch.fft.fftfreq(width, d=1.0 / width, device=device)  # (W,)
    ky, kx = (fy >= -b) & (fy < b), (fx >= -b) & (fx < b)
    return ky[:, None] & kx[None, :]


def fda_transfer(source: Tensor, target: Tensor, beta: float) -> Tensor:
    """Give ``source`` the low-frequency amplitude of ``target``, keeping the source phase.

    Args:
        source: float image batch (B, C, H, W).
        target: float images of the same value range as ``source`` (both [0, 1] or both
            [0, 255]), with the same (C, H, W) and a batch dimension that broadcasts to B
            (B or 1); a single (C, H, W) image also works.
        beta: band size relative to min(H, W), in [0, 0.5); see the module docstring for
            how it scales with resolution. The paper uses 0.01 to 0.09 at 1024 x 512.

    Returns:
        The translated batch, same shape and dtype as ``source``. It is not clamped: values
        can leave the input range slightly, so clamp before saving as an image if needed.
        Half and bfloat16 inputs are transformed in float32 and cast back.
    """
    _check_beta(beta)
    if not source.is_floating_point() or not target.is_floating_point():
        raise TypeError(f"images must be floating point, got {source.dtype} and {target.dtype}")
    if source.ndim != 4:
        raise ValueError(f"source must be (B, C, H, W), got shape {tuple(source.shape)}")
    # Only the batch may broadcast: a 1-channel target on a 3-channel source is a bug.
    batch_ok = target.ndim == 3 or (target.ndim == 4 and target.shape[0] in (1, source.shape[0]))
    if not batch_ok or target.shape[-3:] != source.shape[1:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not broadcast to source shape "
            f"{tuple(source.shape)}: it needs the same (C, H, W) and a batch of B or 1"
        )

    height, width = source.shape[-2:]
    b = band_half_size(height, width, beta)
    if b == 0:
        return source.clone()

    # FFTs of half and bfloat16 are imprecise or unsupported; float64 stays float64.
    compute = torch.float64 if source.dtype == torch.float64 else torch.float32
    # The full spectrum (B, C, H, W) complex: the band is not symmetric, so the half spectrum
    # of rfft2 cannot hold the mutation.
    spec_src = torch.fft.fft2(source.to(compute))
    spec_trg = torch.fft.fft2(target.to(compute))
    band = fda_band_mask(height, width, beta, device=source.device)
    swapped = torch.polar(spec_trg.abs().expand_as(spec_src), spec_src.angle())
    # Outside the band the source spectrum is used as is, so no polar round-trip error there.
    mutated = torch.where(band, swapped, spec_src)
    return torch.fft.ifft2(mutated).real.to(source.dtype)
