"""``sim2real-compare``: the segmentation variants' scores from MLflow, one table per dataset
(filters and columns: pipeline.compare)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pipeline.compare import finished_variant_runs, format_table, tables_by_dataset
from pipeline.config import PARAMS_FILE, load_params


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sim2real-compare",
        description="Compare segmentation variants from MLflow, one table per dataset.",
        epilog="Scores in %% on the target validation split; gap closed = (variant - "
        "source_only) / (oracle - source_only).",
    )
    parser.add_argument("--experiment", default=None, help="defaults to tracking.experiment")
    parser.add_argument("--dataset", help="dataset name, or the start of its digest")
    parser.add_argument("--commit", help="git commit (a prefix is enough)")
    parser.add_argument("--dvc-exp", help="DVC experiment name")
    parser.add_argument("--pipeline-run", help="pipeline_run tag of one dvc repro")
    args = parser.parse_args(argv)
    experiment = args.experiment
    if experiment is None:
        experiment = load_params().tracking.experiment
    runs = finished_variant_runs(
        experiment, args.dataset, args.commit, args.dvc_exp, args.pipeline_run
    )
    # Outside the repository (no params.yaml) the variants keep only the built-in order.
    declared = list(load_params().train_seg.variants) if Path(PARAMS_FILE).is_file() else []
    tables = tables_by_dataset(runs, declared)
    if not tables:
        print(f"no finished train_seg runs in MLflow experiment {experiment!r} match")
        return
    for label, table in tables.items():
        print(f"dataset {label}, experiment {experiment}: scores in % on real val")
        print(format_table(table))
        print()


if __name__ == "__main__":
    main()
