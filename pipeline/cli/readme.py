"""``python -m pipeline.cli.readme``: copy the demo's comparison into README's results section.

README is no output of the pipeline (DVC would own it otherwise); after a `dvc repro` on the demo
data a maintainer runs this and commits both. It refuses results of any other dataset, so README
shows only the demo's numbers. `--readme PAGE` writes the block of another page (docs/*.md);
its figure links are relative to that page's folder.

Reads reports/metrics/, reports/data.json, reports/seeds.json and reports/translators/ (all
committed), params.yaml, and data/prepared/dataset.json (the prepare stage's output).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pipeline import blocks
from pipeline.config import load_params
from pipeline.data.identity import read_identity
from pipeline.report.pages import results_block
from pipeline.report.rows import Rows, comparison_rows, row_notes
from pipeline.report.write import summary_of

PROG = "python -m pipeline.cli.readme"
BLOCK = "results"
DEFAULT_README = Path("README.md")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--readme", type=Path, default=DEFAULT_README)
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--demo-data", type=Path, default=Path("data/demo"), help="demo's root")
    args = parser.parse_args(argv)
    identity = read_identity(args.prepared)
    if not identity.is_under(args.demo_data):
        raise SystemExit(f"{args.readme} shows the demo data's results; these are {identity.label}")
    params = load_params()
    rows = Rows(params.train_seg.variants, params.train_seg.ensembles, params.train_seg.rounds)
    table, extra, page = summary_of(
        args.reports,
        args.prepared,
        comparison_rows(rows),
        params.evaluate.classes,
        params.data.source.kind,
        row_notes(rows),
    )
    body = results_block(table, extra, page, args.reports / "figures", args.readme.parent)
    named = blocks.page_path(args.readme)
    command = PROG if Path(named) == DEFAULT_README else f"{PROG} --readme {named}"
    try:
        blocks.replace_block(args.readme, BLOCK, body, command, " from the demo data")
    except blocks.BlockError as err:
        raise SystemExit(str(err)) from err
    print(f"{args.readme}: results section rewritten from {args.reports}/comparison.csv")


if __name__ == "__main__":
    main()
