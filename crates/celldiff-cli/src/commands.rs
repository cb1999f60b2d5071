//! Subcommands of the `celldiff` binary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use celldiff::RunFiles;
use celldiff::anndata::AnnData;
use celldiff::backend::{self, DeviceChoice};
use celldiff::counts::LibraryModelKind;
use celldiff::io::output::{self, OutputKind};
use celldiff::io::{self, ReadOptions};
use celldiff::metrics::{EvalMetrics, EvalOptions};
use celldiff::models::{Activation, HiddenNorm, Likelihood};
use celldiff::observation::Observation;
use celldiff::pipeline::SamplerKind;
use celldiff::pp::{HvgFlavor, PreprocessConfig};
use celldiff::run_dir::DataSource;
use celldiff::schedulers::BetaSchedule;
use celldiff::scvaeder::Run;
use celldiff::scvaeder::{self, CountsOutput, GenerateOptions, Prior, TrainSpec};
use celldiff::train::Objective;

use crate::progress::Bars;
use crate::protocols::{bench, demo, scld_bench};

mod classify;
mod cluster;
mod evaluate;
pub(crate) mod flags;
mod graph;
mod identify;
mod interpolate;
mod perturb;
pub(crate) mod scld;
mod simulate;

/// The method `--model` trains: scVAEDer (VAE + latent DDPM) or SCLD (autoencoder +
/// conditional latent diffusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// scVAEDer (Sadria & Layton, Genome Biology 2025).
    Scvaeder,
    /// SCLD (Wang et al., arXiv 2312.14220).
    Scld,
}

/// The top-level `--help`: the subcommands grouped by what they are for (clap lists them in
/// one flat block). A unit test checks that every subcommand is listed here.
const HELP_TEMPLATE: &str = "\
{before-help}{name} {version}
{about-with-newline}
{usage-heading} {usage}

Data:
  preprocess             Run the preprocessing steps alone (scanpy pp)
  cluster                Cluster cells (scanpy pp + neighbors + Leiden/Louvain, optional UMAP)
  simulate               Seeded negative-binomial counts with cell-type programmes

scVAEDer (VAE + latent diffusion):
  train                  Train scVAEDer (or SCLD with --model scld) and write a run directory
  generate               Generate cells from a trained run (scVAEDer or SCLD)
  embed                  Add obsm['X_celldiff'] (the VAE posterior mean) to a dataset
  interpolate            Interpolate between two cell states in the diffusion prior
  velocity               Gene velocity along an interpolation
  perturb                Predict a perturbation response by latent arithmetic

SCLD (conditional latent diffusion; train --model scld, generate):
  scld-bench             SCLD results on one dataset: AUC/MMD, ω sweep, UMAP figure

DiffVAE:
  identify               Cell types, latent dimensions and high-weight genes
  classify               Cell-type classifier: classify train, classify predict
  shift                  Latent perturbation: shift cells towards a target type
  graph                  Graph-DiffVAE: cell graph, link AUC/AP, predicted links

Evaluation:
  evaluate               Compare generated to real cells (RF/kNN AUC, MMD, correlations)
  evaluate-perturbation  R² of predicted vs real stimulated cells

Benchmarks:
  demo                   Whole pipeline on the embedded pbmc68k_reduced demo data
  bench                  Throughput benchmark on a seeded synthetic matrix
  identify-bench         DiffVAE's clustering benchmark (ARI over models and latent sizes)

  help                   Print this message or the help of the given subcommand(s)

Options:
{options}
`celldiff <COMMAND> --help` describes a command's flags.
{after-help}";

/// celldiff: generative models of single-cell RNA-seq (scVAEDer, SCLD, DiffVAE).
///
/// Reads .h5ad (anndata ≥ 0.7) or 10x matrix.mtx folders, writes .h5ad files scanpy opens.
#[derive(Parser, Debug)]
#[command(
    name = "celldiff",
    version,
    about = "celldiff: generative models of single-cell RNA-seq (scVAEDer, SCLD, DiffVAE)",
    long_about = None,
    help_template = HELP_TEMPLATE
)]
pub struct Cli {
    /// Hide progress bars and informational messages.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// CPU threads for every stage (default: all available cores).
    #[arg(long, global = true, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_THREADS))]
    pub threads: Option<usize>,
    /// Device: auto (CUDA if built with --features cuda, else CPU), cpu or cuda.
    #[arg(long, global = true, default_value = "auto")]
    pub device: DeviceChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train scVAEDer (VAE + latent DDPM) and write a run directory.
    Train(Box<TrainArgs>),
    /// Generate cells from a trained run.
    Generate(GenerateArgs),
    /// Add obsm['X_celldiff'] (the VAE posterior mean) to a dataset.
    Embed(EmbedArgs),
    /// Run the preprocessing steps alone (scanpy pp).
    Preprocess(PreprocessArgs),
    /// Compare generated cells to real cells (RF/kNN AUC, MMD, correlations).
    Evaluate(evaluate::EvaluateArgs),
    /// Whole pipeline on the embedded pbmc68k_reduced demo data, with a comparison table.
    Demo(Box<demo::DemoArgs>),
    /// Throughput benchmark on a seeded synthetic matrix.
    Bench(bench::BenchArgs),
    /// Interpolate between two cell states in the diffusion prior (scVAEDer).
    Interpolate(Box<interpolate::InterpolateArgs>),
    /// Gene velocity along an interpolation: rank genes by their change per λ step.
    Velocity(interpolate::VelocityArgs),
    /// Predict a perturbation response by latent arithmetic (scGen / scVAEDer).
    Perturb(Box<perturb::PerturbArgs>),
    /// R² of predicted vs real stimulated cells (scGen reg_mean_plot / reg_var_plot).
    EvaluatePerturbation(perturb::EvaluatePerturbationArgs),
    /// SCLD results on one dataset: holistic and per-cluster AUC/MMD, ω sweep, UMAP figure.
    ScldBench(Box<scld_bench::ScldBenchArgs>),
    /// Cluster cells (scanpy pp + neighbors + Leiden/Louvain, optional UMAP): obs['leiden'].
    Cluster(cluster::ClusterArgs),
    /// Graph-DiffVAE: correlation graph of the cells, graph VAE, held-out link AUC/AP, predicted links.
    Graph(Box<graph::GraphArgs>),
    /// DiffVAE: `identify` (cell types, latent dimensions, high-weight genes) and `identify-bench`.
    #[command(flatten)]
    Identify(identify::IdentifyCommand),
    /// DiffVAE's cell-type classifier (MLP 256-512-256): `classify train` and `classify predict`.
    #[command(subcommand)]
    Classify(classify::ClassifyCommand),
    /// DiffVAE latent perturbation: shift a source type's cells along a target type's latent
    /// dimensions, decode, classify; count conversions and minimal gene sets.
    Shift(Box<classify::ShiftArgs>),
    /// Seeded negative-binomial counts with cell-type programmes, written in chunks (scale
    /// tests; `--cells 1000000` never holds the matrix in memory).
    Simulate(simulate::SimulateArgs),
}

