//! scVAEDer analyses on a trained run (Sadria & Layton, Genome Biology 2025): interpolation
//! between cell states in the diffusion prior space, gene "velocity" along the path (master
//! regulators), and perturbation prediction by latent arithmetic (vs scGen).
//!
//! - [`interpolate`]: `celldiff interpolate` (paper, Methods "Interpolation", approaches 1–2).
//! - [`velocity`]: `celldiff velocity` (paper, "master regulators", Fig. 5e).
//! - [`perturb`]: `celldiff perturb` and `celldiff evaluate-perturbation` (paper,
//!   "predicts perturbation responses", Fig. 4; scGen, Lotfollahi et al. 2019).
//! - [`de`]: Wilcoxon rank-sum scores of scanpy `tl.rank_genes_groups(method="wilcoxon")`.
//!
//! This module holds what they share: [`PriorSpace`], the map between the standardised VAE
//! latent (t = 0) and the latent prior at timestep K, in both directions. For a diffusion
//! prior that is the forward process and DDIM inversion; for a flow-matching prior
//! (`--prior flow`, [`crate::schedulers::flow`]) the same roles are played by the linear path
//! x_s = (1 − s) z₀ + s ε (the flow's "forward process", Lipman et al. 2023, Eq. 20 with
//! σ_min = 0) and by its ODE integrated from s = 0 up to s_K with Euler steps (the
//! deterministic inversion, as DDIM's is an Euler step of its probability-flow ODE; Song et
//! al. 2021, Eq. 13); the reverse process is the flow's Euler sampler from s_K to 0.

pub mod de;
pub mod interpolate;
pub mod perturb;
pub mod velocity;

use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use crate::anndata::{AnnData, DenseMatrix, Matrix};
use crate::error::{Error, Result};
use crate::pipeline::{SamplerKind, clip_range};
use crate::pipeline::{ddim_invert, denoise_from};
use crate::schedulers::{ClipRange, DdimScheduler, DdpmScheduler, FlowScheduler, Scheduler};
use crate::scvaeder::Run;
use crate::train::Objective;
use crate::train::{decode, encode_mean, to_tensor};

/// How clean latents z₀ are mapped to the diffusion prior at timestep K.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The stochastic forward process q(z_K | z₀) = N(√ᾱ_K z₀, (1 − ᾱ_K) I) (Ho et al. 2020,
    /// Eq. 4), one seeded ε per cell: the paper's approach. Flow prior: the linear path
    /// (1 − s_K) z₀ + s_K ε.
    Forward,
    /// Deterministic DDIM inversion (Song et al. 2021, Eq. 12 run backwards with η = 0),
    /// through the same timesteps the reverse sampler visits. Flow prior: the ODE
    /// dx/ds = v̂(x, s) integrated from s = 0 to s_K with Euler steps on those timesteps.
    Ddim,
}

/// The noise of the reverse process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverseNoise {
    /// One noise row per step shared by every sample (the paper fixes stochasticity across
    /// interpolation points for smoothness).
    Shared,
    /// Fresh noise for every sample.
    Independent,
}

/// A run's latent prior space at timestep K: a reverse sampler whose visited timesteps
/// start at K, and the matching deterministic inverter (DDIM on a diffusion prior, Euler up
/// the ODE on a flow prior).
///
/// K is given as `t_start` ∈ 1..=T (T = the full prior, the paper's default); it is
/// rounded down to the sampler's grid: the reverse process starts at the largest visited
/// timestep index ≤ K − 1 (0-based timesteps, so K = T starts at t = T − 1). On a flow prior
/// K is first mapped to the flow level of the same signal-to-noise ratio (`flow_start`).
pub struct PriorSpace<'a> {
    run: &'a Run,
    sampler: Box<dyn Scheduler>,
    inverter: Inverter,
    start: usize,
    clip: Option<ClipRange>,
    device: Device,
}

/// The deterministic map from clean latents up to timestep K of a [`PriorSpace`].
enum Inverter {
    /// DDIM inversion on the diffusion prior's schedule.
    Ddim(DdimScheduler),
    /// Euler steps up the flow prior's ODE; the scheduler gives the levels s_k (boxed: it
    /// carries its solver's pending state).
    Flow(Box<FlowScheduler>),
}

