"""``sim2real-translate``: translate every image in a folder at its own size (sim -> real).

``sim2real-translate --generator models/cyclegan/gen_sim2real.safetensors --input DIR --output
DIR`` (or ``python -m pipeline.cli.translate``); ``--reference-netG resnet_9blocks`` loads a
reference checkpoint such as ``latest_net_G_A.pth`` instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline import runtime
from pipeline.io import ImageReadError, InputError
from pipeline.models.cyclegan import GENERATOR_NAMES, NORM_NAMES
from pipeline.models.generator_folder import (
    GeneratorFolderError,
    load_generator,
    load_trained_generator,
)
from pipeline.translate import TranslateError, translate_folder


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sim2real-translate", description="Translate every image in a folder (sim->real)."
    )
    parser.add_argument("--generator", type=Path, required=True, help="generator weights file")
    parser.add_argument("--input", type=Path, required=True, help="folder of images")
    parser.add_argument("--output", type=Path, required=True, help="folder for the PNGs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="auto")
    parser.add_argument(
        "--reference-netG",
        choices=GENERATOR_NAMES,
        help="load a reference checkpoint (e.g. latest_net_G_A.pth) of this architecture "
        "instead of reading generator.json beside the weights",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument("--ngf", type=int, default=64, help="with --reference-netG")
    parser.add_argument(
        "--norm", choices=NORM_NAMES, default="instance", help="with --reference-netG"
    )
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    runtime.set_threads(args.threads)
    device = runtime.pick_device()
    try:
        if args.reference_netG:
            generator = load_generator(
                args.generator, args.reference_netG, args.ngf, args.norm, device
            )
        else:
            generator = load_trained_generator(args.generator, device)
        result = translate_folder(
            generator, args.generator, args.input, args.output, args.batch, args.precision, device
        )
    except (TranslateError, GeneratorFolderError, InputError, ImageReadError) as err:
        sys.exit(f"sim2real-translate: {err}")
    print(
        f"translated {result['translated']} of {result['files']} images into {args.output}"
        + (f" ({result['img_per_s']} img/s)" if result["img_per_s"] else "")
    )


if __name__ == "__main__":
    main()
