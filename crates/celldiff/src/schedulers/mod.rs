//! Noise schedules and samplers (diffusers style: schedulers are separate from the networks).
//!
//! - [`schedule`]: β schedules and `alphas_cumprod` ([`NoiseSchedule`]).
//! - [`ddpm`]: DDPM ancestral sampling ([`DdpmScheduler`], Ho et al. 2020, Eq. 6–7, 11).
//! - [`ddim`]: DDIM sampling and inversion ([`DdimScheduler`], Song et al. 2021, Eq. 12).
//! - [`flow`]: Euler, Heun and midpoint sampling of a flow-matching prior ([`FlowScheduler`],
//!   Lipman et al. 2023; Karras et al. 2022).
//!
//! A scheduler's `step` maps `(ε̂, t, z_t, noise) → z_{t_prev}` on `[n_cells, n_latent]`
//! tensors; the one denoising loop that drives them is [`crate::pipeline`].

pub mod ddim;
pub mod ddpm;
pub mod flow;
pub mod noise;
pub mod schedule;

pub use ddim::DdimScheduler;
pub use ddpm::DdpmScheduler;
pub use flow::{FlowScheduler, FlowSolver};
pub use noise::NoiseSource;
pub use schedule::{BetaSchedule, NoiseSchedule, ScheduleConfig};

use burn::Tensor;

/// Clipping of the predicted clean sample x̂₀ inside a step (diffusers `clip_sample`), per
/// latent dimension: `x̂₀ ← min(max(x̂₀, lo), hi)`, each `[1, n_latent]`.
///
/// Sampling from an imperfect denoiser can diverge (CRATES.md: values growing without bound);
/// clipping x̂₀ to the range of the training latents keeps it on the data's support.
#[derive(Debug, Clone)]
pub struct ClipRange {
    /// Lower bound `[1, n_latent]`.
    pub lo: Tensor<2>,
    /// Upper bound `[1, n_latent]`.
    pub hi: Tensor<2>,
}

impl ClipRange {
    /// Clips `x0` (`[n, n_latent]`) into the range.
    pub fn apply(&self, x0: Tensor<2>) -> Tensor<2> {
        let n = x0.dims()[0];
        let d = x0.dims()[1];
        x0.max_pair(self.lo.clone().expand([n, d]))
            .min_pair(self.hi.clone().expand([n, d]))
    }
}

/// A reverse-process sampler over a fixed list of timesteps.
pub trait Scheduler {
    /// The timesteps visited, in the order visited (descending), each in `0..T`.
    fn timesteps(&self) -> &[usize];

    /// Whether step `i` (index into [`Scheduler::timesteps`]) adds fresh Gaussian noise.
    fn needs_noise(&self, i: usize) -> bool;

    /// One reverse step from `sample` = z_t at `timesteps()[i]` given the ε-prediction
    /// `model_output`; `noise` (same shape, N(0, I)) is used only if [`Scheduler::needs_noise`].
    ///
    /// # Shapes
    /// - `model_output`, `sample`, `noise`: `[n, n_latent]`
    /// - output: `[n, n_latent]`
    fn step(
        &self,
        model_output: Tensor<2>,
        i: usize,
        sample: Tensor<2>,
        noise: Option<Tensor<2>>,
        clip: Option<&ClipRange>,
    ) -> Tensor<2>;
}

/// x̂₀ = (z_t − √(1−ᾱ_t) ε̂) / √ᾱ_t (Ho et al. 2020, Eq. 15), optionally clipped.
pub(crate) fn predict_x0(
    sample: Tensor<2>,
    eps: Tensor<2>,
    alpha_prod_t: f64,
    clip: Option<&ClipRange>,
) -> Tensor<2> {
    let x0 = sample
        .sub(eps.mul_scalar((1.0 - alpha_prod_t).sqrt()))
        .div_scalar(alpha_prod_t.sqrt());
    match clip {
        Some(c) => c.apply(x0),
        None => x0,
    }
}
