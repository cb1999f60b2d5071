//! SCLD end to end (Wang, Li, Di & Chen, "Single-Cell RNA-seq Synthesis with Latent Diffusion
//! Model", arXiv 2312.14220): preprocess → latent model (the SCLD [`Autoencoder`], or the
//! scVAEDer VAE) → conditional latent diffusion with *pre-guidance* → generation with
//! classifier-free guidance and *post-guidance* by a [`Scorer`].
//!
//! - **Conditions** (Sec. 3.2.1, Eq. 8–9): c_k = mean preprocessed expression (the model's
//!   expression space, e.g. log1p-normalised HVGs) of the training cells of cluster k,
//!   k = 1..K, and c_{K+1} = the mean of all training cells (the *holistic* condition).
//!   Clusters come from an `obs` column (`--condition-key bulk_labels`) or Leiden
//!   ([`crate::tl::leiden`]). The MLP `Embed` of [`CondDenoiser`] maps them to the denoiser width.
//! - **Training** (Eq. 10–11): each cell gets its own cluster's condition, replaced by the
//!   holistic one with probability p ([`ScldSpec::cond_drop`], default 0.15), so the same
//!   network learns conditional and holistic denoising ([`crate::train::train_cond_diffusion`]).
//! - **Sampling** (Eq. 13): ε̃ = (1 + ω) ε_θ(z_t, c_i) − ω ε_θ(z_t, c_{K+1}); ω = −1 is pure
//!   holistic generation, ω = 0 purely conditional. Both passes run as one batched forward call
//!   (`[2n, n_latent]`). The denoising loop is the shared [`crate::pipeline::denoise_loop`].
//! - **Post-guidance** (Sec. 3.2.3): the [`Scorer`] (three linear layers → real/generated
//!   logits) is trained after the diffusion model on the training cells' latents vs latents the
//!   model generated (condition mix, DDIM-50, ω = [`ScldSpec::scorer_guidance`]); at generation
//!   ⌈n_g / q⌉ cells are drawn for each requested condition g and the n_g with the highest
//!   P(real) are kept (q = `keep`, default 0.8), so the requested proportions are kept exactly.
//!   The Scorer looks at the generated cells as the user gets them (decoded, count-sampled;
//!   [`ScorerSpace::Genes`], default) or at standardised latents ([`ScorerSpace::Latent`]); in
//!   latent space it could not tell real from generated cells (pbmc68k: accuracy 0.51), because
//!   what separates them — decoder error and the count observation — happens after the latent.
//!
//! Evaluation caveat: the Scorer and the evaluator's random forest are both real-vs-generated
//! classifiers; evaluate on held-out real cells that neither saw (`celldiff scld-bench` does).
//!
//! Run directory (`celldiff train --model scld`): `config.json` ([`ScldConfig`], `model:
//! "scld"`), `genes.json`, `preprocess.json`, `latent.json`, `conditions.json`
//! ([`Conditions`]), `ae.bpk` or `vae.bpk`, `denoiser.bpk`, `denoiser_ema.bpk`, `scorer.bpk`
//! (when trained), `observation.json` (Gaussian decoder on log1p count data),
//! `library_size.json` (count decoder), `metrics.jsonl`, `SHA256SUMS`.
//!
//! Count likelihood (issue 18, beyond the paper): with `--likelihood nb|zinb` (the default
//! stays the paper's Gaussian: see [`ScldSpec::likelihood`]) the latent model's decoder scores counts under a
//! negative binomial with mean `l·softmax(D(z))` and one θ_g per gene (scVI, Lopez et al.
//! 2018; [`crate::models::count_head`]); generated cells draw their library size from the
//! latent's cluster ([`LibrarySizeModel`]) and their counts from the NB, and `generate`
//! writes counts like the scVAEDer pipeline ([`CountsOutput`]).
//! Written and checked on load like scVAEDer runs ([`crate::run_dir`]).

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::anndata::{AnnData, Column, DenseMatrix, Matrix};
use crate::counts::LibrarySizeModel;
use crate::decoded_counts::{
    CountsOutput, counts_anndata, reconstruct_counts, refit_log_theta, resolve_likelihood,
    sample_count_cells,
};
use crate::error::{Error, Result};
use crate::models::{
    Architecture, Autoencoder, AutoencoderConfig, CondDenoiser, CondDenoiserConfig, CountDecoder,
    Fusion, Likelihood, Scorer, ScorerConfig, Vae, VaeConfig,
};
use crate::observation::CountObservation;
use crate::observation::{Observation, fit_observation};
use crate::pipeline::denoise_loop;
use crate::pipeline::{SamplerKind, build_sampler, clip_range};
use crate::pp::{FittedPreprocess, PreprocessConfig, fit_transform};
use crate::run_dir::{DataSource, RunFiles, RunHeader};
use crate::run_dir::{
    RunDir, check_all_finite, check_diffusion_train, check_dims, check_dropout, check_len,
    check_preprocess, check_range, check_schedule, check_vae_train, save_module, write_history,
    write_json,
};
use crate::schedulers::{NoiseSchedule, ScheduleConfig};
use crate::train::{
    ConditionBatchSource, DiffusionTrainConfig, EpochRecord, LatentStats, Observer,
    ScorerTrainConfig, VaeTrainConfig, encode_mean, to_host, to_tensor, train_autoencoder,
    train_cond_diffusion, train_scorer, train_vae,
};
use crate::train::{DeviceBatch, auto_diffusion_epochs, auto_vae_epochs, device_batch_size};

