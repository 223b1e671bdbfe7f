"""dvc stage `report`: comparison table, figures and MLflow report run across all variants.

Everything it writes names the dataset it shows (the prepare stage's dataset identity). With
--readme, README's results section is rewritten only when that dataset is the demo data (both
roots inside --demo-data): README shows the demo's results, never another dataset's.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import report
from pipeline.config import load_params
from pipeline.data.identity import read_identity
from pipeline.data.prepare import PreparedSplit
from pipeline.io import atomic_path, read_json, write_json, write_text
from pipeline.tracking import check_tracking, open_tracker

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--translated", type=Path, default=Path("data/translated"))
    parser.add_argument("--models", type=Path, default=Path("models/seg"))
    parser.add_argument(
        "--summary", type=Path, default=Path("metrics"), help="per-variant summary scores (JSON)"
    )
    parser.add_argument("--readme", type=Path, default=None, help="update its results section")
    parser.add_argument(
        "--demo-data",
        type=Path,
        default=Path("data/demo"),
        help="the demo_data stage's folder: --readme is updated only for data inside it",
    )
    args = parser.parse_args(argv)
    params = load_params()
    variants = list(params.train_seg.variants)
    reports, figures = args.reports, args.reports / "figures"
    identity = read_identity(args.prepared)
    dataset = identity.label

    table = report.add_gap_closure(report.load_metrics(reports / "metrics", variants))
    extra = _translation_scores(reports)
    write_text(reports / "comparison.md", report.comparison_markdown(table, dataset, extra))
    with atomic_path(reports / "comparison.csv") as tmp:
        table.to_csv(tmp, float_format="%.6f")
    # Small per-variant files: `dvc metrics show` lists them as one table, one row each, and
    # `dvc plots` draws per-class IoU with the class names on the categorical axis.
    for variant in variants:
        write_json(args.summary / f"{variant}.json", report.variant_summary(table, variant))
        with atomic_path(reports / "per_class_iou" / f"{variant}.csv") as tmp:
            report.per_class_iou_frame(table, variant).to_csv(tmp, index=False)

    written = {"per_class_iou": report.per_class_iou_figure(table, dataset)}
    for variant in variants:
        confusion = pd.read_csv(reports / "confusion" / f"{variant}.csv", index_col=0)
        written[f"confusion_{variant}"] = report.confusion_figure(
            confusion.to_numpy(),
            f"{variant}: confusion on real val (row-normalized)\ndataset {dataset}",
        )
    n = params.report.n_samples
    val = PreparedSplit.open(args.prepared / "real_val")
    labels = np.load(args.prepared / "real_val" / "labels_native.npy", mmap_mode="r")
    predictions = {v: np.load(reports / "predictions" / f"{v}.npy")[:n] for v in variants}
    k = min(n, *(len(p) for p in predictions.values()))
    written["predictions"] = report.prediction_grid(
        np.asarray(val.images[:k]),
        np.asarray(labels[:k]),
        {v: p[:k] for v, p in predictions.items()},
        f"Predictions on real val, dataset {dataset}",
    )
    if (args.translated / "images.npy").is_file():
        sim = PreparedSplit.open(args.prepared / "sim")
        translated = PreparedSplit.open(args.translated)
        real = PreparedSplit.open(args.prepared / "real_train")
        rows = [
            [sim.images[i], translated.images[i], real.images[i]]
            for i in range(min(n, len(sim.names)))
        ]
        written["samples"] = report.image_grid(
            rows,
            ["sim", "sim -> real (CycleGAN)", "real (unpaired)"],
            f"CycleGAN translation, dataset {dataset}",
        )
    curves_path = reports / "cyclegan_losses.csv"
    if curves_path.is_file():
        written["cyclegan_curves"] = report.curves_figure(
            pd.read_csv(curves_path), f"CycleGAN training losses, dataset {dataset}"
        )
    seg_curves = {}
    for variant in variants:
        path = args.models / variant / "curve.csv"
        if path.is_file():
            curve = pd.read_csv(path)
            seg_curves[variant] = curve.set_index("step")["loss"]
    if seg_curves:
        frame = pd.DataFrame(seg_curves).reset_index()
        written["segmentation_curves"] = report.curves_figure(
            frame, f"Segmentation training loss by variant, dataset {dataset}", "cross-entropy"
        )

    tracker = None
    if params.tracking.enabled:
        check_tracking()
        tracker = open_tracker(True, params.tracking.experiment, "report", tags={"stage": "report"})
        tracker.log_data({"evaluation": [args.prepared / "real_val"]})
        # Which runs this report summarises (the stages DVC did not rerun keep their old runs).
        tracker.log_params(_source_runs(args.models, variants))
    for name, figure in written.items():
        if tracker is not None:
            tracker.log_figure(figure, f"figures/{name}")
        report.save_figure(figure, figures / f"{name}.png")
    if tracker is not None:
        tracker.log_artifact(reports / "comparison.md")
        tracker.log_artifact(reports / "comparison.csv")
        tracker.log_table(table.reset_index(), "comparison")
        tracker.log_metrics(
            {
                f"{key}_{variant}": table.loc[variant, key]
                for variant in variants
                for key in ("miou", "pixel_accuracy", "gap_closed_miou")
            }
        )
        tracker.finish()
    if args.readme is not None:
        if identity.is_under(args.demo_data):
            update_readme(args.readme, table, extra, dataset)
        else:
            print(
                f"{args.readme} left as it is: its results section shows the demo data, and this "
                f"run's data is {dataset} ({identity.source['root']}, {identity.target['root']})"
            )
    print(report.comparison_markdown(table, dataset, extra))


def _source_runs(models: Path, variants: list[str]) -> dict[str, str]:
    runs = {}
    for name, path in [
        ("cyclegan", models.parent / "cyclegan" / "run.json"),
        *((variant, models / variant / "run.json") for variant in variants),
    ]:
        if path.is_file() and read_json(path).get("run_id"):
            runs[f"run.{name}"] = read_json(path)["run_id"]
    return runs


def _translation_scores(reports: Path) -> dict[str, str]:
    extra = {}
    if (reports / "fcn_score.json").is_file():
        fcn = read_json(reports / "fcn_score.json")
        extra["FCN-score (oracle net on sim images vs sim labels), mIoU raw sim -> translated"] = (
            f"{100 * fcn['raw_sim']['miou']:.1f} -> {100 * fcn['translated']['miou']:.1f}"
        )
        extra["FCN-score pixel accuracy raw sim -> translated"] = (
            f"{100 * fcn['raw_sim']['pixel_accuracy']:.1f} -> "
            f"{100 * fcn['translated']['pixel_accuracy']:.1f}"
        )
    if (reports / "translate.json").is_file():
        shift = read_json(reports / "translate.json")
        if "hist_distance_before" in shift:
            extra["colour-histogram distance to real, before -> after translation"] = (
                f"{shift['hist_distance_before']:.3f} -> {shift['hist_distance_after']:.3f}"
            )
    return extra


def update_readme(path: Path, table: pd.DataFrame, extra: dict[str, str], dataset: str) -> None:
    """Replace the README's results section (between the markers) with this run's table."""
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{path}: no {README_START} ... {README_END} section to update")
    markdown = report.comparison_markdown(table, dataset, extra)
    # Keep the summary table and translation lines; the per-class table lives in the report.
    summary = markdown.split("## Per-class IoU")[0].split("\n", 2)[2].strip()
    section = "\n".join(
        [
            README_START,
            "<!-- written by `dvc repro` (stage report) on the demo data only; do not edit -->",
            summary,
            "",
            *(f"- {k}: {v}" for k, v in extra.items()),
            "",
            "![per-class IoU](reports/figures/per_class_iou.png)",
            "",
            "![predictions](reports/figures/predictions.png)",
            README_END,
        ]
    )
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    write_text(path, pattern.sub(lambda _: section, text))


if __name__ == "__main__":
    main()
