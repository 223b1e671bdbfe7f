#!/usr/bin/env bash
# Install, lint, and run the whole test suite (CPU only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The slowest tests are listed at the end: the end-to-end `dvc repro` runs lead.
.venv/bin/python -m pytest --durations=20 "$@"
