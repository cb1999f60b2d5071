#!/usr/bin/env python3
"""Side-by-side summary of several Kang leave-one-cell-type-out runs (bench/kang_loo.sh then
bench/kang_loo_variants.sh, each with its TRAIN_ARGS): per metric, the mean R² over the seven
types for each variant, and in brackets on how many types the diffusion space beats the VAE
space of the same run.

Usage: python3 bench/loo_compare.py "NAME=runs/loo" "NAME2=runs/loo_flow" ...
Reads <dir>/<cell type>/<variant>_metrics.json (written by `celldiff perturb`).
"""
import json
import sys

VARIANTS = [
    ("vae", "VAE space (scGen)"),
    ("diffusion", "K=T"),
    ("diffusion_k500", "K=500"),
    ("diffusion_k200", "K=200"),
    ("diffusion_k100", "K=100"),
    ("diffusion_k50", "K=50"),
    ("diffusion_forward", "K=T, forward"),
]
TYPES = ["CD4T", "CD8T", "B", "NK", "CD14+Mono", "FCGR3A+Mono", "Dendritic"]
METRICS = [
    ("r2_mean_top", "R² of means, top-100 DEGs"),
    ("r2_mean_all", "R² of means, all genes"),
    ("r2_var_top", "R² of variances, top-100 DEGs"),
]


def main(args):
    runs = [a.split("=", 1) for a in args]
    for key, title in METRICS:
        print(f"\n{title}, mean over the 7 types (types where the diffusion space beats the VAE space):\n")
        print("| run | " + " | ".join(t for _, t in VARIANTS) + " |")
        print("|---" * (len(VARIANTS) + 1) + "|")
        for name, root in runs:
            vals = {
                v: [json.load(open(f"{root}/{t}/{v}_metrics.json"))[key] for t in TYPES]
                for v, _ in VARIANTS
            }
            cells = []
            for v, _ in VARIANTS:
                m = sum(vals[v]) / len(TYPES)
                if v == "vae":
                    cells.append(f"{m:.3f}")
                else:
                    wins = sum(1 for a, b in zip(vals[v], vals["vae"]) if a > b)
                    cells.append(f"{m:.3f} ({wins}/7)")
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
