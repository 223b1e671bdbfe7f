"""dvc stage `train_seg@variant`: train one segmentation net on one variant's training set."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.data.split import PreparedSplit
from pipeline.train.segmentation import train_segmentation, variant_settings
from stages.door import Training, open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True, help="a key of train_seg.variants")
    parser.add_argument("--out", type=Path, required=True, help="model folder, models/seg/NAME")
    parser.add_argument("--val", type=Path, help="prepared split scored every train_seg.val_every")
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    variant = args.variant
    with open_stage(
        "train_seg",
        log=args.log,
        distributed=True,
        run_name=variant,
        tags={"variant": variant},
        training=Training(
            args.out,
            settings_of=lambda params: variant_settings(params.train_seg, variant, args.out),
            inputs_of=lambda params: params.train_seg.variant(variant).inputs(),
        ),
    ) as door:
        config = door.params.train_seg
        spec = config.variant(variant)
        images, labels = PreparedSplit.open(spec.images), PreparedSplit.open(spec.labels, True)
        style = PreparedSplit.open(spec.fda_style) if spec.fda_beta > 0 else None
        target = PreparedSplit.open(spec.self_training.target) if spec.self_training else None
        val = PreparedSplit.open(args.val, True) if args.val and config.val_every > 0 else None
        labelled = spec.target_labels
        target_labels = PreparedSplit.open(labelled.split, True) if labelled else None
        train_segmentation(
            config,
            variant,
            images,
            labels,
            style,
            args.out,
            door.tracker,
            val,
            target=target,
            target_labels=target_labels,
        )


if __name__ == "__main__":
    main()
