#!/usr/bin/env bash
# Leave-one-cell-type-out perturbation prediction on Kang PBMC (docs/RESULTS.md, issue 3).
# For each of the 7 cell types: train scVAEDer on all genes without that type's stimulated
# cells, then predict them from its control cells in the VAE space (scGen) and in the
# diffusion space (scVAEDer), with the same seed. Usage: bench/kang_loo.sh [OUT_DIR] [TYPES...]
# TRAIN_ARGS adds flags to `train` (e.g. "--vae-norm none --vae-activation silu --prior flow").
set -euo pipefail
B=${CELLDIFF:-./target/release/celldiff}
DATA=../shared/data/kang_pbmc_ifnb_valid/valid_kang.h5ad
OUT=${1:-runs/loo}
shift || true
TYPES=("$@")
[ ${#TYPES[@]} -eq 0 ] && TYPES=(CD4T CD14+Mono B CD8T NK FCGR3A+Mono Dendritic)
mkdir -p "$OUT"
for ct in "${TYPES[@]}"; do
  d="$OUT/$ct"
  if [ ! -f "$d/run/config.json" ]; then
    /usr/bin/time -f "%e s train $ct" $B -q train --data "$DATA" --labels-key cell_type \
      --exclude "cell_type=$ct,condition=stimulated" --n-top-genes 0 --no-observation \
      --seed 0 --out "$d/run" --force ${TRAIN_ARGS:-}
  fi
  P="$B -q perturb --run $d/run --data $DATA --predict $ct --seed 0 --force"
  $P --space vae -o "$d/vae.h5ad"
  $P --space diffusion -o "$d/diffusion.h5ad"
  $P --space diffusion --t-start 500 -o "$d/diffusion_k500.h5ad"
  $P --space diffusion --t-start 200 -o "$d/diffusion_k200.h5ad"
  $P --space diffusion --encode forward -o "$d/diffusion_forward.h5ad"
  echo "done $ct"
done