impl<'a> PriorSpace<'a> {
    /// Builds the prior space of `run` at `t_start` (None = T) for `sampler` with `steps`
    /// steps (None: T for DDPM, 50 for DDIM) and DDIM stochasticity `eta`. On a flow-matching
    /// run `ddpm` and `ddim` both mean Euler steps of its ODE (T and `steps` (50) of them, as
    /// `generate`), and `eta` is unused.
    ///
    /// # Errors
    /// [`Error::Param`] for `t_start` outside 1..=T, invalid step counts or η, the
    /// `heun`/`midpoint` samplers, or a run that diffuses the library size with the latent.
    pub fn new(
        run: &'a Run,
        sampler: SamplerKind,
        steps: Option<usize>,
        eta: f64,
        t_start: Option<usize>,
        clip_x0: bool,
        device: &Device,
    ) -> Result<Self> {
        if run.config.denoiser.n_latent != run.config.vae.n_latent {
            return Err(Error::Param(format!(
                "this run's denoiser diffuses the library size with the latent (library_model \
                 joint, {} dimensions for a {}-dimensional latent); the diffusion analyses need \
                 a run with library_model cluster",
                run.config.denoiser.n_latent, run.config.vae.n_latent
            )));
        }
        let schedule = run.schedule()?;
        let t_max = schedule.len();
        let k = t_start.unwrap_or(t_max);
        if k == 0 || k > t_max {
            return Err(Error::Param(format!(
                "t_start must be in 1..={t_max} (T of the run), got {k}"
            )));
        }
        let n_steps = match sampler {
            SamplerKind::Ddpm => steps.unwrap_or(t_max),
            SamplerKind::Ddim => steps.unwrap_or(50),
            SamplerKind::Heun | SamplerKind::Midpoint => {
                return Err(Error::Param(format!(
                    "the {} sampler is for generation from flow-matching priors; the analyses \
                     (interpolate, velocity, perturb) use ddpm or ddim (Euler steps on a flow \
                     run)",
                    sampler.name()
                )));
            }
        };
        let objective = run.config.diffusion_train.objective;
        // The start on a flow prior: the level with the signal-to-noise ratio that the run's
        // β schedule has at K (ᾱ_K / (1 − ᾱ_K) = (1 − s)² / s²), so that `t_start` means the
        // same noise on both priors; at K = T the flow's own level would be s = 1, pure noise,
        // where the forward encoding keeps nothing of the cells.
        let k = match objective {
            Objective::Epsilon => k,
            Objective::Velocity => flow_start(schedule.alphas_cumprod[k - 1], t_max),
        };
        let (sched, inverter): (Box<dyn Scheduler>, Inverter) = match objective {
            Objective::Velocity => (
                Box::new(FlowScheduler::new(t_max, n_steps)?),
                Inverter::Flow(Box::new(FlowScheduler::new(t_max, n_steps)?)),
            ),
            Objective::Epsilon => {
                let sched: Box<dyn Scheduler> = match sampler {
                    SamplerKind::Ddpm => Box::new(DdpmScheduler::new(schedule.clone(), n_steps)?),
                    _ => Box::new(DdimScheduler::new(schedule.clone(), n_steps, eta)?),
                };
                (
                    sched,
                    Inverter::Ddim(DdimScheduler::new(schedule, n_steps, 0.0)?),
                )
            }
        };
        let ts = sched.timesteps();
        let start = ts.iter().position(|&t| t < k).ok_or_else(|| {
            Error::Param(format!(
                "t_start {k} is below the sampler's smallest timestep {}",
                ts[ts.len() - 1] + 1
            ))
        })?;
        Ok(Self {
            run,
            sampler: sched,
            inverter,
            start,
            clip: clip_x0.then(|| clip_range(&run.latent, device)),
            device: device.clone(),
        })
    }

    /// The 0-based timestep the reverse process starts from (K − 1 rounded to the grid).
    pub fn timestep(&self) -> usize {
        self.sampler.timesteps()[self.start]
    }

    /// On a flow prior, its level s ∈ (0, 1] at [`PriorSpace::timestep`] (the latent there is
    /// (1 − s) z₀ + s ε); `None` on a diffusion prior.
    pub fn flow_level(&self) -> Option<f64> {
        match &self.inverter {
            Inverter::Ddim(_) => None,
            Inverter::Flow(f) => Some(f.level(self.timestep())),
        }
    }

    /// Number of reverse steps from [`PriorSpace::timestep`] to t = 0.
    pub fn n_reverse_steps(&self) -> usize {
        self.sampler.timesteps().len() - self.start
    }

    /// ᾱ at [`PriorSpace::timestep`]. On a flow prior at level s, the ᾱ of the same
    /// signal-to-noise ratio: (1 − s)² / ((1 − s)² + s²).
    ///
    /// # Errors
    /// [`Error::Internal`] if the schedule cannot be rebuilt.
    pub fn alpha_cumprod(&self) -> Result<f64> {
        match &self.inverter {
            Inverter::Ddim(_) => Ok(self.run.schedule()?.alphas_cumprod[self.timestep()]),
            Inverter::Flow(f) => {
                let s = f.level(self.timestep());
                Ok((1.0 - s).powi(2) / ((1.0 - s).powi(2) + s * s))
            }
        }
    }

