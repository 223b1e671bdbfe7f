"""The pieces CUT / FastCUT add to a ResNet generator (Park et al., ECCV 2020): taps on its
encoder's layers, patch sampling, and the per-layer MLP heads PatchNCE compares patches through.

Taps. PatchNCE compares a generator's features of its input and of its output at a few layers.
`ResnetGenerator.model` is one flat `nn.Sequential`; the taps are indices into it, and running
its modules one by one gives the same values as its forward. Nothing is added to the generator,
so its state dict (the saved gen_sim2real) is unchanged and loads as any CycleGAN generator.

Our ResnetGenerator's layer list (resnet_6blocks / resnet_9blocks):

    0 ReflectionPad(3)  1 Conv 7x7  2 Norm  3 ReLU          input stage, ngf channels
    4 Conv 3x3 /2  5 Norm  6 ReLU                           downsampling 1, 2 * ngf, H/2
    7 Conv 3x3 /2  8 Norm  9 ReLU                           downsampling 2, 4 * ngf, H/4
    10 .. 10 + n_blocks - 1  ResnetBlock                    the trunk, 4 * ngf, H/4
    then the decoder (transposed convs) and the output conv.

The reference's `--nce_layers 0,4,8,12,16` index its own generator, whose downsampling stages
are conv (stride 1) - norm - ReLU - blur-pool, four layers each: the padded input, the first and
second downsampling convs, residual blocks 1 and 5. The same positions here are
[0, 4, 7, 10, 14] (our downsampling convs stride 2 themselves, so the first one's output is at
H/2 where the reference's is still at H).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.cyclegan import ResnetBlock, ResnetGenerator, init_weights

# Modules the encoder taps may run through, and which keep (C, H, W).
_SHAPE_KEEPING = (ResnetBlock, nn.ReLU, nn.InstanceNorm2d, nn.BatchNorm2d, nn.Dropout)


def tap_shapes(
    generator: ResnetGenerator, layers: Sequence[int], size: tuple[int, int]
) -> list[tuple[int, int, int]]:
    """(C, H, W) of the outputs of `generator.model[i]` for i in `layers`, for (H, W) `size`
    inputs; from the layers' own settings, without running anything."""
    _check_layers(generator, layers)
    channels = generator.model[1].in_channels  # the first conv's: the image's
    height, width = size
    shapes: dict[int, tuple[int, int, int]] = {}
    for index, module in enumerate(generator.model[: max(layers) + 1]):
        if isinstance(module, nn.ReflectionPad2d):
            left, right, top, bottom = module.padding
            height, width = height + top + bottom, width + left + right
        elif isinstance(module, nn.Conv2d):
            (kh, kw), (sh, sw), (ph, pw) = module.kernel_size, module.stride, module.padding
            height, width = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
            channels = module.out_channels
        elif not isinstance(module, _SHAPE_KEEPING):
            raise ValueError(f"cannot tap through layer {index} ({type(module).__name__})")
        shapes[index] = (channels, height, width)
    return [shapes[i] for i in layers]


def _check_layers(generator: ResnetGenerator, layers: Sequence[int]) -> None:
    blocks = [i for i, m in enumerate(generator.model) if isinstance(m, ResnetBlock)]
    last = blocks[-1] if blocks else 9
    increasing = list(layers) == sorted(set(layers))
    if not layers or not increasing or not 0 <= layers[0] <= layers[-1] <= last:
        raise ValueError(f"taps {list(layers)} must increase within the encoder, 0 to {last}")


