"""dvc stage `ensemble@name`: one model folder averaging three trained variants' probabilities
(FDA's multi-band transfer), with an MLflow run of its own that evaluate_ensemble scores into."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.data.split import PreparedSplit
from pipeline.io import write_json
from pipeline.models.model_folder import write_ensemble
from stages.door import open_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ensemble", required=True, help="a key of train_seg.ensembles")
    parser.add_argument("--models", type=Path, required=True, help="models/seg (the members)")
    parser.add_argument("--out", type=Path, required=True, help="models/seg/NAME")
    parser.add_argument(
        "--example",
        type=Path,
        required=True,
        help="split whose first frame is the logged model's input example",
    )
    parser.add_argument("--log", type=Path, help="copy of the stage's output")
    args = parser.parse_args(argv)
    name = args.ensemble
    with open_stage(
        "ensemble", log=args.log, run_name=name, tags={"variant": name, "ensemble": "true"}
    ) as door:
        ensemble = door.params.train_seg.ensembles[name]
        members = {member: args.models / member for member in ensemble.members}
        spec = write_ensemble(args.out, members)
        door.tracker.log_params({"members": ", ".join(members)})
        door.tracker.log_dict({"members": list(members)}, "ensemble")
        example = PreparedSplit.open(args.example).images[0]
        door.tracker.log_segmentation_model(args.out, name, example)
        write_json(args.out / "run.json", {"run_id": door.tracker.run_id})
        print(
            f"{name}: the probabilities of {', '.join(members)} averaged -> {args.out} "
            f"({spec['arch']}, {spec['encoder']})"
        )


if __name__ == "__main__":
    main()
