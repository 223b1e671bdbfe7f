"""``python -m pipeline.cli.profile``: check params.yaml, with a profile applied, and print the
profile as ``dvc exp run`` arguments (``-S key=value``; see pipeline.config)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import PARAMS_FILE, load_params, profile_arguments


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check params.yaml; print a profile's changes.")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument("--profile", type=Path, help="profile to apply: prints -S arguments")
    args = parser.parse_args(argv)
    if args.profile is None:
        load_params(args.params)
        return
    print("\n".join(profile_arguments(args.profile, args.params)))


if __name__ == "__main__":
    main()
