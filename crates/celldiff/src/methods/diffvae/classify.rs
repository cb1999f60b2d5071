//! Cell-type classification for DiffVAE's latent-perturbation experiments (Bica,
//! Andrés-Terré, Cvejic & Liò, *Sci. Rep.* 10, 9790, 2020, "Cell state transitions"): the
//! [`CellTypeClassifier`] (MLP 256-512-256, ReLU, softmax; Adam lr 1e-3) trained on
//! expression and `obs` labels, its held-out accuracy, and a saved classifier directory that
//! `celldiff classify predict` and `celldiff shift` reload.
//!
//! # Input space
//! The classifier sees the same matrix as DiffVAE: log1p-normalised expression of the highly
//! variable genes, min-max scaled per gene to [0, 1] ([`crate::diffvae::preprocess_config`]),
//! so that DiffVAE's decoded cells (Bernoulli means in [0, 1]) can be classified directly.
//!
//! # Directory layout (`CLF_DIR/`)
//! - `config.json`: [`ClassifierConfig`] (`"model": "classifier"`, network, training
//!   parameters, `labels_key`, label categories, the held-out [`ClassifierReport`]).
//! - `genes.json`: the classifier's genes, in order (a JSON array; `genes.txt` in older
//!   directories).
//! - `preprocess.json`: the fitted preprocessing ([`FittedPreprocess`]) applied to new cells.
//! - `classifier.bpk`: Burn weights.
//! - `SHA256SUMS`: the SHA-256 of every other file.
//!
//! Written to a temporary sibling directory and renamed into place (never half-written), and
//! checked on load like a run directory ([`crate::run_dir`]).

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::anndata::{AnnData, DenseMatrix};
use crate::error::{Error, Result};
use crate::models::classifier::{CellTypeClassifier, CellTypeClassifierConfig};
use crate::pp::FittedPreprocess;
use crate::run_dir::{
    DataSource, RunDir, RunFiles, RunHeader, check_dims, check_len, check_preprocess, check_range,
    save_module, write_json,
};
use crate::train::fit::{FitOptions, ShuffledMinibatches, fit};
use crate::train::{Silent, map_row_chunks, to_host, to_tensor};

/// Training parameters of the cell-type classifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassifierTrainConfig {
    /// Hidden widths, input side first (the paper: 256, 512, 256).
    pub hidden: Vec<usize>,
    /// Epochs over the training cells.
    pub epochs: usize,
    /// Minibatch size (cells).
    pub batch_size: usize,
    /// Adam learning rate (the paper: 1e-3).
    pub learning_rate: f64,
    /// Fraction of each cell type held out to measure the accuracy (stratified; a type with
    /// a single cell keeps it for training). 0 = no held-out set.
    pub validation_fraction: f64,
    /// Seed of the split, the shuffling and the weights.
    pub seed: u64,
}

impl Default for ClassifierTrainConfig {
    fn default() -> Self {
        Self {
            hidden: vec![256, 512, 256],
            epochs: 50,
            batch_size: 128,
            learning_rate: 1e-3,
            validation_fraction: 0.2,
            seed: 0,
        }
    }
}

