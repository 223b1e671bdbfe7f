"""``sim2real-check-data``: look at a dataset through its settings before training on it.

``sim2real-check-data [-P PROFILE] [-S data.source.root=...]`` (or ``python -m
pipeline.cli.check_data``) reads params.yaml's `data` section as the prepare stage will, and
prints for each split (sim, real_train, real_val): the frames found and how many prepare would
keep, the resolutions, the class histogram after the label map, ids the map does not name (by
value and pixel count), files without their partner and the first skip reasons. It writes a few
overlays of label on image to `--overlays`, so a wrong label map shows in a minute rather than
after an hour of training. Nothing is written elsewhere; the exit status is 1 when a split
would stop the prepare stage.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config import ConfigError, DataConfig, DatasetSpec, profile_params
from pipeline.data.folder import split_folder
from pipeline.data.index import DatasetError
from pipeline.data.label_map import label_ids_for
from pipeline.data.labels import CLASS_NAMES, NUM_CLASSES
from pipeline.data.prepare import SPLITS, decode_sample, index_split
from pipeline.io import ImageReadError, OutputError, write_png
from pipeline.segment import overlay

SHOWN = 5  # skip reasons and unknown ids printed per split


def check_split(
    spec: DatasetSpec,
    split: str,
    side: str,
    split_field: str,
    require_labels: bool,
    args: argparse.Namespace,
    data: DataConfig,
) -> bool:
    """Print one split's summary; return whether prepare would accept it."""
    folder = getattr(spec, split_field)
    what = f"data.{side} ({spec.kind})"
    print(
        f"\n== {split}: data.{side}, kind {spec.kind}, root {spec.root}"
        + (f", {split_folder(spec.images, folder)}" if spec.kind == "folder" else "")
    )
    try:
        index = index_split(spec, folder, require_labels, what)
        label_ids = label_ids_for(spec.kind, spec.label_map, f"data.{side}.label_map")
    except DatasetError as err:
        print(f"error: {err}")
        return False
    samples = index.samples
    step = max(1, len(samples) // args.frames) if args.frames else 1
    checked = samples[::step][: args.frames] if args.frames else samples
    print(
        f"frames: {len(samples)} indexed, {len(index.skipped)} files passed over; decoding "
        f"{len(checked)}" + (" (every frame)" if len(checked) == len(samples) else "")
    )
    sizes: Counter[tuple[int, int]] = Counter()
    pixels = np.zeros(NUM_CLASSES + 1, dtype=np.int64)  # the 19 classes, then ignore
    unknown: Counter[str] = Counter()
    reasons = [f"{item.file}: {item.reason}" for item in index.skipped]
    kept = overlays = 0
    for sample in checked:
        decoded = decode_sample(
            sample, data.size, True, label_ids, max_unknown_share=data.max_unknown_share
        )
        if sample.label is not None:
            try:
                ids = label_ids.read(sample.label)
                for value, count in label_ids.unknown_ids(ids).items():
                    unknown[label_ids.describe(value)] += count
            except (ImageReadError, OSError):
                pass  # decode_sample gave the reason
        if decoded.skipped is not None:
            reasons.append(f"{decoded.skipped.file}: {decoded.skipped.reason}")
            continue
        kept += 1
        with Image.open(sample.image) as image:
            sizes[image.size] += 1
        native = decoded.label_native
        if native is not None:
            counts = np.bincount(np.minimum(native.ravel(), NUM_CLASSES), minlength=NUM_CLASSES + 1)
            pixels += counts
            if overlays < args.n_overlays:
                path = args.overlays / split / f"{sample.name.replace('/', '__')}.png"
                write_png(path, overlay(decoded.image, decoded.label))
                overlays += 1
    print(f"kept by prepare: {kept} of {len(checked)} decoded")
    if sizes:
        (w_min, h_min), (w_max, h_max) = min(sizes), max(sizes)
        print(f"resolution: {w_min}x{h_min} to {w_max}x{h_max} ({len(sizes)} distinct)")
    if pixels.sum():
        share = pixels / pixels.sum()
        order = np.argsort(-share[:NUM_CLASSES])
        print("classes after the label map (pixel share):")
        cells = [f"{CLASS_NAMES[i]} {share[i]:.1%}" for i in order if pixels[i]]
        print("  " + ", ".join(cells) + f"; ignore {share[NUM_CLASSES]:.1%}")
        absent = [CLASS_NAMES[i] for i in range(NUM_CLASSES) if not pixels[i]]
        if absent:
            print(f"  absent: {', '.join(absent)}")
    elif require_labels:
        print("classes: no labelled frame kept")
    if unknown:
        listed = ", ".join(f"{value} ({count} px)" for value, count in unknown.most_common(SHOWN))
        more = len(unknown) - SHOWN
        print(f"ids outside the label map: {listed}" + (f" and {more} more" if more > 0 else ""))
    if reasons:
        print(f"skipped ({len(reasons)}):")
        for reason in reasons[:SHOWN]:
            print(f"  {reason}")
        if len(reasons) > SHOWN:
            print(f"  ... and {len(reasons) - SHOWN} more")
    if overlays:
        print(f"overlays: {args.overlays / split}/ ({overlays})")
    return kept > 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="sim2real-check-data",
        description="Check a dataset's settings, labels and label map before dvc repro.",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "-P", "--profile", action="append", default=[], help="a profile applied first"
    )
    parser.add_argument(
        "-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="as dvc exp run -S"
    )
    parser.add_argument(
        "--frames", type=int, default=200, help="frames decoded per split, evenly spaced; 0: all"
    )
    parser.add_argument("--overlays", type=Path, default=Path("reports/check_data"))
    parser.add_argument("--n-overlays", type=int, default=4, help="overlays written per split")
    args = parser.parse_args(argv)
    try:
        data = profile_params(args.profile, args.params, args.set).data
    except ConfigError as err:
        sys.exit(f"error: {err}")
    specs = {"source": data.source, "target": data.target}
    ok = True
    try:
        for split, (side, split_field, require_labels) in SPLITS.items():
            ok &= check_split(specs[side], split, side, split_field, require_labels, args, data)
    except OutputError as err:
        sys.exit(f"error: {err}")
    if not ok:
        sys.exit("error: at least one split would stop the prepare stage (see above)")


if __name__ == "__main__":
    main()