/// Input selection shared by commands that read a dataset.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Input: .h5ad file or 10x directory (matrix.mtx[.gz], features/genes.tsv, barcodes.tsv).
    #[arg(long)]
    pub data: PathBuf,
    /// Use layers/<LAYER> as X.
    #[arg(long)]
    pub layer: Option<String>,
    /// Use raw/X (and raw/var) as X.
    #[arg(long)]
    pub use_raw: bool,
}

impl DataArgs {
    pub fn read(&self) -> Result<AnnData> {
        let opts = ReadOptions {
            layer: self.layer.clone(),
            use_raw: self.use_raw,
        };
        Ok(io::read(&self.data, &opts)?)
    }
}

/// Preprocessing flags (scanpy pp), applied in this order: filter_cells, filter_genes,
/// normalize_total, log1p, highly_variable_genes, scale / min-max.
#[derive(Args, Debug, Clone)]
pub struct PreprocessFlags {
    /// filter_cells: minimum number of expressed genes per cell.
    #[arg(long)]
    pub min_genes: Option<usize>,
    /// filter_genes: minimum number of cells expressing a gene.
    #[arg(long)]
    pub min_cells: Option<usize>,
    /// normalize_total target sum for count input (scVAEDer: 1e4). `median` (or `0`) = scanpy's
    /// `target_sum=None`, the median library size of the training cells.
    #[arg(long, default_value_t = 1e4, allow_negative_numbers = true, value_parser = flags::target_sum())]
    pub target_sum: f64,
    /// Force normalize_total + log1p on (default: only when the input looks like counts).
    #[arg(long, conflicts_with = "no_log1p")]
    pub log1p: bool,
    /// Force normalize_total + log1p off.
    #[arg(long)]
    pub no_log1p: bool,
    /// Number of highly variable genes (0 = keep all genes).
    #[arg(long)]
    pub n_top_genes: Option<usize>,
    /// HVG flavor: seurat (on log data) or seurat_v3 (on counts).
    #[arg(long, default_value = "seurat")]
    pub flavor: HvgFlavor,
    /// scale each gene to zero mean and unit variance.
    #[arg(long)]
    pub scale: bool,
    /// Clip scaled values at this value (scanpy max_value).
    #[arg(long, allow_negative_numbers = true, value_parser = flags::positive_f32())]
    pub max_value: Option<f32>,
    /// Min-max scale each gene to [0, 1].
    #[arg(long)]
    pub minmax: bool,
}

impl PreprocessFlags {
    pub fn config(&self, default_n_top: Option<usize>, subset: bool) -> Result<PreprocessConfig> {
        let flavor = self.flavor;
        let log1p = if self.log1p {
            Some(true)
        } else if self.no_log1p {
            Some(false)
        } else {
            None
        };
        let n_top = match self.n_top_genes {
            Some(0) => None,
            Some(n) => Some(n),
            None => default_n_top,
        };
        Ok(PreprocessConfig {
            min_genes: self.min_genes,
            min_cells: self.min_cells,
            target_sum: (self.target_sum > 0.0).then_some(self.target_sum),
            log1p,
            n_top_genes: n_top,
            flavor,
            subset,
            scale: self.scale,
            max_value: self.max_value,
            minmax: self.minmax,
        })
    }
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// obs column with cell labels (recorded with the run).
    #[arg(long)]
    pub labels_key: Option<String>,
    /// Exclude cells matching all of KEY=VALUE[,KEY=VALUE...] (e.g. "cell_type=CD4T,condition=stimulated").
    #[arg(long)]
    pub exclude: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub scld: scld::ScldTrainArgs,
    /// Read X from the .h5ad file block by block instead of loading it (atlases larger than
    /// memory): preprocessing statistics in streaming passes, VAE minibatches from shuffled
    /// blocks (--shuffle-block, --shuffle-buffer) read by a background thread.
    #[arg(long)]
    pub stream: bool,
    /// Chunk-then-buffer shuffling: cells per block of consecutive rows (default with
    /// --stream: 1024; without --stream the default is a full shuffle, and giving this flag
    /// reproduces a streamed run in memory).
    #[arg(long, allow_negative_numbers = true, value_parser = flags::count(1, 10_000_000))]
    pub shuffle_block: Option<usize>,
    /// Chunk-then-buffer shuffling: blocks per shuffle buffer (default 16).
    #[arg(long, allow_negative_numbers = true, value_parser = flags::count(1, 1_000_000))]
    pub shuffle_buffer: Option<usize>,
    /// Seed of every random step.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing run directory.
    #[arg(long)]
    pub force: bool,
}

