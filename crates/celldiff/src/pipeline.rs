//! The denoising loop: start from z_T ~ N(0, I) and apply a [`Scheduler`] step by step with
//! the (EMA) denoiser's ε-predictions (Ho et al. 2020, Algorithm 2; Song et al. 2021 for DDIM).
//! Also DDIM inversion (z₀ → z_t), used by interpolation and perturbation analyses.
//!
//! All cells are denoised together in one `[n, n_latent]` tensor per step (chunked only to
//! bound memory); timestep embeddings are computed once per step as a `[1, time_dim]` row.

use burn::prelude::*;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::models::Denoiser;
use crate::schedulers::{
    ClipRange, DdimScheduler, DdpmScheduler, FlowScheduler, FlowSolver, NoiseSchedule, Scheduler,
};
use crate::train::{LatentStats, Objective};

/// Samples `n` standardised latents `[n, n_latent]` with `scheduler`, starting from
/// N(0, I) noise from [`crate::schedulers::NoiseSource`] with `seed`. `on_step(i, n_steps)` is called
/// after each step (progress bars).
///
/// # Shapes
/// output: `[n, n_latent]` (standardised latent units; see `LatentStats::unstandardize`)
#[allow(clippy::too_many_arguments)]
pub fn sample_latents(
    denoiser: &Denoiser,
    scheduler: &dyn Scheduler,
    n: usize,
    n_latent: usize,
    clip: Option<&ClipRange>,
    seed: u64,
    device: &Device,
    on_step: &mut dyn FnMut(usize, usize),
) -> Tensor<2> {
    device.seed(seed);
    let source = crate::schedulers::NoiseSource { seed };
    let x = source.initial([n, n_latent], device);
    let mut noise = |i: usize, shape: [usize; 2]| source.step(i, shape, device);
    denoise_from(denoiser, scheduler, x, 0, clip, device, on_step, &mut noise)
}

/// Runs the reverse process from step index `start` of `scheduler.timesteps()` on `x`
/// (`[n, n_latent]`); `noise(i, shape)` supplies the fresh noise of step `i` (a closure so that
/// analyses can fix the noise across samples).
///
/// # Shapes
/// - `x`: `[n, n_latent]` at timestep `scheduler.timesteps()[start]`
/// - output: `[n, n_latent]` at t = 0
#[allow(clippy::too_many_arguments)]
pub fn denoise_from(
    denoiser: &Denoiser,
    scheduler: &dyn Scheduler,
    x: Tensor<2>,
    start: usize,
    clip: Option<&ClipRange>,
    device: &Device,
    on_step: &mut dyn FnMut(usize, usize),
    noise: &mut dyn FnMut(usize, [usize; 2]) -> Tensor<2>,
) -> Tensor<2> {
    let mut eps_fn = |x: Tensor<2>, t: usize| {
        denoiser.forward_inference(x, denoiser.embed_timesteps(&[t], device))
    };
    denoise_loop(&mut eps_fn, scheduler, x, start, clip, on_step, noise)
}

/// The one denoising loop every sampler runs: for each step index `i ≥ start` of
/// `scheduler.timesteps()`, ask `eps(x, t)` for the ε-prediction at timestep `t` and apply
/// `scheduler.step`. `eps` is a closure so that conditional models with classifier-free
/// guidance ([`crate::scld`]) share the loop with the unconditional denoiser.
///
/// # Shapes
/// - `x`: `[n, n_latent]` at timestep `scheduler.timesteps()[start]`; `eps` returns the same shape
/// - output: `[n, n_latent]` at t = 0
pub fn denoise_loop(
    eps: &mut dyn FnMut(Tensor<2>, usize) -> Tensor<2>,
    scheduler: &dyn Scheduler,
    mut x: Tensor<2>,
    start: usize,
    clip: Option<&ClipRange>,
    on_step: &mut dyn FnMut(usize, usize),
    noise: &mut dyn FnMut(usize, [usize; 2]) -> Tensor<2>,
) -> Tensor<2> {
    let ts = scheduler.timesteps().to_vec();
    let shape = x.dims();
    for i in start..ts.len() {
        let e = eps(x.clone(), ts[i]);
        let n = scheduler.needs_noise(i).then(|| noise(i, shape));
        x = scheduler.step(e, i, x, n, clip);
        on_step(i + 1, ts.len());
    }
    x
}

/// Deterministic DDIM inversion of clean latents `z0` (`[n, n_latent]`, standardised) up to
/// the scheduler's timestep index `upto` counted from the end (i.e. through the `n_up` lowest
/// timesteps); returns z at timestep `scheduler.timesteps()[len − n_up]` (Song et al. 2021,
/// Eq. 13 run backwards: [`DdimScheduler::invert_step`]).
///
/// # Shapes
/// `z0`: `[n, n_latent]` → `[n, n_latent]`
pub fn ddim_invert(
    denoiser: &Denoiser,
    scheduler: &DdimScheduler,
    z0: Tensor<2>,
    n_up: usize,
    device: &Device,
) -> Tensor<2> {
    invert_loop(
        denoiser,
        scheduler.timesteps(),
        z0,
        n_up,
        device,
        |eps, prev, t, z| scheduler.invert_step(eps, prev, t, z),
    )
}

