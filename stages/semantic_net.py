"""dvc stage `semantic_net`: the frozen sim-trained net CyCADA's semantic loss uses, or nothing.

train_cyclegan depends on this stage's output rather than on models/seg/source_only itself: with
cyclegan.lambda_semantic = 0 the output is a constant marker, so retraining source_only does not
retrain CycleGAN; above 0 it is source_only's net, and CycleGAN retrains when that changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.models.model_folder import copy_semantic_net
from stages.door import open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="models/seg/source_only")
    parser.add_argument("--out", type=Path, required=True, help="models/semantic_net")
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    with open_stage("semantic_net", log=args.log) as door:
        copy_semantic_net(door.params.cyclegan.lambda_semantic, args.model, args.out)


if __name__ == "__main__":
    main()
