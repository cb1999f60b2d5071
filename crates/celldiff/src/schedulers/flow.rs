//! Conditional flow matching in the latent (Lipman, Chen, Ben-Hamu, Nickel & Le, "Flow
//! Matching for Generative Modeling", ICLR 2023, Eq. 20–23 with σ_min = 0, i.e. the linear
//! interpolant of rectified flow; as CFGen and scLDM use it), on the same denoiser networks
//! and timestep embeddings as the diffusion prior (`--prior flow`, issue 18 section 6).
//!
//! The path runs from data to noise like the diffusion models here: at timestep k ∈ 0..T the
//! noise level is `s_k = (k + 1) / T` and `x_k = (1 − s_k) z₀ + s_k ε` (ε ~ N(0, I)); the
//! network predicts the velocity `v = dx/ds = ε − z₀` (training target,
//! [`crate::train::Objective::Velocity`]). Sampling integrates the ODE dx/ds = v(x, s) from
//! pure noise (s = 1) to s = 0 ([`FlowScheduler`]) with one of three solvers ([`FlowSolver`]):
//!
//! - Euler: `x ← x + (s' − s) v̂(x, s)`, written as `x' = (1 − s') x̂₀ + s' ε̂` with
//!   `x̂₀ = x − s v̂` and `ε̂ = x + (1 − s) v̂`, which is the same step and lets x̂₀ be clipped
//!   to the training latents' range as the DDIM sampler does;
//! - Heun (explicit trapezoidal rule, 2nd order; Karras, Aittala, Aila & Laine, "Elucidating
//!   the Design Space of Diffusion-Based Generative Models", NeurIPS 2022, Algorithm 1):
//!   predictor `x̃ = x + (s' − s) v̂(x, s)`, then `x' = x + (s' − s) (v̂(x, s) + v̂(x̃, s'))/2`;
//!   an Euler step where s' = 0 (the network has no timestep there, Algorithm 1 line 8);
//! - midpoint (2nd order Runge–Kutta): `x̃ = x + (s_m − s) v̂(x, s)` with s_m the level of the
//!   timestep nearest (s + s')/2, then `x' = x + (s' − s) v̂(x̃, s_m)`.
//!
//! The two-stage solvers evaluate the network twice per step; both stages are entries of
//! [`Scheduler::timesteps`], so the one denoising loop ([`crate::pipeline::denoise_loop`])
//! drives them unchanged, and the scheduler keeps the step's start (x, v̂) between its two
//! stages (as diffusers' `HeunDiscreteScheduler`). Every combined step goes through the
//! clip-aware Euler form above with the combined velocity.

use std::sync::Mutex;

use burn::Tensor;

use super::{ClipRange, Scheduler};
use crate::error::{Error, Result};

/// The ODE solver of a [`FlowScheduler`] (`generate --sampler ddim|heun|midpoint` on a flow
/// run; `ddpm` = Euler over all T timesteps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowSolver {
    /// One network evaluation per step, 1st order.
    Euler,
    /// Heun's 2nd-order method: two evaluations per step (one on the last step).
    Heun,
    /// The explicit midpoint method, 2nd order: two evaluations per step.
    Midpoint,
}

/// What one network evaluation of a [`FlowScheduler`] does with its velocity.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// A one-evaluation Euler step from level `s` to `s_next`.
    Euler { s: f64, s_next: f64 },
    /// The first evaluation of a two-stage step: keep (x, v̂) and move to `s_eval` with it.
    Predict { s: f64, s_eval: f64 },
    /// The second evaluation: the step from `s` to `s_next` with the kept x and the combined
    /// velocity (Heun: the mean of both; midpoint: the second).
    Correct { s: f64, s_next: f64, heun: bool },
}

