#!/usr/bin/env python3
"""scVI reference for celldiff's realism benchmark (bench/realism.sh).

Trains scVI (Lopez et al., "Deep generative modeling for single-cell transcriptomics",
Nat Methods 15:1053-1058, 2018; scvi-tools from PyPI, on the CPU) on exactly the training cells
of a `celldiff demo --data FILE --seed S -o DIR` split, generates as many cells as were held out,
and writes AnnData files that `celldiff evaluate` scores against the held-out cells.

Protocol
--------
1. Read FILE (anndata). The matrix is X, or layers[L] with --layer, or raw.X with --use-raw;
   DIR/split.json `{"seed", "n_obs", "train", "heldout"}` gives 0-based rows of that matrix.
   Integer counts are taken as they are when every stored value is a non-negative integer.
   Otherwise the matrix must be log1p(normalize_total(counts)) (e.g. Kang PBMC), and each
   cell's counts are recovered: s = expm1(smallest non-zero value of the cell) is one count,
   unless the cell has no count of 1, so the unit u = s/d for the first d in 1..4 such that
   every non-zero expm1(x)/u is within 2e-3 * max(k, 1) of an integer k; counts =
   round(expm1(x)/u). A cell with no such lattice is an error, as is any other matrix.
   L_i = each cell's library size over all genes; the model genes are DIR/run/genes.json.
2. scVI is trained on the training rows (model genes, counts in X) with scvi-tools' defaults
   (n_latent 10, n_hidden 128, one hidden layer, scvi's 90/10 train/validation split of these
   rows, max_epochs = scvi's heuristic unless --max-epochs) except gene_likelihood = "nb"
   (negative binomial; scvi's default is zero-inflated); torch.set_num_threads(--threads),
   scvi.settings.seed = --seed, accelerator cpu.
3. Prior samples (scvi_prior.h5ad), n_heldout cells: z ~ N(0, I_10); for each cell a training
   cell j is drawn uniformly (numpy Generator seeded with --seed, which also draws z and the
   counts); its model-gene library l_j gives the NB mean mu = l_j * rho(z), rho = px_scale of
   scVI's decoder (softmax over genes), theta = exp(px_r) the fitted per-gene inverse
   dispersion; counts ~ NB(mu, theta) drawn as Poisson(Gamma(theta, scale = mu / theta)).
4. Reconstructions (scvi_reconstruction.h5ad): the held-out cells encoded (posterior mean z,
   model.get_latent_representation(heldout, give_mean=True)), decoded with each held-out
   cell's own model-gene library, NB counts drawn the same way.
5. Each set is written with X = counts (CSR float32, var_names = model genes),
   obs['n_counts'] = model-gene total, obs['library_all_genes'] = L used below,
   obs['source_row'] = input row whose library was used (a training row for the prior, the
   held-out row itself for the reconstruction), layers['log1p_norm'] = log1p(counts * s)
   with s that row's size factor (target_sum / L for count input, target_sum =
   uns['celldiff']['preprocess']['target_sum'] of DIR/generated_ddpm.h5ad; the unit read off
   the cell's lattice for log1p-normalised input), and uns['celldiff'] copied from that file, so that the evaluator
   preprocesses the real cells the same way. OUT/heldout.h5ad holds the held-out rows of the
   input matrix as read (all genes, obs kept). OUT/scvi.json records timings and versions.
6. With --celldiff BIN, `BIN evaluate --real OUT/heldout.h5ad --generated OUT/scvi_SET.h5ad
   --seed S -o OUT/eval_scvi_SET.json --force` is run for SET = prior and reconstruction.

Usage:
  python bench/scvi_reference.py --data FILE.h5ad --demo-dir DIR --out OUTDIR [--layer L]
      [--use-raw] [--threads 2] [--seed S] [--max-epochs N] [--celldiff BIN]
Errors exit 2 with a message naming the file and field.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def die(msg):
    print(f"scvi_reference: error: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="input .h5ad (the file given to celldiff demo)")
    p.add_argument("--demo-dir", required=True,
                   help="celldiff demo output: split.json, run/genes.json, generated_ddpm.h5ad")
    p.add_argument("--out", required=True, help="output folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--layer", help="read layers[LAYER] instead of X")
    g.add_argument("--use-raw", action="store_true", help="read raw.X instead of X")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--seed", type=int, default=None,
                   help="scvi.settings.seed and the sampling seed (default: split.json's seed)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="scVI max_epochs (default: scvi-tools' heuristic)")
    p.add_argument("--celldiff", help="celldiff binary: run `evaluate` on both generated sets")
    return p.parse_args()


def read_json(path, what):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        die(f"{path}: not found ({what})")
    except json.JSONDecodeError as e:
        die(f"{path}: not valid JSON ({what}): {e}")


def read_split(path, n_rows):
    s = read_json(path, "the demo's train/held-out split")
    if not isinstance(s, dict):
        die(f"{path}: expected an object with fields seed, n_obs, train, heldout")
    for k in ("n_obs", "train", "heldout"):
        if k not in s:
            die(f"{path}: field '{k}' is missing")
    if s["n_obs"] != n_rows:
        die(f"{path}: field 'n_obs' is {s['n_obs']} but the input matrix has {n_rows} rows")
    out = {}
    for k in ("train", "heldout"):
        v = s[k]
        if not isinstance(v, list) or not v or not all(isinstance(i, int) and not isinstance(i, bool)
                                                      for i in v):
            die(f"{path}: field '{k}' must be a non-empty list of integer row indices")
        bad = [i for i in v if i < 0 or i >= n_rows]
        if bad:
            die(f"{path}: field '{k}' has row indices outside 0..{n_rows - 1}: {bad[:5]}")
        if len(set(v)) != len(v):
            die(f"{path}: field '{k}' repeats row indices")
        out[k] = v
    both = set(out["train"]) & set(out["heldout"])
    if both:
        die(f"{path}: fields 'train' and 'heldout' share {len(both)} rows, e.g. {sorted(both)[:5]}")
    return s.get("seed"), out["train"], out["heldout"]


def integer_counts(M, path, field):
    """CSR float64 integer counts from M (sparse or dense), plus a description of how."""
    import numpy as np
    import scipy.sparse as sp

    # A full copy: csr_matrix(M, dtype=...) shares M's index arrays, and sort_indices() below
    # would then reorder M's indices under its data (the input may have unsorted indices).
    X = sp.csr_matrix(M, copy=True).astype(np.float64, copy=True)
    X.eliminate_zeros()
    X.sort_indices()
    d = X.data
    if not np.all(np.isfinite(d)):
        die(f"{path}: {field} has non-finite values")
    if np.all(d >= 0) and np.all(d == np.round(d)):
        return X, {"kind": "integer"}, None
    if np.any(d < 0):
        die(f"{path}: {field} has negative values: neither integer counts nor log1p-normalised")
    # log1p(normalize_total(counts)): recover each cell's count unit.
    C = X.copy()
    unit = np.zeros(X.shape[0])
    divisors = {}
    for i in range(X.shape[0]):
        a, b = X.indptr[i], X.indptr[i + 1]
        if a == b:
            continue
        v = np.expm1(d[a:b])
        s = v.min()
        for dv in (1, 2, 3, 4):
            k = v / (s / dv)
            r = np.round(k)
            if np.all(np.abs(k - r) <= 2e-3 * np.maximum(r, 1.0)):
                C.data[a:b] = r
                unit[i] = s / dv
                divisors[dv] = divisors.get(dv, 0) + 1
                break
        else:
            die(f"{path}: {field} is not integer counts, and cell {i} (row {i}) has no count "
                f"lattice: expm1 of its values are not integer multiples of "
                f"expm1(min)/d for d in 1..4, so it is not log1p(normalize_total(counts))")
    return C, {"kind": "log1p_normalized_recovered",
               "unit_divisor_cells": {str(k): v for k, v in sorted(divisors.items())}}, unit


def main():
    args = parse_args()
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    import anndata as ad

    if args.threads < 1:
        die("--threads must be at least 1")
    if args.max_epochs is not None and args.max_epochs < 1:
        die("--max-epochs must be at least 1")
    split_path = os.path.join(args.demo_dir, "split.json")
    genes_path = os.path.join(args.demo_dir, "run", "genes.json")
    gen_path = os.path.join(args.demo_dir, "generated_ddpm.h5ad")
    for p in (args.data, split_path, genes_path, gen_path):
        if not os.path.isfile(p):
            die(f"{p}: not found")

    # --- inputs ---------------------------------------------------------------------------
    adata = ad.read_h5ad(args.data)
    if args.use_raw:
        if adata.raw is None:
            die(f"{args.data}: --use-raw given but the file has no raw")
        M, var, field = adata.raw.X, adata.raw.var.copy(), "raw.X"
    elif args.layer:
        if args.layer not in adata.layers:
            die(f"{args.data}: layers['{args.layer}'] not found (layers: {list(adata.layers)})")
        M, var, field = adata.layers[args.layer], adata.var.copy(), f"layers['{args.layer}']"
    else:
        if adata.X is None:
            die(f"{args.data}: X is empty")
        M, var, field = adata.X, adata.var.copy(), "X"
    var_names = pd.Index(var.index.astype(str))
    if not var_names.is_unique:
        die(f"{args.data}: var_names of {field} are not unique")

    split_seed, train, heldout = read_split(split_path, M.shape[0])
    seed = args.seed if args.seed is not None else split_seed
    if not isinstance(seed, int):
        die(f"{split_path}: field 'seed' is missing or not an integer, and --seed is not given")

    genes = read_json(genes_path, "the model's gene names")
    if not isinstance(genes, list) or not genes or not all(isinstance(g, str) for g in genes):
        die(f"{genes_path}: expected a non-empty JSON array of gene names")
    gidx = var_names.get_indexer(genes)
    missing = [g for g, j in zip(genes, gidx) if j < 0]
    if missing:
        die(f"{genes_path}: {len(missing)} gene(s) not in the var_names of {args.data} {field}: "
            + ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))

    gen_uns = ad.read_h5ad(gen_path, backed="r").uns
    if "celldiff" not in gen_uns:
        die(f"{gen_path}: uns['celldiff'] is missing")
    cd_uns = gen_uns["celldiff"]
    try:
        target_sum = float(cd_uns["preprocess"]["target_sum"])
    except (KeyError, TypeError, ValueError):
        target_sum = None   # log1p-normalised input: size factors come from the lattice
    if target_sum is not None and (not np.isfinite(target_sum) or target_sum <= 0):
        die(f"{gen_path}: uns['celldiff']['preprocess']['target_sum'] = {target_sum} is not > 0")
    cd_uns = _plain(cd_uns)

    counts_all, counts_info, unit = integer_counts(M, args.data, field)
    L_all = np.asarray(counts_all.sum(axis=1)).ravel()          # all-gene library per cell
    # Size factor per cell: the normalised value of one count. For counts it is
    # target_sum / L; for stored log1p-normalised input it is read off the cell's lattice
    # (Kang's libraries include genes no longer in the file, so target_sum / L would be wrong).
    if unit is None:
        if target_sum is None:
            die(f"{gen_path}: uns['celldiff']['preprocess']['target_sum'] is missing or not a "
                f"number, and {args.data} holds counts: cannot normalise generated counts")
        unit = np.divide(target_sum, L_all, out=np.zeros_like(L_all, dtype=np.float64),
                         where=L_all > 0)
    counts = counts_all[:, gidx].tocsr()                          # model genes
    l_model = np.asarray(counts.sum(axis=1)).ravel()              # model-gene library per cell
    train = np.asarray(train)
    heldout = np.asarray(heldout)
    zero_train = int(np.sum(l_model[train] == 0))
    if zero_train:
        print(f"scvi_reference: warning: {zero_train} training cells have no counts on the model "
              f"genes", file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)

    # --- training -------------------------------------------------------------------------
    import torch
    import scvi

    torch.set_num_threads(args.threads)
    scvi.settings.seed = seed
    genes_index = pd.Index(genes)
    obs_names = pd.Index(adata.obs_names.astype(str))

    def model_adata(rows):
        a = ad.AnnData(X=counts[rows].astype(np.float32),
                       obs=pd.DataFrame(index=obs_names[rows].copy()),
                       var=pd.DataFrame(index=genes_index.copy()))
        a.obs_names_make_unique()
        return a

    a_train = model_adata(train)
    scvi.model.SCVI.setup_anndata(a_train)
    model = scvi.model.SCVI(a_train, gene_likelihood="nb")
    t0 = time.perf_counter()
    model.train(max_epochs=args.max_epochs, accelerator="cpu", devices=1,
                enable_progress_bar=sys.stderr.isatty())
    train_s = time.perf_counter() - t0
    epochs = _epochs_run(model)

    # --- sampling -------------------------------------------------------------------------
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_h = len(heldout)
    module = model.module
    module.eval()
    n_latent = module.n_latent
    z_prior = rng.standard_normal((n_h, n_latent))
    pick = train[rng.integers(0, len(train), size=n_h)]
    prior = _decode_sample(module, z_prior, l_model[pick], rng)

    a_held = model_adata(heldout)
    z_rec = model.get_latent_representation(a_held, give_mean=True)
    rec = _decode_sample(module, np.asarray(z_rec, dtype=np.float64), l_model[heldout], rng)
    sample_s = time.perf_counter() - t0

    # --- outputs --------------------------------------------------------------------------
    def write_set(name, C, rows):
        L = L_all[rows]
        X = sp.csr_matrix(C.astype(np.float32))
        scale = unit[rows]
        Cd = C.toarray() if sp.issparse(C) else np.asarray(C)
        norm = np.log1p(Cd * scale[:, None]).astype(np.float32)
        obs = pd.DataFrame({
            "n_counts": np.asarray(C.sum(axis=1)).ravel().astype(np.float32),
            "library_all_genes": L.astype(np.float32),
            "source_row": rows.astype(np.int64),
        }, index=[f"scvi_{name}_{i}" for i in range(C.shape[0])])
        o = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes_index.copy()))
        o.layers["log1p_norm"] = norm
        o.uns["scvi_reference"] = {"set": name, "seed": seed, "data": args.data,
                                   "matrix": field, "counts": counts_info["kind"]}
        path = os.path.join(args.out, f"scvi_{name}.h5ad")
        o.write_h5ad(path)
        # uns['celldiff'] copied as stored (HDF5 group copy): a round trip through anndata's
        # dict would turn the preprocessing record's lists into dicts.
        import h5py
        with h5py.File(gen_path, "r") as src, h5py.File(path, "a") as dst:
            src.copy(src["uns/celldiff"], dst["uns"], name="celldiff")
        return path

    prior_path = write_set("prior", prior, pick)
    rec_path = write_set("reconstruction", rec, heldout)

    hx = M[heldout]
    if sp.issparse(hx):
        hx = sp.csr_matrix(hx, copy=True)       # same values, canonical (sorted) CSR
        hx.sort_indices()
    hobs = adata.obs.iloc[heldout].copy()
    h = ad.AnnData(X=hx, obs=hobs, var=var.copy())
    h.var_names = var_names
    held_path = os.path.join(args.out, "heldout.h5ad")
    h.write_h5ad(held_path)

    evals = []
    if args.celldiff:
        for name, gp in (("prior", prior_path), ("reconstruction", rec_path)):
            evals.append([args.celldiff, "evaluate", "--real", held_path, "--generated", gp,
                          "--seed", str(seed), "-o",
                          os.path.join(args.out, f"eval_scvi_{name}.json"), "--force"])

    info = {
        "data": args.data, "demo_dir": args.demo_dir, "matrix": field,
        "counts": counts_info, "seed": seed,
        "n_train": int(len(train)), "n_heldout": int(n_h), "n_genes": len(genes),
        "n_latent": int(n_latent), "gene_likelihood": "nb",
        "max_epochs_arg": args.max_epochs, "epochs": epochs,
        "train_seconds": round(train_s, 3), "sampling_seconds": round(sample_s, 3),
        "scvi_version": scvi.__version__, "torch_version": torch.__version__,
        "anndata_version": _version("anndata"), "torch_threads": torch.get_num_threads(),
        "target_sum": target_sum,
        "outputs": {"prior": prior_path, "reconstruction": rec_path, "heldout": held_path},
        "evaluate_commands": [" ".join(c) for c in evals],
    }
    with open(os.path.join(args.out, "scvi.json"), "w") as f:
        json.dump(info, f, indent=2)
    print(f"scvi_reference: trained {epochs} epochs on {len(train)} cells x {len(genes)} genes in "
          f"{train_s:.1f} s; sampled 2 x {n_h} cells in {sample_s:.1f} s -> {args.out}")

    rc = 0
    for c in evals:
        print("+ " + " ".join(c), flush=True)
        r = subprocess.run(c)
        if r.returncode != 0:
            print(f"scvi_reference: `{' '.join(c)}` exited {r.returncode}", file=sys.stderr)
            rc = 1
    return rc


def _version(pkg):
    from importlib.metadata import version
    return version(pkg)


def _plain(x):
    """uns values as plain Python / numpy, so they can be written back."""
    if isinstance(x, dict) or hasattr(x, "items"):
        return {str(k): _plain(v) for k, v in x.items()}
    return x


def _epochs_run(model):
    h = getattr(model, "history", None) or {}
    for k in ("elbo_train", "train_loss_epoch", "reconstruction_loss_train"):
        if k in h:
            return int(len(h[k]))
    return None


def _decode_sample(module, z, lib, rng, chunk=2048):
    """NB counts with mean lib * px_scale(z) and theta = exp(px_r), drawn with `rng`."""
    import numpy as np
    import torch

    n = z.shape[0]
    out = np.zeros((n, 0))
    parts = []
    for a in range(0, n, chunk):
        zb = torch.as_tensor(z[a:a + chunk], dtype=torch.float32)
        lb = torch.as_tensor(np.log(np.maximum(lib[a:a + chunk], 1e-8)),
                             dtype=torch.float32)[:, None]
        bi = torch.zeros((zb.shape[0], 1), dtype=torch.long)
        with torch.no_grad():
            g = module.generative(z=zb, library=lb, batch_index=bi)
        if "px" in g:                       # scvi-tools >= 1.0: a NegativeBinomial distribution
            rho = g["px"].scale
            theta = g["px"].theta
        else:                               # older: px_scale and (log) px_r
            rho = g["px_scale"]
            theta = torch.exp(g["px_r"])
        rho = rho.double().numpy()
        theta = np.broadcast_to(theta.double().numpy(), rho.shape)
        mu = lib[a:a + chunk, None].astype(np.float64) * rho
        lam = rng.gamma(theta, mu / theta)
        parts.append(rng.poisson(lam).astype(np.float64))
    return np.concatenate(parts, axis=0) if parts else out


if __name__ == "__main__":
    sys.exit(main())
