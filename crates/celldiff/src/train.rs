//! Hand-written training loops (Burn `examples/custom-training-loop` style): the VAE with KL
//! warm-up and early stopping on a validation split, then the latent denoiser with EMA.
//!
//! Two-stage training as in scVAEDer (Sadria & Layton 2025, Methods): the VAE is trained
//! first; the diffusion model is trained on the VAE's posterior means μ, standardised per
//! latent dimension ([`LatentStats`]) — the paper's "batch normalisation on the latent layer",
//! done here as a fixed, stored, invertible map (the published code instead used the layer
//! before μ, one global scalar, and never undid it before decoding).

use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::anndata::{DenseMatrix, Matrix};
use crate::error::{Error, Result};
use crate::models::denoiser::timestep_embedding;
use crate::models::vae::{vae_count_loss_terms, vae_loss_terms};
use crate::models::{
    Autoencoder, AutoencoderConfig, CondDenoiser, CondDenoiserConfig, Denoiser, DenoiserConfig,
    Ema, Likelihood, Scorer, ScorerConfig, Vae, VaeConfig,
};
use crate::schedulers::NoiseSchedule;

/// One line of `metrics.jsonl`: the losses of one epoch of one stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    /// `"vae"` or `"diffusion"`.
    pub stage: String,
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's minibatches.
    pub train_loss: f64,
    /// Validation loss (VAE: recon + β·KL at the epoch's KL weight with μ-decoding noise
    /// drawn from a fixed seed; diffusion: L_simple at fixed seeded (t, ε) draws, EMA weights).
    pub val_loss: Option<f64>,
    /// VAE: mean reconstruction term (squared error summed over genes).
    pub recon: Option<f64>,
    /// VAE: mean KL term.
    pub kl: Option<f64>,
    /// VAE: KL weight used this epoch (β times the warm-up factor).
    pub kl_weight: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub learning_rate: f64,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
    /// `true` on the epoch whose weights the run kept (the best validation loss under early
    /// stopping: VAE weights, or the denoiser's EMA weights); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<bool>,
}

/// Receives progress from the training loops (the CLI draws progress bars with it).
pub trait Observer {
    /// A stage (`"vae"`, `"diffusion"`) starts with at most `epochs` epochs.
    fn stage_start(&mut self, _stage: &str, _epochs: usize) {}
    /// An epoch ended.
    fn epoch_end(&mut self, _record: &EpochRecord) {}
    /// The stage ended (possibly early); `reason` says why.
    fn stage_end(&mut self, _stage: &str, _reason: &str) {}
    /// An informational line (e.g. what preprocessing detected), sent when it happens so the
    /// user reads the messages in the order of the work.
    fn message(&mut self, _msg: &str) {}
    /// A step without epochs starts (e.g. `"count observation model"`); it lasts until the next
    /// stage or step starts, or the work ends. The CLI shows a spinner.
    fn step_start(&mut self, _what: &str) {}
}

/// An [`Observer`] that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Training parameters of the VAE.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaeTrainConfig {
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Minibatch size (cells).
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// β, the weight of the KL term after warm-up. Default 0.1: with the unit-variance
    /// Gaussian likelihood on log1p data (per-gene variances ≪ 1) β = 1 collapses the posterior
    /// (Kang: KL ≈ 5 nats over 50 dimensions, posterior σ ≈ 1), so decoded posterior means are
    /// over-averaged and the diffusion prior lost to the VAE prior; β = 0.1 fixed that
    /// (docs/RESULTS.md). scGen uses a small KL weight with MSE for the same reason.
    pub kl_weight: f64,
    /// Epochs over which the KL weight rises linearly from 0 to β (0 = no warm-up).
    pub kl_warmup_epochs: usize,
    /// Fraction of cells held out for early stopping (0 disables it).
    pub validation_fraction: f64,
    /// Stop after this many epochs without a better validation loss (after warm-up).
    pub patience: usize,
    /// At most this many validation cells (the rest of the fraction trains): bounds the
    /// memory of the validation batch on atlases (10,000 × 2,000 genes is 80 MB).
    #[serde(default = "default_max_validation")]
    pub max_validation_cells: usize,
    /// How the training cells are ordered each epoch ([`Shuffle::Full`] in memory;
    /// `train --stream` uses [`Shuffle::Blocks`]).
    #[serde(default)]
    pub shuffle: Shuffle,
    /// Seed for the split, shuffling, dropout and reparameterisation noise.
    pub seed: u64,
}

/// The error of a training loop whose loss became NaN or infinite: bad input to the run (a
/// learning rate too high for the data, or extreme input values), so [`Error::InvalidInput`]
/// (the CLI exits 2), naming the stage, the epoch (1-based) and the advice. `flag` is the CLI
/// flag of the learning rate (empty when there is none).
fn non_finite_loss(stage: &str, epoch: usize, learning_rate: f64, flag: &str) -> Error {
    let flag = if flag.is_empty() {
        String::new()
    } else {
        format!(" with {flag}")
    };
    Error::InvalidInput(format!(
        "{stage} loss became non-finite (NaN or infinite) at epoch {epoch} with learning rate \
         {learning_rate:e}: lower the learning rate{flag} (e.g. 10 times), and check the input \
         for extreme values (counts read as log data: see --log1p / --no-log1p)"
    ))
}

impl VaeTrainConfig {
    /// Checks every field's range: `batch_size ≥ 1`, `learning_rate` finite and > 0,
    /// `kl_weight` finite and ≥ 0, `validation_fraction` in [0, 1), `max_validation_cells ≥ 1`
    /// and shuffle blocks of at least one cell.
    ///
    /// # Errors
    /// [`Error::Param`] naming the field and the value.
    pub fn validate(&self) -> Result<()> {
        check_count("batch_size", self.batch_size)?;
        check_positive("learning_rate", self.learning_rate)?;
        check_range("kl_weight", self.kl_weight, 0.0, f64::INFINITY)?;
        check_range("validation_fraction", self.validation_fraction, 0.0, 1.0)?;
        check_count("max_validation_cells", self.max_validation_cells)?;
        if let Shuffle::Blocks {
            block_cells,
            buffer_blocks,
        } = self.shuffle
        {
            check_count("shuffle.block_cells", block_cells)?;
            check_count("shuffle.buffer_blocks", buffer_blocks)?;
        }
        Ok(())
    }
}

impl DiffusionTrainConfig {
    /// Checks every field's range: `batch_size ≥ 1`, `learning_rate` finite and > 0,
    /// `ema_decay` and `validation_fraction` in [0, 1).
    ///
    /// # Errors
    /// [`Error::Param`] naming the field and the value.
    pub fn validate(&self) -> Result<()> {
        check_count("batch_size", self.batch_size)?;
        check_positive("learning_rate", self.learning_rate)?;
        check_range("ema_decay", self.ema_decay, 0.0, 1.0)?;
        check_range("validation_fraction", self.validation_fraction, 0.0, 1.0)?;
        Ok(())
    }
}

/// Checks that the VAE described by `model` is buildable: dropout in [0, 1), every width and
/// the latent ≥ 1, and at most [`MAX_WEIGHTS`] weights (a `--hidden` of 10⁸ would otherwise
/// abort on allocation).
///
/// # Errors
/// [`Error::Param`] naming the field and the value.
pub fn check_vae_config(model: &VaeConfig) -> Result<()> {
    check_range("dropout", model.dropout, 0.0, 1.0)?;
    check_count("n_latent", model.n_latent)?;
    check_count("n_genes", model.n_genes)?;
    if model.hidden.is_empty() || model.hidden.contains(&0) {
        return Err(Error::Param(format!(
            "hidden widths must be ≥ 1, got {:?}",
            model.hidden
        )));
    }
    let mut widths = vec![model.n_genes];
    widths.extend(&model.hidden);
    widths.push(model.n_latent);
    // Encoder and mirrored decoder: about twice the weights of the encoder's layers.
    let weights = widths
        .windows(2)
        .map(|w| (w[0] as u128) * (w[1] as u128))
        .sum::<u128>()
        * 2;
    if weights > MAX_WEIGHTS as u128 {
        return Err(Error::Param(format!(
            "a VAE with {} genes and hidden widths {:?} has {weights} weights, more than the \
             {MAX_WEIGHTS} celldiff allows (about {} GB with the optimiser's state): use \
             smaller --hidden widths or fewer genes (--n-top-genes)",
            model.n_genes,
            model.hidden,
            MAX_WEIGHTS as u64 * 16 / 1_000_000_000
        )));
    }
    Ok(())
}

