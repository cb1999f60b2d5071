//! Every file celldiff writes opens in Python anndata and works in scanpy as it is (issue 17):
//! `preprocess` output through `sc.pp.highly_variable_genes` / `sc.tl.rank_genes_groups`,
//! `cluster` output through `sc.tl.umap` / `sc.tl.paga` / `sc.tl.leiden`, `embed` output
//! through `sc.pp.neighbors(use_rep=...)`, generated cells through `anndata.concat` with real
//! cells, and the annotated copies of `embed`, `cluster` (also `--use-raw`), `identify` and
//! `graph` keep every element of a rich input (raw, layers, obsm, varm, obsp, varp, uns, int
//! X, int64/float32/bool/string obs columns) exactly, dtypes included.
//!
//! Python: `$CELLDIFF_PYTHON`, else `python3`; a test that needs it skips with a printed reason
//! only when no Python with anndata + scanpy is found (`.ci/run` installs both). The checks
//! that need no Python run always.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use celldiff::io::{ReadOptions, read, read_h5ad};
use serde_json::Value;

use crate::common::{assert_ok, celldiff, demo_h5ad, scratch, tiny_run};

/// The Python checks, one subcommand each (see `main`).
const SCRIPT: &str = r##"
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, pandas as pd, scipy.sparse as sp
import anndata as ad, scanpy as sc

def make_rich(src, dst):
    """A rich input: int32 counts X, raw (log1p float32), layers, obsm, varm, obsp, varp,
    uns (nested, None, lists), obs columns int64/float32/bool/string/categorical."""
    a = ad.read_h5ad(src)
    assert np.issubdtype(a.X.dtype, np.integer), a.X.dtype
    n, g = a.shape
    rng = np.random.default_rng(0)
    raw = a.copy()
    raw.X = raw.X.astype(np.float32)
    sc.pp.normalize_total(raw, target_sum=1e4)
    sc.pp.log1p(raw)
    raw.var["gene_mean"] = np.asarray(raw.X.mean(axis=0)).ravel().astype(np.float32)
    a.raw = raw
    a.layers["counts"] = a.X.copy()
    a.layers["dense_f32"] = rng.random((n, g), dtype=np.float32)
    a.obsm["X_f32"] = rng.random((n, 3), dtype=np.float32)
    a.obsm["X_f64"] = rng.random((n, 2))
    a.varm["PCs"] = rng.random((g, 4), dtype=np.float32)
    a.obsp["connectivities"] = sp.random(n, n, density=0.01, format="csr", random_state=1, dtype=np.float32)
    a.obsp["distances"] = sp.random(n, n, density=0.01, format="csr", random_state=2)
    a.varp["corr"] = sp.random(g, g, density=0.01, format="csr", random_state=3)
    a.obs["n_genes_i64"] = np.arange(n, dtype=np.int64)
    a.obs["score_f32"] = rng.random(n, dtype=np.float32)
    a.obs["flag"] = np.arange(n) % 2 == 0
    a.obs["note"] = [f"cell{i}" for i in range(n)]
    a.var["gene_i32"] = np.arange(g, dtype=np.int32)
    a.var["highly_variable"] = np.arange(g) % 3 == 0
    a.uns["nested"] = {"a": 1, "b": [1.5, 2.5], "c": {"d": "text"}, "e": None}
    a.uns["bulk_labels_colors"] = np.array(["#ff0000"] * len(a.obs["bulk_labels"].cat.categories), dtype=object)
    a.uns["log1p"] = {"base": None}
    a.uns["neighbors"] = {"connectivities_key": "connectivities", "distances_key": "distances",
                          "params": {"n_neighbors": 7, "method": "umap"}}
    a.write_h5ad(dst)

