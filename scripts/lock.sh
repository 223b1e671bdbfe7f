#!/usr/bin/env bash
# Regenerate requirements.lock: every package scripts/install.sh installs, at one version, with
# the hashes of its files, resolved from pyproject.toml (with the dev extra) by pip-tools.
# Pins already in the lock are kept; `bash scripts/lock.sh --upgrade-package NAME` moves one,
# `--upgrade` moves all. After a move, rerun `dvc repro demo_data prepare` and commit dvc.lock:
# another Pillow or numpy can change the demo data's bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# pip-tools lives in its own venv, so it never lands in the lock or the project's venv.
tools=.venv/lock-tools
if [ ! -x "$tools/bin/pip-compile" ]; then
  "$PYTHON" -m venv "$tools"
  "$tools/bin/pip" install --quiet pip-tools==7.6.2
fi
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$tools/bin/pip-compile" --quiet \
  --generate-hashes --allow-unsafe --strip-extras --extra dev \
  --no-emit-index-url --no-emit-find-links \
  --output-file requirements.lock "$@" pyproject.toml
