"""Comparison tables and figures across segmentation variants.

Inputs are the files the evaluate stages write (`reports/metrics/<variant>.json`, confusion CSVs,
saved predictions); outputs are a Markdown and CSV table a team can read and diff, and PNG figures
readable at a glance.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: stages and CI have no display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline.config import EnsembleSpec, RoundSpec, VariantSpec
from pipeline.data.identity import read_identity
from pipeline.data.labels import CLASS_COLORS, CLASS_NAMES, PROTOCOL_CLASSES, colorize
from pipeline.data.split import IMAGES, LABELS_NATIVE, PreparedSplit
from pipeline.io import atomic_path, read_json, write_json, write_text
from pipeline.tracking.base import Tracker

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

# Published SYNTHIA (RAND-CITYSCAPES) -> Cityscapes val figures, for context when the source is
# SYNTHIA; None where the source gives no figure. mIoU16 / mIoU13: the 16- and 13-class protocols.
# Sources: [TLlib] the Transfer-Learning-Library's semantic segmentation benchmark
# (docs/dalib/benchmarks/semantic_segmentation.rst: its own runs, 13 classes); [DAFormer] the
# comparison table of the DAFormer README (Hoyer et al., CVPR 2022, mIoU16); [DAFormer paper] its
# SYNTHIA table (Hoyer et al., CVPR 2022, mIoU13, as Papers with Code lists it). CyCADA reports no
# SYNTHIA result.
PUBLISHED_SYNTHIA = pd.DataFrame(
    [
        ("source only", "DeepLabv2 ResNet-101", None, 41.5, "TLlib"),
        ("FDA (Fourier style swap, pixel level)", "DeepLabv2 ResNet-101", None, 43.9, "TLlib"),
        ("oracle (trained on Cityscapes)", "DeepLabv2 ResNet-101", None, 76.6, "TLlib"),
        ("ADVENT", "DeepLabv2 ResNet-101", 41.2, None, "DAFormer"),
        ("DACS (self-training, ClassMix)", "DeepLabv2 ResNet-101", 48.3, None, "DAFormer"),
        ("ProDA", "DeepLabv2 ResNet-101", 55.5, None, "DAFormer"),
        ("DAFormer", "DAFormer (MiT-B5)", 60.9, 67.4, "DAFormer paper"),
    ],
    columns=["method", "network", "mIoU16 %", "mIoU13 %", "source"],
)

SUMMARY = ("pixel_accuracy", "mean_class_accuracy", "miou", "fwiou")
PROTOCOLS = tuple(f"miou{count}" for count in PROTOCOL_CLASSES)  # miou19, miou16, miou13


def load_metrics(metrics_dir: str | Path, variants: Sequence[str]) -> pd.DataFrame:
    """One row per variant (in `variants` order) from `metrics_dir/<variant>.json`.

    Columns: the summary scores, the protocol means (miou19, miou16, miou13; NaN in files written
    before they existed), then `iou_<class>` for the 19 classes; NaN where a class is absent from
    the ground truth. A missing file is an error naming it.
    """
    rows = []
    for variant in variants:
        data = read_json(Path(metrics_dir) / f"{variant}.json")
        row = {"variant": variant}
        for key in SUMMARY:
            row[key] = _number(data[key])
        for key in PROTOCOLS:
            row[key] = _number(data.get(key))
        for name in CLASS_NAMES:
            row[f"iou_{name}"] = _number(data["per_class_iou"].get(name))
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def load_inference(metrics_dir: str | Path, variants: Sequence[str]) -> str:
    """How the variants' scores were measured (each metrics file's `inference`), or a list of
    variant: protocol pairs when they differ."""
    protocols = {
        variant: read_json(Path(metrics_dir) / f"{variant}.json").get("inference", "whole frame")
        for variant in variants
    }
    if len(set(protocols.values())) <= 1:
        return next(iter(protocols.values()), "whole frame")
    return "; ".join(f"{variant}: {protocol}" for variant, protocol in protocols.items())


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def load_city_metrics(
    metrics_dir: str | Path, variants: Sequence[str], key: str = "miou"
) -> pd.DataFrame:
    """One row per city, one column per variant holding `key` of that city, plus `n_images`.

    Empty when the metrics carry no cities (a val split prepared without sub-folders).
    """
    columns, n_images = {}, {}
    for variant in variants:
        per_city = read_json(Path(metrics_dir) / f"{variant}.json").get("per_city", {})
        columns[variant] = {city: _number(scores[key]) for city, scores in per_city.items()}
        n_images.update({city: scores["n_images"] for city, scores in per_city.items()})
    table = pd.DataFrame(columns, index=sorted(n_images), columns=list(variants))
    table.insert(0, "n_images", [n_images[city] for city in table.index])
    table.index.name = "city"
    return table


def source_missing_classes(data_report: dict) -> list[str]:
    """Train classes without a single labelled pixel in the prepared source split (`sim`)."""
    pixels = data_report["splits"]["sim"]["class_pixels"]
    return [name for name in CLASS_NAMES if pixels.get(name, 0) == 0]


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


# Which differences the page spells out: each adaptation against what it builds on.
COMPARISONS = (
    ("fda", "source_only"),
    ("cyclegan", "source_only"),
    ("source_st", "source_only"),
    ("cyclegan_st", "cyclegan"),
    ("cyclegan_st", "source_st"),
)


def load_seed_spread(path: str | Path, dataset: str | None = None) -> pd.DataFrame | None:
    """`python -m pipeline.cli.ablation seeds` output as a table: one row per variant, the
    spread (max - min over seeds) of mIoU and pixel accuracy and how many runs it spans; None
    without the file, or when it was measured on another dataset than `dataset` (a label, as
    the report prints it)."""
    path = Path(path)
    if not path.is_file():
        return None
    data = read_json(path)
    if dataset is not None and data.get("dataset") != dataset:
        return None
    rows = {
        variant: {
            "miou_spread": _number(entry.get("miou_spread")),
            "pixel_accuracy_spread": _number(entry.get("pixel_accuracy_spread")),
            "runs": len(entry.get("miou", [])),
        }
        for variant, entry in data["variants"].items()
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def differences_markdown(table: pd.DataFrame, spread: pd.DataFrame | None) -> list[str]:
    """Each COMPARISONS pair present: the mIoU and pixel-accuracy differences, marked when
    smaller than the larger seed spread of the two (then the order may be noise)."""
    lines = ["", "## Differences between variants", ""]
    if spread is None:
        lines.append(
            "No seed spread measured for these defaults on this dataset (`python -m "
            "pipeline.cli.ablation queue --seeds`); differences below are single runs."
        )
    else:
        runs = int(spread["runs"].max())
        lines.append(
            f"Seed spread: max - min over {runs} runs of the whole chain with other seeds "
            "(reports/seeds.json). *within spread*: the difference is smaller than the larger "
            "spread of the two variants, so its sign may be seed noise."
        )
    lines += ["", "| comparison | mIoU diff. | pixel acc. diff. |", "|---|---:|---:|"]
    for better, base in COMPARISONS:
        if better not in table.index or base not in table.index:
            continue
        cells = []
        for key in ("miou", "pixel_accuracy"):
            diff = table.loc[better, key] - table.loc[base, key]
            cell = f"{100 * diff:+.1f}"
            if spread is not None and better in spread.index and base in spread.index:
                noise = max(spread.loc[better, f"{key}_spread"], spread.loc[base, f"{key}_spread"])
                if math.isfinite(noise) and abs(diff) <= noise:
                    cell += " (within spread)"
            cells.append(cell)
        lines.append(f"| {better} vs {base} | {cells[0]} | {cells[1]} |")
    return lines


def _pct(value: float, digits: int = 1) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.{digits}f}"


def comparison_markdown(
    table: pd.DataFrame,
    dataset: str,
    extra: Sequence[str] = (),
    classes: int = 19,
    source_missing: Sequence[str] = (),
    cities: pd.DataFrame | None = None,
    source_kind: str = "gta5",
    spread: pd.DataFrame | None = None,
    inference: str = "whole frame",
    notes: Mapping[str, RowNote] | None = None,
) -> str:
    """The comparison page for `dataset` (its label): summary table, differences, per-class IoU
    table, per-city table, published rows. `inference`: how the net saw the working-size val
    frames (`load_inference`); `notes`: what sets a row apart (`row_notes`), marked in its cell
    and said under the table.

    `classes` is the protocol the table's mIoU averages (evaluate.classes). When it is not 19 or
    the source set labels no pixel of some class (`source_missing`), the other protocols' means
    stand beside it. `cities` is a `load_city_metrics` table; `source_kind` (data.source.kind)
    picks the published reference rows; `spread` (`load_seed_spread`) adds each variant's seed
    spread and marks the differences smaller than it.
    """
    other_protocols = [
        f"miou{count}"
        for count in PROTOCOL_CLASSES
        if count != classes and (classes != 19 or source_missing)
    ]
    lines = [
        "# Segmentation on real validation images, by training set",
        "",
        f"Dataset **{dataset}**. Scores in % on the target validation split, at label "
        f"resolution (the net sees the {inference} at the working size; its logits are "
        "upsampled to the label's size). *Gap closed* is (variant - source_only) / "
        "(oracle - source_only).",
    ]
    if other_protocols:
        lines += [
            "",
            _protocol_note(classes, source_missing),
        ]
    protocol_header = "".join(f" {_protocol_title(key)} |" for key in other_protocols)
    spread_header = " seed spread (mIoU) |" if spread is not None else ""
    lines += [
        "",
        f"| variant | pixel acc. | class acc. | mIoU |{protocol_header} fwIoU | gap closed (mIoU) "
        f"| gap closed (pixel acc.) |{spread_header}",
        "|---|---:|---:|---:|"
        + "---:|" * len(other_protocols)
        + "---:|---:|---:|"
        + ("---:|" if spread is not None else ""),
    ]
    notes = notes or {}
    for variant, row in table.iterrows():
        label = f"{variant} ({notes[variant].mark})" if variant in notes else variant
        protocol_cells = "".join(f" {_pct(row[key])} |" for key in other_protocols)
        spread_cell = ""
        if spread is not None:
            value = spread["miou_spread"].get(variant, math.nan)
            spread_cell = f" {_pct(value)} |"
        lines.append(
            f"| {label} | {_pct(row.pixel_accuracy)} | {_pct(row.mean_class_accuracy)} "
            f"| {_pct(row.miou)} |{protocol_cells} {_pct(row.fwiou)} "
            f"| {_pct(row.gap_closed_miou, 0)}% | {_pct(row.gap_closed_pixel_accuracy, 0)}% |"
            f"{spread_cell}"
        )
    said = [f"- **{name}**: {notes[name].text}" for name in table.index if name in notes]
    if said:
        lines += ["", *said]
    lines += differences_markdown(table, spread)
    lines += ["", "## Per-class IoU (%)", ""]
    lines.append("| class | " + " | ".join(table.index) + " |")
    lines.append("|---|" + "---:|" * len(table.index))
    for name in CLASS_NAMES:
        values = [_pct(table.loc[v, f"iou_{name}"]) for v in table.index]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    if cities is not None and len(cities):
        lines += city_markdown(cities, classes)
    if extra:
        lines += ["", "## Translation quality", "", *extra]
    if source_kind == "synthia":
        return "\n".join(lines + _published_synthia_markdown()) + "\n"
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


def _protocol_title(key: str) -> str:
    return "mIoU" + key.removeprefix("miou")


def _protocol_note(classes: int, source_missing: Sequence[str]) -> str:
    lacking = (
        f"The source set labels no {', '.join(source_missing)}, so the SYNTHIA protocols stand "
        "beside it: "
        if source_missing
        else "Beside it: "
    )
    return (
        f"*mIoU* averages the {classes} classes of `evaluate.classes`. {lacking}*mIoU16* leaves "
        "out terrain, truck and train, *mIoU13* also wall, fence and pole; every IoU comes from "
        "the full 19-class confusion matrix."
    )


def city_markdown(cities: pd.DataFrame, classes: int) -> list[str]:
    """Lines of the per-city mIoU table (`load_city_metrics`), in %, one column per variant."""
    variants = [column for column in cities.columns if column != "n_images"]
    lines = [
        "",
        f"## mIoU by city ({classes} classes, %)",
        "",
        "Each city's frames scored on their own (the target val split's sub-folders).",
        "",
        "| city | frames | " + " | ".join(variants) + " |",
        "|---|---:|" + "---:|" * len(variants),
    ]
    for city, row in cities.iterrows():
        values = " | ".join(_pct(row[v]) for v in variants)
        lines.append(f"| {city} | {int(row.n_images)} | {values} |")
    return lines


def _published_synthia_markdown() -> list[str]:
    lines = [
        "",
        "## Published reference (real SYNTHIA -> Cityscapes, not this run)",
        "",
        "Cityscapes val, full resolution, for context; the rows above come from this run's data. "
        "Sources: TLlib = Transfer-Learning-Library semantic segmentation benchmark (its own "
        "runs); DAFormer = comparison table of the DAFormer README (Hoyer et al., CVPR 2022); "
        'DAFormer paper = its SYNTHIA -> Cityscapes table. "-": the source gives no figure.',
        "",
        "| method | network | mIoU16 | mIoU13 | source |",
        "|---|---|---:|---:|---|",
    ]
    for _, row in PUBLISHED_SYNTHIA.iterrows():
        cells = [_published(row["mIoU16 %"]), _published(row["mIoU13 %"])]
        lines.append(f"| {row.method} | {row.network} | {cells[0]} | {cells[1]} | {row.source} |")
    return lines


def _published(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1f}"


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


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """Where the report stage reads and writes; every path as dvc.yaml declares it."""

    reports: Path  # metrics/, confusion/, predictions/, the stage scores; comparison.* go here
    prepared: Path
    translated: Path
    models: Path  # models/seg: each variant's curve.csv and run.json
    summary: Path  # per-variant summary scores for `dvc metrics show`


@dataclasses.dataclass(frozen=True)
class RowNote:
    """What sets a comparison row apart: `mark` beside its name, `text` under the table."""

    mark: str
    text: str


@dataclasses.dataclass(frozen=True)
class Rows:
    """What the comparison lists: train_seg's variants, ensembles and rounds."""

    variants: Mapping[str, VariantSpec]
    ensembles: Mapping[str, EnsembleSpec]
    rounds: Mapping[str, RoundSpec]


