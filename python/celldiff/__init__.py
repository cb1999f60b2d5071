"""celldiff: generative models of single-cell RNA-seq (scVAEDer, SCLD) in Rust, used from
Python like scvi-tools.

>>> import celldiff, scanpy as sc
>>> adata = sc.read_h5ad("pbmc68k_reduced_counts.h5ad")
>>> celldiff.ScVAEDer.setup_anndata(adata, labels_key="bulk_labels")
>>> model = celldiff.ScVAEDer(adata)
>>> model.train(seed=0)
>>> gen = model.generate(1000, seed=1)
>>> celldiff.evaluate(real=adata, generated=gen)["rf_auc"]

Runs saved here (``model.save``) are the run directories of the ``celldiff`` command line.
"""

from . import _core, datasets, pp, tl
from ._classifier import CellTypeClassifier
from ._diffvae import DiffVAE
from ._evaluate import evaluate
from ._graph import GraphDiffVAE
from ._scld import SCLD
from ._scvaeder import ScVAEDer

__version__: str = _core.__version__
#: The CPU backend the extension was built with (``flex`` or ``ndarray``).
backend: str = _core.backend

__all__ = [
    "ScVAEDer",
    "SCLD",
    "DiffVAE",
    "GraphDiffVAE",
    "CellTypeClassifier",
    "evaluate",
    "pp",
    "datasets",
    "tl",
    "__version__",
    "backend",
]
