//! DDIM sampler and inversion (Song, Meng & Ermon 2021, Eq. 12), as diffusers'
//! `DDIMScheduler` with `prediction_type="epsilon"`, `timestep_spacing="leading"`,
//! `set_alpha_to_one=True`:
//!
//! z_{t'} = √ᾱ_{t'} x̂₀ + √(1 − ᾱ_{t'} − σ²) ε̂ + σ n,
//! σ = η √((1−ᾱ_{t'})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'}),
//!
//! with t' = t − T/n (ᾱ_{t'} = 1 past the first step). η = 0 is deterministic; η = 1 has the
//! DDPM posterior variance. [`DdimScheduler::invert_step`] runs the deterministic map the other
//! way (z_t → z_{t_next}), used to encode cells into the diffusion prior.

use burn::Tensor;

use super::ddpm::leading_timesteps;
use super::{ClipRange, NoiseSchedule, Scheduler, predict_x0};
use crate::error::{Error, Result};

/// DDIM sampler with `num_inference_steps` steps and stochasticity `eta` ∈ [0, 1].
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
    step_ratio: usize,
    eta: f64,
    use_clipped_model_output: bool,
}

impl DdimScheduler {
    /// A DDIM sampler over `num_inference_steps` "leading" timesteps.
    ///
    /// # Errors
    /// [`Error::Param`] if the number of steps is 0 or > T, or η is not in [0, 1].
    pub fn new(schedule: NoiseSchedule, num_inference_steps: usize, eta: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&eta) {
            return Err(Error::Param(format!(
                "DDIM eta must be in [0, 1], got {eta}"
            )));
        }
        let timesteps = leading_timesteps(schedule.len(), num_inference_steps)?;
        let step_ratio = schedule.len() / num_inference_steps;
        Ok(Self {
            schedule,
            timesteps,
            step_ratio,
            eta,
            use_clipped_model_output: false,
        })
    }

    /// diffusers' `use_clipped_model_output`: when x̂₀ is clipped, re-derive ε̂ from the
    /// clipped x̂₀ (ε̂ = (z_t − √ᾱ_t x̂₀)/√(1 − ᾱ_t)) for the direction term, so that the
    /// step stays consistent with the clipped prediction. Needed with classifier-free
    /// guidance: a guided ε̂ can put x̂₀ far outside the clip range, and with the model's ε̂ in
    /// the direction term the step then moves *away* from the guided prediction (SCLD
    /// sampling uses it; scVAEDer keeps the default `false`).
    pub fn with_clipped_model_output(mut self, on: bool) -> Self {
        self.use_clipped_model_output = on;
        self
    }

    fn alpha_prev(&self, t: usize) -> f64 {
        t.checked_sub(self.step_ratio)
            .map_or(1.0, |p| self.schedule.alphas_cumprod[p])
    }

    /// σ²_t / η² of Eq. 16 between timestep `t` and `t_prev` (diffusers `_get_variance`).
    pub fn variance(&self, t: usize, t_prev: Option<usize>) -> f64 {
        let a_t = self.schedule.alphas_cumprod[t];
        let a_prev = t_prev.map_or(1.0, |p| self.schedule.alphas_cumprod[p]);
        (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
    }

    /// One deterministic inversion step (η = 0 run backwards): from `sample` = z_t at
    /// timestep `t` (or the clean sample when `t` is `None`) to z at `t_next`, with ε̂
    /// predicted at `t` (at `t_next` for the first step, as usual in DDIM inversion).
    ///
    /// # Shapes
    /// `model_output`, `sample`, output: `[n, n_latent]`
    pub fn invert_step(
        &self,
        model_output: Tensor<2>,
        t: Option<usize>,
        t_next: usize,
        sample: Tensor<2>,
    ) -> Tensor<2> {
        let a_t = t.map_or(1.0, |t| self.schedule.alphas_cumprod[t]);
        let a_next = self.schedule.alphas_cumprod[t_next];
        let x0 = predict_x0(sample, model_output.clone(), a_t, None);
        x0.mul_scalar(a_next.sqrt())
            .add(model_output.mul_scalar((1.0 - a_next).sqrt()))
    }
}

impl Scheduler for DdimScheduler {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn needs_noise(&self, i: usize) -> bool {
        self.eta > 0.0 && self.timesteps[i] >= self.step_ratio
    }

