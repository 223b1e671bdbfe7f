"""What params.yaml names on disk: the checks that run before the chain starts, and the
warning a real-data run from random weights gets."""

from __future__ import annotations

from pathlib import Path

from pipeline.config.base import fail
from pipeline.config.params import Params


def check_paths(params: Params, generated: Path) -> None:
    """The files and folders params.yaml names that must exist before the chain starts: the
    two dataset roots (and a frame list), and local weights files (encoder, Inception); roots inside
    `generated` (the demo data, which a stage writes) need not exist yet. ConfigError names the
    key and the path."""
    for key, spec in (("data.source", params.data.source), ("data.target", params.data.target)):
        if not Path(spec.root).is_dir() and not Path(spec.root).is_relative_to(generated):
            fail(f"{key}.root", spec.root, "an existing folder in the dataset's layout")
        if spec.list_file is not None and not Path(spec.list_file).is_file():
            fail(f"{key}.list_file", spec.list_file, "an existing file of frame names, or null")
    for key, weights in (
        ("train_seg.encoder_weights", params.train_seg.encoder_weights),
        ("fid.inception_weights", params.fid.inception_weights),
    ):
        if weights is not None and not Path(weights).is_file():
            fail(key, weights, "an existing local weights file, or null")


def random_init_warning(params: Params, generated: Path) -> str | None:
    """What starting the segmentation encoders from random weights costs on real data, or None
    (the demo, whose roots lie inside `generated`, or a weights file is set)."""
    roots = [Path(params.data.source.root), Path(params.data.target.root)]
    if params.train_seg.encoder_weights is not None or all(
        root.is_relative_to(generated) for root in roots
    ):
        return None
    return (
        "warning: train_seg.encoder_weights is null, so every segmentation net starts from "
        "random weights. Every published GTA5 -> Cityscapes result starts from ImageNet-"
        "pretrained encoders (DeepLabV2-ResNet-101: source only 37.3, DACS 52.1 mIoU; DAFormer "
        "on MiT-B5: 68.3); from random weights expect far lower scores for every variant. "
        "docs/recipes.md, 'Backbones': save a pretrained encoder once and point this setting at it."
    )
