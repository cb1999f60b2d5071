"""celldiff.SCLD on pbmc68k_reduced: conditional generation with guidance and post-guidance,
the CLI's weights for the same seed, and the run shared with the CLI."""

from __future__ import annotations

import anndata
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import TINY, TINY_FLAGS, TINY_TRAIN, bpk_tensors, run_cli

import celldiff


def _x(a):
    return a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)


def test_scld_conditions_guidance_and_the_cli(pbmc, pbmc_path, cli, tmp_path):
    celldiff.SCLD.setup_anndata(pbmc, condition_key="bulk_labels")
    model = celldiff.SCLD(pbmc, **TINY)
    model.train(**TINY_TRAIN)
    assert model.conditions == list(pbmc.obs["bulk_labels"].cat.categories)
    mono = model.generate(
        40,
        condition="CD14+ Monocyte",
        guidance=1.0,
        post_guidance=False,
        sampler="ddim",
        steps=10,
        seed=1,
        progress_bar=False,
    )
    assert mono.n_obs == 40
    assert set(mono.obs["celldiff_condition"]) == {"CD14+ Monocyte"}
    with pytest.raises(ValueError, match="no such condition|unknown condition|not a condition"):
        model.generate(5, condition="Martian", progress_bar=False)
    with pytest.raises(ValueError, match="keep"):
        model.generate(5, keep=0.0, progress_bar=False)

    model.save(tmp_path / "py_scld")
    run_cli(
        cli,
        "train",
        "--model",
        "scld",
        "--data",
        pbmc_path,
        "--condition-key",
        "bulk_labels",
        *TINY_FLAGS,
        "--out",
        tmp_path / "cli_scld",
    )
    py, cl = tmp_path / "py_scld", tmp_path / "cli_scld"
    for f in ("ae.bpk", "denoiser.bpk", "denoiser_ema.bpk", "scorer.bpk"):
        assert bpk_tensors(py / f) == bpk_tensors(cl / f), f
    for f in ("genes.json", "conditions.json", "preprocess.json", "latent.json"):
        assert (py / f).read_bytes() == (cl / f).read_bytes(), f
    run_cli(
        cli,
        "generate",
        "--run",
        tmp_path / "py_scld",
        "-n",
        "40",
        "--condition",
        "CD14+ Monocyte",
        "--guidance",
        "1",
        "--post-guidance",
        "off",
        "--sampler",
        "ddim",
        "--steps",
        "10",
        "--seed",
        "1",
        "-o",
        tmp_path / "mono.h5ad",
    )
    np.testing.assert_array_equal(_x(anndata.read_h5ad(tmp_path / "mono.h5ad")), _x(mono))
    loaded = celldiff.SCLD.load(tmp_path / "cli_scld")
    mix = loaded.generate(50, sampler="ddim", steps=10, seed=2, progress_bar=False)
    assert mix.n_obs == 50 and mix.obs["celldiff_condition"].nunique() > 1


def test_scld_needs_conditions(pbmc):
    celldiff.SCLD.setup_anndata(pbmc)
    with pytest.raises(ValueError, match="condition"):
        celldiff.SCLD(pbmc, **TINY).train(**TINY_TRAIN)
    with pytest.raises(ValueError, match="scVAEDer"):
        celldiff.SCLD(pbmc, library_model="joint")
