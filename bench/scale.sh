#!/usr/bin/env bash
# Out-of-core scaling (issue 6): `celldiff train --stream` on simulated counts of 10k, 100k and
# 1M cells × 2000 genes, one VAE epoch and one diffusion epoch each; wall time and peak RSS
# from /usr/bin/time -v, per-stage seconds from the run's config.json. --no-observation: the count
# observation fit costs a fixed ~90 s (its dispersion search uses 2000 cells), not a per-cell cost.
# Usage: bench/scale.sh [DIR] [SIZES...]   (default DIR /tmp/sim, sizes 10000 100000 1000000)
# The simulated files are made once (1M cells: 2.9 GB, ~6 min) and never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/celldiff
DIR=${1:-/tmp/sim}
shift || true
SIZES=${*:-10000 100000 1000000}
mkdir -p "$DIR"
for n in $SIZES; do
  f="$DIR/sim_$n.h5ad"
  [ -f "$f" ] || $BIN -q simulate --cells "$n" --genes 2000 --types 10 --seed 0 -o "$f"
  log="$DIR/train_$n.time"
  /usr/bin/time -v $BIN -q train --data "$f" --stream --epochs-vae 1 --epochs-diffusion 1 --no-observation \
    --seed 0 --out "$DIR/run_$n" --force 2> "$log"
  wall=$(grep "Elapsed (wall clock)" "$log" | awk '{print $NF}')
  rss=$(grep "Maximum resident set size" "$log" | awk '{print $NF}')
  stages=$(python3 -c "import json,sys; c=json.load(open('$DIR/run_$n/config.json')); print(json.dumps({k: round(v, 1) for k, v in c['seconds'].items()}))")
  echo "{\"cells\": $n, \"wall\": \"$wall\", \"max_rss_mb\": $((rss / 1024)), \"seconds\": $stages}"
done
