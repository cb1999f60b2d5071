//! Noise schedules of the DDPM forward process (Ho et al. 2020, Eq. 4):
//! `q(z_t | z_0) = N(√ᾱ_t z_0, (1 − ᾱ_t) I)` with `ᾱ_t = Π_{s≤t} (1 − β_s)`.
//!
//! scVAEDer (Sadria & Layton, Genome Biology 2025, Methods "Diffusion model") trains with
//! T = 1000 steps and β from 1e-5 to 5e-3 (linear, quadratic or sigmoid). With that range
//! ᾱ_T is far from zero (≈ 0.08 for linear/sigmoid, ≈ 0.17 for quadratic), so `z_T` still
//! holds ≈ 28–41 % of the signal's amplitude and is *not* `N(0, I)`, although sampling starts
//! from `N(0, I)`. [`NoiseSchedule::terminal_alpha_cumprod`] reports ᾱ_T;
//! `zero_terminal_snr` rescales the schedule so that ᾱ_T = 0 (Lin et al. 2024, "Common
//! diffusion noise schedules and sample steps are flawed", Algorithm 1). The trade-off: with
//! ε-prediction the last step's x̂₀ = (z − √(1−ᾱ)ε̂)/√ᾱ is undefined at ᾱ_T = 0, so the
//! terminal value is floored at [`MIN_ALPHA_CUMPROD`] and x̂₀ must be clipped; in exchange the
//! model learns to start from pure noise, which removes the train/sample mismatch.
//!
//! All arrays are computed in `f64` on the host, like diffusers' schedulers.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Floor of ᾱ_T when `zero_terminal_snr` is on (keeps x̂₀ finite with ε-prediction; diffusers
/// uses a similar floor).
pub const MIN_ALPHA_CUMPROD: f64 = 4.8973451890853435e-08;

/// Shape of β_t over timesteps.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BetaSchedule {
    /// `β = linspace(β₁, β_T, T)` (Ho et al. 2020).
    #[default]
    Linear,
    /// `β = linspace(√β₁, √β_T, T)²` (diffusers `scaled_linear`; scVAEDer "quadratic").
    Quadratic,
    /// `β = sigmoid(linspace(−6, 6, T)) · (β_T − β₁) + β₁` (scVAEDer "sigmoid").
    Sigmoid,
    /// Nichol & Dhariwal 2021, Eq. 17: `ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2)`, s = 0.008,
    /// β clipped at 0.999 (diffusers `squaredcos_cap_v2`; ignores β₁/β_T).
    Cosine,
}

/// Parameters of a noise schedule (stored in the run's `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleConfig {
    /// Number of diffusion steps T (scVAEDer: 1000).
    pub num_train_timesteps: usize,
    /// β₁ (scVAEDer: 1e-5).
    pub beta_start: f64,
    /// β_T (scVAEDer: 5e-3).
    pub beta_end: f64,
    /// Shape of the schedule.
    pub beta_schedule: BetaSchedule,
    /// Rescale to ᾱ_T = 0 (Lin et al. 2024).
    pub zero_terminal_snr: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 1e-5,
            beta_end: 5e-3,
            beta_schedule: BetaSchedule::Linear,
            zero_terminal_snr: false,
        }
    }
}

/// A precomputed noise schedule: `betas`, `alphas` and `alphas_cumprod`, each of length T
/// (index `t = 0..T`, diffusers' convention: timestep `t` has β = `betas[t]`).
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    /// The configuration it was built from.
    pub config: ScheduleConfig,
    /// β_t, length T.
    pub betas: Vec<f64>,
    /// α_t = 1 − β_t, length T.
    pub alphas: Vec<f64>,
    /// ᾱ_t = Π_{s≤t} α_s, length T.
    pub alphas_cumprod: Vec<f64>,
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n)
        .map(|i| a + (b - a) * i as f64 / (n - 1) as f64)
        .collect()
}

impl NoiseSchedule {
    /// Builds the schedule.
    ///
    /// # Errors
    /// [`Error::Param`] if T = 0, or β₁/β_T are not in (0, 1) with β₁ ≤ β_T.
    pub fn new(config: &ScheduleConfig) -> Result<Self> {
        let t = config.num_train_timesteps;
        if t == 0 {
            return Err(Error::Param("num_train_timesteps must be > 0".into()));
        }
        let (b1, bt) = (config.beta_start, config.beta_end);
        if !(b1 > 0.0 && bt < 1.0 && b1 <= bt) {
            return Err(Error::Param(format!(
                "beta range must satisfy 0 < beta_start <= beta_end < 1, got {b1} .. {bt}"
            )));
        }
        let mut betas = match config.beta_schedule {
            BetaSchedule::Linear => linspace(b1, bt, t),
            BetaSchedule::Quadratic => linspace(b1.sqrt(), bt.sqrt(), t)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            BetaSchedule::Sigmoid => linspace(-6.0, 6.0, t)
                .into_iter()
                .map(|x| 1.0 / (1.0 + (-x).exp()) * (bt - b1) + b1)
                .collect(),
            BetaSchedule::Cosine => {
                let s = 0.008;
                let abar = |x: f64| {
                    ((x + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..t)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
                        (1.0 - abar(t2) / abar(t1)).min(0.999)
                    })
                    .collect()
            }
        };
        if config.zero_terminal_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let mut alphas_cumprod = Vec::with_capacity(t);
        let mut acc = 1.0;
        for a in &alphas {
            acc *= a;
            alphas_cumprod.push(acc);
        }
        if config.zero_terminal_snr {
            let last = alphas_cumprod.len() - 1;
            alphas_cumprod[last] = alphas_cumprod[last].max(MIN_ALPHA_CUMPROD);
        }
        Ok(Self {
            config: config.clone(),
            betas,
            alphas,
            alphas_cumprod,
        })
    }

