#!/usr/bin/env bash
# DiffVAE / Graph-DiffVAE results of docs/RESULTS.md (issue 5): the clustering benchmark
# (Table 2) on pbmc68k_reduced, Weinreb and Kang; Graph-DiffVAE link prediction on Weinreb and
# Kang; the classifier and the latent perturbations on Weinreb (undiff → Monocyte, Neutrophil).
# Usage: bench/diffvae.sh [OUT_DIR] [REPEATS]   (defaults runs/diffvae, 5; the issue's 50
# repeats take ~10× longer: ~6 min per repeat on pbmc68k on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
O=${1:-runs/diffvae}
R=${2:-5}
B=./target/release/celldiff
S=../shared/data
PBMC=$S/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad
WEINREB=$S/weinreb_larry_hematopoiesis_subset/test_adata_preprocessed.h5ad
KANG=$S/kang_pbmc_ifnb_valid/valid_kang.h5ad
mkdir -p "$O"
$B identify-bench --data $PBMC --labels-key bulk_labels --repeats "$R" --seed 0 -o "$O/identify_pbmc68k" --force
# Weinreb (2000 genes) and Kang (2.8× the cells of pbmc68k): 3 repeats in docs/RESULTS.md, for time.
$B identify-bench --data $WEINREB --labels-key state_info --repeats 3 --seed 0 -o "$O/identify_weinreb" --force
$B identify-bench --data $KANG --labels-key cell_type --repeats 3 --seed 0 -o "$O/identify_kang" --force
$B graph --data $WEINREB --seed 0 -o "$O/graph_weinreb/out.h5ad" --force
$B graph --data $KANG --seed 0 -o "$O/graph_kang/out.h5ad" --force
$B classify train --data $WEINREB --labels-key state_info --seed 0 -o "$O/classifier_weinreb" --force
$B shift --data $WEINREB --labels-key state_info --source undiff --target Monocyte,Neutrophil,Baso --lambda 0.5,1,2,3 \
  --classifier "$O/classifier_weinreb" --seed 0 -o "$O/shift_weinreb" --force