/// Most weights a VAE may have (f32 weights plus Adam's two moments and the gradient: 16 bytes
/// each, 8 GB).
pub const MAX_WEIGHTS: usize = 500_000_000;

fn check_count(field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::Param(format!("{field} must be ≥ 1, got 0")));
    }
    Ok(())
}

fn check_positive(field: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::Param(format!(
            "{field} must be a finite number > 0, got {v}"
        )));
    }
    Ok(())
}

/// `v` finite and in `[lo, hi)`.
fn check_range(field: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    if !(v.is_finite() && v >= lo && v < hi) {
        return Err(Error::Param(format!(
            "{field} must be a finite number in [{lo}, {hi}), got {v}"
        )));
    }
    Ok(())
}

/// Cap on the validation cells/latents of every training loop (see
/// [`VaeTrainConfig::max_validation_cells`]).
pub const MAX_VALIDATION: usize = 10_000;

fn default_max_validation() -> usize {
    MAX_VALIDATION
}

/// The order in which an epoch visits the training cells.
///
/// [`Shuffle::Blocks`] is the chunk-then-buffer shuffling of out-of-core loaders
/// (scvi-tools' / AnnLoader's chunked samplers, WebDataset shuffle buffers): cells are grouped
/// into blocks of `block_cells` consecutive cells (rows of the file), the blocks are visited in
/// a random order `buffer_blocks` at a time, and the cells of each such buffer are shuffled
/// together. A reader then touches each block once per epoch and holds at most one buffer.
/// When every block fits in one buffer the order is exactly [`Shuffle::Full`]'s, so data that
/// fit in memory give the same model streamed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shuffle {
    /// A fresh random permutation of all training cells each epoch.
    #[default]
    Full,
    /// Blocks of consecutive cells, visited `buffer_blocks` at a time.
    Blocks {
        /// Cells per block (consecutive rows).
        block_cells: usize,
        /// Blocks per shuffle buffer.
        buffer_blocks: usize,
    },
}

/// One epoch's visiting order of the training cells ([`Shuffle`]), with the buffers it was
/// drawn from so that a streaming reader can load them ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochPlan {
    /// Cell indices in visiting order (a permutation of the training cells).
    pub order: Vec<usize>,
    /// Consecutive runs of `order`, each drawn from the blocks it names (ascending); empty for
    /// [`Shuffle::Full`].
    pub groups: Vec<PlanGroup>,
}

/// A run of [`EpochPlan::order`] and the blocks its cells lie in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanGroup {
    /// Block indices (cell `i` is in block `i / block_cells`), ascending.
    pub blocks: Vec<usize>,
    /// Number of cells of the run.
    pub len: usize,
}

/// Draws the next epoch's order of `train` (cell indices) from `rng`. `Full`, and `Blocks`
/// when all blocks fit in one buffer, shuffle `train` in place and return it (the in-memory
/// loop's draw); otherwise the blocks are shuffled, then the cells within each buffer.
pub fn plan_epoch(train: &mut [usize], shuffle: Shuffle, rng: &mut StdRng) -> EpochPlan {
    let (block, buffer) = match shuffle {
        Shuffle::Full => {
            train.shuffle(rng);
            return EpochPlan {
                order: train.to_vec(),
                groups: Vec::new(),
            };
        }
        Shuffle::Blocks {
            block_cells,
            buffer_blocks,
        } => (block_cells.max(1), buffer_blocks.max(1)),
    };
    let mut sorted = train.to_vec();
    sorted.sort_unstable();
    // (block id, range in `sorted`) of every block holding training cells.
    let mut blocks: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    let mut lo = 0;
    while lo < sorted.len() {
        let b = sorted[lo] / block;
        let hi = lo + sorted[lo..].partition_point(|&c| c / block == b);
        blocks.push((b, lo..hi));
        lo = hi;
    }
    if blocks.len() <= buffer {
        train.shuffle(rng);
        return EpochPlan {
            order: train.to_vec(),
            groups: vec![PlanGroup {
                blocks: blocks.iter().map(|(b, _)| *b).collect(),
                len: train.len(),
            }],
        };
    }
    blocks.shuffle(rng);
    let mut order = Vec::with_capacity(sorted.len());
    let mut groups = Vec::new();
    for g in blocks.chunks(buffer) {
        let mut cells: Vec<usize> = g
            .iter()
            .flat_map(|(_, r)| sorted[r.clone()].iter().copied())
            .collect();
        cells.shuffle(rng);
        let mut ids: Vec<usize> = g.iter().map(|(b, _)| *b).collect();
        ids.sort_unstable();
        groups.push(PlanGroup {
            blocks: ids,
            len: cells.len(),
        });
        order.extend(cells);
    }
    EpochPlan { order, groups }
}

/// Where the training loops get preprocessed cells from: the in-memory matrix
/// ([`InMemoryCells`]) or an `.h5ad` file read block by block ([`crate::scvaeder::stream::StreamedCells`]).
/// Both return the same `f32` values for the same cells, so training is identical.
pub trait TrainCells {
    /// Number of cells.
    fn n_cells(&self) -> usize;
    /// Number of genes (model input width).
    fn n_genes(&self) -> usize;
    /// Rows `idx` (any order) as `[idx.len(), n_genes]`, in the preprocessed units.
    ///
    /// # Errors
    /// Reading or preprocessing the source failed.
    fn rows(&mut self, idx: &[usize]) -> Result<DenseMatrix>;
    /// An epoch with this plan starts; its minibatches are then asked for in plan order with
    /// [`TrainCells::next_batch`].
    ///
    /// # Errors
    /// Starting the reader failed.
    fn start_epoch(&mut self, _plan: &EpochPlan) -> Result<()> {
        Ok(())
    }
    /// The next `idx.len()` cells of the plan (`idx` are their indices), `[idx.len(), n_genes]`.
    ///
    /// # Errors
    /// Reading the source failed, or `idx` is not the plan's next run.
    fn next_batch(&mut self, idx: &[usize]) -> Result<DenseMatrix> {
        self.rows(idx)
    }
    /// The epoch ended (possibly before its last cells were asked for).
    ///
    /// # Errors
    /// The background reader failed.
    fn end_epoch(&mut self) -> Result<()> {
        Ok(())
    }
}

/// [`TrainCells`] over a preprocessed matrix in memory (`[n_cells, n_genes]`).
pub struct InMemoryCells<'a>(pub &'a Matrix);

impl TrainCells for InMemoryCells<'_> {
    fn n_cells(&self) -> usize {
        self.0.n_rows()
    }
    fn n_genes(&self) -> usize {
        self.0.n_cols()
    }
    fn rows(&mut self, idx: &[usize]) -> Result<DenseMatrix> {
        Ok(self.0.rows_dense(idx))
    }
}

impl Default for VaeTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 200,
            batch_size: 128,
            learning_rate: 1e-3,
            kl_weight: 0.1,
            kl_warmup_epochs: 10,
            validation_fraction: 0.1,
            patience: 15,
            max_validation_cells: MAX_VALIDATION,
            shuffle: Shuffle::Full,
            seed: 0,
        }
    }
}

