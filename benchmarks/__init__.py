"""Measurements of the pipeline's speed and quality; `python -m benchmarks --list` names them.

No measurement imports mlflow (the training loops log to pipeline.tracking.base's trackers), so
they run on GPU machines without it; tests/test_layers.py checks that.
"""
