"""The analyses from Python give the command line's results for the same data and seed:
celldiff.tl (perturbation and interpolation on Kang, velocity, clustering), celldiff.pp,
DiffVAE identification, its classifier and latent shifts (pbmc68k, Weinreb) and
Graph-DiffVAE."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import SHARED, TINY, TINY_FLAGS, TINY_TRAIN, run_cli

import celldiff

KANG = SHARED / "kang_pbmc_ifnb_valid" / "valid_kang.h5ad"


def _x(a):
    return a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)


def _interpolate_like_the_cli(model, kang, cli, run, out):
    """``tl.interpolate`` of Kang's CD14+ monocytes, control → stimulated (30 λ), checked
    against ``celldiff interpolate`` on the run directory ``run`` (the same cells, bit for bit)
    and for a path that leaves control for stimulated; returns the path."""
    mono = kang[kang.obs["cell_type"] == "CD14+Mono"].copy()
    path = celldiff.tl.interpolate(
        model,
        mono,
        key="condition",
        from_="control",
        to="stimulated",
        n_steps=30,
        progress_bar=False,
    )
    info = path.uns["celldiff_interpolation"]
    assert info["spearman_to"] > 0.5 > info["spearman_from"]
    run_cli(
        cli,
        "interpolate",
        "--run",
        run,
        "--data",
        KANG,
        "--key",
        "condition",
        "--from",
        "control",
        "--to",
        "stimulated",
        "--where",
        "cell_type=CD14+Mono",
        "--n-steps",
        "30",
        "-o",
        out,
    )
    np.testing.assert_array_equal(_x(anndata.read_h5ad(out)), _x(path))
    return path


@pytest.fixture(scope="module")
def kang_model(tmp_path_factory, cli):
    if not KANG.exists():
        pytest.fail(f"{KANG} is missing")
    tmp = tmp_path_factory.mktemp("kang")
    kang = anndata.read_h5ad(KANG)
    held_out = (kang.obs["cell_type"] == "CD4T") & (kang.obs["condition"] == "stimulated")
    train = kang[~held_out.to_numpy()].copy()
    celldiff.ScVAEDer.setup_anndata(train, labels_key="cell_type")
    model = celldiff.ScVAEDer(train, fit_observation=False, **TINY)
    model.train(**TINY_TRAIN)
    run_cli(
        cli,
        "train",
        "--data",
        KANG,
        "--labels-key",
        "cell_type",
        "--exclude",
        "cell_type=CD4T,condition=stimulated",
        "--no-observation",
        *TINY_FLAGS,
        "--out",
        tmp / "cli_kang",
    )
    return kang, model, tmp


def test_interpolation_on_a_flow_prior_matches_the_cli(tmp_path, cli):
    """A ``prior="flow"`` model (the default on count data): ``tl.interpolate`` uses the flow's
    linear path and its ODE, and gives the command line's cells for the same run settings."""
    kang = anndata.read_h5ad(KANG)
    celldiff.ScVAEDer.setup_anndata(kang, labels_key="cell_type")
    model = celldiff.ScVAEDer(kang, fit_observation=False, prior="flow", **TINY)
    model.train(**TINY_TRAIN)
    run_cli(
        cli,
        "train",
        "--data",
        KANG,
        "--labels-key",
        "cell_type",
        "--no-observation",
        "--prior",
        "flow",
        *TINY_FLAGS,
        "--out",
        tmp_path / "run",
    )
    path = _interpolate_like_the_cli(model, kang, cli, tmp_path / "run", tmp_path / "interp.h5ad")
    assert path.uns["celldiff_interpolation"]["flow_level"] > 0.0


