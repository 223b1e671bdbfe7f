"""Paired augmentation: image and label move together, labels keep their ids, padding is 255."""

from __future__ import annotations

import torch

from pipeline.data.augment import PairedAugment
from pipeline.data.labels import IGNORE_INDEX
from pipeline.data.tensors import IMAGENET_MEAN, IMAGENET_STD, normalize


def _blocks(batch: int, height: int, width: int, ids: list[int], seed: int) -> torch.Tensor:
    """(B, H, W) int64 labels: 8x8 blocks of ids drawn from `ids`."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.tensor(ids)[
        torch.randint(len(ids), (batch, height // 8, width // 8), generator=g)
    ]
    return coarse.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)


def _encode(labels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images whose every channel is the label id / 255, so alignment is checkable."""
    return (labels.float() / 255.0)[:, None].expand(-1, 3, -1, -1).contiguous()


def test_shapes_dtypes_and_label_ids_are_kept() -> None:
    ids = [0, 3, 7, 18]
    labels = _blocks(6, 64, 128, ids, seed=0)
    images = torch.rand(6, 3, 64, 128)
    torch.manual_seed(0)
    out_images, out_labels = PairedAugment((32, 64), (0.4, 2.0), True, 0.3)(images, labels)
    assert out_images.shape == (6, 3, 32, 64) and out_images.dtype == torch.float32
    assert out_labels.shape == (6, 32, 64) and out_labels.dtype == torch.int64
    assert set(out_labels.unique().tolist()) <= {*ids, IGNORE_INDEX}
    assert out_images.min() >= 0.0 and out_images.max() <= 1.0


def test_image_and_label_move_together_through_scale_crop_and_flip() -> None:
    labels = _blocks(8, 64, 128, [0, 2, 5, 11, 13], seed=1)
    torch.manual_seed(1)
    out_images, out_labels = PairedAugment((48, 96), (0.6, 1.8), True, 0.0)(_encode(labels), labels)
    # Away from block edges bilinear sampling reads a single block, which must be the label's.
    uniform = (
        out_labels[:, 1:-1, 1:-1]
        .unfold(1, 3, 1)
        .unfold(2, 3, 1)
        .reshape(8, 46 - 2, 94 - 2, 9)
        .eq(out_labels[:, 2:-2, 2:-2, None])
        .all(-1)
    ) & (out_labels[:, 2:-2, 2:-2] != IGNORE_INDEX)
    decoded = (out_images[:, 0, 2:-2, 2:-2] * 255).round().long()
    assert uniform.sum() > 0.5 * uniform.numel()
    assert torch.equal(decoded[uniform], out_labels[:, 2:-2, 2:-2][uniform])


def test_padding_is_ignore_never_road() -> None:
    # All road (id 0): any pixel outside the shrunken image must be 255, none may become 0.
    labels = torch.zeros(4, 64, 128, dtype=torch.long)
    images = torch.ones(4, 3, 64, 128)
    torch.manual_seed(2)
    out_images, out_labels = PairedAugment((64, 128), (0.25, 0.25), True, 0.0)(images, labels)
    assert set(out_labels.unique().tolist()) == {0, IGNORE_INDEX}
    for sample in range(4):
        road = out_labels[sample] == 0
        rows, cols = road.any(1).nonzero()[:, 0], road.any(0).nonzero()[:, 0]
        # The scaled image is 16 x 32 pixels; it lands somewhere inside the crop.
        assert 15 <= len(rows) <= 17 and 31 <= len(cols) <= 33
        assert road.sum() == len(rows) * len(cols)  # one rectangle, the rest is padding
        assert torch.all(out_images[sample][:, ~road] < 1.0)  # black padding outside it


def test_flip_mirrors_image_and_label_together() -> None:
    labels = _blocks(16, 32, 64, list(range(19)), seed=3)
    images = torch.rand(16, 3, 32, 64)
    torch.manual_seed(3)
    out_images, out_labels = PairedAugment((32, 64), (1.0, 1.0), True, 0.0)(images, labels)
    flipped = []
    for k in range(16):
        same = torch.equal(out_labels[k], labels[k])
        mirrored = torch.equal(out_labels[k], labels[k].flip(-1))
        assert same != mirrored
        expected = images[k].flip(-1) if mirrored else images[k]
        torch.testing.assert_close(out_images[k], expected, atol=1e-4, rtol=0)
        flipped.append(mirrored)
    assert 0 < sum(flipped) < 16


def test_seeded_runs_repeat_and_jitter_touches_the_image_only() -> None:
    labels = _blocks(4, 64, 128, [1, 8, 10], seed=4)
    images = torch.rand(4, 3, 64, 128)
    augment = PairedAugment((32, 64), (0.5, 1.5), True, 0.4)
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append(augment(images, labels))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert not torch.equal(outputs[0][1], outputs[2][1])
    torch.manual_seed(5)
    plain_images, plain_labels = PairedAugment((32, 64), (0.5, 1.5), True, 0.0)(images, labels)
    assert torch.equal(plain_labels, outputs[0][1])
    assert not torch.allclose(plain_images, outputs[0][0])


def test_normalize_uses_imagenet_statistics() -> None:
    mean = torch.tensor(IMAGENET_MEAN)[None, :, None, None].expand(1, 3, 4, 4)
    torch.testing.assert_close(normalize(mean), torch.zeros(1, 3, 4, 4))
    shifted = mean + torch.tensor(IMAGENET_STD)[None, :, None, None]
    torch.testing.assert_close(normalize(shifted), torch.ones(1, 3, 4, 4))