/// Training parameters of the latent denoiser.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffusionTrainConfig {
    /// Number of epochs (passes over the training latents).
    pub epochs: usize,
    /// Minibatch size.
    pub batch_size: usize,
    /// Peak Adam learning rate (cosine decay to 10 % of it over training).
    pub learning_rate: f64,
    /// EMA decay (scVAEDer / diffusers: 0.999).
    pub ema_decay: f64,
    /// Fraction of latents held out to report a validation loss.
    pub validation_fraction: f64,
    /// Seed for the split, shuffling, timesteps and noise.
    pub seed: u64,
    /// Early stopping on the EMA weights' validation loss: the noise-prediction loss of the
    /// held-out latents at fixed timesteps and noise draws ([`DIFFUSION_VAL_DRAWS`] per
    /// latent, drawn once, so epochs are comparable). Training stops after this many epochs
    /// without a lower loss and the best EMA weights are kept. `Some(0)` trains every epoch
    /// and keeps the last EMA weights; `None` (default) = `max(20, epochs / 5)`.
    #[serde(default)]
    pub patience: Option<usize>,
    /// What the network learns to predict (`--prior diffusion|flow`); `epsilon` for runs
    /// written before it existed.
    #[serde(default)]
    pub objective: Objective,
}

/// The latent prior's training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// DDPM noise prediction, L_simple = ‖ε − ε_θ(√ᾱ_t z₀ + √(1−ᾱ_t) ε, t)‖² (Ho et al. 2020,
    /// Eq. 14).
    #[default]
    Epsilon,
    /// Conditional flow matching with the linear path x_k = (1 − s_k) z₀ + s_k ε,
    /// s_k = (k + 1)/T, target v = ε − z₀ (Lipman et al. 2023, Eq. 23 with σ_min = 0;
    /// [`crate::schedulers::flow`]).
    Velocity,
}

/// Noise draws per held-out latent in the denoiser's validation loss.
pub const DIFFUSION_VAL_DRAWS: usize = 4;

impl Default for DiffusionTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 1000,
            batch_size: 256,
            learning_rate: 1e-3,
            ema_decay: 0.999,
            validation_fraction: 0.1,
            seed: 0,
            patience: None,
            objective: Objective::Epsilon,
        }
    }
}

/// Per-dimension standardisation of the latent: `z_std = (μ − mean) / std`, and the range of
/// the standardised training latents (used to clip x̂₀ while sampling).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatentStats {
    /// Mean of μ per dimension, `[n_latent]`.
    pub mean: Vec<f32>,
    /// Standard deviation (ddof = 0, floored at 1e-6) of μ per dimension, `[n_latent]`.
    pub std: Vec<f32>,
    /// Minimum of the standardised latents per dimension, `[n_latent]`.
    pub min: Vec<f32>,
    /// Maximum of the standardised latents per dimension, `[n_latent]`.
    pub max: Vec<f32>,
}

impl LatentStats {
    /// Fits the statistics on μ `[n_cells, n_latent]`.
    pub fn fit(mu: &DenseMatrix) -> Self {
        let (n, d) = (mu.n_rows, mu.n_cols);
        let mut mean = vec![0f64; d];
        let mut sq = vec![0f64; d];
        for i in 0..n {
            for (j, &v) in mu.row(i).iter().enumerate() {
                mean[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
            }
        }
        let nf = n.max(1) as f64;
        let mean: Vec<f64> = mean.iter().map(|m| m / nf).collect();
        let std: Vec<f64> = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| (s / nf - m * m).max(0.0).sqrt().max(1e-6))
            .collect();
        let mut min = vec![f32::INFINITY; d];
        let mut max = vec![f32::NEG_INFINITY; d];
        for i in 0..n {
            for (j, &v) in mu.row(i).iter().enumerate() {
                let z = ((v as f64 - mean[j]) / std[j]) as f32;
                min[j] = min[j].min(z);
                max[j] = max[j].max(z);
            }
        }
        Self {
            mean: mean.iter().map(|&v| v as f32).collect(),
            std: std.iter().map(|&v| v as f32).collect(),
            min,
            max,
        }
    }

    /// `(μ − mean) / std`, `[n, n_latent]` → `[n, n_latent]`.
    pub fn standardize(&self, mu: &DenseMatrix) -> DenseMatrix {
        let mut out = mu.clone();
        for i in 0..out.n_rows {
            for (j, v) in out.row_mut(i).iter_mut().enumerate() {
                *v = (*v - self.mean[j]) / self.std[j];
            }
        }
        out
    }

    /// Checks statistics loaded from `path` (`latent.json`) against the model's latent
    /// dimension: four vectors of `n_latent` finite values, every `std` > 0 and `min ≤ max`.
    ///
    /// # Errors
    /// [`Error::Format`] naming `path` and the field (`std[3]`, `mean`, ...).
    pub fn check(&self, path: &std::path::Path, n_latent: usize) -> Result<()> {
        use crate::run::{check_all_finite, check_len};
        for (name, v) in [
            ("mean", &self.mean),
            ("std", &self.std),
            ("min", &self.min),
            ("max", &self.max),
        ] {
            check_len(
                path,
                name,
                v.len(),
                n_latent,
                "n_latent of the model in config.json",
            )?;
            check_all_finite(path, name, v)?;
        }
        if let Some(j) = self.std.iter().position(|&s| s <= 0.0) {
            return Err(Error::format(
                path,
                format!("std[{j}]"),
                format!(
                    "{}, expected > 0 (a standard deviation; training stores at least 1e-6)",
                    self.std[j]
                ),
            ));
        }
        if let Some(j) = (0..n_latent).find(|&j| self.min[j] > self.max[j]) {
            return Err(Error::format(
                path,
                format!("min[{j}]"),
                format!("{} is above max[{j}] = {}", self.min[j], self.max[j]),
            ));
        }
        Ok(())
    }

    /// `z · std + mean` (the inverse of [`LatentStats::standardize`]) on a tensor.
    ///
    /// # Shapes
    /// `[n, n_latent]` → `[n, n_latent]`
    pub fn unstandardize(&self, z: Tensor<2>) -> Tensor<2> {
        let device = z.device();
        let d = self.mean.len();
        let std = Tensor::<2>::from_data(TensorData::new(self.std.clone(), [1, d]), &device);
        let mean = Tensor::<2>::from_data(TensorData::new(self.mean.clone(), [1, d]), &device);
        z.mul(std).add(mean)
    }
}

/// Moves a host matrix to `device` as a `[n_rows, n_cols]` tensor.
pub fn to_tensor(m: &DenseMatrix, device: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(m.data.clone(), [m.n_rows, m.n_cols]),
        device,
    )
}

/// Reads a `[n, d]` tensor back to the host.
///
/// # Errors
/// [`Error::Internal`] if the backend cannot read the data.
pub fn to_host(t: Tensor<2>) -> Result<DenseMatrix> {
    let [n, d] = t.dims();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Internal(format!("reading tensor: {e:?}")))?;
    DenseMatrix::from_vec(n, d, data)
}

fn split(n: usize, fraction: f64, max_val: usize, rng: &mut StdRng) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let n_val = if fraction > 0.0 && n >= 20 {
        (((n as f64) * fraction).round() as usize).min(max_val)
    } else {
        0
    };
    let val = idx[..n_val].to_vec();
    let train = idx[n_val..].to_vec();
    (train, val)
}

pub(crate) fn normal_matrix(rng: &mut StdRng, n: usize, d: usize) -> DenseMatrix {
    let data = (0..n * d)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    DenseMatrix {
        n_rows: n,
        n_cols: d,
        data,
    }
}

fn batches(idx: &[usize], batch_size: usize) -> impl Iterator<Item = &[usize]> {
    // A final minibatch of one cell is dropped: BatchNorm needs ≥ 2 cells.
    idx.chunks(batch_size.max(2)).filter(|b| b.len() >= 2)
}

