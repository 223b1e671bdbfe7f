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
  # uv installs the lock with the same hash checks in under half of pip's time
  # (docs/install.md). uv itself comes from the lock, by hash, through pip; where the lock holds
  # no uv wheel for this platform, pip installs everything.
  uv_pin=.venv/uv-requirement.txt
  sed -n '/^uv==/,/^    # via/p' requirements.lock >"$uv_pin"
  if [ -s "$uv_pin" ] &&
    .venv/bin/pip install --quiet --require-hashes --no-deps -r "$uv_pin" 2>/dev/null; then
    mapfile -t indexes < <(.venv/bin/python scripts/pip_index_args.py)
    # pip's rule: every configured index is searched, the lock's hashes pick the file.
    install=(.venv/bin/uv pip install --quiet --python .venv/bin/python --no-deps
      --index-strategy unsafe-best-match --compile-bytecode "${indexes[@]}")
  else
    install=(.venv/bin/pip install --quiet --no-deps)
  fi
  "${install[@]}" --require-hashes -r requirements.lock
  # The lock pins the build backend too, so the project installs without fetching anything.
  "${install[@]}" --no-build-isolation -e .
  cat requirements.lock pyproject.toml >"$stamp"
fi