/// ODE sampler of a flow-matching prior over `num_inference_steps` evenly spaced levels
/// `T−1, T−1−T/n, …` (the first at s = 1, pure noise; the last step lands on s = 0), with the
/// Euler, Heun or midpoint solver ([`FlowSolver`]).
#[derive(Debug)]
pub struct FlowScheduler {
    /// The timestep of every network evaluation, in order.
    timesteps: Vec<usize>,
    /// What each evaluation does (same length as `timesteps`).
    stages: Vec<Stage>,
    /// The step levels' timesteps (one per step).
    grid: Vec<usize>,
    big_t: usize,
    solver: FlowSolver,
    use_clipped_model_output: bool,
    /// (x, v̂) at the start of a two-stage step, between its two evaluations.
    pending: Mutex<Option<(Tensor<2>, Tensor<2>)>>,
}

impl Clone for FlowScheduler {
    fn clone(&self) -> Self {
        Self {
            timesteps: self.timesteps.clone(),
            stages: self.stages.clone(),
            grid: self.grid.clone(),
            big_t: self.big_t,
            solver: self.solver,
            use_clipped_model_output: self.use_clipped_model_output,
            pending: Mutex::new(None),
        }
    }
}

impl FlowScheduler {
    /// An Euler sampler over `T` training timesteps with `num_inference_steps` steps.
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
        let grid: Vec<usize> = (0..n).map(|i| big_t - 1 - i * big_t / n).collect();
        let mut s = Self {
            timesteps: Vec::new(),
            stages: Vec::new(),
            grid,
            big_t,
            solver: FlowSolver::Euler,
            use_clipped_model_output: false,
            pending: Mutex::new(None),
        };
        s.plan();
        Ok(s)
    }

    /// The same steps integrated with `solver` (Heun and midpoint evaluate the network about
    /// twice per step).
    pub fn with_solver(mut self, solver: FlowSolver) -> Self {
        self.solver = solver;
        self.plan();
        self
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

    /// The solver.
    pub fn solver(&self) -> FlowSolver {
        self.solver
    }

    /// Fills `timesteps` and `stages` from `grid` and `solver`.
    fn plan(&mut self) {
        self.timesteps.clear();
        self.stages.clear();
        for (i, &k) in self.grid.iter().enumerate() {
            let s = self.level(k);
            let next = self.grid.get(i + 1).copied();
            let s_next = next.map_or(0.0, |k| self.level(k));
            match (self.solver, next) {
                (FlowSolver::Heun, Some(k_next)) => {
                    self.timesteps.extend([k, k_next]);
                    self.stages.extend([
                        Stage::Predict { s, s_eval: s_next },
                        Stage::Correct {
                            s,
                            s_next,
                            heun: true,
                        },
                    ]);
                }
                (FlowSolver::Midpoint, _) => {
                    // The timestep whose level is nearest (s + s_next) / 2.
                    let mid = ((s + s_next) / 2.0 * self.big_t as f64).round() as usize;
                    let k_mid = mid.saturating_sub(1).min(k);
                    self.timesteps.extend([k, k_mid]);
                    self.stages.extend([
                        Stage::Predict {
                            s,
                            s_eval: self.level(k_mid),
                        },
                        Stage::Correct {
                            s,
                            s_next,
                            heun: false,
                        },
                    ]);
                }
                _ => {
                    self.timesteps.push(k);
                    self.stages.push(Stage::Euler { s, s_next });
                }
            }
        }
    }

    /// The clip-aware Euler move of `x` at level `s` to `s_next` with velocity `v`.
    fn euler(
        &self,
        x: Tensor<2>,
        v: Tensor<2>,
        s: f64,
        s_next: f64,
        clip: Option<&ClipRange>,
    ) -> Tensor<2> {
        let x0 = x.clone().sub(v.clone().mul_scalar(s));
        let (x0, eps) = match clip {
            Some(c) if self.use_clipped_model_output => {
                let x0 = c.apply(x0);
                let eps = x
                    .sub(x0.clone().mul_scalar(1.0 - s))
                    .div_scalar(s.max(1e-12));
                (x0, eps)
            }
            Some(c) => (c.apply(x0), x.add(v.mul_scalar(1.0 - s))),
            None => (x0, x.add(v.mul_scalar(1.0 - s))),
        };
        x0.mul_scalar(1.0 - s_next).add(eps.mul_scalar(s_next))
    }
}

