"""Structure, checkpoint compatibility and numerics of the CycleGAN networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.cyclegan import (
    GENERATOR_NAMES,
    InstanceNorm2d,
    NLayerDiscriminator,
    ResnetGenerator,
    UnetSkipConnectionBlock,
    _norm_factory,
    build_discriminator,
    build_generator,
    init_weights,
    load_reference_generator_state,
)

# Smallest input each generator accepts: resnets need multiples of 4, U-Nets 2**num_downs.
INPUT_SIDE = {"resnet_9blocks": 32, "resnet_6blocks": 32, "unet_128": 128, "unet_256": 256}


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: build_generator("resnet_9blocks", ngf=64, norm="instance"), 11_378_179),
        (lambda: build_generator("resnet_6blocks", ngf=64, norm="instance"), 7_837_699),
        (lambda: build_discriminator("basic", ndf=64, n_layers=3, norm="instance"), 2_764_737),
    ],
    ids=["resnet_9blocks", "resnet_6blocks", "patchgan_70"],
)
def test_parameter_counts_match_reference(build, expected: int) -> None:
    assert n_params(build()) == expected


def test_resnet_keys_follow_reference_layout() -> None:
    keys = set(build_generator("resnet_9blocks", ngf=64, norm="instance").state_dict())
    # 0 pad, 1 conv7, 2 norm, 3 relu, 4/7 down convs, 10..18 blocks, 19/22 up convs,
    # 25 pad, 26 conv7, 27 tanh; inside a block: 0 pad, 1 conv, 2 norm, 3 relu, 4 pad, 5 conv.
    for key in [
        "model.1.weight",
        "model.1.bias",
        "model.4.weight",
        "model.7.weight",
        "model.10.conv_block.1.weight",
        "model.10.conv_block.5.weight",
        "model.18.conv_block.5.bias",
        "model.19.weight",
        "model.22.weight",
        "model.26.weight",
        "model.26.bias",
    ]:
        assert key in keys, key
    assert "model.19.conv_block.1.weight" not in keys
    # Affine-free instance norm has no parameters or buffers at all.
    assert not any(k.startswith("model.2.") for k in keys)
    assert len(keys) == 2 * (3 + 9 * 2 + 2 + 1)


def test_batch_norm_drops_conv_bias_and_keeps_running_stats() -> None:
    keys = set(build_generator("resnet_6blocks", ngf=8, norm="batch").state_dict())
    assert "model.1.weight" in keys and "model.1.bias" not in keys
    assert "model.10.conv_block.1.bias" not in keys
    assert {"model.2.weight", "model.2.bias", "model.2.running_mean"} <= keys
    assert "model.16.weight" in keys and "model.16.bias" not in keys
    # The output conv feeds tanh, not a norm, so it keeps its bias.
    assert "model.23.bias" in keys


def test_resnet_dropout_shifts_second_block_conv() -> None:
    keys = set(
        build_generator("resnet_6blocks", ngf=8, norm="instance", use_dropout=True).state_dict()
    )
    assert "model.10.conv_block.6.weight" in keys
    assert "model.10.conv_block.5.weight" not in keys


@pytest.mark.parametrize(("name", "depth"), [("unet_128", 7), ("unet_256", 8)])
def test_unet_keys_follow_reference_nesting(name: str, depth: int) -> None:
    keys = set(build_generator(name, ngf=8, norm="batch").state_dict())
    # Outermost: model.model.{0 downconv, 1 submodule, 3 upconv}; every inner level puts its
    # submodule at index 3 and its downconv at index 1.
    innermost = "model.model.1" + ".model.3" * (depth - 2)
    assert "model.model.0.weight" in keys
    assert "model.model.3.weight" in keys and "model.model.3.bias" in keys
    assert "model.model.1.model.1.weight" in keys
    assert "model.model.1.model.2.running_mean" in keys
    assert f"{innermost}.model.1.weight" in keys
    assert f"{innermost}.model.3.weight" in keys
    assert f"{innermost}.model.4.running_var" in keys
    assert f"{innermost}.model.3.model.1.weight" not in keys


def test_discriminator_keys_follow_reference_layout() -> None:
    keys = set(build_discriminator(ndf=8).state_dict())
    assert keys == {
        "model.0.weight",
        "model.0.bias",
        "model.2.weight",
        "model.2.bias",
        "model.5.weight",
        "model.5.bias",
        "model.8.weight",
        "model.8.bias",
        "model.11.weight",
        "model.11.bias",
    }


def _reference_style_checkpoint(net: nn.Module) -> dict[str, torch.Tensor]:
    """State dict as an old DataParallel run saved it: ``module.`` prefix and running-stat
    buffers on every InstanceNorm layer."""
    state = {f"module.{k}": v.clone() for k, v in net.state_dict().items()}
    for name, module in net.named_modules():
        if isinstance(module, nn.InstanceNorm2d):
            state[f"module.{name}.running_mean"] = torch.randn(module.num_features)
            state[f"module.{name}.running_var"] = torch.rand(module.num_features)
            state[f"module.{name}.num_batches_tracked"] = torch.tensor(7)
    return state


@pytest.mark.parametrize("name", ["resnet_6blocks", "unet_128"])
def test_reference_checkpoint_loads_and_reproduces_output(tmp_path: Path, name: str) -> None:
    source = build_generator(name, ngf=4, norm="instance").eval()
    checkpoint = tmp_path / "latest_net_G_A.pth"
    torch.save(_reference_style_checkpoint(source), checkpoint)

    target = build_generator(name, ngf=4, norm="instance").eval()
    side = INPUT_SIDE[name]
    x = torch.rand(2, 3, side, side) * 2 - 1
    assert not torch.equal(source(x), target(x))
    load_reference_generator_state(target, checkpoint)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_batch_norm_checkpoint_keeps_running_stats(tmp_path: Path) -> None:
    source = build_generator("resnet_6blocks", ngf=4, norm="batch")
    source.train()(torch.randn(4, 3, 16, 16))  # moves the running stats off their defaults
    source.eval()
    checkpoint = tmp_path / "g.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, checkpoint)

    target = build_generator("resnet_6blocks", ngf=4, norm="batch").eval()
    load_reference_generator_state(target, checkpoint)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


def test_mismatched_checkpoint_names_file_and_keys(tmp_path: Path) -> None:
    checkpoint = tmp_path / "wrong_width.pth"
    torch.save(build_generator("resnet_6blocks", ngf=8).state_dict(), checkpoint)
    with pytest.raises(ValueError, match=r"wrong_width\.pth.*shape mismatch.*model.1.weight"):
        load_reference_generator_state(build_generator("resnet_6blocks", ngf=4), checkpoint)

    checkpoint = tmp_path / "nine_blocks.pth"
    torch.save(build_generator("resnet_9blocks", ngf=4).state_dict(), checkpoint)
    with pytest.raises(ValueError, match=r"nine_blocks\.pth.*unexpected keys: model.16"):
        load_reference_generator_state(build_generator("resnet_6blocks", ngf=4), checkpoint)
    with pytest.raises(ValueError, match=r"nine_blocks\.pth.*missing keys"):
        load_reference_generator_state(build_generator("unet_128", ngf=4), checkpoint)


def test_stale_buffers_are_only_dropped_when_net_lacks_them(tmp_path: Path) -> None:
    # A batch-norm net owns running_mean, so a checkpoint without it is incomplete.
    state = build_generator("resnet_6blocks", ngf=4, norm="batch").state_dict()
    del state["model.2.running_mean"]
    checkpoint = tmp_path / "no_stats.pth"
    torch.save(state, checkpoint)
    with pytest.raises(ValueError, match=r"missing keys: model\.2\.running_mean"):
        load_reference_generator_state(
            build_generator("resnet_6blocks", ngf=4, norm="batch"), checkpoint
        )


def _saturate(net: nn.Module) -> None:
    """Scale weights up so the pre-tanh activations are large and the range check bites."""
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(50)


@pytest.mark.parametrize("name", GENERATOR_NAMES)
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_generator_output_shape_and_range(name: str, norm: str) -> None:
    net = build_generator(name, ngf=4, norm=norm)
    _saturate(net)
    side = INPUT_SIDE[name]
    x = torch.rand(2, 3, side, side) * 2 - 1
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.abs().max() <= 1.0
    assert y.abs().max() > 0.9


def test_resnet_generator_accepts_non_square_multiples_of_four() -> None:
    net = ResnetGenerator(3, 1, ngf=4, n_blocks=2)
    assert net(torch.randn(1, 3, 20, 36)).shape == (1, 1, 20, 36)


def test_patchgan_output_shape() -> None:
    net = build_discriminator("basic", ndf=8)
    # 256 -> 128 -> 64 -> 32 (stride 2) -> 31 -> 30 (stride 1, k4, p1).
    assert net(torch.randn(2, 3, 256, 256)).shape == (2, 1, 30, 30)
    assert build_discriminator("n_layers", ndf=8, n_layers=2)(torch.randn(1, 3, 64, 64)).shape == (
        1,
        1,
        14,
        14,
    )


def test_patchgan_receptive_field_is_70_pixels() -> None:
    # Batch norm in eval mode is per-pixel, unlike instance norm, so the gradient of one
    # output logit is non-zero exactly on its receptive field.
    net = NLayerDiscriminator(ndf=4, norm="batch").eval()
    x = torch.randn(1, 3, 256, 256, requires_grad=True)
    net(x)[0, 0, 10, 10].backward()
    rows, cols = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70
    # The field of output (i, j) starts at 8 * i - 23 (strides 2, 2, 2, 1, 1; padding 1 each).
    assert rows.min() == 8 * 10 - 23


@pytest.mark.parametrize("name", ["resnet_6blocks", "unet_128"])
def test_gradients_reach_every_parameter(name: str) -> None:
    gen = build_generator(name, ngf=4, norm="instance")
    disc = build_discriminator(ndf=4)
    side = INPUT_SIDE[name]
    fake = gen(torch.rand(1, 3, side, side) * 2 - 1)
    disc(fake).square().mean().backward()
    for net in (gen, disc):
        for key, p in net.named_parameters():
            assert p.grad is not None, key
            assert torch.isfinite(p.grad).all(), key
            # A conv bias right before affine-free instance norm is cancelled by the mean
            # subtraction, so only weights are required to get a non-zero gradient.
            if key.endswith("weight"):
                assert p.grad.abs().sum() > 0, key


def test_unet_skip_carries_activated_input_like_reference() -> None:
    norm_layer, use_bias = _norm_factory("instance")
    block = UnetSkipConnectionBlock(4, 8, norm_layer, use_bias, innermost=True)
    x = torch.randn(1, 4, 8, 8)
    out = block(x.clone())
    assert out.shape == (1, 8, 8, 8)
    torch.testing.assert_close(out[:, :4], F.leaky_relu(x, 0.2))


def test_init_weights_distribution() -> None:
    net = nn.Sequential(nn.Conv2d(64, 64, 3), nn.BatchNorm2d(4096), nn.Linear(64, 64))
    nn.init.constant_(net[0].bias, 5.0)
    init_weights(net, gain=0.02)
    conv, bn, linear = net
    assert abs(conv.weight.std().item() - 0.02) < 1e-3
    assert abs(conv.weight.mean().item()) < 1e-3
    assert torch.count_nonzero(conv.bias) == 0
    assert abs(bn.weight.mean().item() - 1.0) < 2e-3
    assert abs(bn.weight.std().item() - 0.02) < 2e-3
    assert torch.count_nonzero(bn.bias) == 0
    assert abs(linear.weight.std().item() - 0.02) < 2e-3


@pytest.mark.parametrize(
    ("call", "bad", "allowed"),
    [
        (lambda: build_generator("resnet_12blocks", 8, "instance"), "resnet_12blocks", "unet_256"),
        (lambda: build_generator("resnet_9blocks", 8, "group"), "group", "batch"),
        (lambda: build_discriminator("pixel"), "pixel", "n_layers"),
        (lambda: build_discriminator("basic", norm="layer"), "layer", "instance"),
    ],
)
def test_unknown_names_raise_value_error(call, bad: str, allowed: str) -> None:
    with pytest.raises(ValueError, match=rf"'{bad}'.*{allowed}"):
        call()


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_norm_equals_torch_instance_norm(affine: bool, channels_last: bool) -> None:
    """Our group-norm formulation is the same function as nn.InstanceNorm2d, gradients too."""
    torch.manual_seed(0)
    ours = InstanceNorm2d(8, affine=affine)
    reference = nn.InstanceNorm2d(8, affine=affine)
    if affine:
        with torch.no_grad():
            ours.weight.normal_()
            ours.bias.normal_()
        reference.load_state_dict(ours.state_dict())
    x = torch.randn(3, 8, 12, 20) * 4 + 2
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x_ours = x.clone().requires_grad_(True)
    x_reference = x.clone().requires_grad_(True)
    out_ours, out_reference = ours(x_ours), reference(x_reference)
    torch.testing.assert_close(out_ours, out_reference, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out_ours)
    (out_ours * weights).sum().backward()
    (out_reference * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_reference.grad, rtol=1e-4, atol=1e-5)
    assert set(ours.state_dict()) == set(reference.state_dict())


def test_instance_norm_gradient_is_right_for_channels_last_training() -> None:
    """torch's CPU instance-norm backward is wrong for a channels-last incoming gradient; ours
    (group norm whenever it trains on the CPU) matches finite differences."""
    torch.manual_seed(0)
    norm = InstanceNorm2d(8)
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(1, 6, 6, 8, dtype=torch.float64).permute(0, 3, 1, 2)  # channels-last
    direction = torch.randn_like(x)
    leaf = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(norm(leaf), leaf, upstream)
    eps = 1e-6
    with torch.no_grad():
        ahead = (norm(x + eps * direction) * upstream).sum()
        behind = (norm(x - eps * direction) * upstream).sum()
    finite = (ahead - behind) / (2 * eps)
    torch.testing.assert_close((gradient * direction).sum(), finite, rtol=1e-6, atol=1e-8)
