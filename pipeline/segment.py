"""Segment images with a trained variant: its model folder, and the `sim2real-segment` command.

A model folder (what the train_seg stage writes to models/seg/<variant>) holds
    model.safetensors  the net's weights
    model.json         what it takes to use them: architecture, encoder, the working input size
                       the net was trained at, the normalisation, and the class table
so a data team needs nothing else from the pipeline's settings. A frame of any size is resized to
the working size (as the prepare stage resizes), the logits are resized back to the frame's own
size and the argmax is taken there, exactly as the evaluate stage scores real val.

Command line (``sim2real-segment``): ``python -m pipeline.segment --model models/seg/cyclegan
--input DIR --output DIR`` writes OUTPUT/masks/<name>.png (uint8 train ids, 0..18) and
OUTPUT/overlays/<name>.png (the frame blended with the class colours). Every file is written
under a temp name and renamed; a rerun skips finished frames, and refuses an output folder that
another model wrote.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline import runtime
from pipeline.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_TO_COLOR
from pipeline.data.tensors import IMAGENET_MEAN, IMAGENET_STD
from pipeline.io import (
    ImageReadError,
    InputError,
    atomic_path,
    image_files,
    read_json,
    read_rgb,
    resize_rgb,
    write_json,
    write_png,
)
from pipeline.models.segmentation import build_segmentation_model
from pipeline.weights import load_weights, save_weights

MODEL_WEIGHTS = "model.safetensors"
MODEL_SPEC = "model.json"
# Written into a segment output folder: which model made its masks.
OUTPUT_MARKER = "segment.json"
OVERLAY_ALPHA = 0.5


class SegmentError(RuntimeError):
    """Segmentation cannot start or go on; the message names the file or folder."""


def model_spec(arch: str, encoder: str, input_size: Sequence[int]) -> dict[str, Any]:
    """model.json: how to rebuild the net and feed it (input in RGB order, 0..255 scaled to
    0..1, then (x - mean) / std), and what its output channels mean."""
    return {
        "arch": arch,
        "encoder": encoder,
        "num_classes": NUM_CLASSES,
        "input_size": [int(s) for s in input_size],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "ignore_index": IGNORE_INDEX,
        "classes": [
            {"train_id": i, "name": name, "color": TRAIN_ID_TO_COLOR[i].tolist()}
            for i, name in enumerate(CLASS_NAMES)
        ],
    }


def write_model(out_dir: str | Path, model: nn.Module, spec: dict[str, Any]) -> None:
    """Write model.safetensors and model.json into `out_dir`."""
    out_dir = Path(out_dir)
    save_weights(out_dir / MODEL_WEIGHTS, model.state_dict())
    write_json(out_dir / MODEL_SPEC, spec)


def load_model(model_dir: str | Path) -> nn.Module:
    """The net saved in `model_dir` (model.json + model.safetensors), in eval mode, on CPU."""
    model_dir = Path(model_dir)
    spec = read_json(model_dir / MODEL_SPEC)
    model = build_segmentation_model(spec["arch"], spec["encoder"], spec["num_classes"])
    model.load_state_dict(load_weights(model_dir / MODEL_WEIGHTS))
    return model.eval()


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
    ) -> None:
        self.device = device or torch.device("cpu")
        self.precision = runtime.resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.input_size = tuple(spec["input_size"])
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(spec["mean"], device=self.device).view(shape)
        self.std = torch.tensor(spec["std"], device=self.device).view(shape)

    @classmethod
    def from_folder(
        cls, model_dir: str | Path, device: torch.device | None = None, precision: str = "fp32"
    ) -> Segmenter:
        model_dir = Path(model_dir)
        for name in (MODEL_SPEC, MODEL_WEIGHTS):
            if not (model_dir / name).is_file():
                raise SegmentError(
                    f"{model_dir / name}: not found; --model takes a folder written by the "
                    f"train_seg stage (models/seg/<variant>)"
                )
        return cls(load_model(model_dir), read_json(model_dir / MODEL_SPEC), device, precision)

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
            logits = self.model(x)  # (N, C, h, w)
        # One frame at a time: (C, H, W) float logits of a 1024 x 2048 frame are 160 MB.
        ids = [upsampled_argmax(frame, size) for frame in logits.float()]
        return torch.stack(ids).to(torch.uint8).cpu().numpy()


def overlay(image: np.ndarray, train_ids: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8 frame blended with the class colours of (H, W) train ids."""
    colours = TRAIN_ID_TO_COLOR[train_ids].astype(np.float32)
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return np.rint(blend).astype(np.uint8)


