//! # `celldiff._core`: the Python extension module of celldiff
//!
//! The package `celldiff` (`python/celldiff/`) wraps these classes and functions into
//! scvi-tools–style models (`celldiff.ScVAEDer`, `celldiff.SCLD`, `celldiff.evaluate`);
//! users import `celldiff`, not `_core`. Everything here calls the library crate (no CLI code),
//! so a model trained from Python and one trained by `celldiff train` on the same cells and seed
//! have the same weights, and their run directories are interchangeable.
//!
//! What crosses the boundary:
//! - matrices as dicts built by `python/celldiff/_convert.py`: `{"kind": "dense", "data":
//!   ndarray [n_obs, n_vars]}` or `{"kind": "csr", "data", "indices", "indptr", "shape"}`,
//!   any float or integer dtype, C or Fortran order; copied once into celldiff's `f32` rows
//!   (the layout the `.h5ad` reader produces), checked finite (`convert.rs`);
//! - `obs` columns the model needs as pandas categorical codes + categories;
//! - options as JSON text (`serde` with unknown keys refused), history and `uns` back as JSON;
//! - results as numpy arrays (dense `float32`, CSR parts) that Python assembles into an
//!   `anndata.AnnData`.
//!
//! Training and sampling run on celldiff's rayon pool with the GIL released (`runner.rs`); the
//! calling thread checks for Ctrl-C every 20 ms and asks the training loop to stop between
//! minibatches (`KeyboardInterrupt`, nothing written). Errors become Python exceptions
//! (`to_py_err`); a panic becomes `RuntimeError`, never an abort.
//!
//! Why our own code: PyO3 and rust-numpy are the binding libraries; this crate is only the
//! mapping between them and celldiff's types.

/// The allocator of the `celldiff` binary, for the Rust side of the extension (Python's own
/// objects keep pymalloc): training allocates and frees large buffers every step, and glibc's
/// malloc made a training from Python 17 % slower than the same training by the CLI.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// As the CLI (`main.rs`): mimalloc keeps freed memory for reuse instead of returning it to
/// the kernel after 10 ms, unless the user set `MIMALLOC_PURGE_DELAY`.
fn keep_freed_memory() {
    // `mi_option_purge_delay` of mimalloc.h's `mi_option_e` (v2 and v3).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide mimalloc option; valid at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

mod convert;
mod diffvae;
mod params;
mod runner;
mod scld;
mod scvaeder;

use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyRuntimeError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A celldiff error as the Python exception a scanpy user expects, with the CLI's message:
/// missing file → `FileNotFoundError`, other I/O → `OSError`, an existing output without
/// `overwrite=True` → `FileExistsError`, Ctrl-C → `KeyboardInterrupt`, a bug → `RuntimeError`,
/// anything the caller can fix (bad values, fields, parameters, refused paths) → `ValueError`.
pub(crate) fn to_py_err(e: celldiff::Error) -> PyErr {
    use celldiff::Error as E;
    let msg = e.to_string();
    match e {
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        E::Io { .. } => PyOSError::new_err(msg),
        E::AlreadyExists { .. } => PyFileExistsError::new_err(format!(
            "{msg}; pass overwrite=True to replace an earlier celldiff output"
        )),
        E::Interrupted(_) => PyKeyboardInterrupt::new_err(msg),
        E::Internal(_) => PyRuntimeError::new_err(msg),
        _ => PyValueError::new_err(msg),
    }
}

/// Options JSON → `T`, unknown keys refused; the error names the option (`sampler: unknown
/// variant ...`).
pub(crate) fn parse_options<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> PyResult<T> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| option_error(what, e))
}

/// Options JSON over `T::default()`: the keys given replace the defaults, an unknown key is
/// refused with the known ones listed, and a bad value names its option.
pub(crate) fn merge_options<T>(json: &str, what: &str) -> PyResult<T>
where
    T: Default + serde::Serialize + serde::de::DeserializeOwned,
{
    let mut base =
        serde_json::to_value(T::default()).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let given: serde_json::Map<String, serde_json::Value> = parse_options(json, what)?;
    let Some(obj) = base.as_object_mut() else {
        return Err(PyValueError::new_err(format!(
            "{what}: not an options object"
        )));
    };
    for (k, v) in given {
        let Some(slot) = obj.get_mut(&k) else {
            return Err(PyValueError::new_err(format!(
                "{what}: unknown option `{k}` (expected one of {:?})",
                obj.keys().collect::<Vec<_>>()
            )));
        };
        deep_merge(slot, v);
    }
    serde_path_to_error::deserialize(base).map_err(|e| option_error(what, e))
}