impl TrainArgs {
    /// The training data in memory: `--data` read whole, `--labels-key` checked, `--exclude`
    /// applied, each step reported on `bars`.
    pub fn read_training_data(&self, bars: &Bars, threads: usize) -> Result<AnnData> {
        let mut adata = self.data.read()?;
        bars.println(format!(
            "read {} cells × {} genes from {} ({} threads, {} backend)",
            adata.n_obs(),
            adata.n_vars(),
            self.data.data.display(),
            threads,
            backend::cpu_backend_name()
        ));
        if let Some(k) = &self.labels_key {
            adata.obs_column(k)?;
        }
        if let Some(expr) = &self.exclude {
            let before = adata.n_obs();
            adata = apply_exclude(adata, expr)?;
            bars.println(format!(
                "--exclude {expr}: {} of {before} cells kept",
                adata.n_obs()
            ));
        }
        Ok(adata)
    }

    /// `--shuffle-block` / `--shuffle-buffer` as a stream spec (defaults filled in), or `None`
    /// for the full in-memory shuffle.
    fn stream_spec(&self) -> Result<Option<scvaeder::StreamSpec>> {
        let d = scvaeder::StreamSpec::default();
        let spec = scvaeder::StreamSpec {
            block_cells: self.shuffle_block.unwrap_or(d.block_cells),
            buffer_blocks: self.shuffle_buffer.unwrap_or(d.buffer_blocks),
        };
        if spec.block_cells == 0 || spec.buffer_blocks == 0 {
            bail!("--shuffle-block and --shuffle-buffer must be > 0");
        }
        let given = self.shuffle_block.is_some() || self.shuffle_buffer.is_some();
        Ok((self.stream || given).then_some(spec))
    }
}