def same(x, y, where):
    if x is None:
        assert y is None, where
    elif sp.issparse(x):
        assert sp.issparse(y), (where, type(y))
        assert x.dtype == y.dtype, (where, x.dtype, y.dtype)
        assert x.shape == y.shape, (where, x.shape, y.shape)
        assert (x != y).nnz == 0, where
    elif isinstance(x, pd.DataFrame):
        pd.testing.assert_frame_equal(x, y, check_exact=True, obj=where)
    elif isinstance(x, np.ndarray):
        assert isinstance(y, np.ndarray), (where, type(y))
        assert x.dtype == y.dtype, (where, x.dtype, y.dtype)
        assert x.shape == y.shape, (where, x.shape, y.shape)
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), where
        else:
            assert np.array_equal(x, y), where
    elif isinstance(x, dict):
        assert isinstance(y, dict), (where, type(y))
        assert sorted(x) == sorted(y), (where, sorted(x), sorted(y))
        for k in x:
            same(x[k], y[k], f"{where}['{k}']")
    else:
        assert type(x) == type(y) and x == y, (where, x, y)

def kept(inp, out, changed):
    """Every element of `inp` not named in `changed` is in `out`, equal and of the same dtype."""
    changed = json.loads(changed)
    a, b = ad.read_h5ad(inp), ad.read_h5ad(out)
    assert a.shape == b.shape
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names)
    same(a.X, b.X, "X")
    same(a.var, b.var, "var")
    assert (a.raw is None) == (b.raw is None), "raw"
    if a.raw is not None:
        same(a.raw.X, b.raw.X, "raw.X")
        same(a.raw.var, b.raw.var, "raw.var")
    for col in a.obs.columns:
        if col not in changed.get("obs", []):
            pd.testing.assert_series_equal(a.obs[col], b.obs[col], check_exact=True, obj=f"obs['{col}']")
    for col in changed.get("obs", []):
        assert col in b.obs.columns, f"obs['{col}'] missing"
    for name in ["layers", "obsm", "varm", "obsp", "varp", "uns"]:
        x, y = getattr(a, name), getattr(b, name)
        for k in x.keys():
            if k not in changed.get(name, []):
                assert k in y, f"{name}['{k}'] lost"
                same(x[k], y[k], f"{name}['{k}']")
        for k in changed.get(name, []):
            assert k in y, f"{name}['{k}'] missing"
    print("kept", json.dumps(changed))

def preprocess(path):
    a = ad.read_h5ad(path)
    assert a.uns["log1p"]["base"] is None, a.uns["log1p"]
    assert isinstance(a.uns["celldiff_preprocess"], dict), type(a.uns["celldiff_preprocess"])
    sc.pp.highly_variable_genes(a, n_top_genes=100)
    assert a.var["highly_variable"].sum() == 100
    sc.tl.rank_genes_groups(a, "bulk_labels", method="t-test")
    assert "rank_genes_groups" in a.uns

def cluster(path, key, nkey):
    a = ad.read_h5ad(path)
    nk = None if nkey == "-" else nkey
    nd = a.uns[nk or "neighbors"]
    conn, dist = nd["connectivities_key"], nd["distances_key"]
    assert conn in a.obsp and dist in a.obsp, list(a.obsp.keys())
    assert nd["params"]["method"] == "umap" and nd["params"]["use_rep"] == "X_pca", nd
    assert a.obsp[conn].shape == (a.n_obs, a.n_obs)
    sc.tl.umap(a, neighbors_key=nk)
    assert a.obsm["X_umap"].shape == (a.n_obs, 2)
    sc.tl.paga(a, groups=key, neighbors_key=nk)
    assert "paga" in a.uns
    sc.tl.leiden(a, key_added="leiden_py", neighbors_key=nk, flavor="igraph", n_iterations=2, directed=False)
    assert a.obs["leiden_py"].nunique() > 1

def embed(path, key):
    a = ad.read_h5ad(path)
    assert key in a.obsm, list(a.obsm.keys())
    sc.pp.neighbors(a, use_rep=key, n_neighbors=10)
    assert "connectivities" in a.obsp

def concat(real, gen):
    r, g = ad.read_h5ad(real), ad.read_h5ad(gen)
    assert isinstance(g.uns["celldiff"]["preprocess"], dict), type(g.uns["celldiff"]["preprocess"])
    both = ad.concat({"real": r, "generated": g}, label="source")
    assert both.n_obs == r.n_obs + g.n_obs, both.shape
    assert both.n_vars == len(set(r.var_names) & set(g.var_names)) > 0
    assert list(both.obs["source"].cat.categories) == ["real", "generated"]