/// Trains the VAE on `x` (`[n_cells, n_genes]`, the preprocessed expression, e.g.
/// log1p-normalised HVGs) and returns the model with the best validation loss (the last one if
/// there is no validation split) and the per-epoch records.
///
/// The KL weight rises linearly from 0 to `kl_weight` over `kl_warmup_epochs` (Bowman et al.
/// 2016); early stopping only starts after the warm-up.
///
/// # Errors
/// [`Error::InvalidInput`] if `x` has fewer than 2 cells or its width differs from
/// `model.n_genes`; [`Error::InvalidInput`] also if the loss becomes non-finite.
/// [`Error::Param`] for an invalid training configuration (see `validate`).
pub fn train_vae(
    x: &Matrix,
    model: &VaeConfig,
    cfg: &VaeTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(Vae, Vec<EpochRecord>)> {
    train_vae_cells(&mut InMemoryCells(x), model, cfg, device, observer)
}

/// [`train_vae`] on any [`TrainCells`] source (in memory or streamed from disk): the same
/// loop, the same random draws, so the same seed gives the same model for the same cells.
///
/// # Errors
/// As [`train_vae`], and whatever reading the source fails with.
pub fn train_vae_cells(
    x: &mut dyn TrainCells,
    model: &VaeConfig,
    cfg: &VaeTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(Vae, Vec<EpochRecord>)> {
    cfg.validate()?;
    check_vae_config(model)?;
    let (n, g) = (x.n_cells(), x.n_genes());
    if n < 2 {
        return Err(Error::InvalidInput(format!(
            "need at least 2 cells to train, got {n}"
        )));
    }
    if g != model.n_genes {
        return Err(Error::InvalidInput(format!(
            "X has {g} genes, the VAE expects {}",
            model.n_genes
        )));
    }
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    device.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (mut train, val) = split(
        n,
        cfg.validation_fraction,
        cfg.max_validation_cells,
        &mut rng,
    );
    let mut vae = model.init(&ad);
    let mut optim = crate::optim::adam(1e-8);
    let mut stopper = EarlyStopping::new(cfg.patience);
    let mut records = Vec::new();
    observer.stage_start("vae", cfg.epochs);
    let (val_x, val_counts) = if val.is_empty() {
        (None, None)
    } else {
        let host = x.rows(&val)?;
        (
            Some(to_tensor(&host, device)),
            count_batch(&host, model.likelihood, device),
        )
    };
    let val_eps = (!val.is_empty()).then(|| {
        let mut r = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
        to_tensor(&normal_matrix(&mut r, val.len(), model.n_latent), device)
    });
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        let warm = if cfg.kl_warmup_epochs == 0 {
            1.0
        } else {
            (epoch as f64 / cfg.kl_warmup_epochs as f64).min(1.0)
        };
        let beta = cfg.kl_weight * warm;
        let plan = plan_epoch(&mut train, cfg.shuffle, &mut rng);
        x.start_epoch(&plan)?;
        let (mut sum, mut sum_r, mut sum_k, mut nb) = (0f64, 0f64, 0f64, 0usize);
        for b in batches(&plan.order, cfg.batch_size) {
            let host = x.next_batch(b)?;
            let counts = count_batch(&host, model.likelihood, &ad);
            let xb = to_tensor(&host, &ad);
            let eps = to_tensor(&normal_matrix(&mut rng, b.len(), model.n_latent), &ad);
            let out = vae.forward(xb.clone(), eps);
            let (recon, kl) = match counts {
                Some((c, l)) => vae_count_loss_terms(&vae, c, l, &out),
                None => vae_loss_terms(xb, &out),
            };
            let loss = recon.clone().add(kl.clone().mul_scalar(beta));
            let grads = GradientsParams::from_grads(loss.backward(), &vae);
            vae = optim.step(cfg.learning_rate, vae, grads);
            let (r, k): (f32, f32) = (recon.into_scalar(), kl.into_scalar());
            sum_r += r as f64;
            sum_k += k as f64;
            sum += r as f64 + beta * k as f64;
            nb += 1;
        }
        x.end_epoch()?;
        let nbf = nb.max(1) as f64;
        if !sum.is_finite() {
            return Err(non_finite_loss("VAE", epoch, cfg.learning_rate, "--lr-vae"));
        }
        let val_loss = match (&val_x, &val_eps) {
            (Some(vx), Some(ve)) => {
                let m = vae.valid();
                let out = m.forward(vx.clone(), ve.clone());
                let (r, k) = match &val_counts {
                    Some((c, l)) => vae_count_loss_terms(&m, c.clone(), l.clone(), &out),
                    None => vae_loss_terms(vx.clone(), &out),
                };
                Some(r.into_scalar::<f32>() as f64 + beta * k.into_scalar::<f32>() as f64)
            }
            _ => None,
        };
        let rec = EpochRecord {
            stage: "vae".into(),
            epoch,
            train_loss: sum / nbf,
            val_loss,
            recon: Some(sum_r / nbf),
            kl: Some(sum_k / nbf),
            kl_weight: Some(beta),
            learning_rate: cfg.learning_rate,
            seconds: start.elapsed().as_secs_f64(),
            kept: None,
        };
        observer.epoch_end(&rec);
        records.push(rec);
        // Before the end of the warm-up the objective changes every epoch: keep the latest.
        if let Some(v) = val_loss
            && stopper.stop(epoch, v, epoch <= cfg.kl_warmup_epochs, || vae.clone())
        {
            break;
        }
    }
    observer.stage_end("vae", &stopper.reason);
    if stopper.best.is_some()
        && let Some(r) = records.iter_mut().find(|r| r.epoch == stopper.best_epoch)
    {
        r.kept = Some(true);
    }
    let model = stopper.best.map(|(_, m)| m).unwrap_or(vae);
    Ok((model.valid(), records))
}

/// For a count-likelihood decoder, the counts of a batch of log1p-normalised cells and ln of their
/// library sizes (at least 1), recovered from each cell's lattice ([`crate::counts`]);
/// `None` for a Gaussian VAE.
///
/// # Shapes
/// `host`: `[batch, n_genes]` → `([batch, n_genes], [batch, 1])`
fn count_batch(
    host: &DenseMatrix,
    likelihood: Likelihood,
    device: &Device,
) -> Option<(Tensor<2>, Tensor<2>)> {
    if !likelihood.is_count() {
        return None;
    }
    let rows = crate::counts::recover_counts(host);
    let log_l: Vec<f32> = rows
        .library
        .iter()
        .map(|&l| l.max(1.0).ln() as f32)
        .collect();
    let n = log_l.len();
    Some((
        to_tensor(&rows.counts, device),
        Tensor::from_data(TensorData::new(log_l, [n, 1]), device),
    ))
}

/// Early stopping on the validation loss (as scvi-tools' `early_stopping`): keeps the model of
/// the best epoch and stops after `patience` epochs without a lower validation loss.
struct EarlyStopping<M> {
    /// Validation loss and model of the best epoch so far.
    best: Option<(f64, M)>,
    /// The epoch of `best`.
    best_epoch: usize,
    since_best: usize,
    patience: usize,
    /// Why training ended, for [`Observer::stage_end`].
    reason: String,
}

impl<M> EarlyStopping<M> {
    fn new(patience: usize) -> Self {
        Self {
            best: None,
            best_epoch: 0,
            since_best: 0,
            patience,
            reason: "reached the maximum number of epochs".into(),
        }
    }

    /// Records epoch `epoch`'s validation loss `v`; `model` is called only when this epoch
    /// becomes the best one (always when `keep_latest`, e.g. during a KL warm-up whose
    /// objective changes every epoch). Returns `true` when training should stop.
    fn stop(&mut self, epoch: usize, v: f64, keep_latest: bool, model: impl FnOnce() -> M) -> bool {
        if keep_latest || self.best.as_ref().is_none_or(|(b, _)| v < *b) {
            self.best = Some((v, model()));
            self.best_epoch = epoch;
            self.since_best = 0;
            return false;
        }
        self.since_best += 1;
        if self.since_best < self.patience {
            return false;
        }
        self.reason = format!(
            "early stop at epoch {epoch}: no better validation loss in {} epochs",
            self.patience
        );
        true
    }
}

/// Posterior means μ of all rows of `x` (`[n_cells, n_genes]` → `[n_cells, n_latent]`),
/// computed in evaluation mode (BatchNorm running statistics, no dropout) in chunks of 1024.
///
/// # Errors
/// [`Error::Internal`] if the backend fails to return data.
pub fn encode_mean(vae: &Vae, x: &Matrix, device: &Device) -> Result<DenseMatrix> {
    encode_mean_cells(vae, &mut InMemoryCells(x), device)
}

/// [`encode_mean`] of every cell of a [`TrainCells`] source, read in order in chunks of 1024
/// (`[n_cells, n_latent]`).
///
/// # Errors
/// Reading the source failed; [`Error::Internal`] if the backend fails to return data.
pub fn encode_mean_cells(
    vae: &Vae,
    x: &mut dyn TrainCells,
    device: &Device,
) -> Result<DenseMatrix> {
    let vae = vae.valid();
    map_row_chunks(x.n_cells(), 1024, "encode", |idx| {
        to_host(vae.encode(to_tensor(&x.rows(idx)?, device)).0)
    })
}

/// Applies `f` to the rows `0..n` in chunks of `chunk` (row indices in order) and stacks the
/// `[chunk_len, d]` results into `[n, d]`: the batched inference loop of the encoders and
/// classifiers, which bounds host and device memory for any number of cells.
///
/// # Errors
/// [`Error::InvalidInput`] for `n = 0` (nothing to `what`); whatever `f` returns.
pub(crate) fn map_row_chunks(
    n: usize,
    chunk: usize,
    what: &str,
    mut f: impl FnMut(&[usize]) -> Result<DenseMatrix>,
) -> Result<DenseMatrix> {
    let mut out: Option<DenseMatrix> = None;
    for start in (0..n).step_by(chunk.max(1)) {
        let idx: Vec<usize> = (start..(start + chunk.max(1)).min(n)).collect();
        let part = f(&idx)?;
        match &mut out {
            None => out = Some(part),
            Some(o) => {
                o.data.extend_from_slice(&part.data);
                o.n_rows += part.n_rows;
            }
        }
    }
    out.ok_or_else(|| Error::InvalidInput(format!("no cells to {what}")))
}

/// Decodes latents (`[n, n_latent]`, unstandardised) to expression `[n, n_genes]` in chunks.
///
/// # Errors
/// [`Error::Internal`] if the backend fails to return data.
pub fn decode(vae: &Vae, z: Tensor<2>) -> Result<DenseMatrix> {
    let vae = vae.valid();
    let [n, _] = z.dims();
    let mut parts = Vec::new();
    for start in (0..n).step_by(4096) {
        let end = (start + 4096).min(n);
        parts.push(vae.decode(z.clone().narrow(0, start, end - start)));
    }
    to_host(Tensor::cat(parts, 0))
}

/// Forward-process tables shared by the denoiser training loops: timestep embeddings for all
/// T timesteps and the path's coefficients, z_t = a_t z₀ + b_t ε: √ᾱ_t and √(1 − ᾱ_t) for
/// [`Objective::Epsilon`] (target ε), 1 − s_t and s_t = (t+1)/T for [`Objective::Velocity`]
/// (target ε − z₀).
pub(crate) struct Noising {
    emb_table: Vec<f32>,
    time_dim: usize,
    sqrt_ab: Vec<f32>,
    sqrt_1m: Vec<f32>,
    velocity: bool,
}

impl Noising {
    pub(crate) fn new(schedule: &NoiseSchedule, time_dim: usize, objective: Objective) -> Self {
        let big_t = schedule.len();
        if objective == Objective::Velocity {
            let s: Vec<f32> = (0..big_t)
                .map(|k| ((k + 1) as f64 / big_t as f64) as f32)
                .collect();
            return Self {
                emb_table: timestep_embedding(&(0..big_t).collect::<Vec<_>>(), time_dim),
                time_dim,
                sqrt_ab: s.iter().map(|v| 1.0 - v).collect(),
                sqrt_1m: s,
                velocity: true,
            };
        }
        Self {
            emb_table: timestep_embedding(&(0..big_t).collect::<Vec<_>>(), time_dim),
            time_dim,
            velocity: false,
            sqrt_ab: schedule
                .alphas_cumprod
                .iter()
                .map(|a| a.sqrt() as f32)
                .collect(),
            sqrt_1m: schedule
                .alphas_cumprod
                .iter()
                .map(|a| (1.0 - a).sqrt() as f32)
                .collect(),
        }
    }

    /// `(z_t, emb(t), target)` for rows `b` of `z0`, t ~ U{0..T−1} and ε ~ N(0, I) drawn
    /// from `r`; the target is ε, or ε − z₀ for the velocity objective.
    pub(crate) fn batch(
        &self,
        z0: &DenseMatrix,
        b: &[usize],
        r: &mut StdRng,
        dev: &Device,
    ) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let d = z0.n_cols;
        let td = self.time_dim;
        let mut zt = Vec::with_capacity(b.len() * d);
        let mut eps = Vec::with_capacity(b.len() * d);
        let mut emb = Vec::with_capacity(b.len() * td);
        for &i in b {
            let t = r.random_range(0..self.sqrt_ab.len());
            emb.extend_from_slice(&self.emb_table[t * td..(t + 1) * td]);
            for &v in z0.row(i) {
                let e: f32 = r.sample(StandardNormal);
                eps.push(if self.velocity { e - v } else { e });
                zt.push(self.sqrt_ab[t] * v + self.sqrt_1m[t] * e);
            }
        }
        let m = b.len();
        (
            Tensor::<2>::from_data(TensorData::new(zt, [m, d]), dev),
            Tensor::<2>::from_data(TensorData::new(emb, [m, td]), dev),
            Tensor::<2>::from_data(TensorData::new(eps, [m, d]), dev),
        )
    }
}

