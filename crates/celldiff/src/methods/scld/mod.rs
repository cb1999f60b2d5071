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
//! Written and checked on load like scVAEDer runs ([`crate::run`]).

use std::path::Path;
use std::str::FromStr;
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
use crate::run::DataSource;
use crate::run::{
    RunDir, check_all_finite, check_diffusion_train, check_dims, check_dropout, check_len,
    check_preprocess, check_range, check_schedule, check_vae_train, save_module, save_run_dir,
    write_history, write_json,
};
use crate::schedulers::{DdimScheduler, FlowScheduler, NoiseSchedule, ScheduleConfig, Scheduler};
use crate::train::{
    ConditionBatchSource, DiffusionTrainConfig, EpochRecord, LatentStats, Observer,
    ScorerTrainConfig, VaeTrainConfig, encode_mean, to_host, to_tensor, train_autoencoder,
    train_cond_diffusion, train_scorer, train_vae,
};
use crate::train::{auto_diffusion_epochs, auto_vae_epochs};

/// Default guidance weight ω of `celldiff generate` on SCLD runs.
pub const DEFAULT_GUIDANCE: f64 = 1.0;

/// Name of the holistic condition c_{K+1} in `obs['celldiff_condition']`.
pub const HOLISTIC: &str = "holistic";

/// What the post-guidance [`Scorer`] looks at (`--scorer-space`).
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

impl FromStr for ScorerSpace {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "latent" => Ok(Self::Latent),
            "genes" => Ok(Self::Genes),
            _ => Err(format!(
                "unknown scorer space `{s}` (expected latent or genes)"
            )),
        }
    }
}

/// Which latent model SCLD diffuses in (`--latent-model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LatentKind {
    /// SCLD's deterministic autoencoder (Eq. 3–6).
    #[default]
    Ae,
    /// The scVAEDer VAE (posterior means).
    Vae,
}

impl FromStr for LatentKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "ae" => Ok(Self::Ae),
            "vae" => Ok(Self::Vae),
            _ => Err(format!("unknown latent model `{s}` (expected ae or vae)")),
        }
    }
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

/// The condition vectors of a run (`conditions.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conditions {
    /// Where the clusters came from: an `obs` key (`bulk_labels`) or `leiden`.
    pub key: String,
    /// Cluster names (K of them), in condition order.
    pub names: Vec<String>,
    /// Training cells per cluster, `[K]` (the proportions of `--condition-mix`).
    pub counts: Vec<usize>,
    /// Condition vectors `[K + 1][n_genes]`: cluster means, then the holistic mean (model's
    /// expression space).
    pub vectors: Vec<Vec<f32>>,
}

impl Conditions {
    /// Cluster means and the global mean of `x` (`[n_cells, n_genes]`) for `cluster`
    /// (`[n_cells]`, values `0..names.len()`) — SCLD Eq. 8–9.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if a cluster has no cell or the lengths disagree.
    pub fn fit(key: &str, names: Vec<String>, cluster: &[usize], x: &Matrix) -> Result<Self> {
        let (n, g) = x.shape();
        let k = names.len();
        if cluster.len() != n || cluster.iter().any(|&c| c >= k) {
            return Err(Error::InvalidInput(format!(
                "conditions: {} labels for {n} cells, or a label outside 0..{k}",
                cluster.len()
            )));
        }
        let mut sums = vec![vec![0f64; g]; k + 1];
        let mut counts = vec![0usize; k];
        x.for_each_nonzero(|i, j, v| {
            sums[cluster[i]][j] += v as f64;
            sums[k][j] += v as f64;
        });
        for &c in cluster {
            counts[c] += 1;
        }
        if let Some(empty) = counts.iter().position(|&c| c == 0) {
            return Err(Error::InvalidInput(format!(
                "condition `{}` of obs['{key}'] has no training cell",
                names[empty]
            )));
        }
        let vectors = sums
            .iter()
            .enumerate()
            .map(|(c, s)| {
                let m = if c == k { n } else { counts[c] } as f64;
                s.iter().map(|v| (v / m) as f32).collect()
            })
            .collect();
        Ok(Self {
            key: key.to_string(),
            names,
            counts,
            vectors,
        })
    }

    /// Number of clusters K (the holistic condition has index K).
    pub fn n_clusters(&self) -> usize {
        self.names.len()
    }

    /// The `[K + 1, n_genes]` table of condition vectors.
    pub fn table(&self) -> DenseMatrix {
        let g = self.vectors.first().map_or(0, Vec::len);
        DenseMatrix {
            n_rows: self.vectors.len(),
            n_cols: g,
            data: self.vectors.iter().flatten().copied().collect(),
        }
    }

    /// Index of the cluster called `name`.
    ///
    /// # Errors
    /// [`Error::Param`] listing the known conditions.
    pub fn index_of(&self, name: &str) -> Result<usize> {
        self.names.iter().position(|n| n == name).ok_or_else(|| {
            Error::Param(format!(
                "unknown condition `{name}`; the run's conditions (obs['{}']) are: {}",
                self.key,
                self.names.join(", ")
            ))
        })
    }

    /// `n` condition indices in the training proportions (largest-remainder rounding),
    /// grouped by cluster.
    pub fn mix(&self, n: usize) -> Vec<usize> {
        let total: usize = self.counts.iter().sum();
        let exact: Vec<f64> = self
            .counts
            .iter()
            .map(|&c| n as f64 * c as f64 / total.max(1) as f64)
            .collect();
        let mut take: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
        let mut order: Vec<usize> = (0..take.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor())
                .total_cmp(&(exact[a] - exact[a].floor()))
                .then(a.cmp(&b))
        });
        let missing = n - take.iter().sum::<usize>();
        for &c in order.iter().take(missing) {
            take[c] += 1;
        }
        take.iter()
            .enumerate()
            .flat_map(|(c, &m)| std::iter::repeat_n(c, m))
            .collect()
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
        }
    }
}

