#!/usr/bin/env bash
# Interpolation checks on real data (docs/RESULTS.md, issue 3). Needs the runs
#   celldiff train --data $W --log1p --labels-key state_info --seed 0 --out runs/weinreb
#   celldiff train --data $K --labels-key cell_type --seed 0 --out runs/kang_full
# Prints one JSON line per interpolation (stdout of `celldiff interpolate`).
# WEINREB_RUN / KANG_RUN name other runs (e.g. trained with --prior flow).
set -euo pipefail
WR=${WEINREB_RUN:-runs/weinreb}
KR=${KANG_RUN:-runs/kang_full}
B=${CELLDIFF:-./target/release/celldiff}
W=../shared/data/weinreb_larry_hematopoiesis_subset/test_adata_preprocessed.h5ad
K=../shared/data/kang_pbmc_ifnb_valid/valid_kang.h5ad
O=${1:-runs/interp}
mkdir -p "$O"
wi() { name=$1; shift; $B -q interpolate --run $WR --data $W --key state_info \
  --from undiff --to Monocyte --seed 0 --force -o "$O/weinreb_$name.h5ad" "$@"; }
wi default
wi draws1 --noise-draws 1
wi inversion --encode ddim
wi slerp --path slerp
wi k500 --t-start 500
wi k200 --t-start 200
wi latent --method latent
wi latent_k300 --method latent --t-start 300
wi ddpm --sampler ddpm
for ct in CD4T CD14+Mono B CD8T NK FCGR3A+Mono Dendritic; do
  for extra in "" "--noise-draws 1" "--encode ddim"; do
    tag=$(echo "$extra" | tr -d ' -')
    $B -q interpolate --run $KR --data $K --key condition --from control \
      --to stimulated --where "cell_type=$ct" --genes ISG15,CXCL10,B2M --seed 0 --force \
      -o "$O/kang_$ct$tag.h5ad" $extra
  done
done
# Seed study: one forward draw per cell (the paper) vs 16 on the smallest Kang groups.
for s in 1 2 3; do
  for ct in CD8T Dendritic FCGR3A+Mono; do
    for d in 1 16; do
      $B -q interpolate --run $KR --data $K --key condition --from control \
        --to stimulated --where "cell_type=$ct" --noise-draws $d --seed $s --force \
        -o "$O/kang_seeds_tmp.h5ad"
    done
  done
done
rm -f "$O"/kang_seeds_tmp*
