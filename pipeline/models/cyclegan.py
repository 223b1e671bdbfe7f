"""CycleGAN generators and discriminator.

The layer order and module nesting follow the published CycleGAN reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix, ``models/networks.py``) so that its released
generator checkpoints load with :func:`load_reference_generator_state` and the
state-dict keys line up one to one (``model.1.weight``, ``model.10.conv_block.1.weight``,
``model.model.1.model.1.weight`` ...).

All networks are fully convolutional and work on any batch of NCHW images in ``[-1, 1]``:

* ResNet generators downsample twice by stride 2, so H and W must be multiples of 4.
* U-Net generators downsample ``num_downs`` times, so H and W must be multiples of
  ``2 ** num_downs`` (128 for ``unet_128``, 256 for ``unet_256``).
* The PatchGAN discriminator accepts any H, W >= 32 and returns one logit per
  overlapping 70x70 patch (for ``n_layers=3``).

:func:`translate_batch` runs a generator on uint8 frames of any size (padding them to the
multiple it needs); translation and training's sample grids both use it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline import runtime
from pipeline.data.tensors import from_gan_output, to_gan_input
from pipeline.weights import load_weights, state_mismatch

GENERATOR_NAMES: tuple[str, ...] = ("resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256")
DISCRIMINATOR_NAMES: tuple[str, ...] = ("basic", "n_layers")
NORM_NAMES: tuple[str, ...] = ("instance", "batch")

# Buffers that checkpoints written by PyTorch <= 0.4 carry on InstanceNorm layers; current
# InstanceNorm2d(track_running_stats=False) has no such buffers, so they are dropped on load.
_STALE_NORM_BUFFERS: tuple[str, ...] = ("running_mean", "running_var", "num_batches_tracked")

NormFactory = Callable[[int], nn.Module]


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` that runs as a group norm with one channel per group where that
    kernel was measured faster.

    The two are the same function (per-sample, per-channel statistics over H x W), but torch's
    CPU instance norm reshapes to (1, N*C, H, W) and runs the generic batch-norm kernel, while
    group norm has its own vectorised kernel. Measured on the 2-core demo machine, one thread,
    interleaved runs of the same script:

    * training step (batch 1, forward + backward): fp32 3.95/3.62 -> 4.11/4.14 img/s, bf16
      5.27/5.57 -> 5.60/5.89 img/s with group norm;
    * translation (batch 16, inference): fp32 16.9/17.1 -> 20.2/18.1 img/s with group norm, but
      bf16 37.2/34.2 -> 34.2/31.6 img/s, so bf16 inference keeps torch's instance norm.

    Outputs agree to 1e-6 in fp32 (tests/models). Channels-last inference and CUDA keep torch's
    instance norm (group norm's CPU channels-last kernel is slower; CUDA was not measured). Same
    class name, no parameters or buffers: checkpoints load as before.

    Training on the CPU always takes group norm: torch 2.14's CPU instance-norm backward is wrong
    when the incoming gradient is channels-last (against finite differences: 48.8 where the
    true directional derivative is 101.3), which `channels_last: true` training produces.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._group_norm(x) if self._use_group_norm(x) else super().forward(x)

    def _group_norm(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.group_norm(x, self.num_features, self.weight, self.bias, self.eps)

    def _use_group_norm(self, x: torch.Tensor) -> bool:
        if x.dim() != 4 or x.device.type != "cpu" or self.track_running_stats:
            return False
        if torch.is_grad_enabled():
            return True
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return x.dtype == torch.float32 and not channels_last


def _norm_factory(norm: str) -> tuple[NormFactory, bool]:
    """Return a constructor for the normalisation layer and whether convs need a bias.

    Instance norm without affine parameters cannot absorb a bias, so the convolutions
    before it keep theirs; batch norm has its own shift, making a conv bias redundant.
    This mirrors the reference's ``use_bias`` rule, which decides the checkpoint keys.
    """
    if norm == "instance":

        def make_instance(channels: int) -> nn.Module:
            return InstanceNorm2d(channels, affine=False, track_running_stats=False)

        return make_instance, True
    if norm == "batch":

        def make_batch(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels, affine=True)

        return make_batch, False
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORM_NAMES}")


class ResnetBlock(nn.Module):
    """Residual block of two reflection-padded 3x3 convolutions; keeps shape (N, C, H, W)."""

    def __init__(self, channels: int, norm_layer: NormFactory, use_dropout: bool, use_bias: bool):
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(channels),
            nn.ReLU(inplace=True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(channels),
        ]
        # The attribute name is part of the checkpoint keys (``model.10.conv_block.1.weight``).
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Johnson-style encoder / residual trunk / decoder image-to-image generator.

    Input (N, in_channels, H, W) with H, W multiples of 4; output (N, out_channels, H, W)
    in [-1, 1]. The trunk runs at (N, 4 * ngf, H / 4, W / 4).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        use_dropout: bool = False,
    ):
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        norm_layer, use_bias = _norm_factory(norm)

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(inplace=True),
        ]
        n_downsampling = 2
        channels = ngf
        for _ in range(n_downsampling):
            layers += [
                nn.Conv2d(
                    channels, channels * 2, kernel_size=3, stride=2, padding=1, bias=use_bias
                ),
                norm_layer(channels * 2),
                nn.ReLU(inplace=True),
            ]
            channels *= 2
        for _ in range(n_blocks):
            layers.append(ResnetBlock(channels, norm_layer, use_dropout, use_bias))
        for _ in range(n_downsampling):
            # output_padding=1 makes each stage exactly double H and W again.
            layers += [
                nn.ConvTranspose2d(
                    channels,
                    channels // 2,
                    kernel_size=3,
                    stride=2,
                    padding=1,
                    output_padding=1,
                    bias=use_bias,
                ),
                norm_layer(channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, out_channels, kernel_size=7, padding=0),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: downsample, run the inner levels, upsample, concatenate the skip.

    A non-outermost block maps (N, outer_channels, H, W) to (N, 2 * outer_channels, H, W)
    because its input is concatenated to its output; the outermost block maps
    (N, in_channels, H, W) to (N, outer_channels, H, W) in [-1, 1].
    """

    def __init__(
        self,
        outer_channels: int,
        inner_channels: int,
        norm_layer: NormFactory,
        use_bias: bool,
        in_channels: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        use_dropout: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        if in_channels is None:
            in_channels = outer_channels
        down_conv = nn.Conv2d(
            in_channels, inner_channels, kernel_size=4, stride=2, padding=1, bias=use_bias
        )

        layers: list[nn.Module]
        if outermost:
            if submodule is None:
                raise ValueError("the outermost U-Net block needs a submodule")
            # The last layer is followed by tanh, not a norm, so it always has a bias.
            up_conv = nn.ConvTranspose2d(
                inner_channels * 2, outer_channels, kernel_size=4, stride=2, padding=1
            )
            layers = [down_conv, submodule, nn.ReLU(inplace=True), up_conv, nn.Tanh()]
        elif innermost:
            # No submodule, so the up path sees inner_channels, not a concatenation.
            up_conv = nn.ConvTranspose2d(
                inner_channels, outer_channels, kernel_size=4, stride=2, padding=1, bias=use_bias
            )
            layers = [
                nn.LeakyReLU(0.2, inplace=True),
                down_conv,
                nn.ReLU(inplace=True),
                up_conv,
                norm_layer(outer_channels),
            ]
        else:
            if submodule is None:
                raise ValueError("an intermediate U-Net block needs a submodule")
            up_conv = nn.ConvTranspose2d(
                inner_channels * 2,
                outer_channels,
                kernel_size=4,
                stride=2,
                padding=1,
                bias=use_bias,
            )
            layers = [
                nn.LeakyReLU(0.2, inplace=True),
                down_conv,
                norm_layer(inner_channels),
                submodule,
                nn.ReLU(inplace=True),
                up_conv,
                norm_layer(outer_channels),
            ]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        # The first layer of self.model is an in-place LeakyReLU, so by the time torch.cat
        # reads x it holds LeakyReLU(x). The reference behaves the same way and its weights
        # were trained with it, so this is kept deliberately: the skip carries activated
        # features. Shapes: x (N, C, H, W), self.model(x) (N, C, H, W) -> (N, 2C, H, W).
        return torch.cat([x, self.model(x)], dim=1)


class UnetGenerator(nn.Module):
    """U-Net generator with skip connections between mirrored levels.

    Input (N, in_channels, H, W) with H, W multiples of ``2 ** num_downs``; the bottleneck
    is (N, 8 * ngf, H / 2**num_downs, W / 2**num_downs); output (N, out_channels, H, W)
    in [-1, 1].
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "instance",
        use_dropout: bool = False,
    ):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        norm_layer, use_bias = _norm_factory(norm)

        # Built from the bottleneck outwards; each block wraps the previous one.
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, norm_layer, use_bias, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(
                ngf * 8, ngf * 8, norm_layer, use_bias, submodule=block, use_dropout=use_dropout
            )
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, norm_layer, use_bias, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, norm_layer, use_bias, submodule=block)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, norm_layer, use_bias, submodule=block)
        self.model = UnetSkipConnectionBlock(
            out_channels,
            ngf,
            norm_layer,
            use_bias,
            in_channels=in_channels,
            submodule=block,
            outermost=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator returning raw logits (no sigmoid).

    With ``n_layers=3`` each output logit sees a 70x70 receptive field. Input
    (N, in_channels, H, W) gives (N, 1, H / 8 - 2, W / 8 - 2) for H, W multiples of 8.
    """

    def __init__(
        self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance"
    ):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        norm_layer, use_bias = _norm_factory(norm)
        kernel, pad = 4, 1

        # The first layer has no norm, so it keeps its bias whatever the norm type.
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=kernel, stride=2, padding=pad),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = ndf
        for n in range(1, n_layers):
            next_channels = ndf * min(2**n, 8)
            layers += [
                nn.Conv2d(
                    channels,
                    next_channels,
                    kernel_size=kernel,
                    stride=2,
                    padding=pad,
                    bias=use_bias,
                ),
                norm_layer(next_channels),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = next_channels
        next_channels = ndf * min(2**n_layers, 8)
        layers += [
            nn.Conv2d(
                channels, next_channels, kernel_size=kernel, stride=1, padding=pad, bias=use_bias
            ),
            norm_layer(next_channels),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(next_channels, 1, kernel_size=kernel, stride=1, padding=pad),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """Initialise in place as in the CycleGAN paper: conv / linear weights ~ N(0, gain),
    their biases 0; batch-norm scales ~ N(1, gain), shifts 0.
    """
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)


def build_generator(
    name: str,
    ngf: int = 64,
    norm: str = "instance",
    use_dropout: bool = False,
    in_channels: int = 3,
    out_channels: int = 3,
) -> nn.Module:
    """Build and initialise a generator by its reference name (one of ``GENERATOR_NAMES``)."""
    net: nn.Module
    if name == "resnet_9blocks":
        net = ResnetGenerator(in_channels, out_channels, ngf, 9, norm, use_dropout)
    elif name == "resnet_6blocks":
        net = ResnetGenerator(in_channels, out_channels, ngf, 6, norm, use_dropout)
    elif name == "unet_128":
        net = UnetGenerator(in_channels, out_channels, 7, ngf, norm, use_dropout)
    elif name == "unet_256":
        net = UnetGenerator(in_channels, out_channels, 8, ngf, norm, use_dropout)
    else:
        raise ValueError(f"unknown generator {name!r}; expected one of {GENERATOR_NAMES}")
    init_weights(net)
    return net


def build_discriminator(
    name: str = "basic",
    ndf: int = 64,
    n_layers: int = 3,
    norm: str = "instance",
    in_channels: int = 3,
) -> nn.Module:
    """Build and initialise a PatchGAN discriminator.

    ``"basic"`` is the 70x70 PatchGAN (always 3 layers); ``"n_layers"`` uses ``n_layers``.
    """
    if name == "basic":
        net = NLayerDiscriminator(in_channels, ndf, 3, norm)
    elif name == "n_layers":
        net = NLayerDiscriminator(in_channels, ndf, n_layers, norm)
    else:
        raise ValueError(f"unknown discriminator {name!r}; expected one of {DISCRIMINATOR_NAMES}")
    init_weights(net)
    return net


def load_reference_generator_state(net: nn.Module, path: str | Path) -> None:
    """Load generator weights into ``net``: this pipeline's .safetensors, or a checkpoint of the
    reference implementation (``latest_net_G_A.pth``, read with ``weights_only=True``).

    Accepts a plain state dict, with or without the ``module.`` prefix that
    ``nn.DataParallel`` adds, and drops the running-stat buffers that old checkpoints carry
    on InstanceNorm layers when ``net`` has no such buffers. Everything else must match
    exactly; otherwise a ValueError naming the file lists the offending keys.
    """
    path = Path(path)
    loaded = load_weights(path)

    own = net.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        key = key.removeprefix("module.")
        if key not in own and key.rsplit(".", 1)[-1] in _STALE_NORM_BUFFERS:
            continue
        state[key] = value

    problem = state_mismatch(own, state)
    if problem is not None:
        raise ValueError(f"{path}: checkpoint does not match {type(net).__name__}; {problem}")
    net.load_state_dict(state, strict=True)


def size_multiple(generator: nn.Module) -> int:
    """H and W a generator needs to be multiples of: 4 for ResNets, 2**depth for U-Nets."""
    if isinstance(generator, UnetGenerator):
        # Each U-Net level halves H and W once.
        return 2 ** sum(isinstance(m, UnetSkipConnectionBlock) for m in generator.modules())
    return 4


def translate_batch(
    generator: nn.Module, images: np.ndarray | Tensor, precision: str, device: torch.device
) -> np.ndarray:
    """Translate (N, H, W, 3) uint8 frames of any size (an array or a host tensor) to
    (N, H, W, 3) uint8.

    Sides that are not a multiple of what the generator needs are reflection-padded on the
    bottom / right and cropped back, so the output keeps the input's size.
    """
    height, width = images.shape[1:3]
    multiple = size_multiple(generator)
    pad_h, pad_w = -height % multiple, -width % multiple
    with torch.inference_mode(), runtime.autocast(precision, device):
        batch = to_gan_input(images, device)  # (N, 3, H, W)
        if pad_h or pad_w:
            # Reflection needs the pad to be smaller than the side; tiny images replicate.
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            batch = F.pad(batch, (0, pad_w, 0, pad_h), mode=mode)
        out = generator(batch)[:, :, :height, :width]
    return from_gan_output(out)