impl ClassifierTrainConfig {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::Param`] naming the field: empty or zero hidden widths, 0 epochs or batch
    /// size, a learning rate that is not positive and finite, a validation fraction outside
    /// [0, 1).
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return Err(Error::Param(format!(
                "classifier hidden widths must be positive, got {:?}",
                self.hidden
            )));
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::Param(
                "classifier epochs and batch size must be at least 1".into(),
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(Error::Param(format!(
                "classifier learning rate must be positive, got {}",
                self.learning_rate
            )));
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(Error::Param(format!(
                "validation fraction must be in [0, 1), got {}",
                self.validation_fraction
            )));
        }
        Ok(())
    }
}

/// Held-out accuracy of one cell type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassAccuracy {
    /// Cell type.
    pub label: String,
    /// Held-out cells of this type.
    pub n_test: usize,
    /// Fraction of them classified as this type (`None` without held-out cells).
    pub accuracy: Option<f64>,
}

/// How well the classifier does on the cells it was not trained on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassifierReport {
    /// Training cells.
    pub n_train: usize,
    /// Held-out cells.
    pub n_test: usize,
    /// Held-out accuracy (`None` without a held-out set).
    pub accuracy: Option<f64>,
    /// Mean of the per-type accuracies over types with held-out cells.
    pub balanced_accuracy: Option<f64>,
    /// Accuracy of always answering the most frequent training type (the baseline).
    pub majority_baseline: Option<f64>,
    /// Accuracy on the training cells.
    pub train_accuracy: f64,
    /// Mean cross-entropy of the last epoch.
    pub final_loss: f64,
    /// Per type, in category order.
    pub per_class: Vec<ClassAccuracy>,
}

/// Stratified split of the labelled cells: per type, `round(fraction · n)` cells to the
/// held-out set (none for a type with one cell). Returns `(train, test)` row indices.
fn stratified_split(
    labels: &[Option<usize>],
    n_classes: usize,
    fraction: f64,
    rng: &mut StdRng,
) -> (Vec<usize>, Vec<usize>) {
    let mut by_class = vec![Vec::new(); n_classes];
    for (i, l) in labels.iter().enumerate() {
        if let Some(c) = l {
            by_class[*c].push(i);
        }
    }
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for mut cells in by_class {
        cells.shuffle(rng);
        let n_test = if cells.len() >= 2 {
            ((cells.len() as f64 * fraction).round() as usize).min(cells.len() - 1)
        } else {
            0
        };
        test.extend_from_slice(&cells[..n_test]);
        train.extend_from_slice(&cells[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

fn one_hot(labels: &[usize], n_classes: usize, device: &Device) -> Tensor<2> {
    let mut v = vec![0f32; labels.len() * n_classes];
    for (r, &c) in labels.iter().enumerate() {
        v[r * n_classes + c] = 1.0;
    }
    Tensor::from_data(TensorData::new(v, [labels.len(), n_classes]), device)
}

/// Class probabilities of every row of `x` (`[n_cells, n_genes]` in the classifier's space →
/// `[n_cells, n_classes]`, rows summing to 1), in chunks of 4096 cells.
///
/// # Errors
/// [`Error::Internal`] if the backend fails to return data.
pub fn predict_proba(
    net: &CellTypeClassifier,
    x: &DenseMatrix,
    device: &Device,
) -> Result<DenseMatrix> {
    map_row_chunks(x.n_rows, 4096, "classify", |idx| {
        to_host(net.log_probs(to_tensor(&x.select_rows(idx), device)).exp())
    })
}

/// The most probable class of each row of `probs` (`[n, n_classes]` → `[n]`; ties: the lower
/// class).
pub fn argmax_rows(probs: &DenseMatrix) -> Vec<usize> {
    (0..probs.n_rows)
        .map(|i| {
            let r = probs.row(i);
            (0..r.len()).fold(0, |b, j| if r[j] > r[b] { j } else { b })
        })
        .collect()
}

/// Trains the [`CellTypeClassifier`] on `x` (`[n_cells, n_genes]`, the classifier's input
/// space) and `labels` (`[n_cells]`, class ids `< categories.len()`, `None` = unlabelled,
/// left out) with cross-entropy and Adam, holding out `cfg.validation_fraction` of each type,
/// and reports the held-out accuracy (the paper reports the classifier's test accuracy
/// before using it to judge shifted cells).
///
/// # Errors
/// - [`Error::Param`]: invalid `cfg`.
/// - [`Error::InvalidInput`]: lengths differ, fewer than 2 labelled cells or 2 types, a label
///   out of range, non-finite values in `x`; the loss became non-finite (lower the learning
///   rate).
pub fn train_classifier(
    x: &DenseMatrix,
    labels: &[Option<usize>],
    categories: &[String],
    cfg: &ClassifierTrainConfig,
    device: &Device,
) -> Result<(CellTypeClassifier, ClassifierReport)> {
    cfg.validate()?;
    let k = categories.len();
    if labels.len() != x.n_rows {
        return Err(Error::InvalidInput(format!(
            "{} labels for {} cells",
            labels.len(),
            x.n_rows
        )));
    }
    if let Some(l) = labels.iter().flatten().find(|&&l| l >= k) {
        return Err(Error::InvalidInput(format!(
            "label id {l} out of range for {k} categories"
        )));
    }
    let n_labelled = labels.iter().flatten().count();
    if k < 2 || n_labelled < 2 {
        return Err(Error::InvalidInput(format!(
            "a classifier needs at least 2 labelled cells of 2 types, got {n_labelled} cells \
             of {k} type(s)"
        )));
    }
    if let Some(p) = x.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "non-finite value {} at (cell {}, gene {}) (0-based)",
            x.data[p],
            p / x.n_cols,
            p % x.n_cols
        )));
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (train, test) = stratified_split(labels, k, cfg.validation_fraction, &mut rng);
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed ^ 0x0c1a_55e5);
    let net = CellTypeClassifierConfig::new(x.n_cols, k, cfg.hidden.clone()).init(&ad);
    let label_of = |i: usize| labels[i].expect("only labelled cells are split");
    let mut step = ShuffledMinibatches {
        train,
        batch_size: cfg.batch_size,
        drop_single: false,
        loss: |net: &CellTypeClassifier, b: &[usize]| {
            let y: Vec<usize> = b.iter().map(|&i| label_of(i)).collect();
            net.loss(to_tensor(&x.select_rows(b), &ad), one_hot(&y, k, &ad))
        },
    };
    let opts = FitOptions {
        adam_epsilon: 1e-7,
        ..FitOptions::new("classifier", cfg.epochs, cfg.learning_rate)
    };
    let fitted = fit(&mut step, net, &opts, &mut rng, &mut Silent)?;
    let train = step.train;
    let final_loss = fitted.records.last().map_or(f64::NAN, |r| r.train_loss);
    let net = fitted.last;
    let net = net.valid();
    let accuracy_on = |rows: &[usize]| -> Result<(Vec<usize>, f64)> {
        let pred = argmax_rows(&predict_proba(&net, &x.select_rows(rows), device)?);
        let ok = rows
            .iter()
            .zip(&pred)
            .filter(|&(&i, &p)| label_of(i) == p)
            .count();
        Ok((pred, ok as f64 / rows.len().max(1) as f64))
    };
    let (_, train_accuracy) = accuracy_on(&train)?;
    let mut train_counts = vec![0usize; k];
    for &i in &train {
        train_counts[label_of(i)] += 1;
    }
    let majority = (0..k).fold(0, |b, c| {
        if train_counts[c] > train_counts[b] {
            c
        } else {
            b
        }
    });
    let (accuracy, balanced_accuracy, majority_baseline, per_class) = if test.is_empty() {
        let per = categories
            .iter()
            .map(|c| ClassAccuracy {
                label: c.clone(),
                n_test: 0,
                accuracy: None,
            })
            .collect();
        (None, None, None, per)
    } else {
        let (pred, acc) = accuracy_on(&test)?;
        let mut n = vec![0usize; k];
        let mut ok = vec![0usize; k];
        for (&i, &p) in test.iter().zip(&pred) {
            n[label_of(i)] += 1;
            ok[label_of(i)] += usize::from(label_of(i) == p);
        }
        let per: Vec<ClassAccuracy> = (0..k)
            .map(|c| ClassAccuracy {
                label: categories[c].clone(),
                n_test: n[c],
                accuracy: (n[c] > 0).then(|| ok[c] as f64 / n[c] as f64),
            })
            .collect();
        let accs: Vec<f64> = per.iter().filter_map(|c| c.accuracy).collect();
        let balanced = accs.iter().sum::<f64>() / accs.len() as f64;
        let base = n[majority] as f64 / test.len() as f64;
        (Some(acc), Some(balanced), Some(base), per)
    };
    Ok((
        net,
        ClassifierReport {
            n_train: train.len(),
            n_test: test.len(),
            accuracy,
            balanced_accuracy,
            majority_baseline,
            train_accuracy,
            final_loss,
            per_class,
        },
    ))
}

/// What a saved classifier was trained on and how (`config.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Version, model (`"classifier"`) and data source.
    #[serde(flatten)]
    pub header: RunHeader,
    /// `obs` column the labels came from.
    pub labels_key: String,
    /// Cell types, in class-id order.
    pub categories: Vec<String>,
    /// Network.
    pub network: CellTypeClassifierConfig,
    /// Training parameters.
    pub train: ClassifierTrainConfig,
    /// Held-out accuracy.
    pub report: ClassifierReport,
}

