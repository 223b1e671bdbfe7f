"""dvc stage `prepare`: index, check, resize and cache the source and target sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.prepare import prepare_all


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="prepared splits folder")
    parser.add_argument("--report", type=Path, required=True, help="data report (JSON)")
    args = parser.parse_args(argv)
    params = load_params()
    prepare_all(params.data, params.prepare.workers, args.out, args.report)


if __name__ == "__main__":
    main()