/// `given` over `base`: nested objects whose keys `base` all has are merged key by key (a
/// partial `latent={"n_latent": 10}` keeps the other defaults); anything else (a value, an
/// enum given as another variant such as `{"dbscan": ...}` over `{"k_means": ...}`) replaces.
fn deep_merge(base: &mut serde_json::Value, given: serde_json::Value) {
    use serde_json::Value;
    match (base, given) {
        (Value::Object(b), Value::Object(g)) if g.keys().all(|k| b.contains_key(k)) => {
            for (k, v) in g {
                if let Some(slot) = b.get_mut(&k) {
                    deep_merge(slot, v);
                }
            }
        }
        (b, g) => *b = g,
    }
}

/// A deserialisation error with the option's path in front.
pub(crate) fn option_error<E: std::fmt::Display>(
    what: &str,
    e: serde_path_to_error::Error<E>,
) -> PyErr {
    let path = e.path().to_string();
    if path == "." {
        PyValueError::new_err(format!("{what}: {}", e.inner()))
    } else {
        PyValueError::new_err(format!("{what}: {path}: {}", e.inner()))
    }
}

/// Scores generated cells against real ones (`celldiff evaluate`): the real cells go through
/// the preprocessing recorded in the generated cells' `uns['celldiff']['preprocess']` and
/// their gene order, then scDiffusion's random-forest protocol and the distribution metrics
/// ([`celldiff::metrics::evaluate`]). With `model` (a scVAEDer run), also the
/// `reconstruction` row: the real cells encoded, decoded and sampled like generated cells,
/// the decoder's ceiling (`celldiff evaluate --run`).
///
/// `real`/`generated`: `{"x": matrix dict, "var_names": [..], "uns": JSON text}`. Returns the
/// metrics as JSON text (the keys of `celldiff evaluate -o metrics.json`).
///
/// # Errors
/// `ValueError` for missing genes, data of another kind than the run's, too few cells.
#[pyfunction]
#[pyo3(signature = (real, generated, seed = 0, max_cells = None, model = None))]
fn evaluate(
    py: Python<'_>,
    real: &Bound<'_, PyDict>,
    generated: &Bound<'_, PyDict>,
    seed: u64,
    max_cells: Option<usize>,
    model: Option<PyRef<'_, scvaeder::ScvaederModel>>,
) -> PyResult<String> {
    let real = convert::anndata_from_py(real, "real")?;
    let generated = convert::anndata_from_py(generated, "generated")?;
    let run = model.map(|m| m.run()).transpose()?;
    runner::run(py, None, move |_| {
        let pp = celldiff::evaluation::recorded_preprocess(&generated, "generated")?;
        let (r, g) = celldiff::evaluation::align(&real, &generated, pp.as_ref())?;
        let opts = celldiff::metrics::EvalOptions {
            seed,
            max_cells,
            ..Default::default()
        };
        let m = celldiff::metrics::evaluate(&r, &g, &opts)?;
        let mut doc =
            serde_json::to_value(&m).map_err(|e| celldiff::Error::Internal(e.to_string()))?;
        if let Some(run) = run {
            // As `celldiff evaluate --run`: the run's preprocessing on the real cells, the
            // reconstruction seeded with seed + 7.
            let x = run.preprocess.transform(&real)?.x.to_dense();
            let rec = celldiff::scvaeder::reconstruct(
                &run,
                &x,
                celldiff::observation::Observation::Counts,
                seed.wrapping_add(7),
                &celldiff::backend::cpu_device(),
            )?;
            let rm = celldiff::metrics::evaluate(&x, &rec, &opts)?;
            doc["reconstruction"] =
                serde_json::to_value(&rm).map_err(|e| celldiff::Error::Internal(e.to_string()))?;
        }
        Ok(doc.to_string())
    })
}