/// Preprocessing, architecture, training and schedule flags shared by `train` and `demo`.
#[derive(Args, Debug)]
pub struct ModelArgs {
    #[command(flatten)]
    pub pp: PreprocessFlags,
    /// Model family: scvaeder (VAE + latent DDPM) or scld (autoencoder + conditional latent
    /// diffusion with pre- and post-guidance; `train` only).
    #[arg(long, value_enum, default_value_t = ModelKind::Scvaeder)]
    pub model: ModelKind,
    /// VAE epochs (default: ~150k cell passes, 30–300, with early stopping on a 10% validation
    /// split; trains each shared dataset in well under 5 minutes on 2 cores).
    #[arg(long, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_EPOCHS))]
    pub epochs_vae: Option<usize>,
    /// Diffusion epochs (default: about 4 optimisation steps per training cell, 2000–4000 steps).
    #[arg(long, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_EPOCHS))]
    pub epochs_diffusion: Option<usize>,
    /// Latent dimension n_latent.
    #[arg(long, default_value_t = 50, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_LATENT))]
    pub latent: usize,
    /// Encoder hidden widths, comma-separated (decoder mirrored).
    #[arg(long, default_value = "512,256", value_delimiter = ',', allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_WIDTH))]
    pub hidden: Vec<usize>,
    /// Dropout after each VAE hidden layer.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true, value_parser = flags::rate())]
    pub dropout: f64,
    /// Dropout in the decoder's hidden layers (default: --dropout).
    #[arg(long, allow_negative_numbers = true, value_parser = flags::rate())]
    pub dropout_decoder: Option<f64>,
    /// KL weight β (0.1: β = 1 collapses the posterior under the unit-variance Gaussian
    /// likelihood on log1p data; see docs/RESULTS.md).
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true, value_parser = flags::non_negative())]
    pub kl_weight: f64,
    /// KL warm-up epochs.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = flags::count(0, flags::MAX_EPOCHS))]
    pub kl_warmup: usize,
    /// VAE early-stopping patience (epochs).
    #[arg(long, default_value_t = 15, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_EPOCHS))]
    pub patience: usize,
    /// VAE minibatch size.
    #[arg(long, default_value_t = 128, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_BATCH))]
    pub batch_size_vae: usize,
    /// VAE learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true, value_parser = flags::positive())]
    pub lr_vae: f64,
    /// Denoiser minibatch size.
    #[arg(long, default_value_t = 256, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_BATCH))]
    pub batch_size_diffusion: usize,
    /// Denoiser peak learning rate (cosine decay to 10%).
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true, value_parser = flags::positive())]
    pub lr_diffusion: f64,
    /// Denoiser hidden width.
    #[arg(long, default_value_t = 512, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_WIDTH))]
    pub denoiser_width: usize,
    /// Denoiser hidden layers.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = flags::count(1, 64))]
    pub denoiser_depth: usize,
    /// Timestep embedding width.
    #[arg(long, default_value_t = 128, allow_negative_numbers = true, value_parser = flags::count(2, flags::MAX_WIDTH))]
    pub time_dim: usize,
    /// Diffusion steps T.
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true, value_parser = flags::count(2, flags::MAX_STEPS))]
    pub timesteps: usize,
    /// β schedule: linear, quadratic, sigmoid or cosine.
    #[arg(long, default_value = "linear")]
    pub beta_schedule: BetaSchedule,
    /// β₁ (scVAEDer: 1e-5).
    #[arg(long, default_value_t = 1e-5, allow_negative_numbers = true, value_parser = flags::open_fraction())]
    pub beta_start: f64,
    /// β_T (scVAEDer: 5e-3).
    #[arg(long, default_value_t = 5e-3, allow_negative_numbers = true, value_parser = flags::open_fraction())]
    pub beta_end: f64,
    /// Rescale the schedule to zero terminal SNR (ᾱ_T = 0).
    #[arg(long)]
    pub zero_terminal_snr: bool,
    /// Early stopping of the denoiser: stop after this many epochs without a lower
    /// validation loss of the EMA weights (noise-prediction loss of held-out latents at fixed
    /// timesteps and noise) and keep the best EMA weights (metrics.jsonl marks their epoch
    /// `"kept": true`). 0 = train every epoch and keep the last weights. Default: a fifth of
    /// the epochs, at least 20.
    #[arg(long, allow_negative_numbers = true, value_parser = flags::count(0, flags::MAX_EPOCHS))]
    pub patience_diffusion: Option<usize>,
    /// EMA decay of the denoiser weights.
    #[arg(long, default_value_t = 0.999, allow_negative_numbers = true, value_parser = flags::rate())]
    pub ema_decay: f64,
    /// Skip the count observation model (generated cells are then decoder means); saves
    /// its fit when the run is only used for interpolation or perturbation analyses.
    #[arg(long)]
    pub no_observation: bool,
    /// Decoder likelihood: nb (negative binomial on the counts, gene proportions
    /// ρ = softmax(f(z)), mean l·ρ with the cell's library size, one dispersion per gene, as
    /// scVI), zinb (NB with per-gene-and-cell dropout), or gaussian (MSE on log1p data, the
    /// scVAEDer/SCLD papers' setting). Default: nb when the counts can be recovered (raw
    /// counts, or log1p(normalize_total(counts)) like Kang), gaussian otherwise; gaussian
    /// with --no-observation. Applies to scVAEDer's VAE and to both SCLD latent models
    /// (--latent-model ae|vae), whose default stays gaussian (with the NB autoencoder SCLD's
    /// guided cells were less realistic; docs/RESULTS.md).
    #[arg(long)]
    pub likelihood: Option<Likelihood>,
    /// How a count-likelihood run's generated cells get their library size: cluster (the
    /// generated latent's nearest training cluster, a normal of ln l and ln s fitted there,
    /// as CFGen) or joint (the diffusion model diffuses [z, ln l, ln s] standardised, so the
    /// denoiser draws the size with the cell; the interpolation and perturbation analyses then
    /// refuse the run). scVAEDer only. See docs/RESULTS.md for the comparison.
    #[arg(long, default_value = "cluster")]
    pub library_model: LibraryModelKind,
    /// Normalisation of the VAE's hidden layers: batch (BatchNorm, the paper's) or none
    /// (Linear → activation → Dropout, the block of SCLD's autoencoder). scVAEDer only. See
    /// docs/RESULTS.md, "VAE hidden block".
    #[arg(long, default_value = "batch")]
    pub vae_norm: HiddenNorm,
    /// Activation of the VAE's hidden layers: relu (the paper's) or silu. scVAEDer only.
    #[arg(long, default_value = "relu")]
    pub vae_activation: Activation,
    /// The latent prior: diffusion (DDPM noise prediction, the papers' model) or flow
    /// (conditional flow matching with a linear path and velocity prediction, Lipman et al.
    /// 2023, on the same denoiser network; generate then integrates its ODE with Euler steps:
    /// --sampler ddpm = T steps, ddim = --steps, default 50). Flow runs cannot be used by
    /// interpolate/perturb (they need the diffusion's forward process).
    #[arg(long = "prior", default_value = "diffusion")]
    pub latent_prior: Objective,
}

impl ModelArgs {
    /// The [`TrainSpec`] these flags describe.
    pub fn spec(&self, labels_key: Option<String>, seed: u64) -> Result<TrainSpec> {
        match self.model {
            ModelKind::Scvaeder => self.spec_unchecked(labels_key, seed),
            ModelKind::Scld => bail!(
                "--model scld: this command only handles scvaeder; use `celldiff train --model scld`"
            ),
        }
    }

