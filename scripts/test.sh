#!/usr/bin/env bash
# Set up (if needed) and run the test suite, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest "$@"