/// A trained classifier with what it was trained on, saved as a directory (module docs).
#[derive(Debug, Clone)]
pub struct Classifier {
    /// Configuration and report.
    pub config: ClassifierConfig,
    /// The classifier's genes (= `preprocess.genes`).
    pub genes: Vec<String>,
    /// Preprocessing that maps new cells into the classifier's space.
    pub preprocess: FittedPreprocess,
    /// The network (evaluation mode).
    pub net: CellTypeClassifier,
}

/// Predicted cell types of some cells.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Class id per cell `[n_cells]` (index into the categories).
    pub class: Vec<usize>,
    /// Class probabilities `[n_cells, n_classes]`.
    pub probs: DenseMatrix,
}

impl Classifier {
    /// Fits a classifier on `x` (`[n_cells, n_genes]`, already in the space `preprocess`
    /// produces, e.g. from [`crate::pp::fit_transform`] with
    /// [`crate::diffvae::preprocess_config`]) and `labels` (ids into `categories`).
    ///
    /// # Errors
    /// Everything [`train_classifier`] returns; [`Error::InvalidInput`] if `x`'s width differs
    /// from `preprocess.genes`.
    pub fn fit(
        x: &DenseMatrix,
        labels: &[Option<usize>],
        categories: &[String],
        preprocess: FittedPreprocess,
        meta: (&str, &str),
        cfg: &ClassifierTrainConfig,
        device: &Device,
    ) -> Result<Classifier> {
        if x.n_cols != preprocess.genes.len() {
            return Err(Error::InvalidInput(format!(
                "{} columns but the preprocessing has {} genes",
                x.n_cols,
                preprocess.genes.len()
            )));
        }
        let (net, report) = train_classifier(x, labels, categories, cfg, device)?;
        Ok(Classifier {
            config: ClassifierConfig {
                header: RunHeader::new(
                    "classifier",
                    &DataSource {
                        path: meta.0.into(),
                        ..DataSource::default()
                    },
                ),
                labels_key: meta.1.into(),
                categories: categories.to_vec(),
                network: CellTypeClassifierConfig::new(
                    x.n_cols,
                    categories.len(),
                    cfg.hidden.clone(),
                ),
                train: cfg.clone(),
                report,
            },
            genes: preprocess.genes.clone(),
            preprocess,
            net,
        })
    }
}