    /// (signal, noise) coefficients of a latent at [`PriorSpace::timestep`]: (√ᾱ, √(1 − ᾱ))
    /// for the diffusion prior, (1 − s, s) on the flow prior's linear path.
    fn coefficients(&self) -> Result<(f64, f64)> {
        match &self.inverter {
            Inverter::Ddim(_) => {
                let a = self.alpha_cumprod()?;
                Ok((a.sqrt(), (1.0 - a).sqrt()))
            }
            Inverter::Flow(f) => {
                let s = f.level(self.timestep());
                Ok((1.0 - s, s))
            }
        }
    }

    /// Maps standardised clean latents `z0` to timestep K.
    ///
    /// # Shapes
    /// `z0`: `[n, n_latent]` (standardised, [`crate::train::LatentStats::standardize`]) →
    /// `[n, n_latent]` at timestep K.
    ///
    /// # Errors
    /// [`Error::Internal`] if the schedule cannot be rebuilt.
    pub fn encode(&self, z0: Tensor<2>, encoding: Encoding, seed: u64) -> Result<Tensor<2>> {
        Ok(match encoding {
            Encoding::Forward => {
                let (signal, noise) = self.coefficients()?;
                self.device.seed(seed);
                let eps =
                    Tensor::<2>::random(z0.dims(), Distribution::Normal(0.0, 1.0), &self.device);
                z0.mul_scalar(signal).add(eps.mul_scalar(noise))
            }
            Encoding::Ddim => match &self.inverter {
                Inverter::Ddim(inv) => ddim_invert(
                    &self.run.denoiser_ema,
                    inv,
                    z0,
                    self.n_reverse_steps(),
                    &self.device,
                ),
                Inverter::Flow(f) => flow_invert(
                    &self.run.denoiser_ema,
                    f,
                    z0,
                    self.n_reverse_steps(),
                    &self.device,
                ),
            },
        })
    }

    /// Adds noise to timestep K with one ε row shared by all rows (interpolation approach 2:
    /// every λ gets the same noise).
    ///
    /// # Shapes
    /// `z0`: `[n, n_latent]` → `[n, n_latent]`
    ///
    /// # Errors
    /// [`Error::Internal`] if the schedule cannot be rebuilt.
    pub fn noise_shared(&self, z0: Tensor<2>, seed: u64) -> Result<Tensor<2>> {
        let (signal, noise) = self.coefficients()?;
        let [n, d] = z0.dims();
        self.device.seed(seed);
        let eps = Tensor::<2>::random([1, d], Distribution::Normal(0.0, 1.0), &self.device);
        Ok(z0
            .mul_scalar(signal)
            .add(eps.expand([n, d]).mul_scalar(noise)))
    }

    /// Runs the reverse process (EMA denoiser) from timestep K to t = 0.
    ///
    /// # Shapes
    /// `zk`: `[n, n_latent]` at timestep K → `[n, n_latent]` standardised clean latents.
    pub fn reverse(
        &self,
        zk: Tensor<2>,
        noise: ReverseNoise,
        seed: u64,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Tensor<2> {
        let device = self.device.clone();
        device.seed(seed);
        let mut draw = |_: usize, shape: [usize; 2]| match noise {
            ReverseNoise::Shared => {
                Tensor::<2>::random([1, shape[1]], Distribution::Normal(0.0, 1.0), &device)
                    .expand(shape)
            }
            ReverseNoise::Independent => {
                Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), &device)
            }
        };
        let first = self.start;
        let total = self.n_reverse_steps();
        denoise_from(
            &self.run.denoiser_ema,
            self.sampler.as_ref(),
            zk,
            self.start,
            self.clip.as_ref(),
            &self.device,
            &mut |i, _| on_step(i - first, total),
            &mut draw,
        )
    }
}

/// The `t_start` (1..=T) on a flow prior with `T` timesteps that matches a diffusion level
/// of cumulative signal `alpha_cumprod`: the level s with (1 − s)/s = √(ᾱ/(1 − ᾱ)), i.e.
/// s = √(1 − ᾱ) / (√ᾱ + √(1 − ᾱ)), and the start ⌊s·T⌋ (at least 1), whose first visited grid
/// timestep k (s_k = (k + 1)/T) is the last one at or below s.
fn flow_start(alpha_cumprod: f64, big_t: usize) -> usize {
    let (a, b) = (alpha_cumprod.sqrt(), (1.0 - alpha_cumprod).sqrt());
    let s = b / (a + b);
    ((s * big_t as f64).floor() as usize).clamp(1, big_t)
}

