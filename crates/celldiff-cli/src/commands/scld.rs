//! SCLD on the command line: `celldiff train --model scld …` and `celldiff generate` on an SCLD
//! run (conditions, guidance ω, post-guidance). The science is in [`celldiff::scld`].

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use celldiff::RunFiles;
use celldiff::anndata::AnnData;
use celldiff::backend::DeviceChoice;
use celldiff::models::{Architecture, Fusion};
use celldiff::run_dir::DataSource;
use celldiff::run_dir::read_model_name;
use celldiff::scld::{
    self, ConditionChoice, DEFAULT_GUIDANCE, LatentKind, SampleOptions, ScldGenerateOptions,
    ScldRun, ScldSpec,
};

use super::{GenerateArgs, ModelArgs, TrainArgs, device};
use crate::progress::Bars;
use celldiff::scvaeder::{CountsOutput, Prior};

/// SCLD flags of `celldiff train` (used with `--model scld`).
#[derive(Args, Debug, Clone)]
pub struct ScldTrainArgs {
    /// SCLD latent model: ae (SCLD's autoencoder, Eq. 3–6) or vae (scVAEDer's VAE).
    #[arg(long, default_value = "ae")]
    pub latent_model: LatentKind,
    /// obs column whose categories are the conditions (e.g. bulk_labels, cell_type).
    #[arg(long, conflicts_with = "leiden_resolution")]
    pub condition_key: Option<String>,
    /// Conditions from Leiden clusters of the training cells at this resolution (scanpy
    /// workflow: HVG 2000, scale, PCA 50, 15 neighbours); stored as obs key `leiden`.
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::positive())]
    pub leiden_resolution: Option<f64>,
    /// Condition fusion: add (SCLD's best), concat or attention.
    #[arg(long, default_value = "add")]
    pub fusion: Fusion,
    /// Denoiser body: mlp or unet (residual U-Net over the feature width).
    #[arg(long, default_value = "mlp")]
    pub denoiser: Architecture,
    /// Probability p of training on the holistic condition (classifier-free guidance).
    #[arg(long, default_value_t = 0.15, allow_negative_numbers = true, value_parser = super::flags::probability())]
    pub cond_drop: f64,
    /// Do not train the post-guidance Scorer.
    #[arg(long)]
    pub no_scorer: bool,
    /// What the Scorer looks at: genes (generated cells as returned, count-sampled) or latent.
    #[arg(long, default_value = "genes")]
    pub scorer_space: celldiff::scld::ScorerSpace,
    /// Guidance ω of the generated cells the Scorer learns to reject.
    #[arg(long, default_value_t = DEFAULT_GUIDANCE, allow_negative_numbers = true, value_parser = super::flags::finite())]
    pub scorer_guidance: f64,
}

/// The [`ScldSpec`] of the shared model flags plus the SCLD flags.
pub fn spec(m: &ModelArgs, s: &ScldTrainArgs, seed: u64) -> Result<ScldSpec> {
    let (latent_model, fusion, architecture, scorer_space) =
        (s.latent_model, s.fusion, s.denoiser, s.scorer_space);
    if !(0.0..=1.0).contains(&s.cond_drop) {
        bail!("--cond-drop must be in [0, 1], got {}", s.cond_drop);
    }
    // The scVAEDer spec carries every shared flag (and validates them).
    let base = m.spec_unchecked(None, seed)?;
    if base.decoder_dropout.is_some() {
        bail!("--dropout-decoder is only used by --model scvaeder");
    }
    if base.library_model != celldiff::counts::LibraryModelKind::Cluster {
        bail!("--library-model joint is only used by --model scvaeder");
    }
    if base.vae_norm.is_some() || base.vae_activation.is_some() {
        bail!("--vae-norm and --vae-activation are only used by --model scvaeder");
    }
    let mut diffusion_train = base.diffusion_train;
    // SCLD's default prior stays the paper's DDPM: with the flow prior its classifier-free
    // guidance at ω = 1 over-shoots (docs/RESULTS.md, "SCLD with the count decoder").
    diffusion_train.objective = base.prior.unwrap_or_default();
    let mut spec = ScldSpec {
        preprocess: base.preprocess,
        latent_model,
        hidden: base.hidden,
        n_latent: base.n_latent,
        dropout: base.dropout,
        latent_train: base.vae_train,
        latent_epochs: base.vae_epochs,
        denoiser_width: base.denoiser_width,
        denoiser_depth: base.denoiser_depth,
        time_dim: base.time_dim,
        fusion,
        architecture,
        cond_drop: s.cond_drop,
        diffusion_train,
        diffusion_epochs: base.diffusion_epochs,
        schedule: base.schedule,
        scorer: !s.no_scorer,
        scorer_guidance: s.scorer_guidance,
        scorer_space,
        fit_observation: base.fit_observation,
        likelihood: base.likelihood,
        seed,
        device_batch: base.device_batch,
        ..ScldSpec::default()
    };
    spec.scorer_train.seed = seed;
    Ok(spec)
}