/// Trains the ε-prediction denoiser on standardised latents `z0` (`[n_cells, n_latent]`) with
/// L_simple = ‖ε − ε_θ(√ᾱ_t z₀ + √(1−ᾱ_t) ε, t)‖² (Ho et al. 2020, Eq. 14), t ~ U{0..T−1}.
/// Returns `(denoiser, ema_denoiser, records)`; the EMA weights are the ones to sample with.
///
/// # Errors
/// [`Error::InvalidInput`] for fewer than 2 latents or a width mismatch; [`Error::InvalidInput`] also
/// if the loss becomes non-finite.
/// [`Error::Param`] for an invalid training configuration (see `validate`).
pub fn train_diffusion(
    z0: &DenseMatrix,
    model: &DenoiserConfig,
    schedule: &NoiseSchedule,
    cfg: &DiffusionTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(Denoiser, Denoiser, Vec<EpochRecord>)> {
    cfg.validate()?;
    let (n, d) = (z0.n_rows, z0.n_cols);
    if n < 2 {
        return Err(Error::InvalidInput(format!(
            "need at least 2 latents to train, got {n}"
        )));
    }
    if d != model.n_latent {
        return Err(Error::InvalidInput(format!(
            "latent width {d}, denoiser expects {}",
            model.n_latent
        )));
    }
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (mut train, val) = split(n, cfg.validation_fraction, MAX_VALIDATION, &mut rng);
    let tables = Noising::new(schedule, model.time_dim, cfg.objective);
    let make = |b: &[usize], r: &mut StdRng, dev: &Device| tables.batch(z0, b, r, dev);
    let val_batch = (!val.is_empty()).then(|| {
        let mut r = StdRng::seed_from_u64(cfg.seed ^ 0x7a1);
        let rep: Vec<usize> = (0..DIFFUSION_VAL_DRAWS)
            .flat_map(|_| val.iter().copied())
            .collect();
        make(&rep, &mut r, device)
    });
    let patience = cfg.patience.unwrap_or((cfg.epochs / 5).max(20));
    let mut stopper = EarlyStopping::new(patience);
    let mut net = model.init(&ad);
    let mut ema = Ema::new(&net, cfg.ema_decay);
    let mut optim = crate::optim::adam(1e-8);
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size.max(1)).max(1);
    let total_steps = (steps_per_epoch * cfg.epochs).max(1);
    let mut step = 0usize;
    let mut records = Vec::new();
    observer.stage_start("diffusion", cfg.epochs);
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        train.shuffle(&mut rng);
        let (mut sum, mut nb) = (0f64, 0usize);
        let mut lr = cfg.learning_rate;
        for b in train.chunks(cfg.batch_size.max(1)) {
            let progress = step as f64 / total_steps as f64;
            lr = cfg.learning_rate
                * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            let (zt, emb, eps) = make(b, &mut rng, &ad);
            let pred = net.forward(zt, emb);
            let loss = pred.sub(eps).square().mean();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(lr, net, grads);
            ema.update(&net);
            sum += loss.into_scalar::<f32>() as f64;
            nb += 1;
            step += 1;
        }
        let train_loss = sum / nb.max(1) as f64;
        if !train_loss.is_finite() {
            return Err(non_finite_loss(
                "diffusion",
                epoch,
                cfg.learning_rate,
                "--lr-diffusion",
            ));
        }
        let val_loss = val_batch.as_ref().map(|(zt, emb, eps)| {
            let pred = ema.model().forward(zt.clone(), emb.clone());
            pred.sub(eps.clone()).square().mean().into_scalar::<f32>() as f64
        });
        let rec = EpochRecord {
            stage: "diffusion".into(),
            epoch,
            train_loss,
            val_loss,
            recon: None,
            kl: None,
            kl_weight: None,
            learning_rate: lr,
            seconds: start.elapsed().as_secs_f64(),
            kept: None,
        };
        observer.epoch_end(&rec);
        records.push(rec);
        if patience > 0
            && let Some(v) = val_loss
            && stopper.stop(epoch, v, false, || ema.model().clone())
        {
            break;
        }
    }
    let reason = if patience == 0 || val_batch.is_none() {
        "done (last EMA weights)".to_string()
    } else {
        let best = stopper.best.as_ref().map_or(0.0, |b| b.0);
        format!(
            "{}; kept the EMA weights of the best validation loss ({best:.4})",
            stopper.reason
        )
    };
    observer.stage_end("diffusion", &reason);
    let ema_model = match stopper.best {
        Some((_, m)) if patience > 0 => {
            if let Some(r) = records
                .iter_mut()
                .rev()
                .find(|r| r.epoch == stopper.best_epoch)
            {
                r.kept = Some(true);
            }
            m
        }
        _ => ema.into_model(),
    };
    Ok((net.valid(), ema_model, records))
}

