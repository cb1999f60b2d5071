//! DiffVAE's cell-type classifier (`celldiff._core.ClassifierModel`, behind
//! `celldiff.CellTypeClassifier`) and its latent shifts (`diffvae_shift`, behind
//! `celldiff.DiffVAE.shift`): Bica et al., Sci. Rep. 2020, "Cell state transitions";
//! [`celldiff::diffvae::classify`], [`celldiff::diffvae::shift`].

use std::path::PathBuf;
use std::sync::Mutex;

use celldiff::RunFiles;
use celldiff::diffvae::LatentModelConfig;
use celldiff::diffvae::classify::{Classifier, ClassifierTrainConfig, fit_classifier};
use celldiff::diffvae::shift::{ShiftOptions, shift_cells};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{anndata_from_py, annotations_to_py};
use crate::{merge_options, runner};

/// A trained cell-type classifier (the classifier directory of `celldiff classify train`).
#[pyclass(module = "celldiff._core")]
pub struct ClassifierModel {
    clf: Mutex<Classifier>,
}

impl ClassifierModel {
    fn clf(&self) -> PyResult<Classifier> {
        self.clf
            .lock()
            .map(|c| c.clone())
            .map_err(|_| PyValueError::new_err("the classifier is in use by another thread"))
    }
}

#[pymethods]
impl ClassifierModel {
    /// Trains on `obs[labels_key]` of `adata` (parts dict with that column); `options`: JSON
    /// over `ClassifierTrainConfig` (`hidden`, `epochs`, `batch_size`, `learning_rate`,
    /// `validation_fraction`, `seed`).
    ///
    /// # Errors
    /// `ValueError` for a missing or unusable labels column, bad options or values.
    #[staticmethod]
    #[pyo3(signature = (adata, labels_key, options, n_top_genes = 2000, source = String::from("<in-memory AnnData>")))]
    fn train(
        py: Python<'_>,
        adata: &Bound<'_, PyDict>,
        labels_key: String,
        options: &str,
        n_top_genes: usize,
        source: String,
    ) -> PyResult<Self> {
        let cfg: ClassifierTrainConfig = merge_options(options, "classifier options")?;
        cfg.validate().map_err(crate::to_py_err)?;
        let ad = anndata_from_py(adata, "adata")?;
        let clf = runner::run(py, None, move |_| {
            let device = celldiff::backend::cpu_device();
            Ok(fit_classifier(&ad, &labels_key, n_top_genes, &source, &cfg, &device)?.0)
        })?;
        Ok(Self {
            clf: Mutex::new(clf),
        })
    }

    /// Loads a classifier directory.
    ///
    /// # Errors
    /// `FileNotFoundError`, or `ValueError` naming the file and field of a damaged directory.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let clf = runner::run(py, None, move |_| {
            Classifier::load(&path, &celldiff::backend::cpu_device())
        })?;
        Ok(Self {
            clf: Mutex::new(clf),
        })
    }

    /// Writes the classifier directory (atomically; see `ScvaederModel.save`).
    ///
    /// # Errors
    /// `FileExistsError` without `overwrite`; `ValueError` for a refused path.
    #[pyo3(signature = (path, overwrite = false))]
    fn save(&self, py: Python<'_>, path: PathBuf, overwrite: bool) -> PyResult<()> {
        let clf = self.clf()?;
        runner::run(py, None, move |_| clf.save(&path, overwrite))
    }

    /// Predicts the cell types of `adata` (genes matched by name). Returns `{"obs": {key:
    /// column}, "obsm": {...}, "uns": JSON text}` ([`Classifier::prediction_annotations`]).
    ///
    /// # Errors
    /// `ValueError` for missing genes or a missing `labels_key` column.
    #[pyo3(signature = (adata, key_added = String::from("celldiff_cell_type"), labels_key = None, model = String::from("<in memory>")))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        adata: &Bound<'py, PyDict>,
        key_added: String,
        labels_key: Option<String>,
        model: String,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ad = anndata_from_py(adata, "adata")?;
        let clf = self.clf()?;
        let ann = runner::run(py, None, move |_| {
            let pred = clf.predict(&ad, &celldiff::backend::cpu_device())?;
            clf.prediction_annotations(&ad, &pred, &key_added, labels_key.as_deref(), &model)
        })?;
        annotations_to_py(py, ann)
    }

    /// The classifier's `config.json` (categories, held-out report, training) as JSON text.
    #[getter]
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.clf()?.config).map_err(|e| PyValueError::new_err(e.to_string()))
    }
}

/// DiffVAE's latent shift (`celldiff shift`): moves the `source` cells' latent means along
/// the dimensions that separate them from each target and asks the classifier what they
/// became. `classifier`: a trained `ClassifierModel`, or None to train one on
/// `obs[labels_key]` (`classifier_options`, `n_top_genes`); `latent_options` over
/// `LatentModelConfig`; `options` over `ShiftOptions`. Returns `(results JSON, markdown
/// table, genes TSV)`.
///
/// # Errors
/// `ValueError` for unknown types, bad options, a missing labels column.
#[pyfunction]
#[pyo3(signature = (adata, labels_key, options, latent_options, classifier = None, classifier_options = "{}", n_top_genes = 2000, progress = None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn diffvae_shift<'py>(
    py: Python<'py>,
    adata: &Bound<'py, PyDict>,
    labels_key: String,
    options: &str,
    latent_options: &str,
    classifier: Option<PyRef<'py, ClassifierModel>>,
    classifier_options: &str,
    n_top_genes: usize,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<(String, String, String)> {
    let opts: ShiftOptions = merge_options(options, "shift options")?;
    if opts.lambdas.is_empty() || opts.lambdas.iter().any(|l| !l.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "lambdas: expected finite numbers, got {:?}",
            opts.lambdas
        )));
    }
    let latent: LatentModelConfig = merge_options(latent_options, "latent model options")?;
    latent.validate().map_err(crate::to_py_err)?;
    let clf_cfg: ClassifierTrainConfig = merge_options(classifier_options, "classifier options")?;
    clf_cfg.validate().map_err(crate::to_py_err)?;
    let given = classifier.map(|c| c.clf()).transpose()?;
    let ad = anndata_from_py(adata, "adata")?;
    runner::run(py, progress.as_ref(), move |chan| {
        let device = celldiff::backend::cpu_device();
        let (clf, x) = match given {
            Some(c) => (c, None),
            None => {
                let (c, x) = fit_classifier(
                    &ad,
                    &labels_key,
                    n_top_genes,
                    "<in-memory AnnData>",
                    &clf_cfg,
                    &device,
                )?;
                (c, Some(x))
            }
        };
        let (res, _) = shift_cells(
            &ad,
            &labels_key,
            &clf,
            x,
            &latent,
            &opts,
            &device,
            &mut chan.observer(),
        )?;
        let mut doc =
            serde_json::to_value(&res).map_err(|e| celldiff::Error::Internal(e.to_string()))?;
        if let Some(o) = doc.as_object_mut() {
            o.insert("labels_key".into(), labels_key.clone().into());
            o.insert(
                "latent_model".into(),
                serde_json::to_value(&latent)
                    .map_err(|e| celldiff::Error::Internal(e.to_string()))?,
            );
            o.insert(
                "classifier".into(),
                serde_json::json!({"report": clf.config.report, "train": clf.config.train}),
            );
        }
        Ok((doc.to_string(), res.markdown(), res.genes_tsv()))
    })
}
