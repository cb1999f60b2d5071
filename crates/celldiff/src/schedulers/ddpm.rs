//! DDPM ancestral sampler (Ho et al. 2020, Eq. 6–7 and Algorithm 2), as diffusers'
//! `DDPMScheduler` with `prediction_type="epsilon"` and `variance_type="fixed_small"`:
//!
//! - x̂₀ = (z_t − √(1−ᾱ_t) ε̂)/√ᾱ_t (optionally clipped),
//! - μ̃ = √ᾱ_{t'} β'_t/(1−ᾱ_t) · x̂₀ + √α'_t (1−ᾱ_{t'})/(1−ᾱ_t) · z_t, with t' the previous
//!   visited timestep, α'_t = ᾱ_t/ᾱ_{t'} and β'_t = 1 − α'_t,
//! - σ²_t = (1−ᾱ_{t'})/(1−ᾱ_t) · β'_t (β̃_t of Eq. 7), floored at 1e-20,
//! - z_{t'} = μ̃ + σ_t · n, **without noise at the final step** (t = 0).

use burn::Tensor;

use super::{ClipRange, NoiseSchedule, Scheduler, predict_x0};
use crate::error::{Error, Result};

/// DDPM ancestral sampler over `num_inference_steps` evenly spaced timesteps (all T by
/// default; "leading" spacing as diffusers when fewer).
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
}

/// "leading" spacing (diffusers default): `t_i = i · (T / n)` for `i = n−1 … 0`.
pub(crate) fn leading_timesteps(t: usize, n: usize) -> Result<Vec<usize>> {
    if n == 0 || n > t {
        return Err(Error::Param(format!(
            "number of sampling steps must be in 1..={t}, got {n}"
        )));
    }
    let ratio = t / n;
    Ok((0..n).rev().map(|i| i * ratio).collect())
}

impl DdpmScheduler {
    /// A DDPM sampler with `num_inference_steps` steps (`T` for the standard ancestral
    /// sampler).
    ///
    /// # Errors
    /// [`Error::Param`] if `num_inference_steps` is 0 or larger than T.
    pub fn new(schedule: NoiseSchedule, num_inference_steps: usize) -> Result<Self> {
        let timesteps = leading_timesteps(schedule.len(), num_inference_steps)?;
        Ok(Self {
            schedule,
            timesteps,
        })
    }

    fn prev(&self, i: usize) -> Option<usize> {
        self.timesteps.get(i + 1).copied()
    }

    /// The posterior variance σ²_t = β̃_t used at step `i` (diffusers `_get_variance`).
    pub fn variance(&self, i: usize) -> f64 {
        let t = self.timesteps[i];
        let a_t = self.schedule.alphas_cumprod[t];
        let a_prev = self
            .prev(i)
            .map_or(1.0, |p| self.schedule.alphas_cumprod[p]);
        let beta_t = 1.0 - a_t / a_prev;
        ((1.0 - a_prev) / (1.0 - a_t) * beta_t).max(1e-20)
    }

    /// Coefficients `(c_x0, c_xt)` of the posterior mean μ̃ = c_x0·x̂₀ + c_xt·z_t at step `i`.
    pub fn posterior_mean_coefficients(&self, i: usize) -> (f64, f64) {
        let t = self.timesteps[i];
        let a_t = self.schedule.alphas_cumprod[t];
        let a_prev = self
            .prev(i)
            .map_or(1.0, |p| self.schedule.alphas_cumprod[p]);
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;
        (
            a_prev.sqrt() * cur_beta / (1.0 - a_t),
            cur_alpha.sqrt() * (1.0 - a_prev) / (1.0 - a_t),
        )
    }
}

impl Scheduler for DdpmScheduler {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn needs_noise(&self, i: usize) -> bool {
        self.timesteps[i] > 0
    }

    fn step(
        &self,
        model_output: Tensor<2>,
        i: usize,
        sample: Tensor<2>,
        noise: Option<Tensor<2>>,
        clip: Option<&ClipRange>,
    ) -> Tensor<2> {
        let a_t = self.schedule.alphas_cumprod[self.timesteps[i]];
        let x0 = predict_x0(sample.clone(), model_output, a_t, clip);
        let (c0, ct) = self.posterior_mean_coefficients(i);
        let mean = x0.mul_scalar(c0).add(sample.mul_scalar(ct));
        match noise {
            Some(n) if self.needs_noise(i) => mean.add(n.mul_scalar(self.variance(i).sqrt())),
            _ => mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::ScheduleConfig;

    fn diffusers_config() -> NoiseSchedule {
        NoiseSchedule::new(&ScheduleConfig {
            beta_start: 1e-4,
            beta_end: 0.02,
            ..Default::default()
        })
        .unwrap()
    }

    // Reference (diffusers tests/schedulers/test_scheduler_ddpm.py::test_variance):
    //   s = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
    //                     beta_schedule="linear", variance_type="fixed_small")
    //   s._get_variance(0) == 0.0; s._get_variance(487) ≈ 0.00979; s._get_variance(999) ≈ 0.02
    #[test]
    fn posterior_variance_matches_diffusers() {
        let _rng = crate::test_rng_lock();
        let s = DdpmScheduler::new(diffusers_config(), 1000).unwrap();
        let idx = |t: usize| 999 - t;
        assert!(s.variance(idx(0)) < 1e-5);
        assert!((s.variance(idx(487)) - 0.00979).abs() < 1e-5);
        assert!((s.variance(idx(999)) - 0.02).abs() < 1e-5);
    }

    #[test]
    fn zero_noise_step_is_posterior_mean_and_last_step_returns_x0() {
        let _rng = crate::test_rng_lock();
        let device = burn::tensor::Device::default();
        let s = DdpmScheduler::new(diffusers_config(), 1000).unwrap();
        let z = Tensor::<2>::from_floats([[0.5, -1.0]], &device);
        let eps = Tensor::<2>::from_floats([[0.1, 0.2]], &device);
        let zero = Tensor::<2>::zeros([1, 2], &device);
        // Step at t = 500 with zero noise equals the posterior mean computed on the host.
        let i = 999 - 500;
        let out = s.step(eps.clone(), i, z.clone(), Some(zero), None);
        let a = s.schedule.alphas_cumprod[500];
        let (c0, ct) = s.posterior_mean_coefficients(i);
        let got = out.into_data().try_to_vec::<f32>().unwrap();
        for (k, (zv, ev)) in [(0.5f64, 0.1f64), (-1.0, 0.2)].iter().enumerate() {
            let x0 = (zv - (1.0 - a).sqrt() * ev) / a.sqrt();
            let want = c0 * x0 + ct * zv;
            assert!((got[k] as f64 - want).abs() < 1e-5, "{} vs {want}", got[k]);
        }
        // The final step (t = 0) returns x̂₀ exactly: c_x0 = 1, c_xt = 0, no noise.
        let (c0, ct) = s.posterior_mean_coefficients(999);
        assert!((c0 - 1.0).abs() < 1e-12 && ct.abs() < 1e-12);
        assert!(!s.needs_noise(999));
    }
}
