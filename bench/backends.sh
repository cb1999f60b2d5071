#!/usr/bin/env bash
# Burn CPU backends on the same workloads, one after the other in one run (docs/RESULTS.md).
# Needs both builds:
#   cargo build --release -p celldiff-cli                                   # flex (default)
#   apt-get install libopenblas-dev
#   CARGO_TARGET_DIR=/tmp/target-openblas cargo build --release -p celldiff-cli \
#       --no-default-features --features openblas-system
# Usage: bench/backends.sh [ROUNDS] (default 3; prints one JSON line per backend and round)
set -euo pipefail
R=${1:-3}
FLEX=./target/release/celldiff
OPENBLAS=${OPENBLAS_BIN:-/tmp/target-openblas/release/celldiff}
ARGS="--quiet bench --json --threads 2 --vae-cells 8192 --denoiser-steps 200 --sample-cells 2000"
for r in $(seq 1 "$R"); do
  for b in flex:$FLEX openblas:$OPENBLAS; do
    name=${b%%:*}; bin=${b#*:}
    echo "{\"backend\": \"$name\", \"round\": $r, \"result\": $($bin $ARGS)}"
  done
done
