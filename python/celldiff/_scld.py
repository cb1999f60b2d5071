"""``celldiff.SCLD``: SCLD (Wang et al., arXiv 2312.14220) — an autoencoder and a conditional
latent diffusion model with pre-guidance (cluster-mean conditions, classifier-free guidance ω,
Eq. 13) and post-guidance (the Scorer keeps the best-scored fraction of each condition)."""

from __future__ import annotations

import json
import warnings
from typing import Any

import anndata

from . import _core
from ._base import BaseModel
from ._convert import anndata_from_parts
from ._progress import with_progress


class SCLD(BaseModel):
    """SCLD on an AnnData.

    Parameters
    ----------
    adata
        Cells registered with :meth:`setup_anndata` (raw counts or log1p-normalised).
    leiden_resolution
        Without a ``condition_key``: conditions from Leiden clusters at this resolution
        (scanpy workflow; stored in the run as ``leiden``).
    **model_kwargs
        As :class:`ScVAEDer` (``n_latent``, ``n_hidden``, ``n_top_genes``, ...) plus
        ``latent_model`` ("ae" | "vae"), ``fusion`` ("add" | "concat" | "attention"),
        ``denoiser`` ("mlp" | "unet"), ``cond_drop`` (0.15), ``scorer`` (True),
        ``scorer_space`` ("genes" | "latent"), ``scorer_guidance``, ``likelihood`` (default
        gaussian for SCLD).
    """

    _core_cls = _core.ScldModel
    _model = "scld"

    @classmethod
    def setup_anndata(
        cls,
        adata: anndata.AnnData,
        layer: str | None = None,
        condition_key: str | None = None,
    ) -> None:
        """Registers the cells and their conditions.

        Parameters
        ----------
        adata
            The AnnData.
        layer
            Read counts from ``adata.layers[layer]``.
        condition_key
            ``obs`` column whose categories are the conditions (e.g. ``bulk_labels``).

        Raises
        ------
        KeyError
            For a missing layer or obs column.
        """
        cls._setup(adata, layer=layer, condition_key=condition_key)

    def __init__(
        self,
        adata: anndata.AnnData | None,
        leiden_resolution: float | None = None,
        **model_kwargs: Any,
    ):
        super().__init__(adata, **model_kwargs)
        self.leiden_resolution = leiden_resolution

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
        """Trains the autoencoder, the conditional denoiser and the Scorer (as ``celldiff train
        --model scld``); arguments as :meth:`ScVAEDer.train`.

        Raises
        ------
        ValueError
            No conditions (neither ``condition_key`` nor ``leiden_resolution``), both, fewer
            than two clusters, bad values or options.
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
        key = self._setup_args.get("condition_key")
        parts = self._parts(self.adata, obs_keys=[key] if key else [])
        self._train(
            kw,
            progress_bar,
            parts=parts,
            condition_key=key,
            leiden_resolution=getattr(self, "leiden_resolution", None),
        )

    @property
    def conditions(self) -> list[str]:
        """The conditions the model can generate (the run's condition categories)."""
        return list(self._require_trained().conditions)

    def generate(
        self,
        n_samples: int = 1000,
        condition: str | None = None,
        guidance: float = 1.0,
        post_guidance: bool | None = None,
        keep: float = 0.8,
        sampler: str = "ddpm",
        steps: int | None = None,
        eta: float = 0.0,
        seed: int = 0,
        observation: str = "counts",
        output: str = "counts",
        clip_x0: bool = True,
        use_ema: bool = True,
        progress_bar: bool = True,
    ) -> anndata.AnnData:
        """Generates cells of one condition, or of all in their training proportions.

        Parameters
        ----------
        n_samples
            Number of cells.
        condition
            A condition name (see :attr:`conditions`); None = every condition in its training
            proportions.
        guidance
            Classifier-free guidance ω (Eq. 13; −1 = holistic generation, 0 = conditional
            only).
        post_guidance
            Keep the Scorer's best-scored fraction ``keep`` of each condition; None = on when
            the run has a Scorer better than chance (a warning says when it is turned off).
        keep
            Fraction kept by post-guidance, in (0, 1].
        sampler, steps, eta, seed, observation, output, clip_x0, use_ema
            As :meth:`ScVAEDer.generate`.

        Returns
        -------
        AnnData with ``obs['celldiff_condition']``, ``obs['celldiff_score']`` (Scorer P(real))
        and the keys of :meth:`ScVAEDer.generate`.

        Raises
        ------
        ValueError
            Unknown condition, bad options.
        """
        run = self._require_trained()
        options = dict(
            n=int(n_samples),
            condition=condition,
            guidance=guidance,
            post_guidance=post_guidance,
            keep=keep,
            sampler=sampler,
            steps=steps,
            eta=eta,
            seed=int(seed),
            observation=observation,
            output=output,
            clip_x0=clip_x0,
            use_ema=use_ema,
        )
        parts, warning = with_progress(progress_bar, run.generate, json.dumps(options))
        if warning:
            warnings.warn(warning, stacklevel=2)
        return anndata_from_parts(parts)
