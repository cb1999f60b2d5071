"""``celldiff.DiffVAE``: DiffVAE (Bica et al., Sci. Rep. 2020), an MMD-VAE whose latent
dimensions identify cell types (:meth:`DiffVAE.identify`, ``celldiff identify``)."""

from __future__ import annotations

from typing import Any

import anndata

from . import tl
from ._base import SETUP_KEY


class DiffVAE:
    """DiffVAE cell-type identification on an AnnData.

    Parameters
    ----------
    adata
        Cells registered with :meth:`setup_anndata` (raw counts or log1p-normalised).
    **model_kwargs
        The latent model: ``latent_model`` ("diffvae" | "vae" | "ae" | "pca"), ``n_latent``
        (50), ``n_hidden`` ((512, 256)), ``mmd_weight``, ``kl_weight``, ``max_epochs`` (100),
        ``batch_size``, ``lr``, ``n_top_genes`` (2000) — see :func:`celldiff.tl.identify`.
    """

    def __init__(self, adata: anndata.AnnData, **model_kwargs: Any):
        setup = adata.uns.get(SETUP_KEY)
        if setup is None:
            raise ValueError("call celldiff.DiffVAE.setup_anndata(adata, ...) before creating the model")
        allowed = {"latent_model", "n_latent", "n_hidden", "mmd_weight", "kl_weight",
                   "max_epochs", "batch_size", "lr", "n_top_genes"}
        unknown = set(model_kwargs) - allowed
        if unknown:
            raise ValueError(f"unknown DiffVAE options {sorted(unknown)} (expected {sorted(allowed)})")
        self.adata = adata
        self.init_params_ = dict(model_kwargs)
        self._setup = dict(setup)
        self.result_: dict | None = None

    @classmethod
    def setup_anndata(
        cls, adata: anndata.AnnData, layer: str | None = None, labels_key: str | None = None
    ) -> None:
        """Registers the cells (``layer``) and reference labels (``labels_key``: the ARI is
        reported against them and k-means takes their number as k).

        Raises
        ------
        KeyError
            For a missing layer or obs column.
        """
        if layer is not None and layer not in adata.layers:
            raise KeyError(f"layers[{layer!r}] not found; the AnnData's layers are {list(adata.layers.keys())}")
        if labels_key is not None and labels_key not in adata.obs.columns:
            raise KeyError(f"obs[{labels_key!r}] not found; the AnnData's obs columns are {list(adata.obs.columns)}")
        setup = {"model": "diffvae"}
        if layer is not None:
            setup["layer"] = layer
        if labels_key is not None:
            setup["labels_key"] = labels_key
        adata.uns[SETUP_KEY] = setup

    def identify(self, seed: int = 0, progress_bar: bool = True, **kwargs: Any) -> dict:
        """Trains the latent model and identifies the cell types (:func:`celldiff.tl.identify`
        with this model's options; ``kwargs`` add clustering options such as
        ``n_clusters``, ``dbscan_eps``, ``on``). Writes ``obs['celldiff_cluster']``,
        ``obsm['X_celldiff']``, ``obsm['X_tsne']``, ``uns['celldiff_identify']``."""
        self.result_ = tl.identify(
            self.adata,
            labels_key=self._setup.get("labels_key"),
            layer=self._setup.get("layer"),
            seed=seed,
            progress_bar=progress_bar,
            **self.init_params_,
            **kwargs,
        )
        return self.result_