def test_perturbation_matches_the_cli(kang_model, cli):
    kang, model, tmp = kang_model
    pred = celldiff.tl.perturb(model, kang, predict="CD4T", space="vae", steps=20)
    n_ctrl = int(((kang.obs["cell_type"] == "CD4T") & (kang.obs["condition"] == "control")).sum())
    assert pred.shape == (n_ctrl, len(model.genes))
    m = pred.uns["celldiff_perturbation"]["metrics"]
    assert 0.0 <= m["r2_mean_top"] <= 1.0
    run_cli(
        cli,
        "perturb",
        "--run",
        tmp / "cli_kang",
        "--data",
        KANG,
        "--predict",
        "CD4T",
        "--space",
        "vae",
        "--steps",
        "20",
        "-o",
        tmp / "pred.h5ad",
    )
    np.testing.assert_array_equal(_x(anndata.read_h5ad(tmp / "pred.h5ad")), _x(pred))
    # evaluate-perturbation: Kang's X is already the model's space (log1p-normalised).
    cd4 = kang[kang.obs["cell_type"] == "CD4T"]
    stim = cd4[(cd4.obs["condition"] == "stimulated").to_numpy()].copy()
    ctrl = cd4[(cd4.obs["condition"] == "control").to_numpy()].copy()
    e = celldiff.tl.evaluate_perturbation(stim, ctrl, pred)
    assert e["r2_mean_all"] == pytest.approx(m["r2_mean_all"], rel=1e-12)
    assert e["r2_mean_top"] == pytest.approx(m["r2_mean_top"], rel=1e-12)
    run_cli(
        cli,
        "evaluate-perturbation",
        "--real-stim",
        KANG,
        "--real-stim-where",
        "cell_type=CD4T,condition=stimulated",
        "--control",
        KANG,
        "--control-where",
        "cell_type=CD4T,condition=control",
        "--pred",
        tmp / "pred.h5ad",
        "-o",
        tmp / "evalp",
    )
    ref = json.loads((tmp / "evalp_metrics.json").read_text())
    for k in ("r2_mean_all", "r2_mean_top", "r2_var_all", "r2_var_top"):
        assert e[k] == pytest.approx(ref[k], rel=1e-12), k
    with pytest.raises(ValueError, match="are missing"):
        celldiff.tl.evaluate_perturbation(stim[:, :50].copy(), ctrl, pred)
    with pytest.raises(ValueError, match="Martian"):
        celldiff.tl.perturb(model, kang, predict="Martian")


def test_interpolation_matches_the_cli_and_velocity_ranks_genes(kang_model, cli):
    kang, model, tmp = kang_model
    path = _interpolate_like_the_cli(model, kang, cli, tmp / "cli_kang", tmp / "interp.h5ad")
    assert path.shape == (30, len(model.genes))
    lam = path.obs["lambda"].to_numpy()
    assert lam[0] == 0.0 and lam[-1] == 1.0 and np.all(np.diff(lam) > 0)
    assert "flow_level" not in path.uns["celldiff_interpolation"]

    table = celldiff.tl.velocity(path, top_k=5, first_steps=10)
    assert len(table) == path.n_vars
    assert np.all(np.diff(table["score"].to_numpy()) <= 0)
    v = path.uns["celldiff_velocity"]["velocity"]
    assert v.shape == (29, path.n_vars)
    np.testing.assert_allclose(v[0], _x(path)[1] - _x(path)[0], rtol=1e-5, atol=1e-6)
    assert path.var["celldiff_velocity_rank"].min() == 1


def test_diffvae_identify_matches_the_cli(pbmc_path, cli, tmp_path):
    adata = anndata.read_h5ad(pbmc_path)
    celldiff.DiffVAE.setup_anndata(adata, labels_key="bulk_labels")
    model = celldiff.DiffVAE(adata, n_latent=10, max_epochs=5)
    res = model.identify(tsne_epochs=250, progress_bar=False)
    k = adata.obs["bulk_labels"].nunique()
    assert res["n_clusters"] == k and 0.0 < res["ari"] <= 1.0
    assert adata.obsm["X_celldiff"].shape == (adata.n_obs, 10)
    assert adata.obsm["X_tsne"].shape == (adata.n_obs, 2)
    assert set(res["dimensions"]["cluster"]) == set(range(k))
    run_cli(
        cli,
        "identify",
        "--data",
        pbmc_path,
        "--labels-key",
        "bulk_labels",
        "--latent",
        "10",
        "--epochs",
        "5",
        "--tsne-epochs",
        "250",
        "-o",
        tmp_path / "id.h5ad",
    )
    ref = anndata.read_h5ad(tmp_path / "id.h5ad")
    np.testing.assert_array_equal(ref.obsm["X_celldiff"], adata.obsm["X_celldiff"])
    np.testing.assert_array_equal(
        ref.obs["celldiff_cluster"].to_numpy(), adata.obs["celldiff_cluster"].to_numpy()
    )
    with pytest.raises(ValueError, match="unknown DiffVAE options"):
        celldiff.DiffVAE(adata, fusion="add")


