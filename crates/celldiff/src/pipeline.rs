//! The denoising loop: start from z_T ~ N(0, I) and apply a [`Scheduler`] step by step with
//! the (EMA) denoiser's ε-predictions (Ho et al. 2020, Algorithm 2; Song et al. 2021 for DDIM).
//! Also DDIM inversion (z₀ → z_t), used by interpolation and perturbation analyses.
//!
//! All cells are denoised together in one `[n, n_latent]` tensor per step (chunked only to
//! bound memory); timestep embeddings are computed once per step as a `[1, time_dim]` row.

use burn::prelude::*;

use crate::models::Denoiser;
use crate::schedulers::{ClipRange, DdimScheduler, Scheduler};

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
/// timesteps); returns z at timestep `scheduler.timesteps()[len − n_up]`.
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
    let mut ts: Vec<usize> = scheduler.timesteps().to_vec();
    ts.reverse();
    let mut z = z0;
    let mut prev: Option<usize> = None;
    for &t in ts.iter().take(n_up) {
        let t_eval = prev.unwrap_or(t);
        let eps = denoiser.forward(z.clone(), denoiser.embed_timesteps(&[t_eval], device));
        z = scheduler.invert_step(eps, prev, t, z);
        prev = Some(t);
    }
    z
}
