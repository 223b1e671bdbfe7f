"""The evaluate stages' scores as tables: one row per comparison row, read from
`reports/metrics/<variant>.json` (and the seed spread, the data report, the translators' scores).

No rendering here: `tables` turns these frames into Markdown, `figures` into PNGs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data.labels import CLASS_NAMES, PROTOCOL_CLASSES
from pipeline.io import read_json

SOURCE, ORACLE = "source_only", "oracle"


SUMMARY = ("pixel_accuracy", "mean_class_accuracy", "miou", "fwiou")
PROTOCOLS = tuple(f"miou{count}" for count in PROTOCOL_CLASSES)  # miou19, miou16, miou13


TRANSLATORS = "translators"  # reports/translators/NAME/: translate.json, scores.json


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


def load_translators(reports: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each translator with files under reports/translators/ (CycleGAN first, then by name):
    its evaluate_translation scores and its translate stage's colour statistics, each empty
    when the file is absent."""
    folder = reports / TRANSLATORS
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    names.sort(key=lambda name: name != "cyclegan")
    return {
        name: (
            _json_or_empty(folder / name / "scores.json"),
            _json_or_empty(folder / name / "translate.json"),
        )
        for name in names
    }


def _json_or_empty(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}
