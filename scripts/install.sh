#!/usr/bin/env bash
# Create .venv (once) and install exactly the versions in requirements.lock (hashes checked),
# then the project itself, editable. The lock is what reproduces the committed dvc.lock: another
# Pillow writes other PNG bytes for the same demo data. Idempotent and offline-safe: torch 2.14.1 /
# torchvision 0.29.1 come from a local wheel store when pip is configured with one.
# Regenerate the lock with scripts/lock.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Skip the install when the venv already holds this lock and this pyproject.toml.
stamp=".venv/.sim2real-installed"
if [ ! -f "$stamp" ] || ! cat requirements.lock pyproject.toml | cmp -s - "$stamp"; then
  .venv/bin/pip install --quiet --require-hashes --no-deps -r requirements.lock
  # The lock pins the build backend too, so the project installs without fetching anything.
  .venv/bin/pip install --quiet --no-deps --no-build-isolation -e .
  cat requirements.lock pyproject.toml >"$stamp"
fi
