"""``celldiff.DiffVAE``: DiffVAE (Bica et al., Sci. Rep. 2020), an MMD-VAE whose latent
dimensions identify cell types (:meth:`DiffVAE.identify`, ``celldiff identify``)."""

from __future__ import annotations

from typing import Any

import anndata

from . import tl
from ._base import SETUP_KEY
from ._convert import check_keys


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
            raise ValueError(
                "call celldiff.DiffVAE.setup_anndata(adata, ...) before creating the model"
            )
        allowed = {
            "latent_model",
            "n_latent",
            "n_hidden",
            "mmd_weight",
            "kl_weight",
            "max_epochs",
            "batch_size",
            "lr",
            "n_top_genes",
        }
        unknown = set(model_kwargs) - allowed
        if unknown:
            raise ValueError(
                f"unknown DiffVAE options {sorted(unknown)} (expected {sorted(allowed)})"
            )
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
        check_keys(adata, layer=layer)
        check_keys(adata, obs_keys=[labels_key])
        setup = {"model": "diffvae"}
        if layer is not None:
            setup["layer"] = layer
        if labels_key is not None:
            setup["labels_key"] = labels_key
        adata.uns[SETUP_KEY] = setup

    def _latent_options(self, seed: int) -> dict:
        p = self.init_params_
        h2, h1 = p.get("n_hidden", (512, 256))
        out = {"kind": "diffvae", "h1": int(h1), "h2": int(h2), "seed": int(seed)}
        for ours, theirs in (
            ("n_latent", "n_latent"),
            ("mmd_weight", "mmd_weight"),
            ("kl_weight", "kl_weight"),
            ("max_epochs", "epochs"),
            ("batch_size", "batch_size"),
            ("lr", "learning_rate"),
        ):
            if ours in p:
                out[theirs] = p[ours]
        return out

    def shift(
        self,
        source: str,
        target: str | list[str],
        lambdas=(0.5, 1.0),
        n_dimensions: int = 5,
        classifier=None,
        controls: bool = True,
        seed: int = 0,
        progress_bar: bool = True,
    ) -> dict:
        """DiffVAE's latent shift (``celldiff shift``): trains DiffVAE on the classifier's
        space, moves the ``source`` cells' latent means by λ along the ``n_dimensions``
        dimensions that separate them from each target type, decodes them and asks the
        classifier what they became (with random-dimension controls).

        Parameters
        ----------
        source, target
            Cell types of ``obs[labels_key]`` (one or several targets).
        lambdas
            Shift sizes λ.
        classifier
            A trained :class:`celldiff.CellTypeClassifier` (default: one is trained on the
            labels with ``seed``).
        controls
            Also shift along random dimensions.

        Returns
        -------
        dict with ``results`` (``celldiff shift``'s results.json), ``table`` (markdown) and
        ``genes`` (DataFrame of the genes that change most).
        """
        import io
        import json

        import pandas as pd

        from . import _core
        from ._convert import anndata_parts
        from ._progress import with_progress

        key = self._setup.get("labels_key")
        if key is None:
            raise ValueError("shift needs labels: DiffVAE.setup_anndata(adata, labels_key=...)")
        targets = [target] if isinstance(target, str) else list(target)
        opts = {
            "source": source,
            "targets": targets,
            "lambdas": [float(x) for x in lambdas],
            "n_dimensions": int(n_dimensions),
            "controls": bool(controls),
            "seed": int(seed),
        }
        clf_opts = {"seed": int(seed)}
        doc, md, tsv = with_progress(
            progress_bar,
            _core.diffvae_shift,
            anndata_parts(self.adata, layer=self._setup.get("layer"), obs_keys=[key]),
            key,
            json.dumps(opts),
            json.dumps(self._latent_options(seed)),
            classifier=None if classifier is None else classifier._require(),
            classifier_options=json.dumps(clf_opts),
            n_top_genes=int(self.init_params_.get("n_top_genes", 2000)),
        )
        return {
            "results": json.loads(doc),
            "table": md,
            "genes": pd.read_csv(io.StringIO(tsv), sep="\t"),
        }

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
