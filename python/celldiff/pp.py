"""``celldiff.pp``: scanpy's preprocessing as celldiff runs it before training (the CLI's
``preprocess``), so that the cells you look at are the cells the model sees."""

from __future__ import annotations

import json

import anndata

from . import _core
from ._convert import anndata_from_parts, anndata_parts


def preprocess(
    adata: anndata.AnnData,
    min_genes: int | None = None,
    min_cells: int | None = None,
    target_sum: float | None = 1e4,
    log1p: bool | None = None,
    n_top_genes: int | None = None,
    flavor: str = "seurat",
    subset: bool = False,
    scale: bool = False,
    max_value: float | None = None,
    minmax: bool = False,
    layer: str | None = None,
) -> anndata.AnnData:
    """scanpy's ``filter_cells(min_genes)``, ``filter_genes(min_cells)``,
    ``normalize_total(target_sum)``, ``log1p``, ``highly_variable_genes(flavor, n_top_genes)``
    and ``scale(max_value)`` (or per-gene min-max), in that order (``celldiff preprocess``).
    celldiff detects whether X holds counts or log-normalised values and says so in
    ``uns['celldiff_preprocess']['messages']``; ``log1p=True/False`` overrides it.

    Parameters
    ----------
    adata
        Cells (X, or ``layers[layer]``): raw counts or log-normalised.
    target_sum
        ``normalize_total`` target; None = scanpy's median of the library sizes.
    n_top_genes
        Highly variable genes to mark (None = none are computed).
    subset
        Keep only the highly variable genes.

    Returns
    -------
    A new AnnData with the kept cells and genes (the input's ``obs`` and ``var`` columns
    kept) whose X is the result (log1p-normalised, ``float32``), with
    ``var['highly_variable']`` (and scanpy's HVG columns), ``uns['log1p']``, ``uns['hvg']``
    and ``uns['celldiff_preprocess']`` (the fitted record a run stores). The input is not
    changed.

    Raises
    ------
    ValueError
        Inconsistent settings (``scale`` with ``minmax``), data of another kind than the
        steps need, negative or non-finite values, filters that remove every cell.
    """
    opts = {
        "min_genes": min_genes,
        "min_cells": min_cells,
        "target_sum": None if target_sum is None else float(target_sum),
        "log1p": log1p,
        "n_top_genes": n_top_genes,
        "flavor": flavor,
        "subset": bool(subset),
        "scale": bool(scale),
        "max_value": max_value,
        "minmax": bool(minmax),
    }
    out = anndata_from_parts(_core.preprocess(anndata_parts(adata, layer=layer), json.dumps(opts)))
    result = adata[out.obs_names, out.var_names].copy()
    result.X = out.X
    for k in out.var.columns:
        result.var[k] = out.var[k].to_numpy()
    for k, v in out.uns.items():
        result.uns[k] = v
    return result
