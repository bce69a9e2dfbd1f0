#!/usr/bin/env bash
# Create .venv (if missing) and install terrafm with its test tools. Idempotent and quiet.
# TERRAFM_EXTRAS="terratorch,torchgeo" also installs those optional extras (CI sets it; about 80 s
# on top of a fresh install, no change to the torch pins).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# torch/torchvision pinned to the builds this project is tested with (CPU runs fine on them).
.venv/bin/pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
extras="dev${TERRAFM_EXTRAS:+,${TERRAFM_EXTRAS}}"
.venv/bin/pip install -q --disable-pip-version-check -e ".[${extras}]" "torch==2.14.1" "torchvision==0.29.1"
