"""Paired image + label augmentation for segmentation training, on batched tensors.

One affine warp per sample does the random scale, the random crop and the horizontal flip, so
the image and its label move together exactly: the image is resampled bilinearly, the label with
nearest neighbour, and label pixels that fall outside the source are IGNORE_INDEX (never 0, which
is road). Colour jitter then touches the image only. Every random draw comes from torch's global
generator, so `seed_everything` makes a run reproducible and a checkpoint's RNG state resumes it.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from kornia.geometry.transform import warp_affine
from torch import Tensor

from pipeline.data.labels import IGNORE_INDEX


class PairedAugment:
    """Random scale, crop to `crop`, horizontal flip and colour jitter of images with labels.

    Args:
        crop: output (H, W).
        scale: (min, max) resize factor, drawn uniformly per sample. Where the scaled image is
            smaller than the crop it lands at a random place and the rest is padding.
        flip: mirror each sample with probability 1/2.
        color_jitter: brightness, contrast and saturation factors drawn from
            [1 - color_jitter, 1 + color_jitter]; 0 turns it off.
    """

    def __init__(
        self,
        crop: tuple[int, int],
        scale: tuple[float, float],
        flip: bool,
        color_jitter: float,
    ) -> None:
        self.crop = crop
        self.scale = scale
        self.flip = flip
        self.jitter = (
            K.ColorJitter(color_jitter, color_jitter, color_jitter, 0.0, p=1.0)
            if color_jitter > 0
            else None
        )

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Augment (B, 3, H, W) float images in [0, 1] with their (B, H, W) integer labels.

        Returns (B, 3, crop_h, crop_w) images in [0, 1] and (B, crop_h, crop_w) int64 labels.
        """
        matrix = self.sample_warp(images.shape[0], images.shape[-2:], images.device)
        images = warp_affine(
            images, matrix, self.crop, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        # float32 holds every id 0..255 exactly, and nearest sampling never mixes two of them.
        fill = torch.tensor([float(IGNORE_INDEX)], device=labels.device)
        labels = warp_affine(
            labels[:, None].float(),
            matrix,
            self.crop,
            mode="nearest",
            padding_mode="fill",
            align_corners=True,
            fill_value=fill,
        )[:, 0].long()
        if self.jitter is not None:
            images = self.jitter(images)
        return images, labels

    def sample_warp(
        self, batch: int, size: tuple[int, int] | torch.Size, device: torch.device
    ) -> Tensor:
        """(batch, 2, 3) source-to-crop pixel matrices: scale, then crop offset, then flip."""
        (height, width), (crop_h, crop_w) = size, self.crop
        low, high = self.scale
        s = low + (high - low) * torch.rand(batch)  # (B,)
        # The crop's top-left corner in scaled-image pixels; negative where the scaled image is
        # smaller than the crop, so the image sits at a random place inside padding.
        span_y = height * s - crop_h  # (B,)
        span_x = width * s - crop_w
        oy = torch.minimum(span_y, torch.zeros(())) + span_y.abs() * torch.rand(batch)
        ox = torch.minimum(span_x, torch.zeros(())) + span_x.abs() * torch.rand(batch)
        # Pixel centres sit at integer coordinates: a pixel's centre x maps to s * (x + 0.5) - 0.5.
        shift = 0.5 * s - 0.5
        matrix = torch.zeros(batch, 2, 3)
        matrix[:, 0, 0] = s
        matrix[:, 0, 2] = shift - ox
        matrix[:, 1, 1] = s
        matrix[:, 1, 2] = shift - oy
        if self.flip:
            mirror = torch.rand(batch) < 0.5  # (B,)
            # x' = (crop_w - 1) - x
            matrix[mirror, 0] *= -1
            matrix[mirror, 0, 2] += crop_w - 1
        return matrix.to(device)
