#!/usr/bin/env bash
# Create ./.venv with dataguard and everything it needs (nnunetv2, torch CPU is fine).
# Idempotent: a second run only checks that the install is complete.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import dataguard, nnunetv2, torchvision, pytest, jsonschema, hypothesis, orjson, pytest_asyncio, pytest_textual_snapshot, jinja2, playwright, monai, medpy" 2>/dev/null; then
  echo "bootstrap: installing dataguard and its dependencies (a few minutes the first time)" >&2
  # pip picks a matching torch/torchvision pair; nnU-Net's trainers import torchvision via timm
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -c "import dataguard, nnunetv2, torchvision, pytest" \
    || { echo "bootstrap: install failed" >&2; exit 1; }
fi
