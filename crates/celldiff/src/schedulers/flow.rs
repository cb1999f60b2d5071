//! Conditional flow matching in the latent (Lipman, Chen, Ben-Hamu, Nickel & Le, "Flow
//! Matching for Generative Modeling", ICLR 2023, Eq. 20–23 with σ_min = 0, i.e. the linear
//! interpolant of rectified flow; as CFGen and scLDM use it), on the same denoiser networks
//! and timestep embeddings as the diffusion prior (`--prior flow`, issue 18 section 6).
//!
//! The path runs from data to noise like the diffusion models here: at timestep k ∈ 0..T the
//! noise level is `s_k = (k + 1) / T` and `x_k = (1 − s_k) z₀ + s_k ε` (ε ~ N(0, I)); the
//! network predicts the velocity `v = dx/ds = ε − z₀` (training target,
//! [`crate::train::Objective::Velocity`]). Sampling integrates the ODE from pure noise
//! (s = 1) to s = 0 with Euler steps ([`FlowScheduler`]): `x ← x + (s' − s) v̂`, written as
//! `x' = (1 − s') x̂₀ + s' ε̂` with `x̂₀ = x − s v̂` and `ε̂ = x + (1 − s) v̂`, which is the same
//! step and lets x̂₀ be clipped to the training latents' range as the DDIM sampler does.

use burn::Tensor;

use super::{ClipRange, Scheduler};
use crate::error::{Error, Result};

/// Euler ODE sampler of a flow-matching prior over `num_inference_steps` evenly spaced
/// timesteps `T−1, T−1−T/n, …` (the first at s = 1, pure noise; the last step lands on s = 0).
#[derive(Debug, Clone)]
pub struct FlowScheduler {
    timesteps: Vec<usize>,
    big_t: usize,
    use_clipped_model_output: bool,
}

impl FlowScheduler {
    /// A sampler over `T` training timesteps with `num_inference_steps` Euler steps.
    ///
    /// # Errors
    /// [`Error::Param`] if the number of steps is 0 or > T.
    pub fn new(big_t: usize, num_inference_steps: usize) -> Result<Self> {
        let n = num_inference_steps;
        if n == 0 || n > big_t {
            return Err(Error::Param(format!(
                "number of sampling steps must be in 1..={big_t}, got {n}"
            )));
        }
        let timesteps = (0..n).map(|i| big_t - 1 - i * big_t / n).collect();
        Ok(Self {
            timesteps,
            big_t,
            use_clipped_model_output: false,
        })
    }

    /// As [`crate::schedulers::DdimScheduler::with_clipped_model_output`]: when x̂₀ is clipped,
    /// re-derive ε̂ = (x − (1 − s) x̂₀) / s from the clipped x̂₀, so that a guided velocity
    /// that puts x̂₀ outside the range does not push the step away from it (SCLD sampling).
    pub fn with_clipped_model_output(mut self, on: bool) -> Self {
        self.use_clipped_model_output = on;
        self
    }

    /// Noise level `s_k = (k + 1) / T` of timestep `k`.
    pub fn level(&self, k: usize) -> f64 {
        (k + 1) as f64 / self.big_t as f64
    }
}

impl Scheduler for FlowScheduler {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn needs_noise(&self, _i: usize) -> bool {
        false
    }

