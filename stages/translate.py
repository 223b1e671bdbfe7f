"""dvc stage `translate`: every sim frame through gen_sim2real, same names, so labels line up.

Writes the translated split (readable by PreparedSplit.open) and the colour-statistics
distance to real_train before and after translation; the scores are also logged to the
CycleGAN training run named in <generator folder>/run.json.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline import dist, runtime
from pipeline.config import load_params
from pipeline.data.prepare import PreparedSplit
from pipeline.io import read_json, write_json
from pipeline.models.generator_folder import load_trained_generator
from pipeline.tracking import open_tracker
from pipeline.translate import channel_stats, domain_shift_report, translate_split
from pipeline.weights import SUFFIX as WEIGHTS_SUFFIX

# Frames shown side by side (sim over translated) in the MLflow run.
SHOWN_FRAMES = 4


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True, help="prepared splits folder")
    parser.add_argument("--generator", type=Path, required=True, help="train_cyclegan's --out")
    parser.add_argument("--out", type=Path, required=True, help="translated split folder")
    parser.add_argument("--metrics", type=Path, required=True, help="scores (JSON)")
    args = parser.parse_args(argv)
    params = load_params()
    config = params.translate
    dist.init()
    try:
        runtime.set_threads(config.threads)
        device = runtime.pick_device()
        generator = load_trained_generator(args.generator / f"gen_sim2real{WEIGHTS_SUFFIX}", device)
        sim = PreparedSplit.open(args.prepared / "sim")
        real = PreparedSplit.open(args.prepared / "real_train")
        with ThreadPoolExecutor(1) as background:
            # Rank 0 counts the real frames' colours while the sim frames translate.
            real_stats = background.submit(
                channel_stats, real.images if dist.is_main() else real.images[:0], config.workers
            )
            result = translate_split(
                generator,
                sim.images,
                sim.names,
                args.out,
                config.batch,
                config.precision,
                device,
                inputs=[args.prepared / "sim"],
                workers=config.workers,
            )
            start = time.perf_counter()
            target = real_stats.result()
        if not dist.is_main():
            return
        translated = PreparedSplit.open(args.out)
        scores = domain_shift_report(result.source_stats, result.translated_stats, target)
        metrics = {
            **scores,
            **result.summary(),
            "precision": runtime.resolve_precision(config.precision, device),
            "score_seconds": round(time.perf_counter() - start, 3),
        }
        write_json(args.metrics, metrics)
        print(", ".join(f"{k}: {v}" for k, v in metrics.items()))

        run_id = read_json(args.generator / "run.json").get("run_id")
        if params.tracking.enabled and run_id:
            tracker = open_tracker(
                True, params.tracking.experiment, run_name="train_cyclegan", run_id=run_id
            )
            tracker.log_metrics(
                {f"translate_{k}": v for k, v in metrics.items() if isinstance(v, float | int)}
            )
            shown = min(SHOWN_FRAMES, len(sim.names))
            strip = np.concatenate(
                [
                    np.concatenate(list(sim.images[:shown]), axis=1),
                    np.concatenate(list(translated.images[:shown]), axis=1),
                ],
                axis=0,
            )
            tracker.log_image("translate_samples", strip)
            tracker.finish()
    finally:
        dist.cleanup()


if __name__ == "__main__":
    main()
