"""Image-level domain adaptation transforms."""

from pipeline.adapt.fda import band_half_size, fda_band_mask, fda_transfer

__all__ = ["band_half_size", "fda_band_mask", "fda_transfer"]
