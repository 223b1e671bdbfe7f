"""``python -m pipeline.cli.readme``: copy the demo's comparison into README's results section.

README is no output of the pipeline (DVC would own it otherwise); after a `dvc repro` on the demo
data a maintainer runs this and commits both. It refuses results of any other dataset, so README
shows only the demo's numbers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pipeline import report
from pipeline.config import load_params
from pipeline.data.identity import read_identity


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.cli.readme", description=__doc__)
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--demo-data", type=Path, default=Path("data/demo"), help="demo's root")
    args = parser.parse_args(argv)
    identity = read_identity(args.prepared)
    if not identity.is_under(args.demo_data):
        raise SystemExit(f"{args.readme} shows the demo data's results; these are {identity.label}")
    params = load_params()
    rows = report.Rows(
        params.train_seg.variants, params.train_seg.ensembles, params.train_seg.rounds
    )
    table, extra, page = report.summary_of(
        args.reports,
        args.prepared,
        report.comparison_rows(rows),
        params.evaluate.classes,
        params.data.source.kind,
        report.row_notes(rows),
    )
    report.update_readme(args.readme, table, extra, page)
    print(f"{args.readme}: results section rewritten from {args.reports}/comparison.csv")


if __name__ == "__main__":
    main()