def comparison_rows(config: Rows) -> list[str]:
    """The comparison's rows: the variants, then the ensembles and rounds, each after every row
    it is made from (FDA's order: its nets, their average, the rounds, their average)."""
    made_from = {name: list(e.members) for name, e in config.ensembles.items()}
    made_from.update({name: [r.pseudo_labels] for name, r in config.rounds.items()})
    rows, pending = list(config.variants), list(made_from)
    while pending:
        ready = next(n for n in pending if all(m in rows for m in made_from[n]))
        rows.append(ready)
        pending.remove(ready)
    return rows


def row_notes(config: Rows) -> dict[str, RowNote]:
    """The notes of the rows that are not plain unsupervised variants: the semi-supervised ones
    (they saw target labels, so they must not be ranked as if they had not), the ensembles and
    the rounds (and those made from a semi-supervised row are semi-supervised too)."""
    notes: dict[str, RowNote] = {}
    semi: set[str] = set()
    for name, spec in config.variants.items():
        if spec.target_labels is not None:
            semi.add(name)
            frames = spec.target_labels.frames
            notes[name] = RowNote(
                f"semi-supervised, {frames} target labels",
                f"semi-supervised: also trained on {frames} labelled frames of "
                f"{spec.target_labels.split} (drawn with seed {spec.target_labels.seed}); it saw "
                f"target labels, so its gap closed is not comparable with the unsupervised rows'",
            )
    for name in comparison_rows(config)[len(config.variants) :]:
        if name in config.ensembles:
            sources = list(config.ensembles[name].members)
            mark = "ensemble"
            text = (
                f"FDA's multi-band transfer: the class probabilities of {', '.join(sources)} "
                f"averaged"
            )
        else:
            spec = config.rounds[name]
            sources = [spec.variant, spec.pseudo_labels]
            mark = "self-supervised round"
            text = (
                f"FDA's self-supervised round: {spec.variant}'s recipe trained again with the "
                f"pseudo-labels {spec.pseudo_labels} gives {spec.split}'s frames (each class's "
                f"pixels above its {spec.quantile} confidence quantile, capped at "
                f"{spec.max_threshold})"
            )
        from_semi = [s for s in sources if s in semi]
        if from_semi:
            semi.add(name)
            mark += ", semi-supervised"
            text += f"; {', '.join(from_semi)} saw target labels"
        notes[name] = RowNote(mark, text)
    return notes