impl Scheduler for FlowScheduler {
    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn needs_noise(&self, _i: usize) -> bool {
        false
    }

    /// Evaluation `i`'s part of its step (see [`FlowSolver`]). A second stage reached without
    /// its first (a loop started in the middle of a step) takes an Euler step from `sample`.
    fn step(
        &self,
        model_output: Tensor<2>,
        i: usize,
        sample: Tensor<2>,
        _noise: Option<Tensor<2>>,
        clip: Option<&ClipRange>,
    ) -> Tensor<2> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match self.stages[i] {
            Stage::Euler { s, s_next } => self.euler(sample, model_output, s, s_next, clip),
            Stage::Predict { s, s_eval } => {
                *pending = Some((sample.clone(), model_output.clone()));
                self.euler(sample, model_output, s, s_eval, clip)
            }
            Stage::Correct { s, s_next, heun } => match pending.take() {
                Some((x, v1)) => {
                    let v = if heun {
                        v1.add(model_output).mul_scalar(0.5)
                    } else {
                        model_output
                    };
                    self.euler(x, v, s, s_next, clip)
                }
                None => self.euler(sample, model_output, s, s_next, clip),
            },
        }
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

    /// On dx/ds = x (solution x(s) = x(1)·e^{s−1}, so x(0) = x(1)/e, with the exact velocity
    /// at every level) the 2nd-order solvers' error falls ~4× when the steps double, Euler's
    /// ~2×, and Heun and midpoint beat Euler at equal steps.
    #[test]
    fn heun_and_midpoint_are_second_order() {
        let device = Device::default();
        let big_t = 4096;
        let x1 = 1.0f64;
        let exact = x1 / std::f64::consts::E;
        let run = |solver: FlowSolver, n: usize| {
            let sched = FlowScheduler::new(big_t, n).unwrap().with_solver(solver);
            let mut x = Tensor::<2>::from_data(TensorData::new(vec![x1 as f32], [1, 1]), &device);
            // The exact velocity of dx/ds = x at whatever point each stage is evaluated.
            for i in 0..sched.timesteps().len() {
                x = sched.step(x.clone(), i, x, None, None);
            }
            (x.into_scalar::<f32>() as f64 - exact).abs()
        };
        for solver in [FlowSolver::Euler, FlowSolver::Heun, FlowSolver::Midpoint] {
            let (e8, e16) = (run(solver, 8), run(solver, 16));
            let ratio = e8 / e16;
            match solver {
                FlowSolver::Euler => assert!((1.6..2.5).contains(&ratio), "{solver:?} {ratio}"),
                _ => {
                    assert!(
                        ratio > 3.0,
                        "{solver:?}: error ratio {ratio} ({e8} → {e16})"
                    );
                    assert!(e16 < run(FlowSolver::Euler, 16) / 4.0, "{solver:?} {e16}");
                }
            }
        }
        // Evaluations: Heun 2 per step but 1 on the last (to s = 0), midpoint 2 per step.
        let heun = FlowScheduler::new(1000, 10)
            .unwrap()
            .with_solver(FlowSolver::Heun);
        assert_eq!(heun.timesteps().len(), 19);
        let mid = FlowScheduler::new(1000, 10)
            .unwrap()
            .with_solver(FlowSolver::Midpoint);
        assert_eq!(mid.timesteps().len(), 20);
        assert!(mid.timesteps().windows(2).all(|w| w[0] >= w[1]));
        // Step 0 runs s = 1 → 0.9: the midpoint level 0.95 is timestep 0.95·1000 − 1 = 949;
        // the last step s = 0.1 → 0 evaluates at 0.05, timestep 49.
        assert_eq!(mid.timesteps()[1], 949);
        assert_eq!(mid.timesteps()[19], 49);
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
