//! Training options from Python as the library's specs, with the command line's defaults and
//! ranges (so `ScVAEDer(adata).train(seed=0)` trains what `celldiff train --seed 0` trains).
//!
//! Python passes the keyword arguments it was given as JSON; every key is optional, an
//! unknown one is refused (`deny_unknown_fields`, the key named), and every range is checked
//! here before any work, with the parameter named.

use celldiff::counts::LibraryModelKind;
use celldiff::models::{Activation, Architecture, Fusion, HiddenNorm, Likelihood};
use celldiff::pp::{HvgFlavor, PreprocessConfig};
use celldiff::schedulers::BetaSchedule;
use celldiff::scld::{LatentKind, ScldSpec, ScorerSpace};
use celldiff::scvaeder::TrainSpec;
use celldiff::train::Objective;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::Deserialize;

/// The keyword arguments of `ScVAEDer(...)`, `SCLD(...)` and their `train(...)`; the names are
/// the CLI's flags in snake case (`--epochs-vae` is `max_epochs`, scvi-tools' name).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrainParams {
    // Preprocessing (scanpy pp).
    pub min_genes: Option<usize>,
    pub min_cells: Option<usize>,
    /// `normalize_total` target; 0 = scanpy's `target_sum=None` (median).
    pub target_sum: Option<f64>,
    pub log1p: Option<bool>,
    /// 0 = all genes.
    pub n_top_genes: Option<usize>,
    pub flavor: Option<HvgFlavor>,
    pub scale: Option<bool>,
    pub max_value: Option<f32>,
    pub minmax: Option<bool>,
    // Architecture.
    pub n_latent: Option<usize>,
    pub n_hidden: Option<Vec<usize>>,
    pub dropout_rate: Option<f64>,
    pub dropout_decoder: Option<f64>,
    pub likelihood: Option<Likelihood>,
    pub library_model: Option<LibraryModelKind>,
    pub vae_norm: Option<HiddenNorm>,
    /// `relu` or `silu`.
    pub vae_activation: Option<String>,
    /// `diffusion` or `flow` (the CLI's `--prior`).
    pub prior: Option<String>,
    pub denoiser_width: Option<usize>,
    pub denoiser_depth: Option<usize>,
    pub time_dim: Option<usize>,
    pub n_timesteps: Option<usize>,
    pub beta_schedule: Option<BetaSchedule>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub zero_terminal_snr: Option<bool>,
    pub fit_observation: Option<bool>,
    // Training.
    pub max_epochs: Option<usize>,
    pub max_epochs_diffusion: Option<usize>,
    pub kl_weight: Option<f64>,
    pub kl_warmup: Option<usize>,
    pub early_stopping_patience: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    pub batch_size_diffusion: Option<usize>,
    pub lr_diffusion: Option<f64>,
    pub patience_diffusion: Option<usize>,
    pub ema_decay: Option<f64>,
    pub seed: Option<u64>,
    // SCLD only.
    pub latent_model: Option<LatentKind>,
    pub fusion: Option<Fusion>,
    pub denoiser: Option<Architecture>,
    pub cond_drop: Option<f64>,
    pub scorer: Option<bool>,
    pub scorer_space: Option<ScorerSpace>,
    pub scorer_guidance: Option<f64>,
}

fn bad(msg: String) -> PyErr {
    PyValueError::new_err(msg)
}

fn count(name: &str, v: Option<usize>, lo: usize, hi: usize) -> PyResult<()> {
    match v {
        Some(x) if x < lo || x > hi => Err(bad(format!("{name} must be in [{lo}, {hi}], got {x}"))),
        _ => Ok(()),
    }
}

fn real(
    name: &str,
    v: Option<f64>,
    lo: f64,
    hi: f64,
    lo_open: bool,
    hi_open: bool,
) -> PyResult<()> {
    if let Some(x) = v {
        let ok = x.is_finite()
            && if lo_open { x > lo } else { x >= lo }
            && if hi_open { x < hi } else { x <= hi };
        if !ok {
            let (l, h) = (
                if lo_open { "(" } else { "[" },
                if hi_open { ")" } else { "]" },
            );
            return Err(bad(format!("{name} must be in {l}{lo}, {hi}{h}, got {x}")));
        }
    }
    Ok(())
}

const MAX_EPOCHS: usize = 1_000_000;
const MAX_WIDTH: usize = 65_536;