    /// The [`TrainSpec`] of the shared flags, whatever `--model` says (SCLD reuses it).
    pub fn spec_unchecked(&self, labels_key: Option<String>, seed: u64) -> Result<TrainSpec> {
        let mut spec = TrainSpec {
            preprocess: self.pp.config(Some(2000), true)?,
            hidden: self.hidden.clone(),
            n_latent: self.latent,
            dropout: self.dropout,
            vae_epochs: self.epochs_vae,
            denoiser_width: self.denoiser_width,
            denoiser_depth: self.denoiser_depth,
            time_dim: self.time_dim,
            diffusion_epochs: self.epochs_diffusion,
            labels_key,
            seed,
            fit_observation: !self.no_observation,
            likelihood: self.likelihood,
            decoder_dropout: self.dropout_decoder,
            vae_norm: self.vae_norm,
            vae_activation: self.vae_activation,
            library_model: self.library_model,
            ..TrainSpec::default()
        };
        spec.vae_train.batch_size = self.batch_size_vae;
        spec.vae_train.learning_rate = self.lr_vae;
        spec.vae_train.kl_weight = self.kl_weight;
        spec.vae_train.kl_warmup_epochs = self.kl_warmup;
        spec.vae_train.patience = self.patience;
        spec.diffusion_train.batch_size = self.batch_size_diffusion;
        spec.diffusion_train.learning_rate = self.lr_diffusion;
        spec.diffusion_train.ema_decay = self.ema_decay;
        spec.diffusion_train.patience = self.patience_diffusion;
        spec.diffusion_train.objective = self.latent_prior;
        spec.schedule.num_train_timesteps = self.timesteps;
        spec.schedule.beta_schedule = self.beta_schedule;
        spec.schedule.beta_start = self.beta_start;
        spec.schedule.beta_end = self.beta_end;
        spec.schedule.zero_terminal_snr = self.zero_terminal_snr;
        if self.latent == 0 || self.hidden.is_empty() || self.hidden.contains(&0) {
            bail!("--latent and --hidden must be positive");
        }
        Ok(spec)
    }
}

/// Whether each cell matches every `KEY=VALUE` of `expr` (`flag` names the option in errors).
pub fn matches_all(adata: &AnnData, expr: &str, flag: &str) -> Result<Vec<bool>> {
    let mut conds = Vec::new();
    for part in expr.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = part
            .split_once('=')
            .with_context(|| format!("{flag}: `{part}` is not KEY=VALUE"))?;
        let labels = adata
            .obs_column(k.trim())
            .with_context(|| format!("{flag} `{expr}`"))?
            .labels();
        conds.push((labels, v.trim().to_string()));
    }
    if conds.is_empty() {
        bail!("{flag}: empty expression (expected KEY=VALUE[,KEY=VALUE...])");
    }
    Ok((0..adata.n_obs())
        .map(|i| conds.iter().all(|(l, v)| &l[i] == v))
        .collect())
}

/// Keeps the cells that match every `KEY=VALUE` of `expr`.
pub fn select_where(adata: AnnData, expr: &str, flag: &str) -> Result<AnnData> {
    let m = matches_all(&adata, expr, flag)?;
    let keep: Vec<usize> = (0..adata.n_obs()).filter(|&i| m[i]).collect();
    if keep.is_empty() {
        bail!("{flag} `{expr}` matches no cell");
    }
    Ok(adata.select_obs(&keep))
}

