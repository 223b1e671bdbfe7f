"""The reference CycleGAN (junyanz/pytorch-CycleGAN-and-pix2pix), timed beside ours.

Its code is not part of this project and is never copied in: fetch the repository (or its fork
zenml-io/pytorch-CycleGAN-and-pix2pix at 00d5574, upstream master of 2021-11, which is smaller)
into `.ref/pytorch-CycleGAN-and-pix2pix` (git-ignored), or point SIM2REAL_REFERENCE at a
checkout. Only its `models/` and `util/` folders are imported. Its `optimize_parameters()` runs
on random tensors as its training script would call it, with its own defaults (DataParallel on
CUDA, cudnn.benchmark on, fp32).
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from pathlib import Path

import torch

DEFAULT_FOLDER = Path(".ref/pytorch-CycleGAN-and-pix2pix")


def folder() -> Path | None:
    """Where the reference checkout is, or None when there is none."""
    path = Path(os.environ.get("SIM2REAL_REFERENCE", DEFAULT_FOLDER))
    return path if (path / "models" / "cycle_gan_model.py").is_file() else None


def reference_step(
    netG: str, ngf: int, ndf: int, crop: tuple[int, int], batch: int, device: torch.device
) -> Callable[[], None]:
    """One reference training step (both generators, then both discriminators) per call."""
    path = folder()
    if path is None:
        raise FileNotFoundError(f"no reference checkout at {DEFAULT_FOLDER} (see {__name__})")
    sys.path.insert(0, str(path.resolve()))
    from models.cycle_gan_model import CycleGANModel  # the reference's own package

    options = types.SimpleNamespace(
        gpu_ids=[device.index or 0] if device.type == "cuda" else [],
        isTrain=True,
        checkpoints_dir=str(Path(os.environ.get("TMPDIR", "/tmp"))),
        name="reference",
        preprocess="resize_and_crop",  # its default; turns cudnn.benchmark on
        input_nc=3,
        output_nc=3,
        ngf=ngf,
        ndf=ndf,
        netG=netG,
        netD="basic",
        n_layers_D=3,
        norm="instance",
        no_dropout=True,
        init_type="normal",
        init_gain=0.02,
        lambda_identity=0.5,
        lambda_A=10.0,
        lambda_B=10.0,
        pool_size=50,
        gan_mode="lsgan",
        lr=0.0002,
        beta1=0.5,
        direction="AtoB",
    )
    model = CycleGANModel(options)
    # Random images in [-1, 1], as its data loader hands them over (on the host).
    sim = torch.rand(batch, 3, *crop) * 2 - 1
    real = torch.rand(batch, 3, *crop) * 2 - 1

    def step() -> None:
        model.set_input({"A": sim, "B": real, "A_paths": None, "B_paths": None})
        model.optimize_parameters()

    return step
