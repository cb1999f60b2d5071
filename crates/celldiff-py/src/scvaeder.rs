//! `celldiff._core.ScvaederModel`: a trained scVAEDer run (Sadria & Layton, Genome Biology
//! 2025; [`celldiff::scvaeder`]) held in memory, behind `celldiff.ScVAEDer`.

use std::path::PathBuf;
use std::sync::Mutex;

use celldiff::RunFiles;
use celldiff::run_dir::DataSource;
use celldiff::scvaeder::{self, GenerateOptions, Run};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{anndata_from_py, anndata_to_py, dense_to_py};
use crate::params::TrainParams;
use crate::{merge_options, runner};

/// A trained scVAEDer model: the run directory's content (`config.json`, genes, fitted
/// preprocessing, VAE, denoiser and its EMA, count model, history) in memory.
#[pyclass(module = "celldiff._core")]
pub struct ScvaederModel {
    run: Mutex<Run>,
}

impl ScvaederModel {
    /// A copy of the run to move into the worker thread (Burn modules are `Send`, not `Sync`;
    /// their tensors are shared, not copied).
    pub(crate) fn run(&self) -> PyResult<Run> {
        self.run
            .lock()
            .map(|r| r.clone())
            .map_err(|_| PyValueError::new_err("the model is in use by another thread"))
    }
}

#[pymethods]
impl ScvaederModel {
    /// Trains scVAEDer (preprocess → VAE → latent DDPM) on the cells in `adata` (the parts
    /// dict of `_convert.anndata_parts`: X `[n_obs, n_vars]` raw counts or log1p-normalised, the
    /// `labels_key` column in `obs`).
    ///
    /// `options`: JSON of [`TrainParams`]; `source`: what the run records as its data
    /// (`config.json` `data`); `progress(kind, json)`: called with the training events.
    ///
    /// # Errors
    /// `ValueError` for bad values or options; `KeyboardInterrupt` on Ctrl-C.
    #[staticmethod]
    #[pyo3(signature = (adata, options, labels_key = None, source = String::from("<in-memory AnnData>"), layer = None, progress = None))]
    fn train(
        py: Python<'_>,
        adata: &Bound<'_, PyDict>,
        options: &str,
        labels_key: Option<String>,
        source: String,
        layer: Option<String>,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let params = TrainParams::parse(options)?;
        let spec = params.scvaeder_spec(labels_key)?;
        let ad = anndata_from_py(adata, "adata")?;
        let src = DataSource {
            path: source,
            layer,
            use_raw: false,
            exclude: None,
        };
        let run = runner::run(py, progress.as_ref(), move |chan| {
            let device = celldiff::backend::cpu_device();
            scvaeder::fit(&ad, &spec, &src, &device, &mut chan.observer())
        })?;
        Ok(Self {
            run: Mutex::new(run),
        })
    }

