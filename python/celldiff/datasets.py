"""``celldiff.datasets``: seeded synthetic count matrices (the CLI's ``simulate``), for
trying celldiff without data and for scale tests."""

from __future__ import annotations

import json
import os
import tempfile

import anndata

from . import _core
from ._progress import with_progress


def _options(n_cells, n_genes, n_types, mean_library, theta, de_fraction, de_sd, chunk_cells, seed):
    return json.dumps(
        {
            "n_cells": int(n_cells),
            "n_genes": int(n_genes),
            "n_types": int(n_types),
            "mean_library": float(mean_library),
            "theta": float(theta),
            "de_fraction": float(de_fraction),
            "de_sd": float(de_sd),
            "chunk_cells": int(chunk_cells),
            "seed": int(seed),
        }
    )


def simulate_h5ad(
    path: str | os.PathLike,
    n_cells: int = 10_000,
    n_genes: int = 2000,
    n_types: int = 10,
    mean_library: float = 1000.0,
    theta: float = 2.0,
    de_fraction: float = 0.05,
    de_sd: float = 1.5,
    chunk_cells: int = 10_000,
    seed: int = 0,
    overwrite: bool = False,
    progress_bar: bool = True,
) -> dict:
    """Writes seeded negative-binomial counts with cell-type programmes to ``path``
    (``celldiff simulate``), ``chunk_cells`` cells at a time, so that millions of cells never
    sit in memory. The same arguments give the same file as the CLI, byte for byte.

    Model (Splatter-like; Zappia et al., Genome Biol. 2017, simplified): gene base means
    log-normal with expected library size ``mean_library`` UMIs; each of ``n_types`` cell types
    changes a fraction ``de_fraction`` of genes by a log fold change ~ N(0, ``de_sd``²); a
    cell's library factor ~ LogNormal(0, 0.3²); counts ~ NB(mean, dispersion ``theta``).

    Parameters
    ----------
    path
        Output ``.h5ad``; refused if it exists unless ``overwrite`` (then only a file is
        replaced, never a folder).
    n_cells, n_genes, n_types
        Size of the matrix ``[n_cells, n_genes]`` and number of cell types.
    seed
        Every cell has its own generator seeded by (seed, cell index): the file does not
        depend on ``chunk_cells`` or the number of threads.

    Returns
    -------
    dict with ``n_cells``, ``n_genes``, ``nnz``, ``density``, ``mean_library`` (UMIs) and
    ``seconds`` (wall time). The file holds X as CSR ``float32`` raw counts,
    ``obs['cell_type']`` (categorical ``type_0``, …) and ``uns['celldiff_simulate']`` (the
    options).

    Raises
    ------
    ValueError
        A size below 1, a non-positive ``mean_library``/``theta``/``de_sd``, ``de_fraction``
        outside [0, 1].
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    opts = _options(
        n_cells, n_genes, n_types, mean_library, theta, de_fraction, de_sd, chunk_cells, seed
    )
    out = with_progress(
        progress_bar, _core.simulate_h5ad, os.fspath(path), opts, overwrite=bool(overwrite)
    )
    return json.loads(out)


def simulate(
    n_cells: int = 10_000,
    n_genes: int = 2000,
    n_types: int = 10,
    mean_library: float = 1000.0,
    theta: float = 2.0,
    de_fraction: float = 0.05,
    de_sd: float = 1.5,
    seed: int = 0,
    progress_bar: bool = False,
) -> anndata.AnnData:
    """The cells of :func:`simulate_h5ad` as an in-memory AnnData: X ``[n_cells, n_genes]``
    CSR ``float32`` raw counts, ``obs['cell_type']`` categorical, ``obs_names`` ``cell_0``, …,
    ``var_names`` ``gene_0``, …, ``uns['celldiff_simulate']`` the options. Arguments as
    :func:`simulate_h5ad`; for matrices that do not fit in memory write them with that one.

    Raises
    ------
    ValueError
        As :func:`simulate_h5ad`.
    """
    with tempfile.TemporaryDirectory(prefix="celldiff-simulate-") as tmp:
        path = os.path.join(tmp, "simulated.h5ad")
        simulate_h5ad(
            path,
            n_cells=n_cells,
            n_genes=n_genes,
            n_types=n_types,
            mean_library=mean_library,
            theta=theta,
            de_fraction=de_fraction,
            de_sd=de_sd,
            chunk_cells=max(1, min(int(n_cells), 10_000)),
            seed=seed,
            progress_bar=progress_bar,
        )
        return anndata.read_h5ad(path)
