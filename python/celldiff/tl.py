"""``celldiff.tl``: scVAEDer's analyses as scanpy-style functions (the CLI's ``interpolate``,
``velocity`` and ``perturb``). Each says which ``obs``/``layers``/``uns`` keys it writes."""

from __future__ import annotations

import json
from typing import Any

import anndata
import numpy as np
import pandas as pd

from . import _core
from ._convert import anndata_from_parts, anndata_parts, matrix_parts
from ._progress import with_progress


def _options(**kw: Any) -> str:
    return json.dumps({k: v for k, v in kw.items() if v is not None})


def interpolate(
    model,
    adata: anndata.AnnData,
    key: str,
    from_: str,
    to: str,
    n_steps: int = 2000,
    method: str = "prior",
    t_start: int | None = None,
    sampler: str = "ddim",
    steps: int | None = None,
    encoding: str = "forward",
    path: str = "linear",
    noise_draws: int | None = None,
    seed: int = 0,
    progress_bar: bool = True,
) -> anndata.AnnData:
    """Interpolates between two cell states (scVAEDer, Sadria & Layton 2025, approaches 1
    and 2; ``celldiff interpolate``).

    Parameters
    ----------
    model
        A trained :class:`celldiff.ScVAEDer`.
    adata
        Cells in the model's input space (e.g. raw counts) with the states in ``obs[key]``.
    key, from_, to
        The ``obs`` column and its two states (λ = 0 and λ = 1).
    n_steps
        Interpolation points (≥ 2).
    method
        "prior" (approach 1: interpolate the group means in the diffusion prior at timestep
        K) or "latent" (approach 2: interpolate VAE latents, noise to K and reverse).
    t_start
        K in 1..T (None = T).
    sampler, steps, encoding, path, noise_draws, seed
        Reverse sampler ("ddim" | "ddpm") and its steps, z₀ → z_K map of approach 1
        ("forward": q(z_K | z₀) draws, averaged over ``noise_draws`` (16); "ddim":
        deterministic inversion), "linear" or "slerp" path, seed. The defaults are
        ``celldiff interpolate``'s. On a ``prior="flow"`` model the flow's linear path, its
        ODE integrated up from the cells, and Euler steps back down play these roles, and
        K is the level with the signal-to-noise ratio of the β schedule at K.

    Returns
    -------
    AnnData ``[n_steps, n_genes]`` (log1p-normalised model genes) in λ order with
    ``obs['lambda']`` and ``uns['celldiff_interpolation']`` (correlations with both states,
    Spearman ρ, the manifold check).
    """
    setup = adata.uns.get("_celldiff_setup", {})
    parts = anndata_parts(adata, layer=setup.get("layer"), obs_keys=[key])
    opts = _options(
        key=key,
        **{"from": from_, "to": to},
        n_steps=int(n_steps),
        method=method,
        t_start=t_start,
        sampler=sampler,
        steps=steps,
        encoding=encoding,
        path=path,
        noise_draws=noise_draws,
        seed=int(seed),
    )
    run = model._require_trained()
    out = with_progress(progress_bar, run.interpolate, parts, opts)
    return anndata_from_parts(out)


