//! `celldiff classify train|predict` and `celldiff shift`: DiffVAE's cell-type classifier and
//! its latent perturbations (Bica et al., *Sci. Rep.* 2020, "Cell state transitions"). The
//! science is in [`celldiff::diffvae::classify`] and [`celldiff::diffvae::shift`].
//!
//! - `classify train` writes a classifier directory (config.json with the held-out accuracy,
//!   genes.json, preprocess.json, classifier.bpk, SHA256SUMS).
//! - `classify predict` writes the input with `obs[KEY]` (the predicted type), `obs[KEY_prob]`,
//!   `obsm[KEY_probs]` and `uns['celldiff_classify']` (KEY = `--key-added`, default
//!   `celldiff_cell_type`).
//! - `shift` writes `DIR/results.json`, `DIR/table.md` and `DIR/genes.tsv`, all or none.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use celldiff::RunFiles;
use celldiff::backend::DeviceChoice;
use celldiff::diffvae::LatentModelKind;
use celldiff::diffvae::classify::{Classifier, ClassifierTrainConfig};
use celldiff::diffvae::shift::{self, ShiftOptions};
use celldiff::{AnnData, DenseMatrix};

use super::TrainFlags;
use super::{DataArgs, Written, device, write_atomic};
use crate::progress::Bars;

/// `celldiff classify`: train or apply a cell-type classifier.
#[derive(Subcommand, Debug)]
pub enum ClassifyCommand {
    /// Train the MLP cell-type classifier (256-512-256, softmax) on expression and obs labels;
    /// reports its held-out accuracy and writes a classifier directory.
    Train(Box<ClassifyTrainArgs>),
    /// Predict cell types with a trained classifier: obs['celldiff_cell_type'] and
    /// probabilities.
    Predict(ClassifyPredictArgs),
}

/// Classifier training flags shared by `classify train` and `shift`.
#[derive(Args, Debug, Clone)]
pub struct ClassifierFlags {
    /// Classifier hidden widths (the paper: 256,512,256).
    #[arg(long, default_value = "256,512,256", value_delimiter = ',', allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_WIDTH))]
    pub classifier_hidden: Vec<usize>,
    /// Classifier training epochs.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_EPOCHS))]
    pub classifier_epochs: usize,
    /// Classifier minibatch size.
    #[arg(long, default_value_t = 128, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_BATCH))]
    pub classifier_batch_size: usize,
    /// Classifier Adam learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true, value_parser = super::flags::positive())]
    pub classifier_lr: f64,
    /// Fraction of each cell type held out to measure the accuracy.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true, value_parser = super::flags::rate())]
    pub validation_fraction: f64,
}

impl ClassifierFlags {
    fn config(&self, seed: u64) -> Result<ClassifierTrainConfig> {
        let cfg = ClassifierTrainConfig {
            hidden: self.classifier_hidden.clone(),
            epochs: self.classifier_epochs,
            batch_size: self.classifier_batch_size,
            learning_rate: self.classifier_lr,
            validation_fraction: self.validation_fraction,
            seed,
        };
        cfg.validate().context("classifier flags")?;
        Ok(cfg)
    }
}

#[derive(Args, Debug)]
pub struct ClassifyTrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// obs column with the cell types to learn.
    #[arg(long)]
    pub labels_key: String,
    /// Highly variable genes (seurat flavor) the classifier sees (0 = all genes); the input
    /// is log1p-normalised and min-max scaled per gene, as DiffVAE's.
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true, value_parser = super::flags::count(0, usize::MAX))]
    pub n_top_genes: usize,
    #[command(flatten)]
    pub classifier: ClassifierFlags,
    /// Seed of the split, the shuffling and the weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output classifier directory.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite an existing directory.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ClassifyPredictArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Classifier directory from `celldiff classify train`.
    #[arg(long)]
    pub model: PathBuf,
    /// obs column with known types: the accuracy against it goes to uns.
    #[arg(long)]
    pub labels_key: Option<String>,
    /// obs/obsm key prefix of the predictions.
    #[arg(long, default_value = "celldiff_cell_type")]
    pub key_added: String,
    /// Output .h5ad (the input, all genes, with the predictions).
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ShiftArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// obs column with the cell types (e.g. state_info).
    #[arg(long)]
    pub labels_key: String,
    /// Source cell type whose cells are shifted (e.g. undiff).
    #[arg(long)]
    pub source: String,
    /// Target cell types, comma-separated (e.g. Monocyte,Neutrophil).
    #[arg(long, value_delimiter = ',', required = true)]
    pub target: Vec<String>,
    /// Shift sizes λ in units of each dimension's standard deviation, comma-separated.
    #[arg(
        long = "lambda",
        default_value = "0.5,1.0",
        value_delimiter = ',',
        allow_hyphen_values = true,
        value_parser = super::flags::finite()
    )]
    pub lambdas: Vec<f64>,
    /// Latent dimensions shifted per target.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_LATENT))]
    pub n_dimensions: usize,
    /// DiffVAE latent dimension m.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_LATENT))]
    pub latent: usize,
    #[command(flatten)]
    pub train: TrainFlags,
    /// A classifier from `celldiff classify train` (its genes and preprocessing define the
    /// space); without it one is trained here on the same cells and its held-out accuracy
    /// reported.
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    #[command(flatten)]
    pub classifier_flags: ClassifierFlags,
    /// Skip the λ = 0 and random-dimension controls.
    #[arg(long)]
    pub no_controls: bool,
    /// Seed of DiffVAE, the classifier and the random-dimension control.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (results.json, table.md, genes.tsv).
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
}

