"""Segmentation network factory: one public function keyed by architecture and encoder name.

Networks come from segmentation_models_pytorch and are always built offline: the encoder starts
from random weights, or from a local state dict when the user has pretrained weights on disk.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from pipeline.data.labels import NUM_CLASSES

# Canonical names; lookup is case-insensitive. Every one is covered by the tests (output at input
# resolution, a gradient for every parameter).
ARCHITECTURES = (
    "Unet",
    "UnetPlusPlus",
    "FPN",
    "DeepLabV3",
    "DeepLabV3Plus",
    "Linknet",
    "MAnet",
    # Transformer-era decoders: Segformer's all-MLP head (DAFormer's is its context-aware
    # variant) on MiT encoders ("mit_b0".."mit_b5"), UPerNet on any encoder.
    "Segformer",
    "UPerNet",
)
_BY_LOWER = {name.lower(): name for name in ARCHITECTURES}


def encoder_names() -> list[str]:
    """Encoders smp can build by name (timm encoders also work as "tu-<timm model name>")."""
    return list(smp.encoders.get_encoder_names())


def _check_encoder(encoder: str) -> None:
    if encoder.startswith("tu-"):
        import timm

        if not timm.is_model(encoder[3:]):
            raise ValueError(
                f"unknown timm encoder {encoder!r}: timm has no model {encoder[3:]!r} "
                f"(see timm.list_models())"
            )
        return
    if encoder not in smp.encoders.get_encoder_names():
        raise ValueError(
            f"unknown encoder {encoder!r}; smp encoders are: {', '.join(encoder_names())}, "
            f"or 'tu-<timm model name>'"
        )


def build_segmentation_model(
    arch: str,
    encoder: str,
    num_classes: int = NUM_CLASSES,
    encoder_weights: str | Path | None = None,
) -> nn.Module:
    """A segmentation net mapping (B, 3, H, W) images to (B, num_classes, H, W) logits.

    Args:
        arch: one of ARCHITECTURES (any case).
        encoder: an smp encoder name, e.g. "resnet18".
        num_classes: output channels.
        encoder_weights: None for random initialisation, or a local file holding a state dict
            for the encoder (loaded with weights_only=True; nothing is downloaded).
    """
    canonical = _BY_LOWER.get(arch.lower())
    if canonical is None:
        raise ValueError(
            f"unknown segmentation arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}"
        )
    _check_encoder(encoder)
    model = smp.create_model(
        canonical, encoder_name=encoder, encoder_weights=None, classes=num_classes
    )
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    return model


def load_encoder_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict into `model.encoder`; every key must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    # Classification checkpoints carry a head the encoder does not have (smp removes it too).
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    try:
        model.encoder.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: not a state dict for this encoder ({err})") from err
