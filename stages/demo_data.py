"""dvc stage `demo_data`: write the procedural sim (GTA5 layout, optionally also SYNTHIA layout)
and real (Cityscapes) sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.data.demo import write_demo_data
from stages.door import open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for gta5/, cityscapes/ (and synthia/)"
    )
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    with open_stage("demo_data", log=args.log) as door:
        write_demo_data(door.params.demo_data, args.out)


if __name__ == "__main__":
    main()
