#!/usr/bin/env bash
# Create .venv and install vecsearch (editable) with what the tests need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch first, pinned, so that open-clip-torch does not pull a different build.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
.venv/bin/python -m pip install --quiet -e ".[test]"