def counts_out(real, gen):
    r, g = ad.read_h5ad(real), ad.read_h5ad(gen)
    assert sp.issparse(g.X) and g.X.format == "csr" and g.X.dtype == np.float32, (type(g.X), g.X.dtype)
    d = g.X.toarray()
    assert (d >= 0).all() and (d == np.round(d)).all(), "X must hold integer counts"
    np.testing.assert_allclose(g.obs["n_counts"].to_numpy(), d.sum(1), rtol=1e-6)
    assert g.layers["log1p_norm"].shape == g.shape
    # Zero counts are zero in the log1p layer, and only those.
    assert ((d == 0) == (np.asarray(g.layers["log1p_norm"]) == 0)).all()
    sc.pp.normalize_total(g, target_sum=1e4)
    sc.pp.log1p(g)
    both = ad.concat({"real": r, "generated": g}, label="source")
    assert both.n_obs == r.n_obs + g.n_obs

if __name__ == "__main__":
    # One process runs every check of a test (scanpy's import and numba's JIT once).
    for call in json.loads(sys.argv[1]):
        globals()[call[0]](*call[1:])
"##;

/// The Python with anndata + scanpy (`$CELLDIFF_PYTHON`, else `python3`), or why there is none.
fn python() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        let py = std::env::var_os("CELLDIFF_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("python3"));
        match Command::new(&py)
            .args(["-c", "import anndata, scanpy, h5py"])
            .output()
        {
            Ok(o) if o.status.success() => Ok(py),
            Ok(o) => Err(format!(
                "{} cannot import anndata + scanpy: {}",
                py.display(),
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Err(e) => Err(format!("no Python at {}: {e}", py.display())),
        }
    })
    .clone()
}

/// Runs the checks `calls` (each `[function, args...]` of `SCRIPT`) in one Python process;
/// `None` (after printing why) when no suitable Python exists.
fn py(calls: &[&[&str]]) -> Option<()> {
    let py = match python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping the scanpy checks: {why} (set CELLDIFF_PYTHON)");
            return None;
        }
    };
    let script = scratch().join("scanpy_compat.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let calls = serde_json::to_string(calls).unwrap();
    // numba's compiled functions (sc.tl.umap) are cached across runs.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("numba-cache");
    let o = Command::new(&py)
        .arg(&script)
        .arg(&calls)
        .env("NUMBA_CACHE_DIR", &cache)
        .env("MPLCONFIGDIR", scratch())
        .output()
        .expect("running python");
    assert!(
        o.status.success(),
        "python {calls} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Some(())
}

/// The rich input of the round-trip tests (built once with Python anndata).
fn rich_input() -> Option<&'static Path> {
    static RICH: OnceLock<Option<PathBuf>> = OnceLock::new();
    RICH.get_or_init(|| {
        let p = scratch().join("rich.h5ad");
        py(&[&["make_rich", s(&demo_h5ad()), s(&p)]])?;
        Some(p)
    })
    .as_deref()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn preprocess_output_stores_none_and_dicts_and_runs_in_scanpy() {
    let out = scratch().join("pp.h5ad");
    assert_ok(&celldiff([
        "preprocess",
        "--data",
        s(&demo_h5ad()),
        "-o",
        s(&out),
    ]));
    // Without Python: None is null (not the string "null"), parameters are nested dicts.
    let a = read_h5ad(&out, &ReadOptions::default()).unwrap();
    assert_eq!(a.uns["log1p"]["base"], Value::Null, "{:?}", a.uns["log1p"]);
    let pp = &a.uns["celldiff_preprocess"];
    assert!(pp.is_object(), "uns['celldiff_preprocess'] = {pp}");
    assert!(pp["steps"].is_array(), "{pp}");
    py(&[&["preprocess", s(&out)]]);
}

#[test]
fn cluster_output_holds_the_scanpy_graph_and_runs_umap_paga_leiden() {
    let dir = scratch();
    let demo = demo_h5ad();
    let mut outs = Vec::new();
    for (nkey, extra) in [("-", None), ("nb", Some("nb"))] {
        let out = dir.join(format!("cl_{nkey}.h5ad"));
        let mut args = vec![
            "cluster",
            "--data",
            s(&demo),
            "-o",
            s(&out),
            "--n-pcs",
            "20",
        ];
        if let Some(k) = extra {
            args.extend(["--neighbors-key", k]);
        }
        assert_ok(&celldiff(&args));
        let a = read(&out, &ReadOptions::default()).unwrap();
        let key = extra.unwrap_or("neighbors");
        let nb = &a.uns[key];
        let (ck, dk) = match extra {
            None => ("connectivities".to_string(), "distances".to_string()),
            Some(k) => (format!("{k}_connectivities"), format!("{k}_distances")),
        };
        assert_eq!(nb["connectivities_key"], ck.as_str(), "{nb}");
        assert_eq!(nb["distances_key"], dk.as_str(), "{nb}");
        assert_eq!(nb["params"]["n_neighbors"], 15);
        assert_eq!(nb["params"]["n_pcs"], 20);
        let obsp = celldiff::io::h5ad::read_obsp(&out, a.n_obs()).unwrap();
        let names: Vec<&str> = obsp.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            names.contains(&ck.as_str()) && names.contains(&dk.as_str()),
            "{names:?}"
        );
        let dist = &obsp.iter().find(|(k, _)| *k == dk).unwrap().1;
        assert_eq!(dist.nnz(), a.n_obs() * 14, "k - 1 neighbours per cell");
        outs.push((out, nkey));
    }
    let calls: Vec<Vec<&str>> = outs
        .iter()
        .map(|(o, k)| vec!["cluster", s(o), "leiden", k])
        .collect();
    let calls: Vec<&[&str]> = calls.iter().map(Vec::as_slice).collect();
    py(&calls);
}

