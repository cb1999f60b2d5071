"""``celldiff.ScVAEDer``: scVAEDer (Sadria & Layton, Genome Biology 2025) — a VAE on
log1p-normalised highly variable genes and a DDPM on its standardised latent means — with
celldiff's count decoder (negative binomial, scVI's likelihood) by default on count data."""

from __future__ import annotations

import json
from typing import Any

import anndata
import numpy as np

from . import _core
from ._base import BaseModel
from ._convert import anndata_from_parts
from ._progress import with_progress


class ScVAEDer(BaseModel):
    """scVAEDer on an AnnData, used like ``scvi.model.SCVI``.

    Parameters
    ----------
    adata
        Cells registered with :meth:`setup_anndata`: raw counts (or log1p-normalised
        expression, such as Kang's X) ``[n_obs, n_vars]`` in X or the registered layer.
    **model_kwargs
        Architecture and preprocessing, the names of ``celldiff train``'s flags in snake case:
        ``n_latent`` (50), ``n_hidden`` ([512, 256]), ``dropout_rate`` (0.1),
        ``likelihood`` ("nb" | "zinb" | "gaussian"; default nb when counts can be recovered),
        ``n_top_genes`` (2000; 0 = all), ``flavor`` ("seurat" | "seurat_v3"),
        ``target_sum`` (1e4; 0 = median), ``denoiser_width`` (512), ``denoiser_depth`` (3),
        ``n_timesteps`` (1000), ``beta_schedule`` ("linear"), ``beta_start``, ``beta_end``,
        ``prior`` ("diffusion" | "flow"), ``vae_norm`` ("batch" | "none"), ``vae_activation``
        ("relu" | "silu") — default flow with none/silu on a count likelihood, the paper's
        diffusion with batch/relu on gaussian —, ``library_model`` ("cluster" | "joint"), ... Every
        value is range-checked here (``ValueError`` naming it); unknown names are refused.

    Examples
    --------
    >>> celldiff.ScVAEDer.setup_anndata(adata, labels_key="bulk_labels")
    >>> model = celldiff.ScVAEDer(adata, n_latent=50)
    >>> model.train(seed=0)
    >>> adata.obsm["X_celldiff"] = model.get_latent_representation()
    >>> gen = model.generate(5000, sampler="ddim", steps=50, seed=1)
    """

    _core_cls = _core.ScvaederModel
    _model = "scvaeder"

    @classmethod
    def setup_anndata(
        cls,
        adata: anndata.AnnData,
        layer: str | None = None,
        labels_key: str | None = None,
    ) -> None:
        """Registers where the model reads its cells (scvi-tools' ``setup_anndata``).

        Parameters
        ----------
        adata
            The AnnData; ``adata.uns['_celldiff_setup']`` records the registration.
        layer
            Read counts from ``adata.layers[layer]`` instead of X.
        labels_key
            ``obs`` column of cell labels, recorded with the run (its categories).

        Raises
        ------
        KeyError
            For a missing layer or obs column.
        """
        cls._setup(adata, layer=layer, labels_key=labels_key)

    def train(
        self,
        max_epochs: int | None = None,
        max_epochs_diffusion: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        seed: int = 0,
        progress_bar: bool = True,
        **train_kwargs: Any,
    ) -> None:
        """Preprocesses (scanpy ``normalize_total``, ``log1p``, highly variable genes), trains the
        VAE, then the latent DDPM. The GIL is released; Ctrl-C stops between minibatches
        (``KeyboardInterrupt``, the model stays untrained, nothing is written).

        Parameters
        ----------
        max_epochs
            VAE epochs (None: about 150k cell passes, 30–300, early stopping on a 10 %
            validation split).
        max_epochs_diffusion
            Denoiser epochs (None: about 4 optimisation steps per training cell).
        batch_size, lr
            VAE minibatch size (128) and learning rate (1e-3).
        seed
            Seed of every random step: the same seed gives the same weights as
            ``celldiff train --seed``.
        progress_bar
            Show tqdm bars (one per stage).
        **train_kwargs
            Other training options: ``kl_weight``, ``kl_warmup``, ``early_stopping_patience``,
            ``batch_size_diffusion``, ``lr_diffusion``, ``patience_diffusion``, ``ema_decay``.

        Raises
        ------
        ValueError
            Bad values in the cells (NaN, negative counts), bad options.
        KeyboardInterrupt
            On Ctrl-C.
        """
        kw = dict(
            max_epochs=max_epochs,
            max_epochs_diffusion=max_epochs_diffusion,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            **train_kwargs,
        )
        labels_key = self._setup_args.get("labels_key")
        parts = self._parts(self.adata, obs_keys=[labels_key] if labels_key else [])
        self._train(kw, progress_bar, parts=parts, labels_key=labels_key)

    def get_latent_representation(self, adata: anndata.AnnData | None = None) -> np.ndarray:
        """Posterior means of the VAE, ``float32 [n_obs, n_latent]`` (VAE μ units), for
        ``adata`` (default: the model's AnnData) under the run's preprocessing; genes are
        matched by name. Write them to ``adata.obsm['X_celldiff']`` for
        ``sc.pp.neighbors(adata, use_rep='X_celldiff')``.

        Raises
        ------
        ValueError
            ``adata`` lacks some of the model's genes (they are listed).
        """
        run = self._require_trained()
        adata = self.adata if adata is None else adata
        if adata is None:
            raise ValueError("pass an AnnData: this model was loaded without one")
        return run.embed(self._parts(adata))

    def generate(
        self,
        n_samples: int = 1000,
        sampler: str = "ddpm",
        steps: int | None = None,
        eta: float = 0.0,
        seed: int = 0,
        prior: str = "diffusion",
        observation: str = "counts",
        output: str = "counts",
        clip_x0: bool = True,
        use_ema: bool = True,
        progress_bar: bool = True,
    ) -> anndata.AnnData:
        """Generates cells (``celldiff generate``).

        Parameters
        ----------
        n_samples
            Number of cells.
        sampler
            "ddpm" (ancestral, T steps) or "ddim"; on a ``prior="flow"`` model "ddpm"/"ddim"
            are Euler steps of its ODE and "heun" / "midpoint" its 2nd-order solvers.
        steps
            Sampling steps (None: T for ddpm, 50 for ddim, 25 for heun and midpoint).
        eta
            DDIM η (0 = deterministic).
        seed
            Seed: the same seed gives the same cells as ``celldiff generate --seed``.
        prior
            "diffusion" (scVAEDer) or "vae" (z ~ N(0, I), the baseline).
        observation
            "counts" (sparse, discrete cells like real data) or "mean" (decoder mean).
        output
            For count-likelihood runs: "counts" (X = integer counts as float32 CSR,
            ``layers['log1p_norm']`` = the model's space) or "log1p" (the other way round).
        clip_x0, use_ema
            Clip x̂₀ to the training latents' range; sample with the EMA weights.

        Returns
        -------
        AnnData ``[n_samples, n_genes]`` with ``obs['celldiff_source'] = 'generated'``,
        ``obs['n_counts']`` (count runs), ``obsm['X_celldiff']`` (latents) and
        ``uns['celldiff']`` (model, options, preprocessing).
        """
        run = self._require_trained()
        options = dict(
            n=int(n_samples),
            sampler=sampler,
            steps=steps,
            eta=eta,
            seed=int(seed),
            prior=prior,
            observation=observation,
            output=output,
            clip_x0=clip_x0,
            use_ema=use_ema,
        )
        parts = with_progress(progress_bar, run.generate, json.dumps(options))
        return anndata_from_parts(parts)