    fn step(
        &self,
        model_output: Tensor<2>,
        i: usize,
        sample: Tensor<2>,
        _noise: Option<Tensor<2>>,
        clip: Option<&ClipRange>,
    ) -> Tensor<2> {
        let s = self.level(self.timesteps[i]);
        let s_next = self.timesteps.get(i + 1).map_or(0.0, |&k| self.level(k));
        let x0 = sample.clone().sub(model_output.clone().mul_scalar(s));
        let (x0, eps) = match clip {
            Some(c) if self.use_clipped_model_output => {
                let x0 = c.apply(x0);
                let eps = sample
                    .sub(x0.clone().mul_scalar(1.0 - s))
                    .div_scalar(s.max(1e-12));
                (x0, eps)
            }
            Some(c) => (c.apply(x0), sample.add(model_output.mul_scalar(1.0 - s))),
            None => (x0, sample.add(model_output.mul_scalar(1.0 - s))),
        };
        x0.mul_scalar(1.0 - s_next).add(eps.mul_scalar(s_next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// With the exact velocity of a point mass at c, v(x, s) = (x − c)/s, Euler steps shrink
    /// x − c by s'/s each step and land exactly on c at s = 0, from any start.
    #[test]
    fn euler_with_the_exact_velocity_reaches_the_point_mass() {
        let device = Device::default();
        let c = Tensor::<2>::from_data(TensorData::new(vec![1.5f32, -2.0], [1, 2]), &device);
        let sched = FlowScheduler::new(1000, 20).unwrap();
        assert_eq!(sched.timesteps()[0], 999);
        assert!((sched.level(999) - 1.0).abs() < 1e-12);
        let mut x = Tensor::<2>::from_data(TensorData::new(vec![0.3f32, 0.7], [1, 2]), &device);
        for i in 0..sched.timesteps().len() {
            let s = sched.level(sched.timesteps()[i]);
            let v = x.clone().sub(c.clone()).div_scalar(s);
            x = sched.step(v, i, x, None, None);
        }
        let got = x.into_data().try_to_vec::<f32>().unwrap();
        assert!(
            (got[0] - 1.5).abs() < 1e-5 && (got[1] + 2.0).abs() < 1e-5,
            "{got:?}"
        );
        assert!(FlowScheduler::new(1000, 0).is_err());
        assert!(FlowScheduler::new(10, 11).is_err());
    }

    /// One Euler step whose x̂₀ = x − s·v falls outside the clip range: clipping alone keeps
    /// the predicted noise ε̂ = x + (1 − s)·v; with `with_clipped_model_output` ε̂ is
    /// re-derived from the clipped x̂₀ (as DDIM's `use_clipped_model_output` in diffusers).
    #[test]
    fn clipped_model_output_rederives_the_noise_from_the_clipped_x0() {
        let device = Device::default();
        let one = |v: f32| Tensor::<2>::from_data(TensorData::new(vec![v], [1, 1]), &device);
        let clip = ClipRange {
            lo: one(-1.0),
            hi: one(1.0),
        };
        let plain = FlowScheduler::new(1000, 4).unwrap();
        let rederive = FlowScheduler::new(1000, 4)
            .unwrap()
            .with_clipped_model_output(true);
        let i = 1;
        let s = plain.level(plain.timesteps()[i]);
        let s_next = plain.level(plain.timesteps()[i + 1]);
        assert!(s < 1.0 && s_next < s);
        // x = 0 and v with x̂₀ = x − s·v = 5, outside [−1, 1].
        let (x, v) = (0.0f64, -5.0 / s);
        let run = |sched: &FlowScheduler, c: Option<&ClipRange>| {
            let out = sched.step(one(v as f32), i, one(x as f32), None, c);
            out.into_scalar::<f32>() as f64
        };
        let eps = x + (1.0 - s) * v;
        let want_none = 5.0 * (1.0 - s_next) + eps * s_next;
        let want_clip = 1.0 * (1.0 - s_next) + eps * s_next;
        let eps_re = (x - 1.0 * (1.0 - s)) / s;
        let want_re = 1.0 * (1.0 - s_next) + eps_re * s_next;
        for (got, want) in [
            (run(&plain, None), want_none),
            (run(&plain, Some(&clip)), want_clip),
            (run(&rederive, Some(&clip)), want_re),
            // Without a clip range the flag changes nothing.
            (run(&rederive, None), want_none),
        ] {
            assert!((got - want).abs() < 1e-5, "got {got}, want {want}");
        }
        assert!((want_re - want_clip).abs() > 0.1);
    }
}