    fn step(
        &self,
        model_output: Tensor<2>,
        i: usize,
        sample: Tensor<2>,
        noise: Option<Tensor<2>>,
        clip: Option<&ClipRange>,
    ) -> Tensor<2> {
        let t = self.timesteps[i];
        let a_t = self.schedule.alphas_cumprod[t];
        let a_prev = self.alpha_prev(t);
        let x0 = predict_x0(sample.clone(), model_output.clone(), a_t, clip);
        let model_output = if self.use_clipped_model_output && clip.is_some() {
            sample
                .sub(x0.clone().mul_scalar(a_t.sqrt()))
                .div_scalar((1.0 - a_t).sqrt().max(1e-12))
        } else {
            model_output
        };
        let t_prev = t.checked_sub(self.step_ratio);
        let std = self.eta * self.variance(t, t_prev).max(0.0).sqrt();
        // diffusers re-derives ε̂ from the clipped x̂₀ only when clip_sample is on; the
        // direction uses the model's ε̂ otherwise. We follow diffusers (use_clipped_model_output
        // = False): the direction term uses the model output.
        let dir = model_output.mul_scalar((1.0 - a_prev - std * std).max(0.0).sqrt());
        let prev = x0.mul_scalar(a_prev.sqrt()).add(dir);
        match noise {
            Some(n) if self.needs_noise(i) => prev.add(n.mul_scalar(std)),
            _ => prev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::ScheduleConfig;
    use burn::tensor::Device;

    fn diffusers_schedule() -> NoiseSchedule {
        NoiseSchedule::new(&ScheduleConfig {
            beta_start: 1e-4,
            beta_end: 0.02,
            ..Default::default()
        })
        .unwrap()
    }

    // Reference (diffusers tests/schedulers/test_scheduler_ddim.py::test_variance):
    //   s = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
    //                     beta_schedule="linear", clip_sample=True)
    //   s._get_variance(420, 400) ≈ 0.14771; s._get_variance(980, 960) ≈ 0.32460
    #[test]
    fn variance_matches_diffusers() {
        let _rng = crate::test_rng_lock();
        let s = DdimScheduler::new(diffusers_schedule(), 50, 0.0).unwrap();
        assert!((s.variance(420, Some(400)) - 0.14771).abs() < 1e-5);
        assert!((s.variance(980, Some(960)) - 0.32460).abs() < 1e-5);
    }

    // Reference (diffusers tests/schedulers/test_scheduler_ddim.py::test_full_loop_no_noise):
    //   scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
    //                             beta_schedule="linear", clip_sample=True)
    //   scheduler.set_timesteps(10)                      # [900, 800, ..., 0]
    //   sample = dummy_sample_deter                     # the 768 values k/768, k = 0..767
    //   for t in scheduler.timesteps:
    //       residual = sample * t / (t + 1)             # diffusers' dummy model
    //       sample = scheduler.step(residual, t, sample, eta=0.0).prev_sample
    //   torch.sum(torch.abs(sample)) -> 172.0067 ; torch.mean(torch.abs(sample)) -> 0.223967
    #[test]
    fn full_loop_eta0_matches_diffusers() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let s = DdimScheduler::new(diffusers_schedule(), 10, 0.0).unwrap();
        assert_eq!(
            s.timesteps(),
            &[900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
        );
        let vals: Vec<f32> = (0..768).map(|k| k as f32 / 768.0).collect();
        let mut x = Tensor::<2>::from_data(burn::tensor::TensorData::new(vals, [96, 8]), &device);
        let clip = ClipRange {
            lo: Tensor::full([1, 8], -1.0, &device),
            hi: Tensor::full([1, 8], 1.0, &device),
        };
        for i in 0..s.timesteps().len() {
            let t = s.timesteps()[i] as f64;
            let eps = x.clone().mul_scalar(t / (t + 1.0));
            x = s.step(eps, i, x, None, Some(&clip));
        }
        let sum: f32 = x.abs().sum().into_scalar();
        assert!((sum - 172.0067).abs() < 1e-2, "sum {sum}");
        assert!((sum / 768.0 - 0.223967).abs() < 1e-3);
    }

    #[test]
    fn inversion_then_sampling_recovers_the_input() {
        let _rng = crate::test_rng_lock();
        // With an ε̂ that does not depend on z (a constant field), DDIM is exactly invertible.
        let device = Device::default();
        let s = DdimScheduler::new(diffusers_schedule(), 20, 0.0).unwrap();
        let x0 = Tensor::<2>::from_floats([[0.3, -0.7, 1.2]], &device);
        let eps = Tensor::<2>::from_floats([[0.5, 0.1, -0.2]], &device);
        let mut ts: Vec<usize> = s.timesteps().to_vec();
        ts.reverse();
        let mut z = x0.clone();
        let mut prev = None;
        for &t in &ts {
            z = s.invert_step(eps.clone(), prev, t, z);
            prev = Some(t);
        }
        for i in 0..s.timesteps().len() {
            z = s.step(eps.clone(), i, z, None, None);
        }
        let diff: f32 = z.sub(x0).abs().max().into_scalar();
        assert!(diff < 1e-4, "max abs diff {diff}");
    }
}