impl RunFiles for Classifier {
    const MODEL: &'static str = "classifier";
    const WHAT: &'static str = "classifier directory";
    type Config = ClassifierConfig;

    fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    fn genes(&self) -> &[String] {
        &self.genes
    }

    fn write_files(&self, tmp: &Path) -> Result<()> {
        write_json(&tmp.join("preprocess.json"), &self.preprocess)?;
        save_module(&self.net, &tmp.join("classifier.bpk"))
    }

    fn wrong_model(model: &str) -> String {
        format!("this is a {model} run; expected a classifier directory (model \"classifier\")")
    }

    /// Checks the network's dimensions against the categories and the genes, the
    /// preprocessing, and the learning rate, then loads the weights.
    fn read(rd: &RunDir, config: ClassifierConfig, device: &Device) -> Result<Classifier> {
        let cp = rd.path("config.json");
        let net = &config.network;
        check_dims(
            &cp,
            &[
                ("network.n_input", net.n_input),
                ("network.n_classes", net.n_classes),
            ],
        )?;
        if let Some(i) = net.hidden.iter().position(|&h| h == 0) {
            return Err(Error::format(
                &cp,
                format!("network.hidden[{i}]"),
                "0, expected ≥ 1",
            ));
        }
        check_len(
            &cp,
            "categories",
            config.categories.len(),
            net.n_classes,
            "network.n_classes outputs",
        )?;
        check_range(
            &cp,
            "train.learning_rate",
            config.train.learning_rate,
            (0.0, true),
            (f64::INFINITY, true),
        )?;
        let (genes, _) = rd.genes(net.n_input, "the network in config.json")?;
        let preprocess: FittedPreprocess = rd.json("preprocess.json")?;
        check_preprocess(&rd.path("preprocess.json"), &preprocess, &genes)?;
        let net = rd.module(config.network.init(device), "classifier.bpk")?;
        Ok(Classifier {
            config,
            genes,
            preprocess,
            net,
        })
    }
}