mod classifier;
mod conditions;
mod generate;
mod persist;
#[cfg(test)]
mod tests;

pub use classifier::*;
pub use conditions::*;
use generate::observe;
pub use generate::*;

/// Default guidance weight ω of `celldiff generate` on SCLD runs.
pub const DEFAULT_GUIDANCE: f64 = 1.0;

/// Name of the holistic condition c_{K+1} in `obs['celldiff_condition']`.
pub const HOLISTIC: &str = "holistic";

/// What the post-guidance [`Scorer`] looks at (`--scorer-space`).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScorerSpace {
    /// Standardised latents `[n, n_latent]`: cheap, but blind to everything the decoder and the
    /// count observation add (measured on pbmc68k: held-out accuracy 0.51, i.e. chance).
    Latent,
    /// Generated cells as the user receives them `[n, n_genes]` (decoded and, with
    /// `--observation counts`, count-sampled) vs real cells in the model's expression space:
    /// the space the evaluator's random forest works in.
    #[default]
    Genes,
}

impl ScorerSpace {
    fn latent() -> Self {
        Self::Latent
    }
}

/// Which latent model SCLD diffuses in (`--latent-model`).
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LatentKind {
    /// SCLD's deterministic autoencoder (Eq. 3–6).
    #[default]
    Ae,
    /// The scVAEDer VAE (posterior means).
    Vae,
}

/// The trained latent model.
#[derive(Debug, Clone)]
pub enum LatentModel {
    /// SCLD autoencoder.
    Ae(Autoencoder),
    /// scVAEDer VAE.
    Vae(Vae),
}

impl CountDecoder for LatentModel {
    fn count_logits(&self, z: Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>) {
        match self {
            LatentModel::Vae(v) => v.valid().decode_logits(z),
            LatentModel::Ae(a) => a.valid().decode_logits(z),
        }
    }

    fn count_log_theta(&self) -> Option<Tensor<1>> {
        match self {
            LatentModel::Vae(v) => v.log_theta(),
            LatentModel::Ae(a) => a.log_theta(),
        }
    }
}

impl LatentModel {
    /// The decoder's likelihood.
    pub fn likelihood(&self) -> Likelihood {
        match self {
            LatentModel::Vae(v) => v.likelihood(),
            LatentModel::Ae(a) => a.likelihood(),
        }
    }

    /// The latent model with re-fitted ln θ_g and the count mean's scale `c` (no effect on a
    /// Gaussian decoder).
    fn with_count_head(self, log_theta: Option<&[f64]>, mean_scale: Option<f64>) -> Self {
        match self {
            LatentModel::Vae(mut v) => {
                if let Some(lt) = log_theta {
                    v = v.with_log_theta(lt);
                }
                if let Some(c) = mean_scale {
                    v = v.with_mean_scale(c);
                }
                LatentModel::Vae(v)
            }
            LatentModel::Ae(mut a) => {
                if let Some(lt) = log_theta {
                    a = a.with_log_theta(lt);
                }
                if let Some(c) = mean_scale {
                    a = a.with_mean_scale(c);
                }
                LatentModel::Ae(a)
            }
        }
    }

