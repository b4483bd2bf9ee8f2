#!/usr/bin/env bash
# Create .venv-imagededup: a separate environment holding imagededup (idealo), used only by the side-by-side
# benchmark scripts/bench_duplicates.py, which runs scripts/imagededup_hashes.py inside it. imagededup is never
# a dependency of vecsearch: its 0.3 releases pull torch, torchvision, scikit-learn and matplotlib for the
# CNN method, which the benchmark does not use (it runs PHash and DHash only).
# Safe to run again: it installs only when the pinned version is not already there. Prints the versions.
#
#     scripts/setup_imagededup.sh            # PYTHON=python3.11, VENV=.venv-imagededup by default
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv-imagededup}
IMAGEDEDUP_VERSION=${IMAGEDEDUP_VERSION:-0.3.3.post2}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" - "$IMAGEDEDUP_VERSION" 2>/dev/null <<'EOF'; then
import sys
from importlib.metadata import version

from imagededup.methods import DHash, PHash  # noqa: F401  (the hashing code imports)

sys.exit(0 if version("imagededup") == sys.argv[1] else 1)
EOF
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "imagededup==$IMAGEDEDUP_VERSION"
fi
"$VENV/bin/python" - <<'EOF'
import sys
from importlib.metadata import version

print(f"python {sys.version.split()[0]}")
for name in ("imagededup", "numpy", "Pillow", "PyWavelets", "scipy", "torch"):
    try:
        print(f"{name} {version(name)}")
    except Exception:
        print(f"{name} (not installed)")
EOF