def summary_of(
    reports: Path,
    prepared: Path,
    variants: Sequence[str],
    classes: int,
    source_kind: str,
    notes: Mapping[str, RowNote] | None = None,
) -> tuple[pd.DataFrame, list[str], dict[str, Any]]:
    """The comparison of the evaluate stages' scores under `reports` for the rows `variants`
    (ensembles included): the table with the gap closed, the translation-quality lines and
    comparison_markdown's keyword arguments (but the per-city tables)."""
    identity = read_identity(prepared)
    table = add_gap_closure(load_metrics(reports / "metrics", variants))
    page = {
        "dataset": identity.label,
        "classes": classes,
        "source_missing": source_missing_classes(read_json(reports / "data.json")),
        "source_kind": source_kind,
        "spread": load_seed_spread(reports / "seeds.json", identity.label),
        "inference": load_inference(reports / "metrics", variants),
        "notes": dict(notes or {}),
    }
    return table, translation_scores(reports), page


def write_report(
    inputs: ReportInputs,
    variants: Sequence[str],
    n_samples: int,
    classes: int,
    source_kind: str,
    tracker: Tracker,
    notes: Mapping[str, RowNote] | None = None,
) -> tuple[pd.DataFrame, list[str], dict[str, Any]]:
    """Write the comparison page and table, the per-variant summaries, per-class IoU files and
    figures, all naming the dataset; log them to `tracker` (the report's MLflow run). `variants`
    are the rows (ensembles included), `notes` what sets some apart (`row_notes`).

    Returns the table, the translation-quality lines and comparison_markdown's keyword
    arguments, so the README section can repeat the page.
    """
    reports, figures = inputs.reports, inputs.reports / "figures"
    identity = read_identity(inputs.prepared)
    table, extra, page = summary_of(reports, inputs.prepared, variants, classes, source_kind, notes)
    cities = load_city_metrics(reports / "metrics", variants)
    write_text(
        reports / "comparison.md", comparison_markdown(table, extra=extra, cities=cities, **page)
    )
    with atomic_path(reports / "comparison.csv") as tmp:
        table.to_csv(tmp, float_format="%.6f")
    # Small per-variant files: `dvc metrics show` lists them as one table, one row each, and
    # `dvc plots` draws per-class IoU with the class names on the categorical axis.
    for variant in variants:
        write_json(inputs.summary / f"{variant}.json", variant_summary(table, variant))
        with atomic_path(reports / "per_class_iou" / f"{variant}.csv") as tmp:
            per_class_iou_frame(table, variant).to_csv(tmp, index=False)

    written = _figures(inputs, variants, n_samples, table, identity.label)
    tracker.log_data({"evaluation": [inputs.prepared / "real_val"]})
    # Which runs this report summarises (the stages DVC did not rerun keep their old runs).
    tracker.log_params(_source_runs(inputs.models, variants))
    for name, figure in written.items():
        tracker.log_figure(figure, f"figures/{name}")
        save_figure(figure, figures / f"{name}.png")
    tracker.log_artifact(reports / "comparison.md")
    tracker.log_artifact(reports / "comparison.csv")
    tracker.log_table(table.reset_index(), "comparison")
    scores = ("miou", "pixel_accuracy", "gap_closed_miou")
    tracker.log_metrics(
        {f"{key}_{variant}": table.loc[variant, key] for variant in variants for key in scores}
    )
    return table, extra, {**page, "cities": cities}