/// The flow prior's deterministic inversion: its ODE dx/ds = v̂(x, s) integrated upwards from
/// the clean latents (s = 0) through the first `n_up` levels of `scheduler`'s grid, visited in
/// ascending order, with Euler steps `x ← x + (s' − s) v̂(x, s)`. As [`ddim_invert`] does, the
/// first step evaluates the network at the first grid timestep (there is none at s = 0).
///
/// # Shapes
/// `z0`: `[n, n_latent]` standardised → `[n, n_latent]` at the `n_up`-th level.
fn flow_invert(
    denoiser: &crate::models::Denoiser,
    scheduler: &FlowScheduler,
    z0: Tensor<2>,
    n_up: usize,
    device: &Device,
) -> Tensor<2> {
    crate::pipeline::invert_loop(
        denoiser,
        scheduler.timesteps(),
        z0,
        n_up,
        device,
        |v, prev, t, z| {
            let s_prev = prev.map_or(0.0, |p| scheduler.level(p));
            z.add(v.mul_scalar(scheduler.level(t) - s_prev))
        },
    )
}

/// Standardised posterior means of the rows of `x` (already in the model's expression space).
///
/// # Shapes
/// `x`: `[n, n_genes]` → `[n, n_latent]`
///
/// # Errors
/// [`Error::Internal`] if the backend fails.
pub fn standardized_latents(run: &Run, x: &Matrix, device: &Device) -> Result<Tensor<2>> {
    let mu = encode_mean(&run.vae, x, device)?;
    Ok(to_tensor(&run.latent.standardize(&mu), device))
}

/// Decodes standardised latents to expression in the model's space (decoder means, floored
/// at 0 when that space is non-negative).
///
/// # Shapes
/// `z`: `[n, n_latent]` → `[n, n_genes]`
///
/// # Errors
/// [`Error::Internal`] if the backend fails.
pub fn decode_standardized(run: &Run, z: Tensor<2>) -> Result<DenseMatrix> {
    let mut x = decode(&run.vae, run.latent.unstandardize(z))?;
    if run.preprocess.output_nonnegative() {
        for v in &mut x.data {
            *v = v.max(0.0);
        }
    }
    Ok(x)
}

/// Row indices of the cells whose `obs[key]` equals `value`.
///
/// # Errors
/// [`Error::InvalidInput`] naming the key and listing its values when none match, or when
/// the key is not an `obs` column.
pub fn group_indices(adata: &AnnData, key: &str, value: &str) -> Result<Vec<usize>> {
    let labels = adata.obs_column(key)?.labels();
    let idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == value).collect();
    if idx.is_empty() {
        let mut values = labels.clone();
        values.sort();
        values.dedup();
        return Err(Error::InvalidInput(format!(
            "obs['{key}'] has no cell equal to `{value}` (values: {})",
            values.join(", ")
        )));
    }
    Ok(idx)
}

/// Per-gene mean of the rows `idx` of `x`, length `n_genes`.
pub fn mean_rows(x: &Matrix, idx: &[usize]) -> Vec<f64> {
    let d = x.rows_dense(idx);
    let mut m = vec![0.0f64; d.n_cols];
    for i in 0..d.n_rows {
        for (a, &v) in m.iter_mut().zip(d.row(i)) {
            *a += v as f64;
        }
    }
    let n = d.n_rows.max(1) as f64;
    m.iter_mut().for_each(|v| *v /= n);
    m
}

/// Column means of a `[n, d]` tensor as a `[1, d]` tensor.
pub(crate) fn mean_row(z: Tensor<2>) -> Tensor<2> {
    z.mean_dim(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_start_matches_the_signal_to_noise_ratio() {
        // ᾱ = 0.5: equal signal and noise, s = 1/2.
        assert_eq!(flow_start(0.5, 1000), 500);
        // ᾱ → 1 (clean): the first timestep; ᾱ → 0 (pure noise): T.
        assert_eq!(flow_start(1.0, 1000), 1);
        assert_eq!(flow_start(0.0, 1000), 1000);
        // scVAEDer's linear β (1e-5 → 5e-3, T = 1000) ends at ᾱ_T = 0.0813: s = 0.7707.
        // python: a=0.08133429056662822; b=1-a; s=b**.5/(a**.5+b**.5); int(s*1000) == 770
        assert_eq!(flow_start(0.08133429056662822, 1000), 770);
    }
}
