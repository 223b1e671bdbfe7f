"""dvc stage `train_cut@NAME`: one contrastive translator (CUT or FastCUT, `cut.translators.NAME`)
sim -> real on the prepared splits."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline import runtime
from pipeline.config import run_settings
from pipeline.data.split import PreparedSplit
from pipeline.io import write_json
from pipeline.tracking.store import project_root
from pipeline.train.cut import train_cut
from stages.door import Training, open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the translator's key in cut.translators")
    parser.add_argument("--prepared", type=Path, required=True, help="prepared splits folder")
    parser.add_argument("--out", type=Path, required=True, help="generator folder")
    parser.add_argument("--metrics", type=Path, required=True, help="final metrics (JSON)")
    parser.add_argument("--curves", type=Path, required=True, help="loss curves (CSV)")
    parser.add_argument("--compile-cache", type=Path, help="as train_cyclegan's")
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    if args.compile_cache:
        runtime.use_compile_cache(project_root() / args.compile_cache)
    splits = [args.prepared / "sim", args.prepared / "real_train"]
    with open_stage(
        "train_cut",
        log=args.log,
        distributed=True,
        run_name=f"train_cut_{args.name}",
        tags={"variant": args.name, "translator": args.name},
        training=Training(
            args.out,
            settings_of=lambda params: run_settings(params.cut.translator(args.name)),
            inputs_of=lambda params: splits,
        ),
    ) as door:
        config, start = door.params.cut.translator(args.name), time.perf_counter()
        sim, real = (PreparedSplit.open(split).images for split in splits)
        metrics = train_cut(config, sim, real, args.out, door.tracker, args.curves)
        if door.is_main:
            write_json(args.metrics, {**metrics, "wall_seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
