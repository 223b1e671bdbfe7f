"""Print the latest finished run of every segmentation variant from MLflow, side by side.

`python -m pipeline.compare [--experiment sim2real]`, or the `sim2real-compare` console script.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pandas as pd

from pipeline.tracking import search_runs

COLUMNS = ("val_pixel_accuracy", "val_mean_class_accuracy", "val_miou", "val_fwiou")


def latest_runs(experiment: str) -> pd.DataFrame:
    """One row per variant: its newest finished train_seg run's validation scores and run id."""
    runs = search_runs(experiment, "tags.stage = 'train_seg' and attributes.status = 'FINISHED'")
    header = ["variant", *COLUMNS, "run_id"]
    if runs.empty or "tags.variant" not in runs:
        return pd.DataFrame(columns=header)
    runs = runs.sort_values("start_time", ascending=False).drop_duplicates("tags.variant")
    table = pd.DataFrame(
        {
            "variant": runs["tags.variant"],
            **{
                name: runs[f"metrics.{name}"] if f"metrics.{name}" in runs else float("nan")
                for name in COLUMNS
            },
            "run_id": runs["run_id"],
        }
    )
    return table.sort_values("variant").reset_index(drop=True)[header]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--experiment", default=None, help="defaults to tracking.experiment")
    args = parser.parse_args(argv)
    experiment = args.experiment
    if experiment is None:
        from pipeline.config import load_params

        experiment = load_params().tracking.experiment
    table = latest_runs(experiment)
    if table.empty:
        print(f"no finished train_seg runs in MLflow experiment {experiment!r}")
        return
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"))


if __name__ == "__main__":
    main()
