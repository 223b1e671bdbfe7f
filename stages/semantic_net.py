"""dvc stage `semantic_net`: the frozen sim-trained net CyCADA's semantic loss uses, or nothing.

train_cyclegan depends on this stage's output rather than on models/seg/source_only itself: with
cyclegan.lambda_semantic = 0 the output is a constant marker, so retraining source_only does not
retrain CycleGAN; above 0 it is source_only's net, and CycleGAN retrains when that changes.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pipeline.config import load_params
from pipeline.io import atomic_path, write_json
from pipeline.models.model_folder import MODEL_SPEC, MODEL_WEIGHTS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="models/seg/source_only")
    parser.add_argument("--out", type=Path, required=True, help="models/semantic_net")
    args = parser.parse_args(argv)
    weight = load_params().cyclegan.lambda_semantic
    if args.out.exists():
        shutil.rmtree(args.out)
    if weight == 0:
        write_json(args.out / "disabled.json", {"lambda_semantic": 0.0})
        return
    for name in (MODEL_WEIGHTS, MODEL_SPEC):
        with atomic_path(args.out / name) as tmp:
            shutil.copyfile(args.model / name, tmp)


if __name__ == "__main__":
    main()