/// Trains the SCLD [`Autoencoder`] (arXiv 2312.14220, Eq. 3–6: MSE reconstruction) on `x`
/// (`[n_cells, n_genes]`, preprocessed expression) with Adam, early stopping on a validation
/// split (`cfg.validation_fraction`, `cfg.patience`); `cfg.kl_weight` and the warm-up are
/// unused. Returns the model with the best validation loss and the per-epoch records
/// (stage `"ae"`).
///
/// # Errors
/// [`Error::InvalidInput`] for fewer than 2 cells or a width mismatch; [`Error::InvalidInput`] also if
/// the loss becomes non-finite.
/// [`Error::Param`] for an invalid training configuration (see `validate`).
pub fn train_autoencoder(
    x: &Matrix,
    model: &AutoencoderConfig,
    cfg: &VaeTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(Autoencoder, Vec<EpochRecord>)> {
    cfg.validate()?;
    let (n, g) = x.shape();
    if n < 2 {
        return Err(Error::InvalidInput(format!(
            "need at least 2 cells to train, got {n}"
        )));
    }
    if g != model.n_genes {
        return Err(Error::InvalidInput(format!(
            "X has {g} genes, the autoencoder expects {}",
            model.n_genes
        )));
    }
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (mut train, val) = split(n, cfg.validation_fraction, MAX_VALIDATION, &mut rng);
    let mut net = model.init(&ad);
    let mut optim = crate::optim::adam(1e-8);
    let val_x = (!val.is_empty()).then(|| {
        let host = x.rows_dense(&val);
        (
            to_tensor(&host, device),
            count_batch(&host, model.likelihood, device),
        )
    });
    // SCLD Eq. 5–6, or the count likelihood's negative log-likelihood.
    let loss_of =
        |net: &Autoencoder, xb: Tensor<2>, counts: Option<(Tensor<2>, Tensor<2>)>| match counts {
            Some((c, l)) => net.count_loss(xb, c, l),
            None => net.loss(xb),
        };
    let mut stopper = EarlyStopping::new(cfg.patience);
    let mut records = Vec::new();
    observer.stage_start("ae", cfg.epochs);
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        train.shuffle(&mut rng);
        let (mut sum, mut nb) = (0f64, 0usize);
        for b in batches(&train, cfg.batch_size) {
            let host = x.rows_dense(b);
            let counts = count_batch(&host, model.likelihood, &ad);
            let loss = loss_of(&net, to_tensor(&host, &ad), counts);
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(cfg.learning_rate, net, grads);
            sum += loss.into_scalar::<f32>() as f64;
            nb += 1;
        }
        let train_loss = sum / nb.max(1) as f64;
        if !train_loss.is_finite() {
            return Err(non_finite_loss(
                "autoencoder",
                epoch,
                cfg.learning_rate,
                "--lr-vae",
            ));
        }
        let val_loss = val_x.as_ref().map(|(vx, vc)| {
            loss_of(&net.valid(), vx.clone(), vc.clone()).into_scalar::<f32>() as f64
        });
        let rec = EpochRecord {
            stage: "ae".into(),
            epoch,
            train_loss,
            val_loss,
            recon: Some(train_loss),
            kl: None,
            kl_weight: None,
            learning_rate: cfg.learning_rate,
            seconds: start.elapsed().as_secs_f64(),
            kept: None,
        };
        observer.epoch_end(&rec);
        records.push(rec);
        if let Some(v) = val_loss
            && stopper.stop(epoch, v, false, || net.clone())
        {
            break;
        }
    }
    observer.stage_end("ae", &stopper.reason);
    let model = stopper.best.map(|(_, m)| m).unwrap_or(net);
    Ok((model.valid(), records))
}

/// Conditions of the SCLD denoiser's training cells (arXiv 2312.14220, Sec. 3.2.1–3.2.2).
#[derive(Debug, Clone)]
pub struct ConditionBatchSource<'a> {
    /// Condition vectors `[K + 1, n_cond]`: clusters 0..K, then the holistic condition.
    pub table: &'a DenseMatrix,
    /// Cluster of each training latent (`0..K`), `[n_cells]`.
    pub cluster: &'a [usize],
    /// Probability p of replacing a cell's cluster condition by the holistic one (classifier-
    /// free guidance training, Ho & Salimans 2022).
    pub drop_prob: f64,
}