#[test]
fn embed_key_added_names_the_obsm_entry_and_scanpy_uses_it() {
    let dir = scratch();
    let mut outs = Vec::new();
    for key in ["X_celldiff", "X_mine"] {
        let out = dir.join(format!("{key}.h5ad"));
        let mut args = vec![
            "embed".to_string(),
            "--run".into(),
            tiny_run().display().to_string(),
            "--data".into(),
            demo_h5ad().display().to_string(),
            "-o".into(),
            out.display().to_string(),
        ];
        if key != "X_celldiff" {
            args.extend(["--key-added".into(), key.to_string()]);
        }
        assert_ok(&celldiff(&args));
        let a = read(&out, &ReadOptions::default()).unwrap();
        let keys: Vec<&str> = a.obsm.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&key), "{keys:?}");
        assert!(
            keys.contains(&"X_umap"),
            "the input's obsm is kept: {keys:?}"
        );
        outs.push((out, key));
    }
    let calls: Vec<Vec<&str>> = outs.iter().map(|(o, k)| vec!["embed", s(o), k]).collect();
    let calls: Vec<&[&str]> = calls.iter().map(Vec::as_slice).collect();
    py(&calls);
}

#[test]
fn generated_cells_concat_with_real_cells() {
    let out = scratch().join("gen.h5ad");
    assert_ok(&celldiff([
        "generate",
        "--run",
        s(tiny_run()),
        "-n",
        "40",
        "-o",
        s(&out),
    ]));
    let g = read(&out, &ReadOptions::default()).unwrap();
    assert!(
        g.uns["celldiff"]["preprocess"].is_object(),
        "uns['celldiff']['preprocess'] = {}",
        g.uns["celldiff"]["preprocess"]
    );
    py(&[&["concat", s(&demo_h5ad()), s(&out)]]);
}

#[test]
fn generated_counts_open_as_a_count_anndata_that_scanpy_normalises() {
    let out = scratch().join("gen_counts.h5ad");
    assert_ok(&celldiff([
        "generate",
        "--run",
        s(crate::common::tiny_nb_run()),
        "-n",
        "40",
        "-o",
        s(&out),
    ]));
    py(&[&["counts_out", s(&demo_h5ad()), s(&out)]]);
}

