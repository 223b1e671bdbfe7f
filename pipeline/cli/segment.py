"""``sim2real-segment``: segment every image in a folder with a trained variant.

``sim2real-segment --model models/seg/cyclegan --input DIR --output DIR`` (or
``python -m pipeline.cli.segment``) writes OUTPUT/masks/<name>.png and OUTPUT/overlays/<name>.png
(see pipeline.segment).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline import runtime
from pipeline.config import ConfigError, SlidingWindowSpec
from pipeline.io import ImageReadError, InputError
from pipeline.models.model_folder import ModelFolderError
from pipeline.segment import WHOLE_FRAME, Inference, Segmenter, SegmentError, segment_folder
from pipeline.weights import WeightsError


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sim2real-segment",
        description="Segment every image in a folder with a trained variant: PNG masks of "
        "train ids and colour overlays.",
    )
    parser.add_argument("--model", type=Path, required=True, help="models/seg/<variant>")
    parser.add_argument("--input", type=Path, required=True, help="folder of images")
    parser.add_argument("--output", type=Path, required=True, help="folder for masks/, overlays/")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument(
        "--window",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="sliding windows of H x W pixels at the working size (as evaluate.sliding_window); "
        "default: the whole frame",
    )
    parser.add_argument(
        "--stride", type=int, nargs=2, metavar=("H", "W"), help="the windows' step (with --window)"
    )
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    if (args.window is None) != (args.stride is None):
        parser.error("--window and --stride go together")
    inference = WHOLE_FRAME
    if args.window is not None:
        try:
            SlidingWindowSpec(tuple(args.window), tuple(args.stride)).validate("--window/--stride")
        except ConfigError as err:
            parser.error(str(err).removeprefix("params.yaml: "))
        inference = Inference(tuple(args.window), tuple(args.stride))
    runtime.set_threads(args.threads)
    try:
        segmenter = Segmenter.from_folder(
            args.model, runtime.pick_device(), args.precision, inference
        )
        result = segment_folder(segmenter, args.model, args.input, args.output, args.batch)
    except (SegmentError, ModelFolderError, WeightsError, InputError, ImageReadError) as err:
        sys.exit(f"sim2real-segment: {err}")
    print(
        f"segmented {result['segmented']} of {result['files']} images into {args.output} "
        f"(masks/, overlays/) in {result['seconds']} s"
    )


if __name__ == "__main__":
    main()
