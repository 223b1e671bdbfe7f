#!/usr/bin/env bash
# Create .venv (once) and install the project with its dev tools. Idempotent and offline-safe:
# torch 2.14.1 / torchvision 0.29.1 come from the machine's local wheel store when it has one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# Skip the (slow) resolver pass when the installed project already matches pyproject.toml.
stamp=".venv/.sim2real-installed"
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[dev]'
  cp pyproject.toml "$stamp"
fi
