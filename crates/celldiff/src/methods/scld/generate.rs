//! SCLD generation: sampling with classifier-free pre-guidance (ω) through the one denoising
//! loop, post-guidance by the Scorer, decoding to cells (Gaussian observation model or NB
//! counts), and reconstruction of held-out cells.

use super::*;

/// Sampler settings shared by SCLD generation and the Scorer's training cells.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SampleOptions {
    /// Guidance weight ω (Eq. 13; −1 = holistic only, 0 = conditional only).
    pub guidance: f64,
    /// Reverse-process sampler.
    pub sampler: SamplerKind,
    /// Steps (None: T for DDPM, 50 for DDIM, 25 for Heun and midpoint).
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
    // SCLD's DDIM and flow samplers re-derive ε̂ from the clipped x̂₀ (a guided ε̂ or v̂ can
    // put x̂₀ far outside the range).
    let sched = build_sampler(
        schedule.clone(),
        run.config.diffusion_train.objective,
        opts.sampler,
        opts.steps,
        opts.eta,
        true,
    )?;
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
pub(super) struct Observed {
    latents: DenseMatrix,
    pub(super) x: DenseMatrix,
    observed: bool,
    counts: Option<(DenseMatrix, Vec<f64>)>,
}

/// Decodes standardised latents `[n, n_latent]` to cells `[n, n_genes]` in the model's space
/// (floored at 0 when that space is non-negative) and, for [`Observation::Counts`], samples
/// counts: a count decoder draws NB/ZINB counts with library sizes from the latent's cluster
/// ([`LibrarySizeModel`]); a Gaussian decoder samples the run's observation model.
pub(super) fn observe(
    run: &ScldRun,
    z_std: Tensor<2>,
    obs: Observation,
    seed: u64,
) -> Result<Observed> {
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
                 (accuracy {acc:.3} < {MIN_SCORER_ACCURACY}); request post-guidance to use it \
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
            "keep must be in (0, 1], got {}",
            opts.keep
        )));
    }
    if opts.post_guidance && run.scorer.is_none() {
        return Err(Error::Param(
            "post-guidance needs a Scorer, and this run was trained without one".into(),
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
