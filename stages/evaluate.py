"""dvc stage `evaluate@variant`: score one variant's net on real val at label resolution."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import dist
from pipeline.config import load_params
from pipeline.data.identity import identity_of_split
from pipeline.data.prepare import PreparedSplit
from pipeline.evaluate import (
    evaluate_images,
    native_labels,
    write_evaluation,
)
from pipeline.models.model_folder import load_model
from pipeline.report import log_evaluation
from pipeline.runtime import pick_device, resolve_precision
from pipeline.tracking import reopen_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True, help="variant name, for tracking")
    parser.add_argument("--model", type=Path, required=True, help="models/seg/NAME")
    parser.add_argument("--val", type=Path, required=True, help="prepared real val split")
    parser.add_argument("--metrics", type=Path, required=True, help="scores (JSON)")
    parser.add_argument("--confusion", type=Path, required=True, help="confusion matrix (CSV)")
    parser.add_argument("--predictions", type=Path, required=True, help="kept predictions (.npy)")
    args = parser.parse_args(argv)
    params = load_params()
    config = params.evaluate

    dist.init()
    try:
        device = pick_device()
        val = PreparedSplit.open(args.val)
        evaluation = evaluate_images(
            load_model(args.model),
            val.images,
            native_labels(args.val),
            config.batch,
            resolve_precision(config.precision, device),
            device,
            keep=config.saved_predictions,
            cities=val.cities,
        )
        if not dist.is_main():
            return
        # Files first: a tracking failure below must not lose the scores.
        result = write_evaluation(
            evaluation, args.metrics, args.confusion, args.predictions, config.classes
        )
        print(
            f"{args.variant}: mIoU ({config.classes} classes) {result['miou']:.4f}, pixel "
            f"accuracy {result['pixel_accuracy']:.4f} on {result['n_images']} frames -> "
            f"{args.metrics}"
        )
        tracking = params.tracking
        tracker = reopen_run(tracking.enabled, tracking.experiment, args.model / "run.json")
        tracker.log_data({"evaluation": [args.val]})
        found = identity_of_split(args.val)
        title = f"{args.variant}: real val" + (f", dataset {found[0].label}" if found else "")
        log_evaluation(tracker, result, evaluation.confusion.matrix.cpu().numpy(), title)
        tracker.finish()
    finally:
        dist.cleanup()


if __name__ == "__main__":
    main()