def test_cluster_matches_the_cli_and_feeds_scanpy(pbmc_path, cli, tmp_path):
    sc = pytest.importorskip("scanpy")
    adata = anndata.read_h5ad(pbmc_path)
    n = celldiff.tl.cluster(adata, resolution=1.0, seed=0)
    assert n == adata.obs["leiden"].nunique() >= 2
    run_cli(
        cli,
        "cluster",
        "--data",
        pbmc_path,
        "--resolution",
        "1",
        "--seed",
        "0",
        "-o",
        tmp_path / "cl.h5ad",
    )
    ref = anndata.read_h5ad(tmp_path / "cl.h5ad")
    np.testing.assert_array_equal(ref.obs["leiden"].to_numpy(), adata.obs["leiden"].to_numpy())
    np.testing.assert_array_equal(ref.obsm["X_pca"], adata.obsm["X_pca"])
    assert (ref.obsp["connectivities"] != adata.obsp["connectivities"]).nnz == 0
    sc.tl.umap(adata)  # scanpy reads uns['neighbors'] and obsp as written
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2)
    with pytest.raises(ValueError, match="resolution"):
        celldiff.tl.cluster(adata, resolution=0.0)


def test_preprocess_matches_the_cli(pbmc_path, cli, tmp_path):
    adata = anndata.read_h5ad(pbmc_path)
    out = celldiff.pp.preprocess(adata, n_top_genes=300, subset=True)
    assert out.shape == (adata.n_obs, 300)
    assert out.var["highly_variable"].all()
    assert "bulk_labels" in out.obs and out.uns["celldiff_preprocess"]["input_kind"] == "counts"
    assert adata.shape == (700, 765)  # the input is unchanged
    run_cli(
        cli,
        "preprocess",
        "--data",
        pbmc_path,
        "--n-top-genes",
        "300",
        "--subset",
        "-o",
        tmp_path / "pp.h5ad",
    )
    ref = anndata.read_h5ad(tmp_path / "pp.h5ad")
    assert list(ref.var_names) == list(out.var_names)
    np.testing.assert_array_equal(_x(ref), _x(out))
    with pytest.raises(ValueError, match="scale|minmax"):
        celldiff.pp.preprocess(adata, scale=True, minmax=True)


def test_graph_diffvae_matches_the_cli(pbmc_path, cli, tmp_path):
    adata = anndata.read_h5ad(pbmc_path)
    model = celldiff.GraphDiffVAE(adata, n_hidden=64, n_latent=16)
    summary = model.train(max_epochs=20, lr=1e-3, seed=0, progress_bar=False)
    assert 0.5 < summary["test_auc"] <= 1.0
    assert model.get_latent_representation().shape == (adata.n_obs, 16)
    assert len(model.links_) == summary["n_links"] > 0
    run_cli(
        cli,
        "graph",
        "--data",
        pbmc_path,
        "--hidden",
        "64",
        "--latent",
        "16",
        "--epochs",
        "20",
        "--lr",
        "1e-3",
        "--seed",
        "0",
        "-o",
        tmp_path / "g.h5ad",
    )
    ref = anndata.read_h5ad(tmp_path / "g.h5ad")
    np.testing.assert_array_equal(ref.obsm["X_graph"], adata.obsm["X_graph"])
    assert (ref.obsp["celldiff_links"] != adata.obsp["celldiff_links"]).nnz == 0
    assert ref.uns["celldiff_graph"]["test_auc"] == summary["test_auc"]
    with pytest.raises(ValueError, match="threshold"):
        model.train(threshold=1.5, progress_bar=False)