/// `config.json` of an SCLD run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScldConfig {
    /// celldiff version that wrote the run.
    pub celldiff_version: String,
    /// Always `"scld"`.
    pub model: String,
    /// Input file or directory.
    pub data: String,
    /// `--layer`.
    pub layer: Option<String>,
    /// `--use-raw`.
    pub use_raw: bool,
    /// `--exclude`.
    pub exclude: Option<String>,
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

/// Cluster labels of every cell of `adata` from `labels` (one per cell): returns the sorted
/// category names (a categorical column keeps its category order) and each cell's index.
///
/// # Errors
/// [`Error::InvalidInput`] when a cell has no label or there is only one cluster.
pub fn encode_labels(
    labels: &[String],
    categories: Option<&[String]>,
) -> Result<(Vec<String>, Vec<usize>)> {
    let mut names: Vec<String> = match categories {
        Some(c) => c.to_vec(),
        None => {
            let mut l = labels.to_vec();
            l.sort();
            l.dedup();
            l
        }
    };
    // Keep only categories that occur.
    names.retain(|n| labels.iter().any(|l| l == n));
    let idx = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            names.iter().position(|n| n == l).ok_or_else(|| {
                Error::InvalidInput(format!("cell {i} has no condition label (`{l}`)"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if names.len() < 2 {
        return Err(Error::InvalidInput(format!(
            "conditions need at least 2 clusters, found {}",
            names.len()
        )));
    }
    Ok((names, idx))
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
        celldiff_version: env!("CARGO_PKG_VERSION").to_string(),
        model: "scld".into(),
        data: source.path.clone(),
        layer: source.layer.clone(),
        use_raw: source.use_raw,
        exclude: source.exclude.clone(),
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

/// Sampler settings shared by SCLD generation and the Scorer's training cells.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleOptions {
    /// Guidance weight ω (Eq. 13; −1 = holistic only, 0 = conditional only).
    pub guidance: f64,
    /// Reverse-process sampler.
    pub sampler: SamplerKind,
    /// Steps (None: T for DDPM, 50 for DDIM).
    pub steps: Option<usize>,
    /// DDIM η.
    pub eta: f64,
    /// Seed of the initial noise and of DDPM's per-step noise.
    pub seed: u64,
    /// Clip x̂₀ to the training latents' range.
    pub clip_x0: bool,
    /// Sample with the EMA weights.
    pub use_ema: bool,
}

/// Samples standardised latents for the condition indices `cond` (`[n]`, values `0..=K`,
/// K = holistic) with classifier-free guidance ε̃ = (1 + ω) ε(z, c_i) − ω ε(z, c_{K+1})
/// (SCLD Eq. 13). Rows whose condition is the holistic one, and every row when ω = −1, use
/// ε(z, c_{K+1}) alone; with ω = 0 only the conditional pass runs; otherwise both passes run as
/// one `[2n, n_latent]` forward call.
///
/// # Shapes
/// output: `[n, n_latent]` (standardised latent units)
///
/// # Errors
/// [`Error::Param`] for an empty `cond`, an index out of range or invalid sampler settings.
pub fn sample_standardized(
    run: &ScldRun,
    cond: &[usize],
    opts: &SampleOptions,
    device: &Device,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<Tensor<2>> {
    let k = run.conditions.n_clusters();
    if cond.is_empty() || cond.iter().any(|&c| c > k) {
        return Err(Error::Param(format!(
            "need ≥ 1 condition index in 0..={k}, got {} indices",
            cond.len()
        )));
    }
    let n = cond.len();
    let d = run.config.denoiser.n_latent;
    let schedule = run.schedule()?;
    let sched: Box<dyn Scheduler> = match (run.config.diffusion_train.objective, opts.sampler) {
        // SCLD's DDIM and flow samplers re-derive ε̂ from the clipped x̂₀ (a guided ε̂ or v̂
        // can put x̂₀ far outside the range).
        (crate::train::Objective::Epsilon, SamplerKind::Ddim) => Box::new(
            DdimScheduler::new(schedule.clone(), opts.steps.unwrap_or(50), opts.eta)?
                .with_clipped_model_output(true),
        ),
        (crate::train::Objective::Velocity, kind) => {
            let t = schedule.len();
            let steps = match kind {
                SamplerKind::Ddpm => opts.steps.unwrap_or(t),
                SamplerKind::Ddim => opts.steps.unwrap_or(50),
            };
            Box::new(FlowScheduler::new(t, steps)?.with_clipped_model_output(true))
        }
        (objective, kind) => {
            build_sampler(schedule.clone(), objective, kind, opts.steps, opts.eta)?
        }
    };
    let clip = opts.clip_x0.then(|| clip_range(&run.latent, device));
    let net = if opts.use_ema {
        &run.denoiser_ema
    } else {
        &run.denoiser
    };
    let w = opts.guidance;
    let holistic_only = w == -1.0 || cond.iter().all(|&c| c == k);
    let table = net.embed_conditions(to_tensor(&run.conditions.table(), device));
    let int = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [n]), device);
    let c_hol = table.clone().select(0, int(vec![k as i64; n]));
    let c_cond = table.select(0, int(cond.iter().map(|&c| c as i64).collect()));
    let c_both = Tensor::cat(vec![c_cond.clone(), c_hol.clone()], 0);
    let mut eps = |x: Tensor<2>, t: usize| {
        let te = net.embed_timesteps(&[t], device);
        if holistic_only {
            net.forward(x, te, c_hol.clone())
        } else if w == 0.0 {
            net.forward(x, te, c_cond.clone())
        } else {
            let out = net.forward(Tensor::cat(vec![x.clone(), x], 0), te, c_both.clone());
            let e_c = out.clone().narrow(0, 0, n);
            let e_h = out.narrow(0, n, n);
            e_c.mul_scalar(1.0 + w).sub(e_h.mul_scalar(w))
        }
    };
    device.seed(opts.seed);
    let source = crate::schedulers::NoiseSource { seed: opts.seed };
    let x = source.initial([n, d], device);
    let mut noise = |i: usize, shape: [usize; 2]| source.step(i, shape, device);
    Ok(denoise_loop(
        &mut eps,
        sched.as_ref(),
        x,
        0,
        clip.as_ref(),
        on_step,
        &mut noise,
    ))
}

/// Generated cells before post-guidance: latents (VAE μ / AE code units), expression in the
/// model's space, whether counts were sampled, and a count decoder's counts and size factors.
struct Observed {
    latents: DenseMatrix,
    x: DenseMatrix,
    observed: bool,
    counts: Option<(DenseMatrix, Vec<f64>)>,
}

/// Decodes standardised latents `[n, n_latent]` to cells `[n, n_genes]` in the model's space
/// (floored at 0 when that space is non-negative) and, for [`Observation::Counts`], samples
/// counts: a count decoder draws NB/ZINB counts with library sizes from the latent's cluster
/// ([`LibrarySizeModel`]); a Gaussian decoder samples the run's observation model.
fn observe(run: &ScldRun, z_std: Tensor<2>, obs: Observation, seed: u64) -> Result<Observed> {
    let z = run.latent.unstandardize(z_std.clone());
    let latents = to_host(z.clone())?;
    if let (Some(lib), Observation::Counts) = (&run.library, obs) {
        let sizes = lib.sample(&to_host(z_std)?, seed ^ 0x1b5a);
        let (counts, s) = sample_count_cells(&run.latent_model, z, &sizes, seed)?;
        return Ok(Observed {
            latents,
            x: crate::counts::log1p_normalise(&counts, &s),
            observed: true,
            counts: Some((counts, s)),
        });
    }
    let mut x = run.latent_model.decode(z)?;
    if run.preprocess.output_nonnegative() {
        for v in &mut x.data {
            *v = v.max(0.0);
        }
    }
    let observed = match (&run.observation, obs) {
        (Some(o), Observation::Counts) => {
            o.sample(&mut x, seed);
            true
        }
        _ => false,
    };
    Ok(Observed {
        latents,
        x,
        observed,
        counts: None,
    })
}

/// Held-out cells `x` (`[n, n_genes]`, the model's space) encoded by the run's latent model
/// (posterior mean / deterministic code), decoded and sampled through the same observation
/// model as generated cells: the decoder's ceiling, which generation cannot beat (issue 18's
/// reconstruction row).
///
/// # Errors
/// Encoding or decoding failed.
pub fn reconstruct(
    run: &ScldRun,
    x: &DenseMatrix,
    obs: Observation,
    seed: u64,
    device: &Device,
) -> Result<DenseMatrix> {
    let mu = run.latent_model.encode(&Matrix::Dense(x.clone()), device)?;
    if run.library.is_some() && obs == Observation::Counts {
        return reconstruct_counts(&run.latent_model, x, to_tensor(&mu, device), seed);
    }
    let z_std = crate::train::to_tensor(&run.latent.standardize(&mu), device);
    Ok(observe(run, z_std, obs, seed)?.x)
}

/// What cells `celldiff generate` asks an SCLD run for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditionChoice {
    /// Every cell from the holistic condition c_{K+1} (as ω = −1).
    Holistic,
    /// Every cell of one cluster (`--condition NAME`).
    Cluster(String),
    /// All clusters in their training proportions (`--condition-mix`).
    Mix,
}

/// Held-out accuracy below which a Scorer counts as at chance: it cannot tell real from
/// generated cells, so post-guidance would drop cells at random.
pub const MIN_SCORER_ACCURACY: f64 = 0.55;

/// Whether post-guidance is on when the user did not say (`requested = None`) or said so
/// (`Some(on)`), and a warning to show: the default is on when the run has a Scorer whose
/// held-out accuracy is at least [`MIN_SCORER_ACCURACY`] (or unknown); a Scorer at chance turns
/// it off with a warning, and an explicit `Some(true)` keeps it on with a warning.
pub fn decide_post_guidance(run: &ScldRun, requested: Option<bool>) -> (bool, Option<String>) {
    let acc = run.config.scorer_accuracy;
    let at_chance = run.scorer.is_some() && acc.is_some_and(|a| a < MIN_SCORER_ACCURACY);
    let acc = acc.unwrap_or(f64::NAN);
    match requested {
        Some(false) => (false, None),
        Some(true) if at_chance => (
            true,
            Some(format!(
                "the run's Scorer is at chance on its held-out split (accuracy {acc:.3} < \
                 {MIN_SCORER_ACCURACY}): post-guidance drops cells about at random"
            )),
        ),
        Some(true) => (true, None),
        None if at_chance => (
            false,
            Some(format!(
                "post-guidance off: the run's Scorer is at chance on its held-out split \
                 (accuracy {acc:.3} < {MIN_SCORER_ACCURACY}); give --post-guidance on to use it \
                 anyway"
            )),
        ),
        None => (run.scorer.is_some(), None),
    }
}

/// Options of [`generate`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScldGenerateOptions {
    /// Number of cells returned.
    pub n: usize,
    /// Which conditions.
    pub condition: ConditionChoice,
    /// Sampler and guidance.
    pub sample: SampleOptions,
    /// Post-guidance: oversample by 1/keep and keep the best-scored cells of each condition.
    pub post_guidance: bool,
    /// Fraction q kept by post-guidance (SCLD: 0.8).
    pub keep: f64,
    /// Decoder mean or sampled counts.
    pub observation: Observation,
    /// What goes to `X` when a count decoder sampled counts (`--output`).
    #[serde(default)]
    pub output: CountsOutput,
}

/// Generates cells from an SCLD run.
///
/// Returns an AnnData with X dense `[n, n_genes]` in the model's expression space (as
/// [`crate::scvaeder::generate`]), `obs['celldiff_source'] = 'generated'`,
/// `obs['celldiff_condition']` (the condition each cell was generated from; `holistic` for
/// ω = −1 or [`ConditionChoice::Holistic`]), `obs['celldiff_score']` (the Scorer's P(real) of
/// the cell's latent, when the run has a Scorer), `obsm['X_celldiff']` (latents) and
/// `uns['celldiff']` (model, options, preprocessing).
///
/// # Errors
/// [`Error::Param`] for `n = 0`, `keep` outside (0, 1], post-guidance without a Scorer, an
/// unknown condition, or invalid sampler settings.
pub fn generate(
    run: &ScldRun,
    opts: &ScldGenerateOptions,
    device: &Device,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<AnnData> {
    if opts.n == 0 {
        return Err(Error::Param(
            "number of cells to generate must be > 0".into(),
        ));
    }
    let k = run.conditions.n_clusters();
    let holistic = opts.sample.guidance == -1.0 || opts.condition == ConditionChoice::Holistic;
    let wanted: Vec<usize> = if holistic {
        vec![k; opts.n]
    } else {
        match &opts.condition {
            ConditionChoice::Cluster(name) => vec![run.conditions.index_of(name)?; opts.n],
            _ => run.conditions.mix(opts.n),
        }
    };
    generate_conditions(run, &wanted, opts, device, on_step)
}

/// As [`generate`] with the condition of every requested cell given: `wanted[i] ∈ 0..=K`
/// (K = holistic); `opts.n` and `opts.condition` are ignored (recorded in `uns` only). The
/// cells come back grouped by condition index in increasing order (stable within a group),
/// so a `wanted` sorted by condition is returned in its own order. With ω = −1 every cell is
/// generated from (and labelled with) the holistic condition, but post-guidance still keeps
/// the best cells of each requested group.
///
/// # Errors
/// As [`generate`]; [`Error::Param`] for an empty `wanted` or an index above K.
pub fn generate_conditions(
    run: &ScldRun,
    wanted: &[usize],
    opts: &ScldGenerateOptions,
    device: &Device,
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<AnnData> {
    let k = run.conditions.n_clusters();
    if wanted.is_empty() || wanted.iter().any(|&c| c > k) {
        return Err(Error::Param(format!(
            "need ≥ 1 requested condition in 0..={k}, got {} requests",
            wanted.len()
        )));
    }
    if !(opts.keep > 0.0 && opts.keep <= 1.0) {
        return Err(Error::Param(format!(
            "--keep must be in (0, 1], got {}",
            opts.keep
        )));
    }
    if opts.post_guidance && run.scorer.is_none() {
        return Err(Error::Param(
            "post-guidance needs a Scorer, and this run has none (trained with --no-scorer)".into(),
        ));
    }
    let holistic_label = opts.sample.guidance == -1.0;
    // Requested cells per condition (in condition order), then the oversampled draw.
    let mut per = vec![0usize; k + 1];
    for &c in wanted {
        per[c] += 1;
    }
    let draw: Vec<usize> = if opts.post_guidance {
        per.iter()
            .enumerate()
            .flat_map(|(c, &m)| {
                let total = if m == 0 {
                    0
                } else {
                    ((m as f64 / opts.keep).ceil() as usize).max(m)
                };
                std::iter::repeat_n(c, total)
            })
            .collect()
    } else {
        per.iter()
            .enumerate()
            .flat_map(|(c, &m)| std::iter::repeat_n(c, m))
            .collect()
    };
    let z_std = sample_standardized(run, &draw, &opts.sample, device, on_step)?;
    let cells = observe(
        run,
        z_std.clone(),
        opts.observation,
        opts.sample.seed ^ 0x0b5e_77ed,
    )?;
    let scores: Option<Vec<f32>> = match &run.scorer {
        Some(s) => {
            let input = match run.config.scorer_space {
                ScorerSpace::Latent => z_std,
                ScorerSpace::Genes => to_tensor(&cells.x, device),
            };
            let lp = to_host(s.log_prob_real(input).reshape([draw.len(), 1]))?;
            Some(lp.data.iter().map(|l| l.exp()).collect())
        }
        None => None,
    };
    let keep_idx: Vec<usize> = match (&scores, opts.post_guidance) {
        (Some(sc), true) => {
            let mut keep = Vec::with_capacity(opts.n);
            for (c, &m) in per.iter().enumerate() {
                let mut rows: Vec<usize> = (0..draw.len()).filter(|&i| draw[i] == c).collect();
                rows.sort_by(|&a, &b| sc[b].total_cmp(&sc[a]).then(a.cmp(&b)));
                let mut top: Vec<usize> = rows.into_iter().take(m).collect();
                top.sort_unstable();
                keep.extend(top);
            }
            keep
        }
        _ => (0..draw.len()).collect(),
    };
    let n = keep_idx.len();
    let latents = cells.latents.select_rows(&keep_idx);
    let observed = cells.observed;
    let mut out = match &cells.counts {
        Some((counts, s)) => {
            let s: Vec<f64> = keep_idx.iter().map(|&i| s[i]).collect();
            counts_anndata(&run.genes, counts.select_rows(&keep_idx), &s, opts.output)
        }
        None => AnnData::new(
            Matrix::Dense(cells.x.select_rows(&keep_idx)),
            run.genes.clone(),
        ),
    };
    out.obs_names = (0..n).map(|i| format!("gen-{i}")).collect();
    out.set_obs(
        "celldiff_source",
        Column::Categorical {
            codes: vec![0; n],
            categories: vec!["generated".into()],
        },
    );
    let mut categories = run.conditions.names.clone();
    categories.push(HOLISTIC.into());
    out.set_obs(
        "celldiff_condition",
        Column::Categorical {
            codes: keep_idx
                .iter()
                .map(|&i| if holistic_label { k } else { draw[i] } as i32)
                .collect(),
            categories,
        },
    );
    if let Some(sc) = &scores {
        out.set_obs(
            "celldiff_score",
            Column::Numeric(keep_idx.iter().map(|&i| sc[i] as f64).collect()),
        );
    }
    out.set_obsm("X_celldiff", latents);
    let mut meta = serde_json::Map::new();
    meta.insert("model".into(), "scld".into());
    meta.insert(
        "generate".into(),
        serde_json::to_value(opts).map_err(|e| Error::Internal(e.to_string()))?,
    );
    meta.insert("condition_key".into(), run.conditions.key.clone().into());
    meta.insert(
        "preprocess".into(),
        serde_json::to_value(&run.preprocess).map_err(|e| Error::Internal(e.to_string()))?,
    );
    meta.insert(
        "observation".into(),
        match (&run.observation, observed) {
            (Some(o), true) => format!("counts (negative binomial, dispersion {})", o.dispersion),
            (None, true) => format!(
                "counts ({} decoder, library size from the latent's cluster)",
                run.latent_model.likelihood().name()
            ),
            _ => "mean".to_string(),
        }
        .into(),
    );
    meta.insert(
        "likelihood".into(),
        run.latent_model.likelihood().name().into(),
    );
    out.uns
        .insert("celldiff".into(), serde_json::Value::Object(meta));
    Ok(out)
}

/// The classifier behind SCLD's "fraction of generated cells assigned to the requested
/// cluster" check: a k-nearest-neighbour majority vote (k = 15, Euclidean) in the PCA-50 space
/// of labelled real cells (sklearn `KNeighborsClassifier` on `PCA(50).fit(real)` scores). Ties
/// go to the label whose tied neighbours are closest in total.
#[derive(Debug, Clone)]
pub struct LabelClassifier {
    pca: crate::tl::pca::Pca,
    scores: DenseMatrix,
    labels: Vec<usize>,
    n_labels: usize,
    k: usize,
}

impl LabelClassifier {
    /// Fits on real cells `x` (`[n_cells, n_genes]`, the model's expression space) with
    /// `labels[i] ∈ 0..n_labels`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a length mismatch or fewer than `k` cells; PCA errors.
    pub fn fit(x: &DenseMatrix, labels: &[usize], n_pcs: usize, k: usize) -> Result<Self> {
        if labels.len() != x.n_rows || x.n_rows < k.max(2) {
            return Err(Error::InvalidInput(format!(
                "label classifier: {} cells with {} labels (need ≥ {k} cells, one label each)",
                x.n_rows,
                labels.len()
            )));
        }
        let pca = crate::tl::pca::Pca::fit(x, n_pcs)?;
        let scores = pca.transform(x);
        Ok(Self {
            pca,
            scores,
            n_labels: labels.iter().max().map_or(0, |m| m + 1),
            labels: labels.to_vec(),
            k,
        })
    }

    /// Predicted label of every row of `q` (`[n, n_genes]`) → `[n]`.
    pub fn predict(&self, q: &DenseMatrix) -> Vec<usize> {
        use rayon::prelude::*;
        let qs = self.pca.transform(q);
        let d = qs.n_cols;
        (0..qs.n_rows)
            .into_par_iter()
            .map(|i| {
                let a = qs.row(i);
                let mut dist: Vec<(f32, usize)> = (0..self.scores.n_rows)
                    .map(|j| {
                        let b = self.scores.row(j);
                        let s: f32 = (0..d).map(|t| (a[t] - b[t]) * (a[t] - b[t])).sum();
                        (s, j)
                    })
                    .collect();
                let k = self.k.min(dist.len());
                dist.select_nth_unstable_by(k - 1, |x, y| x.0.total_cmp(&y.0));
                let mut votes = vec![(0usize, 0f32); self.n_labels];
                for &(s, j) in &dist[..k] {
                    let v = &mut votes[self.labels[j]];
                    v.0 += 1;
                    v.1 += s.sqrt();
                }
                (0..self.n_labels)
                    .max_by(|&x, &y| {
                        votes[x]
                            .0
                            .cmp(&votes[y].0)
                            .then(votes[y].1.total_cmp(&votes[x].1))
                    })
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl ScldRun {
    /// The run's noise schedule.
    ///
    /// # Errors
    /// [`Error::Param`] if the stored schedule is invalid.
    pub fn schedule(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::new(&self.config.schedule)
    }

    /// Writes the run directory atomically (temporary sibling + rename), with `genes.json`
    /// and `SHA256SUMS` ([`crate::run`]).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if `dir` exists and `force` is false; [`Error::Io`] on write
    /// failures (the temporary directory is removed).
    pub fn save(&self, dir: &Path, force: bool) -> Result<()> {
        save_run_dir(dir, force, &self.config, &self.genes, |tmp| {
            write_json(&tmp.join("preprocess.json"), &self.preprocess)?;
            write_json(&tmp.join("latent.json"), &self.latent)?;
            write_json(&tmp.join("conditions.json"), &self.conditions)?;
            if let Some(o) = &self.observation {
                write_json(&tmp.join("observation.json"), o)?;
            }
            if let Some(l) = &self.library {
                write_json(&tmp.join(crate::run::LIBRARY_JSON), l)?;
            }
            match &self.latent_model {
                LatentModel::Ae(a) => save_module(a, &tmp.join("ae.bpk"))?,
                LatentModel::Vae(v) => save_module(v, &tmp.join("vae.bpk"))?,
            }
            save_module(&self.denoiser, &tmp.join("denoiser.bpk"))?;
            save_module(&self.denoiser_ema, &tmp.join("denoiser_ema.bpk"))?;
            if let Some(s) = &self.scorer {
                save_module(s, &tmp.join("scorer.bpk"))?;
            }
            write_history(tmp, &self.history)
        })
    }

    /// Loads and checks an SCLD run directory, as [`crate::run::Run::load`] does (version,
    /// checksums, ranges and lengths), plus the conditions and the Scorer.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing directory or file; [`Error::Format`] naming the file and
    /// field for a run of another model, a newer celldiff version, a checksum mismatch,
    /// unreadable JSON, a value out of range or of the wrong length, inconsistent
    /// genes/conditions, or corrupt weights.
    pub fn load(dir: &Path, device: &Device) -> Result<ScldRun> {
        let rd = RunDir::open(dir, "run directory", "scld", |model| {
            format!("expected an SCLD run (model \"scld\"), found \"{model}\"")
        })?;
        let cp = rd.path("config.json");
        let config: ScldConfig = rd.config()?;
        config.check(&cp)?;
        let (genes, _) = rd.genes(
            config.denoiser.n_cond,
            "the denoiser's conditions in config.json",
        )?;
        let preprocess: FittedPreprocess = rd.json("preprocess.json")?;
        check_preprocess(&rd.path("preprocess.json"), &preprocess, &genes)?;
        let latent: LatentStats = rd.json("latent.json")?;
        latent.check(&rd.path("latent.json"), config.denoiser.n_latent)?;
        let conditions: Conditions = rd.json("conditions.json")?;
        conditions.check(&rd.path("conditions.json"), genes.len())?;
        let observation: Option<CountObservation> = rd.optional_json("observation.json")?;
        if let Some(o) = &observation {
            o.check(&rd.path("observation.json"))?;
        }
        let likelihood = match (&config.latent_model, &config.ae, &config.vae) {
            (LatentKind::Ae, Some(c), _) => c.likelihood,
            (LatentKind::Vae, _, Some(c)) => c.likelihood,
            _ => Likelihood::Gaussian,
        };
        let library = rd.library(likelihood, config.denoiser.n_latent)?;
        let latent_model = match (&config.latent_model, &config.ae, &config.vae) {
            (LatentKind::Ae, Some(c), _) => {
                LatentModel::Ae(rd.module(c.init(device), "ae.bpk")?.valid())
            }
            (LatentKind::Vae, _, Some(c)) => {
                LatentModel::Vae(rd.module(c.init(device), "vae.bpk")?.valid())
            }
            _ => {
                return Err(Error::format(
                    &cp,
                    "latent_model",
                    "no architecture stored for the latent model",
                ));
            }
        };
        let denoiser = rd.module(config.denoiser.init(device), "denoiser.bpk")?;
        let denoiser_ema = rd.module(config.denoiser.init(device), "denoiser_ema.bpk")?;
        let scorer = match &config.scorer {
            Some(c) => Some(rd.module(c.init(device), "scorer.bpk")?),
            None => None,
        };
        let history = rd.history();
        Ok(ScldRun {
            config,
            genes,
            preprocess,
            latent,
            latent_model,
            denoiser,
            denoiser_ema,
            conditions,
            scorer,
            observation,
            library,
            history,
        })
    }
}

impl ScldConfig {
    /// Checks the values of a loaded SCLD `config.json` (`path`): the latent model's
    /// architecture is stored, dimensions are ≥ 1 and agree (latent model ↔ denoiser ↔
    /// Scorer), dropout and condition-drop probabilities, training parameters, the guidance
    /// weight, and the noise schedule against its ᾱ_T.
    ///
    /// # Errors
    /// [`Error::Format`] naming `path` and the field.
    pub fn check(&self, path: &Path) -> Result<()> {
        let d = &self.denoiser;
        let (n_genes, n_latent, dropout) = match (&self.latent_model, &self.ae, &self.vae) {
            (LatentKind::Ae, Some(c), _) => {
                check_dims(path, &[("ae.hidden", c.hidden)])?;
                (c.n_genes, c.n_latent, ("ae.dropout", c.dropout))
            }
            (LatentKind::Vae, _, Some(c)) => {
                if let Some(i) = c.hidden.iter().position(|&h| h == 0) {
                    return Err(Error::format(
                        path,
                        format!("vae.hidden[{i}]"),
                        "0, expected ≥ 1",
                    ));
                }
                (c.n_genes, c.n_latent, ("vae.dropout", c.dropout))
            }
            _ => {
                return Err(Error::format(
                    path,
                    "latent_model",
                    "no architecture stored for the latent model",
                ));
            }
        };
        check_dims(
            path,
            &[
                ("n_genes", n_genes),
                ("n_latent", n_latent),
                ("denoiser.width", d.width),
                ("denoiser.depth", d.depth),
                ("denoiser.time_dim", d.time_dim),
            ],
        )?;
        check_len(
            path,
            "denoiser.n_latent",
            d.n_latent,
            n_latent,
            "the latent model's n_latent",
        )?;
        check_len(
            path,
            "denoiser.n_cond",
            d.n_cond,
            n_genes,
            "the latent model's n_genes",
        )?;
        check_dropout(path, dropout.0, dropout.1)?;
        check_range(
            path,
            "cond_drop",
            self.cond_drop,
            (0.0, false),
            (1.0, false),
        )?;
        if let Some(s) = &self.scorer {
            let (want, why) = match self.scorer_space {
                ScorerSpace::Genes => (n_genes, "n_genes (scorer_space genes)"),
                ScorerSpace::Latent => (n_latent, "n_latent (scorer_space latent)"),
            };
            check_len(path, "scorer.n_input", s.n_input, want, why)?;
            check_dims(path, &[("scorer.hidden", s.hidden)])?;
        }
        check_range(
            path,
            "scorer_guidance",
            self.scorer_guidance,
            (f64::NEG_INFINITY, true),
            (f64::INFINITY, true),
        )?;
        check_vae_train(path, "latent_train", &self.latent_train)?;
        check_diffusion_train(path, "diffusion_train", &self.diffusion_train)?;
        let st = &self.scorer_train;
        check_range(
            path,
            "scorer_train.learning_rate",
            st.learning_rate,
            (0.0, true),
            (f64::INFINITY, true),
        )?;
        check_range(
            path,
            "scorer_train.validation_fraction",
            st.validation_fraction,
            (0.0, false),
            (1.0, true),
        )?;
        check_schedule(path, &self.schedule, self.alphas_cumprod_terminal)
    }
}

impl Conditions {
    /// Checks conditions loaded from `path` (`conditions.json`) for a model of `n_genes`
    /// genes: one count per name, one vector per name plus the global mean, each of `n_genes`
    /// finite values.
    ///
    /// # Errors
    /// [`Error::Format`] naming `path` and the field.
    pub fn check(&self, path: &Path, n_genes: usize) -> Result<()> {
        let n = self.names.len();
        if self.vectors.len() != n + 1
            || self.counts.len() != n
            || self.vectors.iter().any(|v| v.len() != n_genes)
        {
            return Err(Error::format(
                path,
                "vectors",
                format!("expected {n} + 1 vectors of {n_genes} genes and one count per condition"),
            ));
        }
        for (k, v) in self.vectors.iter().enumerate() {
            check_all_finite(path, &format!("vectors[{k}]"), v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_keeps_proportions_and_total() {
        let _rng = crate::test_rng_lock();
        let c = Conditions {
            key: "k".into(),
            names: vec!["a".into(), "b".into(), "c".into()],
            counts: vec![5, 3, 2],
            vectors: vec![vec![0.0]; 4],
        };
        let m = c.mix(7);
        assert_eq!(m.len(), 7);
        let count = |k| m.iter().filter(|&&x| x == k).count();
        // 3.5, 2.1, 1.4 → floors 3, 2, 1 (6), the largest remainder (a: .5) gets the last.
        assert_eq!((count(0), count(1), count(2)), (4, 2, 1));
        assert_eq!(c.index_of("b").unwrap(), 1);
        assert!(
            c.index_of("zz")
                .unwrap_err()
                .to_string()
                .contains("a, b, c")
        );
    }

    #[test]
    fn conditions_are_cluster_means_and_global_mean() {
        let _rng = crate::test_rng_lock();
        let x = DenseMatrix::from_vec(3, 2, vec![1.0, 0.0, 3.0, 2.0, 5.0, 4.0]).unwrap();
        let c = Conditions::fit(
            "k",
            vec!["a".into(), "b".into()],
            &[0, 0, 1],
            &Matrix::Dense(x),
        )
        .unwrap();
        assert_eq!(
            c.vectors,
            vec![vec![2.0, 1.0], vec![5.0, 4.0], vec![3.0, 2.0]]
        );
        assert_eq!(c.counts, vec![2, 1]);
        let e = Conditions::fit(
            "k",
            vec!["a".into(), "b".into()],
            &[0, 0, 0],
            &Matrix::Dense(DenseMatrix::zeros(3, 2)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`b`"), "{e}");
    }

    /// Two groups of log-normalised cells with opposite programmes (genes 0–9 vs 10–19).
    fn two_programmes(n: usize, seed: u64) -> AnnData {
        use rand::{Rng, SeedableRng};
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        let g = 20;
        let mut data = Vec::with_capacity(n * g);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let a = i % 2 == 0;
            for j in 0..g {
                let high = (j < 10) == a;
                let base = if high { 2.0 } else { 0.2 };
                data.push(base + 0.3 * r.random::<f32>());
            }
            labels.push(if a { "A" } else { "B" }.to_string());
        }
        let mut ad = AnnData::new(
            Matrix::Dense(DenseMatrix::from_vec(n, g, data).unwrap()),
            (0..g).map(|j| format!("g{j}")).collect(),
        );
        ad.set_obs("type", Column::categorical_from_labels(&labels));
        ad
    }

    fn tiny_spec() -> ScldSpec {
        let mut spec = ScldSpec {
            preprocess: PreprocessConfig {
                n_top_genes: None,
                ..PreprocessConfig::default()
            },
            hidden: vec![32],
            n_latent: 4,
            dropout: 0.0,
            latent_epochs: Some(40),
            denoiser_width: 64,
            denoiser_depth: 2,
            time_dim: 16,
            diffusion_epochs: Some(300),
            fit_observation: false,
            ..ScldSpec::default()
        };
        // T = 100 with β_T = 0.05 keeps ᾱ_T ≈ 0.08 as the default T = 1000 schedule does (with
        // the default β_T = 5e-3, T = 100 would leave ᾱ_T ≈ 0.78: x_T far from N(0, I)).
        spec.schedule.num_train_timesteps = 100;
        spec.schedule.beta_end = 0.05;
        spec.diffusion_train.batch_size = 64;
        spec.latent_train.batch_size = 64;
        spec.scorer_train.epochs = 10;
        spec
    }

    /// Mean of genes 0–9 minus the mean of genes 10–19, per generated set.
    fn programme_contrast(x: &DenseMatrix) -> f64 {
        let mut s = 0f64;
        for i in 0..x.n_rows {
            let r = x.row(i);
            s += r[..10].iter().map(|&v| v as f64).sum::<f64>() / 10.0
                - r[10..].iter().map(|&v| v as f64).sum::<f64>() / 10.0;
        }
        s / x.n_rows as f64
    }

    #[test]
    fn guided_generation_produces_the_requested_programme_and_reproduces() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let ad = two_programmes(300, 1);
        let spec = tiny_spec();
        let run = fit(
            &ad,
            "type",
            None,
            &spec,
            &DataSource::default(),
            &device,
            &mut crate::train::Silent,
        )
        .unwrap();
        assert_eq!(run.conditions.names, vec!["A", "B"]);
        // Diffusion loss falls.
        let d: Vec<f64> = run
            .history
            .iter()
            .filter(|r| r.stage == "diffusion")
            .map(|r| r.train_loss)
            .collect();
        assert!(
            d[d.len() - 1] < 0.8 * d[0],
            "diffusion loss did not fall: {d:?}"
        );
        let sample_cells = |cond: ConditionChoice, w: f64, post: bool, seed: u64| {
            let o = ScldGenerateOptions {
                n: 60,
                condition: cond,
                sample: SampleOptions {
                    guidance: w,
                    sampler: SamplerKind::Ddim,
                    steps: Some(25),
                    eta: 0.0,
                    seed,
                    clip_x0: true,
                    use_ema: true,
                },
                post_guidance: post,
                keep: 0.8,
                observation: Observation::Mean,
                output: CountsOutput::Counts,
            };
            generate(&run, &o, &device, &mut |_, _| {}).unwrap()
        };
        let a = sample_cells(ConditionChoice::Cluster("A".into()), 1.0, false, 3);
        let b = sample_cells(ConditionChoice::Cluster("B".into()), 1.0, false, 3);
        let (ca, cb) = (
            programme_contrast(&a.x.to_dense()),
            programme_contrast(&b.x.to_dense()),
        );
        // Real contrast: +1.8 for A, −1.8 for B.
        assert!(
            ca > 1.0 && cb < -1.0,
            "condition ignored: A {ca:.2}, B {cb:.2}"
        );
        assert_eq!(a.obs_column("celldiff_condition").unwrap().labels()[0], "A");
        // Same seed, same cells.
        let a2 = sample_cells(ConditionChoice::Cluster("A".into()), 1.0, false, 3);
        assert_eq!(a.x.to_dense(), a2.x.to_dense());
        // Holistic generation mixes both programmes (|contrast| well below a pure group).
        let h = sample_cells(ConditionChoice::Mix, -1.0, false, 4);
        assert!(programme_contrast(&h.x.to_dense()).abs() < 1.0);
        assert_eq!(
            h.obs_column("celldiff_condition").unwrap().labels()[0],
            HOLISTIC
        );
        // Post-guidance keeps better-scored cells than no post-guidance (same draw seed).
        let score = |ad: &AnnData| match ad.obs_column("celldiff_score").unwrap() {
            Column::Numeric(v) => v.iter().sum::<f64>() / v.len() as f64,
            _ => panic!("celldiff_score must be numeric"),
        };
        let off = sample_cells(ConditionChoice::Mix, 1.0, false, 5);
        let on = sample_cells(ConditionChoice::Mix, 1.0, true, 5);
        assert_eq!(on.n_obs(), 60);
        assert!(
            score(&on) > score(&off),
            "{} vs {}",
            score(&on),
            score(&off)
        );
        // Save and load round trip.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run");
        run.save(&p, false).unwrap();
        let back = ScldRun::load(&p, &device).unwrap();
        assert_eq!(back.conditions, run.conditions);
        let a3 = {
            let o = ScldGenerateOptions {
                n: 60,
                condition: ConditionChoice::Cluster("A".into()),
                sample: SampleOptions {
                    guidance: 1.0,
                    sampler: SamplerKind::Ddim,
                    steps: Some(25),
                    eta: 0.0,
                    seed: 3,
                    clip_x0: true,
                    use_ema: true,
                },
                post_guidance: false,
                keep: 0.8,
                observation: Observation::Mean,
                output: CountsOutput::Counts,
            };
            generate(&back, &o, &device, &mut |_, _| {}).unwrap()
        };
        assert_eq!(a.x.to_dense(), a3.x.to_dense());
        assert!(crate::run::Run::load(&p, &device).is_err());
    }
}
