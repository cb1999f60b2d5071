#!/usr/bin/env bash
# Extra diffusion-space variants on the runs of bench/kang_loo.sh (what helps: K and the
# number of cells behind δ). Usage: bench/kang_loo_variants.sh [OUT_DIR]
set -euo pipefail
B=${CELLDIFF:-./target/release/celldiff}
DATA=../shared/data/kang_pbmc_ifnb_valid/valid_kang.h5ad
OUT=${1:-runs/loo}
for d in "$OUT"/*/; do
  ct=$(basename "$d")
  [ -f "$d/run/config.json" ] || continue
  P="$B -q perturb --run $d/run --data $DATA --predict $ct --force"
  $P --space diffusion --t-start 100 --seed 0 -o "$d/diffusion_k100.h5ad"
  $P --space diffusion --t-start 50 --seed 0 -o "$d/diffusion_k50.h5ad"
  $P --space diffusion --t-start 200 --max-delta-cells 100 --seed 0 -o "$d/diffusion_k200_delta100.h5ad"
  $P --space vae --max-delta-cells 100 --seed 0 -o "$d/vae_delta100.h5ad"
  for s in 1 2; do
    $P --space vae --seed $s -o "$d/vae_seed$s.h5ad"
    $P --space diffusion --t-start 200 --seed $s -o "$d/diffusion_k200_seed$s.h5ad"
  done
done
