"""dvc stage `translate`: every sim frame through gen_sim2real, same names, so labels line up.

Writes the translated split (readable by PreparedSplit.open) and the colour-statistics distance
to real_train before and after translation; the scores are also logged to the translator's
training run (<generator folder>/run.json).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.translate import translate_prepared
from stages.door import open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True, help="prepared splits folder")
    parser.add_argument("--generator", type=Path, required=True, help="train_cyclegan's --out")
    parser.add_argument("--out", type=Path, required=True, help="translated split folder")
    parser.add_argument("--metrics", type=Path, required=True, help="scores (JSON)")
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    with open_stage(
        "translate", log=args.log, distributed=True, reopen=args.generator / "run.json"
    ) as door:
        translate_prepared(
            door.params.translate,
            args.generator,
            args.prepared / "sim",
            args.prepared / "real_train",
            args.out,
            args.metrics,
            door.tracker,
        )


if __name__ == "__main__":
    main()
