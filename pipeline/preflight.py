"""What must hold before the chain starts, beyond the settings' own checks: the files params.yaml
names exist, and an encoder weights file fits its encoder.

Run by the `check_params` stage, which DVC runs before any stage deletes its outputs, and by
``python -m pipeline.cli.profile`` before DVC rewrites params.yaml.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params, check_paths, random_init_warning
from pipeline.models.segmentation import check_encoder_weights


def check_inputs(params: Params, generated: Path) -> str | None:
    """Raise ConfigError / WeightsError (naming the key or file) for a missing root or file, or
    a weights file of another encoder; return the random-init warning, if any (`generated`: the
    demo data's folder, whose roots a stage writes)."""
    check_paths(params, generated)
    seg = params.train_seg
    if seg.encoder_weights is not None:
        check_encoder_weights(seg.arch, seg.encoder, seg.encoder_weights)
    return random_init_warning(params, generated)
