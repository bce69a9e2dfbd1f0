#!/usr/bin/env bash
# Create .venv (if missing) and install terrafm with its test tools. Idempotent and quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# torch/torchvision pinned to the builds this project is tested with (CPU runs fine on them).
.venv/bin/pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
