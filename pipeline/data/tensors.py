"""Conversions between uint8 frames on disk and the tensors the nets take.

Frames are (N, H, W, 3) uint8 everywhere on disk and in the prepared arrays. The CycleGAN nets
take (N, 3, H, W) floats in [-1, 1]; the segmentation nets take (N, 3, H, W) floats in [0, 1]
normalised with the ImageNet statistics their encoders expect.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_gan_input(images: np.ndarray | Tensor, device: torch.device) -> Tensor:
    """(N, H, W, 3) uint8 (an array, or a tensor on any device) -> (N, 3, H, W) float32 in
    [-1, 1] on `device`, laid out channels-last (the uint8 frames' own order)."""
    if isinstance(images, np.ndarray):
        # Read-only inputs (memmaps, decoded files) are copied: torch wants writable memory.
        images = torch.from_numpy(np.require(images, np.uint8, ("C", "W")))
    if images.device.type == "cpu" and device.type == "cuda":
        # From page-locked memory the copy runs asynchronously, beside the device's work.
        images = images.pin_memory()
    batch = images.to(device, non_blocking=True)
    return batch.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def from_gan_output(images: Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8, rounded to the nearest level."""
    scaled = (images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_unit_float(images: Tensor) -> Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(images: Tensor) -> Tensor:
    """ImageNet normalization of (B, 3, H, W) images in [0, 1], as the encoders expect."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype)
    return (images - mean[:, None, None]) / std[:, None, None]
