"""dvc stage `demo_data`: write the procedural sim (GTA5 layout, optionally also SYNTHIA layout)
and real (Cityscapes) sets, when a dataset root lies inside them.

With both roots elsewhere (a team's own data, as an experiment of a checkout that ships the
demo) the frames are not written: the folder holds only a note saying why, so a real-data run
neither spends time on the demo nor carries it in its outputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.data.demo import write_demo_data, write_demo_unused
from stages.door import open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for gta5/, cityscapes/ (and synthia/)"
    )
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    with open_stage("demo_data", log=args.log) as door:
        roots = (Path(door.params.data.source.root), Path(door.params.data.target.root))
        if any(root.resolve().is_relative_to(args.out.resolve()) for root in roots):
            write_demo_data(door.params.demo_data, args.out)
        else:
            write_demo_unused(args.out, roots)


if __name__ == "__main__":
    main()
