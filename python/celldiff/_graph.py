"""``celldiff.GraphDiffVAE``: Graph-DiffVAE (Bica et al., Sci. Rep. 2020) — a graph
convolutional VAE on a Pearson-correlation kNN graph of the cells that predicts links between
cells (``celldiff graph``)."""

from __future__ import annotations

import io
import json

import anndata
import numpy as np
import pandas as pd

from . import _core
from ._base import SETUP_KEY
from ._convert import _matrix, anndata_parts, check_keys, uns_from_json
from ._progress import with_progress


class GraphDiffVAE:
    """Graph-DiffVAE on an AnnData.

    Parameters
    ----------
    adata
        Cells (X or the layer registered with :meth:`setup_anndata`): counts or
        log1p-normalised; their highly variable genes are the node features.
    k
        Correlation neighbours per cell in the input graph (the paper's 1, then symmetrised).
    n_hidden, n_latent
        Width of the hidden graph convolution (512) and the latent dimension (50).
    n_top_genes
        Highly variable genes used as node features (0 = all genes).
    """

    def __init__(
        self,
        adata: anndata.AnnData,
        k: int = 1,
        n_hidden: int = 512,
        n_latent: int = 50,
        n_top_genes: int = 2000,
    ):
        self.adata = adata
        self.init_params_ = dict(
            k=int(k), hidden=int(n_hidden), latent=int(n_latent), n_top_genes=int(n_top_genes)
        )
        self.links_: pd.DataFrame | None = None

    @classmethod
    def setup_anndata(cls, adata: anndata.AnnData, layer: str | None = None) -> None:
        """Registers where the cells are (``layer``; default X).

        Raises
        ------
        KeyError
            For a missing layer.
        """
        check_keys(adata, layer=layer)
        adata.uns[SETUP_KEY] = {"model": "graph_diffvae", **({"layer": layer} if layer else {})}

    def train(
        self,
        max_epochs: int = 200,
        lr: float = 1e-4,
        threshold: float | None = None,
        top_k_links: int = 5,
        dense_max_cells: int = 5000,
        seed: int = 0,
        progress_bar: bool = True,
    ) -> dict:
        """Builds the graph, holds out edges, trains (full-batch Adam), scores the held-out
        edges and predicts links on the full graph.

        Parameters
        ----------
        max_epochs, lr
            Training epochs and Adam learning rate (the paper's 1e-4).
        threshold
            Predicted links: pairs with probability above this; default: the
            ``top_k_links`` most probable partners of each cell.
        dense_max_cells
            Up to this many cells the loss uses every non-edge; above, a fixed-ratio sample per
            epoch.
        seed
            Seed of the split, the initialisation and the sampled non-edges.

        Returns
        -------
        The summary ``uns['celldiff_graph']`` (``test_auc``, ``test_ap``, the correlation
        baseline's, per-epoch losses). Writes ``obsm['X_graph']`` (Z*), ``obsm['X_graph_mu']``,
        ``obsp['celldiff_links']``, ``obsp['celldiff_graph_input']``,
        ``uns['celldiff_graph']``; the links table is in :attr:`links_`.
        """
        layer = self.adata.uns.get(SETUP_KEY, {}).get("layer")
        res = with_progress(
            progress_bar,
            _core.graph_diffvae,
            anndata_parts(self.adata, layer=layer),
            epochs=int(max_epochs),
            lr=float(lr),
            threshold=threshold,
            top_k_links=int(top_k_links),
            dense_max_cells=int(dense_max_cells),
            seed=int(seed),
            **self.init_params_,
        )
        for k, m in res["obsm"].items():
            self.adata.obsm[k] = m
        for k, m in res["obsp"].items():
            self.adata.obsp[k] = _matrix(m)
        uns = json.loads(res["uns"])
        for k, v in uns.items():
            self.adata.uns[k] = uns_from_json(v)
        self.links_ = pd.read_csv(
            io.StringIO(res["links_tsv"]), sep="\t", dtype={"cell_i": str, "cell_j": str}
        )
        return uns["celldiff_graph"]

    def get_latent_representation(self) -> np.ndarray:
        """The node embedding Z* ``[n_obs, n_latent]`` (``obsm['X_graph']``)."""
        if "X_graph" not in self.adata.obsm:
            raise RuntimeError("the GraphDiffVAE model is not trained: call .train() first")
        return self.adata.obsm["X_graph"]
