"""Colour statistics of image sets, and how far two sets are apart by them: the translate
stage's domain-shift scores (the sim frames before and after translation, against the real
frames)."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

HIST_BINS = 32


@dataclasses.dataclass(frozen=True)
class ColourStats:
    """Exact per-channel histograms of 0..255 values over a set of (N, H, W, 3) uint8 frames.

    Integer counts add up exactly in any order, so statistics gathered batch by batch on worker
    threads, or partly on a resumed run, equal those of one pass over all frames.
    """

    counts: np.ndarray  # (3, 256) int64: pixels of each value, per channel

    @classmethod
    def of(cls, images: np.ndarray | Tensor) -> ColourStats:
        """Of (N, H, W, 3) or (H, W, 3) uint8 frames."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.require(images, np.uint8, "W"))  # memmaps: a copy
        frames = images.reshape(-1, 3)  # (pixels, 3)
        # torch's bincount releases the GIL (worker threads run in parallel) and counts uint8
        # directly, ~15x faster here than numpy's, which widens to int64 first.
        counts = [torch.bincount(frames[:, c].contiguous(), minlength=256) for c in range(3)]
        return cls(torch.stack(counts).numpy().astype(np.int64))

    @classmethod
    def empty(cls) -> ColourStats:
        return cls(np.zeros((3, 256), dtype=np.int64))

    def __add__(self, other: ColourStats) -> ColourStats:
        return ColourStats(self.counts + other.counts)

    @property
    def mean(self) -> np.ndarray:
        """(3,) mean value per channel, 0..255."""
        return (self.counts @ np.arange(256)) / max(1, self.counts[0].sum())

    @property
    def std(self) -> np.ndarray:
        """(3,) standard deviation per channel, 0..255."""
        squares = (self.counts @ np.arange(256) ** 2) / max(1, self.counts[0].sum())
        return np.sqrt(np.maximum(squares - self.mean**2, 0.0))

    @property
    def hist(self) -> np.ndarray:
        """(3, HIST_BINS) normalized histogram per channel."""
        binned = self.counts.reshape(3, HIST_BINS, 256 // HIST_BINS).sum(axis=2)
        return binned / max(1, self.counts[0].sum())


def channel_stats(images: np.ndarray, workers: int = 1, chunk: int = 16) -> ColourStats:
    """ColourStats of (N, H, W, 3) uint8 frames, read `chunk` frames at a time (memmaps stay
    on disk) by `workers` threads."""
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(
            lambda first: ColourStats.of(images[first : first + chunk]),
            range(0, len(images), chunk),
        )
        return sum(parts, ColourStats.empty())


def domain_distance(stats: ColourStats, reference: ColourStats) -> dict[str, float]:
    """How far two image sets' colour statistics are apart (0 = identical).

    meanstd_distance: mean over channels of |mean difference| + |std difference|, in 0..255
    units divided by 255. hist_distance: mean over channels of the L1 distance between the
    normalized HIST_BINS-bin histograms (0..2).
    """
    meanstd = np.abs(stats.mean - reference.mean) + np.abs(stats.std - reference.std)
    hist = np.abs(stats.hist - reference.hist).sum(axis=1)
    return {
        "meanstd_distance": float(meanstd.mean() / 255.0),
        "hist_distance": float(hist.mean()),
    }


def domain_shift_report(
    source: ColourStats, translated: ColourStats, target: ColourStats
) -> dict[str, float]:
    """Colour distances to `target` before (raw `source`) and after translation."""
    before = domain_distance(source, target)
    after = domain_distance(translated, target)
    report = {}
    for key in ("hist_distance", "meanstd_distance"):
        report[f"{key}_before"] = round(before[key], 6)
        report[f"{key}_after"] = round(after[key], 6)
    return report