def velocity(
    adata: anndata.AnnData,
    window: int = 1,
    direction: str = "abs",
    top_k: int = 10,
    first_steps: int = 40,
    diff_step: int | None = None,
    key_added: str = "celldiff_velocity",
) -> pd.DataFrame:
    """Gene velocities along an interpolation (scVAEDer's master-regulator ranking;
    ``celldiff velocity``): first differences of X over windows of ``window`` λ steps.

    Parameters
    ----------
    adata
        Output of :func:`interpolate` (rows in λ order; sorted by ``obs['lambda']`` here).
    window
        Window w (1 = plain first differences).
    direction
        Rank by "abs", "up" or "down" velocity.
    top_k, first_steps
        Genes kept per step, and steps whose top genes form the union (paper: 10 and 40).
    diff_step
        Step m of ``|x_m − x_0|`` (None = the last).
    key_added
        Writes ``uns[key_added]`` (``velocity`` ``[n_windows, n_genes]`` in expression units
        per λ step, ``union``, ``diff_step``) and ``var[key_added + '_score']``,
        ``var[key_added + '_rank']`` (1 = strongest), ``var[key_added + '_mean']``.

    Returns
    -------
    DataFrame of genes by decreasing mean score (``gene``, ``score``, ``mean_velocity``,
    ``diff``).
    """
    order = (
        np.argsort(adata.obs["lambda"].to_numpy(), kind="stable") if "lambda" in adata.obs else None
    )
    x = adata.X if order is None else adata.X[order]
    opts = _options(
        window=int(window),
        direction=direction,
        top_k=int(top_k),
        first_steps=int(first_steps),
        diff_step=diff_step,
    )
    v, summary = _core.velocity(matrix_parts(x, "X"), opts)
    s = json.loads(summary)
    genes = np.asarray(adata.var_names)
    diff = {g: d for g, d in s["diff"]}
    table = pd.DataFrame(
        {
            "gene": [genes[g] for g, _, _ in s["ranking"]],
            "score": [sc for _, sc, _ in s["ranking"]],
            "mean_velocity": [mv for _, _, mv in s["ranking"]],
            "diff": [diff.get(g, np.nan) for g, _, _ in s["ranking"]],
        }
    )
    score = np.full(adata.n_vars, np.nan)
    rank = np.zeros(adata.n_vars, dtype=np.int64)
    mean = np.full(adata.n_vars, np.nan)
    for r, (g, sc, mv) in enumerate(s["ranking"], start=1):
        score[g], rank[g], mean[g] = sc, r, mv
    adata.var[f"{key_added}_score"] = score
    adata.var[f"{key_added}_rank"] = rank
    adata.var[f"{key_added}_mean"] = mean
    adata.uns[key_added] = {
        "velocity": v,
        "union": np.asarray([genes[g] for g in s["union"]], dtype=object),
        "diff_step": int(s["diff_step"]),
        "params": {
            "window": int(window),
            "direction": direction,
            "top_k": int(top_k),
            "first_steps": int(first_steps),
        },
    }
    return table


def perturb(
    model,
    adata: anndata.AnnData,
    predict: str,
    condition_key: str = "condition",
    control: str = "control",
    stimulated: str = "stimulated",
    celltype_key: str = "cell_type",
    space: str = "diffusion",
    t_start: int | None = None,
    encoding: str = "ddim",
    sampler: str = "ddim",
    steps: int | None = None,
    max_delta_cells: int | None = None,
    seed: int = 0,
) -> anndata.AnnData:
    """Predicts a cell type's response to a stimulus from its control cells by latent
    arithmetic (scGen's δ in the VAE latent, or scVAEDer's δ in the diffusion prior;
    ``celldiff perturb``). Train the model without the type's stimulated cells
    (``adata[~((adata.obs.cell_type == "CD4T") & (adata.obs.condition == "stimulated"))]``).

    Parameters
    ----------
    model
        A trained :class:`celldiff.ScVAEDer`.
    adata
        Cells in the model's input space with ``obs[condition_key]`` and
        ``obs[celltype_key]``; the type's real stimulated cells, when present, are only used
        to score the prediction.
    predict
        The cell type to predict.
    space
        "vae" (scGen) or "diffusion" (scVAEDer).
    t_start, encoding, sampler, steps, max_delta_cells, seed
        As ``celldiff perturb``.

    Returns
    -------
    AnnData of predicted stimulated cells ``[n_control, n_genes]`` (log1p-normalised) with
    ``uns['celldiff_perturbation']`` (δ, the settings and, with real stimulated cells,
    ``metrics``: scGen's R² of means and variances over all and the top DEGs).
    """
    setup = adata.uns.get("_celldiff_setup", {})
    parts = anndata_parts(adata, layer=setup.get("layer"), obs_keys=[condition_key, celltype_key])
    opts = _options(
        condition_key=condition_key,
        control=control,
        stimulated=stimulated,
        celltype_key=celltype_key,
        predict=predict,
        space=space,
        t_start=t_start,
        encoding=encoding,
        sampler=sampler,
        steps=steps,
        max_delta_cells=max_delta_cells,
        seed=int(seed),
    )
    out = model._require_trained().perturb(parts, opts)
    return anndata_from_parts(out)


