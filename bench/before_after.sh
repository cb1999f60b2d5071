#!/usr/bin/env bash
# Before/after table of issue 6's speed work: ROUNDS rounds, each running the current build,
# an older build (OLD, a celldiff binary) and the PyTorch reference back to back through
# bench/compare.sh, so that every ratio comes from one run on the same machine state.
# Usage: bench/before_after.sh PYTHON OLD [THREADS] [SAMPLE_CELLS] [ROUNDS] > runs.txt
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$1
OLD=$2
T=${3:-2}
N=${4:-1000}
R=${5:-3}
for r in $(seq "$R"); do
  echo "## round $r: current"
  bench/compare.sh "$PY" "$T" "$N"
  echo "## round $r: old ($OLD)"
  CELLDIFF="$OLD" bench/compare.sh "$PY" "$T" "$N"
done
