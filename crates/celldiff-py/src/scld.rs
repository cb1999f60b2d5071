//! `celldiff._core.ScldModel`: a trained SCLD run (Wang et al., arXiv 2312.14220;
//! [`celldiff::scld`]) held in memory, behind `celldiff.SCLD`.

use std::path::PathBuf;
use std::sync::Mutex;

use celldiff::RunFiles;
use celldiff::observation::Observation;
use celldiff::pipeline::SamplerKind;
use celldiff::run_dir::DataSource;
use celldiff::scld::{
    self, ConditionChoice, DEFAULT_GUIDANCE, SampleOptions, ScldGenerateOptions, ScldRun,
};
use celldiff::scvaeder::CountsOutput;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde::Deserialize;

use crate::convert::{anndata_from_py, anndata_to_py};
use crate::params::TrainParams;
use crate::{parse_options, runner};

/// A trained SCLD model (autoencoder + conditional latent diffusion + Scorer) in memory.
#[pyclass(module = "celldiff._core")]
pub struct ScldModel {
    run: Mutex<ScldRun>,
}

impl ScldModel {
    fn run(&self) -> PyResult<ScldRun> {
        self.run
            .lock()
            .map(|r| r.clone())
            .map_err(|_| PyValueError::new_err("the model is in use by another thread"))
    }
}

/// The options of `SCLD.generate` (the CLI's `generate` flags on an SCLD run).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateParams {
    n: usize,
    /// A condition name; `None` = every condition in its training proportions.
    #[serde(default)]
    condition: Option<String>,
    /// ω (−1 = holistic generation).
    #[serde(default)]
    guidance: Option<f64>,
    /// `None` = on when the run has a Scorer that is better than chance.
    #[serde(default)]
    post_guidance: Option<bool>,
    #[serde(default)]
    keep: Option<f64>,
    #[serde(default)]
    sampler: Option<SamplerKind>,
    #[serde(default)]
    steps: Option<usize>,
    #[serde(default)]
    eta: Option<f64>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    clip_x0: Option<bool>,
    #[serde(default)]
    use_ema: Option<bool>,
    #[serde(default)]
    observation: Option<Observation>,
    #[serde(default)]
    output: Option<CountsOutput>,
}

