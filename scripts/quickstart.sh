#!/usr/bin/env bash
# The README's main job: install terrafm into .venv (idempotent), then run the whole pipeline on the
# built-in world: generate it, pretrain a small TerraFM, evaluate it against random init, and write
# runs/quickstart/report.md and summary.json with plots. About 15 minutes on a 2-core CPU.
# Arguments go to `terrafm quickstart` (e.g. --seed 1, --out DIR, --ablate fusion, --ablation-table).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/terrafm quickstart "$@"
