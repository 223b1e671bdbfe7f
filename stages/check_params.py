"""dvc stage `check_params`: params.yaml checked before any stage touches an output.

DVC deletes a stage's outputs before it runs the stage, so a setting the stage itself rejects
would cost those outputs; so would a file params.yaml names that is missing or, for encoder
weights, of another encoder (pipeline.preflight). Every stage depends on this one's marker,
which DVC runs first: a bad value stops `dvc repro` with one line naming the key or file before
anything is deleted. The marker's bytes never change, so a changed setting reruns only the
stages that read it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.io import atomic_path
from pipeline.preflight import check_inputs
from stages.door import open_stage

MARKER = "params.yaml passed pipeline.config's checks\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the marker file")
    parser.add_argument("--generated", type=Path, required=True, help="the demo data's folder")
    args = parser.parse_args(argv)
    with open_stage("check_params") as door:
        warning = check_inputs(door.params, args.generated)
        if warning:
            print(warning, file=sys.stderr)
        with atomic_path(args.out) as tmp:
            tmp.write_text(MARKER)


if __name__ == "__main__":
    main()