/// Keeps the cells that do not match every `KEY=VALUE` of `expr`.
pub fn apply_exclude(adata: AnnData, expr: &str) -> Result<AnnData> {
    let m = matches_all(&adata, expr, "--exclude")?;
    let keep: Vec<usize> = (0..adata.n_obs()).filter(|&i| !m[i]).collect();
    if keep.is_empty() {
        bail!("--exclude `{expr}` removes every cell");
    }
    Ok(adata.select_obs(&keep))
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Run directory written by `celldiff train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Number of cells to generate.
    #[arg(short = 'n', long, default_value_t = 1000, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_CELLS))]
    pub n: usize,
    /// Sampler: ddpm (ancestral, T steps) or ddim.
    #[arg(long, default_value = "ddpm")]
    pub sampler: SamplerKind,
    /// Sampling steps (default: T for ddpm, 50 for ddim).
    #[arg(long, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_STEPS))]
    pub steps: Option<usize>,
    /// DDIM η (0 = deterministic).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = flags::probability())]
    pub eta: f64,
    /// Latent source: diffusion (scVAEDer) or vae (z ~ N(0, I), the baseline).
    #[arg(long, default_value = "diffusion")]
    pub prior: Prior,
    /// Do not clip x̂₀ to the training latents' range during sampling.
    #[arg(long)]
    pub no_clip: bool,
    /// Sample with the last denoiser weights instead of the EMA weights.
    #[arg(long)]
    pub no_ema: bool,
    /// How decoded latents become cells: counts (sample UMI counts through the run's count
    /// observation model: sparse, discrete cells like real data) or mean (the decoder mean, as
    /// scVAEDer publishes; smooth and not sparse).
    #[arg(long, default_value = "counts")]
    pub observation: Observation,
    /// What X holds for a run (scVAEDer or SCLD) trained with --likelihood nb/zinb: counts (integer counts as
    /// CSR float32, like the user's input; the model's log1p-normalised space goes to
    /// layers['log1p_norm']) or log1p (the model's space in X, the counts in
    /// layers['counts']). Both write obs['n_counts'].
    #[arg(long, default_value = "counts")]
    pub output: CountsOutput,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub scld: scld::ScldGenerateArgs,
    /// Output .h5ad.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

impl GenerateArgs {
    pub fn options(&self) -> Result<GenerateOptions> {
        let (sampler, prior) = (self.sampler, self.prior);
        Ok(GenerateOptions {
            n: self.n,
            prior,
            sampler,
            steps: self.steps,
            eta: self.eta,
            seed: self.seed,
            clip_x0: !self.no_clip,
            use_ema: !self.no_ema,
            observation: self.observation,
            output: self.output,
        })
    }
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Run directory.
    #[arg(long)]
    pub run: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output .h5ad: a copy of the input with obsm[KEY] added (or replaced); everything else
    /// (X and its dtype, layers, raw, obs, var, obsm, varm, obsp, uns) is kept as stored.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// obsm key of the latent means (scanpy's key_added), e.g. for
    /// `sc.pp.neighbors(adata, use_rep=KEY)`.
    #[arg(long, default_value = "X_celldiff")]
    pub key_added: String,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct PreprocessArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub pp: PreprocessFlags,
    /// Keep only the highly variable genes in X.
    #[arg(long)]
    pub subset: bool,
    /// Output .h5ad.
    #[arg(short = 'o', long)]
    pub out: PathBuf,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
}

pub fn device(choice: DeviceChoice) -> Result<celldiff::Device> {
    Ok(backend::device(choice)?)
}

pub fn run(cli: Cli) -> Result<()> {
    let threads = backend::set_threads(cli.threads)?;
    // Every command runs on a worker of the rayon pool (see `backend::in_pool`).
    backend::in_pool(move || run_command(cli, threads))
}

fn run_command(cli: Cli, threads: usize) -> Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Train(a) => train(*a, cli.device, quiet, threads),
        Command::Generate(a) => generate(a, cli.device, quiet),
        Command::Embed(a) => embed(a, cli.device, quiet),
        Command::Preprocess(a) => preprocess(a, quiet),
        Command::Evaluate(a) => evaluate::run(a, cli.device, quiet),
        Command::Demo(a) => demo::run(*a, cli.device, quiet, threads),
        Command::Bench(a) => bench::run(a, cli.device, quiet, threads),
        Command::Interpolate(a) => interpolate::run_interpolate(*a, cli.device, quiet),
        Command::Velocity(a) => interpolate::run_velocity(a, quiet),
        Command::Perturb(a) => perturb::run_perturb(*a, cli.device, quiet),
        Command::EvaluatePerturbation(a) => perturb::run_evaluate(a, quiet),
        Command::ScldBench(a) => scld_bench::run(*a, cli.device, quiet),
        Command::Cluster(a) => cluster::run(a, quiet),
        Command::Graph(a) => graph::run(*a, cli.device, quiet),
        Command::Identify(c) => identify::run(c, cli.device, quiet),
        Command::Classify(c) => classify::run(c, cli.device, quiet),
        Command::Shift(a) => classify::run_shift(*a, cli.device, quiet),
        Command::Simulate(a) => simulate::run(a, quiet),
    }
}

fn train(a: TrainArgs, dev: DeviceChoice, quiet: bool, threads: usize) -> Result<()> {
    if a.model.model == ModelKind::Scld {
        if a.stream || a.shuffle_block.is_some() || a.shuffle_buffer.is_some() {
            bail!(
                "--stream / --shuffle-block / --shuffle-buffer: only --model scvaeder streams \
                 (SCLD's cluster conditions need the whole matrix)"
            );
        }
        return scld::train(a, dev, quiet, threads);
    }
    if a.scld.condition_key.is_some() || a.scld.leiden_resolution.is_some() {
        bail!("--condition-key / --leiden-resolution need --model scld");
    }
    check_run_out(&a.out, a.force, &[&a.data.data])?;
    let mut spec = a.model.spec(a.labels_key.clone(), a.seed)?;
    let stream = a.stream_spec()?;
    if let Some(st) = stream {
        spec.vae_train.shuffle = celldiff::train::Shuffle::Blocks {
            block_cells: st.block_cells,
            buffer_blocks: st.buffer_blocks,
        };
    }
    let device = device(dev)?;
    let mut bars = Bars::new(quiet);
    let source = DataSource {
        path: a.data.data.display().to_string(),
        layer: a.data.layer.clone(),
        use_raw: a.data.use_raw,
        exclude: a.exclude.clone(),
    };
    let start = Instant::now();
    let run = match (a.stream, stream) {
        (true, Some(st)) => train_streamed(&a, &spec, st, &source, &device, &mut bars, threads)?,
        _ => {
            let adata = a.read_training_data(&bars, threads)?;
            scvaeder::fit(&adata, &spec, &source, &device, &mut bars)?
        }
    };
    // The preprocessing messages were printed when preprocessing ran (`Observer::message`).
    bars.finish_step();
    bars.println(format!(
        "noise schedule: {:?} β {}…{}, T = {}, ᾱ_T = {:.4}{}",
        spec.schedule.beta_schedule,
        spec.schedule.beta_start,
        spec.schedule.beta_end,
        spec.schedule.num_train_timesteps,
        run.config.alphas_cumprod_terminal,
        if run.config.alphas_cumprod_terminal > 0.01 {
            " (x_T is not N(0, I); see --zero-terminal-snr)"
        } else {
            ""
        }
    ));
    match (&run.observation, &run.library) {
        (_, Some(l)) => bars.println(format!(
            "likelihood {}: library-size model with {} clusters (median library {:.0} counts \
             over the model genes); generated cells are NB counts",
            run.vae.likelihood().name(),
            l.clusters.len(),
            l.median_library
        )),
        (Some(o), None) => bars.println(format!(
            "count observation model: {} training size factors, NB dispersion φ = {} \
             (zero fraction {:.3} real vs {:.3} re-sampled)",
            o.size_factors.len(),
            o.dispersion,
            o.zero_fraction_real,
            o.zero_fraction_model
        )),
        (None, None) => bars.println(
            "no count observation model (the data are not log1p-normalised counts): generated \
             cells are decoder means",
        ),
    }
    run.save(&a.out, a.force).map_err(appeared_meanwhile)?;
    bars.println(format!(
        "trained on {} cells × {} genes in {:.1}s; wrote {}",
        run.config.n_cells,
        run.genes.len(),
        start.elapsed().as_secs_f64(),
        a.out.display()
    ));
    Ok(())
}

/// `train --stream`: opens the file for block reads, applies `--exclude` on `obs`, and trains
/// without loading X.
fn train_streamed(
    a: &TrainArgs,
    spec: &TrainSpec,
    stream: scvaeder::StreamSpec,
    source: &DataSource,
    device: &celldiff::Device,
    bars: &mut Bars,
    threads: usize,
) -> Result<Run> {
    let path = &a.data.data;
    if path.is_dir() {
        bail!(
            "--stream reads an .h5ad file block by block; {} is a directory (10x matrix.mtx is \
             read whole: drop --stream, or convert it to .h5ad with `celldiff preprocess`)",
            path.display()
        );
    }
    let opts = ReadOptions {
        layer: a.data.layer.clone(),
        use_raw: a.data.use_raw,
    };
    let reader = celldiff::io::H5adStream::open(path, &opts)?;
    let meta = reader.metadata();
    bars.println(format!(
        "streaming {} cells × {} genes from {} ({}, blocks of {} cells, {} blocks per shuffle \
         buffer; {} threads, {} backend)",
        meta.n_obs(),
        meta.n_vars(),
        path.display(),
        reader.field(),
        stream.block_cells,
        stream.buffer_blocks,
        threads,
        backend::cpu_backend_name()
    ));
    if let Some(k) = &a.labels_key {
        meta.obs_column(k)?;
    }
    let cells: Vec<usize> = match &a.exclude {
        Some(expr) => {
            let m = matches_all(meta, expr, "--exclude")?;
            let keep: Vec<usize> = (0..meta.n_obs()).filter(|&i| !m[i]).collect();
            if keep.is_empty() {
                bail!("--exclude `{expr}` removes every cell");
            }
            bars.println(format!(
                "--exclude {expr}: {} of {} cells kept",
                keep.len(),
                meta.n_obs()
            ));
            keep
        }
        None => (0..meta.n_obs()).collect(),
    };
    Ok(scvaeder::fit_stream(
        reader, cells, spec, stream, source, device, bars,
    )?)
}

/// Loads a run, with the file named in the error.
pub fn load_run(path: &Path, device: &celldiff::Device) -> Result<Run> {
    Run::load(path, device).with_context(|| format!("loading run {}", path.display()))
}

fn generate(a: GenerateArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    if scld::is_scld_run(&a.run) {
        return scld::generate(a, dev, quiet);
    }
    if a.scld.any() {
        bail!(
            "--condition, --condition-mix, --guidance and --post-guidance need an SCLD run \
             (`celldiff train --model scld`); {} is not one",
            a.run.display()
        );
    }
    check_out(&a.out, a.force, &[&a.run])?;
    let opts = a.options()?;
    let device = device(dev)?;
    let run = load_run(&a.run, &device)?;
    if run.library.is_none() && opts.output == CountsOutput::Log1p {
        bail!(
            "--output log1p: {} has a Gaussian decoder, whose X is already the model's space; \
             --output only applies to runs trained with --likelihood nb/zinb",
            a.run.display()
        );
    }
    let bars = Bars::new(quiet);
    let start = Instant::now();
    let pb = bars.bar(1, "sampling");
    let out = scvaeder::generate(&run, &opts, &device, &mut |i, n| {
        pb.set_length(n as u64);
        pb.set_position(i as u64);
    })?;
    pb.finish_and_clear();
    write_h5ad_out(&a.out, a.force, &out)?;
    bars.println(format!(
        "generated {} cells × {} genes in {:.1}s; wrote {}",
        out.n_obs(),
        out.n_vars(),
        start.elapsed().as_secs_f64(),
        a.out.display()
    ));
    Ok(())
}

fn embed(a: EmbedArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    if a.key_added.is_empty() || a.key_added.contains('/') || a.key_added == "." {
        return Err(celldiff::Error::Param(format!(
            "--key-added `{}` must be a non-empty name without `/`",
            a.key_added
        ))
        .into());
    }
    check_out(&a.out, a.force, &[&a.run, &a.data.data])?;
    let device = device(dev)?;
    let run = load_run(&a.run, &device)?;
    let adata = a.data.read()?;
    let z = scvaeder::embed(&run, &adata, &device).with_context(|| {
        format!(
            "embedding {} with run {}",
            a.data.data.display(),
            a.run.display()
        )
    })?;
    let n_obs = adata.n_obs();
    drop(adata);
    // An annotated copy of the input: only obsm[key] changes.
    let mut ann = io::h5ad::Annotations::default();
    ann.set_obsm(&a.key_added, z);
    write_annotated_out(&a.out, a.force, &a.data.data, &ann)?;
    if !quiet {
        eprintln!(
            "wrote obsm['{}'] for {n_obs} cells to {}",
            a.key_added,
            a.out.display()
        );
    }
    Ok(())
}

fn preprocess(a: PreprocessArgs, quiet: bool) -> Result<()> {
    check_out(&a.out, a.force, &[&a.data.data])?;
    let cfg = a.pp.config(None, a.subset)?;
    let adata = a.data.read()?;
    let (out, fitted) = celldiff::pp::fit_transform(&adata, &cfg)?;
    if !quiet {
        for m in &fitted.messages {
            eprintln!("preprocess: {m}");
        }
    }
    let mut out = out;
    out.uns
        .insert("celldiff_preprocess".into(), serde_json::to_value(&fitted)?);
    write_h5ad_out(&a.out, a.force, &out)?;
    if !quiet {
        eprintln!(
            "wrote {} cells × {} genes to {}",
            out.n_obs(),
            out.n_vars(),
            a.out.display()
        );
    }
    Ok(())
}

/// Prints a metrics table (one row per method).
pub fn print_table(rows: &[(String, EvalMetrics)]) {
    println!(
        "{:<18} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>7} {:>7}",
        "method",
        "rf_auc",
        "knn_auc",
        "mmd",
        "mean_r",
        "mean_rho",
        "var_r",
        "corr_mad",
        "zf_r",
        "n_real",
        "n_gen"
    );
    for (name, m) in rows {
        println!(
            "{:<18} {:>7.3} {:>7.3} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>8.4} {:>7.3} {:>7} {:>7}",
            name,
            m.rf_auc,
            m.knn_auc,
            m.mmd,
            m.mean_pearson,
            m.mean_spearman,
            m.var_pearson,
            m.corr_mad,
            m.zero_fraction_pearson,
            m.n_real,
            m.n_generated
        );
    }
}

/// Default evaluation options with a seed.
pub fn eval_options(seed: u64) -> EvalOptions {
    EvalOptions {
        seed,
        ..EvalOptions::default()
    }
}

/// The files a command with several outputs has written so far. Unless [`Written::keep`] is
/// called at the end, they are removed again when this is dropped, so a command that fails
/// half-way (e.g. its second PNG) leaves none of its outputs behind.
#[derive(Default)]
pub struct Written(Vec<PathBuf>);

impl Written {
    /// Records `path` as written.
    pub fn push(&mut self, path: &Path) {
        self.0.push(path.to_path_buf());
    }

    /// Keeps everything written (the command succeeded).
    pub fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `text` to the output file `path` safely ([`output::write_file`]): a temporary sibling
/// (removed on every error path), published without replacing anything unless `force`, and then
/// only a regular file.
pub fn write_atomic(path: &Path, force: bool, text: &str) -> Result<()> {
    output::write_file(path, force, |tmp| {
        std::fs::write(tmp, text).map_err(|e| celldiff::Error::io(tmp, e))
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// Writes `adata` to the output `.h5ad` `path` safely ([`output::write_file`]).
pub fn write_h5ad_out(path: &Path, force: bool, adata: &AnnData) -> Result<()> {
    Ok(output::write_file(path, force, |tmp| {
        io::write_h5ad(tmp, adata)
    })?)
}

/// Writes `out` safely ([`output::write_file`]) as an annotated copy of the input `data`
/// ([`io::h5ad::write_annotated`]: everything of the input kept, `ann` added or replaced).
pub fn write_annotated_out(
    out: &Path,
    force: bool,
    data: &Path,
    ann: &io::h5ad::Annotations,
) -> Result<()> {
    Ok(output::write_file(out, force, |tmp| {
        io::h5ad::write_annotated(data, tmp, ann)
    })?)
}

/// [`output::write_file`] for a writer that returns an `anyhow` error (kept as it is: its
/// context and exit code): `write` creates the file at the temporary path it is given.
pub fn write_out(path: &Path, force: bool, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut failed: Option<anyhow::Error> = None;
    let published = output::write_file(path, force, |tmp| {
        write(tmp).map_err(|e| {
            let msg = format!("{e:#}");
            failed = Some(e);
            celldiff::Error::Internal(msg)
        })
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(published?),
    }
}

/// Checks the output file `out` before any work ([`output::check_output`]): refused if it is
/// one of `inputs` or holds one, a directory, link, FIFO or device; exists without `force`.
pub fn check_out(out: &Path, force: bool, inputs: &[&Path]) -> Result<()> {
    Ok(output::check_output(out, force, OutputKind::File, inputs)?)
}

/// Checks the output run directory `out` before any work ([`output::check_output`] with
/// [`OutputKind::RunDir`]).
pub fn check_run_out(out: &Path, force: bool, inputs: &[&Path]) -> Result<()> {
    Ok(output::check_output(
        out,
        force,
        OutputKind::RunDir,
        inputs,
    )?)
}

/// An error of a final write after the command-start check passed: "already exists" then
/// means the output appeared while the command worked.
pub fn appeared_meanwhile(e: celldiff::Error) -> celldiff::Error {
    match e {
        celldiff::Error::AlreadyExists { path } => celldiff::Error::Refused {
            path,
            reason: "appeared meanwhile (another process wrote it while this one worked); \
                     nothing was replaced and this command's output was discarded"
                .into(),
        },
        e => e,
    }
}

#[cfg(test)]
mod cli_tests {
    use clap::CommandFactory;

    /// clap's own consistency checks (unique argument ids, valid defaults) for every
    /// subcommand; without this a clash only shows when that subcommand is run.
    #[test]
    fn every_subcommand_passes_clap_debug_asserts() {
        super::Cli::command().debug_assert();
    }

    /// The grouped top-level help lists every subcommand clap knows.
    #[test]
    fn grouped_help_lists_every_subcommand() {
        for sub in super::Cli::command().get_subcommands() {
            let line = format!("\n  {} ", sub.get_name());
            assert!(
                super::HELP_TEMPLATE.contains(&line),
                "`{}` is missing from HELP_TEMPLATE",
                sub.get_name()
            );
        }
    }
}
