"""Type stubs of the Rust extension ``celldiff._core`` (crate ``crates/celldiff-py``).

Matrices cross as dicts: ``{"kind": "dense", "data": ndarray [n_obs, n_vars]}`` or
``{"kind": "csr", "data", "indices", "indptr", "shape"}``; AnnData as parts dicts
(``_convert.anndata_parts`` / ``anndata_from_parts``); options as JSON text.
"""

from typing import Callable, Optional

import numpy as np

__version__: str
backend: str

Progress = Callable[[str, str], None]

class ScvaederModel:
    @staticmethod
    def train(
        adata: dict,
        options: str,
        labels_key: Optional[str] = None,
        source: str = "<in-memory AnnData>",
        layer: Optional[str] = None,
        progress: Optional[Progress] = None,
    ) -> "ScvaederModel": ...
    @staticmethod
    def load(path: str) -> "ScvaederModel": ...
    def save(self, path: str, overwrite: bool = False) -> None: ...
    def generate(self, options: str, progress: Optional[Progress] = None) -> dict: ...
    def embed(self, adata: dict) -> np.ndarray: ...
    def perturb(self, adata: dict, options: str, progress: Optional[Progress] = None) -> dict: ...
    def interpolate(
        self, adata: dict, options: str, progress: Optional[Progress] = None
    ) -> dict: ...
    @property
    def config_json(self) -> str: ...
    @property
    def history_json(self) -> str: ...
    @property
    def genes(self) -> list[str]: ...

class ScldModel:
    @staticmethod
    def train(
        adata: dict,
        options: str,
        condition_key: Optional[str] = None,
        leiden_resolution: Optional[float] = None,
        source: str = "<in-memory AnnData>",
        layer: Optional[str] = None,
        progress: Optional[Progress] = None,
    ) -> "ScldModel": ...
    @staticmethod
    def load(path: str) -> "ScldModel": ...
    def save(self, path: str, overwrite: bool = False) -> None: ...
    def generate(
        self, options: str, progress: Optional[Progress] = None
    ) -> tuple[dict, Optional[str]]: ...
    @property
    def conditions(self) -> list[str]: ...
    @property
    def config_json(self) -> str: ...
    @property
    def history_json(self) -> str: ...
    @property
    def genes(self) -> list[str]: ...

def evaluate(
    real: dict,
    generated: dict,
    seed: int = 0,
    max_cells: Optional[int] = None,
    model: Optional[ScvaederModel] = None,
) -> str: ...
def evaluate_perturbation(
    real_stim: dict,
    control: dict,
    pred: dict,
    n_top: int = 100,
    model: Optional[ScvaederModel] = None,
) -> str: ...
def check_options(options: str, model: str) -> None: ...
def velocity(x: dict, options: str) -> tuple[np.ndarray, str]: ...
def diffvae_identify(adata: dict, options: str, progress: Optional[Progress] = None) -> dict: ...
def cluster(
    adata: dict,
    resolution: float = 1.0,
    flavor: str = "leiden",
    n_iterations: int = 2,
    n_neighbors: int = 15,
    n_pcs: int = 50,
    n_top_genes: int = 2000,
    umap: bool = False,
    seed: int = 0,
    key_added: Optional[str] = None,
    neighbors_key: Optional[str] = None,
) -> dict: ...
def preprocess(adata: dict, options: str) -> dict: ...
def simulate_h5ad(
    path: str, options: str, overwrite: bool = False, progress: Optional[Progress] = None
) -> str: ...
def graph_diffvae(
    adata: dict,
    k: int = 1,
    epochs: int = 200,
    lr: float = 1e-4,
    n_top_genes: int = 2000,
    hidden: int = 512,
    latent: int = 50,
    threshold: Optional[float] = None,
    top_k_links: int = 5,
    dense_max_cells: int = 5000,
    seed: int = 0,
    progress: Optional[Progress] = None,
) -> dict: ...

class ClassifierModel:
    @staticmethod
    def train(
        adata: dict,
        labels_key: str,
        options: str,
        n_top_genes: int = 2000,
        source: str = "<in-memory AnnData>",
    ) -> "ClassifierModel": ...
    @staticmethod
    def load(path: str) -> "ClassifierModel": ...
    def save(self, path: str, overwrite: bool = False) -> None: ...
    def predict(
        self,
        adata: dict,
        key_added: str = "celldiff_cell_type",
        labels_key: Optional[str] = None,
        model: str = "<in memory>",
    ) -> dict: ...
    @property
    def config_json(self) -> str: ...

def diffvae_shift(
    adata: dict,
    labels_key: str,
    options: str,
    latent_options: str,
    classifier: Optional[ClassifierModel] = None,
    classifier_options: str = "{}",
    n_top_genes: int = 2000,
    progress: Optional[Progress] = None,
) -> tuple[str, str, str]: ...
