"""dvc stage `train_seg@variant`: train one segmentation net on one variant's training set."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.prepare import PreparedSplit
from pipeline.train.run import stage_run
from pipeline.train.segmentation import train_segmentation, variant_settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True, help="a key of train_seg.variants")
    parser.add_argument("--out", type=Path, required=True, help="model folder, models/seg/NAME")
    parser.add_argument("--val", type=Path, help="prepared split scored every train_seg.val_every")
    args = parser.parse_args(argv)
    params = load_params()
    config, variant = params.train_seg, args.variant
    spec = config.variant(variant)
    images, labels = PreparedSplit.open(spec.images), PreparedSplit.open(spec.labels, True)
    style = PreparedSplit.open(spec.fda_style) if spec.fda_beta > 0 else None
    target = PreparedSplit.open(spec.self_training.target) if spec.self_training else None
    val = PreparedSplit.open(args.val, True) if args.val and config.val_every > 0 else None
    with stage_run(
        "train_seg",
        params.tracking,
        run_name=variant,
        out_dir=args.out,
        settings=variant_settings(config, variant, args.out),
        inputs=spec.inputs(),
        tags={"variant": variant},
    ) as tracker:
        train_segmentation(
            config, variant, images, labels, style, args.out, tracker, val, target=target
        )


if __name__ == "__main__":
    main()