def identify(
    adata: anndata.AnnData,
    n_clusters: int | None = None,
    labels_key: str | None = None,
    dbscan_eps: float | str | None = None,
    dbscan_min_samples: int = 5,
    eps_quantile: float | None = None,
    on: str = "latent",
    latent_model: str = "diffvae",
    n_latent: int = 50,
    n_hidden: tuple[int, int] = (512, 256),
    mmd_weight: float = 1.0,
    kl_weight: float = 1.0,
    max_epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    n_top_genes: int = 2000,
    perplexity: float = 30.0,
    tsne_epochs: int = 1000,
    kmeans_n_init: int = 10,
    top_dimensions: int = 10,
    top_genes: int = 20,
    seed: int = 0,
    layer: str | None = None,
    key_added: str = "celldiff_cluster",
    progress_bar: bool = True,
) -> dict:
    """DiffVAE cell-type identification (Bica et al., Sci. Rep. 2020; ``celldiff identify``):
    an MMD-VAE on the highly variable genes → t-SNE → k-means or DBSCAN → the latent
    dimensions that drive each cluster and their high-weight genes.

    Parameters
    ----------
    adata
        Raw counts or log1p-normalised cells ``[n_obs, n_vars]`` (X, or ``layers[layer]``; the
        layer registered with ``setup_anndata`` by default).
    n_clusters
        k-means with this k (default: the number of labels in ``labels_key``).
    labels_key
        ``obs`` column of reference labels: the ARI against it is reported.
    dbscan_eps
        DBSCAN instead of k-means with this radius, or "auto" (a quantile, ``eps_quantile``,
        of the distances to the ``dbscan_min_samples``-th nearest cell).
    on
        Cluster the latent means ("latent") or their t-SNE ("tsne").
    latent_model
        "diffvae" (MMD-VAE), "vae", "ae" or "pca".
    n_latent, n_hidden, mmd_weight, kl_weight, max_epochs, batch_size, lr
        The latent model (``n_hidden`` = (h2, h1), the paper's 512, 256).
    n_top_genes
        Highly variable genes (0 = all).
    perplexity, tsne_epochs, kmeans_n_init, top_dimensions, top_genes, seed
        As ``celldiff identify``.
    key_added
        ``obs`` key of the clusters.

    Returns
    -------
    dict with ``n_clusters``, ``ari`` (or None), ``dimensions`` and ``genes`` (DataFrames of
    the top dimensions per cluster and of their high-weight genes). Writes
    ``obs[key_added]`` (categorical; ``noise`` for DBSCAN outliers), ``obsm['X_celldiff']``
    (latent means), ``obsm['X_tsne']`` and ``uns['celldiff_identify']``.
    """
    import io

    if layer is None:
        layer = adata.uns.get("_celldiff_setup", {}).get("layer")
    h2, h1 = n_hidden
    if dbscan_eps is None:
        clustering = {"k_means": {"k": n_clusters, "n_init": int(kmeans_n_init)}}
    else:
        if isinstance(dbscan_eps, str):
            if dbscan_eps != "auto":
                raise ValueError(f"dbscan_eps must be a number or 'auto', got {dbscan_eps!r}")
            eps = {"auto": {"quantile": 0.8 if eps_quantile is None else float(eps_quantile)}}
        else:
            eps = {"fixed": float(dbscan_eps)}
        clustering = {"dbscan": {"eps": eps, "min_samples": int(dbscan_min_samples)}}
    opts = json.dumps(
        {
            "latent": {
                "kind": latent_model,
                "n_latent": int(n_latent),
                "h1": int(h1),
                "h2": int(h2),
                "mmd_weight": float(mmd_weight),
                "kl_weight": float(kl_weight),
                "epochs": int(max_epochs),
                "batch_size": int(batch_size),
                "learning_rate": float(lr),
                "seed": int(seed),
            },
            "n_top_genes": int(n_top_genes) if n_top_genes else None,
            "clustering": clustering,
            "space": on,
            "tsne": {
                "perplexity": float(perplexity),
                "epochs": int(tsne_epochs),
                "seed": int(seed),
            },
            "n_top_dimensions": int(top_dimensions),
            "n_top_weight_genes": int(top_genes),
            "labels_key": labels_key,
        }
    )
    parts = anndata_parts(adata, layer=layer, obs_keys=[labels_key] if labels_key else [])
    res = with_progress(progress_bar, _core.diffvae_identify, parts, opts)
    col = res["cluster"]
    adata.obs[key_added] = pd.Categorical.from_codes(col["codes"], categories=col["categories"])
    adata.obsm["X_celldiff"] = res["latent"]
    adata.obsm["X_tsne"] = res["tsne"]
    from ._convert import uns_from_json

    uns = json.loads(res["uns"])
    adata.uns["celldiff_identify"] = uns_from_json(uns)
    return {
        "n_clusters": len([c for c in col["categories"] if c != "noise"]),
        "ari": uns.get("ari"),
        "dimensions": pd.read_csv(io.StringIO(res["dimensions_tsv"]), sep="\t"),
        "genes": pd.read_csv(io.StringIO(res["genes_tsv"]), sep="\t"),
    }


