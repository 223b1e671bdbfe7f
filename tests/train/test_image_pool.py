"""Behaviour and checkpointing of the generated-image history pool."""

from __future__ import annotations

import io

import pytest
import torch

from pipeline.train.image_pool import ImagePool


def batch(start: int, n: int = 2) -> torch.Tensor:
    """Images (n, 1, 2, 2) whose every pixel holds its own id start, start + 1, ..."""
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return ids.reshape(n, 1, 1, 1).expand(n, 1, 2, 2).clone()


def ids_of(images: torch.Tensor) -> list[int]:
    return [int(v) for v in images[:, 0, 0, 0]]


def run(pool: ImagePool, first_id: int, steps: int) -> list[list[int]]:
    return [ids_of(pool.query(batch(first_id + 2 * i))) for i in range(steps)]


def test_size_zero_passes_input_through() -> None:
    pool = ImagePool(0, torch.Generator().manual_seed(0))
    images = torch.randn(3, 3, 4, 4, requires_grad=True)
    assert pool.query(images) is images
    assert len(pool) == 0


def test_fills_before_sampling() -> None:
    pool = ImagePool(4, torch.Generator().manual_seed(0))
    assert ids_of(pool.query(batch(0))) == [0, 1]
    assert ids_of(pool.query(batch(2))) == [2, 3]
    assert len(pool) == 4
    # A batch straddling the fill point: the first image fills, the second may be swapped.
    pool = ImagePool(3, torch.Generator().manual_seed(0))
    pool.query(batch(0))
    out = ids_of(pool.query(batch(2)))
    assert out[0] == 2 and out[1] in {0, 1, 2, 3}
    assert len(pool) == 3


def test_full_pool_mixes_history_and_new_images() -> None:
    pool = ImagePool(4, torch.Generator().manual_seed(0))
    pool.query(batch(0, 4))
    outputs = [i for step in run(pool, 100, 200) for i in step]
    sent = list(range(100, 500))
    # A stored image is swapped out before the new one goes in, so any output differing
    # from the image sent at that position came from the history.
    from_history = [(out, new) for out, new in zip(outputs, sent, strict=True) if out != new]
    assert 0.4 * len(sent) < len(from_history) < 0.6 * len(sent)
    assert all(out < new for out, new in from_history)  # only images seen before
    assert any(out < 4 for out, _ in from_history)  # the initial contents come back
    assert any(out >= 100 for out, _ in from_history)  # swapped-in images come back later
    assert len(pool) == 4


def test_outputs_are_detached_and_stored_images_are_copies() -> None:
    pool = ImagePool(2, torch.Generator().manual_seed(0))
    images = batch(0).requires_grad_()
    out = pool.query(images)
    assert not out.requires_grad
    with torch.no_grad():
        images.mul_(0)
    assert ids_of(pool.state_dict()["images"]) == [0, 1]


def test_same_seed_same_sequence_different_seed_differs() -> None:
    def sequence(seed: int) -> list[list[int]]:
        return run(ImagePool(3, torch.Generator().manual_seed(seed)), 0, 30)

    assert sequence(1) == sequence(1)
    assert sequence(1) != sequence(2)


def test_uses_only_its_generator() -> None:
    def sequence() -> list[list[int]]:
        pool = ImagePool(3, torch.Generator().manual_seed(5))
        steps = []
        for i in range(20):
            torch.rand(7)  # global RNG traffic must not change the pool's choices
            steps.append(ids_of(pool.query(batch(2 * i))))
        return steps

    torch.manual_seed(0)
    first = sequence()
    torch.manual_seed(123)
    assert sequence() == first


def test_state_dict_round_trip_resumes_identically() -> None:
    pool = ImagePool(3, torch.Generator().manual_seed(7))
    run(pool, 0, 10)
    buffer = io.BytesIO()
    torch.save(pool.state_dict(), buffer)
    expected = run(pool, 1000, 20)

    buffer.seek(0)
    restored = ImagePool(3, torch.Generator().manual_seed(999))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert run(restored, 1000, 20) == expected


def test_empty_pool_state_round_trip() -> None:
    state = ImagePool(2, torch.Generator().manual_seed(0)).state_dict()
    assert state["images"].numel() == 0
    restored = ImagePool(2, torch.Generator().manual_seed(0))
    restored.load_state_dict(state)
    assert len(restored) == 0
    assert ids_of(restored.query(batch(0))) == [0, 1]


def test_load_rejects_other_size() -> None:
    state = ImagePool(2, torch.Generator()).state_dict()
    with pytest.raises(ValueError, match="size"):
        ImagePool(3, torch.Generator()).load_state_dict(state)


def test_negative_size_rejected() -> None:
    with pytest.raises(ValueError, match="-1"):
        ImagePool(-1)
