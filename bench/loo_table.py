#!/usr/bin/env python3
"""Markdown table of the Kang leave-one-cell-type-out perturbation runs (bench/kang_loo.sh).

Usage: python3 bench/loo_table.py runs/loo
Reads <dir>/<cell type>/<variant>_metrics.json (written by `celldiff perturb`).
"""
import json
import sys
from pathlib import Path

VARIANTS = [
    ("vae", "VAE space (scGen)"),
    ("diffusion", "diffusion K=T"),
    ("diffusion_k500", "diffusion K=500"),
    ("diffusion_k200", "diffusion K=200"),
    ("diffusion_forward", "diffusion K=T, forward"),
    ("diffusion_k100", "diffusion K=100"),
    ("diffusion_k50", "diffusion K=50"),
    ("vae_delta100", "VAE, δ from 100 cells"),
    ("diffusion_k200_delta100", "diffusion K=200, δ from 100 cells"),
]


def main(root):
    root = Path(root)
    types = sorted(p.name for p in root.iterdir() if (p / "vae_metrics.json").exists())
    for key, title in [("r2_mean_all", "R² of means, all genes"),
                       ("r2_mean_top", "R² of means, top-100 DEGs"),
                       ("r2_var_top", "R² of variances, top-100 DEGs")]:
        print(f"\n{title}:\n")
        print("| cell type | control (no response) | " + " | ".join(t for _, t in VARIANTS) + " |")
        print("|---" * (len(VARIANTS) + 2) + "|")
        wins = {v: 0 for v, _ in VARIANTS}
        sums = {v: 0.0 for v, _ in VARIANTS}
        for ct in types:
            row = []
            ms = {}
            for v, _ in VARIANTS:
                f = root / ct / f"{v}_metrics.json"
                ms[v] = json.loads(f.read_text()) if f.exists() else None
            base = ms["vae"]
            ctrl = base["r2_mean_top_control"] if key == "r2_mean_top" else None
            for v, _ in VARIANTS:
                m = ms[v]
                if m is None:
                    row.append("–")
                    continue
                sums[v] += m[key]
                if v != "vae" and m[key] > base[key]:
                    wins[v] += 1
                row.append(f"{m[key]:.3f}")
            print(f"| {ct} | {ctrl:.3f} | " if ctrl is not None else f"| {ct} | | ", end="")
            print(" | ".join(row) + " |")
        n = len(types)
        print("| mean | | " + " | ".join(f"{sums[v] / n:.3f}" for v, _ in VARIANTS) + " |")
        print("| beats VAE space | | – | " + " | ".join(
            f"{wins[v]}/{n}" for v, _ in VARIANTS[1:]) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/loo")


def seeds_table(root):
    """VAE space vs diffusion K=200 over seeds 0, 1, 2 (the balancing draws behind δ)."""
    root = Path(root)
    print("\nR² of means, top-100 DEGs, seeds 0 / 1 / 2 (mean):\n")
    print("| cell type | VAE space (scGen) | diffusion K=200 |")
    print("|---|---|---|")
    for ct in sorted(p.name for p in root.iterdir() if (p / "vae_metrics.json").exists()):
        cells = []
        for stem in ["vae", "diffusion_k200"]:
            files = [root / ct / f"{stem}_metrics.json"] + [
                root / ct / f"{stem}_seed{s}_metrics.json" for s in (1, 2)]
            if not all(f.exists() for f in files):
                cells.append("–")
                continue
            v = [json.loads(f.read_text())["r2_mean_top"] for f in files]
            cells.append(" / ".join(f"{x:.3f}" for x in v) + f" ({sum(v) / len(v):.3f})")
        print(f"| {ct} | " + " | ".join(cells) + " |")


if __name__ == "__main__" and len(sys.argv) > 1:
    seeds_table(sys.argv[1])