def test_classifier_and_shift_match_the_cli(pbmc_path, cli, tmp_path):
    adata = anndata.read_h5ad(pbmc_path)
    celldiff.CellTypeClassifier.setup_anndata(adata, labels_key="bulk_labels")
    clf = celldiff.CellTypeClassifier(adata, n_top_genes=500)
    report = clf.train(max_epochs=5, seed=0)
    assert report["accuracy"] > report["majority_baseline"]
    pred = clf.predict(labels_key="bulk_labels")
    assert set(pred.cat.categories) == set(adata.obs["bulk_labels"].cat.categories)
    assert 0.0 < adata.uns["celldiff_classify"]["accuracy"] <= 1.0
    clf.save(tmp_path / "clf")
    run_cli(
        cli,
        "classify",
        "predict",
        "--data",
        pbmc_path,
        "--model",
        tmp_path / "clf",
        "-o",
        tmp_path / "pred.h5ad",
    )
    ref = anndata.read_h5ad(tmp_path / "pred.h5ad")
    np.testing.assert_array_equal(ref.obs["celldiff_cell_type"].to_numpy(), pred.to_numpy())

    weinreb = SHARED / "weinreb_larry_hematopoiesis_subset" / "test_adata_preprocessed.h5ad"
    w = anndata.read_h5ad(weinreb)
    celldiff.DiffVAE.setup_anndata(w, labels_key="state_info")
    model = celldiff.DiffVAE(w, n_latent=20, max_epochs=30, n_top_genes=1000)
    res = model.shift("undiff", "Monocyte", lambdas=(1.0, 2.0), seed=1, progress_bar=False)
    outcomes = res["results"]["targets"][0]["outcomes"]
    conv = {(o["dimensions"], o["lambda"]): o["n_converted"] for o in outcomes}
    assert conv[("top", 2.0)] > conv[("random", 2.0)]
    assert "undiff" in res["table"] and res["genes"].columns[0] == "target"
    run_cli(
        cli,
        "shift",
        "--data",
        weinreb,
        "--labels-key",
        "state_info",
        "--source",
        "undiff",
        "--target",
        "Monocyte",
        "--lambda",
        "1,2",
        "--latent",
        "20",
        "--epochs",
        "30",
        "--n-top-genes",
        "1000",
        "--classifier-epochs",
        "50",
        "--seed",
        "1",
        "-o",
        tmp_path / "shift",
    )
    ref = json.loads((tmp_path / "shift" / "results.json").read_text())
    assert ref["targets"] == res["results"]["targets"]


def test_simulate_matches_the_cli_and_refuses_bad_input(cli, tmp_path):
    # The same seed gives the CLI's file: same bytes, whatever the chunk size.
    summary = celldiff.datasets.simulate_h5ad(
        tmp_path / "py.h5ad",
        n_cells=300,
        n_genes=120,
        n_types=3,
        chunk_cells=64,
        seed=3,
        progress_bar=False,
    )
    assert summary["n_cells"] == 300 and summary["n_genes"] == 120 and summary["nnz"] > 0
    run_cli(
        cli,
        "simulate",
        "--cells",
        "300",
        "--genes",
        "120",
        "--types",
        "3",
        "--seed",
        "3",
        "-o",
        tmp_path / "cli.h5ad",
    )
    ref = anndata.read_h5ad(tmp_path / "cli.h5ad")
    mem = celldiff.datasets.simulate(n_cells=300, n_genes=120, n_types=3, seed=3)
    for got in (anndata.read_h5ad(tmp_path / "py.h5ad"), mem):
        assert sp.issparse(got.X) and got.X.dtype == np.float32
        np.testing.assert_array_equal(got.X.toarray(), ref.X.toarray())
        assert list(got.obs["cell_type"]) == list(ref.obs["cell_type"])
        assert list(got.var_names) == list(ref.var_names)
    assert summary["nnz"] == ref.X.nnz
    # Raw counts: non-negative integers; the options are recorded.
    x = mem.X.toarray()
    assert np.all(x == np.round(x)) and x.min() == 0
    assert mem.uns["celldiff_simulate"]["seed"] == 3
    with pytest.raises(FileExistsError, match="overwrite"):
        celldiff.datasets.simulate_h5ad(tmp_path / "py.h5ad", n_cells=10, progress_bar=False)
    with pytest.raises(ValueError, match="theta"):
        celldiff.datasets.simulate(n_cells=10, theta=-1.0)
    with pytest.raises(ValueError, match="at least 1"):
        celldiff.datasets.simulate(n_cells=0)
