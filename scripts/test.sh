#!/usr/bin/env bash
# Install everything into .venv, then lint (ruff), type-check (mypy on src/) and run the test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "slow or dist"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy src
if [ "$#" -eq 0 ]; then
  set -- -m "not slow and not dist and not gpu and not acceptance"
fi
.venv/bin/python -m pytest -n 2 "$@"
