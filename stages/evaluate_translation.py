"""dvc stage `evaluate_translation`: the CycleGAN paper's FCN-score for sim -> real translation
(pipeline.evaluate.fcn_score), logged to the CycleGAN training run."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import load_params
from pipeline.data.prepare import PreparedSplit
from pipeline.evaluate import fcn_score
from pipeline.io import write_json
from pipeline.models.model_folder import load_model
from pipeline.runtime import pick_device, resolve_precision
from pipeline.tracking import reopen_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", type=Path, required=True, help="models/seg/oracle")
    parser.add_argument("--sim", type=Path, required=True, help="prepared sim split (labels)")
    parser.add_argument("--translated", type=Path, required=True, help="translated sim split")
    parser.add_argument("--out", type=Path, required=True, help="scores (JSON)")
    parser.add_argument("--cyclegan-run", type=Path, default=Path("models/cyclegan/run.json"))
    args = parser.parse_args(argv)
    params = load_params()
    device = pick_device()
    sim = PreparedSplit.open(args.sim, need_labels=True)
    precision = resolve_precision(params.evaluate.precision, device)
    result = fcn_score(
        load_model(args.oracle),
        sim,
        PreparedSplit.open(args.translated),
        params.evaluate.batch,
        precision,
        device,
    )
    write_json(args.out, result)
    print(result)
    tracker = reopen_run(params.tracking.enabled, params.tracking.experiment, args.cyclegan_run)
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
