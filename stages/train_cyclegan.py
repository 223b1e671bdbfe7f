"""dvc stage `train_cyclegan`: unpaired sim <-> real CycleGAN on the prepared splits."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline import runtime
from pipeline.config import ConfigError, run_settings
from pipeline.data.split import PreparedSplit
from pipeline.io import write_json
from pipeline.models.model_folder import load_model
from pipeline.tracking.store import project_root
from pipeline.train.cyclegan import train_cyclegan
from stages.door import Training, open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True, help="prepared splits folder")
    parser.add_argument("--out", type=Path, required=True, help="model folder")
    parser.add_argument("--metrics", type=Path, required=True, help="final metrics (JSON)")
    parser.add_argument("--curves", type=Path, required=True, help="loss curves (CSV)")
    parser.add_argument("--semantic-net", type=Path, help="CyCADA's frozen net (semantic_net)")
    parser.add_argument(
        "--compile-cache",
        type=Path,
        help="torch.compile's cache, relative to the repository root (shared by DVC's "
        "experiment copies), kept between runs",
    )
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    if args.compile_cache:
        runtime.use_compile_cache(project_root() / args.compile_cache)
    splits = [args.prepared / "sim", args.prepared / "real_train"]
    if args.semantic_net is not None:
        splits.append(args.semantic_net)  # its weights define the run too
    with open_stage(
        "train_cyclegan",
        log=args.log,
        distributed=True,
        run_name="train_cyclegan",
        tags={"variant": "cyclegan"},
        training=Training(
            args.out,
            settings_of=lambda params: run_settings(params.cyclegan),
            inputs_of=lambda params: splits,
        ),
    ) as door:
        config, start = door.params.cyclegan, time.perf_counter()
        sim, real = (PreparedSplit.open(split).images for split in splits[:2])
        semantic = None
        if config.lambda_semantic > 0:
            if args.semantic_net is None:
                raise ConfigError(
                    "cyclegan.lambda_semantic > 0 needs --semantic-net (the semantic_net stage)"
                )
            semantic = load_model(args.semantic_net)
        metrics = train_cyclegan(
            config, sim, real, args.out, door.tracker, args.curves, semantic_net=semantic
        )
        if door.is_main:
            write_json(args.metrics, {**metrics, "wall_seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
