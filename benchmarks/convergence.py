"""Is the segmentation net trained to convergence? A measurement, not a test.

Trains one variant (the oracle by default: the best-posed problem, so the one furthest from
converged if any is) twice with params.yaml's train_seg settings: at `train_seg.iters` and at
`--longer` times as many, each scoring the net on the real val split (working resolution) ten
times along the way. Converged, for issue 13, means: the default run's curve is flat over its last
fifth, and the longer schedule gains under 2 mIoU.

    python -m benchmarks convergence

writes reports/convergence.json and reports/convergence.md (the two curves and the verdict), for
the oracle variant, 3x as many iterations, torch's default threads.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from benchmarks.harness import Results, measurement, table
from pipeline.config import load_params
from pipeline.data.split import PreparedSplit
from pipeline.tracking import NullTracker
from pipeline.train.segmentation import train_segmentation

CHECKS = 10  # validation passes per run


def measure(prepared: Path, variant: str, factor: int, threads: int) -> dict:
    params = load_params()
    base = params.train_seg
    spec = base.variant(variant)
    runs = {}
    for label, iters in (("default", base.iters), (f"{factor}x", factor * base.iters)):
        config = dataclasses.replace(
            base,
            iters=iters,
            val_every=max(1, iters // CHECKS),
            checkpoint_every=iters,
            threads=threads,
        )
        images = PreparedSplit.open(spec.images)
        labels = PreparedSplit.open(spec.labels, need_labels=True)
        val = PreparedSplit.open(prepared / "real_val", need_labels=True)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as out:
            train_segmentation(config, variant, images, labels, None, out, NullTracker(), val)
            rows = (Path(out) / "val_curve.csv").read_text().splitlines()
        curve = [dict(zip(rows[0].split(","), map(float, row.split(",")))) for row in rows[1:]]
        runs[label] = {"iters": iters, "seconds": time.perf_counter() - start, "curve": curve}
    default, longer = runs["default"], runs[f"{factor}x"]
    fifth = [row for row in default["curve"] if row["step"] >= 0.8 * default["iters"]]
    return {
        "variant": variant,
        "settings": {k: v for k, v in dataclasses.asdict(base).items() if k != "variants"},
        "runs": runs,
        "last_fifth_gain": fifth[-1]["monitor_miou"] - fifth[0]["monitor_miou"],
        "longer_gain": longer["curve"][-1]["monitor_miou"] - default["curve"][-1]["monitor_miou"],
    }


@measurement("convergence", page="convergence", section=lambda r: markdown(r))
def convergence(quick: bool) -> Results:
    """Whether the oracle segmentation net converges: the default schedule against 3x as long."""
    prepared = Path("data/prepared")
    if not (prepared / "real_val").is_dir():
        return {"skipped": f"needs {prepared}: run `dvc repro` first"}
    return measure(prepared, "oracle", 3, 0)


def markdown(result: Results) -> str:
    if "skipped" in result:
        return f"Skipped: {result['skipped']}.\n"
    default = result["runs"]["default"]
    longer_label = next(label for label in result["runs"] if label != "default")
    longer = result["runs"][longer_label]
    flat = abs(result["last_fifth_gain"]) < 0.02
    small = result["longer_gain"] < 0.02
    runs = {"default": default, "longer": longer}
    rows = [
        {"step": int(step)}
        | {
            label: next(
                (100 * row["monitor_miou"] for row in run["curve"] if row["step"] == step), None
            )
            for label, run in runs.items()
        }
        for step in sorted({row["step"] for run in runs.values() for row in run["curve"]})
    ]
    columns = [("step", "step")] + [(label, f"{run['iters']} iters") for label, run in runs.items()]
    lines = [
        f"The `{result['variant']}` net: mIoU (%) on the real val split at the working "
        "resolution, ten times per run; params.yaml's train_seg settings, the longer run only "
        "multiplies iters.",
        "",
        table(rows, columns),
        "",
        f"- last fifth of the default run: {100 * result['last_fifth_gain']:+.1f} mIoU "
        f"({'flat' if flat else 'still rising'}: threshold 2.0)",
        f"- {longer_label} schedule: {100 * result['longer_gain']:+.1f} mIoU over the default "
        f"({'under' if small else 'over'} the 2.0 threshold)",
        f"- wall time: {default['seconds']:.0f} s and {longer['seconds']:.0f} s",
    ]
    return "\n".join(lines) + "\n"
