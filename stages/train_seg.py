"""dvc stage `train_seg@variant`: train one segmentation net on one variant's training set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import dist
from pipeline.config import ConfigError, load_params
from pipeline.data.prepare import PreparedSplit
from pipeline.runtime import set_threads
from pipeline.tracking import check_tracking, open_tracker
from pipeline.train.checkpoint import claim_checkpoint_folder, record_run, run_fingerprint
from pipeline.train.segmentation import (
    Interrupted,
    resume_checkpoint,
    run_settings,
    train_segmentation,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True, help="a key of train_seg.variants")
    parser.add_argument("--out", type=Path, required=True, help="model folder, models/seg/NAME")
    args = parser.parse_args(argv)
    params = load_params()
    config = params.train_seg
    if args.variant not in config.variants:
        raise ConfigError(
            f"unknown variant {args.variant!r}; train_seg.variants in params.yaml has: "
            f"{', '.join(config.variants)}"
        )
    spec = config.variants[args.variant]
    images = PreparedSplit.open(spec.images)
    labels = PreparedSplit.open(spec.labels, need_labels=True)
    style = PreparedSplit.open(spec.fda_style) if spec.fda_beta > 0 else None

    dist.init()
    set_threads(config.threads)
    tracking = params.tracking
    if tracking.enabled and dist.is_main():
        check_tracking()
    # Checkpoints from other code or data than this run's are cleared (DVC reruns the stage when
    # those change, and a finished checkpoint would otherwise be taken as this run's result).
    inputs = [p for p in (spec.images, spec.labels, spec.fda_style) if p is not None]
    fingerprint = run_fingerprint(run_settings(config, args.variant), inputs)
    if dist.is_main():
        claim_checkpoint_folder(args.out / "checkpoints", fingerprint)
    dist.barrier()
    # A resumed training run keeps logging into the MLflow run it started.
    saved = resume_checkpoint(config, args.variant, args.out)
    tracker = open_tracker(
        tracking.enabled,
        tracking.experiment,
        run_name=args.variant,
        tags={"stage": "train_seg", "variant": args.variant},
        run_id=saved.get("run_id") if saved else None,
        is_main=dist.is_main(),
    )
    if dist.is_main():
        record_run(args.out / "checkpoints", fingerprint, tracker.run_id)
    tracker.log_data({"training": inputs})
    try:
        train_segmentation(config, args.variant, images, labels, style, args.out, tracker)
    except Interrupted as stopped:
        tracker.finish("KILLED")
        print(f"{stopped}; rerun the stage to resume", file=sys.stderr)
        sys.exit(130)
    except BaseException:
        tracker.finish("FAILED")
        raise
    else:
        tracker.finish()
    finally:
        dist.cleanup()


if __name__ == "__main__":
    main()
