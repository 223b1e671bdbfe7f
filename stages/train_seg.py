"""dvc stages `train_seg@variant` and `train_seg_round@round`: train one segmentation net on one
variant's training set, or again with a trained row's pseudo-labels (FDA's self-supervised
round)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from pipeline import runtime
from pipeline.adapt.fda_rounds import pseudo_label_split
from pipeline.config import Params, RoundSpec, TrainSegConfig
from pipeline.data.split import PreparedSplit
from pipeline.models.model_folder import load_model, weights_digest
from pipeline.train.segmentation import train_segmentation, variant_settings
from stages.door import Training, open_stage

# Frames per forward pass while a round's teacher labels the target frames.
LABELLING_BATCH = 16


def _round_settings(config: TrainSegConfig, name: str, models: Path) -> dict[str, Any]:
    """What defines a round's run beside its variant's settings: the round, and the bytes of
    the row that labels."""
    spec = config.rounds[name]
    return {
        "round": name,
        **{f"round_{k}": v for k, v in dataclasses.asdict(spec).items()},
        "pseudo_labels_digest": weights_digest(models / spec.pseudo_labels),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--variant", help="a key of train_seg.variants")
    which.add_argument("--round", help="a key of train_seg.rounds")
    parser.add_argument("--out", type=Path, required=True, help="model folder, models/seg/NAME")
    parser.add_argument("--models", type=Path, default=Path("models/seg"), help="trained rows")
    parser.add_argument("--val", type=Path, help="prepared split scored every train_seg.val_every")
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    row = args.variant or args.round

    def variant_of(params: Params) -> str:
        return args.variant or params.train_seg.rounds[args.round].variant

    def settings_of(params: Params) -> dict[str, Any]:
        settings = variant_settings(params.train_seg, variant_of(params), args.out)
        if args.round:
            settings.update(_round_settings(params.train_seg, args.round, args.models))
        return settings

    def inputs_of(params: Params) -> list[str]:
        inputs = params.train_seg.variant(variant_of(params)).inputs()
        return [*inputs, params.train_seg.rounds[args.round].split] if args.round else inputs

    with open_stage(
        "train_seg",
        log=args.log,
        distributed=True,
        run_name=row,
        tags={"variant": row},
        training=Training(args.out, settings_of=settings_of, inputs_of=inputs_of),
    ) as door:
        config = door.params.train_seg
        variant = variant_of(door.params)
        spec = config.variant(variant)
        images, labels = PreparedSplit.open(spec.images), PreparedSplit.open(spec.labels, True)
        style = PreparedSplit.open(spec.fda_style) if spec.fda_beta > 0 else None
        target = PreparedSplit.open(spec.self_training.target) if spec.self_training else None
        val = PreparedSplit.open(args.val, True) if args.val and config.val_every > 0 else None
        labelled = spec.target_labels
        target_labels = PreparedSplit.open(labelled.split, True) if labelled else None
        with contextlib.ExitStack() as stack:
            pseudo, extra = None, None
            if args.round:
                # Beside the model folder, one per process; gone when the stage ends.
                args.out.mkdir(parents=True, exist_ok=True)
                work = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix=".pseudo_labels_", dir=args.out)
                )
                round_spec = config.rounds[args.round]
                split = _pseudo_labels(config, round_spec, args.models, Path(work), door)
                pseudo, extra = (split, round_spec.weight), settings_of(door.params)
                door.tracker.set_tags(
                    {"round_of": variant, "pseudo_labels": round_spec.pseudo_labels}
                )
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
                pseudo_labels=pseudo,
                row=row,
                extra_settings=extra,
            )


def _pseudo_labels(
    config: TrainSegConfig, spec: RoundSpec, models: Path, work: Path, door: Any
) -> PreparedSplit:
    """The round's target frames with the labelling row's pseudo-labels (FDA's rule)."""
    split = PreparedSplit.open(spec.split)
    device = runtime.pick_device()
    labels, summary = pseudo_label_split(
        load_model(models / spec.pseudo_labels),
        split,
        work,
        LABELLING_BATCH,
        runtime.resolve_precision(config.precision, device),
        device,
        spec.quantile,
        spec.max_threshold,
    )
    door.tracker.log_dict(summary, "pseudo_labels")
    print(
        f"{spec.pseudo_labels} labelled {len(split.names)} frames of {spec.split}: "
        f"{100 * summary['kept_share']:.1f} % of pixels kept"
    )
    return PreparedSplit(root=split.root, names=split.names, images=split.images, labels=labels)


if __name__ == "__main__":
    main()