def _figures(
    inputs: ReportInputs, variants: Sequence[str], n: int, table: pd.DataFrame, dataset: str
) -> dict[str, plt.Figure]:
    reports, prepared = inputs.reports, inputs.prepared
    written = {"per_class_iou": per_class_iou_figure(table, dataset)}
    for variant in variants:
        confusion = pd.read_csv(reports / "confusion" / f"{variant}.csv", index_col=0)
        written[f"confusion_{variant}"] = confusion_figure(
            confusion.to_numpy(),
            f"{variant}: confusion on real val (row-normalized)\ndataset {dataset}",
        )
    val = PreparedSplit.open(prepared / "real_val")
    labels = np.load(prepared / "real_val" / LABELS_NATIVE, mmap_mode="r")
    predictions = {v: np.load(reports / "predictions" / f"{v}.npy")[:n] for v in variants}
    k = min(n, *(len(p) for p in predictions.values()))
    written["predictions"] = prediction_grid(
        np.asarray(val.images[:k]),
        np.asarray(labels[:k]),
        {v: p[:k] for v, p in predictions.items()},
        f"Predictions on real val, dataset {dataset}",
    )
    if (inputs.translated / IMAGES).is_file():
        sim = PreparedSplit.open(prepared / "sim")
        translated = PreparedSplit.open(inputs.translated)
        real = PreparedSplit.open(prepared / "real_train")
        rows = [
            [sim.images[i], translated.images[i], real.images[i]]
            for i in range(min(n, len(sim.names)))
        ]
        written["samples"] = image_grid(
            rows,
            ["sim", "sim -> real (CycleGAN)", "real (unpaired)"],
            f"CycleGAN translation, dataset {dataset}",
        )
    curves_path = reports / "cyclegan_losses.csv"
    if curves_path.is_file():
        written["cyclegan_curves"] = curves_figure(
            pd.read_csv(curves_path), f"CycleGAN training losses, dataset {dataset}"
        )
    seg_curves = {}
    for variant in variants:
        path = inputs.models / variant / "curve.csv"
        if path.is_file():
            seg_curves[variant] = pd.read_csv(path).set_index("step")["loss"]
    if seg_curves:
        frame = pd.DataFrame(seg_curves).reset_index()
        written["segmentation_curves"] = curves_figure(
            frame, f"Segmentation training loss by variant, dataset {dataset}", "cross-entropy"
        )
    return written


