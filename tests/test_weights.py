"""Model files: safetensors, byte-identical for identical weights; reference .pth files read."""

from __future__ import annotations

import collections

import pytest
import torch

from pipeline.models.cyclegan import build_generator
from pipeline.weights import WeightsError, load_weights, save_weights


class Payload:
    """Stands for arbitrary code a pickled file could run on load."""


def _generator(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_generator("resnet_6blocks", ngf=4)


def test_identical_weights_give_identical_bytes(tmp_path) -> None:
    first, second = tmp_path / "a" / "gen.safetensors", tmp_path / "b" / "gen.safetensors"
    save_weights(first, _generator(0).state_dict())
    # Same values, built separately and handed over in another key order.
    state = _generator(0).state_dict()
    save_weights(second, collections.OrderedDict(reversed(list(state.items()))))
    assert first.read_bytes() == second.read_bytes()
    save_weights(second, _generator(1).state_dict())
    assert first.read_bytes() != second.read_bytes()


def test_round_trip_keeps_every_tensor(tmp_path) -> None:
    state = _generator(0).state_dict()
    path = tmp_path / "gen.safetensors"
    save_weights(path, state)
    loaded = load_weights(path)
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    assert not list(tmp_path.glob(".*.tmp"))


def test_reference_pth_files_load(tmp_path) -> None:
    state = _generator(0).state_dict()
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(state, path)
    loaded = load_weights(path)
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


def test_bad_files_are_refused_by_name(tmp_path) -> None:
    pickled = tmp_path / "payload.pth"
    torch.save({"weight": torch.zeros(2), "hook": Payload()}, pickled)
    with pytest.raises(WeightsError, match=r"payload\.pth: refused"):
        load_weights(pickled)
    truncated = tmp_path / "cut.safetensors"
    save_weights(truncated, {"weight": torch.zeros(64)})
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(WeightsError, match=r"cut\.safetensors: not a readable"):
        load_weights(truncated)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.safetensors"):
        load_weights(tmp_path / "nowhere.safetensors")
    with pytest.raises(WeightsError, match=r"model\.pt: model weights are written as"):
        save_weights(tmp_path / "model.pt", {"weight": torch.zeros(2)})
