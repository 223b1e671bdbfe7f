"""Segmentation factory: every architecture's output, gradients, errors and local weights."""

from __future__ import annotations

import pytest
import torch

from pipeline.data.labels import NUM_CLASSES
from pipeline.models.segmentation import ARCHITECTURES, build_segmentation_model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_logits_at_input_size_and_every_parameter_learns(arch: str) -> None:
    torch.manual_seed(0)
    model = build_segmentation_model(arch, "resnet18")
    images = torch.randn(2, 3, 64, 96)
    logits = model(images)
    assert logits.shape == (2, NUM_CLASSES, 64, 96)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{arch}: no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_arch_names_are_case_insensitive() -> None:
    model = build_segmentation_model("deeplabv3plus", "resnet18", num_classes=5)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5, 64, 64)


def test_unknown_arch_is_named_with_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"'SegNet'.*Unet, .*DeepLabV3Plus"):
        build_segmentation_model("SegNet", "resnet18")


@pytest.mark.parametrize("encoder", ["resnet19", "tu-not_a_timm_model"])
def test_unknown_encoder_is_named(encoder: str) -> None:
    with pytest.raises(ValueError, match=f"'{encoder}'"):
        build_segmentation_model("Unet", encoder)


def test_encoder_weights_load_from_a_local_file(tmp_path) -> None:
    torch.manual_seed(1)
    pretrained = build_segmentation_model("FPN", "resnet18")
    path = tmp_path / "resnet18.pt"
    # A classification checkpoint: the encoder's weights plus a head the encoder lacks.
    state = {**pretrained.encoder.state_dict(), "fc.weight": torch.zeros(10, 512)}
    torch.save(state, path)
    torch.manual_seed(2)
    model = build_segmentation_model("FPN", "resnet18", encoder_weights=path)
    for name, value in pretrained.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], value), name
    # The decoder is not touched: it keeps its own (different) random initialisation.
    assert not torch.equal(
        model.segmentation_head[0].weight, pretrained.segmentation_head[0].weight
    )


def test_missing_or_foreign_encoder_weights_name_the_file(tmp_path) -> None:
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pt"):
        build_segmentation_model("Unet", "resnet18", encoder_weights=missing)
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt"):
        build_segmentation_model("Unet", "resnet18", encoder_weights=foreign)


def test_a_segformer_on_mit_takes_its_encoder_from_a_local_file_and_refuses_another(
    tmp_path,
) -> None:
    """DAFormer's backbone family: a MiT encoder's saved state dict loads exactly; a state dict
    of another MiT size is refused, naming the file."""
    torch.manual_seed(3)
    pretrained = build_segmentation_model("Segformer", "mit_b0")
    path = tmp_path / "mit_b0.pt"
    torch.save(pretrained.encoder.state_dict(), path)
    model = build_segmentation_model("Segformer", "mit_b0", encoder_weights=path)
    for name, value in pretrained.encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], value), name
    assert model(torch.randn(2, 3, 64, 96)).shape == (2, NUM_CLASSES, 64, 96)
    bigger = tmp_path / "mit_b1.pt"
    torch.save(build_segmentation_model("Segformer", "mit_b1").encoder.state_dict(), bigger)
    with pytest.raises(ValueError, match=r"mit_b1\.pt: not a state dict for this encoder"):
        build_segmentation_model("Segformer", "mit_b0", encoder_weights=bigger)