def cluster(
    adata: anndata.AnnData,
    resolution: float = 1.0,
    flavor: str = "leiden",
    n_iterations: int = 2,
    n_neighbors: int = 15,
    n_pcs: int = 50,
    n_top_genes: int = 2000,
    umap: bool = False,
    seed: int = 0,
    key_added: str | None = None,
    neighbors_key: str | None = None,
    layer: str | None = None,
) -> int:
    """Clusters the cells as scanpy's workflow does (``celldiff cluster``): ``normalize_total``
    + ``log1p`` on counts, highly variable genes (seurat), scale, PCA, kNN graph (UMAP
    connectivities), Leiden (or Louvain), optionally UMAP.

    Parameters
    ----------
    adata
        Raw counts or log1p-normalised cells (X, or ``layers[layer]``).
    resolution, flavor, n_iterations
        Modularity resolution (> 0), "leiden" or "louvain", Leiden iterations (0 = until
        stable).
    n_neighbors, n_pcs, n_top_genes
        Neighbours per cell (the cell included), principal components, highly variable genes
        (0 = all).
    umap
        Also compute a UMAP layout (``obsm['X_umap']``).
    seed
        Seed of the clustering and the layout.
    key_added
        ``obs`` key of the labels (default: the flavor).
    neighbors_key
        As ``sc.pp.neighbors(key_added=...)``.

    Returns
    -------
    The number of clusters. Writes ``obs[key_added]``, ``obsm['X_pca']``
    (``obsm['X_umap']``), ``obsp['connectivities']``/``obsp['distances']`` (or
    ``{neighbors_key}_…``), ``uns['neighbors']`` (or ``uns[neighbors_key]``, the layout scanpy's
    ``tl.umap``/``tl.paga`` read), ``uns['pca']`` and ``uns[key_added]`` (parameters, sizes).
    """
    if layer is None:
        layer = adata.uns.get("_celldiff_setup", {}).get("layer")
    ann = _core.cluster(
        anndata_parts(adata, layer=layer),
        resolution=float(resolution),
        flavor=flavor,
        n_iterations=int(n_iterations),
        n_neighbors=int(n_neighbors),
        n_pcs=int(n_pcs),
        n_top_genes=int(n_top_genes),
        umap=bool(umap),
        seed=int(seed),
        key_added=key_added,
        neighbors_key=neighbors_key,
    )
    from ._convert import _matrix, uns_from_json

    n = 0
    for k, col in ann["obs"].items():
        adata.obs[k] = pd.Categorical.from_codes(col["codes"], categories=col["categories"])
        n = len(col["categories"])
    for k, m in ann["obsm"].items():
        adata.obsm[k] = m
    for k, m in ann["obsp"].items():
        adata.obsp[k] = _matrix(m)
    for k, v in uns_from_json(json.loads(ann["uns"])).items():
        adata.uns[k] = v
    return n


def evaluate_perturbation(
    real_stim: anndata.AnnData,
    control: anndata.AnnData,
    pred: anndata.AnnData,
    model=None,
    n_top: int = 100,
) -> dict:
    """scGen's metrics of a predicted perturbation (``celldiff evaluate-perturbation``): R² of
    the per-gene means and variances between predicted and real stimulated cells, over all
    genes and the top ``n_top`` DEGs (Wilcoxon, real stimulated vs control), and the control
    cells' R² as the no-response baseline.

    Parameters
    ----------
    real_stim, control
        The target type's real stimulated and control cells: in the model's space
        (log1p-normalised), or in its input space with ``model`` given.
    pred
        Output of :func:`perturb`.
    model
        The :class:`celldiff.ScVAEDer` whose preprocessing puts ``real_stim`` and
        ``control`` into the model's space (e.g. when they are raw counts).

    Returns
    -------
    dict with ``r2_mean_all``, ``r2_mean_top``, ``r2_var_all``, ``r2_var_top``,
    ``r2_mean_top_control``, ``n_genes``, ``top_genes``.
    """

    def parts(a):
        return anndata_parts(a, layer=a.uns.get("_celldiff_setup", {}).get("layer"))

    run = None if model is None else model._require_trained()
    return json.loads(
        _core.evaluate_perturbation(
            parts(real_stim), parts(control), anndata_parts(pred), n_top=int(n_top), model=run
        )
    )
