"""Segmentation network factory: one public function keyed by architecture and encoder name.

Networks come from segmentation_models_pytorch and are always built offline: the encoder starts
from random weights, or from a local state dict when the user has pretrained weights on disk.
"""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders.timm_vit import TimmViTEncoder
from torch import nn

from pipeline.data.labels import NUM_CLASSES
from pipeline.weights import WeightsError, load_weights_only, state_mismatch

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
    # DPT on timm ViT encoders ("tu-vit_small_patch14_dinov2", "tu-vit_base_patch16_224", ...):
    # the dense-prediction decoder the DINOv2 segmentation results use. (smp 0.6's UPerNet
    # refuses ViT encoders: "Unsupported model downsampling pattern".)
    "DPT",
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
    if canonical == "DPT":
        model = _build_dpt(encoder, num_classes)
    else:
        model = smp.create_model(
            canonical, encoder_name=encoder, encoder_weights=None, classes=num_classes
        )
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights, encoder)
    return model


def _build_dpt(encoder: str, num_classes: int) -> nn.Module:
    """smp's DPT on a timm ViT that accepts any input size whose sides are multiples of 16.

    smp's DPT reassembles the ViT's tokens at 1/4..1/32 of the input by factors stride / 4 ...
    stride / 32, which only line up for power-of-two patch sizes: DINOv2's 14 px patches give
    3.5x and fail in the decoder at every input size. Such encoders are built with 16 px patches
    instead (their weights files are resampled on load, `load_encoder_weights`). The final norm
    and classifier, which the decoder never reads, are pruned: an unused parameter would stop
    DistributedDataParallel.
    """
    if not encoder.startswith("tu-"):
        raise ValueError(
            f"DPT needs a timm ViT encoder ('tu-<timm model name>', e.g. "
            f"'tu-vit_small_patch14_dinov2'), not {encoder!r}"
        )

    def build(**vit_kwargs) -> nn.Module:
        return smp.create_model(
            "DPT",
            encoder_name=encoder,
            encoder_weights=None,
            classes=num_classes,
            dynamic_img_size=True,
            **vit_kwargs,
        )

    try:
        model = build()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"DPT cannot use encoder {encoder!r}: {err}") from err
    stride = model.encoder.output_stride
    if stride & (stride - 1):
        model = build(patch_size=16)
    # indices=1 keeps every block up to the last, which smp's taps always include.
    model.encoder.model.prune_intermediate_layers(1, prune_norm=True, prune_head=True)
    return model


def _fit_vit_state(encoder: nn.Module, state: dict) -> dict:
    """A ViT encoder's weights file, as timm saves it or as smp's encoder does, fitted to the
    encoder: its patch embedding and position embedding resampled by timm to the encoder's patch
    size and grid, and the pruned final norm and head dropped."""
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    vit = encoder.model
    if state and all(key.startswith("model.") for key in state):
        state = {key.removeprefix("model."): value for key, value in state.items()}
    if isinstance(vit, VisionTransformer):
        state = checkpoint_filter_fn(state, vit)
    kept = vit.state_dict().keys()
    pruned = ("norm.", "fc_norm.", "head.")
    return {
        f"model.{key}": value
        for key, value in state.items()
        if key in kept or not key.startswith(pruned)
    }


def _read_encoder_state(path: Path) -> dict[str, torch.Tensor]:
    """An encoder weights file's state dict (weights only), less a classifier head."""
    state = load_weights_only(path, WeightsError, "encoder weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors ({type(state).__name__})")
    # Classification checkpoints carry a head the encoder does not have (smp removes it too).
    return {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}


def _fitted_state(model: nn.Module, path: Path, encoder: str) -> dict[str, torch.Tensor]:
    state = _read_encoder_state(path)
    if isinstance(model.encoder, TimmViTEncoder):
        try:
            state = _fit_vit_state(model.encoder, state)
        except (RuntimeError, KeyError, ValueError) as err:
            raise WeightsError(
                f"{path}: not a state dict for this encoder ({encoder}): {err}"
            ) from err
    problem = state_mismatch(model.encoder.state_dict(), state)
    if problem is not None:
        raise WeightsError(f"{path}: not a state dict for this encoder ({encoder}): {problem}")
    return state


def load_encoder_weights(model: nn.Module, path: str | Path, encoder: str = "") -> None:
    """Load a local encoder state dict into `model.encoder`; every key and shape must match,
    else WeightsError names the file and what differs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} not found")
    model.encoder.load_state_dict(_fitted_state(model, path, encoder or "the net's encoder"))


def check_encoder_weights(arch: str, encoder: str, path: str | Path) -> None:
    """Refuse, before any training, a weights file that does not fit `encoder` (WeightsError
    naming the file). The net is built on the meta device, which allocates no weights, so this
    costs reading the file; a model whose construction needs real tensors is built on the CPU."""
    path = Path(path)
    try:
        with torch.device("meta"):
            model = build_segmentation_model(arch, encoder)
    except (RuntimeError, NotImplementedError):
        model = build_segmentation_model(arch, encoder)
    _fitted_state(model, path, encoder)
