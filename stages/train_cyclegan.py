"""dvc stage `train_cyclegan`: unpaired sim <-> real CycleGAN on the prepared splits.

Resumes from the newest checkpoint in --out/checkpoints. Under torchrun every rank trains on
its own samples; rank 0 saves, logs to MLflow and writes the outputs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline import dist
from pipeline.config import load_params
from pipeline.data.prepare import PreparedSplit
from pipeline.io import write_json
from pipeline.tracking import check_tracking, open_tracker
from pipeline.train.checkpoint import claim_checkpoint_folder, record_run, run_fingerprint
from pipeline.train.cyclegan import RESUME_KEYS, train_cyclegan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True, help="prepared splits folder")
    parser.add_argument("--out", type=Path, required=True, help="model folder")
    parser.add_argument("--metrics", type=Path, required=True, help="final metrics (JSON)")
    parser.add_argument("--curves", type=Path, required=True, help="loss curves (CSV)")
    args = parser.parse_args(argv)
    params = load_params()
    start = time.perf_counter()
    dist.init()
    try:
        if params.tracking.enabled and dist.is_main():
            check_tracking()
        sim = PreparedSplit.open(args.prepared / "sim").images
        real = PreparedSplit.open(args.prepared / "real_train").images
        checkpoints = args.out / "checkpoints"
        settings = {key: getattr(params.cyclegan, key) for key in RESUME_KEYS}
        fingerprint = run_fingerprint(
            settings, [args.prepared / "sim", args.prepared / "real_train"]
        )
        run_id = claim_checkpoint_folder(checkpoints, fingerprint) if dist.is_main() else None
        dist.barrier()
        tracker = open_tracker(
            params.tracking.enabled,
            params.tracking.experiment,
            run_name="train_cyclegan",
            tags={"stage": "train_cyclegan", "variant": "cyclegan"},
            run_id=run_id,
            is_main=dist.is_main(),
        )
        if dist.is_main():
            record_run(checkpoints, fingerprint, tracker.run_id)
        tracker.log_data({"training": [args.prepared / "sim", args.prepared / "real_train"]})
        status = "FAILED"
        try:
            metrics = train_cyclegan(
                params.cyclegan, sim, real, args.out, tracker, curves_path=args.curves
            )
            status = "FINISHED"
        except (KeyboardInterrupt, SystemExit):
            status = "KILLED"
            raise
        finally:
            tracker.finish(status)
        if dist.is_main():
            metrics["wall_seconds"] = round(time.perf_counter() - start, 3)
            write_json(args.metrics, metrics)
            write_json(args.out / "run.json", {"run_id": tracker.run_id})
    finally:
        dist.cleanup()


if __name__ == "__main__":
    main()
