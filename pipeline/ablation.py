"""CycleGAN ablations and seed reruns as DVC experiments, and the pages that compare them.

`python -m pipeline.cli.ablation queue` queues one DVC experiment per ablation of the paper's
Table 4 (GAN alone, no identity loss, U-Net generator, vanilla GAN loss); `dvc queue start` runs
them; then `python -m pipeline.cli.ablation report` reads every experiment's metrics back with
`dvc.api.exp_show` and writes `reports/ablation.md`.

`python -m pipeline.cli.ablation queue --seeds` queues the whole chain again under other seeds
(CycleGAN and segmentation); `python -m pipeline.cli.ablation seeds` then writes
`reports/seeds.json`: every variant's scores per seed and their spread (max - min), which the
report stage shows beside each variant and uses to mark differences smaller than it.

The queue runs each experiment in a fresh copy of the repository, where the uncached outputs
(the persisted checkpoint folders) are absent, so DVC retrains every segmentation variant of
train_seg.variants, not only `cyclegan`: about as long as the demo per experiment. The other
variants come out identical (same data, same seeds), which the page's source_only column shows.
Running `dvc exp run -S ...` one at a time in the workspace instead reruns only the CycleGAN branch.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import load_params
from pipeline.data.identity import read_identity
from pipeline.io import write_json, write_text

# name -> params overrides (`dvc exp run -S key=value`); the baseline is params.yaml as committed.
ABLATIONS: dict[str, tuple[str, ...]] = {
    # The identity weight is relative to lambda_cycle, so this also turns identity off.
    "gan-only": ("cyclegan.lambda_cycle=0",),
    "no-identity": ("cyclegan.lambda_identity=0",),
    "unet-generator": ("cyclegan.netG=unet_128", "cyclegan.crop=[128,128]"),
    "vanilla-gan": ("cyclegan.gan_mode=vanilla",),
    # CyCADA's pixel level: plain CycleGAN plus semantic consistency under the source_only net
    # (weight 1, as CyCADA's code trains it); it becomes the default only if it beats the seed
    # spread.
    "cycada": ("cyclegan.lambda_semantic=1.0",),
}

# The same chain under other seeds; the committed run (seed 0) is the baseline row.
SEEDS: dict[str, tuple[str, ...]] = {
    f"seed-{seed}": (f"cyclegan.seed={seed}", f"train_seg.seed={seed}") for seed in (1, 2)
}
SEED_SCORES = ("miou", "pixel_accuracy")
RECENT_COMMITS = 20

# (column label, metrics file, key, shown in %). The histogram distance shows whether the output
# *looks* real (GAN alone gets there too); the FCN-score whether the content survived the trip;
# source_only never depends on CycleGAN, so its column must equal the baseline's in every row.
COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    (
        "colour-histogram distance to real (lower: closer)",
        "reports/translators/cyclegan/translate.json",
        "hist_distance_after",
        False,
    ),
    (
        "FCN-score mIoU (translated sim)",
        "reports/translators/cyclegan/scores.json",
        "translated.miou",
        True,
    ),
    (
        "FCN-score pixel acc. (translated sim)",
        "reports/translators/cyclegan/scores.json",
        "translated.pixel_accuracy",
        True,
    ),
    ("cyclegan variant mIoU", "metrics/cyclegan.json", "miou", True),
    ("cyclegan variant pixel acc.", "metrics/cyclegan.json", "pixel_accuracy", True),
    ("source_only mIoU (control)", "metrics/source_only.json", "miou", True),
)


def queue_commands(family: Mapping[str, Sequence[str]] = ABLATIONS) -> list[list[str]]:
    return [
        [sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", name]
        + [arg for override in overrides for arg in ("-S", override)]
        for name, overrides in family.items()
    ]


def _rows_by_name(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict:
    """exp_show rows of the baseline (the workspace's commit) and of the experiments named."""
    by_name: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        if row.get("typ") == "baseline" or row.get("Experiment") in (None, "", "workspace"):
            by_name.setdefault("baseline", row)
        if row.get("Experiment") in names:
            by_name.setdefault(row["Experiment"], row)  # rows run newest commit first
    return by_name


def seed_spread(rows: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> dict[str, Any]:
    """Each variant's scores in the baseline and every seed run found, and their spread."""
    by_name = _rows_by_name(rows, list(SEEDS))
    runs = [name for name in ("baseline", *SEEDS) if name in by_name]
    result: dict[str, Any] = {"runs": runs, "variants": {}}
    for variant in variants:
        path = f"metrics/{variant}.json"
        entry: dict[str, Any] = {}
        for key in SEED_SCORES:
            values = [_value(by_name[run], path, key) for run in runs]
            values = [v for v in values if not math.isnan(v)]
            entry[key] = values
            entry[f"{key}_spread"] = max(values) - min(values) if len(values) > 1 else None
        result["variants"][variant] = entry
    return result


def _value(row: Mapping[str, Any], path: str, key: str) -> float:
    """A metric from an exp_show row; DVC names columns `key` or `path:key` when keys clash."""
    for column in (f"{path}:{key}", key):
        value = row.get(column)
        if value is not None:
            return float(value)
    return math.nan


def _committed_value(rev: str, path: str, key: str) -> float:
    """`key` (dotted: translated.miou) of the JSON file `path` as experiment commit `rev` holds
    it ("workspace": the file on disk). The translation scores are stage outputs that git keeps,
    not DVC metrics, so exp_show has no column for them."""
    if rev == "workspace":
        text = Path(path).read_text() if Path(path).is_file() else None
    else:
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
        text = shown.stdout if shown.returncode == 0 else None
    if text is None:
        return math.nan
    value: Any = json.loads(text)
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return math.nan
        value = value[part]
    return math.nan if value is None else float(value)


def ablation_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Baseline first, then each named ablation found in `rows` (exp_show output)."""
    by_name = _rows_by_name(rows, list(ABLATIONS))
    lines = [
        "# CycleGAN ablations on the demo data",
        "",
        "Each row is a DVC experiment that changes only the CycleGAN settings shown; everything "
        "downstream (translation, the `cyclegan` segmentation variant, its evaluation, the "
        "FCN-score of the oracle net on translated sim) was rerun. Scores in %; the histogram "
        "distance is the L1 distance between colour histograms (0 to 2).",
        "",
        "How to read it: the histogram distance says whether the translated frames *look* real; "
        "the FCN-score (the oracle net on translated sim, against sim labels) whether their "
        "content survived; the `cyclegan` variant columns what that does downstream. "
        "`source_only` does not depend on CycleGAN: its column equal in every row shows the "
        "reruns are deterministic. One seed per row: reports/seeds.json gives the baseline's "
        "seed-to-seed spread.",
        "",
        "Commands: `python -m pipeline.cli.ablation queue && dvc queue start -j 1`, then "
        "`python -m pipeline.cli.ablation report`.",
        "",
        "| experiment | settings | " + " | ".join(column[0] for column in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for name in ("baseline", *ABLATIONS):
        row = by_name.get(name)
        if row is None:
            continue
        settings = ", ".join(ABLATIONS.get(name, ("params.yaml as committed",)))
        cells = []
        for _, path, key, percent in COLUMNS:
            value = _value(row, path, key)
            if math.isnan(value) and "rev" in row:
                value = _committed_value(row["rev"], path, key)
            if math.isnan(value):
                cells.append("n/a")
            else:
                cells.append(f"{100 * value:.1f}" if percent else f"{value:.3f}")
        lines.append(f"| {name} | {settings} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def queue(family: Mapping[str, Sequence[str]]) -> None:
    """Queue one DVC experiment per entry of `family` (ABLATIONS or SEEDS)."""
    for command in queue_commands(family):
        print(" ".join(command))
        subprocess.run(command, check=True)


def experiment_rows() -> list[dict[str, Any]]:
    """`dvc.api.exp_show` rows of the workspace's recent commits and their experiments."""
    import dvc.api

    # Experiments stay attached to the commit they were queued on; commits that only add
    # reports (the usual next step) must not hide them, so look back over recent commits.
    return dvc.api.exp_show(num=RECENT_COMMITS, force=True)


def write_ablation_page(out: Path) -> None:
    """The ablation page of the finished experiments, at `out`."""
    write_text(out, ablation_markdown(experiment_rows()))


def write_seed_spread(out: Path) -> None:
    """The seed spread of the finished seed reruns, for the prepared dataset, at `out`."""
    spread = seed_spread(experiment_rows(), list(load_params().train_seg.variants))
    # The spread belongs to one dataset: the report uses it only for that one.
    spread["dataset"] = read_identity(Path("data/prepared")).label
    write_json(out, spread)
