"""dvc stage `report`: comparison table, figures and MLflow report run across all variants.

Everything it writes names the dataset it shows (the prepare stage's dataset identity).
README's results section is not written here (README is no output of the pipeline): after a demo
run, `python -m pipeline.cli.readme` copies the comparison into it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.report.rows import Rows, comparison_rows, row_notes
from pipeline.report.write import ReportInputs, write_report
from stages.door import open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--translated", type=Path, default=Path("data/translated"))
    parser.add_argument("--models", type=Path, default=Path("models/seg"))
    parser.add_argument("--summary", type=Path, default=Path("metrics"), help="per-variant JSON")
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    inputs = ReportInputs(args.reports, args.prepared, args.translated, args.models, args.summary)
    with open_stage("report", log=args.log, run_name="report") as door:
        params = door.params
        rows = Rows(params.train_seg.variants, params.train_seg.ensembles, params.train_seg.rounds)
        write_report(
            inputs,
            comparison_rows(rows),
            params.report.n_samples,
            params.evaluate.classes,
            params.data.source.kind,
            door.tracker,
            row_notes(rows),
        )
        print((args.reports / "comparison.md").read_text())  # inside: logs/report.log keeps it


if __name__ == "__main__":
    main()
