"""dvc stage `evaluate@variant`: score one variant's net on real val at label resolution."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.evaluate import EvaluationOutputs, evaluate_variant
from pipeline.models.model_folder import load_model
from stages.door import open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variant", required=True, help="variant name, for tracking")
    parser.add_argument("--model", type=Path, required=True, help="models/seg/NAME")
    parser.add_argument("--val", type=Path, required=True, help="prepared real val split")
    parser.add_argument("--metrics", type=Path, required=True, help="scores (JSON)")
    parser.add_argument("--confusion", type=Path, required=True, help="confusion matrix (CSV)")
    parser.add_argument("--predictions", type=Path, required=True, help="kept predictions (.npy)")
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    outputs = EvaluationOutputs(args.metrics, args.confusion, args.predictions)
    with open_stage(
        "evaluate", log=args.log, distributed=True, reopen=args.model / "run.json"
    ) as door:
        model = load_model(args.model)
        evaluate_variant(door.params.evaluate, model, args.val, outputs, door.tracker, args.variant)


if __name__ == "__main__":
    main()
