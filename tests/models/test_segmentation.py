"""Segmentation factory: every architecture's output, gradients, errors and local weights."""

from __future__ import annotations

import pytest
import torch

from pipeline.data.labels import NUM_CLASSES
from pipeline.models.segmentation import (
    ARCHITECTURES,
    build_segmentation_model,
    check_encoder_weights,
)
from pipeline.weights import WeightsError


# DPT needs a ViT encoder; its own tests are below.
@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if a != "DPT"])
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


def test_a_weights_file_is_checked_against_its_encoder_in_one_line_before_training(
    tmp_path,
) -> None:
    """check_encoder_weights (the check_params stage's) accepts the encoder's own file and
    refuses another encoder's in one line that names the file and what differs, not thousands
    of keys; building the net with the file fails the same way, as a WeightsError."""
    own, other = tmp_path / "mit_b0.pth", tmp_path / "resnet18.pth"
    torch.save(build_segmentation_model("Segformer", "mit_b0").encoder.state_dict(), own)
    torch.save(build_segmentation_model("Unet", "resnet18").encoder.state_dict(), other)
    check_encoder_weights("Segformer", "mit_b0", own)
    for attempt in (
        lambda: check_encoder_weights("Segformer", "mit_b0", other),
        lambda: build_segmentation_model("Segformer", "mit_b0", encoder_weights=other),
    ):
        with pytest.raises(WeightsError) as refused:
            attempt()
        message = str(refused.value)
        assert message.startswith(f"{other}: not a state dict for this encoder (mit_b0): ")
        assert "missing keys: " in message and "unexpected keys: " in message
        assert "\n" not in message and len(message) < 600
    # Same keys, other shapes: named with both shapes.
    state = torch.load(own, weights_only=True)
    state["patch_embed1.proj.weight"] = torch.zeros(1, 3, 7, 7)
    torch.save(state, tmp_path / "reshaped.pth")
    with pytest.raises(
        WeightsError, match=r"shape mismatch \(file vs net\): patch_embed1\.proj\.weight \(1, 3"
    ):
        check_encoder_weights("Segformer", "mit_b0", tmp_path / "reshaped.pth")
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(WeightsError, match=r"text\.pth: refused to load"):
        check_encoder_weights("Segformer", "mit_b0", tmp_path / "text.pth")


def test_dpt_on_a_dinov2_vit_predicts_at_input_size_and_every_parameter_learns() -> None:
    """DINOv2's 14 px patches do not fit smp's DPT decoder; the encoder is built with 16 px
    patches, and the parts the decoder never reads are pruned (DDP refuses unused ones)."""
    torch.manual_seed(0)
    model = build_segmentation_model("dpt", "tu-vit_small_patch14_dinov2")
    assert model.encoder.output_strides == [16, 16, 16, 16]
    for height, width in [(64, 96), (128, 256)]:
        logits = model(torch.randn(2, 3, height, width))
        assert logits.shape == (2, NUM_CLASSES, height, width)
    logits.square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"


def test_dpt_takes_a_dinov2_file_as_timm_saves_it_and_refuses_another_vit(tmp_path) -> None:
    """The file README tells teams to save (timm's own state dict, 14 px patches, 37x37
    positions) loads: the patch and position embeddings are resampled to the encoder's 16 px
    grid, every other tensor is copied exactly. A ViT of another width is refused by name."""
    import timm

    torch.manual_seed(4)
    dinov2 = timm.create_model("vit_small_patch14_dinov2", pretrained=False)
    path = tmp_path / "dinov2_vits14.pth"
    torch.save(dinov2.state_dict(), path)
    model = build_segmentation_model("DPT", "tu-vit_small_patch14_dinov2", encoder_weights=path)
    loaded = model.encoder.model.state_dict()
    assert loaded["patch_embed.proj.weight"].shape == (384, 3, 16, 16)
    for name in ["blocks.0.attn.qkv.weight", "blocks.11.mlp.fc2.bias", "cls_token"]:
        assert torch.equal(loaded[name], dinov2.state_dict()[name]), name
    # The resampled patch embedding still sees a constant image as the original did (timm's
    # resampling keeps the response to smooth input).
    flat = torch.ones(1, 3, 16, 16)
    assert torch.allclose(
        (loaded["patch_embed.proj.weight"] * flat).sum(),
        (dinov2.state_dict()["patch_embed.proj.weight"] * flat[..., :14, :14]).sum(),
        rtol=1e-3,
        atol=1e-3,
    )
    # smp's own encoder state dict (keys under "model.") loads too.
    again = tmp_path / "dpt_encoder.pth"
    torch.save(model.encoder.state_dict(), again)
    reloaded = build_segmentation_model("DPT", "tu-vit_small_patch14_dinov2", encoder_weights=again)
    assert all(
        torch.equal(reloaded.encoder.state_dict()[k], v)
        for k, v in model.encoder.state_dict().items()
    )
    wider = tmp_path / "vit_base.pth"
    torch.save(timm.create_model("vit_base_patch14_dinov2", pretrained=False).state_dict(), wider)
    with pytest.raises(ValueError, match=r"vit_base\.pth: not a state dict for this encoder"):
        build_segmentation_model("DPT", "tu-vit_small_patch14_dinov2", encoder_weights=wider)


def test_dpt_needs_a_timm_vit_encoder() -> None:
    with pytest.raises(ValueError, match=r"DPT needs a timm ViT encoder.*'resnet18'"):
        build_segmentation_model("DPT", "resnet18")
    with pytest.raises(ValueError, match=r"DPT cannot use encoder 'tu-resnet18'"):
        build_segmentation_model("DPT", "tu-resnet18")
