"""The report's figures (matplotlib, headless): per-class IoU bars, confusion matrices, image
and prediction grids, training curves; `save_figure` writes one as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages and CI have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline.data.labels import CLASS_COLORS, CLASS_NAMES, colorize
from pipeline.io import atomic_path


def save_figure(figure: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def per_class_iou_figure(table: pd.DataFrame, dataset: str) -> plt.Figure:
    """Grouped bars: one group per class, one bar per variant."""
    figure, axes = plt.subplots(figsize=(14, 4.5))
    width = 0.8 / max(1, len(table.index))
    x = np.arange(len(CLASS_NAMES))
    for i, variant in enumerate(table.index):
        values = [100 * table.loc[variant, f"iou_{name}"] for name in CLASS_NAMES]
        axes.bar(x + i * width - 0.4 + width / 2, np.nan_to_num(values), width, label=variant)
    axes.set_xticks(x, CLASS_NAMES, rotation=45, ha="right")
    axes.set_ylabel("IoU (%)")
    axes.set_ylim(0, 100)
    axes.set_title(
        f"Per-class IoU on real validation images, dataset {dataset} (absent classes shown as 0)"
    )
    axes.legend(ncols=len(table.index), loc="upper right")
    axes.grid(axis="y", alpha=0.3)
    return figure


def confusion_figure(matrix: np.ndarray, title: str) -> plt.Figure:
    """Row-normalized confusion matrix (rows: ground truth), in % of each class's pixels."""
    totals = matrix.sum(axis=1, keepdims=True)
    normalized = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    figure, axes = plt.subplots(figsize=(8, 7))
    image = axes.imshow(100 * normalized, cmap="Blues", vmin=0, vmax=100)
    axes.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=90)
    axes.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("ground-truth class")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="% of ground-truth pixels")
    return figure


def image_grid(
    rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], title: str | None = None
) -> plt.Figure:
    """A grid of uint8 images; `titles` label the columns, `title` the whole figure."""
    n_rows, n_cols = len(rows), len(titles)
    height, width = rows[0][0].shape[:2]
    panel = 3.0  # inches per panel width; height follows the images' aspect ratio
    figure, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(n_cols * panel, n_rows * panel * height / width + 0.4),
        squeeze=False,
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes[r][c].imshow(image, interpolation="nearest")
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title(titles[c], fontsize=9)
    top = 0.93
    if title:
        # The suptitle takes a band above the column titles.
        top = 0.86
        figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(wspace=0.03, hspace=0.05, left=0.01, right=0.99, top=top, bottom=0.01)
    return figure


def legend_handles():
    from matplotlib.patches import Patch

    return [
        Patch(color=np.asarray(colour) / 255, label=name)
        for name, colour in zip(CLASS_NAMES, CLASS_COLORS)
    ]


def prediction_grid(
    images: np.ndarray, labels: np.ndarray, predictions: dict[str, np.ndarray], title: str
) -> plt.Figure:
    """Rows of image | ground truth | each variant's prediction, in the Cityscapes colours.

    `images` (K, H, W, 3) uint8 and `labels`/`predictions[v]` (K, h, w) train ids; images are
    resized to the label size for display.
    """
    from PIL import Image

    rows = []
    for k in range(len(labels)):
        h, w = labels[k].shape
        image = np.asarray(Image.fromarray(images[k]).resize((w, h), Image.BILINEAR))
        rows.append([image, colorize(labels[k]), *(colorize(p[k]) for p in predictions.values())])
    figure = image_grid(rows, ["real image", "ground truth", *predictions], title)
    figure.legend(
        handles=legend_handles(),
        loc="lower center",
        ncols=10,
        fontsize=7,
        bbox_to_anchor=(0.5, -0.06),
    )
    return figure


def curves_figure(curves: pd.DataFrame, title: str, ylabel: str = "loss") -> plt.Figure:
    """Every loss column of a training curves table (the run layer's CSV) against `step`.

    The learning rate (column `lr`), when present, gets its own panel below: on the losses'
    axis its 1e-4 scale would draw a flat line at zero.
    """
    losses = [column for column in curves.columns if column not in ("step", "lr")]
    has_lr = "lr" in curves.columns
    figure, panels = plt.subplots(
        2 if has_lr else 1,
        1,
        sharex=True,
        squeeze=False,
        figsize=(9, 5.5 if has_lr else 4),
        height_ratios=(3, 1) if has_lr else None,
    )
    axes = panels[0, 0]
    for column in losses:
        axes.plot(curves["step"], curves[column], label=column, linewidth=1)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncols=2)
    if has_lr:
        lr_axes = panels[1, 0]
        lr_axes.plot(curves["step"], curves["lr"], color="black", linewidth=1)
        lr_axes.set_ylabel("learning rate")
        lr_axes.grid(alpha=0.3)
    panels[-1, 0].set_xlabel("training step")
    return figure