def _source_runs(models: Path, variants: Sequence[str]) -> dict[str, str]:
    runs = {}
    for name, path in [
        ("cyclegan", models.parent / "cyclegan" / "run.json"),
        *((variant, models / variant / "run.json") for variant in variants),
    ]:
        if path.is_file() and read_json(path).get("run_id"):
            runs[f"run.{name}"] = read_json(path)["run_id"]
    return runs


TRANSLATORS = "translators"  # reports/translators/NAME/: translate.json, scores.json


def translation_scores(reports: Path) -> list[str]:
    """The page's translation-quality table: a row per translator with scores under
    reports/translators/ (CycleGAN first), each score as raw sim -> translated sim."""
    folder = reports / TRANSLATORS
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    names.sort(key=lambda name: name != "cyclegan")
    if not names:
        return []
    lines = [
        "Each translator's sim -> real output, as raw sim -> translated sim: the FCN-score (the "
        "oracle net's scores on the sim frames against their labels: content kept), the "
        "colour-histogram distance to the real frames and FID / KID against the real training "
        "frames (lower: closer to real).",
        "",
        "| translator | FCN-score mIoU | FCN-score pixel acc. | colour distance | FID "
        "| KID x 100 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    fid_missing = None
    for name in names:
        scores = _json_or_empty(folder / name / "scores.json")
        shift = _json_or_empty(folder / name / "translate.json")
        cells = [
            _before_after(scores, "miou", 100, 1),
            _before_after(scores, "pixel_accuracy", 100, 1),
            (
                f"{shift['hist_distance_before']:.3f} -> {shift['hist_distance_after']:.3f}"
                if "hist_distance_before" in shift
                else "-"
            ),
        ]
        distances = scores.get("fid_kid", {})
        if distances.get("computed"):
            cells += [
                _before_after(distances, "fid", 1, 1),
                _before_after(distances, "kid", 100, 2),
            ]
        else:
            fid_missing = distances.get("why", "not scored")
            cells += ["-", "-"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if fid_missing:
        lines += ["", f"FID / KID not computed: {fid_missing}."]
    return lines


def _json_or_empty(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _before_after(scores: dict[str, Any], key: str, scale: float, digits: int) -> str:
    if "raw_sim" not in scores or "translated" not in scores:
        return "-"
    before, after = scores["raw_sim"][key] * scale, scores["translated"][key] * scale
    return f"{before:.{digits}f} -> {after:.{digits}f}"


def update_readme(
    path: Path, table: pd.DataFrame, extra: Sequence[str], page: dict[str, Any]
) -> None:
    """Replace the README's results section (between the markers) with this run's summary;
    `page` holds comparison_markdown's keyword arguments."""
    markdown = comparison_markdown(table, extra=extra, **page)
    # Keep the summary and the differences; the per-class table lives in the report.
    summary = markdown.split("## Per-class IoU")[0].split("\n", 2)[2].strip()
    section = "\n".join(
        [
            README_START,
            "<!-- written by `python -m pipeline.cli.readme` from the demo data; do not edit -->",
            summary,
            "",
            *extra,
            "",
            "![per-class IoU](reports/figures/per_class_iou.png)",
            "",
            "![predictions](reports/figures/predictions.png)",
            README_END,
        ]
    )
    replace_marked_section(path, README_START, README_END, section)


def replace_marked_section(path: Path, start: str, end: str, section: str) -> None:
    """Rewrite `path` with the text from marker `start` through marker `end` replaced by
    `section` (which carries the markers again); a file without both is refused untouched."""
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path}: no {start} ... {end} section to update")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    write_text(path, pattern.sub(lambda _: section, text))
