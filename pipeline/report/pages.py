"""The pages that embed the comparison's tables: the report stage's reports/comparison.md and the
body of the README's results block, each assembled from the same `tables` functions."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.report import tables
from pipeline.report.published import published_markdown
from pipeline.report.rows import RowNote

TITLE = "# Segmentation on real validation images, by training set"
# The figures the README's results block shows, from the report stage's reports/figures/.
RESULTS_FIGURES = (("per-class IoU", "per_class_iou.png"), ("predictions", "predictions.png"))
REPORT_ONLY = ("source_kind", "cities")  # comparison_markdown arguments the block has no use for


def overview_lines(
    table: pd.DataFrame,
    dataset: str,
    classes: int = 19,
    source_missing: Sequence[str] = (),
    spread: pd.DataFrame | None = None,
    inference: str = "whole frame",
    notes: Mapping[str, RowNote] | None = None,
) -> list[str]:
    """What both pages open with: what the scores are, the main table and the differences
    between variants."""
    protocols = tables.other_protocols(classes, source_missing)
    return [
        *tables.intro_lines(dataset, inference, classes, source_missing),
        *tables.summary_table_lines(table, protocols, spread, notes or {}),
        *tables.differences_markdown(table, spread),
    ]


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
    table, per-city table, translation quality (`extra`: `tables.translation_markdown` lines),
    published rows. `inference`: how the net saw the working-size val frames
    (`scores.load_inference`); `notes`: what sets a row apart (`rows.row_notes`), marked in its
    cell and said under the table.

    `classes` is the protocol the table's mIoU averages (evaluate.classes). When it is not 19 or
    the source set labels no pixel of some class (`source_missing`), the other protocols' means
    stand beside it. `cities` is a `scores.load_city_metrics` table; `source_kind`
    (data.source.kind) picks the published reference rows; `spread` (`scores.load_seed_spread`)
    adds each variant's seed spread and marks the differences smaller than it.
    """
    lines = [
        TITLE,
        "",
        *overview_lines(table, dataset, classes, source_missing, spread, inference, notes),
        *tables.per_class_markdown(table),
    ]
    if cities is not None and len(cities):
        lines += tables.city_markdown(cities, classes)
    if extra:
        lines += ["", "## Translation quality", "", *extra]
    lines += published_markdown(source_kind)
    return "\n".join(lines) + "\n"


def results_block(
    table: pd.DataFrame,
    extra: Sequence[str],
    page: Mapping[str, Any],
    figures: Path,
    page_folder: Path,
) -> str:
    """The README results block's body: the comparison page's overview, the translation
    quality and the figures in `figures`, linked relative to `page_folder` (the folder of the
    page the block sits in). `page` holds comparison_markdown's keyword arguments
    (`write.summary_of`); the per-class, per-city and published tables stay in the report."""
    overview = {key: value for key, value in page.items() if key not in REPORT_ONLY}
    links = []
    for title, name in RESULTS_FIGURES:
        links += ["", f"![{title}]({os.path.relpath(figures / name, page_folder)})"]
    return "\n".join([*overview_lines(table, **overview), "", *extra, *links])
