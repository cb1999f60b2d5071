#!/usr/bin/env python3
"""Prints the markdown table of docs/RESULTS.md from `celldiff demo -o DIR` outputs.

Usage: python3 bench/results_table.py runs/pbmc68k runs/kang runs/brain
"""
import json
import sys

print("| dataset | method | rf_auc | knn_auc | mmd | mean_pearson | var_pearson | n_real |")
print("|---|---|---|---|---|---|---|---|")
for d in sys.argv[1:]:
    m = json.load(open(f"{d}/metrics.json"))
    for r in m["rows"]:
        print(f"| {d.split('/')[-1]} | {r['method']} | {r['rf_auc']:.3f} | {r['knn_auc']:.3f} | "
              f"{r['mmd']:.4f} | {r['mean_pearson']:.4f} | {r['var_pearson']:.4f} | {r['n_real']} |")
print()
print("| dataset | VAE train s | diffusion train s | observation fit s | DDPM-1000 sample s | DDIM-50 sample s | total s |")
print("|---|---|---|---|---|---|---|")
for d in sys.argv[1:]:
    s = json.load(open(f"{d}/metrics.json"))["seconds"]
    print(f"| {d.split('/')[-1]} | {s['train_vae']:.1f} | {s['train_diffusion']:.1f} | "
          f"{s['train_observation']:.1f} | {s['sample_diffusion-ddpm']:.1f} | "
          f"{s['sample_diffusion-ddim50']:.2f} | {s['total']:.1f} |")
