"""Compare segmentation variants from MLflow: one table per dataset, variants in chain order.

The `sim2real-compare` command (pipeline.cli.compare) takes, for each dataset, the newest
finished train_seg run of every variant among the runs that match the filters, and prints the
scores in % with the share of the source-only -> oracle gap each variant closes:

    --dataset NAME_OR_DIGEST   a dataset's name ("demo") or the start of its digest
    --experiment NAME          the MLflow experiment (default: tracking.experiment)
    --commit SHA               runs of this git commit (a prefix is enough)
    --dvc-exp NAME             runs of this DVC experiment (`dvc exp show` names them)
    --pipeline-run ID          runs started by one `dvc repro` / `dvc exp run`

Runs of different datasets are never mixed in one table: a variant trained on another dataset
is another row of another table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from pipeline.report.scores import ORACLE, SOURCE, add_gap_closure
from pipeline.tracking.runs import search_runs

SCORES = {
    "pixel_accuracy": "pixel acc.",
    "mean_class_accuracy": "class acc.",
    "miou": "mIoU",
    "fwiou": "fwIoU",
}
GAPS = {"gap_closed_miou": "gap closed (mIoU)", "gap_closed_pixel_accuracy": "gap closed (pix.)"}
UNKNOWN_DATASET = "(no dataset tag)"


def _tag(runs: pd.DataFrame, name: str) -> pd.Series:
    column = f"tags.{name}"
    return runs[column].fillna("") if column in runs else pd.Series("", index=runs.index)


def finished_variant_runs(
    experiment: str,
    dataset: str | None = None,
    commit: str | None = None,
    dvc_exp: str | None = None,
    pipeline_run: str | None = None,
) -> pd.DataFrame:
    """Finished train_seg runs of `experiment` that match every filter given, newest first."""
    runs = search_runs(experiment, "tags.stage = 'train_seg' and attributes.status = 'FINISHED'")
    if runs.empty:
        return runs
    keep = pd.Series(True, index=runs.index)
    if dataset:
        keep &= (_tag(runs, "dataset") == dataset) | _tag(runs, "dataset_digest").str.startswith(
            dataset
        )
    if commit:
        keep &= _tag(runs, "git_commit").str.startswith(commit)
    if dvc_exp:
        keep &= _tag(runs, "dvc_experiment") == dvc_exp
    if pipeline_run:
        keep &= _tag(runs, "pipeline_run") == pipeline_run
    return runs[keep].sort_values("start_time", ascending=False)


def chain_order(variants: Sequence[str], declared: Sequence[str] = ()) -> list[str]:
    """Variants in the order params.yaml declares them; others after, source-only first and
    the oracle (the bound) last."""
    rank = {name: i for i, name in enumerate(declared)}

    def key(name: str) -> tuple:
        return (name == ORACLE, name != SOURCE, rank.get(name, len(rank)), name)

    return sorted(variants, key=key)


def tables_by_dataset(runs: pd.DataFrame, declared: Sequence[str] = ()) -> dict[str, pd.DataFrame]:
    """{dataset label: one row per variant}: the newest run of each variant, scores as
    fractions, the gap-closed columns, the commit and run id."""
    tables: dict[str, pd.DataFrame] = {}
    if runs.empty:
        return tables
    names, digests = _tag(runs, "dataset"), _tag(runs, "dataset_digest")
    labels = [f"{n} ({d})" if n else UNKNOWN_DATASET for n, d in zip(names, digests)]
    runs = runs.assign(dataset_label=labels, variant=_tag(runs, "variant"))
    for label, group in runs.groupby("dataset_label", sort=False):
        newest = group.drop_duplicates("variant").set_index("variant")
        table = pd.DataFrame(index=pd.Index(chain_order(list(newest.index), declared)))
        for key in SCORES:
            column = f"metrics.val_{key}"
            table[key] = newest.get(column, math.nan)
        table = add_gap_closure(table)
        table["commit"] = _tag(newest, "git_commit").str[:8]
        table["run"] = newest["run_id"]
        tables[label] = table
    return tables


def format_table(table: pd.DataFrame) -> str:
    """Scores in %, one decimal; gap closed in whole %."""
    shown = pd.DataFrame(index=table.index)
    for key, title in SCORES.items():
        shown[title] = [_percent(v, 1) for v in table[key]]
    for key, title in GAPS.items():
        shown[title] = [_percent(v, 0) + ("%" if math.isfinite(v) else "") for v in table[key]]
    shown["commit"] = table["commit"]
    shown["run"] = table["run"]
    shown.index.name = "variant"
    return shown.reset_index().to_string(index=False)


def _percent(value: float, digits: int) -> str:
    return f"{100 * value:.{digits}f}" if math.isfinite(value) else "-"
