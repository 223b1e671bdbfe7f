"""dvc stage `train_cyclegan`: unpaired sim <-> real CycleGAN on the prepared splits."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline import dist, runtime
from pipeline.config import load_params, run_settings
from pipeline.data.prepare import PreparedSplit
from pipeline.io import write_json
from pipeline.models.model_folder import load_model
from pipeline.tracking import project_root
from pipeline.train.cyclegan import train_cyclegan
from pipeline.train.run import stage_run


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
    args = parser.parse_args(argv)
    if args.compile_cache:
        runtime.use_compile_cache(project_root() / args.compile_cache)
    params, start = load_params(), time.perf_counter()
    splits = [args.prepared / "sim", args.prepared / "real_train"]
    sim, real = (PreparedSplit.open(split).images for split in splits)
    settings, semantic = run_settings(params.cyclegan), None
    if params.cyclegan.lambda_semantic > 0:
        if args.semantic_net is None:
            parser.error(
                "cyclegan.lambda_semantic > 0 needs --semantic-net (the semantic_net stage)"
            )
        semantic = load_model(args.semantic_net)
        splits.append(args.semantic_net)  # its weights define the run too
    with stage_run(
        "train_cyclegan",
        params.tracking,
        run_name="train_cyclegan",
        out_dir=args.out,
        settings=settings,
        inputs=splits,
        tags={"variant": "cyclegan"},
    ) as tracker:
        metrics = train_cyclegan(
            params.cyclegan, sim, real, args.out, tracker, args.curves, semantic_net=semantic
        )
        if dist.is_main():
            write_json(args.metrics, {**metrics, "wall_seconds": time.perf_counter() - start})


if __name__ == "__main__":
    main()