/// scGen's perturbation metrics (`celldiff evaluate-perturbation`;
/// [`celldiff::scvaeder::analysis::perturb::evaluate_perturbation`]): R² of the mean and
/// variance of every gene and of the top DEGs (Wilcoxon, real stimulated vs control) between
/// predicted and real stimulated cells, and the control cells' R² as the baseline. The real
/// and control cells are put into the model's space by `model`'s preprocessing when given;
/// all three are matched to the predicted genes by name. Returns the metrics as JSON text.
///
/// # Errors
/// `ValueError` for genes missing from the real or control cells, fewer than two cells.
#[pyfunction]
#[pyo3(signature = (real_stim, control, pred, n_top = 100, model = None))]
fn evaluate_perturbation(
    py: Python<'_>,
    real_stim: &Bound<'_, PyDict>,
    control: &Bound<'_, PyDict>,
    pred: &Bound<'_, PyDict>,
    n_top: usize,
    model: Option<PyRef<'_, scvaeder::ScvaederModel>>,
) -> PyResult<String> {
    if n_top == 0 {
        return Err(PyValueError::new_err("n_top must be at least 1"));
    }
    let mut real = convert::anndata_from_py(real_stim, "real_stim")?;
    let mut ctrl = convert::anndata_from_py(control, "control")?;
    let pred = convert::anndata_from_py(pred, "pred")?;
    let run = model.map(|m| m.run()).transpose()?;
    runner::run(py, None, move |_| {
        if let Some(run) = &run {
            real = run.preprocess.transform(&real)?;
            ctrl = run.preprocess.transform(&ctrl)?;
        }
        let genes = pred.var_names.clone();
        let real_x = real.columns_by_name(&genes, "real_stim")?;
        let ctrl_x = ctrl.columns_by_name(&genes, "control")?;
        let m = celldiff::scvaeder::analysis::perturb::evaluate_perturbation(
            &ctrl_x,
            &real_x,
            &pred.x.to_dense(),
            &genes,
            n_top,
        )?;
        serde_json::to_string(&m).map_err(|e| celldiff::Error::Internal(e.to_string()))
    })
}

/// Gene velocities along an interpolation (scVAEDer's "gene velocity"; see
/// [`celldiff::scvaeder::analysis::velocity`]): `x` `[n_steps, n_genes]` in λ order,
/// `options` JSON of `VelocityOptions` (`window`, `direction`, `top_k`, `first_steps`,
/// `diff_step`). Returns `(velocity [n_windows, n_genes] float32, JSON of {ranking: [[gene,
/// mean score, mean velocity]], top_per_step, union, diff, diff_step})`.
///
/// # Errors
/// `ValueError` for a window of 0, too few rows, bad options.
#[pyfunction]
fn velocity<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyDict>,
    options: &str,
) -> PyResult<(Bound<'py, PyAny>, String)> {
    use celldiff::scvaeder::analysis::velocity::{VelocityOptions, velocity as vel};
    let opts: VelocityOptions = merge_options(options, "velocity options")?;
    let x = convert::matrix_from_py(x, "X")?.to_dense();
    let v = runner::run(py, None, move |_| vel(&x, &opts))?;
    let summary = serde_json::json!({
        "ranking": v.ranking,
        "top_per_step": v.top_per_step,
        "union": v.union,
        "diff": v.diff,
        "diff_step": v.diff_step,
    });
    Ok((convert::dense_to_py(py, v.velocity)?, summary.to_string()))
}