pub fn run(c: ClassifyCommand, dev: DeviceChoice, quiet: bool) -> Result<()> {
    match c {
        ClassifyCommand::Train(a) => run_train(*a, dev, quiet),
        ClassifyCommand::Predict(a) => run_predict(a, dev, quiet),
    }
}

/// Reads the data and checks that `labels_key` exists.
fn read_labelled(data: &DataArgs, labels_key: &str) -> Result<AnnData> {
    let adata = data.read()?;
    adata.obs_column(labels_key).with_context(|| {
        format!(
            "--labels-key {labels_key}: not an obs column of {}",
            data.data.display()
        )
    })?;
    Ok(adata)
}

/// Fits DiffVAE's preprocessing and a classifier on `adata`; returns it and the scaled matrix.
fn fit_classifier(
    adata: &AnnData,
    data: &DataArgs,
    labels_key: &str,
    n_top_genes: usize,
    cfg: &ClassifierTrainConfig,
    device: &celldiff::Device,
) -> Result<(Classifier, DenseMatrix)> {
    celldiff::diffvae::classify::fit_classifier(
        adata,
        labels_key,
        n_top_genes,
        &data.data.display().to_string(),
        cfg,
        device,
    )
    .with_context(|| {
        format!(
            "training the classifier on obs['{labels_key}'] of {}",
            data.data.display()
        )
    })
}

fn report_line(clf: &Classifier) -> String {
    let r = &clf.config.report;
    match (r.accuracy, r.balanced_accuracy, r.majority_baseline) {
        (Some(a), Some(b), Some(m)) => format!(
            "classifier: held-out accuracy {a:.3} (balanced {b:.3}; majority baseline {m:.3}) on \
             {} cells, trained on {}",
            r.n_test, r.n_train
        ),
        _ => format!(
            "classifier: no held-out cells; training accuracy {:.3} on {} cells",
            r.train_accuracy, r.n_train
        ),
    }
}

fn run_train(a: ClassifyTrainArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    super::check_run_out(&a.out, a.force, &[&a.data.data])?;
    let cfg = a.classifier.config(a.seed)?;
    let device = device(dev)?;
    let bars = Bars::new(quiet);
    let start = Instant::now();
    let adata = read_labelled(&a.data, &a.labels_key)?;
    let (clf, _) = fit_classifier(&adata, &a.data, &a.labels_key, a.n_top_genes, &cfg, &device)?;
    for m in &clf.preprocess.messages {
        bars.println(format!("preprocess: {m}"));
    }
    clf.save(&a.out, a.force)
        .map_err(super::appeared_meanwhile)?;
    bars.println(report_line(&clf));
    println!(
        "{}",
        json!({
            "n_cells": adata.n_obs(),
            "n_genes": clf.genes.len(),
            "categories": clf.config.categories,
            "report": clf.config.report,
            "seconds": start.elapsed().as_secs_f64(),
            "out": a.out.display().to_string(),
        })
    );
    Ok(())
}

