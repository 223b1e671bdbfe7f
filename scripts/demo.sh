#!/usr/bin/env bash
# Install, run the whole DVC pipeline on the embedded demo data, print the comparison table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# dvc.yaml runs `python -m ...`: the project venv must come first on PATH.
export PATH="$PWD/.venv/bin:$PATH" DVC_NO_ANALYTICS=1 MLFLOW_DISABLE_TELEMETRY=true
dvc repro "$@"
echo
if [ -f reports/comparison.md ]; then
  cat reports/comparison.md
  echo
  echo "Comparison table: reports/comparison.md (figures in reports/figures/)"
fi