/// DiffVAE cell-type identification (Bica et al., Sci. Rep. 2020;
/// [`celldiff::diffvae::identify::identify`]): latent model → t-SNE → k-means or DBSCAN → top
/// latent dimensions and high-weight genes per cluster. `adata`: parts dict (with the
/// `labels_key` column when one is given); `options`: JSON over `IdentifyOptions` (nested
/// objects merged over the defaults). Returns `{"cluster": obs column dict, "latent":
/// [n_obs, n_latent], "tsne": [n_obs, 2], "uns": JSON text, "dimensions_tsv", "genes_tsv"}`.
///
/// # Errors
/// `ValueError` for bad options, a missing labels column, k-means without a k.
#[pyfunction]
#[pyo3(signature = (adata, options, progress = None))]
fn diffvae_identify<'py>(
    py: Python<'py>,
    adata: &Bound<'py, PyDict>,
    options: &str,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    use celldiff::diffvae::identify::{IdentifyOptions, identify};
    let opts: IdentifyOptions = merge_options(options, "identify options")?;
    let ad = convert::anndata_from_py(adata, "adata")?;
    let (res, opts) = runner::run(py, progress.as_ref(), move |chan| {
        let res = identify(
            &ad,
            &opts,
            &celldiff::backend::cpu_device(),
            &mut chan.observer(),
        )?;
        Ok((res, opts))
    })?;
    let out = PyDict::new(py);
    out.set_item("cluster", convert::column_to_py(py, res.obs_column())?)?;
    out.set_item("latent", convert::dense_to_py(py, res.fit.latent.clone())?)?;
    out.set_item("tsne", convert::dense_to_py(py, res.tsne.clone())?)?;
    out.set_item("uns", res.uns(&opts).to_string())?;
    out.set_item("dimensions_tsv", res.dimensions_tsv())?;
    out.set_item("genes_tsv", res.genes_tsv())?;
    Ok(out)
}

/// Clustering as scanpy's workflow (`celldiff cluster`; [`celldiff::tl::leiden::cluster_pipeline`]):
/// highly variable genes, scale, PCA, kNN graph, Leiden or Louvain, optionally UMAP. Returns
/// the annotations to write: `{"obs": {key: column}, "obsm": {...}, "obsp": {key: CSR parts},
/// "uns": JSON text}` ([`celldiff::tl::leiden::cluster_annotations`]).
///
/// # Errors
/// `ValueError` for a non-positive resolution, bad values, too few cells or genes.
#[pyfunction]
#[pyo3(signature = (adata, resolution = 1.0, flavor = "leiden", n_iterations = 2, n_neighbors = 15, n_pcs = 50, n_top_genes = 2000, umap = false, seed = 0, key_added = None, neighbors_key = None))]
#[allow(clippy::too_many_arguments)]
fn cluster<'py>(
    py: Python<'py>,
    adata: &Bound<'py, PyDict>,
    resolution: f64,
    flavor: &str,
    n_iterations: usize,
    n_neighbors: usize,
    n_pcs: usize,
    n_top_genes: usize,
    umap: bool,
    seed: u64,
    key_added: Option<String>,
    neighbors_key: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    use celldiff::tl::leiden::{
        ClusterFlavor, ClusterOptions, CommunityOptions, cluster_annotations, cluster_pipeline,
    };
    let flavor = match flavor {
        "leiden" => ClusterFlavor::Leiden,
        "louvain" => ClusterFlavor::Louvain,
        o => {
            return Err(PyValueError::new_err(format!(
                "flavor must be leiden or louvain, got `{o}`"
            )));
        }
    };
    if !(resolution.is_finite() && resolution > 0.0) {
        return Err(PyValueError::new_err(format!(
            "resolution must be a positive number, got {resolution}"
        )));
    }
    if n_neighbors == 0 || n_pcs == 0 {
        return Err(PyValueError::new_err(
            "n_neighbors and n_pcs must be at least 1",
        ));
    }
    for (what, k) in [("key_added", &key_added), ("neighbors_key", &neighbors_key)] {
        if let Some(k) = k
            && (k.is_empty() || k.contains('/') || k == ".")
        {
            return Err(PyValueError::new_err(format!(
                "{what} `{k}` must be a non-empty name without `/`"
            )));
        }
    }
    let key = key_added.unwrap_or_else(|| flavor.name().to_string());
    let mut opts = ClusterOptions {
        n_pcs,
        n_neighbors,
        community: CommunityOptions {
            flavor,
            resolution,
            n_iterations,
            seed,
        },
        umap: umap.then(|| celldiff::tl::umap::UmapOptions {
            seed,
            ..Default::default()
        }),
        ..ClusterOptions::default()
    };
    opts.preprocess.n_top_genes = (n_top_genes > 0).then_some(n_top_genes);
    let ad = convert::anndata_from_py(adata, "adata")?;
    let ann = runner::run(py, None, move |_| {
        let res = cluster_pipeline(&ad, &opts)?;
        Ok(cluster_annotations(
            &res,
            &opts,
            &key,
            neighbors_key.as_deref(),
            n_top_genes,
        ))
    })?;
    convert::annotations_to_py(py, ann)
}