/// Trains SCLD's conditional denoiser with classifier-free guidance: each minibatch cell gets
/// its cluster's condition, replaced by the holistic condition c_{K+1} with probability
/// `cond.drop_prob`; loss L_simple (Ho et al. 2020, Eq. 14) as [`train_diffusion`]. The K + 1
/// condition vectors are embedded once per step (`[K + 1, width]`) and the rows gathered per
/// cell, so `Embed` costs K + 1 rows per step instead of a batch of rows.
/// Returns `(denoiser, ema_denoiser, records)` (stage `"diffusion"`).
///
/// # Errors
/// [`Error::InvalidInput`] for fewer than 2 latents, a width mismatch or a cluster index out
/// of range; [`Error::InvalidInput`] also if the loss becomes non-finite.
/// [`Error::Param`] for an invalid training configuration (see `validate`).
pub fn train_cond_diffusion(
    z0: &DenseMatrix,
    cond: &ConditionBatchSource<'_>,
    model: &CondDenoiserConfig,
    schedule: &NoiseSchedule,
    cfg: &DiffusionTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(CondDenoiser, CondDenoiser, Vec<EpochRecord>)> {
    cfg.validate()?;
    let (n, d) = (z0.n_rows, z0.n_cols);
    let k_hol = cond.table.n_rows.saturating_sub(1);
    if n < 2 || d != model.n_latent || cond.cluster.len() != n {
        return Err(Error::InvalidInput(format!(
            "conditional denoiser: {n} latents of width {d} with {} cluster labels; expected \
             ≥ 2 latents of width {} and one label each",
            cond.cluster.len(),
            model.n_latent
        )));
    }
    if cond.table.n_cols != model.n_cond || cond.cluster.iter().any(|&c| c >= k_hol) {
        return Err(Error::InvalidInput(format!(
            "condition table {}×{} does not match {} clusters of width {}",
            cond.table.n_rows, cond.table.n_cols, k_hol, model.n_cond
        )));
    }
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (mut train, val) = split(n, cfg.validation_fraction, MAX_VALIDATION, &mut rng);
    let tables = Noising::new(schedule, model.time_dim, cfg.objective);
    let idx_tensor = |b: &[usize], r: Option<&mut StdRng>, dev: &Device| {
        let mut r = r;
        let v: Vec<i64> = b
            .iter()
            .map(|&i| {
                let dropped = r
                    .as_deref_mut()
                    .is_some_and(|r| r.random::<f64>() < cond.drop_prob);
                (if dropped { k_hol } else { cond.cluster[i] }) as i64
            })
            .collect();
        Tensor::<1, Int>::from_data(TensorData::new(v, [b.len()]), dev)
    };
    let table_ad = to_tensor(cond.table, &ad);
    let table_plain = to_tensor(cond.table, device);
    let val_batch = (!val.is_empty()).then(|| {
        let mut r = StdRng::seed_from_u64(cfg.seed ^ 0x7a1);
        let (zt, emb, eps) = tables.batch(z0, &val, &mut r, device);
        (zt, emb, eps, idx_tensor(&val, None, device))
    });
    let mut net = model.init(&ad);
    let mut ema = Ema::new(&net, cfg.ema_decay);
    let mut optim = crate::optim::adam(1e-8);
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size.max(1)).max(1);
    let total_steps = (steps_per_epoch * cfg.epochs).max(1);
    let mut step = 0usize;
    let mut records = Vec::new();
    observer.stage_start("diffusion", cfg.epochs);
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        train.shuffle(&mut rng);
        let (mut sum, mut nb) = (0f64, 0usize);
        let mut lr = cfg.learning_rate;
        for b in train.chunks(cfg.batch_size.max(1)) {
            let progress = step as f64 / total_steps as f64;
            lr = cfg.learning_rate
                * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            let (zt, emb, eps) = tables.batch(z0, b, &mut rng, &ad);
            let idx = idx_tensor(b, Some(&mut rng), &ad);
            let c_emb = net.embed_conditions(table_ad.clone()).select(0, idx);
            let loss = net.forward(zt, emb, c_emb).sub(eps).square().mean();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(lr, net, grads);
            ema.update(&net);
            sum += loss.into_scalar::<f32>() as f64;
            nb += 1;
            step += 1;
        }
        let train_loss = sum / nb.max(1) as f64;
        if !train_loss.is_finite() {
            return Err(non_finite_loss(
                "diffusion",
                epoch,
                cfg.learning_rate,
                "--lr-diffusion",
            ));
        }
        let val_loss = val_batch.as_ref().map(|(zt, emb, eps, idx)| {
            let m = ema.model();
            let c = m
                .embed_conditions(table_plain.clone())
                .select(0, idx.clone());
            m.forward(zt.clone(), emb.clone(), c)
                .sub(eps.clone())
                .square()
                .mean()
                .into_scalar::<f32>() as f64
        });
        let rec = EpochRecord {
            stage: "diffusion".into(),
            epoch,
            train_loss,
            val_loss,
            recon: None,
            kl: None,
            kl_weight: None,
            learning_rate: lr,
            seconds: start.elapsed().as_secs_f64(),
            kept: None,
        };
        observer.epoch_end(&rec);
        records.push(rec);
    }
    observer.stage_end("diffusion", "done");
    Ok((net.valid(), ema.into_model(), records))
}

/// Training parameters of the post-guidance [`Scorer`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScorerTrainConfig {
    /// Epochs over the real + generated latents.
    pub epochs: usize,
    /// Minibatch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Fraction held out to report the Scorer's accuracy.
    pub validation_fraction: f64,
    /// Seed of the split and shuffling.
    pub seed: u64,
}

impl Default for ScorerTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 256,
            learning_rate: 1e-3,
            validation_fraction: 0.2,
            seed: 0,
        }
    }
}

/// Trains SCLD's post-guidance [`Scorer`] (arXiv 2312.14220, Sec. 3.2.3) with cross-entropy on
/// `real` (label 0) vs `generated` (label 1) standardised latents, both `[n, n_latent]`.
/// Returns the Scorer and its accuracy on the held-out fraction (None without a split).
///
/// # Errors
/// [`Error::InvalidInput`] for empty sets or a width mismatch; [`Error::InvalidInput`] also if the loss
/// becomes non-finite.
/// [`Error::Param`] for an invalid training configuration (see `validate`).
pub fn train_scorer(
    real: &DenseMatrix,
    generated: &DenseMatrix,
    model: &ScorerConfig,
    cfg: &ScorerTrainConfig,
    device: &Device,
) -> Result<(Scorer, Option<f64>)> {
    if real.n_rows < 2
        || generated.n_rows < 2
        || real.n_cols != model.n_input
        || generated.n_cols != model.n_input
    {
        return Err(Error::InvalidInput(format!(
            "scorer: {}×{} real and {}×{} generated latents, expected ≥ 2 rows of width {}",
            real.n_rows, real.n_cols, generated.n_rows, generated.n_cols, model.n_input
        )));
    }
    let n = real.n_rows + generated.n_rows;
    let mut all = real.clone();
    all.data.extend_from_slice(&generated.data);
    all.n_rows = n;
    let label = |i: usize| usize::from(i >= real.n_rows);
    let one_hot = |b: &[usize], dev: &Device| {
        let v: Vec<f32> = b
            .iter()
            .flat_map(|&i| {
                if label(i) == 1 {
                    [0.0, 1.0]
                } else {
                    [1.0, 0.0]
                }
            })
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [b.len(), 2]), dev)
    };
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (mut train, val) = split(n, cfg.validation_fraction, MAX_VALIDATION, &mut rng);
    let mut net = model.init(&ad);
    let mut optim = crate::optim::adam(1e-8);
    for epoch in 1..=cfg.epochs {
        train.shuffle(&mut rng);
        let mut sum = 0f64;
        for b in batches(&train, cfg.batch_size) {
            let loss = net.loss(to_tensor(&all.select_rows(b), &ad), one_hot(b, &ad));
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(cfg.learning_rate, net, grads);
            sum += loss.into_scalar::<f32>() as f64;
        }
        if !sum.is_finite() {
            return Err(non_finite_loss("scorer", epoch, cfg.learning_rate, ""));
        }
    }
    let net = net.valid();
    let acc = if val.is_empty() {
        None
    } else {
        let lp = to_host(
            net.log_prob_real(to_tensor(&all.select_rows(&val), device))
                .reshape([val.len(), 1]),
        )?;
        let correct = val
            .iter()
            .zip(&lp.data)
            .filter(|&(&i, &l)| (l.exp() < 0.5) == (label(i) == 1))
            .count();
        Some(correct as f64 / val.len() as f64)
    };
    Ok((net, acc))
}

