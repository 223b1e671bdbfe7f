#!/usr/bin/env bash
# Install, lint, and run the whole test suite (CPU only; about 30 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
