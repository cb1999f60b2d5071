#!/usr/bin/env python3
"""Why a random forest tells generated cells from real ones: per-cell and per-gene summaries
of a `celldiff demo --data FILE -o DIR` output (DIR/generated_ddpm.h5ad against the held-out
cells of DIR/split.json), the RF AUC on PCA-50 (sklearn, the protocol of `celldiff evaluate`),
the principal components the forest relies on, and the mean/variance of the most expressed
genes in log1p(normalize_total(1e4)) space.

Usage: python bench/realism_diag.py DIR [--data FILE]   (FILE: raw counts; default the
embedded demo data). Needs anndata, scikit-learn (scanpy's venv .venv-ci has both).
Used for the "What was tried" notes of docs/RESULTS.md (issue 18): generated cells of the
first NB build had 3–4x the real variance on the top genes.
"""
import argparse
import json
import sys

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir")
    p.add_argument("--data", default="data/demo/pbmc68k_reduced_counts.h5ad")
    a = p.parse_args()
    try:
        split = json.load(open(f"{a.dir}/split.json"))
        g = ad.read_h5ad(f"{a.dir}/generated_ddpm.h5ad")
    except (OSError, ValueError) as e:
        sys.exit(f"realism_diag: {a.dir}: not a `celldiff demo -o` folder ({e})")
    if "log1p_norm" not in g.layers:
        sys.exit(f"realism_diag: {a.dir}/generated_ddpm.h5ad: no layers['log1p_norm'] (not an NB run)")
    A = ad.read_h5ad(a.data)
    X = A.X.toarray() if sp.issparse(A.X) else np.asarray(A.X)
    H = X[split["heldout"]][:, A.var_names.get_indexer(g.var_names)]
    Lall = X[split["heldout"]].sum(1, keepdims=True)
    real = np.log1p(H * 1e4 / Lall)
    gen = np.asarray(g.layers["log1p_norm"])
    C = g.X.toarray() if sp.issparse(g.X) else np.asarray(g.X)
    print("median library (model genes): real", np.median(H.sum(1)), "generated", np.median(C.sum(1)))
    print("detected genes per cell: real", (H > 0).sum(1).mean(), "generated", (C > 0).sum(1).mean())
    Z = np.vstack([real, gen])
    y = np.r_[np.zeros(len(real)), np.ones(len(gen))]
    P = PCA(50).fit_transform(Z)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, stratify=y, random_state=0)
    rf = RandomForestClassifier(1000, max_depth=5, random_state=0).fit(P[tr], y[tr])
    print("RF AUC (PCA-50)", roc_auc_score(y[te], rf.predict_proba(P[te])[:, 1]))
    top = np.argsort(-rf.feature_importances_)[:5]
    print("most used PCs", top, rf.feature_importances_[top].round(3))
    mr, mg, vr, vg = real.mean(0), gen.mean(0), real.var(0), gen.var(0)
    idx = np.argsort(-mr)[:10]
    print("top-10 genes by real mean: mean real", mr[idx].round(2), "generated", mg[idx].round(2))
    print("                           var  real", vr[idx].round(2), "generated", vg[idx].round(2))


if __name__ == "__main__":
    main()
