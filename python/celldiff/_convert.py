"""AnnData ↔ the plain parts that the Rust extension ``celldiff._core`` reads and returns.

Matrices go to Rust as numpy arrays (read through the buffer protocol in their own dtype:
float32, float64 or any integer width, C or Fortran order; CSC and COO become CSR first) and
come back as numpy arrays from which the AnnData is built here, so scanpy uses it unchanged.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp


def matrix_parts(x: Any, field: str) -> dict:
    """A matrix ``[n_obs, n_vars]`` as ``{"kind": "dense"|"csr", ...}``.

    Raises
    ------
    ValueError
        If ``x`` is missing or not a numeric 2-D matrix.
    """
    if x is None:
        raise ValueError(f"{field} is empty (None); expected a [n_obs, n_vars] matrix")
    if sp.issparse(x):
        if x.format != "csr":
            x = x.tocsr()
        return {
            "kind": "csr",
            "data": np.asarray(x.data),
            "indices": np.asarray(x.indices),
            "indptr": np.asarray(x.indptr),
            "shape": tuple(int(s) for s in x.shape),
        }
    if hasattr(x, "to_memory"):  # anndata backed / dask-like views
        x = x.to_memory()
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{field}: expected numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{field}: expected a 2-D [n_obs, n_vars] matrix, got shape {arr.shape}")
    return {"kind": "dense", "data": arr}


def categorical_parts(adata: anndata.AnnData, key: str) -> dict:
    """``obs[key]`` as pandas categorical codes (``-1`` = missing) and category names.

    Raises
    ------
    KeyError
        If ``obs`` has no column ``key`` (the available columns are listed).
    """
    if key not in adata.obs.columns:
        raise KeyError(
            f"obs[{key!r}] not found; the AnnData's obs columns are {list(adata.obs.columns)}"
        )
    col = adata.obs[key]
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col.cat
        codes, categories = cat.codes.to_numpy(), [str(c) for c in cat.categories]
    else:
        c = pd.Categorical([None if pd.isna(v) else str(v) for v in col.tolist()])
        codes, categories = c.codes, [str(v) for v in c.categories]
    return {"codes": np.asarray(codes, dtype=np.int32), "categories": categories}


def _is_list_dict(d: dict) -> bool:
    return len(d) > 0 and list(d.keys()) == [str(i) for i in range(len(d))]


def uns_to_json(v: Any) -> Any:
    """``uns`` values as JSON values for the extension: numpy scalars and arrays become numbers
    and lists, and a dict keyed ``"0"``, ``"1"``, … (how a list of mixed items is stored in
    h5ad, see :func:`uns_from_json`) becomes a list again."""
    if isinstance(v, dict):
        if _is_list_dict(v):
            return [uns_to_json(v[str(i)]) for i in range(len(v))]
        return {str(k): uns_to_json(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return [uns_to_json(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [uns_to_json(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _numeric_matrix(items: list) -> bool:
    return (
        len(items) > 0
        and all(isinstance(r, list) for r in items)
        and len(items[0]) > 0
        and all(len(r) == len(items[0]) for r in items)
        and all(_is_number(x) for r in items for x in r)
    )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def uns_from_json(v: Any) -> Any:
    """A JSON ``uns`` value in the objects anndata writes to h5ad, as ``celldiff``'s own writer
    encodes it (``io/h5ad/write.rs``): lists of numbers → int64/float64 arrays (rectangular
    lists of number lists → 2-D), of strings → string arrays, of booleans → bool arrays, empty →
    an empty float64 array; any other list → a dict keyed ``"0"``, ``"1"``, …; null → None."""
    if isinstance(v, dict):
        return {k: uns_from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        if not v:
            return np.zeros(0, dtype=np.float64)
        if all(_is_number(x) for x in v):
            ints = all(isinstance(x, int) for x in v)
            return np.asarray(v, dtype=np.int64 if ints else np.float64)
        if all(isinstance(x, str) for x in v):
            return np.asarray(v, dtype=object)
        if all(isinstance(x, bool) for x in v):
            return np.asarray(v, dtype=bool)
        if _numeric_matrix(v):
            ints = all(isinstance(x, int) for r in v for x in r)
            return np.asarray(v, dtype=np.int64 if ints else np.float64)
        return {str(i): uns_from_json(x) for i, x in enumerate(v)}
    return v


def anndata_parts(
    adata: anndata.AnnData,
    layer: str | None = None,
    obs_keys: Iterable[str] = (),
    layers: Iterable[str] = (),
    uns_keys: Iterable[str] = (),
) -> dict:
    """The parts of ``adata`` that a model reads: X (or ``layers[layer]``), names, the
    categorical ``obs`` columns ``obs_keys``, the ``layers`` named, and ``uns`` entries as JSON.

    Raises
    ------
    KeyError
        For a missing layer or obs column.
    ValueError
        For a matrix that is not numeric.
    """
    if layer is not None:
        if layer not in adata.layers:
            raise KeyError(
                f"layers[{layer!r}] not found; the AnnData's layers are {list(adata.layers.keys())}"
            )
        x, field = adata.layers[layer], f"layers[{layer!r}]"
    else:
        x, field = adata.X, "X"
    parts = {
        "x": matrix_parts(x, field),
        "var_names": [str(v) for v in adata.var_names],
        "obs_names": [str(v) for v in adata.obs_names],
        "obs": {k: categorical_parts(adata, k) for k in obs_keys},
        "layers": {
            k: matrix_parts(adata.layers[k], f"layers[{k!r}]") for k in layers if k in adata.layers
        },
        "uns": json.dumps({k: uns_to_json(adata.uns[k]) for k in uns_keys if k in adata.uns}),
    }
    return parts


def _matrix(parts: dict) -> Any:
    if parts["kind"] == "csr":
        return sp.csr_matrix(
            (parts["data"], parts["indices"], parts["indptr"]), shape=tuple(parts["shape"])
        )
    return parts["data"]


def _frame(names: list, columns: dict) -> pd.DataFrame:
    df = pd.DataFrame(index=pd.Index(names))
    for name, col in columns.items():
        kind = col["kind"]
        if kind == "categorical":
            df[name] = pd.Categorical.from_codes(col["codes"], categories=col["categories"])
        elif kind == "numeric":
            df[name] = np.asarray(col["values"])
        elif kind == "bool":
            df[name] = np.asarray(col["values"], dtype=bool)
        else:
            df[name] = list(col["values"])
    return df


def anndata_from_parts(parts: dict) -> anndata.AnnData:
    """The AnnData the extension returned as parts (``X``, names, ``obs``, ``obsm``,
    ``layers``, ``uns`` JSON with null → None)."""
    obs = _frame(parts["obs_names"], parts["obs"])
    var = _frame(parts["var_names"], parts.get("var", {}))
    return anndata.AnnData(
        X=_matrix(parts["X"]),
        obs=obs,
        var=var,
        obsm={k: v for k, v in parts["obsm"].items()},
        layers={k: _matrix(v) for k, v in parts["layers"].items()},
        uns=uns_from_json(json.loads(parts["uns"])),
    )


def check_keys(adata: anndata.AnnData, layer: str | None = None, obs_keys: Iterable = ()) -> None:
    """Raises ``KeyError`` naming the missing ``layers[layer]`` or ``obs`` column and listing
    the ones the AnnData has (``None`` keys are skipped)."""
    if layer is not None and layer not in adata.layers:
        raise KeyError(
            f"layers[{layer!r}] not found; the AnnData's layers are {list(adata.layers.keys())}"
        )
    for key in obs_keys:
        if key is not None and key not in adata.obs.columns:
            raise KeyError(
                f"obs[{key!r}] not found; the AnnData's obs columns are {list(adata.obs.columns)}"
            )
