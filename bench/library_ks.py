#!/usr/bin/env python3
"""Library size of generated cells against held-out cells, per cluster (issue 18, section 3):
for each `celldiff demo --data FILE --seed S -o DIR` folder, the KS statistic of ln l
(l = total count over the model genes) between DIR/generated_ddpm.h5ad (obs['n_counts']) and
the held-out cells of DIR/split.json, overall and within clusters.

Clusters: k-means (scikit-learn, k = clamp(round(sqrt(n_heldout / 10)), 2, 10), seed 0) on
PCA-30 of the held-out cells' log1p-normalised model genes; generated cells join the nearest
centroid in that PCA space (their layers['log1p_norm']). Clusters with fewer than 15 cells on
either side are skipped; the summary is the cell-weighted mean of the per-cluster KS and the
largest one. Held-out counts: raw integer counts as they are, or recovered from each cell's
log1p-normalised lattice (expm1(x) / smallest non-zero expm1(x), as celldiff does for Kang).

Usage: python bench/library_ks.py --data FILE DIR [DIR ...] [--json OUT]
Prints one line per DIR and the mean ± sd over DIRs. Needs anndata, scikit-learn, scipy
(bench/.venv-scvi or .venv-ci).
"""
import argparse
import json
import sys

import anndata as ad
import numpy as np
import scipy.sparse as sp
from scipy.stats import ks_2samp
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA


def dense(m):
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def heldout_counts_and_log1p(data, heldout, genes):
    """Model-gene counts and log1p-normalised values of the held-out cells."""
    x = dense(data.X[heldout]).astype(np.float64)
    integer = np.allclose(x, np.round(x))
    cols = data.var_names.get_indexer(genes)
    if (cols < 0).any():
        sys.exit("library_ks: the generated genes are not all in the data file")
    if integer:
        total = x.sum(axis=1, keepdims=True)
        log1p = np.log1p(x / np.maximum(total, 1) * 1e4)
        return x[:, cols], log1p[:, cols]
    e = np.expm1(x)
    pos = np.where(e > 1e-6, e, np.inf).min(axis=1, keepdims=True)
    pos[~np.isfinite(pos)] = 1.0
    counts = np.round(e / pos)
    return counts[:, cols], x[:, cols]


def one(folder, data):
    split = json.load(open(f"{folder}/split.json"))
    g = ad.read_h5ad(f"{folder}/generated_ddpm.h5ad")
    if "log1p_norm" not in g.layers or "n_counts" not in g.obs:
        sys.exit(f"library_ks: {folder}/generated_ddpm.h5ad has no counts (not an NB run)")
    counts, real = heldout_counts_and_log1p(data, split["heldout"], g.var_names)
    ln_real = np.log(np.maximum(counts.sum(axis=1), 1.0))
    ln_gen = np.log(np.maximum(g.obs["n_counts"].to_numpy(dtype=float), 1.0))
    gen = dense(g.layers["log1p_norm"]).astype(np.float64)
    n = real.shape[0]
    k = int(min(max(round((n / 10) ** 0.5), 2), 10))
    pca = PCA(n_components=min(30, n - 1, real.shape[1]), random_state=0).fit(real)
    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(pca.transform(real))
    lab_r, lab_g = km.labels_, km.predict(pca.transform(gen))
    per = []
    for c in range(k):
        a, b = ln_real[lab_r == c], ln_gen[lab_g == c]
        if len(a) >= 15 and len(b) >= 15:
            per.append((len(a), ks_2samp(a, b).statistic))
    w = sum(m for m, _ in per)
    return {
        "dir": folder,
        "ks_overall": float(ks_2samp(ln_real, ln_gen).statistic),
        "ks_cluster_mean": float(sum(m * s for m, s in per) / w) if per else float("nan"),
        "ks_cluster_max": float(max(s for _, s in per)) if per else float("nan"),
        "clusters_used": len(per),
        "k": k,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--json")
    p.add_argument("dirs", nargs="+")
    a = p.parse_args()
    data = ad.read_h5ad(a.data)
    res = [one(d, data) for d in a.dirs]
    for r in res:
        print(
            f"{r['dir']}: KS overall {r['ks_overall']:.3f}, per cluster mean "
            f"{r['ks_cluster_mean']:.3f} max {r['ks_cluster_max']:.3f} "
            f"({r['clusters_used']} of {r['k']} clusters)"
        )
    for key in ["ks_overall", "ks_cluster_mean", "ks_cluster_max"]:
        v = np.array([r[key] for r in res])
        sd = v.std(ddof=1) if len(v) > 1 else 0.0
        print(f"{key}: {v.mean():.3f} ± {sd:.3f}")
    if a.json:
        json.dump(res, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
