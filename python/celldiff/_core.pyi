"""Type stubs of the Rust extension ``celldiff._core`` (crate ``crates/celldiff-py``).

Matrices cross as dicts: ``{"kind": "dense", "data": ndarray [n_obs, n_vars]}`` or
``{"kind": "csr", "data", "indices", "indptr", "shape"}``; AnnData as parts dicts
(``_convert.anndata_parts`` / ``anndata_from_parts``); options as JSON text.
"""

from typing import Any, Callable, Optional

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

def evaluate(real: dict, generated: dict, seed: int = 0, max_cells: Optional[int] = None) -> str: ...
def check_options(options: str, model: str) -> None: ...