def weights_digest(model_dir: str | Path) -> str:
    """sha256 of the model's weights and model.json: which model made an output folder."""
    digest = hashlib.sha256()
    for name in (MODEL_WEIGHTS, MODEL_SPEC):
        digest.update((Path(model_dir) / name).read_bytes())
    return digest.hexdigest()


def claim_output(output_dir: Path, model_dir: Path) -> None:
    """Mark `output_dir` as this model's, or refuse it when another model's masks are there."""
    marker = output_dir / OUTPUT_MARKER
    digest = weights_digest(model_dir)
    if marker.is_file():
        if read_json(marker).get("model_sha256") == digest:
            return
        raise SegmentError(
            f"{output_dir} holds masks of another model ({marker} names "
            f"{read_json(marker).get('model')}); pick another --output folder, or delete that "
            f"one to redo it with {model_dir}"
        )
    if (output_dir / "masks").is_dir() and any((output_dir / "masks").iterdir()):
        raise SegmentError(
            f"{output_dir / 'masks'} holds masks but no {OUTPUT_MARKER} says which model made "
            f"them; pick another --output folder"
        )
    write_json(marker, {"model": str(model_dir), "model_sha256": digest})


def segment_folder(
    segmenter: Segmenter,
    model_dir: str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    batch: int,
) -> dict[str, Any]:
    """Segment every image file in `input_dir` at its own size into `output_dir`.

    Frames whose mask and overlay both exist are skipped (resume). Consecutive files of the same
    size share a forward pass, up to `batch` of them. Returns files, segmented, seconds.
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
    for path in tqdm(todo, desc="segment", unit="img", dynamic_ncols=True):
        try:
            image = read_rgb(path)
        except (ImageReadError, OSError):
            # Frames read before the bad one are finished first, so a rerun starts after them.
            if pending:
                flush()
            raise
        if pending and (len(pending) == batch or pending[0][1].shape != image.shape):
            flush()
        pending.append((path, image))
    if pending:
        flush()
    return {
        "files": len(files),
        "segmented": len(todo),
        "seconds": round(time.perf_counter() - start, 3),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Command line (``sim2real-segment``): segment a folder of images with a trained variant."""
    parser = argparse.ArgumentParser(
        description="Segment every image in a folder with a trained variant: PNG masks of "
        "train ids and colour overlays."
    )
    parser.add_argument("--model", type=Path, required=True, help="models/seg/<variant>")
    parser.add_argument("--input", type=Path, required=True, help="folder of images")
    parser.add_argument("--output", type=Path, required=True, help="folder for masks/, overlays/")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    runtime.set_threads(args.threads)
    try:
        segmenter = Segmenter.from_folder(args.model, runtime.pick_device(), args.precision)
        result = segment_folder(segmenter, args.model, args.input, args.output, args.batch)
    except (SegmentError, InputError, ImageReadError) as err:
        sys.exit(f"sim2real-segment: {err}")
    print(
        f"segmented {result['segmented']} of {result['files']} images into {args.output} "
        f"(masks/, overlays/) in {result['seconds']} s"
    )


if __name__ == "__main__":
    main()


def copy_semantic_net(weight: float, model_dir: Path, out_dir: Path) -> None:
    """The semantic_net stage: `model_dir`'s model files copied to a fresh `out_dir` when
    CyCADA's semantic loss is on (`weight` > 0), else only a constant marker there."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    if weight == 0:
        write_json(out_dir / "disabled.json", {"lambda_semantic": 0.0})
        return
    for name in (MODEL_WEIGHTS, MODEL_SPEC):
        with atomic_path(out_dir / name) as tmp:
            shutil.copyfile(model_dir / name, tmp)
