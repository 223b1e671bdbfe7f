"""dvc stage `train_cyclegan`: unpaired sim <-> real CycleGAN on the prepared splits."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline import dist
from pipeline.config import load_params, run_settings
from pipeline.data.prepare import PreparedSplit
from pipeline.io import write_json
from pipeline.train.cyclegan import train_cyclegan
from pipeline.train.run import stage_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True, help="prepared splits folder")
    parser.add_argument("--out", type=Path, required=True, help="model folder")
    parser.add_argument("--metrics", type=Path, required=True, help="final metrics (JSON)")
    parser.add_argument("--curves", type=Path, required=True, help="loss curves (CSV)")
    args = parser.parse_args(argv)
    params, start = load_params(), time.perf_counter()
    splits = [args.prepared / "sim", args.prepared / "real_train"]
    sim, real = (PreparedSplit.open(split).images for split in splits)
    settings = run_settings(params.cyclegan)
    with stage_run(
        "train_cyclegan",
        params.tracking,
        run_name="train_cyclegan",
        out_dir=args.out,
        settings=settings,
        inputs=splits,
        tags={"variant": "cyclegan"},
    ) as tracker:
        metrics = train_cyclegan(params.cyclegan, sim, real, args.out, tracker, args.curves)
        if dist.is_main():
            write_json(args.metrics, {**metrics, "wall_seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
