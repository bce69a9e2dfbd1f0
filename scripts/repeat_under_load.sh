#!/usr/bin/env bash
# Run one test N times in a row while BUSY busy-loop processes load the CPUs; stop at the first
# failure. The busy loops are this script's own children, each bounded by `timeout`, and are
# stopped by PID on exit.
#   bash scripts/repeat_under_load.sh 20 2 "tests/ssl/test_pretrain_dist.py::test_two_process_resume_is_exact[fsdp]"
set -u
N=${1:?runs} BUSY=${2:?busy loops} TEST=${3:?pytest node id}
PY=${PYTHON:-python}
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap stop EXIT
for _ in $(seq "$BUSY"); do
  timeout "${BUSY_MAX_S:-3600}" "$PY" -c 'while True: pass' &
  pids+=($!)
done
for i in $(seq "$N"); do
  start=$(date +%s)
  if ! "$PY" -m pytest -p no:cacheprovider -n 0 -q -x "$TEST" >"${LOG:-/tmp/repeat_under_load.log}" 2>&1; then
    echo "run $i/$N FAILED ($(($(date +%s) - start)) s, load $(cut -d' ' -f1 /proc/loadavg)); log: ${LOG:-/tmp/repeat_under_load.log}"
    exit 1
  fi
  echo "run $i/$N passed ($(($(date +%s) - start)) s, load $(cut -d' ' -f1 /proc/loadavg))"
done
echo "$N/$N passed in a row"