    /// Loads a run directory written by `celldiff train` or [`Self::save`] (checksums, version
    /// and config checked).
    ///
    /// # Errors
    /// `FileNotFoundError`, or `ValueError` naming the file and field of a damaged run.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let run = runner::run(py, None, move |_| {
            Run::load(&path, &celldiff::backend::cpu_device())
        })?;
        Ok(Self {
            run: Mutex::new(run),
        })
    }

    /// Writes the run directory (atomically; an existing path is replaced only with
    /// `overwrite`, and only when it is an earlier celldiff output).
    ///
    /// # Errors
    /// `FileExistsError` without `overwrite`; `ValueError` for a refused path.
    #[pyo3(signature = (path, overwrite = false))]
    fn save(&self, py: Python<'_>, path: PathBuf, overwrite: bool) -> PyResult<()> {
        let run = self.run()?;
        runner::run(py, None, move |_| run.save(&path, overwrite))
    }

    /// Generates cells; `options` is JSON of [`GenerateOptions`] (`n`, `prior`, `sampler`,
    /// `steps`, `eta`, `seed`, `clip_x0`, `use_ema`, `observation`, `output`). Returns the
    /// AnnData parts dict (counts in X for a count-likelihood run).
    ///
    /// # Errors
    /// `ValueError` for bad options.
    #[pyo3(signature = (options, progress = None))]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        options: &str,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let opts: GenerateOptions = merge_options(options, "generate options")?;
        let run = self.run()?;
        let out = runner::run(py, progress.as_ref(), move |chan| {
            scvaeder::generate(
                &run,
                &opts,
                &celldiff::backend::cpu_device(),
                &mut |i, n| chan.on_step(i, n),
            )
        })?;
        anndata_to_py(py, out)
    }

    /// Posterior means `[n_obs, n_latent]` (float32) of the cells in `adata` under the run's
    /// preprocessing (genes matched by name): `obsm['X_celldiff']`.
    ///
    /// # Errors
    /// `ValueError` listing genes of the model missing from `adata`.
    fn embed<'py>(
        &self,
        py: Python<'py>,
        adata: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ad = anndata_from_py(adata, "adata")?;
        let run = self.run()?;
        let z = runner::run(py, None, move |_| {
            scvaeder::embed(&run, &ad, &celldiff::backend::cpu_device())
        })?;
        dense_to_py(py, z)
    }

    /// Predicts the stimulated response of one cell type from its control cells by latent
    /// arithmetic (scGen's δ in the VAE latent, or scVAEDer's δ in the diffusion prior):
    /// [`celldiff::scvaeder::analysis::perturb::predict`]. `adata`: parts dict with the
    /// condition and cell-type columns; `options`: JSON of `PerturbOptions`. Returns the parts
    /// of the predicted cells (`[n_control, n_genes]`, the model's log1p space) with
    /// `uns['celldiff_perturbation']`, which also holds scGen's R² metrics when `adata` has
    /// at least two real stimulated cells of the type.
    ///
    /// # Errors
    /// `ValueError` for unknown keys or values, a type without control cells.
    #[pyo3(signature = (adata, options, progress = None))]
    fn perturb<'py>(
        &self,
        py: Python<'py>,
        adata: &Bound<'py, PyDict>,
        options: &str,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        use celldiff::scvaeder::analysis::perturb::{self, PerturbOptions};
        let opts: PerturbOptions = merge_options(options, "perturbation options")?;
        let n_top = 100;
        let ad = anndata_from_py(adata, "adata")?;
        let run = self.run()?;
        let out = runner::run(py, progress.as_ref(), move |_| {
            let device = celldiff::backend::cpu_device();
            let mut pred = perturb::predict(&run, &ad, &opts, &device)?;
            if pred.real_stimulated.n_rows >= 2 {
                let m = perturb::evaluate_perturbation(
                    &pred.control,
                    &pred.real_stimulated,
                    &pred.adata.x.to_dense(),
                    &pred.adata.var_names,
                    n_top,
                )?;
                if let Some(serde_json::Value::Object(u)) =
                    pred.adata.uns.get_mut("celldiff_perturbation")
                {
                    u.insert(
                        "metrics".into(),
                        serde_json::to_value(&m)
                            .map_err(|e| celldiff::Error::Internal(e.to_string()))?,
                    );
                }
            }
            Ok(pred.adata)
        })?;
        anndata_to_py(py, out)
    }

    /// Interpolates between two states of `obs[key]` (scVAEDer's approaches 1 and 2:
    /// [`celldiff::scvaeder::analysis::interpolate::interpolate`]). `options`: JSON of
    /// `InterpolateOptions` (`key`, `from`, `to`, `method`, `n_steps`, `t_start`, `sampler`,
    /// `steps`, `encoding`, `path`, ...). Returns the parts of the path `[n_steps, n_genes]`
    /// with `obs['lambda']` and `uns['celldiff_interpolation']` (correlations, Spearman ρ,
    /// manifold check).
    ///
    /// # Errors
    /// `ValueError` for an unknown key or state, too few cells, bad options.
    #[pyo3(signature = (adata, options, progress = None))]
    fn interpolate<'py>(
        &self,
        py: Python<'py>,
        adata: &Bound<'py, PyDict>,
        options: &str,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        use celldiff::scvaeder::analysis::interpolate::{InterpolateOptions, interpolate};
        let opts: InterpolateOptions = merge_options(options, "interpolation options")?;
        let ad = anndata_from_py(adata, "adata")?;
        let run = self.run()?;
        let out = runner::run(py, progress.as_ref(), move |chan| {
            let res = interpolate(
                &run,
                &ad,
                &opts,
                &celldiff::backend::cpu_device(),
                &mut |i, n| chan.on_step(i, n),
            )?;
            Ok(res.adata)
        })?;
        anndata_to_py(py, out)
    }

    /// `config.json` as JSON text.
    #[getter]
    fn config_json(&self) -> PyResult<String> {
        let run = self.run()?;
        serde_json::to_string(&run.config).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The training history (`metrics.jsonl` records) as a JSON array.
    #[getter]
    fn history_json(&self) -> PyResult<String> {
        let run = self.run()?;
        serde_json::to_string(&run.history).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The model's genes, in the order of its X.
    #[getter]
    fn genes(&self) -> PyResult<Vec<String>> {
        Ok(self.run()?.genes)
    }
}