impl TrainParams {
    /// Parses and range-checks the JSON options.
    pub(crate) fn parse(json: &str) -> PyResult<Self> {
        let p: Self = crate::parse_options(json, "training options")?;
        count("n_latent", p.n_latent, 1, 4096)?;
        if let Some(h) = &p.n_hidden
            && (h.is_empty() || h.iter().any(|&w| w == 0 || w > MAX_WIDTH))
        {
            return Err(bad(format!(
                "n_hidden must be a non-empty list of widths in [1, {MAX_WIDTH}], got {h:?}"
            )));
        }
        real("dropout_rate", p.dropout_rate, 0.0, 1.0, false, true)?;
        real("dropout_decoder", p.dropout_decoder, 0.0, 1.0, false, true)?;
        real("target_sum", p.target_sum, 0.0, f64::MAX, false, false)?;
        if let Some(m) = p.max_value {
            real("max_value", Some(m as f64), 0.0, f64::MAX, true, false)?;
        }
        count("denoiser_width", p.denoiser_width, 1, MAX_WIDTH)?;
        count("denoiser_depth", p.denoiser_depth, 1, 64)?;
        count("time_dim", p.time_dim, 2, MAX_WIDTH)?;
        count("n_timesteps", p.n_timesteps, 2, 100_000)?;
        real("beta_start", p.beta_start, 0.0, 1.0, true, true)?;
        real("beta_end", p.beta_end, 0.0, 1.0, true, true)?;
        count("max_epochs", p.max_epochs, 1, MAX_EPOCHS)?;
        count(
            "max_epochs_diffusion",
            p.max_epochs_diffusion,
            1,
            MAX_EPOCHS,
        )?;
        real("kl_weight", p.kl_weight, 0.0, f64::MAX, false, false)?;
        count("kl_warmup", p.kl_warmup, 0, MAX_EPOCHS)?;
        count(
            "early_stopping_patience",
            p.early_stopping_patience,
            1,
            MAX_EPOCHS,
        )?;
        count("batch_size", p.batch_size, 1, 1 << 20)?;
        count("batch_size_diffusion", p.batch_size_diffusion, 1, 1 << 20)?;
        real("lr", p.lr, 0.0, f64::MAX, true, false)?;
        real("lr_diffusion", p.lr_diffusion, 0.0, f64::MAX, true, false)?;
        count("patience_diffusion", p.patience_diffusion, 0, MAX_EPOCHS)?;
        real("ema_decay", p.ema_decay, 0.0, 1.0, false, true)?;
        real("cond_drop", p.cond_drop, 0.0, 1.0, false, false)?;
        real(
            "scorer_guidance",
            p.scorer_guidance,
            f64::MIN,
            f64::MAX,
            false,
            false,
        )?;
        Ok(p)
    }

    fn preprocess(&self) -> PreprocessConfig {
        let d = PreprocessConfig::default();
        PreprocessConfig {
            min_genes: self.min_genes,
            min_cells: self.min_cells,
            target_sum: match self.target_sum {
                Some(t) => (t > 0.0).then_some(t),
                None => d.target_sum,
            },
            log1p: self.log1p,
            n_top_genes: match self.n_top_genes {
                Some(0) => None,
                Some(n) => Some(n),
                None => d.n_top_genes,
            },
            flavor: self.flavor.unwrap_or(d.flavor),
            subset: true,
            scale: self.scale.unwrap_or(false),
            max_value: self.max_value,
            minmax: self.minmax.unwrap_or(false),
        }
    }

    /// The scVAEDer [`TrainSpec`]; `labels_key` is recorded with the run.
    ///
    /// # Errors
    /// `ValueError` when an SCLD-only option is given.
    pub(crate) fn scvaeder_spec(&self, labels_key: Option<String>) -> PyResult<TrainSpec> {
        if self.latent_model.is_some()
            || self.fusion.is_some()
            || self.denoiser.is_some()
            || self.cond_drop.is_some()
            || self.scorer.is_some()
            || self.scorer_space.is_some()
            || self.scorer_guidance.is_some()
        {
            return Err(bad(
                "latent_model, fusion, denoiser, cond_drop, scorer, scorer_space and \
                 scorer_guidance are SCLD options (celldiff.SCLD)"
                    .into(),
            ));
        }
        let d = TrainSpec::default();
        let mut spec = TrainSpec {
            preprocess: self.preprocess(),
            hidden: self.n_hidden.clone().unwrap_or(d.hidden.clone()),
            n_latent: self.n_latent.unwrap_or(d.n_latent),
            dropout: self.dropout_rate.unwrap_or(d.dropout),
            vae_epochs: self.max_epochs,
            denoiser_width: self.denoiser_width.unwrap_or(d.denoiser_width),
            denoiser_depth: self.denoiser_depth.unwrap_or(d.denoiser_depth),
            time_dim: self.time_dim.unwrap_or(d.time_dim),
            diffusion_epochs: self.max_epochs_diffusion,
            labels_key,
            seed: self.seed.unwrap_or(0),
            fit_observation: self.fit_observation.unwrap_or(true),
            likelihood: self.likelihood,
            decoder_dropout: self.dropout_decoder,
            library_model: self.library_model.unwrap_or(d.library_model),
            vae_norm: self.vae_norm,
            vae_activation: match self.vae_activation.as_deref() {
                None => None,
                Some("relu") => Some(Activation::Relu),
                Some("silu") => Some(Activation::Silu),
                Some(o) => {
                    return Err(bad(format!(
                        "vae_activation must be relu or silu, got `{o}`"
                    )));
                }
            },
            prior: match self.prior.as_deref() {
                None => None,
                Some("diffusion") => Some(Objective::Epsilon),
                Some("flow") => Some(Objective::Velocity),
                Some(o) => {
                    return Err(bad(format!("prior must be diffusion or flow, got `{o}`")));
                }
            },
            ..d
        };
        self.training(
            &mut spec.vae_train,
            &mut spec.diffusion_train,
            &mut spec.schedule,
            &mut spec.device_batch,
        );
        Ok(spec)
    }