/// scanpy's preprocessing as `celldiff preprocess` runs it ([`celldiff::pp::fit_transform`]):
/// filter_cells, filter_genes, normalize_total, log1p, highly_variable_genes, subset, scale or
/// min-max. `options`: JSON over `PreprocessConfig`. Returns the parts of the result (kept
/// cells' `obs_names`, the genes' `var_names` and `var` columns, X, `uns` with `log1p`, `hvg`
/// and `celldiff_preprocess`, the fitted record).
///
/// # Errors
/// `ValueError` for inconsistent settings, data of the wrong kind, filters that remove
/// everything.
#[pyfunction]
fn preprocess<'py>(
    py: Python<'py>,
    adata: &Bound<'py, PyDict>,
    options: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg: celldiff::pp::PreprocessConfig = merge_options(options, "preprocess options")?;
    let ad = convert::anndata_from_py(adata, "adata")?;
    let out = runner::run(py, None, move |_| {
        let (mut out, fitted) = celldiff::pp::fit_transform(&ad, &cfg)?;
        out.uns.insert(
            "celldiff_preprocess".into(),
            serde_json::to_value(&fitted).map_err(|e| celldiff::Error::Internal(e.to_string()))?,
        );
        Ok(out)
    })?;
    convert::anndata_to_py(py, out)
}

/// Graph-DiffVAE (Bica et al., Sci. Rep. 2020; [`celldiff::diffvae::graph::fit`]): a GCN
/// graph VAE on a Pearson-correlation kNN graph of the cells, trained with held-out edges;
/// predicts links between cells. Arguments as `celldiff graph`. Returns `{"obsm", "obsp",
/// "uns" (JSON text), "links_tsv"}` ([`celldiff::diffvae::graph::GraphFit::annotations`]).
///
/// # Errors
/// `ValueError` for bad arguments (named), too few cells or edges, bad values.
#[pyfunction]
#[pyo3(signature = (adata, k = 1, epochs = 200, lr = 1e-4, n_top_genes = 2000, hidden = 512, latent = 50, threshold = None, top_k_links = 5, dense_max_cells = 5000, seed = 0, progress = None))]
#[allow(clippy::too_many_arguments)]
fn graph_diffvae<'py>(
    py: Python<'py>,
    adata: &Bound<'py, PyDict>,
    k: usize,
    epochs: usize,
    lr: f64,
    n_top_genes: usize,
    hidden: usize,
    latent: usize,
    threshold: Option<f64>,
    top_k_links: usize,
    dense_max_cells: usize,
    seed: u64,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    use celldiff::diffvae::graph::{self, GraphSpec, LinkMode};
    let bad = |m: String| PyValueError::new_err(m);
    if k == 0 || epochs == 0 || hidden == 0 || latent == 0 {
        return Err(bad("k, epochs, hidden and latent must be at least 1".into()));
    }
    if !(lr.is_finite() && lr > 0.0) {
        return Err(bad(format!("lr must be a positive number, got {lr}")));
    }
    let links = match threshold {
        Some(p) if !(p > 0.0 && p < 1.0) => {
            return Err(bad(format!(
                "threshold must be a probability strictly between 0 and 1, got {p}"
            )));
        }
        Some(p) => LinkMode::Threshold(p),
        None if top_k_links == 0 => return Err(bad("top_k_links must be at least 1".into())),
        None => LinkMode::TopK(top_k_links),
    };
    let mut spec = GraphSpec {
        n_top_genes: (n_top_genes > 0).then_some(n_top_genes),
        k,
        hidden,
        n_latent: latent,
        links,
        ..GraphSpec::default()
    }
    .with_seed(seed);
    spec.train.epochs = epochs;
    spec.train.learning_rate = lr;
    spec.train.dense_max_nodes = dense_max_cells;
    let ad = convert::anndata_from_py(adata, "adata")?;
    let n = ad.n_obs();
    if let LinkMode::TopK(t) = spec.links
        && t >= n
    {
        return Err(bad(format!(
            "top_k_links {t} needs more than {t} cells; the data have {n}"
        )));
    }
    if k >= n {
        return Err(bad(format!(
            "k {k} needs more than {k} cells; the data have {n}"
        )));
    }
    let (ann, tsv) = runner::run(py, progress.as_ref(), move |chan| {
        let fit = graph::fit(
            &ad,
            &spec,
            &celldiff::backend::cpu_device(),
            &mut chan.observer(),
        )?;
        let ann = fit.annotations(fit.summary(&spec, n_top_genes));
        Ok((ann, fit.links_tsv(&ad.obs_names)))
    })?;
    let out = convert::annotations_to_py(py, ann)?;
    out.set_item("links_tsv", tsv)?;
    Ok(out)
}