    /// Number of training timesteps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Whether T = 0 (never, for a constructed schedule).
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// ᾱ_T, the fraction of the signal's variance left at the last step (0 = pure noise).
    pub fn terminal_alpha_cumprod(&self) -> f64 {
        *self.alphas_cumprod.last().unwrap_or(&1.0)
    }

    /// `(√ᾱ_t, √(1 − ᾱ_t))` for timestep index `t`: the coefficients of
    /// `z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε` (Ho et al. 2020, Eq. 4).
    pub fn forward_coefficients(&self, t: usize) -> (f64, f64) {
        let a = self.alphas_cumprod[t];
        (a.sqrt(), (1.0 - a).sqrt())
    }
}

/// Lin et al. 2024, Algorithm 1 (diffusers `rescale_zero_terminal_snr`): shift and scale
/// √ᾱ so that √ᾱ_T = 0 while √ᾱ_1 is unchanged, then recover β.
fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    let mut sqrt_abar: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc.sqrt()
        })
        .collect();
    let (first, last) = (sqrt_abar[0], *sqrt_abar.last().unwrap());
    for v in &mut sqrt_abar {
        *v = (*v - last) * first / (first - last);
    }
    let abar: Vec<f64> = sqrt_abar.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(betas.len());
    out.push(1.0 - abar[0]);
    for i in 1..abar.len() {
        out.push(1.0 - abar[i] / abar[i - 1]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: BetaSchedule) -> NoiseSchedule {
        NoiseSchedule::new(&ScheduleConfig {
            beta_schedule: kind,
            ..Default::default()
        })
        .unwrap()
    }

    fn close(a: f64, b: f64, rel: f64) {
        assert!((a - b).abs() <= rel * b.abs().max(1e-300), "{a} vs {b}");
    }

    // Reference (numpy 1.26, float64):
    //   import numpy as np
    //   T, b1, bT = 1000, 1e-5, 5e-3
    //   lin = np.linspace(b1, bT, T)
    //   quad = np.linspace(b1**.5, bT**.5, T)**2
    //   sig = 1/(1+np.exp(-np.linspace(-6, 6, T)))*(bT-b1)+b1
    //   for b in (lin, quad, sig):
    //       ac = np.cumprod(1-b); print(ac[0], ac[499], ac[-1])
    //   -> 0.99999 .. 0.08133429056662822 (linear), 0.17413511418250835 (quadratic),
    //      0.0812491943039999 (sigmoid)
    #[test]
    fn linear_alphas_cumprod_golden() {
        let s = sched(BetaSchedule::Linear);
        close(s.alphas_cumprod[0], 1.0 - 1e-5, 1e-12);
        // ln ᾱ_T = Σ ln(1 − β_t); Σβ = T(β1+βT)/2 = 2.505
        let expect_last: f64 = linspace(1e-5, 5e-3, 1000)
            .iter()
            .map(|b| (1.0 - b).ln())
            .sum();
        close(s.terminal_alpha_cumprod(), expect_last.exp(), 1e-10);
        close(s.terminal_alpha_cumprod(), 0.08133429056662822, 1e-9);
    }

    #[test]
    fn quadratic_and_sigmoid_golden() {
        let q = sched(BetaSchedule::Quadratic);
        close(q.betas[0], 1e-5, 1e-9);
        close(q.betas[999], 5e-3, 1e-9);
        close(q.terminal_alpha_cumprod(), 0.17413511418250835, 1e-9);
        let s = sched(BetaSchedule::Sigmoid);
        // sigmoid(-6) * (bT - b1) + b1
        close(
            s.betas[0],
            1.0 / (1.0 + 6f64.exp()) * (5e-3 - 1e-5) + 1e-5,
            1e-12,
        );
        close(s.terminal_alpha_cumprod(), 0.0812491943039999, 1e-9);
    }

    #[test]
    fn cosine_matches_closed_form() {
        let c = sched(BetaSchedule::Cosine);
        let abar = |x: f64| {
            ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        // Before clipping, ᾱ_t telescopes to abar((t+1)/T) / abar(0).
        close(c.alphas_cumprod[499], abar(0.5) / abar(0.0), 1e-9);
        assert!(c.terminal_alpha_cumprod() < 1e-4);
    }

    #[test]
    fn zero_terminal_snr_rescales() {
        let cfg = ScheduleConfig {
            zero_terminal_snr: true,
            ..Default::default()
        };
        let s = NoiseSchedule::new(&cfg).unwrap();
        assert!(s.terminal_alpha_cumprod() <= MIN_ALPHA_CUMPROD * 1.000001);
        close(s.alphas_cumprod[0], 1.0 - 1e-5, 1e-9);
        assert!(s.alphas_cumprod.windows(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn rejects_bad_ranges() {
        let cfg = ScheduleConfig {
            beta_start: 0.1,
            beta_end: 0.01,
            ..Default::default()
        };
        assert!(NoiseSchedule::new(&cfg).is_err());
    }
}
