"""Segment images with a trained variant's model folder (pipeline.models.model_folder).

A frame of any size is resized to the working size the net was trained at (as the prepare stage
resizes), the logits are resized back to the frame's own size and the argmax is taken there,
exactly as the evaluate stage scores real val. The net sees the working-size frame whole, or in
sliding windows (`Inference`), the evaluation protocols of the literature.

A segmented folder (`segment_folder`, behind the ``sim2real-segment`` command of
pipeline.cli.segment) holds OUTPUT/masks/<name>.png (uint8 train ids, 0..18),
OUTPUT/overlays/<name>.png (the frame blended with the class colours) and segment.json naming
the model. Every file is written under a temp name and renamed; a rerun skips finished frames,
and refuses an output folder that another model wrote.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import runtime
from pipeline.data.labels import TRAIN_ID_TO_COLOR
from pipeline.io import (
    ImageReadError,
    OutputClaimed,
    claim_folder,
    image_files,
    read_rgb,
    resize_rgb,
    write_png,
)
from pipeline.models.model_folder import load_model, read_model_spec, weights_digest

# Written into a segment output folder: which model made its masks.
OUTPUT_MARKER = "segment.json"
OVERLAY_ALPHA = 0.5


class SegmentError(RuntimeError):
    """Segmentation cannot start or go on; the message names the file or folder."""


@dataclasses.dataclass(frozen=True)
class Inference:
    """How a net sees a working-size frame: whole (`window` None), or in `window`-sized crops
    every `stride` pixels (H, W each), their logits averaged where they overlap, as mmseg's
    ``slide_inference`` that DAFormer, HRDA and MIC evaluate with (windows at the frame's edge
    are shifted inside it, never padded)."""

    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None

    def describe(self) -> str:
        if self.window is None:
            return "whole frame"
        return (
            f"sliding {self.window[0]}x{self.window[1]} windows, stride "
            f"{self.stride[0]}x{self.stride[1]}"
        )


WHOLE_FRAME = Inference()


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Where each window begins along one axis: every `stride` pixels, the last one shifted so
    it ends at the edge (mmseg's grid: ceil((size - window) / stride) + 1 windows)."""
    count = max(size - window + stride - 1, 0) // stride + 1
    return [max(min(k * stride + window, size) - window, 0) for k in range(count)]


def logits_of(
    model: nn.Module, x: torch.Tensor, inference: Inference = WHOLE_FRAME
) -> torch.Tensor:
    """(B, C, H, W) logits of normalised (B, 3, H, W) images under `inference`."""
    if inference.window is None:
        return model(x)
    (window_h, window_w), (stride_h, stride_w) = inference.window, inference.stride
    height, width = x.shape[-2:]
    total, count = None, x.new_zeros((1, 1, height, width))
    for top in window_starts(height, window_h, stride_h):
        for left in window_starts(width, window_w, stride_w):
            bottom, right = min(top + window_h, height), min(left + window_w, width)
            crop = model(x[..., top:bottom, left:right])  # (B, C, h, w)
            if total is None:
                total = x.new_zeros((x.shape[0], crop.shape[1], height, width), dtype=crop.dtype)
            total[..., top:bottom, left:right] += crop
            count[..., top:bottom, left:right] += 1
    return total / count