def run_with_taps(
    generator: ResnetGenerator, images: Tensor, layers: Sequence[int], to_end: bool = True
) -> tuple[Tensor | None, list[Tensor]]:
    """`generator`'s output on (N, 3, H, W) `images` (None unless `to_end`: then it stops at
    the last tap) and the outputs of its layers `layers`, each (N, C, h, w)."""
    model = generator.model
    wanted, taps = set(layers), []
    x = images
    for index, module in enumerate(model if to_end else model[: max(layers) + 1]):
        x = module(x)
        if index in wanted:
            following = model[index + 1] if index + 1 < len(model) else None
            # An in-place ReLU next would overwrite the tapped values.
            taps.append(x.clone() if getattr(following, "inplace", False) else x)
    return (x if to_end else None), taps


def sample_patch_ids(
    shapes: Sequence[tuple[int, int, int]],
    batch: int,
    num_patches: int,
    generator: torch.Generator,
) -> list[Tensor]:
    """Per tap, (batch, P) distinct flat locations (y * W + x) for each image, P =
    min(num_patches, H * W), drawn from `generator` on its device."""
    ids = []
    for _, height, width in shapes:
        noise = torch.rand(batch, height * width, generator=generator, device=generator.device)
        ids.append(noise.argsort(dim=1)[:, : min(num_patches, height * width)])
    return ids


class PatchHeads(nn.Module):
    """One MLP per tap (Linear(C, nc) - ReLU - Linear(nc, nc)) over sampled patches, outputs
    L2-normalised: the reference's PatchSampleF, built up front from the taps' channels."""

    def __init__(self, channels: Sequence[int], width: int) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, width), nn.ReLU(), nn.Linear(width, width)) for c in channels
        )
        init_weights(self)

    def forward(self, features: Sequence[Tensor], ids: Sequence[Tensor]) -> list[Tensor]:
        """(N, C, H, W) per tap and (N, P) locations per tap -> (N, P, nc) float32 per tap, each
        row of unit length."""
        out = []
        for feature, index, mlp in zip(features, ids, self.mlps, strict=True):
            count, channels = feature.shape[:2]
            flat = feature.flatten(2)  # (N, C, H * W)
            patches = flat.gather(2, index[:, None, :].expand(count, channels, -1))
            out.append(F.normalize(mlp(patches.transpose(1, 2)).float(), dim=-1))
        return out


class ContrastiveGenerator(nn.Module):
    """The generator and the heads as one module: one call (one DDP forward) per step makes the
    translations and the patch embeddings PatchNCE compares.

    Queries are the embeddings of the translations' taps, keys those of the inputs' taps at the
    same locations. Keys carry no gradient (PatchNCE detaches them, as the reference does), so
    they come from the translation pass's own taps or, with `flip_equivariance`, from a
    gradient-free pass over the unmirrored input.
    """

    def __init__(
        self,
        generator: ResnetGenerator,
        heads: PatchHeads,
        layers: Sequence[int],
        flip_equivariance: bool,
    ) -> None:
        super().__init__()
        _check_layers(generator, layers)
        self.generator, self.heads = generator, heads
        self.layers = tuple(layers)
        self.flip_equivariance = flip_equivariance

    def forward(
        self, sources: Tensor, flip: Tensor, ids: Sequence[Tensor]
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """(N, 3, h, w) `sources`, a () bool `flip` (mirror the input left-right before
        translating and the queries back after; used with `flip_equivariance` only), (N, P)
        locations per tap -> translations (N, 3, h, w), queries and keys (N, P, nc) per tap."""
        inputs = torch.where(flip, sources.flip(3), sources) if self.flip_equivariance else sources
        translated, taps = run_with_taps(self.generator, inputs, self.layers)
        assert translated is not None
        if self.flip_equivariance:
            with torch.no_grad():
                taps = run_with_taps(self.generator, sources, self.layers, to_end=False)[1]
        _, query_taps = run_with_taps(self.generator, translated, self.layers, to_end=False)
        if self.flip_equivariance:
            query_taps = [torch.where(flip, q.flip(3), q) for q in query_taps]
        queries = self.heads(query_taps, ids)
        with torch.no_grad():
            keys = self.heads([t.detach() for t in taps], ids)
        return translated, queries, keys
