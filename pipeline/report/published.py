"""Published results on the real datasets, shown under the comparison for context only: they
come from the full datasets at full resolution, not from the run the page reports.

Each table keeps its citation beside its numbers; `published_markdown` picks the one for the
source set (data.source.kind).
"""

from __future__ import annotations

import math

import pandas as pd

# GTA5 -> Cityscapes figures (CyCADA, Hoffman et al. 2018, FCN8s-VGG16, Cityscapes val).
PUBLISHED = pd.DataFrame(
    [
        ("source only", 54.0, 17.9),
        ("CycleGAN pixel-level (CyCADA pixel-only)", 82.8, 34.8),
        ("oracle (trained on Cityscapes)", 93.1, 60.3),
    ],
    columns=["training set", "pixel accuracy %", "mIoU %"],
)
GTA5_CITATION = (
    "CyCADA (Hoffman et al., ICML 2018), FCN8s-VGG16 on Cityscapes val. These are the "
    "published figures on the real datasets at full resolution, for context; the rows above "
    "come from this run's data."
)

# SYNTHIA (RAND-CITYSCAPES) -> Cityscapes val figures; None where the source gives no figure.
# mIoU16 / mIoU13: the 16- and 13-class protocols.
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
SYNTHIA_CITATION = (
    "Cityscapes val, full resolution, for context; the rows above come from this run's data. "
    "Sources: TLlib = Transfer-Learning-Library semantic segmentation benchmark (its own "
    "runs); DAFormer = comparison table of the DAFormer README (Hoyer et al., CVPR 2022); "
    'DAFormer paper = its SYNTHIA -> Cityscapes table. "-": the source gives no figure.'
)


def published_markdown(source_kind: str) -> list[str]:
    """The page's published-reference section for the source set: SYNTHIA's table for
    `synthia`, CyCADA's GTA5 one otherwise."""
    if source_kind == "synthia":
        return _synthia_markdown()
    lines = [
        "",
        "## Published reference (real GTA5 -> Cityscapes, not this run)",
        "",
        GTA5_CITATION,
        "",
        "| training set | pixel acc. | mIoU |",
        "|---|---:|---:|",
    ]
    for _, row in PUBLISHED.iterrows():
        lines.append(f"| {row.iloc[0]} | {row.iloc[1]:.1f} | {row.iloc[2]:.1f} |")
    return lines


def _synthia_markdown() -> list[str]:
    lines = [
        "",
        "## Published reference (real SYNTHIA -> Cityscapes, not this run)",
        "",
        SYNTHIA_CITATION,
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
