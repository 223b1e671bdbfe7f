"""``python -m pipeline.cli.ablation``: queue the CycleGAN ablations or seed reruns as DVC
experiments, and write the pages that compare them (see pipeline.ablation)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pipeline import ablation


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=ablation.__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    queue = sub.add_parser("queue", help="queue the experiments (then: dvc queue start -j 1)")
    queue.add_argument("--seeds", action="store_true", help="the seed reruns, not the ablations")
    report = sub.add_parser("report", help="write the ablation page from finished experiments")
    report.add_argument("--out", type=Path, default=Path("reports/ablation.md"))
    seeds = sub.add_parser("seeds", help="write the seed spread from finished seed reruns")
    seeds.add_argument("--out", type=Path, default=Path("reports/seeds.json"))
    args = parser.parse_args(argv)
    if args.command == "queue":
        ablation.queue(ablation.SEEDS if args.seeds else ablation.ABLATIONS)
        return
    if args.command == "seeds":
        ablation.write_seed_spread(args.out)
    else:
        ablation.write_ablation_page(args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