/// Seeded negative-binomial counts with cell-type programmes (`celldiff simulate`;
/// [`celldiff::simulate::simulate_h5ad`], Splatter-like, Zappia et al., Genome Biol. 2017),
/// written to the `.h5ad` at `path` in chunks of cells, so that a million cells never sit in
/// memory. `options` is a JSON object of [`celldiff::simulate::SimulateOptions`] fields
/// (missing ones take the CLI's defaults). The same seed gives the same file as the CLI.
/// Returns the summary as JSON text (`n_cells`, `n_genes`, `nnz`, `density`,
/// `mean_library`, `seconds`).
///
/// # Errors
/// `ValueError` for bad options (named); `FileExistsError` if `path` exists and not
/// `overwrite`; `OSError` when writing fails (nothing is left at `path`).
#[pyfunction]
#[pyo3(signature = (path, options, overwrite = false, progress = None))]
fn simulate_h5ad(
    py: Python<'_>,
    path: std::path::PathBuf,
    options: &str,
    overwrite: bool,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<String> {
    let opts: celldiff::simulate::SimulateOptions = merge_options(options, "simulate options")?;
    opts.validate().map_err(to_py_err)?;
    runner::run(py, progress.as_ref(), move |chan| {
        let n = opts.n_cells;
        let s = celldiff::simulate::simulate_h5ad(&path, &opts, overwrite, &mut |done| {
            chan.on_step(done, n)
        })?;
        serde_json::to_string(&s).map_err(|e| celldiff::Error::Internal(e.to_string()))
    })
}

/// Checks training options without training: parses the JSON (unknown keys refused),
/// range-checks every value and builds the `model`'s spec (`"scvaeder"` or `"scld"`), so that
/// `celldiff.ScVAEDer(adata, n_latent=0)` fails at once, as the CLI fails at parse time.
///
/// # Errors
/// `ValueError` naming the option.
#[pyfunction]
fn check_options(options: &str, model: &str) -> PyResult<()> {
    let p = params::TrainParams::parse(options)?;
    match model {
        "scvaeder" => p.scvaeder_spec(None).map(|_| ()),
        "scld" => p.scld_spec().map(|_| ()),
        other => Err(PyValueError::new_err(format!(
            "unknown model `{other}` (expected scvaeder or scld)"
        ))),
    }
}

/// The module `celldiff._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    keep_freed_memory();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("backend", celldiff::backend::cpu_backend_name())?;
    m.add_class::<scvaeder::ScvaederModel>()?;
    m.add_class::<scld::ScldModel>()?;
    m.add_class::<diffvae::ClassifierModel>()?;
    m.add_function(wrap_pyfunction!(diffvae::diffvae_shift, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate_perturbation, m)?)?;
    m.add_function(wrap_pyfunction!(check_options, m)?)?;
    m.add_function(wrap_pyfunction!(velocity, m)?)?;
    m.add_function(wrap_pyfunction!(diffvae_identify, m)?)?;
    m.add_function(wrap_pyfunction!(cluster, m)?)?;
    m.add_function(wrap_pyfunction!(preprocess, m)?)?;
    m.add_function(wrap_pyfunction!(graph_diffvae, m)?)?;
    m.add_function(wrap_pyfunction!(simulate_h5ad, m)?)?;
    Ok(())
}
