"""The comparison's tables as Markdown lines: pure functions of the `scores` frames, shared by
the report page and the README's results block (`pages`), so both print the same table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from pipeline.data.labels import CLASS_NAMES, PROTOCOL_CLASSES
from pipeline.report.rows import RowNote


def _pct(value: float, digits: int = 1) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.{digits}f}"


def other_protocols(classes: int, source_missing: Sequence[str]) -> list[str]:
    """The protocol means that stand beside the table's mIoU: every other one when the table
    averages fewer than 19 classes or the source set labels no pixel of some class."""
    return [
        f"miou{count}"
        for count in PROTOCOL_CLASSES
        if count != classes and (classes != 19 or source_missing)
    ]


def intro_lines(
    dataset: str, inference: str, classes: int, source_missing: Sequence[str]
) -> list[str]:
    """What the scores are: the dataset, the evaluation protocol and, when other protocol
    means stand beside the mIoU, which classes each leaves out."""
    lines = [
        f"Dataset **{dataset}**. Scores in % on the target validation split, at label "
        f"resolution (the net sees the {inference} at the working size; its logits are "
        "upsampled to the label's size). *Gap closed* is (variant - source_only) / "
        "(oracle - source_only).",
    ]
    if other_protocols(classes, source_missing):
        lines += [
            "",
            _protocol_note(classes, source_missing),
        ]
    return lines


def summary_table_lines(
    table: pd.DataFrame,
    protocols: Sequence[str],
    spread: pd.DataFrame | None,
    notes: Mapping[str, RowNote],
) -> list[str]:
    """The main table, a row per comparison row (`protocols`: the other protocol means beside
    its mIoU; `spread`: a seed-spread column), then what sets the noted rows apart."""
    protocol_header = "".join(f" {_protocol_title(key)} |" for key in protocols)
    spread_header = " seed spread (mIoU) |" if spread is not None else ""
    lines = [
        "",
        f"| variant | pixel acc. | class acc. | mIoU |{protocol_header} fwIoU | gap closed (mIoU) "
        f"| gap closed (pixel acc.) |{spread_header}",
        "|---|---:|---:|---:|"
        + "---:|" * len(protocols)
        + "---:|---:|---:|"
        + ("---:|" if spread is not None else ""),
    ]
    for variant, row in table.iterrows():
        label = f"{variant} ({notes[variant].mark})" if variant in notes else variant
        protocol_cells = "".join(f" {_pct(row[key])} |" for key in protocols)
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
    return lines


# Which differences the page spells out: each adaptation against what it builds on.
COMPARISONS = (
    ("fda", "source_only"),
    ("cyclegan", "source_only"),
    ("source_st", "source_only"),
    ("cyclegan_st", "cyclegan"),
    ("cyclegan_st", "source_st"),
)


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


def per_class_markdown(table: pd.DataFrame) -> list[str]:
    """The per-class IoU table: a row per class, a column per comparison row."""
    lines = ["", "## Per-class IoU (%)", ""]
    lines.append("| class | " + " | ".join(table.index) + " |")
    lines.append("|---|" + "---:|" * len(table.index))
    for name in CLASS_NAMES:
        values = [_pct(table.loc[v, f"iou_{name}"]) for v in table.index]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return lines


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
    """Lines of the per-city mIoU table (`scores.load_city_metrics`), in %, a column per variant."""
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


def translation_markdown(
    translators: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
) -> list[str]:
    """The translation-quality table of `scores.load_translators`: a row per translator, each
    score as raw sim -> translated sim; no lines without translators."""
    if not translators:
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
    for name, (scores, shift) in translators.items():
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


def _before_after(scores: dict[str, Any], key: str, scale: float, digits: int) -> str:
    if "raw_sim" not in scores or "translated" not in scores:
        return "-"
    before, after = scores["raw_sim"][key] * scale, scores["translated"][key] * scale
    return f"{before:.{digits}f} -> {after:.{digits}f}"
