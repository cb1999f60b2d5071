//! The argument groups shared by several subcommands (data, preprocessing, model and
//! training flags, generation options) and the scVAEDer subcommands' arguments; every range
//! is validated at parse time (`flags`), every choice is a clap `ValueEnum`.

use super::*;
use celldiff::diffvae::{LatentModelConfig, LatentModelKind};
use celldiff::tl::tsne::TsneOptions;

/// The method `--model` trains: scVAEDer (VAE + latent DDPM) or SCLD (autoencoder +
/// conditional latent diffusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// scVAEDer (Sadria & Layton, Genome Biology 2025).
    Scvaeder,
    /// SCLD (Wang et al., arXiv 2312.14220).
    Scld,
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
    pub(crate) fn stream_spec(&self) -> Result<Option<scvaeder::StreamSpec>> {
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
    /// VAE (SCLD: autoencoder) minibatch size [default: 128 on the CPU; on a GPU the largest
    /// of 128, 256, 512, 1024 that leaves ≥ 64 minibatches per epoch (1024 from ~73k cells)].
    #[arg(long, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_BATCH))]
    pub batch_size_vae: Option<usize>,
    /// VAE learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true, value_parser = flags::positive())]
    pub lr_vae: f64,
    /// Denoiser minibatch size [default: 256 on the CPU; on a GPU the largest of 256, 512,
    /// 1024, 2048 that leaves ≥ 64 minibatches per epoch (2048 from ~146k cells)].
    #[arg(long, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_BATCH))]
    pub batch_size_diffusion: Option<usize>,
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
    /// (Linear → activation → Dropout, the block of SCLD's autoencoder). scVAEDer only.
    /// Default: none with a count likelihood (nb, zinb), batch with gaussian. See
    /// docs/RESULTS.md, "VAE hidden block".
    #[arg(long)]
    pub vae_norm: Option<HiddenNorm>,
    /// Activation of the VAE's hidden layers: relu (the paper's) or silu. scVAEDer only.
    /// Default: silu with a count likelihood, relu with gaussian.
    #[arg(long)]
    pub vae_activation: Option<Activation>,
    /// The latent prior: diffusion (DDPM noise prediction, the papers' model) or flow
    /// (conditional flow matching with a linear path and velocity prediction, Lipman et al.
    /// 2023, on the same denoiser network; generate then integrates its ODE: --sampler ddpm =
    /// Euler over T steps, ddim = Euler over --steps (default 50), heun / midpoint = 2nd-order
    /// solvers over --steps (default 25, about 50 network evaluations)). interpolate, velocity
    /// and perturb use a flow run's linear path and ODE (Euler steps) where a diffusion run
    /// has its forward process and DDIM inversion; --t-start K then means the level with the
    /// signal-to-noise ratio of the β schedule at K. Default for scVAEDer: flow with a count
    /// likelihood (nb, zinb; with the none/silu block it gave the most realistic cells on
    /// every benchmark dataset, docs/RESULTS.md), diffusion with gaussian; for SCLD: diffusion.
    /// For perturb on count data, --vae-norm batch --vae-activation relu --prior diffusion
    /// predicted the Kang response better (docs/RESULTS.md, "Perturbation prediction").
    #[arg(long = "prior")]
    pub latent_prior: Option<Objective>,
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
            prior: self.latent_prior,
            library_model: self.library_model,
            ..TrainSpec::default()
        };
        if let Some(b) = self.batch_size_vae {
            spec.vae_train.batch_size = b;
            spec.device_batch.vae = false;
        }
        spec.vae_train.learning_rate = self.lr_vae;
        spec.vae_train.kl_weight = self.kl_weight;
        spec.vae_train.kl_warmup_epochs = self.kl_warmup;
        spec.vae_train.patience = self.patience;
        if let Some(b) = self.batch_size_diffusion {
            spec.diffusion_train.batch_size = b;
            spec.device_batch.diffusion = false;
        }
        spec.diffusion_train.learning_rate = self.lr_diffusion;
        spec.diffusion_train.ema_decay = self.ema_decay;
        spec.diffusion_train.patience = self.patience_diffusion;
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

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Run directory written by `celldiff train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Number of cells to generate.
    #[arg(short = 'n', long, default_value_t = 1000, allow_negative_numbers = true, value_parser = flags::count(1, flags::MAX_CELLS))]
    pub n: usize,
    /// Sampler: ddpm (ancestral, T steps) or ddim; on a flow-prior run ddpm/ddim are Euler
    /// steps and heun/midpoint its 2nd-order ODE solvers (flow runs only).
    #[arg(long, default_value = "ddpm")]
    pub sampler: SamplerKind,
    /// Sampling steps (default: T for ddpm, 50 for ddim, 25 for heun and midpoint).
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

/// DiffVAE training and t-SNE flags shared by `identify`, `identify-bench` and `classify`.
#[derive(Args, Debug, Clone)]
pub struct TrainFlags {
    /// Highly variable genes (seurat flavor) the model sees (0 = all genes).
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true, value_parser = super::flags::count(0, usize::MAX))]
    pub n_top_genes: usize,
    /// Encoder hidden widths h2,h1, outer first (decoder mirrored; the paper: 512,256).
    #[arg(long, default_value = "512,256", value_delimiter = ',', allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_WIDTH))]
    pub hidden: Vec<usize>,
    /// ReLU on the μ and log σ² heads, as the paper (then σ ≥ 1 and μ ≥ 0 for every cell).
    #[arg(long)]
    pub relu_heads: bool,
    /// λ, the weight of DiffVAE's MMD term (the published code: 1).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = super::flags::non_negative())]
    pub mmd_weight: f64,
    /// β, the weight of the VAE baseline's KL term.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = super::flags::non_negative())]
    pub kl_weight: f64,
    /// Training epochs over all cells.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_EPOCHS))]
    pub epochs: usize,
    /// Minibatch size (cells).
    #[arg(long, default_value_t = 128, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_BATCH))]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true, value_parser = super::flags::positive())]
    pub lr: f64,
    /// t-SNE perplexity (lowered to (n_cells − 1)/3 for few cells).
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true, value_parser = super::flags::positive())]
    pub perplexity: f64,
    /// t-SNE epochs.
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true, value_parser = super::flags::count(1, super::flags::MAX_EPOCHS))]
    pub tsne_epochs: usize,
    /// k-means restarts (best inertia kept).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = super::flags::count(1, 10_000))]
    pub kmeans_n_init: usize,
}

impl TrainFlags {
    /// The latent-model configuration (kind and size from the caller).
    pub(crate) fn latent(
        &self,
        kind: LatentModelKind,
        n_latent: usize,
        seed: u64,
    ) -> Result<LatentModelConfig> {
        let [h2, h1] = self.hidden[..] else {
            bail!(
                "--hidden: expected two widths h2,h1 (e.g. 512,256), got {:?}",
                self.hidden
            );
        };
        let cfg = LatentModelConfig {
            kind,
            n_latent,
            h1,
            h2,
            relu_heads: self.relu_heads,
            mmd_weight: self.mmd_weight,
            kl_weight: self.kl_weight,
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.lr,
            seed,
        };
        cfg.validate().context("model flags")?;
        Ok(cfg)
    }

    pub fn tsne(&self, seed: u64) -> Result<TsneOptions> {
        let t = TsneOptions {
            perplexity: self.perplexity,
            epochs: self.tsne_epochs,
            seed,
            ..TsneOptions::default()
        };
        t.validate().context("--perplexity / --tsne-epochs")?;
        Ok(t)
    }

    pub fn n_top_genes(&self) -> Option<usize> {
        (self.n_top_genes > 0).then_some(self.n_top_genes)
    }
}
