"""dvc stage `report`: comparison table, figures and MLflow report run across all variants.

Everything it writes names the dataset it shows (the prepare stage's dataset identity). With
--readme, README's results section is rewritten only when that dataset is the demo data (both
roots inside --demo-data): README shows the demo's results, never another dataset's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import report
from pipeline.config import load_params
from pipeline.data.identity import read_identity
from pipeline.tracking import check_tracking, open_tracker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--translated", type=Path, default=Path("data/translated"))
    parser.add_argument("--models", type=Path, default=Path("models/seg"))
    parser.add_argument("--summary", type=Path, default=Path("metrics"), help="per-variant JSON")
    parser.add_argument("--readme", type=Path, help="update its results section (demo data only)")
    parser.add_argument("--demo-data", type=Path, default=Path("data/demo"), help="demo's root")
    args = parser.parse_args(argv)
    params = load_params()
    inputs = report.ReportInputs(
        args.reports, args.prepared, args.translated, args.models, args.summary
    )
    tracker = None
    if params.tracking.enabled:
        check_tracking()
        tracker = open_tracker(True, params.tracking.experiment, "report", tags={"stage": "report"})
    table, extra, page = report.write_report(
        inputs,
        list(params.train_seg.variants),
        params.report.n_samples,
        params.evaluate.classes,
        params.data.source.kind,
        tracker,
    )
    if tracker is not None:
        tracker.finish()
    identity = read_identity(args.prepared)
    if args.readme is not None and identity.is_under(args.demo_data):
        report.update_readme(args.readme, table, extra, page)
    elif args.readme is not None:
        print(f"{args.readme} left as it is: it shows the demo data, this is {identity.label}")
    print((args.reports / "comparison.md").read_text())


if __name__ == "__main__":
    main()