def upsampled_argmax(logits: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(C, H, W) logits -> (h, w) class ids, resizing the logits (bilinear) before the argmax."""
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]
    return logits.argmax(dim=0)


class Segmenter:
    """A trained net with its model.json: uint8 RGB frames of any size in, train ids out."""

    def __init__(
        self,
        model: nn.Module,
        spec: dict[str, Any],
        device: torch.device | None = None,
        precision: str = "fp32",
        inference: Inference = WHOLE_FRAME,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.inference = inference
        self.precision = runtime.resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.input_size = tuple(spec["input_size"])
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(spec["mean"], device=self.device).view(shape)
        self.std = torch.tensor(spec["std"], device=self.device).view(shape)

    @classmethod
    def from_folder(
        cls,
        model_dir: str | Path,
        device: torch.device | None = None,
        precision: str = "fp32",
        inference: Inference = WHOLE_FRAME,
    ) -> Segmenter:
        """The net of a model folder; ModelFolderError when a file of it is missing."""
        spec = read_model_spec(model_dir)
        return cls(load_model(model_dir), spec, device, precision, inference)

    @torch.inference_mode()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB frames of one size -> (N, H, W) uint8 train ids."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"expected (N, H, W, 3) uint8 RGB frames, got {images.dtype} {images.shape}"
            )
        size = images.shape[1:3]
        working = np.stack([resize_rgb(image, self.input_size) for image in images])
        x = torch.from_numpy(working).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self.mean) / self.std  # (N, 3, h, w) at the working size
        with runtime.autocast(self.precision, self.device):
            logits = logits_of(self.model, x, self.inference)  # (N, C, h, w)
        # One frame at a time: (C, H, W) float logits of a 1024 x 2048 frame are 160 MB.
        ids = [upsampled_argmax(frame, size) for frame in logits.float()]
        return torch.stack(ids).to(torch.uint8).cpu().numpy()


def overlay(image: np.ndarray, train_ids: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8 frame blended with the class colours of (H, W) train ids."""
    colours = TRAIN_ID_TO_COLOR[train_ids].astype(np.float32)
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.rint(blend).astype(np.uint8)


def claim_output(output_dir: Path, model_dir: Path) -> None:
    """Mark `output_dir` as this model's, or refuse it when another model's masks are there."""
    marker = output_dir / OUTPUT_MARKER
    digest = weights_digest(model_dir)
    try:
        claim_folder(marker, "model", str(model_dir), digest, output_dir / "masks", "*")
    except OutputClaimed as claimed:
        if not claimed.marked:
            raise SegmentError(
                f"{output_dir / 'masks'} holds masks but no {OUTPUT_MARKER} says which model "
                f"made them; pick another --output folder"
            ) from None
        raise SegmentError(
            f"{output_dir} holds masks of another model ({marker} names {claimed.owner}); pick "
            f"another --output folder, or delete that one to redo it with {model_dir}"
        ) from None


def segment_folder(
    segmenter: Segmenter,
    model_dir: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    batch: int,
) -> dict[str, Any]:
    """Segment every image file in `input_dir` at its own size into `output_dir`.

    Frames whose mask and overlay both exist are skipped (resume). Consecutive files of the same
    size share a forward pass, up to `batch` of them, and are written as soon as it ends.
    Returns files, segmented, seconds.
    """
    input_dir, output_dir, model_dir = Path(input_dir), Path(output_dir), Path(model_dir)
    files = image_files(input_dir)
    claim_output(output_dir, model_dir)
    masks, overlays = output_dir / "masks", output_dir / "overlays"

    def done(path: Path) -> bool:
        return (masks / f"{path.stem}.png").is_file() and (overlays / f"{path.stem}.png").is_file()

    todo = [path for path in files if not done(path)]
    pending: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        predicted = segmenter.predict(np.stack([image for _, image in pending]))
        for (path, image), ids in zip(pending, predicted):
            # The mask last: a frame counts as done only once both files exist.
            write_png(overlays / f"{path.stem}.png", overlay(image, ids))
            write_png(masks / f"{path.stem}.png", ids)
        pending.clear()

    start = time.perf_counter()
    for path in runtime.progress(todo, desc="segment"):
        try:
            image = read_rgb(path)
        except (ImageReadError, OSError):
            # Frames read before the bad one are finished first, so a rerun starts after them.
            if pending:
                flush()
            raise
        if pending and pending[0][1].shape != image.shape:
            flush()
        pending.append((path, image))
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return {
        "files": len(files),
        "segmented": len(todo),
        "seconds": round(time.perf_counter() - start, 3),
    }
