"""What must hold before the chain starts, beyond the settings' own checks: the files params.yaml
names exist, and an encoder weights file fits its encoder.

Run by the `check_params` stage, which DVC runs before any stage deletes its outputs, and by
``python -m pipeline.cli.profile`` before DVC rewrites params.yaml.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ConfigError, DatasetSpec, Params, check_paths, random_init_warning
from pipeline.data.folder import split_folder
from pipeline.data.label_map import label_ids_for


def check_inputs(params: Params, generated: Path) -> str | None:
    """Raise ConfigError / WeightsError (naming the key or file) for a missing root or file, or
    a weights file of another encoder; return the random-init warning, if any (`generated`: the
    demo data's folder, whose roots a stage writes)."""
    check_paths(params, generated)
    for side, spec in (("source", params.data.source), ("target", params.data.target)):
        check_dataset(spec, f"data.{side}", side)
    seg = params.train_seg
    if seg.encoder_weights is not None:
        # smp, timm and torchvision take ~2 s to import: only a run with a weights file pays it.
        from pipeline.models.segmentation import check_encoder_weights

        check_encoder_weights(seg.arch, seg.encoder, seg.encoder_weights)
    return random_init_warning(params, generated)


def check_dataset(spec: DatasetSpec, key: str, side: str) -> None:
    """The label map parses (LabelMapError names the file and entry), and a folder dataset's
    image and label folders exist under its root (ConfigError names the key)."""
    label_ids_for(spec.kind, spec.label_map, f"{key}.label_map")
    root = Path(spec.root)
    if spec.kind != "folder" or not root.is_dir():
        return
    splits = [spec.train_split] if side == "source" else [spec.train_split, spec.val_split]
    for split in splits:
        for name in ("images", "labels"):
            if name == "labels" and side == "target" and split == spec.train_split:
                continue  # the target's train frames need no labels
            folder = split_folder(getattr(spec, name), split)
            if not (root / folder).is_dir():
                raise ConfigError(
                    f"params.yaml: {key}.{name} = {getattr(spec, name)!r}: {root / folder} is not "
                    "a folder"
                )
