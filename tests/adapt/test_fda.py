"""Fourier Domain Adaptation: spectra of the output, band geometry, dtypes and shapes."""

from __future__ import annotations

import pytest
import torch

from pipeline.adapt.fda import band_half_size, fda_band_mask, fda_transfer


def _images(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Smooth-ish images in [0, 1] with distinct per-channel means, so spectra differ."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(*shape[:-2], 4, 4, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.interpolate(
        coarse.reshape(-1, 1, 4, 4), size=shape[-2:], mode="bilinear", align_corners=False
    ).reshape(shape)
    noise = torch.rand(shape, generator=g, dtype=torch.float64)
    return (0.7 * smooth + 0.3 * noise).to(dtype)


@pytest.mark.parametrize(("height", "width", "beta"), [(32, 64, 0.1), (33, 47, 0.2)])
def test_is_the_real_part_of_the_full_spectrum_swap(height: int, width: int, beta: float) -> None:
    source = _images((2, 3, height, width), seed=0)
    target = _images((2, 3, height, width), seed=1)
    full_src, full_trg = torch.fft.fft2(source), torch.fft.fft2(target)
    band = fda_band_mask(height, width, beta)
    amplitude = torch.where(band, full_trg.abs(), full_src.abs())
    inverse = torch.fft.ifft2(torch.polar(amplitude, full_src.angle()))
    # The reference's band (-b .. b-1) is not symmetric: the swap leaves an imaginary part.
    assert inverse.imag.abs().max() > 1e-6
    torch.testing.assert_close(fda_transfer(source, target, beta), inverse.real)


def _symmetric_part(band: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(core, reach): the band's frequencies whose mirror -k is in it too, and those whose k or
    -k is."""
    mirror = torch.roll(band.flip(-2, -1), shifts=(1, 1), dims=(-2, -1))  # k -> -k
    return band & mirror, band | mirror


def test_output_spectrum_has_target_amplitude_in_band_and_source_phase() -> None:
    source = _images((2, 3, 48, 64), seed=2)
    target = _images((2, 3, 48, 64), seed=3)
    beta = 0.15  # b = 7
    out = fda_transfer(source, target, beta)
    spec_out, spec_src, spec_trg = (torch.fft.fft2(x) for x in (out, source, target))
    band = fda_band_mask(48, 64, beta)
    assert int(band.sum()) == 14 * 14  # the reference's (2b)^2
    core, reach = (m.expand_as(spec_out) for m in _symmetric_part(band))
    assert int(core[0, 0].sum()) == 13 * 13 and int(reach[0, 0].sum()) == 2 * 14 * 14 - 13 * 13
    # Where k and -k are both swapped: the target's amplitude, the source's phase.
    torch.testing.assert_close(spec_out.abs()[core], spec_trg.abs()[core])
    nonzero = core & (spec_src.abs() > 1e-9) & (spec_out.abs() > 1e-9)
    phasor_out = spec_out[nonzero] / spec_out.abs()[nonzero]
    phasor_src = spec_src[nonzero] / spec_src.abs()[nonzero]
    torch.testing.assert_close(phasor_out, phasor_src)
    # Where neither is: the source spectrum untouched.
    torch.testing.assert_close(spec_out[~reach], spec_src[~reach])
    # The band is where the output actually changed.
    assert not torch.allclose(spec_out.abs()[core], spec_src.abs()[core])


def test_mean_colour_is_the_targets() -> None:
    source = _images((3, 3, 40, 40), seed=4)
    target = _images((3, 3, 40, 40), seed=5) * 255
    out = fda_transfer(source * 255, target, beta=0.05)  # b = 2
    torch.testing.assert_close(out.mean(dim=(-2, -1)), target.mean(dim=(-2, -1)))


@pytest.mark.parametrize("beta", [0.0, 0.009])
def test_no_band_is_identity(beta: float) -> None:
    source = _images((2, 3, 64, 96), seed=6, dtype=torch.float32)
    target = _images((2, 3, 64, 96), seed=7, dtype=torch.float32)
    assert band_half_size(64, 96, beta) == 0
    out = fda_transfer(source, target, beta)
    assert torch.equal(out, source)
    assert out.data_ptr() != source.data_ptr()


def test_band_scales_with_resolution() -> None:
    assert band_half_size(1024, 2048, 0.01) == 10
    assert int(fda_band_mask(1024, 2048, 0.01).sum()) == 20 * 20
    assert band_half_size(512, 1024, 0.01) == 5  # FDA's training size: 100 bins
    assert band_half_size(128, 256, 0.01) == 1
    corners = fda_band_mask(128, 256, 0.01)
    assert int(corners.sum()) == 4
    assert all(bool(corners[y, x]) for y in (0, -1) for x in (0, -1))


def test_band_is_the_papers_four_corner_blocks() -> None:
    """low_freq_mutate's amp_src[:, :, 0:b, 0:b], [0:b, w-b:w], [h-b:h, 0:b], [h-b:h, w-b:w]
    (the previous band left out the -b row and column: (2b-1)^2 bins)."""
    height, width, beta = 20, 30, 0.2  # b = 4
    b = band_half_size(height, width, beta)
    paper = torch.zeros(height, width, dtype=torch.bool)
    for rows in (slice(0, b), slice(height - b, height)):
        for cols in (slice(0, b), slice(width - b, width)):
            paper[rows, cols] = True
    assert torch.equal(fda_band_mask(height, width, beta), paper)
    assert int(paper.sum()) == (2 * b) ** 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_keeps_shape_and_dtype(dtype: torch.dtype) -> None:
    source = _images((2, 3, 32, 48), seed=8)
    target = _images((2, 3, 32, 48), seed=9)
    out = fda_transfer(source.to(dtype), target.to(dtype), beta=0.1)
    assert out.shape == source.shape and out.dtype == dtype
    # Low precision only rounds the inputs and the output; the transform runs in float32.
    reference = fda_transfer(source.to(dtype).double(), target.to(dtype).double(), beta=0.1)
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-5)
    torch.testing.assert_close(out.double(), reference, atol=tolerance, rtol=0)


def test_target_batch_broadcasts() -> None:
    source = _images((4, 3, 32, 32), seed=10)
    target = _images((1, 3, 32, 32), seed=11)
    out = fda_transfer(source, target, beta=0.1)
    torch.testing.assert_close(out, fda_transfer(source, target.expand(4, -1, -1, -1), 0.1))
    torch.testing.assert_close(out, fda_transfer(source, target[0], 0.1))


@pytest.mark.parametrize(
    "target_shape", [(3, 3, 32, 32), (4, 1, 32, 32), (4, 3, 32, 16), (2, 4, 3, 32, 32)]
)
def test_incompatible_target_raises(target_shape: tuple[int, ...]) -> None:
    source = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match="broadcast"):
        fda_transfer(source, torch.rand(target_shape), beta=0.1)


@pytest.mark.parametrize("beta", [-0.01, 0.5, 1.0, float("nan")])
def test_beta_out_of_range_raises(beta: float) -> None:
    images = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="beta"):
        fda_transfer(images, images, beta)


def test_rejects_integer_images_and_unbatched_source() -> None:
    images = torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(TypeError):
        fda_transfer(images, images, 0.1)
    with pytest.raises(ValueError, match="B, C, H, W"):
        fda_transfer(torch.rand(3, 8, 8), torch.rand(3, 8, 8), 0.1)
