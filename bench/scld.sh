#!/usr/bin/env bash
# SCLD results of docs/RESULTS.md (issue 4): holistic and per-cluster AUC/MMD, ω sweep and UMAP
# figures on pbmc68k_reduced (bulk_labels and Leiden clusters) and the brain 10k subset (Leiden).
# Each scld-bench call trains scVAEDer and SCLD on the same 80 % of the cells (seed 0) and
# evaluates on the held-out 20 %. Usage: bench/scld.sh [OUT_DIR]   (default runs/scld)
set -euo pipefail
cd "$(dirname "$0")/.."
O=${1:-runs/scld}
B=./target/release/celldiff
S=../shared/data
mkdir -p "$O"
$B cluster --data $S/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad -o "$O/pbmc68k_leiden.h5ad" --force
$B cluster --data $S/mouse_brain_1m_10k_subset/brain_1m_10k_cells_1000_genes.h5ad -o "$O/brain_leiden.h5ad" --force
$B scld-bench --data $S/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad --condition-key bulk_labels -o "$O/pbmc68k_bulk" --force
# The pbmc68k Leiden figures in docs/RESULTS.md come from commit 8ec7705 (its Scorer looked at
# latents; today's equivalent is --scorer-space latent, same numbers except the +post rows).
$B scld-bench --data "$O/pbmc68k_leiden.h5ad" --condition-key leiden --scorer-space latent -o "$O/pbmc68k_leiden" --force
# Brain: DDIM-50 for every model (DDPM-1000 of 2000 guided cells takes ~6 min per row on 2 cores).
$B scld-bench --data "$O/brain_leiden.h5ad" --condition-key leiden --sampler ddim -o "$O/brain_leiden" --force
