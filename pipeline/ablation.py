"""CycleGAN ablations as DVC experiments, and the page that compares them.

`python -m pipeline.ablation queue` queues one DVC experiment per ablation of the paper's Table 4
(GAN alone, no identity loss, U-Net generator, vanilla GAN loss); `dvc queue start` runs them; then
`python -m pipeline.ablation report` reads every experiment's metrics back with `dvc.api.exp_show`
and writes `reports/ablation.md`. Each experiment reruns only the CycleGAN branch of the chain:
DVC keeps the other variants' outputs.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.io import write_text

# name -> params overrides (`dvc exp run -S key=value`); the baseline is params.yaml as committed.
ABLATIONS: dict[str, tuple[str, ...]] = {
    # The identity weight is relative to lambda_cycle, so this also turns identity off.
    "gan-only": ("cyclegan.lambda_cycle=0",),
    "no-identity": ("cyclegan.lambda_identity=0",),
    "unet-generator": ("cyclegan.netG=unet_128", "cyclegan.crop=[128,128]"),
    "vanilla-gan": ("cyclegan.gan_mode=vanilla",),
}

# (column label, metrics file, key); values are fractions, shown in %.
COLUMNS = (
    ("FCN-score mIoU (translated sim)", "reports/fcn_score.json", "translated.miou"),
    (
        "FCN-score pixel acc. (translated sim)",
        "reports/fcn_score.json",
        "translated.pixel_accuracy",
    ),
    ("cyclegan variant mIoU", "reports/metrics/cyclegan.json", "miou"),
    ("cyclegan variant pixel acc.", "reports/metrics/cyclegan.json", "pixel_accuracy"),
)


def queue_commands() -> list[list[str]]:
    return [
        [sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", name]
        + [arg for override in overrides for arg in ("-S", override)]
        for name, overrides in ABLATIONS.items()
    ]


def _value(row: Mapping[str, Any], path: str, key: str) -> float:
    """A metric from an exp_show row; DVC names columns `key` or `path:key` when keys clash."""
    for column in (f"{path}:{key}", key):
        value = row.get(column)
        if value is not None:
            return float(value)
    return math.nan


def ablation_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Baseline first, then each named ablation found in `rows` (exp_show output)."""
    by_name = {}
    for row in rows:
        if row.get("typ") == "baseline" or row.get("Experiment") in (None, "", "workspace"):
            by_name.setdefault("baseline", row)
        name = row.get("Experiment")
        if name in ABLATIONS:
            by_name[name] = row
    lines = [
        "# CycleGAN ablations on the demo data",
        "",
        "Each row is a DVC experiment that changes only the CycleGAN settings shown; everything "
        "downstream (translation, the `cyclegan` segmentation variant, its evaluation, the "
        "FCN-score of the oracle net on translated sim) was rerun. Scores in %.",
        "",
        "| experiment | settings | " + " | ".join(label for label, _, _ in COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for name in ("baseline", *ABLATIONS):
        row = by_name.get(name)
        if row is None:
            continue
        settings = ", ".join(ABLATIONS.get(name, ("params.yaml as committed",)))
        cells = []
        for _, path, key in COLUMNS:
            value = _value(row, path, key)
            cells.append("n/a" if math.isnan(value) else f"{100 * value:.1f}")
        lines.append(f"| {name} | {settings} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("queue", help="queue the ablation experiments (then: dvc queue start)")
    report = sub.add_parser("report", help="write the ablation page from finished experiments")
    report.add_argument("--out", type=Path, default=Path("reports/ablation.md"))
    args = parser.parse_args(argv)
    if args.command == "queue":
        for command in queue_commands():
            print(" ".join(command))
            subprocess.run(command, check=True)
        return
    import dvc.api

    rows = dvc.api.exp_show(force=True)
    write_text(args.out, ablation_markdown(rows))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