    /// Latent codes of all rows of `x` (autoencoder: E(x); VAE: posterior mean μ), in chunks.
    ///
    /// # Shapes
    /// `[n_cells, n_genes]` → `[n_cells, n_latent]`
    ///
    /// # Errors
    /// [`Error::Internal`] if the backend fails; [`Error::InvalidInput`] for zero cells.
    pub fn encode(&self, x: &Matrix, device: &Device) -> Result<DenseMatrix> {
        match self {
            LatentModel::Vae(v) => encode_mean(v, x, device),
            LatentModel::Ae(a) => {
                let n = x.n_rows();
                if n == 0 {
                    return Err(Error::InvalidInput("no cells to encode".into()));
                }
                let mut parts = Vec::new();
                for start in (0..n).step_by(1024) {
                    let idx: Vec<usize> = (start..(start + 1024).min(n)).collect();
                    parts.push(a.encode(to_tensor(&x.rows_dense(&idx), device)));
                }
                to_host(Tensor::cat(parts, 0))
            }
        }
    }

    /// Decodes latent codes (unstandardised) to expression in the model's space.
    ///
    /// # Shapes
    /// `[n, n_latent]` → `[n, n_genes]`
    ///
    /// # Errors
    /// [`Error::Internal`] if the backend fails.
    pub fn decode(&self, z: Tensor<2>) -> Result<DenseMatrix> {
        match self {
            LatentModel::Vae(v) => crate::train::decode(v, z),
            LatentModel::Ae(a) => {
                let [n, _] = z.dims();
                let mut parts = Vec::new();
                for start in (0..n).step_by(4096) {
                    let end = (start + 4096).min(n);
                    parts.push(a.decode(z.clone().narrow(0, start, end - start)));
                }
                to_host(Tensor::cat(parts, 0))
            }
        }
    }
}

/// Everything `celldiff train --model scld` needs besides the data and the cluster labels.
#[derive(Debug, Clone)]
pub struct ScldSpec {
    /// Preprocessing (scanpy `pp` steps).
    pub preprocess: PreprocessConfig,
    /// Latent model.
    pub latent_model: LatentKind,
    /// Hidden widths (VAE: all; autoencoder: the first).
    pub hidden: Vec<usize>,
    /// `n_latent`.
    pub n_latent: usize,
    /// Dropout after hidden layers.
    pub dropout: f64,
    /// Latent-model training (autoencoder: `kl_*` unused).
    pub latent_train: VaeTrainConfig,
    /// Latent-model epochs (None = [`auto_vae_epochs`]).
    pub latent_epochs: Option<usize>,
    /// Denoiser hidden width.
    pub denoiser_width: usize,
    /// Denoiser depth (MLP).
    pub denoiser_depth: usize,
    /// Timestep embedding width.
    pub time_dim: usize,
    /// Condition fusion.
    pub fusion: Fusion,
    /// Denoiser body.
    pub architecture: Architecture,
    /// Probability p of the holistic condition in training (classifier-free guidance).
    pub cond_drop: f64,
    /// Denoiser training (`epochs` replaced by `diffusion_epochs` or the automatic value).
    pub diffusion_train: DiffusionTrainConfig,
    /// Diffusion epochs (None = [`auto_diffusion_epochs`]).
    pub diffusion_epochs: Option<usize>,
    /// Noise schedule.
    pub schedule: ScheduleConfig,
    /// Train the post-guidance Scorer.
    pub scorer: bool,
    /// Scorer training.
    pub scorer_train: ScorerTrainConfig,
    /// ω of the generated cells the Scorer is trained on.
    pub scorer_guidance: f64,
    /// What the Scorer looks at.
    pub scorer_space: ScorerSpace,
    /// Fit the count observation model (log1p count data only; Gaussian decoder).
    pub fit_observation: bool,
    /// Decoder likelihood (`--likelihood`); `None` = Gaussian (the paper's MSE with the count
    /// observation model). Unlike scVAEDer, SCLD keeps the Gaussian default on count data:
    /// with the NB autoencoder the pre-guided cells were less realistic on pbmc68k (seed 10,
    /// not an evaluation seed: RF AUC 0.761 vs 0.602; seeds 0–2: 0.670 vs 0.546, docs/RESULTS.md)
    /// although it reconstructs better.
    pub likelihood: Option<Likelihood>,
    /// Global seed.
    pub seed: u64,
    /// Which of `latent_train.batch_size` and `diffusion_train.batch_size` are defaults that
    /// grow on a GPU ([`device_batch_size`]; no effect on the CPU).
    pub device_batch: DeviceBatch,
}

