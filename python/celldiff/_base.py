"""What ``celldiff.ScVAEDer`` and ``celldiff.SCLD`` share: ``setup_anndata`` (scvi-tools'
registry, kept in ``adata.uns['_celldiff_setup']``), options checked at construction,
``train`` with a progress bar and ``history``, ``save``/``load`` of the run directory (the same
directory ``celldiff train`` writes)."""

from __future__ import annotations

import json
import os
from typing import Any

import anndata
import pandas as pd

from . import _core
from ._convert import anndata_parts, check_keys
from ._progress import with_progress

SETUP_KEY = "_celldiff_setup"


class BaseModel:
    """Base of the celldiff models (not used directly)."""

    _core_cls: Any = None
    _model: str = ""
    _setup_fields: tuple[str, ...] = ("layer",)

    # --- setup -----------------------------------------------------------------------------
    @classmethod
    def _setup(cls, adata: anndata.AnnData, **fields: Any) -> None:
        if not isinstance(adata, anndata.AnnData):
            raise TypeError(f"expected an anndata.AnnData, got {type(adata).__name__}")
        check_keys(
            adata,
            layer=fields.get("layer"),
            obs_keys=[v for k, v in fields.items() if k.endswith("_key")],
        )
        setup = {"model": cls._model}
        setup.update({k: v for k, v in fields.items() if v is not None})
        adata.uns[SETUP_KEY] = setup

    @classmethod
    def _setup_of(cls, adata: anndata.AnnData) -> dict:
        setup = adata.uns.get(SETUP_KEY)
        if setup is None:
            raise ValueError(
                f"call celldiff.{cls.__name__}.setup_anndata(adata, ...) before creating the model"
            )
        return dict(setup)

    # --- construction ----------------------------------------------------------------------
    def __init__(self, adata: anndata.AnnData | None, **model_kwargs: Any):
        self.adata = adata
        self._setup_args = self._setup_of(adata) if adata is not None else {}
        _core.check_options(json.dumps(model_kwargs), self._model)
        self.init_params_ = dict(model_kwargs)
        self._run = None
        self.history: pd.DataFrame | None = None

    @property
    def is_trained(self) -> bool:
        """Whether the model has been trained or loaded."""
        return self._run is not None

    def _require_trained(self):
        if self._run is None:
            raise RuntimeError(
                f"the {type(self).__name__} model is not trained: call .train() first"
            )
        return self._run

    def _parts(self, adata: anndata.AnnData, obs_keys=()) -> dict:
        setup = adata.uns.get(SETUP_KEY, self._setup_args)
        return anndata_parts(adata, layer=setup.get("layer"), obs_keys=obs_keys)

    def _train(self, train_kwargs: dict, progress_bar: bool, **core_kwargs: Any) -> None:
        if self.adata is None:
            raise ValueError(
                "this model was loaded without an AnnData; pass one to load() to train"
            )
        options = {**self.init_params_, **{k: v for k, v in train_kwargs.items() if v is not None}}
        options_json = json.dumps(options)
        _core.check_options(options_json, self._model)
        self._run = with_progress(
            progress_bar,
            self._core_cls.train,
            core_kwargs.pop("parts"),
            options_json,
            layer=self._setup_args.get("layer"),
            **core_kwargs,
        )
        self.history = pd.DataFrame(json.loads(self._run.history_json))

    # --- persistence -----------------------------------------------------------------------
    def save(self, dir_path: str | os.PathLike, overwrite: bool = False) -> None:
        """Writes the run directory (``config.json``, ``genes.json``, weights, ``SHA256SUMS``;
        the layout of ``celldiff train``), atomically.

        Parameters
        ----------
        dir_path
            The run directory to create.
        overwrite
            Replace an existing directory, only if it is an earlier celldiff output.

        Raises
        ------
        FileExistsError
            ``dir_path`` exists and ``overwrite`` is False.
        ValueError
            ``dir_path`` is a folder celldiff did not write, ``.``, or a symbolic link.
        """
        self._require_trained().save(os.fspath(dir_path), overwrite)

    @classmethod
    def load(cls, dir_path: str | os.PathLike, adata: anndata.AnnData | None = None):
        """Loads a run directory written by :meth:`save` or by ``celldiff train`` (checksums,
        version and every config value checked).

        Parameters
        ----------
        dir_path
            The run directory.
        adata
            Cells to use with the model (``get_latent_representation`` without an argument);
            they must hold the model's genes. Set up with ``setup_anndata`` first, or X is used.

        Raises
        ------
        FileNotFoundError
            The directory or one of its files is missing.
        ValueError
            A damaged run (the file and field named), a run of another model, or ``adata``
            without the model's genes.
        """
        run = cls._core_cls.load(os.fspath(dir_path))
        model = cls.__new__(cls)
        model.adata = adata
        model._setup_args = dict(adata.uns.get(SETUP_KEY, {})) if adata is not None else {}
        model._run = run
        model.init_params_ = {}
        model.history = pd.DataFrame(json.loads(run.history_json))
        if adata is not None:
            model._check_genes(adata)
        return model

    def _check_genes(self, adata: anndata.AnnData) -> None:
        have = set(map(str, adata.var_names))
        missing = [g for g in self._require_trained().genes if g not in have]
        if missing:
            raise ValueError(
                f"{len(missing)} of the model's {len(self._run.genes)} genes are missing from the "
                f"AnnData (first: {missing[:10]})"
            )

    @property
    def genes(self) -> list[str]:
        """The model's genes (its X columns), in order."""
        return list(self._require_trained().genes)

    @property
    def config(self) -> dict:
        """The run's ``config.json`` as a dict (every parameter, the schedule, timings)."""
        return json.loads(self._require_trained().config_json)

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "not trained"
        n = (
            "no AnnData"
            if self.adata is None
            else f"{self.adata.n_obs} cells × {self.adata.n_vars} genes"
        )
        return f"{type(self).__name__}({n}; {state}; {self.init_params_})"
