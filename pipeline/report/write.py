"""The report stage's outputs: the comparison page and table, the per-variant summaries and
per-class IoU files, the figures, and the report's MLflow run.

Inputs are the files the evaluate stages write (`reports/metrics/<variant>.json`, confusion CSVs,
saved predictions), the prepared val split and the training curves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.identity import read_identity
from pipeline.data.split import IMAGES, LABELS_NATIVE, PreparedSplit
from pipeline.io import atomic_path, read_json, write_json, write_text
from pipeline.report.figures import (
    confusion_figure,
    curves_figure,
    image_grid,
    per_class_iou_figure,
    plt,
    prediction_grid,
    save_figure,
)
from pipeline.report.pages import comparison_markdown
from pipeline.report.rows import RowNote
from pipeline.report.scores import (
    add_gap_closure,
    load_city_metrics,
    load_inference,
    load_metrics,
    load_seed_spread,
    load_translators,
    per_class_iou_frame,
    source_missing_classes,
    variant_summary,
)
from pipeline.report.tables import translation_markdown
from pipeline.tracking.base import Tracker


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """Where the report stage reads and writes; every path as dvc.yaml declares it."""

    reports: Path  # metrics/, confusion/, predictions/, the stage scores; comparison.* go here
    prepared: Path
    translated: Path
    models: Path  # models/seg: each variant's curve.csv and run.json
    summary: Path  # per-variant summary scores for `dvc metrics show`


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
    arguments, so the README's results block (`pages.results_block`) can repeat the page.
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


def translation_scores(reports: Path) -> list[str]:
    """The page's translation-quality table: a row per translator with scores under
    reports/translators/ (CycleGAN first), each score as raw sim -> translated sim."""
    return translation_markdown(load_translators(reports))
