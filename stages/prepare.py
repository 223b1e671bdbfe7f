"""dvc stage `prepare`: index, check, resize and cache the source and target sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.data.prepare import prepare_all
from stages.door import open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="prepared splits folder")
    parser.add_argument("--report", type=Path, required=True, help="data report (JSON)")
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    with open_stage("prepare", log=args.log) as door:
        prepare_all(door.params.data, door.params.prepare.workers, args.out, args.report)


if __name__ == "__main__":
    main()
