"""CUT's additions to the ResNet generator: taps, patch sampling, the MLP heads, the combined
generator module (FastCUT's mirrored pass included)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.cut import (
    ContrastiveGenerator,
    PatchHeads,
    run_with_taps,
    sample_patch_ids,
    tap_shapes,
)
from pipeline.models.cyclegan import build_generator

LAYERS = (0, 4, 7, 10, 14)  # the paper's five positions in our generator (params.yaml)


def generator(seed: int = 0):
    torch.manual_seed(seed)
    return build_generator("resnet_6blocks", ngf=4)


def images(count: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, 16, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_taps_are_the_layers_outputs_and_leave_the_output_and_state_dict_alone() -> None:
    net, x = generator(), images()
    keys = list(net.state_dict())
    with torch.no_grad():
        out, taps = run_with_taps(net, x, LAYERS)
        assert torch.equal(out, net(x))
        # The paper's positions: padded input, the two downsampling convs, blocks 1 and 5.
        assert torch.equal(taps[0], F.pad(x, (3, 3, 3, 3), mode="reflect"))
        assert torch.equal(taps[1], net.model[:5](x))
        assert torch.equal(taps[4], net.model[:15](x))
        _, early = run_with_taps(net, x, LAYERS, to_end=False)
    assert all(torch.equal(a, b) for a, b in zip(early, taps, strict=True))
    shapes = [(3, 22, 38), (8, 8, 16), (16, 4, 8), (16, 4, 8), (16, 4, 8)]
    assert tap_shapes(net, LAYERS, (16, 32)) == shapes
    assert [tuple(t.shape[1:]) for t in taps] == shapes
    ContrastiveGenerator(net, PatchHeads([3, 8, 16, 16, 16], 8), LAYERS, False)
    assert list(net.state_dict()) == keys


def test_a_tap_before_an_in_place_relu_keeps_its_value() -> None:
    net, x = generator(), images()
    with torch.no_grad():
        _, (normed,) = run_with_taps(net, x, [2])  # InstanceNorm, then ReLU(inplace=True)
        assert (normed < 0).any()
        assert torch.equal(normed, net.model[:3](x))


def test_taps_must_lie_in_the_encoder() -> None:
    with pytest.raises(ValueError, match="0 to 15"):
        tap_shapes(generator(), (0, 16), (16, 32))
    with pytest.raises(ValueError, match="increase"):
        tap_shapes(generator(), (4, 0), (16, 32))


def test_patch_ids_are_distinct_locations_per_image_and_reproducible() -> None:
    shapes = [(3, 4, 4), (8, 2, 3)]
    ids = sample_patch_ids(shapes, 3, 10, torch.Generator().manual_seed(0))
    assert [tuple(i.shape) for i in ids] == [(3, 10), (3, 6)]  # min(num_patches, H * W)
    for index, (_, h, w) in zip(ids, shapes):
        assert all(len(set(row.tolist())) == row.numel() for row in index)
        assert index.min() >= 0 and index.max() < h * w
    assert not torch.equal(ids[0][0], ids[0][1])  # each image its own locations
    again = sample_patch_ids(shapes, 3, 10, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(ids, again))


def test_heads_embed_the_sampled_locations_to_unit_vectors() -> None:
    torch.manual_seed(0)
    heads = PatchHeads([3, 8], width=5)
    features = [torch.randn(2, 3, 4, 4), torch.randn(2, 8, 2, 3)]
    ids = sample_patch_ids([(3, 4, 4), (8, 2, 3)], 2, 4, torch.Generator().manual_seed(1))
    out = heads(features, ids)
    assert [tuple(o.shape) for o in out] == [(2, 4, 5), (2, 4, 5)]
    for o in out:
        torch.testing.assert_close(o.norm(dim=-1), torch.ones(2, 4))
    # Row p of image n embeds the feature vector at location ids[n, p].
    n, p = 1, 2
    y, x = divmod(int(ids[1][n, p]), 3)
    vector = features[1][n, :, y, x]
    torch.testing.assert_close(out[1][n, p], F.normalize(heads.mlps[1](vector), dim=0))
    assert [m[0].in_features for m in heads.mlps] == [3, 8]  # built up front, not on first use


def test_flip_equivariance_translates_the_mirror_and_mirrors_the_queries_back() -> None:
    net, x = generator(), images()
    torch.manual_seed(1)
    heads = PatchHeads([3, 8, 16, 16, 16], 8)
    combined = ContrastiveGenerator(net, heads, LAYERS, flip_equivariance=True)
    shapes = tap_shapes(net, LAYERS, (16, 32))
    ids = sample_patch_ids(shapes, 2, 6, torch.Generator().manual_seed(2))
    with torch.no_grad():
        for flip in (True, False):
            translated, queries, keys = combined(x, torch.tensor(flip), ids)
            mirrored = x.flip(3) if flip else x
            assert torch.equal(translated, net(mirrored))
            _, query_taps = run_with_taps(net, translated, LAYERS, to_end=False)
            if flip:
                query_taps = [t.flip(3) for t in query_taps]
            _, key_taps = run_with_taps(net, x, LAYERS, to_end=False)  # the unmirrored input
            for got, want in zip(queries, heads(query_taps, ids)):
                torch.testing.assert_close(got, want)
            for got, want in zip(keys, heads(key_taps, ids)):
                torch.testing.assert_close(got, want)
    plain = ContrastiveGenerator(net, heads, LAYERS, flip_equivariance=False)
    with torch.no_grad():
        translated, _, keys = plain(x, torch.tensor(True), ids)  # flip ignored without it
        assert torch.equal(translated, net(x))
        _, key_taps = run_with_taps(net, x, LAYERS, to_end=False)
        for got, want in zip(keys, heads(key_taps, ids)):
            torch.testing.assert_close(got, want)