/// Puts the condition labels into `obs` (Leiden clusters when asked) and returns their key.
pub fn conditions_key(
    adata: &mut AnnData,
    s: &ScldTrainArgs,
    seed: u64,
    bars: &Bars,
) -> Result<String> {
    match (&s.condition_key, s.leiden_resolution) {
        (Some(k), _) => {
            adata
                .obs_column(k)
                .with_context(|| format!("--condition-key {k}"))?;
            Ok(k.clone())
        }
        (None, Some(r)) => {
            let t = Instant::now();
            let k = scld::add_leiden_conditions(adata, r, seed).context("--leiden-resolution")?;
            bars.println(format!(
                "leiden (resolution {r}): {k} clusters on {} cells in {:.1}s",
                adata.n_obs(),
                t.elapsed().as_secs_f64()
            ));
            Ok("leiden".into())
        }
        (None, None) => bail!(
            "--model scld needs conditions: --condition-key KEY (an obs column of labels) or \
             --leiden-resolution R (Leiden clusters)"
        ),
    }
}

/// `celldiff train --model scld`.
pub fn train(a: TrainArgs, dev: DeviceChoice, quiet: bool, threads: usize) -> Result<()> {
    super::check_run_out(&a.out, a.force, &[&a.data.data])?;
    let spec = spec(&a.model, &a.scld, a.seed)?;
    let device = device(dev)?;
    let mut bars = Bars::new(quiet);
    let mut adata = a.read_training_data(&bars, threads)?;
    let key = conditions_key(&mut adata, &a.scld, a.seed, &bars)?;
    let source = DataSource {
        path: a.data.data.display().to_string(),
        layer: a.data.layer.clone(),
        use_raw: a.data.use_raw,
        exclude: a.exclude.clone(),
    };
    let start = Instant::now();
    let run = scld::fit(
        &adata,
        &key,
        a.scld.leiden_resolution,
        &spec,
        &source,
        &device,
        &mut bars,
    )?;
    for m in &run.preprocess.messages {
        bars.println(format!("preprocess: {m}"));
    }
    bars.println(format!(
        "SCLD: {} conditions from obs['{key}'] + holistic; latent {:?}, denoiser {:?}/{:?}, p = {}{}",
        run.conditions.n_clusters(),
        spec.latent_model,
        spec.architecture,
        spec.fusion,
        spec.cond_drop,
        match run.config.scorer_accuracy {
            Some(acc) => format!("; Scorer held-out accuracy {acc:.3}"),
            None => String::new(),
        }
    ));
    run.save(&a.out, a.force)
        .map_err(super::appeared_meanwhile)?;
    bars.println(format!(
        "trained on {} cells × {} genes in {:.1}s; wrote {}",
        run.config.n_cells,
        run.genes.len(),
        start.elapsed().as_secs_f64(),
        a.out.display()
    ));
    Ok(())
}

