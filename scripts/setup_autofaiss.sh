#!/usr/bin/env bash
# Create .venv-autofaiss: a separate environment holding autofaiss (criteo), used only by the side-by-side
# benchmark scripts/autofaiss_build.py and scripts/autofaiss_search.py. autofaiss is never a dependency of
# vecsearch: it needs numpy<2 (numpy 1.26 here, with pyarrow<21, a pyarrow that works with numpy 1.26), and
# it would drag pandas, pyarrow, fire and embedding-reader into the project.
# Safe to run again: it installs only when the pinned versions are not already there. Prints the versions.
#
#     scripts/setup_autofaiss.sh            # PYTHON=python3.11 by default
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=.venv-autofaiss
AUTOFAISS_VERSION=2.18.0
# autofaiss 2.18 accepts faiss-cpu>=1,<2; 1.15.1 is the newest (its OPQMatrix rejects autofaiss's keyword
# arguments, which scripts/autofaiss_build.py works around).
FAISS_VERSION=1.15.1
NUMPY_SPEC="numpy==1.26.*"
PYARROW_SPEC="pyarrow<21"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
if ! "$VENV/bin/python" - "$AUTOFAISS_VERSION" "$FAISS_VERSION" 2>/dev/null <<'EOF'; then
import sys
from importlib.metadata import version

import faiss  # noqa: F401  (the wheel loads)
import numpy
import pyarrow

ok = (
    version("autofaiss") == sys.argv[1]
    and version("faiss-cpu") == sys.argv[2]
    and numpy.__version__.startswith("1.26.")
    and int(pyarrow.__version__.split(".")[0]) < 21
)
sys.exit(0 if ok else 1)
EOF
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet \
        "autofaiss==$AUTOFAISS_VERSION" "faiss-cpu==$FAISS_VERSION" "$NUMPY_SPEC" "$PYARROW_SPEC"
fi
"$VENV/bin/python" - <<'EOF'
import sys
from importlib.metadata import version

print(f"python {sys.version.split()[0]}")
for name in ("autofaiss", "faiss-cpu", "numpy", "pyarrow", "pandas", "embedding-reader"):
    print(f"{name} {version(name)}")
EOF
