"""dvc stage `demo_data`: write the procedural sim (GTA5 layout, optionally also SYNTHIA layout)
and real (Cityscapes) sets."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.demo import DemoSpec, generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for gta5/, cityscapes/ (and synthia/)"
    )
    args = parser.parse_args(argv)
    config = load_params().demo_data
    # A fresh folder, so a smaller n_* leaves no stale frames from an earlier run.
    if args.out.exists():
        shutil.rmtree(args.out)
    counts = generate(
        DemoSpec(
            seed=config.seed,
            n_source=config.n_source,
            n_target_train=config.n_target_train,
            n_target_val=config.n_target_val,
            size=config.size,
            synthia=config.synthia,
        ),
        args.out,
        workers=config.workers,
    )
    print(f"demo data written to {args.out}: {counts}")


if __name__ == "__main__":
    main()