/// Generation flags that only apply to SCLD runs.
#[derive(Args, Debug, Clone)]
pub struct ScldGenerateArgs {
    /// SCLD: generate cells of this condition (a category of the run's condition key).
    #[arg(long, conflicts_with = "condition_mix")]
    pub condition: Option<String>,
    /// SCLD: generate every condition in its training proportions (the default).
    #[arg(long)]
    pub condition_mix: bool,
    /// SCLD: classifier-free guidance weight ω (−1 = holistic generation, no guidance).
    #[arg(long, allow_negative_numbers = true, value_parser = super::flags::finite())]
    pub guidance: Option<f64>,
    /// SCLD: post-guidance by the run's Scorer, on or off (default: on when the run has one).
    #[arg(long)]
    pub post_guidance: Option<String>,
    /// SCLD: fraction of the best-scored cells kept by post-guidance.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true, value_parser = super::flags::share())]
    pub keep: f64,
}

impl ScldGenerateArgs {
    /// Whether any SCLD-only flag was given.
    pub fn any(&self) -> bool {
        self.condition.is_some()
            || self.condition_mix
            || self.guidance.is_some()
            || self.post_guidance.is_some()
    }
}

/// Whether the run directory holds an SCLD run.
pub fn is_scld_run(run: &Path) -> bool {
    read_model_name(&run.join("config.json")).is_ok_and(|m| m == "scld")
}

/// The [`ScldGenerateOptions`] of `celldiff generate` flags for `run`.
pub fn generate_options(a: &GenerateArgs, run: &ScldRun) -> Result<ScldGenerateOptions> {
    let s = &a.scld;
    let requested = match s.post_guidance.as_deref() {
        None => None,
        Some("on") => Some(true),
        Some("off") => Some(false),
        Some(o) => bail!("--post-guidance: `{o}` (expected on or off)"),
    };
    let (post, warning) = scld::decide_post_guidance(run, requested);
    if let Some(w) = warning {
        eprintln!("warning: {w}");
        for hint in super::flags::hints(&w) {
            eprintln!("hint: {hint}");
        }
    }
    if a.prior != Prior::Diffusion {
        bail!("--prior vae: SCLD runs only sample from the diffusion prior");
    }
    let condition = match &s.condition {
        Some(c) => {
            run.conditions.index_of(c)?;
            ConditionChoice::Cluster(c.clone())
        }
        None => ConditionChoice::Mix,
    };
    let guidance = s.guidance.unwrap_or(DEFAULT_GUIDANCE);
    if !guidance.is_finite() {
        bail!("--guidance must be a finite number, got {guidance}");
    }
    Ok(ScldGenerateOptions {
        n: a.n,
        condition,
        sample: SampleOptions {
            guidance,
            sampler: a.sampler,
            steps: a.steps,
            eta: a.eta,
            seed: a.seed,
            clip_x0: !a.no_clip,
            use_ema: !a.no_ema,
        },
        post_guidance: post,
        keep: s.keep,
        observation: a.observation,
        output: a.output,
    })
}

/// `celldiff generate` on an SCLD run.
pub fn generate(a: GenerateArgs, dev: DeviceChoice, quiet: bool) -> Result<()> {
    super::check_out(&a.out, a.force, &[&a.run])?;
    let device = device(dev)?;
    let run = ScldRun::load(&a.run, &device)
        .with_context(|| format!("loading run {}", a.run.display()))?;
    if run.library.is_none() && a.output != CountsOutput::Counts {
        bail!(
            "--output log1p: this SCLD run has a Gaussian decoder and writes the model's space to \
             X; --output only applies to runs trained with --likelihood nb/zinb"
        );
    }
    let opts = generate_options(&a, &run)?;
    let bars = Bars::new(quiet);
    let start = Instant::now();
    let pb = bars.bar(1, "sampling");
    let out = scld::generate(&run, &opts, &device, &mut |i, n| {
        pb.set_length(n as u64);
        pb.set_position(i as u64);
    })?;
    pb.finish_and_clear();
    super::write_h5ad_out(&a.out, a.force, &out)?;
    bars.println(format!(
        "generated {} cells × {} genes (ω = {}, post-guidance {}) in {:.1}s; wrote {}",
        out.n_obs(),
        out.n_vars(),
        opts.sample.guidance,
        if opts.post_guidance {
            format!("on, keep {}", opts.keep)
        } else {
            "off".into()
        },
        start.elapsed().as_secs_f64(),
        a.out.display()
    ));
    Ok(())
}
