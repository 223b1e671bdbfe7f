"""The generator folder: the trained translation nets on disk, their writer and reader.

The train_cyclegan stage writes into models/cyclegan
    gen_sim2real.safetensors  gen_real2sim.safetensors   each generator's weights
    generator.json            netG, ngf, norm: what `build_generator` rebuilds either net from
A CUT / FastCUT run trains sim -> real only: its folder has gen_sim2real.safetensors alone, and
its generator.json also says which it is ("family": "cut" or "fastcut"). Translation reads
gen_sim2real and netG, ngf, norm, so it takes either folder.
The reader also takes a reference checkpoint (``latest_net_G_A.pth`` of
junyanz/pytorch-CycleGAN-and-pix2pix) given its architecture, since it has no generator.json.

It sits in the models layer, beside the generator factory, so that training (which writes it)
and translation (which reads it) share one definition without importing each other.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.io import read_json, write_json
from pipeline.models.cyclegan import build_generator, load_reference_generator_state
from pipeline.weights import SUFFIX, save_weights

GENERATOR_SETTINGS = "generator.json"
DIRECTIONS = ("gen_sim2real", "gen_real2sim")


class GeneratorFolderError(ValueError):
    """A generator cannot be loaded; the message names the file."""


def write_generators(
    out_dir: str | Path,
    gen_sim2real: nn.Module,
    gen_real2sim: nn.Module | None,
    netG: str,
    ngf: int,
    norm: str,
    family: str | None = None,
) -> None:
    """Write the generators' weights (gen_real2sim only where there is one) and generator.json
    (with `family` where given) into `out_dir`, each atomically."""
    out_dir = Path(out_dir)
    for name, net in zip(DIRECTIONS, (gen_sim2real, gen_real2sim)):
        if net is not None:
            save_weights(out_dir / f"{name}{SUFFIX}", net.state_dict())
    settings: dict[str, str | int] = {"netG": netG, "ngf": ngf, "norm": norm}
    if family is not None:
        settings["family"] = family
    write_json(out_dir / GENERATOR_SETTINGS, settings)


def load_generator(
    weights: str | Path, netG: str, ngf: int, norm: str, device: torch.device
) -> nn.Module:
    """A generator in eval mode with `weights`: a state dict saved by the training stage or a
    reference checkpoint (``module.`` prefixes and stale norm buffers are handled)."""
    generator = build_generator(netG, ngf, norm)
    try:
        load_reference_generator_state(generator, weights)
    except (ValueError, FileNotFoundError) as err:
        raise GeneratorFolderError(str(err)) from err
    return generator.to(device).eval()


def load_trained_generator(
    weights: str | Path, device: torch.device, settings: str | Path | None = None
) -> nn.Module:
    """Weights written by the training stage, rebuilt from the generator.json beside them."""
    weights = Path(weights)
    settings = Path(settings) if settings else weights.parent / GENERATOR_SETTINGS
    if not settings.is_file():
        raise GeneratorFolderError(
            f"{settings}: not found; it describes the generator that {weights.name} belongs to. "
            f"For a reference checkpoint pass --reference-netG (and --ngf, --norm)."
        )
    spec = read_json(settings)
    return load_generator(weights, spec["netG"], spec["ngf"], spec["norm"], device)
