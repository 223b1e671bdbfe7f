"""FID / KID of translations (pipeline.fid): the metrics' values on features with a known answer,
the Inception path on a weights file made here (nothing is downloaded), and refused files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.fid import FEATURES, fid_kid, inception_net, translation_distances
from pipeline.weights import WeightsError


def test_fid_of_a_shifted_copy_is_the_squared_shift_and_kid_grows() -> None:
    """Same covariance, means apart by 0.5 in every dimension: FID = ||mu - mu'||^2 exactly."""
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(300, FEATURES, generator=generator, dtype=torch.float64)
    same = fid_kid(real, real.clone())
    shifted = fid_kid(real, real + 0.5)
    assert same["fid"] == pytest.approx(0.0, abs=1e-3)
    assert shifted["fid"] == pytest.approx(0.25 * FEATURES, rel=1e-3)
    # KID is unbiased: about 0 for two samples of one distribution, clearly above it for two.
    other_sample = torch.randn(300, FEATURES, generator=generator, dtype=torch.float64)
    assert shifted["kid"] > 20 * abs(fid_kid(real, other_sample)["kid"])
    assert fid_kid(real, real + 0.5) == shifted  # KID's subsets come from the fixed seed


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory) -> str:
    """torch-fidelity's Inception-v3 with random weights, saved as a state dict: the real file
    (the 2015-12-05 weights) cannot be fetched here, but its keys and shapes are these."""
    import torch_fidelity.feature_extractor_inceptionv3 as module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(module.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None)
        torch.manual_seed(0)
        net = module.FeatureExtractorInceptionV3("inception-v3-compat", [str(FEATURES)])
    path = tmp_path_factory.mktemp("weights") / "inception.pth"
    torch.save(net.state_dict(), path)
    return str(path)


def test_translation_distances_run_the_inception_net_from_a_local_file(inception_file) -> None:
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)
    other = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    scores = translation_distances(
        inception_file, real, {"same": real.copy(), "other": other}, 2, torch.device("cpu")
    )
    assert scores["computed"] and scores["inception_weights"] == inception_file
    assert set(scores["same"]) == set(scores["other"]) == {"fid", "kid", "kid_std"}
    assert scores["same"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(scores["other"]["fid"])


def test_without_a_weights_file_nothing_is_computed_and_the_setting_is_named() -> None:
    scores = translation_distances(
        None, np.zeros((1, 8, 8, 3), np.uint8), {}, 1, torch.device("cpu")
    )
    assert scores == {"computed": False, "why": "fid.inception_weights is null (README)"}


def test_a_file_that_is_not_inception_weights_is_refused_with_its_path(tmp_path) -> None:
    wrong = tmp_path / "encoder.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(WeightsError, match=r"encoder\.pth: not torch-fidelity's Inception-v3"):
        inception_net(wrong)
    with pytest.raises(WeightsError, match=r"missing\.pth"):
        inception_net(tmp_path / "missing.pth")
