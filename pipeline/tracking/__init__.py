"""Tracking: what the loops log to, and the MLflow runs and store behind it.

- `base`: the `Tracker` interface loops and stages annotate with, `NullTracker` and
  `TrackingError`; it imports no mlflow, so the loops and the benchmarks import without it.
- `runs`: `MlflowTracker` (one MLflow run), `open_tracker`, `reopen_run`, `search_runs` and the
  tags every run carries.
- `models`: the segmentation pyfunc, the translators' PyTorch models and the model registry.
- `store`: the tracking store (`tracking_uri`, `check_tracking`, `open_store`) and a local
  store whose checkout moved.
- `signals`: a run whose process SIGTERM or SIGHUP ends is ended KILLED first.

Only these modules import mlflow (base and signals not at all).
"""

import os

# MLflow reads its telemetry switch when it is imported: set the default here, before any module
# of the package imports mlflow (a user's own setting wins).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