fn run_predict(a: ClassifyPredictArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    super::check_out(&a.out, a.force, &[&a.model, &a.data.data])?;
    let device = device(dev)?;
    let bars = Bars::new(quiet);
    let clf = Classifier::load(&a.model, &device)?;
    let mut adata = match &a.labels_key {
        Some(k) => read_labelled(&a.data, k)?,
        None => a.data.read()?,
    };
    let pred = clf
        .predict(&adata, &device)
        .with_context(|| format!("classifying {}", a.data.data.display()))?;
    let ann = clf.prediction_annotations(
        &adata,
        &pred,
        &a.key_added,
        a.labels_key.as_deref(),
        &a.model.display().to_string(),
    )?;
    let uns = ann.uns["celldiff_classify"].clone();
    if let (Some(k), Some(acc), Some(known)) = (
        &a.labels_key,
        uns["accuracy"].as_f64(),
        uns["n_compared"].as_u64(),
    ) {
        bars.println(format!(
            "accuracy vs obs['{k}']: {acc:.3} over {known} cells whose type the classifier knows"
        ));
    }
    for (k, c) in ann.obs {
        adata.set_obs(&k, c);
    }
    for (k, m) in ann.obsm {
        adata.set_obsm(&k, m);
    }
    adata.uns.extend(ann.uns);
    super::write_h5ad_out(&a.out, a.force, &adata)?;
    println!("{uns}");
    bars.println(format!(
        "classified {} cells; wrote {}",
        adata.n_obs(),
        a.out.display()
    ));
    Ok(())
}

/// Maps `obs[labels_key]` onto the classifier's categories (unknown types → `None`).
pub fn run_shift(a: ShiftArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    let outputs = ["results.json", "table.md", "genes.tsv"].map(|f| a.out.join(f));
    let mut inputs = vec![a.data.data.as_path()];
    inputs.extend(a.classifier.as_deref());
    for p in &outputs {
        super::check_out(p, a.force, &inputs)?;
    }
    if a.lambdas.is_empty() || a.lambdas.iter().any(|l| !l.is_finite()) {
        bail!("--lambda: expected finite numbers, got {:?}", a.lambdas);
    }
    let latent_cfg = a.train.latent(LatentModelKind::DiffVae, a.latent, a.seed)?;
    let clf_cfg = a.classifier_flags.config(a.seed)?;
    let device = device(dev)?;
    let mut bars = Bars::new(quiet);
    let start = Instant::now();
    let adata = read_labelled(&a.data, &a.labels_key)?;
    let (clf, x) = match &a.classifier {
        Some(dir) => (Classifier::load(dir, &device)?, None),
        None => {
            let (clf, x) = fit_classifier(
                &adata,
                &a.data,
                &a.labels_key,
                a.train.n_top_genes,
                &clf_cfg,
                &device,
            )?;
            for m in &clf.preprocess.messages {
                bars.println(format!("preprocess: {m}"));
            }
            (clf, Some(x))
        }
    };
    bars.println(report_line(&clf));
    let opts = ShiftOptions {
        source: a.source.clone(),
        targets: a.target.clone(),
        lambdas: a.lambdas.clone(),
        n_dimensions: a.n_dimensions,
        controls: !a.no_controls,
        seed: a.seed,
        ..ShiftOptions::default()
    };
    let (res, unknown) = shift::shift_cells(
        &adata,
        &a.labels_key,
        &clf,
        x,
        &latent_cfg,
        &opts,
        &device,
        &mut bars,
    )
    .with_context(|| match &a.classifier {
        Some(dir) => format!(
            "shifting {} cells of {} (classifier {})",
            a.source,
            a.data.data.display(),
            dir.display()
        ),
        None => format!("shifting {} cells", a.source),
    })?;
    if unknown > 0 {
        bars.println(format!(
            "{unknown} cells have an obs['{}'] type the classifier does not know; they only \
             enter the latent statistics",
            a.labels_key
        ));
    }
    let md = format!("{}\n\n{}", report_line(&clf), res.markdown());
    let mut doc = serde_json::to_value(&res)?;
    if let Some(o) = doc.as_object_mut() {
        o.insert("data".into(), a.data.data.display().to_string().into());
        o.insert("labels_key".into(), a.labels_key.clone().into());
        o.insert("latent_model".into(), serde_json::to_value(&latent_cfg)?);
        o.insert(
            "classifier".into(),
            json!({
                "dir": a.classifier.as_ref().map(|d| d.display().to_string()),
                "report": clf.config.report,
                "train": clf.config.train,
            }),
        );
        o.insert("seconds".into(), start.elapsed().as_secs_f64().into());
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut written = Written::default();
    write_atomic(&outputs[1], a.force, &md)?;
    written.push(&outputs[1]);
    write_atomic(&outputs[2], a.force, &res.genes_tsv())?;
    written.push(&outputs[2]);
    write_atomic(&outputs[0], a.force, &serde_json::to_string_pretty(&doc)?)?;
    written.keep();
    print!("{md}");
    bars.println(format!(
        "wrote {} in {:.1}s",
        a.out.display(),
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}