impl Classifier {
    /// Classifies cells already in the classifier's space (`[n_cells, n_genes]`).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the width differs from the classifier's genes.
    pub fn predict_scaled(&self, x: &DenseMatrix, device: &Device) -> Result<Prediction> {
        if x.n_cols != self.genes.len() {
            return Err(Error::InvalidInput(format!(
                "{} genes given, the classifier expects {}",
                x.n_cols,
                self.genes.len()
            )));
        }
        let probs = predict_proba(&self.net, x, device)?;
        Ok(Prediction {
            class: argmax_rows(&probs),
            probs,
        })
    }

    /// Classifies the cells of `adata` (as read: counts or log1p-normalised, any gene order,
    /// a superset of the classifier's genes), after applying the saved preprocessing.
    ///
    /// # Errors
    /// Everything [`FittedPreprocess::transform`] returns (missing genes, wrong data kind).
    pub fn predict(&self, adata: &AnnData, device: &Device) -> Result<Prediction> {
        let pp = self.preprocess.transform(adata)?;
        self.predict_scaled(&pp.x.to_dense(), device)
    }
}

/// DiffVAE's classifier trained on `obs[labels_key]` of `adata` as `celldiff classify train`
/// does: DiffVAE's preprocessing ([`super::preprocess_config_for`], `n_top_genes` highly
/// variable genes, 0 = all), then [`Classifier::fit`]. `source` is recorded as the data.
/// Returns the classifier and the cells in its space (`[n_obs', n_genes]`, scaled).
///
/// # Errors
/// [`Error::InvalidInput`] for a missing or unusable labels column and what preprocessing
/// rejects; training failures.
pub fn fit_classifier(
    adata: &AnnData,
    labels_key: &str,
    n_top_genes: usize,
    source: &str,
    cfg: &ClassifierTrainConfig,
    device: &Device,
) -> Result<(Classifier, DenseMatrix)> {
    let (labels, cats) = super::identify::reference_labels(adata, labels_key)?;
    let (pp, fitted) = crate::pp::fit_transform(
        adata,
        &super::preprocess_config_for(adata, (n_top_genes > 0).then_some(n_top_genes)),
    )?;
    let x = pp.x.to_dense();
    let clf = Classifier::fit(
        &x,
        &labels,
        &cats,
        fitted,
        (source, labels_key),
        cfg,
        device,
    )?;
    Ok((clf, x))
}

impl Classifier {
    /// What `celldiff classify predict` writes for `pred` (cells of `adata`): `obs[key_added]`
    /// (the predicted type, categorical over the classifier's categories),
    /// `obs[key_added + '_prob']` (its probability), `obsm[key_added + '_probs']`
    /// (`[n_obs, n_classes]`) and `uns['celldiff_classify']` (categories, held-out accuracy,
    /// and the accuracy against `obs[labels_key]` over the cells of known types when given).
    /// `model` names the classifier in `uns`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a missing `labels_key` column.
    pub fn prediction_annotations(
        &self,
        adata: &AnnData,
        pred: &Prediction,
        key_added: &str,
        labels_key: Option<&str>,
        model: &str,
    ) -> Result<crate::io::h5ad::Annotations> {
        let cats = &self.config.categories;
        let mut uns = serde_json::json!({
            "model": model,
            "categories": cats,
            "labels_key": self.config.labels_key,
            "held_out_accuracy": self.config.report.accuracy,
        });
        if let Some(k) = labels_key {
            let truth = adata.obs_column(k)?.labels();
            let known = truth.iter().filter(|t| cats.contains(t)).count();
            let ok = truth
                .iter()
                .zip(&pred.class)
                .filter(|(t, c)| **t == cats[**c])
                .count();
            uns["accuracy"] = serde_json::json!(ok as f64 / known.max(1) as f64);
            uns["n_compared"] = serde_json::json!(known);
            uns["accuracy_labels_key"] = serde_json::json!(k);
        }
        let prob: Vec<f64> = (0..pred.probs.n_rows)
            .map(|i| pred.probs.row(i)[pred.class[i]] as f64)
            .collect();
        let mut ann = crate::io::h5ad::Annotations::default();
        ann.set_obs(
            key_added,
            crate::anndata::Column::Categorical {
                codes: pred.class.iter().map(|&c| c as i32).collect(),
                categories: cats.clone(),
            },
        );
        ann.set_obs(
            &format!("{key_added}_prob"),
            crate::anndata::Column::Numeric(prob),
        );
        ann.set_obsm(&format!("{key_added}_probs"), pred.probs.clone());
        ann.uns.insert("celldiff_classify".into(), uns);
        Ok(ann)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffvae::identify::reference_labels;
    use crate::io::{ReadOptions, read};

    const WEINREB: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/weinreb_larry_hematopoiesis_subset/test_adata_preprocessed.h5ad"
    );

