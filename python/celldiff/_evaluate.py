"""``celldiff.evaluate``: generated cells against real ones (``celldiff evaluate``)."""

from __future__ import annotations

import json

import anndata

from . import _core
from ._base import SETUP_KEY
from ._convert import anndata_parts


def evaluate(
    real: anndata.AnnData,
    generated: anndata.AnnData,
    layer: str | None = None,
    seed: int = 0,
    max_cells: int | None = None,
    model=None,
) -> dict:
    """Scores generated cells against real ones with the numbers of ``celldiff evaluate``.

    The real cells go through the preprocessing recorded in ``generated.uns['celldiff']``
    (``normalize_total``, ``log1p``, the model's genes), so pass them as the model saw its
    input (e.g. raw counts). Generated cells from a count-likelihood run are compared in
    their ``layers['log1p_norm']`` (the model's space).

    Parameters
    ----------
    real
        Held-out real cells ``[n_real, n_genes_real]``.
    generated
        Output of ``generate`` ``[n_gen, n_genes]``.
    layer
        Read the real cells from ``real.layers[layer]`` (default: the layer registered with
        ``setup_anndata``, else X).
    seed
        Seed of the class balancing, split and random forest.
    max_cells
        Subsample each set to at most this many cells.
    model
        A trained :class:`celldiff.ScVAEDer`: also score its reconstruction of the real cells
        (encoded, decoded and sampled like generated cells; pass held-out cells), the
        decoder's ceiling, under the key ``reconstruction`` (``celldiff evaluate --run``).

    Returns
    -------
    dict with the keys of ``celldiff evaluate -o metrics.json``: ``rf_auc`` (scDiffusion's
    random forest on PCA-50, 0.5 = indistinguishable), ``knn_auc``, ``mmd``, ``mean_corr``,
    ... (docs/RESULTS.md explains each).

    Raises
    ------
    ValueError
        Genes of the generated cells missing from the real ones, real cells of another kind
        than the model's input, too few cells.
    """
    if layer is None:
        layer = real.uns.get(SETUP_KEY, {}).get("layer")
    r = anndata_parts(real, layer=layer)
    g = anndata_parts(generated, layers=["log1p_norm"], uns_keys=["celldiff"])
    run = None if model is None else model._require_trained()
    return json.loads(_core.evaluate(r, g, seed=int(seed), max_cells=max_cells, model=run))
