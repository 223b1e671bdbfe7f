"""Comparison tables and figures across segmentation variants.

Inputs are the files the evaluate stages write (`reports/metrics/<variant>.json`, confusion CSVs,
saved predictions); outputs are a Markdown and CSV table a team can read and diff, and PNG figures
readable at a glance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages and CI have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline.data.labels import CLASS_COLORS, CLASS_NAMES, colorize
from pipeline.io import atomic_path, read_json

SOURCE, ORACLE = "source_only", "oracle"

# Published GTA5 -> Cityscapes figures (CyCADA, Hoffman et al. 2018, FCN8s-VGG16, Cityscapes val),
# shown for context only: they come from the real datasets at full resolution, not from this run.
PUBLISHED = pd.DataFrame(
    [
        ("source only", 54.0, 17.9),
        ("CycleGAN pixel-level (CyCADA pixel-only)", 82.8, 34.8),
        ("oracle (trained on Cityscapes)", 93.1, 60.3),
    ],
    columns=["training set", "pixel accuracy %", "mIoU %"],
)

SUMMARY = ("pixel_accuracy", "mean_class_accuracy", "miou", "fwiou")


def load_metrics(metrics_dir: str | Path, variants: Sequence[str]) -> pd.DataFrame:
    """One row per variant (in `variants` order) from `metrics_dir/<variant>.json`.

    Columns: the summary scores, then `iou_<class>` for the 19 classes; NaN where a class is absent
    from the ground truth. A missing file is an error naming it.
    """
    rows = []
    for variant in variants:
        data = read_json(Path(metrics_dir) / f"{variant}.json")
        row = {"variant": variant}
        for key in SUMMARY:
            row[key] = _number(data[key])
        for name in CLASS_NAMES:
            row[f"iou_{name}"] = _number(data["per_class_iou"].get(name))
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def gap_closed(value: float, source: float, oracle: float) -> float:
    """Share of the source-to-oracle gap a variant closes: 0 at source-only, 1 at the oracle.

    NaN when the gap is not positive (the oracle does not beat source-only), where the ratio
    would be meaningless.
    """
    gap = oracle - source
    if not (math.isfinite(gap) and gap > 0 and math.isfinite(value)):
        return math.nan
    return (value - source) / gap


def add_gap_closure(table: pd.DataFrame) -> pd.DataFrame:
    """Add `gap_closed_miou` and `gap_closed_pixel_accuracy` when both anchors are present."""
    table = table.copy()
    for key in ("miou", "pixel_accuracy"):
        if SOURCE in table.index and ORACLE in table.index:
            source, oracle = table.loc[SOURCE, key], table.loc[ORACLE, key]
            table[f"gap_closed_{key}"] = [gap_closed(v, source, oracle) for v in table[key]]
        else:
            table[f"gap_closed_{key}"] = math.nan
    return table


def _pct(value: float, digits: int = 1) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.{digits}f}"


def comparison_markdown(table: pd.DataFrame, dataset: str, extra: dict | None = None) -> str:
    """The comparison page for `dataset` (its label): summary table, per-class IoU table, then
    the published rows."""
    lines = [
        "# Segmentation on real validation images, by training set",
        "",
        f"Dataset **{dataset}**. Scores in % on the target validation split, at label "
        "resolution. *Gap closed* is (variant - source_only) / (oracle - source_only).",
        "",
        "| variant | pixel acc. | class acc. | mIoU | fwIoU | gap closed (mIoU) "
        "| gap closed (pixel acc.) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, row in table.iterrows():
        lines.append(
            f"| {variant} | {_pct(row.pixel_accuracy)} | {_pct(row.mean_class_accuracy)} "
            f"| {_pct(row.miou)} | {_pct(row.fwiou)} | {_pct(row.gap_closed_miou, 0)}% "
            f"| {_pct(row.gap_closed_pixel_accuracy, 0)}% |"
        )
    lines += ["", "## Per-class IoU (%)", ""]
    lines.append("| class | " + " | ".join(table.index) + " |")
    lines.append("|---|" + "---:|" * len(table.index))
    for name in CLASS_NAMES:
        values = [_pct(table.loc[v, f"iou_{name}"]) for v in table.index]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    if extra:
        lines += ["", "## Translation quality", ""]
        lines += [f"- {key}: {value}" for key, value in extra.items()]
    lines += [
        "",
        "## Published reference (real GTA5 -> Cityscapes, not this run)",
        "",
        "CyCADA (Hoffman et al., ICML 2018), FCN8s-VGG16 on Cityscapes val. These are the "
        "published figures on the real datasets at full resolution, for context; the rows above "
        "come from this run's data.",
        "",
        "| training set | pixel acc. | mIoU |",
        "|---|---:|---:|",
    ]
    for _, row in PUBLISHED.iterrows():
        lines.append(f"| {row.iloc[0]} | {row.iloc[1]:.1f} | {row.iloc[2]:.1f} |")
    return "\n".join(lines) + "\n"


def save_figure(figure: plt.Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def variant_summary(table: pd.DataFrame, variant: str) -> dict[str, float | None]:
    """A variant's summary scores and gap closed, as fractions (4 decimals, null when absent):
    the small per-variant metrics file `dvc metrics show` and `dvc exp show` list."""
    keys = (*SUMMARY, "gap_closed_miou", "gap_closed_pixel_accuracy")
    values = {key: float(table.loc[variant, key]) for key in keys}
    return {key: round(v, 4) if math.isfinite(v) else None for key, v in values.items()}


def per_class_iou_frame(table: pd.DataFrame, variant: str) -> pd.DataFrame:
    """One row per class present in the ground truth: class name, IoU in %, for `dvc plots`."""
    iou = [100 * table.loc[variant, f"iou_{name}"] for name in CLASS_NAMES]
    frame = pd.DataFrame({"class": list(CLASS_NAMES), "iou_percent": iou})
    return frame[np.isfinite(frame["iou_percent"])].round(2)


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
    """Line plot of every non-`step` column against `step`."""
    figure, axes = plt.subplots(figsize=(9, 4))
    for column in curves.columns:
        if column != "step":
            axes.plot(curves["step"], curves[column], label=column, linewidth=1)
    axes.set_xlabel("training step")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncols=2)
    return figure
