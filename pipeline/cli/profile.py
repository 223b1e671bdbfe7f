"""``python -m pipeline.cli.profile``: check params.yaml, with profiles and the user's overrides
applied, and print them as ``dvc exp run`` arguments (``-S key=value``; see pipeline.config).

    python -m pipeline.cli.profile --profile profiles/gta5_cityscapes.yaml \\
      -S data.source.root=/data/gta5 -S data.target.root=/data/cityscapes \\
      | xargs dvc exp run -n gta5-cityscapes

Profiles apply in the order given, the ``-S`` overrides last: a key set with ``-S`` here keeps
the user's value. (``-S`` given to ``dvc exp run`` itself would come before the piped arguments,
and DVC keeps the last value of a key, the profile's.) The settings check and the file checks of
the ``check_params`` stage run first, so a mistake stops here, before DVC rewrites params.yaml.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import PARAMS_FILE, ConfigError, load_params, resolve_profiles
from pipeline.preflight import check_inputs
from pipeline.weights import WeightsError


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check params.yaml; print a profile's changes.")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    parser.add_argument(
        "--profile",
        type=Path,
        action="append",
        default=[],
        help="profile to apply (repeatable, applied in order): prints -S arguments",
    )
    parser.add_argument(
        "-S",
        "--set-param",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="a setting of your own, applied after the profiles (as dvc exp run -S)",
    )
    parser.add_argument(
        "--generated",
        type=Path,
        default=Path("data/demo"),
        help="the demo data's folder (roots inside it need not exist yet)",
    )
    args = parser.parse_args(argv)
    try:
        if not args.profile and not args.overrides:
            load_params(args.params)
            return
        resolved, arguments = resolve_profiles(args.profile, args.params, args.overrides)
        warning = check_inputs(resolved, args.generated)
    except (ConfigError, WeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if warning:
        print(warning, file=sys.stderr)
    print("\n".join(arguments))


if __name__ == "__main__":
    main()
