#!/usr/bin/env bash
# The checks a change passes before it is committed (CI runs them before the tests, and fails on them):
# ruff's lint rules and formatting over the code, the tests and the scripts, and mypy over vecsearch/.
# `scripts/lint.sh --fix` lets ruff fix what it can and format the code first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ "${1:-}" = "--fix" ]; then
    .venv/bin/ruff check --fix vecsearch tests scripts
    .venv/bin/ruff format vecsearch tests scripts
fi
.venv/bin/ruff check vecsearch tests scripts
.venv/bin/ruff format --check vecsearch tests scripts
.venv/bin/mypy