/// The loop of a deterministic inversion, shared by [`ddim_invert`] and the flow prior's
/// (`scvaeder::analysis`): visits the `n_up` lowest of `timesteps` in ascending order and at
/// each moves z up with `step(output, prev, t, z)`, the network's output evaluated at the
/// previously visited timestep (at the first one, itself: there is no network input at t = 0).
///
/// # Shapes
/// `z0`: `[n, n_latent]` → `[n, n_latent]`; the network output `[n, n_latent]`.
pub fn invert_loop(
    denoiser: &Denoiser,
    timesteps: &[usize],
    z0: Tensor<2>,
    n_up: usize,
    device: &Device,
    mut step: impl FnMut(Tensor<2>, Option<usize>, usize, Tensor<2>) -> Tensor<2>,
) -> Tensor<2> {
    let mut z = z0;
    let mut prev: Option<usize> = None;
    for &t in timesteps.iter().rev().take(n_up) {
        let t_eval = prev.unwrap_or(t);
        let out = denoiser.forward(z.clone(), denoiser.embed_timesteps(&[t_eval], device));
        z = step(out, prev, t, z);
        prev = Some(t);
    }
    z
}

/// Reverse-process sampler.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// DDPM ancestral sampling (flow prior: Euler over all T timesteps).
    Ddpm,
    /// DDIM (flow prior: Euler steps).
    Ddim,
    /// Heun's 2nd-order ODE solver (flow prior only).
    Heun,
    /// The explicit midpoint ODE solver, 2nd order (flow prior only).
    Midpoint,
}

/// Default steps of the 2nd-order flow solvers: 25 steps are about 50 network evaluations,
/// the cost of DDIM-50.
pub const DEFAULT_SECOND_ORDER_STEPS: usize = 25;

/// The sampler of a latent prior, built once for every method: for a diffusion prior
/// ([`Objective::Epsilon`]) DDPM ancestral sampling (`steps` default T) or DDIM (`steps`
/// default 50, stochasticity `eta`); for a flow-matching prior ([`Objective::Velocity`]) its
/// ODE integrated with Euler steps, T of them for `Ddpm` and `steps` (default 50) for `Ddim`,
/// or with Heun's or the midpoint method for `Heun` / `Midpoint` (`steps` default
/// [`DEFAULT_SECOND_ORDER_STEPS`]) ([`crate::schedulers::FlowScheduler`]; `eta` unused).
/// `clipped_model_output` is passed to the DDIM and flow samplers (SCLD's guided sampling).
///
/// # Errors
/// [`Error::Param`](crate::Error::Param) for a step count outside 1..=T, η outside [0, 1], or
/// `Heun`/`Midpoint` on a diffusion prior.
pub fn build_sampler(
    schedule: NoiseSchedule,
    objective: Objective,
    kind: SamplerKind,
    steps: Option<usize>,
    eta: f64,
    clipped_model_output: bool,
) -> Result<Box<dyn Scheduler>> {
    let t = schedule.len();
    let flow = |n: usize, solver: FlowSolver| -> Result<Box<dyn Scheduler>> {
        Ok(Box::new(
            FlowScheduler::new(t, n)?
                .with_solver(solver)
                .with_clipped_model_output(clipped_model_output),
        ))
    };
    let second = steps.unwrap_or(DEFAULT_SECOND_ORDER_STEPS);
    match (objective, kind) {
        (Objective::Velocity, SamplerKind::Ddpm) => flow(steps.unwrap_or(t), FlowSolver::Euler),
        (Objective::Velocity, SamplerKind::Ddim) => flow(steps.unwrap_or(50), FlowSolver::Euler),
        (Objective::Velocity, SamplerKind::Heun) => flow(second, FlowSolver::Heun),
        (Objective::Velocity, SamplerKind::Midpoint) => flow(second, FlowSolver::Midpoint),
        (Objective::Epsilon, SamplerKind::Ddpm) => {
            Ok(Box::new(DdpmScheduler::new(schedule, steps.unwrap_or(t))?))
        }
        (Objective::Epsilon, SamplerKind::Ddim) => Ok(Box::new(
            DdimScheduler::new(schedule, steps.unwrap_or(50), eta)?
                .with_clipped_model_output(clipped_model_output),
        )),
        (Objective::Epsilon, SamplerKind::Heun | SamplerKind::Midpoint) => {
            Err(crate::Error::Param(format!(
                "the {} sampler integrates a flow-matching prior's ODE (a run trained with \
                 --prior flow); this run's prior is diffusion: use ddpm or ddim",
                kind.name()
            )))
        }
    }
}

impl SamplerKind {
    /// The command-line name (`ddpm`, `ddim`, `heun`, `midpoint`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddpm => "ddpm",
            Self::Ddim => "ddim",
            Self::Heun => "heun",
            Self::Midpoint => "midpoint",
        }
    }
}
/// The x̂₀ clipping range: the standardised training latents' range widened by 10 % of its
/// width on each side (`[1, n_latent]`).
pub fn clip_range(stats: &LatentStats, device: &Device) -> ClipRange {
    clip_range_extended(stats, &[], &[], device)
}

/// [`clip_range`] with extra dimensions appended (their bounds `extra_lo`/`extra_hi` as they
/// are; scVAEDer's joint library-size dimensions): `[1, n_latent + extra_lo.len()]`.
pub fn clip_range_extended(
    stats: &LatentStats,
    extra_lo: &[f64],
    extra_hi: &[f64],
    device: &Device,
) -> ClipRange {
    let d = stats.min.len();
    let (mut lo, mut hi) = (Vec::with_capacity(d + 2), Vec::with_capacity(d + 2));
    for j in 0..d {
        let w = (stats.max[j] - stats.min[j]).max(1e-3);
        lo.push(stats.min[j] - 0.1 * w);
        hi.push(stats.max[j] + 0.1 * w);
    }
    lo.extend(extra_lo.iter().map(|&v| v as f32));
    hi.extend(extra_hi.iter().map(|&v| v as f32));
    let d = lo.len();
    ClipRange {
        lo: Tensor::from_data(TensorData::new(lo, [1, d]), device),
        hi: Tensor::from_data(TensorData::new(hi, [1, d]), device),
    }
}