/// `celldiff <args> --data INPUT -o OUT` on the rich input; returns the Python check that
/// every element not in `changed` is kept exactly.
fn annotate(input: &Path, name: &str, args: &[&str], changed: Value) -> Vec<String> {
    let out = scratch().join(format!("{name}.h5ad"));
    let mut all = args.to_vec();
    all.extend(["--data", s(input), "-o", s(&out)]);
    assert_ok(&celldiff(&all));
    vec![
        "kept".into(),
        s(input).into(),
        s(&out).into(),
        changed.to_string(),
    ]
}

#[test]
fn annotated_copies_keep_everything_they_do_not_change() {
    let Some(input) = rich_input() else { return };
    let run = tiny_run().display().to_string();
    let mut calls = vec![annotate(
        input,
        "embed",
        &["embed", "--run", &run, "--layer", "counts"],
        serde_json::json!({"obsm": ["X_celldiff"]}),
    )];
    let cluster_changed = serde_json::json!({
        "obs": ["leiden"],
        "obsm": ["X_pca"],
        "obsp": ["connectivities", "distances"],
        "uns": ["neighbors", "leiden", "pca"],
    });
    calls.push(annotate(
        input,
        "cluster",
        &["cluster", "--n-pcs", "10"],
        cluster_changed.clone(),
    ));
    // --use-raw only reads raw: X (int counts) and var (its columns) stay as they are.
    calls.push(annotate(
        input,
        "cluster_raw",
        &["cluster", "--n-pcs", "10", "--use-raw"],
        cluster_changed,
    ));
    calls.push(annotate(
        input,
        "identify",
        &[
            "identify",
            "--epochs",
            "2",
            "--latent",
            "8",
            "--hidden",
            "32,16",
            "--tsne-epochs",
            "250",
            "--kmeans-n-init",
            "1",
            "--n-clusters",
            "3",
        ],
        serde_json::json!({
            "obs": ["celldiff_cluster"],
            "obsm": ["X_celldiff", "X_tsne"],
            "uns": ["celldiff_identify"],
        }),
    ));
    calls.push(annotate(
        input,
        "graph",
        &[
            "graph",
            "--epochs",
            "5",
            "--hidden",
            "32",
            "--latent",
            "8",
            "--n-top-genes",
            "300",
        ],
        serde_json::json!({
            "obsm": ["X_graph", "X_graph_mu"],
            "obsp": ["celldiff_links", "celldiff_graph_input"],
            "uns": ["celldiff_graph"],
        }),
    ));
    let calls: Vec<Vec<&str>> = calls
        .iter()
        .map(|c| c.iter().map(String::as_str).collect())
        .collect();
    let calls: Vec<&[&str]> = calls.iter().map(Vec::as_slice).collect();
    py(&calls);
}

/// Without Python: the annotated copy of an integer-count input is byte-identical in `X`
/// (read back as the same values) and keeps the input's `obs` columns and `obsm`.
#[test]
fn cluster_copy_keeps_the_input_without_python() {
    let out = scratch().join("cl.h5ad");
    assert_ok(&celldiff([
        "cluster",
        "--data",
        s(&demo_h5ad()),
        "-o",
        s(&out),
        "--n-pcs",
        "10",
    ]));
    let f = hdf5_pure::File::open(&out).unwrap();
    let dt = f.dataset("X/data").unwrap().dtype().unwrap();
    assert_eq!(dt, hdf5_pure::DType::I32, "integer counts stay integers");
    let col = f.dataset("obs/n_genes").unwrap().dtype().unwrap();
    assert_eq!(col, hdf5_pure::DType::I64, "int64 obs columns stay int64");
    let col = f.dataset("obs/percent_mito").unwrap().dtype().unwrap();
    assert_eq!(
        col,
        hdf5_pure::DType::F32,
        "float32 obs columns stay float32"
    );
}