impl Default for ScldSpec {
    fn default() -> Self {
        Self {
            preprocess: PreprocessConfig::default(),
            latent_model: LatentKind::Ae,
            hidden: vec![512, 256],
            n_latent: 50,
            dropout: 0.1,
            latent_train: VaeTrainConfig::default(),
            latent_epochs: None,
            denoiser_width: 512,
            denoiser_depth: 3,
            time_dim: 128,
            fusion: Fusion::Add,
            architecture: Architecture::Mlp,
            cond_drop: 0.15,
            diffusion_train: DiffusionTrainConfig::default(),
            diffusion_epochs: None,
            schedule: ScheduleConfig::default(),
            scorer: true,
            scorer_train: ScorerTrainConfig::default(),
            scorer_guidance: DEFAULT_GUIDANCE,
            scorer_space: ScorerSpace::Genes,
            fit_observation: true,
            likelihood: None,
            seed: 0,
            device_batch: DeviceBatch::default(),
        }
    }
}

/// `config.json` of an SCLD run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScldConfig {
    /// Version, model (`"scld"`) and data source.
    #[serde(flatten)]
    pub header: RunHeader,
    /// Where the conditions came from (`obs` key or `leiden`).
    pub condition_key: String,
    /// Leiden resolution when the conditions are Leiden clusters of the training cells.
    pub leiden_resolution: Option<f64>,
    /// Training cells.
    pub n_cells: usize,
    /// Preprocessing parameters.
    pub preprocess: PreprocessConfig,
    /// Latent model kind.
    pub latent_model: LatentKind,
    /// Autoencoder architecture (`latent_model = ae`).
    pub ae: Option<AutoencoderConfig>,
    /// VAE architecture (`latent_model = vae`).
    pub vae: Option<VaeConfig>,
    /// Latent-model training.
    pub latent_train: VaeTrainConfig,
    /// Conditional denoiser architecture.
    pub denoiser: CondDenoiserConfig,
    /// Denoiser training.
    pub diffusion_train: DiffusionTrainConfig,
    /// Condition drop probability p.
    pub cond_drop: f64,
    /// Noise schedule.
    pub schedule: ScheduleConfig,
    /// ᾱ_T of the schedule.
    pub alphas_cumprod_terminal: f64,
    /// Scorer architecture, when trained.
    pub scorer: Option<ScorerConfig>,
    /// Scorer training.
    pub scorer_train: ScorerTrainConfig,
    /// ω of the cells the Scorer was trained against.
    pub scorer_guidance: f64,
    /// What the Scorer looks at (runs written before this field: latent).
    #[serde(default = "ScorerSpace::latent")]
    pub scorer_space: ScorerSpace,
    /// Scorer accuracy on its held-out split (0.5 = cannot tell real from generated).
    pub scorer_accuracy: Option<f64>,
    /// Global seed.
    pub seed: u64,
    /// Wall time of each stage in seconds.
    pub seconds: serde_json::Map<String, serde_json::Value>,
}

/// A trained SCLD run in memory.
#[derive(Debug, Clone)]
pub struct ScldRun {
    /// `config.json`.
    pub config: ScldConfig,
    /// The model's genes (`genes.json`).
    pub genes: Vec<String>,
    /// Fitted preprocessing.
    pub preprocess: FittedPreprocess,
    /// Latent standardisation.
    pub latent: LatentStats,
    /// Autoencoder or VAE.
    pub latent_model: LatentModel,
    /// Denoiser, last weights.
    pub denoiser: CondDenoiser,
    /// Denoiser, EMA weights (sampling).
    pub denoiser_ema: CondDenoiser,
    /// Condition vectors.
    pub conditions: Conditions,
    /// Post-guidance Scorer.
    pub scorer: Option<Scorer>,
    /// Count observation model (Gaussian decoder).
    pub observation: Option<CountObservation>,
    /// Library-size model of a count decoder (`library_size.json`).
    pub library: Option<LibrarySizeModel>,
    /// Training history.
    pub history: Vec<EpochRecord>,
}