/// Default VAE epochs for `n_cells` training cells: about 150,000 cell passes, between 30 and
/// 300 epochs (early stopping on the validation split usually ends sooner).
pub fn auto_vae_epochs(n_cells: usize) -> usize {
    (150_000 / n_cells.max(1)).clamp(30, 300)
}

/// Default diffusion epochs: about 4 optimisation steps (of `batch_size`) per training cell,
/// between 2000 and 4000 steps in all, and at least 20 epochs. Measured on the shared datasets
/// (docs/RESULTS.md): 2000 steps already beat the VAE prior on the 700-cell demo, and the cap
/// keeps a 10,000-cell dataset under 5 minutes on 2 cores.
pub fn auto_diffusion_epochs(n_cells: usize, batch_size: usize) -> usize {
    let n_train = n_cells * 9 / 10;
    let steps_per_epoch = n_train.div_ceil(batch_size.max(1)).max(1);
    let steps = (4 * n_train).clamp(2000, 4000);
    steps.div_ceil(steps_per_epoch).clamp(20, 5000)
}

#[cfg(test)]
mod tests {
    use super::EarlyStopping;
    use super::{DiffusionTrainConfig, VaeTrainConfig, check_vae_config, non_finite_loss};
    use crate::error::Error;
    use crate::models::VaeConfig;

    /// The training configurations refuse what would panic inside Burn, write `null` into
    /// `config.json` or never make progress (defence in depth behind the CLI's parsers).
    #[test]
    fn configs_reject_out_of_range_values() {
        let _rng = crate::test_rng_lock();
        assert!(VaeTrainConfig::default().validate().is_ok());
        assert!(DiffusionTrainConfig::default().validate().is_ok());
        let bad_vae = [
            VaeTrainConfig {
                batch_size: 0,
                ..Default::default()
            },
            VaeTrainConfig {
                learning_rate: f64::NAN,
                ..Default::default()
            },
            VaeTrainConfig {
                kl_weight: -1.0,
                ..Default::default()
            },
        ];
        for c in bad_vae {
            assert!(matches!(c.validate(), Err(Error::Param(_))), "{c:?}");
        }
        for d in [f64::NAN, 1.0, 2.0, -0.1] {
            let c = DiffusionTrainConfig {
                ema_decay: d,
                ..Default::default()
            };
            let e = c.validate().unwrap_err();
            assert!(
                matches!(e, Error::Param(_)) && e.to_string().contains("ema_decay"),
                "{e}"
            );
        }
        for p in [1.5, f64::NAN, 1.0, -0.5] {
            let e = check_vae_config(&VaeConfig::new(100).with_dropout(p)).unwrap_err();
            assert!(e.to_string().contains("dropout"), "{e}");
        }
        assert!(check_vae_config(&VaeConfig::new(100)).is_ok());
        // 30,000 genes × a 10⁸-wide layer: refused before allocating.
        let e =
            check_vae_config(&VaeConfig::new(30_000).with_hidden(vec![100_000_000])).unwrap_err();
        assert!(e.to_string().contains("--hidden"), "{e}");
        // A diverging loss is the user's error (exit 2), with the epoch and the advice.
        let e = non_finite_loss("VAE", 7, 0.5, "--lr-vae");
        assert!(e.is_bad_input());
        assert!(e.to_string().contains("epoch 7") && e.to_string().contains("--lr-vae"));
    }

    /// Keeps the best epoch's model, stops after `patience` epochs without a lower loss, and
    /// during a warm-up (`keep_latest`) keeps the latest model whatever its loss.
    #[test]
    fn early_stopping_keeps_the_best_model_and_stops_after_patience() {
        let _rng = crate::test_rng_lock();
        let mut s = EarlyStopping::new(2);
        assert!(!s.stop(1, 5.0, true, || 1));
        assert!(!s.stop(2, 9.0, true, || 2)); // warm-up: kept although worse
        assert_eq!(s.best, Some((9.0, 2)));
        assert!(!s.stop(3, 4.0, false, || 3));
        assert!(!s.stop(4, 4.5, false, || panic!("not the best epoch")));
        assert!(s.stop(5, 4.0, false, || panic!("not the best epoch"))); // equal is not better
        assert_eq!(s.best, Some((4.0, 3)));
        assert_eq!(
            s.reason,
            "early stop at epoch 5: no better validation loss in 2 epochs"
        );
        let mut never = EarlyStopping::new(3);
        for (e, v) in [3.0, 2.0, 1.0].into_iter().enumerate() {
            assert!(!never.stop(e + 1, v, false, || e));
        }
        assert_eq!(never.reason, "reached the maximum number of epochs");
    }
}

#[cfg(test)]
mod count_likelihood_tests {
    use burn::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Gamma, Poisson};

    use super::{Silent, VaeTrainConfig, train_vae};
    use crate::anndata::{DenseMatrix, Matrix};
    use crate::models::{Likelihood, VaeConfig};

    /// NB counts of two cell types (different gene proportions) with θ = 2 for every gene and
    /// library sizes 500–3000, stored log1p(normalize_total(1e4)) as the training loop sees
    /// them; the NB VAE's validation loss falls and it learns θ near 2 from the counts it
    /// recovers from the lattice.
    #[test]
    fn nb_vae_loss_falls_and_it_learns_the_dispersion() {
        let _rng = crate::test_rng_lock();
        let (n, g, theta) = (600, 40, 2.0f64);
        let mut rng = StdRng::seed_from_u64(9);
        let mut x = Vec::with_capacity(n * g);
        for i in 0..n {
            let t = i % 2;
            let w: Vec<f64> = (0..g)
                .map(|j| if (j < g / 2) == (t == 0) { 3.0 } else { 1.0 })
                .collect();
            let sum: f64 = w.iter().sum();
            let lib = rng.random_range(500.0..3000.0);
            let y: Vec<f64> = w
                .iter()
                .map(|wj| {
                    let mu = lib * wj / sum;
                    let lam = Gamma::new(theta, mu / theta).unwrap().sample(&mut rng);
                    if lam > 0.0 {
                        Poisson::new(lam).unwrap().sample(&mut rng)
                    } else {
                        0.0
                    }
                })
                .collect();
            // Non-model genes hold another 30 % of the counts (normalize_total over all genes).
            let total: f64 = y.iter().sum::<f64>() / 0.7;
            let s = 1e4 / total.max(1.0);
            x.extend(y.iter().map(|&k| (k * s).ln_1p() as f32));
        }
        let x = Matrix::Dense(DenseMatrix::from_vec(n, g, x).unwrap());
        let cfg = VaeConfig::new(g)
            .with_hidden(vec![32])
            .with_n_latent(4)
            .with_likelihood(Likelihood::Nb);
        let train = VaeTrainConfig {
            epochs: 40,
            batch_size: 64,
            patience: 40,
            ..VaeTrainConfig::default()
        };
        let device = Device::default();
        let (vae, records) = train_vae(&x, &cfg, &train, &device, &mut Silent).unwrap();
        let val: Vec<f64> = records.iter().filter_map(|r| r.val_loss).collect();
        // The NB loss holds large θ-free terms (lgamma(x + 1), …): it falls by nats, not %.
        assert!(
            *val.last().unwrap() < val[0] - 5.0,
            "validation loss did not fall: {val:?}"
        );
        let mut th: Vec<f64> = vae
            .log_theta()
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(|v| (v as f64).exp())
            .collect();
        th.sort_by(|a, b| a.total_cmp(b));
        let median = th[g / 2];
        assert!(
            (1.0..4.0).contains(&median),
            "median θ {median}, truth {theta}"
        );
        // The decoder mean is log1p(c·ρ) in the model's space: finite and non-negative.
        let z = Tensor::<2>::zeros([3, 4], &device);
        let m = super::decode(&vae, z).unwrap();
        assert!(m.data.iter().all(|v| v.is_finite() && *v >= 0.0));
    }
}
