"""dvc stage `evaluate_translation`: the CycleGAN paper's FCN-score for sim -> real translation
and FID / KID against the real training frames (pipeline.translation_scores), logged to the
translator's training run."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.data.split import PreparedSplit
from pipeline.models.model_folder import load_model
from pipeline.translation_scores import score_translation
from stages.door import open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", type=Path, required=True, help="models/seg/oracle")
    parser.add_argument("--sim", type=Path, required=True, help="prepared sim split (labels)")
    parser.add_argument("--translated", type=Path, required=True, help="translated sim split")
    parser.add_argument("--real", type=Path, required=True, help="prepared real train split")
    parser.add_argument("--translator", type=Path, required=True, help="models/cyclegan")
    parser.add_argument("--out", type=Path, required=True, help="scores (JSON)")
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    with open_stage(
        "evaluate_translation", log=args.log, reopen=args.translator / "run.json"
    ) as door:
        sim = PreparedSplit.open(args.sim, need_labels=True)
        translated = PreparedSplit.open(args.translated)
        real = PreparedSplit.open(args.real)
        oracle = load_model(args.oracle)
        params = door.params
        score_translation(
            params.evaluate.batch,
            params.evaluate.precision,
            oracle,
            sim,
            translated,
            real,
            params.fid.inception_weights,
            args.out,
            door.tracker,
        )


if __name__ == "__main__":
    main()