#[pymethods]
impl ScldModel {
    /// Trains SCLD on `adata` (parts dict) with conditions from `obs[condition_key]`, or from
    /// Leiden clusters at `leiden_resolution` (then stored as `obs['leiden']`).
    ///
    /// # Errors
    /// `ValueError` for bad values, options, or a missing condition column.
    #[staticmethod]
    #[pyo3(signature = (adata, options, condition_key = None, leiden_resolution = None, source = String::from("<in-memory AnnData>"), layer = None, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn train(
        py: Python<'_>,
        adata: &Bound<'_, PyDict>,
        options: &str,
        condition_key: Option<String>,
        leiden_resolution: Option<f64>,
        source: String,
        layer: Option<String>,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let params = TrainParams::parse(options)?;
        let spec = params.scld_spec()?;
        let seed = spec.seed;
        if let Some(r) = leiden_resolution
            && !(r.is_finite() && r > 0.0)
        {
            return Err(PyValueError::new_err(format!(
                "leiden_resolution must be > 0, got {r}"
            )));
        }
        let mut ad = anndata_from_py(adata, "adata")?;
        let src = DataSource {
            path: source,
            layer,
            use_raw: false,
            exclude: None,
        };
        let run = runner::run(py, progress.as_ref(), move |chan| {
            let key = match (condition_key, leiden_resolution) {
                (Some(k), None) => k,
                (None, Some(r)) => {
                    scld::add_leiden_conditions(&mut ad, r, seed)?;
                    "leiden".to_string()
                }
                _ => {
                    return Err(celldiff::Error::Param(
                        "SCLD needs conditions: condition_key (an obs column of labels) or \
                         leiden_resolution (Leiden clusters), not both"
                            .into(),
                    ));
                }
            };
            scld::fit(
                &ad,
                &key,
                leiden_resolution,
                &spec,
                &src,
                &celldiff::backend::cpu_device(),
                &mut chan.observer(),
            )
        })?;
        Ok(Self {
            run: Mutex::new(run),
        })
    }

    /// Loads an SCLD run directory.
    ///
    /// # Errors
    /// `FileNotFoundError`, or `ValueError` naming the file and field of a damaged run.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let run = runner::run(py, None, move |_| {
            ScldRun::load(&path, &celldiff::backend::cpu_device())
        })?;
        Ok(Self {
            run: Mutex::new(run),
        })
    }

    /// Writes the run directory (see `ScvaederModel.save`).
    ///
    /// # Errors
    /// `FileExistsError` without `overwrite`; `ValueError` for a refused path.
    #[pyo3(signature = (path, overwrite = false))]
    fn save(&self, py: Python<'_>, path: PathBuf, overwrite: bool) -> PyResult<()> {
        let run = self.run()?;
        runner::run(py, None, move |_| run.save(&path, overwrite))
    }

    /// Generates cells (JSON options, see `GenerateParams`); returns `(parts dict, warning or
    /// None)`: the warning says why post-guidance was turned off or is unreliable.
    ///
    /// # Errors
    /// `ValueError` for an unknown condition or bad options.
    #[pyo3(signature = (options, progress = None))]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        options: &str,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyDict>, Option<String>)> {
        let p: GenerateParams = parse_options(options, "generate options")?;
        let run = self.run()?;
        let (post, warning) = scld::decide_post_guidance(&run, p.post_guidance);
        let condition = match &p.condition {
            Some(c) => {
                run.conditions.index_of(c).map_err(crate::to_py_err)?;
                ConditionChoice::Cluster(c.clone())
            }
            None => ConditionChoice::Mix,
        };
        let keep = p.keep.unwrap_or(0.8);
        if !(keep > 0.0 && keep <= 1.0) {
            return Err(PyValueError::new_err(format!(
                "keep must be in (0, 1], got {keep}"
            )));
        }
        let guidance = p.guidance.unwrap_or(DEFAULT_GUIDANCE);
        if !guidance.is_finite() {
            return Err(PyValueError::new_err(format!(
                "guidance must be a finite number, got {guidance}"
            )));
        }
        let output = p.output.unwrap_or_default();
        if run.library.is_none() && output != CountsOutput::Counts {
            return Err(PyValueError::new_err(
                "output='log1p': this SCLD run has a Gaussian decoder and returns the model's \
                 space in X; output only applies to runs trained with likelihood nb/zinb",
            ));
        }
        let opts = ScldGenerateOptions {
            n: p.n,
            condition,
            sample: SampleOptions {
                guidance,
                sampler: p.sampler.unwrap_or(SamplerKind::Ddpm),
                steps: p.steps,
                eta: p.eta.unwrap_or(0.0),
                seed: p.seed,
                clip_x0: p.clip_x0.unwrap_or(true),
                use_ema: p.use_ema.unwrap_or(true),
            },
            post_guidance: post,
            keep,
            observation: p.observation.unwrap_or(Observation::Counts),
            output,
        };
        let out = runner::run(py, progress.as_ref(), move |chan| {
            scld::generate(
                &run,
                &opts,
                &celldiff::backend::cpu_device(),
                &mut |i, n| chan.on_step(i, n),
            )
        })?;
        Ok((anndata_to_py(py, out)?, warning))
    }

    /// The condition names (categories of the run's condition key), in the run's order.
    #[getter]
    fn conditions(&self) -> PyResult<Vec<String>> {
        Ok(self.run()?.conditions.names.clone())
    }

    /// `config.json` as JSON text.
    #[getter]
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.run()?.config).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The training history as a JSON array.
    #[getter]
    fn history_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.run()?.history)
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The model's genes.
    #[getter]
    fn genes(&self) -> PyResult<Vec<String>> {
        Ok(self.run()?.genes)
    }
}
