//! The training configurations of the scVAEDer and SCLD networks, their defaults, their range
//! checks, and the automatic epoch counts.

use serde::{Deserialize, Serialize};

use super::plan::Shuffle;
use crate::error::{Error, Result};
use crate::models::VaeConfig;

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
/// the latent ≥ 1, and at most [`MAX_WEIGHTS`] weights (a hidden width of 10⁸ would otherwise
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
             smaller hidden widths or fewer genes (n_top_genes)",
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
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// DDPM noise prediction, L_simple = ‖ε − ε_θ(√ᾱ_t z₀ + √(1−ᾱ_t) ε, t)‖² (Ho et al. 2020,
    /// Eq. 14).
    #[default]
    #[cfg_attr(feature = "clap", value(name = "diffusion"))]
    Epsilon,
    /// Conditional flow matching with the linear path x_k = (1 − s_k) z₀ + s_k ε,
    /// s_k = (k + 1)/T, target v = ε − z₀ (Lipman et al. 2023, Eq. 23 with σ_min = 0;
    /// [`crate::schedulers::flow`]).
    #[cfg_attr(feature = "clap", value(name = "flow"))]
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

/// Training parameters of the post-guidance [`Scorer`](crate::models::Scorer).
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

/// On a GPU, [`device_batch_size`] stops doubling the batch before an epoch has fewer
/// minibatches than this.
pub const MIN_GPU_STEPS_PER_EPOCH: usize = 64;

/// On a GPU, [`device_batch_size`] multiplies the CPU batch by at most this (2³).
pub const MAX_GPU_BATCH_FACTOR: usize = 8;

/// Which default minibatch sizes follow the device ([`device_batch_size`]): those the user did
/// not set. The CLI clears a flag when `--batch-size-vae` / `--batch-size-diffusion` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceBatch {
    /// The VAE's (or SCLD autoencoder's) batch.
    pub vae: bool,
    /// The denoiser's batch.
    pub diffusion: bool,
}

impl Default for DeviceBatch {
    fn default() -> Self {
        Self {
            vae: true,
            diffusion: true,
        }
    }
}

/// The default minibatch size for `n_cells` cells (a tenth of them held out for validation) on
/// the CPU (`gpu = false`) or a GPU.
///
/// On the CPU it is `cpu_batch` (the VAE's 128, scVI's default; the denoiser's 256). A GPU
/// is idle at those sizes (a 128 × 2000 minibatch is a few microseconds of work per layer),
/// so there it is the largest `cpu_batch · 2^k` (k ≤ 3: at most 1024 cells for the VAE, 2048
/// latents for the denoiser) that still leaves [`MIN_GPU_STEPS_PER_EPOCH`] minibatches per
/// epoch: small datasets train with the CPU's batch and the same number of optimiser steps,
/// atlases with 8× larger batches (1M cells: ~880 VAE steps per epoch instead of ~7,000).
/// The learning rate is not rescaled; Adam at 1e-3 is used with 128–1024 cells by scVI and
/// scGen alike.
pub fn device_batch_size(cpu_batch: usize, n_cells: usize, gpu: bool) -> usize {
    let cpu_batch = cpu_batch.max(1);
    if !gpu {
        return cpu_batch;
    }
    let n_train = n_cells - n_cells / 10;
    let mut b = cpu_batch;
    while b * 2 <= cpu_batch * MAX_GPU_BATCH_FACTOR && n_train / (b * 2) >= MIN_GPU_STEPS_PER_EPOCH
    {
        b *= 2;
    }
    b
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
    use super::super::fit::non_finite_loss;
    use super::{DiffusionTrainConfig, VaeTrainConfig, check_vae_config};
    use crate::error::Error;
    use crate::models::VaeConfig;

    /// The CPU keeps its batch; a GPU doubles it up to ×8 while ≥ 64 minibatches per epoch
    /// remain.
    #[test]
    fn device_batch_size_grows_on_a_gpu_only_with_enough_cells() {
        use super::device_batch_size;
        assert_eq!(device_batch_size(128, 1_000_000, false), 128);
        // 700 cells (pbmc68k_reduced): 630 training cells, 4 minibatches of 128 already.
        assert_eq!(device_batch_size(128, 700, true), 128);
        // 10k cells: 9000 / 128 = 70 ≥ 64, 9000 / 256 = 35 < 64.
        assert_eq!(device_batch_size(128, 10_000, true), 128);
        // 40k cells: 36000 / 512 = 70, 36000 / 1024 = 35.
        assert_eq!(device_batch_size(128, 40_000, true), 512);
        assert_eq!(device_batch_size(128, 1_000_000, true), 1024);
        assert_eq!(device_batch_size(256, 1_000_000, true), 2048);
        assert_eq!(device_batch_size(0, 10, true), 1);
    }

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
        assert!(e.to_string().contains("smaller hidden widths"), "{e}");
        // A diverging loss is the user's error (exit 2), with the epoch and the advice.
        let e = non_finite_loss("VAE", 7, 0.5, "vae_train.learning_rate");
        assert!(e.is_bad_input());
        assert!(
            e.to_string().contains("epoch 7") && e.to_string().contains("vae_train.learning_rate")
        );
    }
}