    #[test]
    fn split_is_stratified_and_keeps_singletons_for_training() {
        let _rng = crate::test_rng_lock();
        let labels: Vec<Option<usize>> = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2]
            .iter()
            .map(|&c| Some(c))
            .chain([None])
            .collect();
        let mut rng = StdRng::seed_from_u64(3);
        let (train, test) = stratified_split(&labels, 3, 0.2, &mut rng);
        assert_eq!(
            train.len() + test.len(),
            16,
            "the unlabelled cell is left out"
        );
        let count = |v: &[usize], c| v.iter().filter(|&&i| labels[i] == Some(c)).count();
        assert_eq!(count(&test, 0), 2);
        assert_eq!(count(&test, 1), 1);
        assert_eq!(count(&test, 2), 0, "a one-cell type stays in training");
    }

    #[test]
    fn bad_parameters_are_rejected() {
        let _rng = crate::test_rng_lock();
        let x = DenseMatrix::zeros(4, 3);
        let labels = vec![Some(0), Some(1), Some(0), Some(1)];
        let cats = vec!["a".to_string(), "b".to_string()];
        let dev = Device::default();
        let bad = ClassifierTrainConfig {
            validation_fraction: 1.0,
            ..Default::default()
        };
        assert!(matches!(
            train_classifier(&x, &labels, &cats, &bad, &dev),
            Err(Error::Param(_))
        ));
        let one_type = vec![Some(0); 4];
        assert!(matches!(
            train_classifier(&x, &one_type, &cats[..1], &Default::default(), &dev),
            Err(Error::InvalidInput(_))
        ));
    }

    /// On Weinreb's hematopoiesis subset the classifier must beat always answering the most
    /// frequent state (undiff, 33 %) by a wide margin on held-out cells, survive a
    /// save/load round trip with identical predictions, and refuse a directory of another
    /// kind.
    #[test]
    fn weinreb_classifier_beats_majority_and_round_trips() {
        let _rng = crate::test_rng_lock();
        let adata = read(Path::new(WEINREB), &ReadOptions::default()).unwrap();
        let (labels, cats) = reference_labels(&adata, "state_info").unwrap();
        let (pp, fitted) = crate::pp::fit_transform(
            &adata,
            &crate::diffvae::preprocess_config_for(&adata, Some(1000)),
        )
        .unwrap();
        let x = pp.x.to_dense();
        let dev = Device::default();
        let cfg = ClassifierTrainConfig {
            epochs: 20,
            ..Default::default()
        };
        let clf =
            Classifier::fit(&x, &labels, &cats, fitted, ("w", "state_info"), &cfg, &dev).unwrap();
        let r = &clf.config.report;
        let (acc, base) = (r.accuracy.unwrap(), r.majority_baseline.unwrap());
        assert!(r.n_test > 100, "{r:?}");
        assert!(
            acc > 0.8 && acc > base + 0.3,
            "held-out {acc} vs majority {base}"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clf");
        clf.save(&p, false).unwrap();
        assert!(matches!(
            clf.save(&p, false),
            Err(Error::AlreadyExists { .. })
        ));
        let back = Classifier::load(&p, &dev).unwrap();
        let a = clf.predict(&adata, &dev).unwrap();
        let b = back.predict(&adata, &dev).unwrap();
        assert_eq!(a.class, b.class);
        std::fs::write(p.join("config.json"), r#"{"model": "scvaeder"}"#).unwrap();
        let err = Classifier::load(&p, &dev).unwrap_err().to_string();
        assert!(err.contains("expected a classifier directory"), "{err}");
    }
}
