"""``celldiff.CellTypeClassifier``: DiffVAE's cell-type classifier (Bica et al., Sci. Rep.
2020; ``celldiff classify train|predict``), saved as the CLI's classifier directory."""

from __future__ import annotations

import json
import os

import anndata
import pandas as pd

from . import _core
from ._base import SETUP_KEY
from ._convert import anndata_parts, check_keys, uns_from_json


class CellTypeClassifier:
    """A neural cell-type classifier on DiffVAE's preprocessing (highly variable genes,
    scaled), trained on ``obs[labels_key]``.

    Parameters
    ----------
    adata
        Labelled cells registered with :meth:`setup_anndata`.
    n_hidden
        Hidden widths (the paper's 256, 512, 256).
    n_top_genes
        Highly variable genes (0 = all).
    """

    def __init__(
        self, adata: anndata.AnnData | None, n_hidden=(256, 512, 256), n_top_genes: int = 2000
    ):
        self.adata = adata
        self.init_params_ = {"hidden": [int(h) for h in n_hidden]}
        self.n_top_genes = int(n_top_genes)
        self._clf = None

    @classmethod
    def setup_anndata(
        cls, adata: anndata.AnnData, labels_key: str, layer: str | None = None
    ) -> None:
        """Registers the labels (``obs[labels_key]``) and where the cells are.

        Raises
        ------
        KeyError
            For a missing layer or obs column.
        """
        check_keys(adata, obs_keys=[labels_key])
        check_keys(adata, layer=layer)
        adata.uns[SETUP_KEY] = {
            "model": "classifier",
            "labels_key": labels_key,
            **({"layer": layer} if layer else {}),
        }

    def _setup(self, adata):
        setup = adata.uns.get(SETUP_KEY)
        if setup is None or "labels_key" not in setup:
            raise ValueError(
                "call celldiff.CellTypeClassifier.setup_anndata(adata, labels_key=...) first"
            )
        return setup

    def train(
        self,
        max_epochs: int = 50,
        batch_size: int = 128,
        lr: float = 1e-3,
        validation_fraction: float = 0.2,
        seed: int = 0,
    ) -> dict:
        """Trains the classifier (a ``validation_fraction`` of each type held out for the
        report). Returns the report (held-out accuracy, balanced accuracy, the majority
        baseline, per-type accuracies)."""
        setup = self._setup(self.adata)
        key = setup["labels_key"]
        opts = dict(
            self.init_params_,
            epochs=int(max_epochs),
            batch_size=int(batch_size),
            learning_rate=float(lr),
            validation_fraction=float(validation_fraction),
            seed=int(seed),
        )
        self._clf = _core.ClassifierModel.train(
            anndata_parts(self.adata, layer=setup.get("layer"), obs_keys=[key]),
            key,
            json.dumps(opts),
            n_top_genes=self.n_top_genes,
        )
        return self.report

    @property
    def report(self) -> dict:
        """The held-out report of the trained classifier."""
        return json.loads(self._require().config_json)["report"]

    def _require(self):
        if self._clf is None:
            raise RuntimeError("the classifier is not trained: call .train() first")
        return self._clf

    def predict(
        self,
        adata: anndata.AnnData | None = None,
        key_added: str = "celldiff_cell_type",
        labels_key: str | None = None,
    ) -> pd.Series:
        """Predicts cell types (genes matched by name). Writes ``obs[key_added]``,
        ``obs[key_added + '_prob']``, ``obsm[key_added + '_probs']`` and
        ``uns['celldiff_classify']`` (with the accuracy against ``obs[labels_key]`` when given).
        Returns ``obs[key_added]``."""
        adata = self.adata if adata is None else adata
        layer = adata.uns.get(SETUP_KEY, {}).get("layer")
        ann = self._require().predict(
            anndata_parts(adata, layer=layer, obs_keys=[labels_key] if labels_key else []),
            key_added=key_added,
            labels_key=labels_key,
        )
        for k, col in ann["obs"].items():
            if col["kind"] == "categorical":
                adata.obs[k] = pd.Categorical.from_codes(col["codes"], categories=col["categories"])
            else:
                adata.obs[k] = col["values"]
        for k, m in ann["obsm"].items():
            adata.obsm[k] = m
        for k, v in json.loads(ann["uns"]).items():
            adata.uns[k] = uns_from_json(v)
        return adata.obs[key_added]

    def save(self, dir_path: str | os.PathLike, overwrite: bool = False) -> None:
        """Writes the classifier directory (the layout of ``celldiff classify train``)."""
        self._require().save(os.fspath(dir_path), overwrite)

    @classmethod
    def load(cls, dir_path: str | os.PathLike, adata: anndata.AnnData | None = None):
        """Loads a classifier directory written by :meth:`save` or ``celldiff classify train``."""
        model = cls(adata)
        model._clf = _core.ClassifierModel.load(os.fspath(dir_path))
        return model