    fn training(
        &self,
        vae: &mut celldiff::train::VaeTrainConfig,
        diffusion: &mut celldiff::train::DiffusionTrainConfig,
        schedule: &mut celldiff::schedulers::ScheduleConfig,
        device_batch: &mut celldiff::train::DeviceBatch,
    ) {
        if let Some(v) = self.batch_size {
            vae.batch_size = v;
            device_batch.vae = false;
        }
        if let Some(v) = self.lr {
            vae.learning_rate = v;
        }
        if let Some(v) = self.kl_weight {
            vae.kl_weight = v;
        }
        if let Some(v) = self.kl_warmup {
            vae.kl_warmup_epochs = v;
        }
        if let Some(v) = self.early_stopping_patience {
            vae.patience = v;
        }
        if let Some(v) = self.batch_size_diffusion {
            diffusion.batch_size = v;
            device_batch.diffusion = false;
        }
        if let Some(v) = self.lr_diffusion {
            diffusion.learning_rate = v;
        }
        if let Some(v) = self.ema_decay {
            diffusion.ema_decay = v;
        }
        if self.patience_diffusion.is_some() {
            diffusion.patience = self.patience_diffusion;
        }
        if let Some(v) = self.n_timesteps {
            schedule.num_train_timesteps = v;
        }
        if let Some(v) = self.beta_schedule {
            schedule.beta_schedule = v;
        }
        if let Some(v) = self.beta_start {
            schedule.beta_start = v;
        }
        if let Some(v) = self.beta_end {
            schedule.beta_end = v;
        }
        if let Some(v) = self.zero_terminal_snr {
            schedule.zero_terminal_snr = v;
        }
    }

    /// The SCLD [`ScldSpec`] (the CLI's `train --model scld` mapping).
    ///
    /// # Errors
    /// `ValueError` when a scVAEDer-only option is given.
    pub(crate) fn scld_spec(&self) -> PyResult<ScldSpec> {
        if self.dropout_decoder.is_some()
            || self.library_model.is_some()
            || self.vae_norm.is_some()
            || self.vae_activation.is_some()
            || self.prior.is_some()
        {
            return Err(bad(
                "dropout_decoder, library_model, vae_norm, vae_activation and prior are \
                 scVAEDer options (celldiff.ScVAEDer)"
                    .into(),
            ));
        }
        let base = self.scvaeder_spec_unchecked()?;
        let d = ScldSpec::default();
        let seed = self.seed.unwrap_or(0);
        let mut spec = ScldSpec {
            preprocess: base.preprocess,
            latent_model: self.latent_model.unwrap_or(d.latent_model),
            hidden: base.hidden,
            n_latent: base.n_latent,
            dropout: base.dropout,
            latent_train: base.vae_train,
            latent_epochs: base.vae_epochs,
            denoiser_width: base.denoiser_width,
            denoiser_depth: base.denoiser_depth,
            time_dim: base.time_dim,
            fusion: self.fusion.unwrap_or(d.fusion),
            architecture: self.denoiser.unwrap_or(d.architecture),
            cond_drop: self.cond_drop.unwrap_or(d.cond_drop),
            diffusion_train: base.diffusion_train,
            diffusion_epochs: base.diffusion_epochs,
            schedule: base.schedule,
            scorer: self.scorer.unwrap_or(true),
            scorer_guidance: self.scorer_guidance.unwrap_or(d.scorer_guidance),
            scorer_space: self.scorer_space.unwrap_or(d.scorer_space),
            fit_observation: base.fit_observation,
            likelihood: base.likelihood,
            seed,
            device_batch: base.device_batch,
            ..d
        };
        spec.scorer_train.seed = seed;
        Ok(spec)
    }

    /// The shared options as a scVAEDer spec (SCLD reuses its preprocessing, widths,
    /// training and schedule, as `celldiff train --model scld` does).
    fn scvaeder_spec_unchecked(&self) -> PyResult<TrainSpec> {
        let shared = TrainParams {
            latent_model: None,
            fusion: None,
            denoiser: None,
            cond_drop: None,
            scorer: None,
            scorer_space: None,
            scorer_guidance: None,
            ..self.clone()
        };
        shared.scvaeder_spec(None)
    }
}