/// Trains SCLD on `adata` with the cluster label of each cell in `obs[condition_key]`.
///
/// # Errors
/// [`Error::InvalidInput`] for a missing or unlabelled `condition_key`, fewer than 2
/// clusters, preprocessing errors; training failures.
pub fn fit(
    adata: &AnnData,
    condition_key: &str,
    leiden_resolution: Option<f64>,
    spec: &ScldSpec,
    source: &DataSource,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<ScldRun> {
    let mut seconds = serde_json::Map::new();
    let t0 = Instant::now();
    // Preprocessing may filter cells: the labels travel with the cells through `obs`.
    let (pp, fitted) = fit_transform(adata, &spec.preprocess)?;
    let col = pp.obs_column(condition_key)?;
    let cats = match col {
        Column::Categorical { categories, .. } => Some(categories.as_slice()),
        _ => None,
    };
    let (names, cluster) = encode_labels(&col.labels(), cats)?;
    seconds.insert("preprocess".into(), t0.elapsed().as_secs_f64().into());
    let x: Matrix = pp.x.clone();
    let (n, g) = x.shape();
    let (likelihood, libraries) = resolve_likelihood(
        &mut crate::train::InMemoryCells(&x),
        &fitted,
        Some(spec.likelihood.unwrap_or(Likelihood::Gaussian)),
        spec.fit_observation,
        observer,
    )?;
    let mut latent_train = spec.latent_train.clone();
    latent_train.epochs = spec.latent_epochs.unwrap_or_else(|| auto_vae_epochs(n));
    latent_train.seed = spec.seed;
    let gpu = !crate::backend::is_cpu(device);
    if spec.device_batch.vae {
        latent_train.batch_size = device_batch_size(latent_train.batch_size, n, gpu);
    }
    let t1 = Instant::now();
    let (latent_model, ae_cfg, vae_cfg, mut history) = match spec.latent_model {
        LatentKind::Ae => {
            let cfg = AutoencoderConfig::new(g)
                .with_hidden(spec.hidden.first().copied().unwrap_or(512))
                .with_n_latent(spec.n_latent)
                .with_dropout(spec.dropout)
                .with_likelihood(likelihood);
            let (ae, h) = train_autoencoder(&x, &cfg, &latent_train, device, observer)?;
            (LatentModel::Ae(ae), Some(cfg), None, h)
        }
        LatentKind::Vae => {
            let cfg = VaeConfig::new(g)
                .with_hidden(spec.hidden.clone())
                .with_n_latent(spec.n_latent)
                .with_dropout(spec.dropout)
                .with_likelihood(likelihood);
            let (vae, h) = train_vae(&x, &cfg, &latent_train, device, observer)?;
            (LatentModel::Vae(vae), None, Some(cfg), h)
        }
    };
    seconds.insert("latent".into(), t1.elapsed().as_secs_f64().into());
    let mu = latent_model.encode(&x, device)?;
    let t_obs = Instant::now();
    let latent = LatentStats::fit(&mu);
    let z0 = latent.standardize(&mu);
    let mut latent_model = latent_model;
    let library = match &libraries {
        Some((lib, sf)) => {
            let lt = if likelihood == Likelihood::Nb {
                observer.step_start("fitting the gene dispersions");
                Some(refit_log_theta(
                    &latent_model,
                    &mut crate::train::InMemoryCells(&x),
                    &mu,
                    device,
                )?)
            } else {
                None
            };
            observer.step_start("fitting the library-size model");
            let m = LibrarySizeModel::fit(&z0, lib, sf, spec.seed ^ 0x11b5)?;
            latent_model = latent_model.with_count_head(lt.as_deref(), Some(m.mean_scale));
            Some(m)
        }
        None => None,
    };
    let observation = if spec.fit_observation && library.is_none() {
        fit_observation(
            &fitted,
            &mut crate::train::InMemoryCells(&x),
            &mu,
            &|z| latent_model.decode(z),
            spec.seed,
            device,
        )?
    } else {
        None
    };
    seconds.insert("observation".into(), t_obs.elapsed().as_secs_f64().into());
    let conditions = Conditions::fit(condition_key, names, &cluster, &x)?;
    let table = conditions.table();
    let den_cfg = CondDenoiserConfig::new(spec.n_latent, g)
        .with_width(spec.denoiser_width)
        .with_depth(spec.denoiser_depth)
        .with_time_dim(spec.time_dim)
        .with_fusion(spec.fusion)
        .with_architecture(spec.architecture);
    let schedule = NoiseSchedule::new(&spec.schedule)?;
    let mut diff_train = spec.diffusion_train.clone();
    if spec.device_batch.diffusion {
        diff_train.batch_size = device_batch_size(diff_train.batch_size, n, gpu);
    }
    diff_train.epochs = spec
        .diffusion_epochs
        .unwrap_or_else(|| auto_diffusion_epochs(n, diff_train.batch_size));
    diff_train.seed = spec.seed.wrapping_add(1);
    if !(0.0..=1.0).contains(&spec.cond_drop) {
        return Err(Error::Param(format!(
            "cond_drop must be in [0, 1], got {}",
            spec.cond_drop
        )));
    }
    let t2 = Instant::now();
    let src = ConditionBatchSource {
        table: &table,
        cluster: &cluster,
        drop_prob: spec.cond_drop,
    };
    let (denoiser, denoiser_ema, h2) = train_cond_diffusion(
        &z0,
        &src,
        &den_cfg,
        &schedule,
        &diff_train,
        device,
        observer,
    )?;
    seconds.insert("diffusion".into(), t2.elapsed().as_secs_f64().into());
    history.extend(h2);
    let config = ScldConfig {
        header: RunHeader::new("scld", source),
        condition_key: condition_key.to_string(),
        leiden_resolution,
        n_cells: n,
        preprocess: spec.preprocess.clone(),
        latent_model: spec.latent_model,
        ae: ae_cfg,
        vae: vae_cfg,
        latent_train,
        denoiser: den_cfg,
        diffusion_train: diff_train,
        cond_drop: spec.cond_drop,
        schedule: spec.schedule.clone(),
        alphas_cumprod_terminal: schedule.terminal_alpha_cumprod(),
        scorer: None,
        scorer_train: spec.scorer_train.clone(),
        scorer_guidance: spec.scorer_guidance,
        scorer_space: spec.scorer_space,
        scorer_accuracy: None,
        seed: spec.seed,
        seconds,
    };
    let mut run = ScldRun {
        config,
        genes: pp.var_names.clone(),
        preprocess: fitted,
        latent,
        latent_model,
        denoiser,
        denoiser_ema,
        conditions,
        scorer: None,
        observation,
        library,
        history,
    };
    if spec.scorer {
        let t3 = Instant::now();
        observer.stage_start("scorer", 1);
        let m = n.min(4000);
        let sub: Vec<usize> = (0..m).map(|i| i * n / m).collect();
        let idx = run.conditions.mix(m);
        let opts = SampleOptions {
            guidance: spec.scorer_guidance,
            sampler: SamplerKind::Ddim,
            steps: Some(50),
            eta: 0.0,
            seed: spec.seed ^ 0x5c0e,
            clip_x0: true,
            use_ema: true,
        };
        let gen_z = sample_standardized(&run, &idx, &opts, device, &mut |_, _| {})?;
        let (real, generated) = match spec.scorer_space {
            ScorerSpace::Latent => (z0.select_rows(&sub), to_host(gen_z)?),
            ScorerSpace::Genes => {
                let obs = if run.observation.is_some() || run.library.is_some() {
                    Observation::Counts
                } else {
                    Observation::Mean
                };
                let cells = observe(&run, gen_z, obs, spec.seed ^ 0x5c10)?;
                (x.rows_dense(&sub), cells.x)
            }
        };
        let scfg = ScorerConfig::new(real.n_cols);
        let mut st = spec.scorer_train.clone();
        st.seed = spec.seed ^ 0x5c0f;
        let (scorer, acc) = train_scorer(&real, &generated, &scfg, &st, device)?;
        run.scorer = Some(scorer);
        run.config.scorer = Some(scfg);
        run.config.scorer_train = st;
        run.config.scorer_accuracy = acc;
        run.config
            .seconds
            .insert("scorer".into(), t3.elapsed().as_secs_f64().into());
        observer.stage_end(
            "scorer",
            &acc.map_or("done".into(), |a| format!("held-out accuracy {a:.3}")),
        );
    }
    Ok(run)
}
