"""dvc stage `evaluate_translation`: the CycleGAN paper's FCN-score for sim -> real translation.

The oracle net (trained on real labels) labels the translated sim frames and the raw sim frames;
both are scored against the sim labels at the working resolution. The better the translation
looks like real data, the closer the translated score gets to the oracle's real-val score.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.prepare import PreparedSplit, check_same_frames
from pipeline.evaluate import evaluate_images
from pipeline.io import read_json, write_json
from pipeline.runtime import pick_device, resolve_precision
from pipeline.segment import load_model
from pipeline.tracking import open_tracker

SCORES = ("pixel_accuracy", "mean_class_accuracy", "miou")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--oracle", type=Path, required=True, help="models/seg/oracle")
    parser.add_argument("--sim", type=Path, required=True, help="prepared sim split (labels)")
    parser.add_argument("--translated", type=Path, required=True, help="translated sim split")
    parser.add_argument("--out", type=Path, required=True, help="scores (JSON)")
    parser.add_argument(
        "--cyclegan-run",
        type=Path,
        default=Path("models/cyclegan/run.json"),
        help="run.json of the CycleGAN training run; scores are logged there when it exists",
    )
    args = parser.parse_args(argv)
    params = load_params()
    config = params.evaluate
    device = pick_device()
    precision = resolve_precision(config.precision, device)

    sim = PreparedSplit.open(args.sim, need_labels=True)
    translated = PreparedSplit.open(args.translated)
    check_same_frames(translated, sim)
    model = load_model(args.oracle)
    result = {}
    for name, split in (("translated", translated), ("raw_sim", sim)):
        evaluation = evaluate_images(
            model, split.images, sim.labels, config.batch, precision, device
        )
        scores = evaluation.confusion.scores()
        result[name] = {key: scores[key] for key in SCORES}
        print(f"FCN-score {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in result[name].items()))
    write_json(args.out, result)

    run_id = read_json(args.cyclegan_run)["run_id"] if args.cyclegan_run.is_file() else None
    tracker = open_tracker(
        params.tracking.enabled and run_id is not None,
        params.tracking.experiment,
        run_name="cyclegan",
        run_id=run_id,
    )
    tracker.log_metrics(
        {
            f"fcn_{name}_{key}": value
            for name, scores in result.items()
            for key, value in scores.items()
        }
    )
    tracker.finish()


if __name__ == "__main__":
    main()
