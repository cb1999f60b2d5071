"""celldiff.ScVAEDer on pbmc68k_reduced raw counts: the same weights and cells as the command
line for the same seed, runs shared both ways, in-memory inputs of every kind, errors, and
scanpy on the outputs."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import TINY, TINY_FLAGS, TINY_TRAIN, bpk_tensors, run_cli

import celldiff

WEIGHTS = ("vae.bpk", "denoiser.bpk", "denoiser_ema.bpk")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, pbmc_path, cli):
    """One tiny model trained from Python and the same one trained by `celldiff train`."""
    tmp = tmp_path_factory.mktemp("runs")
    adata = anndata.read_h5ad(pbmc_path)
    celldiff.ScVAEDer.setup_anndata(adata, labels_key="bulk_labels")
    model = celldiff.ScVAEDer(adata, **TINY)
    model.train(**TINY_TRAIN)
    model.save(tmp / "py_run")
    run_cli(
        cli,
        "train",
        "--data",
        pbmc_path,
        "--labels-key",
        "bulk_labels",
        *TINY_FLAGS,
        "--out",
        tmp / "cli_run",
    )
    return adata, model, tmp


def _x(a: anndata.AnnData) -> np.ndarray:
    return a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)


def test_python_training_gives_the_cli_weights_byte_for_byte(trained):
    _, _, tmp = trained
    for f in WEIGHTS:
        py, cl = bpk_tensors(tmp / "py_run" / f), bpk_tensors(tmp / "cli_run" / f)
        assert py == cl, f"{f}: tensors differ between the Python and the CLI run"
    for f in ("genes.json", "preprocess.json", "latent.json", "library_size.json"):
        py, cl = (tmp / "py_run" / f).read_bytes(), (tmp / "cli_run" / f).read_bytes()
        assert py == cl, f"{f} differs between the Python and the CLI run"


def test_generated_cells_match_the_cli_and_runs_load_both_ways(trained, cli):
    _, model, tmp = trained
    gen = model.generate(60, sampler="ddim", steps=10, seed=1, progress_bar=False)
    run_cli(
        cli,
        "generate",
        "--run",
        tmp / "py_run",
        "-n",
        "60",
        "--sampler",
        "ddim",
        "--steps",
        "10",
        "--seed",
        "1",
        "-o",
        tmp / "cli_gen.h5ad",
    )
    cli_gen = anndata.read_h5ad(tmp / "cli_gen.h5ad")
    assert gen.shape == cli_gen.shape == (60, len(model.genes))
    np.testing.assert_array_equal(_x(gen), _x(cli_gen))
    np.testing.assert_array_equal(gen.obsm["X_celldiff"], cli_gen.obsm["X_celldiff"])
    assert list(gen.var_names) == list(cli_gen.var_names)
    # A run written by the CLI loads in Python and generates the same cells.
    loaded = celldiff.ScVAEDer.load(tmp / "cli_run")
    again = loaded.generate(60, sampler="ddim", steps=10, seed=1, progress_bar=False)
    np.testing.assert_array_equal(_x(again), _x(gen))
    # Counts out: integers in a CSR X, the model's space in layers['log1p_norm'].
    assert sp.issparse(gen.X)
    assert np.all(gen.X.data == np.round(gen.X.data))
    assert "log1p_norm" in gen.layers and "n_counts" in gen.obs
    assert gen.obs["celldiff_source"].cat.categories.tolist() == ["generated"]
    assert gen.uns["celldiff"]["model"] == "scvaeder"
    # Another seed gives other cells; the same seed the same bytes.
    other = model.generate(60, sampler="ddim", steps=10, seed=2, progress_bar=False)
    assert not np.array_equal(_x(other), _x(gen))


def test_history_records_falling_losses(trained):
    _, model, _ = trained
    h = model.history
    assert set(h["stage"]) == {"vae", "diffusion"}
    vae = h[h["stage"] == "vae"]
    assert len(vae) == TINY_TRAIN["max_epochs"]
    assert vae["train_loss"].iloc[-1] < vae["train_loss"].iloc[0]


def test_latent_representation_feeds_scanpy(trained):
    sc = pytest.importorskip("scanpy")
    adata, model, _ = trained
    z = model.get_latent_representation()
    assert z.shape == (adata.n_obs, TINY["n_latent"]) and z.dtype == np.float32
    assert np.isfinite(z).all() and z.std(axis=0).min() > 0
    ad = adata.copy()
    ad.obsm["X_celldiff"] = z
    sc.pp.neighbors(ad, use_rep="X_celldiff", n_neighbors=10)
    sc.tl.umap(ad)
    assert ad.obsm["X_umap"].shape == (ad.n_obs, 2)
    gen = model.generate(30, sampler="ddim", steps=5, seed=3, progress_bar=False)
    both = anndata.concat([adata[:, model.genes], gen], label="source", keys=["real", "generated"])
    assert both.n_obs == adata.n_obs + 30


def test_every_kind_of_in_memory_x_gives_the_same_latents(trained):
    adata, model, _ = trained
    ref = model.get_latent_representation(adata)
    counts = adata.X.toarray()
    kinds = {
        "dense float32": counts.astype(np.float32),
        "dense float64": counts.astype(np.float64),
        "dense int64": counts.astype(np.int64),
        "fortran order": np.asfortranarray(counts.astype(np.float32)),
        "csr float32": sp.csr_matrix(counts.astype(np.float32)),
        "csc": sp.csc_matrix(counts),
        "csr_array": sp.csr_array(counts),
    }
    for name, x in kinds.items():
        ad = anndata.AnnData(X=x, obs=adata.obs.copy(), var=adata.var.copy())
        np.testing.assert_array_equal(model.get_latent_representation(ad), ref, err_msg=name)
    # A layer registered with setup_anndata, and a view.
    ad = anndata.AnnData(
        X=np.zeros(counts.shape, np.float32),
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        layers={"counts": adata.X.copy()},
    )
    celldiff.ScVAEDer.setup_anndata(ad, layer="counts")
    np.testing.assert_array_equal(model.get_latent_representation(ad), ref)
    view = adata[100:200]
    np.testing.assert_array_equal(model.get_latent_representation(view), ref[100:200])
    # Genes in another order are matched by name.
    perm = adata[:, ::-1].copy()
    np.testing.assert_array_equal(model.get_latent_representation(perm), ref)


def test_bad_input_raises_clear_python_errors(trained, tmp_path):
    adata, model, tmp = trained
    x = adata.X.toarray().astype(np.float32)
    x[3, 5] = np.nan
    bad = anndata.AnnData(X=x, obs=adata.obs.copy(), var=adata.var.copy())
    with pytest.raises(ValueError, match="NaN"):
        model.get_latent_representation(bad)
    celldiff.ScVAEDer.setup_anndata(bad)
    with pytest.raises(ValueError, match="NaN"):
        celldiff.ScVAEDer(bad, **TINY).train(**TINY_TRAIN)
    neg = anndata.AnnData(
        X=-np.abs(adata.X.toarray()).astype(np.float32) - 1.0,
        obs=adata.obs.copy(),
        var=adata.var.copy(),
    )
    celldiff.ScVAEDer.setup_anndata(neg)
    with pytest.raises(ValueError):
        celldiff.ScVAEDer(neg, **TINY).train(**TINY_TRAIN)
    with pytest.raises(KeyError, match="no_such_column"):
        celldiff.ScVAEDer.setup_anndata(adata.copy(), labels_key="no_such_column")
    with pytest.raises(KeyError, match="no_such_layer"):
        celldiff.ScVAEDer.setup_anndata(adata.copy(), layer="no_such_layer")
    fresh = adata.copy()
    del fresh.uns["_celldiff_setup"]
    with pytest.raises(ValueError, match="setup_anndata"):
        celldiff.ScVAEDer(fresh)
    with pytest.raises(ValueError, match="are missing"):
        model.get_latent_representation(adata[:, :100].copy())
    with pytest.raises(ValueError, match="are missing"):
        celldiff.ScVAEDer.load(tmp / "py_run", adata[:, :100].copy())
    with pytest.raises(ValueError, match="n_latent"):
        celldiff.ScVAEDer(adata, n_latent=0)
    with pytest.raises(ValueError, match="no_such_option"):
        celldiff.ScVAEDer(adata, no_such_option=1)
    with pytest.raises(ValueError, match="SCLD"):
        celldiff.ScVAEDer(adata, fusion="add")
    with pytest.raises(ValueError, match="prior must be diffusion or flow, got `ddpm`"):
        celldiff.ScVAEDer(adata, prior="ddpm", **TINY).train(**TINY_TRAIN)
    with pytest.raises(ValueError, match="sampler"):
        model.generate(10, sampler="euler", progress_bar=False)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp / "py_run")
    with pytest.raises(FileNotFoundError):
        celldiff.ScVAEDer.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="scvaeder"):
        celldiff.SCLD.load(tmp / "py_run")
    # A folder celldiff did not write is never replaced, even with overwrite=True.
    user = tmp_path / "my_notes"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(ValueError):
        model.save(user, overwrite=True)
    assert (user / "notes.txt").read_text() == "mine"
    # overwrite=True replaces an earlier celldiff run.
    model.save(tmp / "py_run", overwrite=True)


def test_evaluate_gives_the_cli_numbers(trained, pbmc_path, cli):
    adata, model, tmp = trained
    gen = model.generate(200, sampler="ddim", steps=10, seed=4, progress_bar=False)
    gen.write_h5ad(tmp / "gen4.h5ad")
    m = celldiff.evaluate(real=adata, generated=gen, seed=0, model=model)
    out = tmp / "metrics.json"
    run_cli(
        cli,
        "evaluate",
        "--real",
        pbmc_path,
        "--generated",
        tmp / "gen4.h5ad",
        "--seed",
        "0",
        "--run",
        tmp / "py_run",
        "-o",
        out,
    )
    ref = json.loads(out.read_text())
    assert 0.0 <= m["rf_auc"] <= 1.0
    assert set(ref) == set(m) and "reconstruction" in m
    for k, v in ref.items():
        if isinstance(v, float):
            assert m[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    for k, v in ref["reconstruction"].items():
        if isinstance(v, float):
            assert m["reconstruction"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_bad_category_codes_are_a_value_error_not_a_crash(trained):
    _, model, _ = trained
    parts = celldiff._convert.anndata_parts(trained[0], obs_keys=["bulk_labels"])
    parts["obs"]["bulk_labels"]["codes"][0] = 99
    with pytest.raises(ValueError, match="category code 99"):
        celldiff._core.ScvaederModel.train(parts, json.dumps(TINY), labels_key="bulk_labels")
