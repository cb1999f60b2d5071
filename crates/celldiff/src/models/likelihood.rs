//! Count likelihoods of the decoders: negative binomial (NB) and zero-inflated NB (ZINB), as
//! scVI defines them (Lopez et al., *Nat. Methods* 15:1053, 2018, Methods "Generative
//! model"; scvi-tools `scvi.distributions._negative_binomial.log_nb_positive` and
//! `log_zinb_positive`), plus the Gaussian (MSE on log1p) setting of the scVAEDer and SCLD
//! papers.
//!
//! With gene proportions ρ = softmax(f(z)) (`[batch, n_genes]`), the cell's library size `l`
//! (its total count over the model genes, scVI's observed library) and one inverse dispersion
//! θ_g per gene, counts are `x_g ~ NB(μ_g = l·ρ_g, θ_g)`:
//!
//! ```text
//! log NB(x | μ, θ) = θ (log θ − log(θ + μ)) + x (log μ − log(θ + μ))
//!                  + lgamma(x + θ) − lgamma(θ) − lgamma(x + 1)
//! ```
//!
//! and ZINB adds a dropout logit π (`P(zero-inflation) = sigmoid(π)`):
//! `log p(0) = softplus(−π + θ(log θ − log(θ + μ))) − softplus(−π)`,
//! `log p(x > 0) = −softplus(−π) − π + log NB(x | μ, θ)`.
//!
//! Burn has no `lgamma`, so [`lgamma`] is written here from tensor operations (so that
//! autodiff gives its derivative, the digamma function, for the θ terms): the recurrence
//! `lgamma(y) = lgamma(y + 6) − ln(y (y+1) ⋯ (y+5))` and Stirling's series at `y + 6 ≥ 6`
//! (absolute error < 1e-9 in exact arithmetic; f32 rounding dominates). No crate provides a
//! differentiable log-gamma for Burn tensors.

use burn::tensor::activation::softplus;
use serde::{Deserialize, Serialize};

use burn::prelude::*;

/// ½ ln(2π).
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// How a decoder's output is scored against a cell.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Likelihood {
    /// Squared error on the preprocessed (e.g. log1p-normalised) values: a Gaussian with unit
    /// variance, the scVAEDer and SCLD papers' setting (kept for reproduction).
    #[default]
    Gaussian,
    /// Negative binomial on the counts, mean `l·ρ`, one θ per gene (scVI's default).
    Nb,
    /// Zero-inflated negative binomial: NB plus a per-gene-and-cell dropout logit.
    Zinb,
}

impl Likelihood {
    /// Whether the decoder models counts (NB or ZINB).
    pub fn is_count(self) -> bool {
        !matches!(self, Likelihood::Gaussian)
    }

    /// The flag value (`gaussian`, `nb`, `zinb`).
    pub fn name(self) -> &'static str {
        match self {
            Likelihood::Gaussian => "gaussian",
            Likelihood::Nb => "nb",
            Likelihood::Zinb => "zinb",
        }
    }
}

/// ln Γ(y), element-wise, for `y > 0`; differentiable (see the module docs for the method).
///
/// # Shapes
/// any `[a, b]` → the same shape.
pub fn lgamma(y: Tensor<2>) -> Tensor<2> {
    // ln(y (y+1) (y+2)) + ln((y+3) (y+4) (y+5)): two logs of products that stay far from the
    // f32 range for counts up to 1e6.
    let p1 = y
        .clone()
        .mul(y.clone().add_scalar(1.0))
        .mul(y.clone().add_scalar(2.0));
    let p2 = y
        .clone()
        .add_scalar(3.0)
        .mul(y.clone().add_scalar(4.0))
        .mul(y.clone().add_scalar(5.0));
    let w = y.add_scalar(6.0);
    let inv = w.clone().recip();
    let inv2 = inv.clone().square();
    // 1/(12w) − 1/(360w³) + 1/(1260w⁵), in Horner form.
    let series = inv.clone().mul(
        inv2.clone()
            .mul_scalar(1.0 / 1260.0)
            .sub_scalar(1.0 / 360.0)
            .mul(inv2)
            .add_scalar(1.0 / 12.0),
    );
    let stirling = w
        .clone()
        .sub_scalar(0.5)
        .mul(w.clone().log())
        .sub(w)
        .add_scalar(HALF_LN_2PI)
        .add(series);
    stirling.sub(p1.log()).sub(p2.log())
}

/// ln Γ(y) in f64 for `y > 0` (libm's `lgamma`), for host-side log-likelihoods and tests.
pub fn lgamma_f64(y: f64) -> f64 {
    libm::lgamma(y)
}

/// Element-wise log NB(x | μ, θ) (scvi-tools `log_nb_positive`), written with `log μ` as
/// input so that μ = l·softmax(·) never underflows.
///
/// # Shapes
/// - `x`: `[batch, n_genes]` counts (non-negative integers as f32; a constant, no gradient)
/// - `log_mu`: `[batch, n_genes]` natural log of the NB mean
/// - `log_theta`: `[1, n_genes]` natural log of the inverse dispersion (broadcast over cells)
/// - output: `[batch, n_genes]` log-probabilities (nats)
pub fn log_nb_positive(x: Tensor<2>, log_mu: Tensor<2>, log_theta: Tensor<2>) -> Tensor<2> {
    let [b, g] = x.dims();
    let log_theta = log_theta.expand([b, g]);
    let theta = log_theta.clone().exp();
    let mu = log_mu.clone().exp();
    let log_theta_mu = theta.clone().add(mu).log();
    theta
        .clone()
        .mul(log_theta.sub(log_theta_mu.clone()))
        .add(x.clone().mul(log_mu.sub(log_theta_mu)))
        .add(lgamma(x.clone().add(theta.clone())))
        .sub(lgamma(theta))
        .sub(lgamma(x.add_scalar(1.0)))
}

/// Element-wise log ZINB(x | μ, θ, π) (scvi-tools `log_zinb_positive`), π the dropout logit.
///
/// # Shapes
/// As [`log_nb_positive`], plus `pi_logits`: `[batch, n_genes]`.
pub fn log_zinb_positive(
    x: Tensor<2>,
    log_mu: Tensor<2>,
    log_theta: Tensor<2>,
    pi_logits: Tensor<2>,
) -> Tensor<2> {
    let [b, g] = x.dims();
    let log_theta_b = log_theta.clone().expand([b, g]);
    let theta = log_theta_b.clone().exp();
    let log_theta_mu = theta.clone().add(log_mu.clone().exp()).log();
    let softplus_pi = softplus(pi_logits.clone().neg(), 1.0);
    // log NB(0) = θ (log θ − log(θ + μ)).
    let nb_zero = theta.mul(log_theta_b.sub(log_theta_mu));
    let pi_theta_log = pi_logits.clone().neg().add(nb_zero);
    let case_zero = softplus(pi_theta_log, 1.0).sub(softplus_pi.clone());
    // −softplus(−π) + (−π + θ(log θ − log(θ+μ))) + x(…) + lgammas = log NB(x) − softplus(−π) − π.
    let case_non_zero = log_nb_positive(x.clone(), log_mu, log_theta)
        .sub(softplus_pi)
        .sub(pi_logits);
    let is_zero = x.lower_equal_elem(0.0).float();
    let non_zero = is_zero.clone().neg().add_scalar(1.0);
    case_zero.mul(is_zero).add(case_non_zero.mul(non_zero))
}

/// log NB(x | μ, θ) in f64 (the same formula as [`log_nb_positive`]), for one entry.
pub fn log_nb_f64(x: f64, mu: f64, theta: f64) -> f64 {
    let ltm = (theta + mu).ln();
    theta * (theta.ln() - ltm) + x * (mu.ln() - ltm) + lgamma_f64(x + theta)
        - lgamma_f64(theta)
        - lgamma_f64(x + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn t(v: &[f64], rows: usize) -> Tensor<2> {
        let cols = v.len() / rows;
        let data: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::from_data(TensorData::new(data, [rows, cols]), &Device::default())
    }

    fn host(x: Tensor<2>) -> Vec<f64> {
        x.into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    #[test]
    fn lgamma_matches_libm() {
        let ys = [1e-3, 0.1, 0.5, 1.0, 2.5, 7.0, 33.3, 250.0, 4096.0];
        let got = host(lgamma(t(&ys, 1)));
        for (y, g) in ys.iter().zip(got) {
            let want = libm::lgamma(*y);
            // f32: relative 2e-6 of the larger of the value and the terms that cancel.
            let tol = 2e-6 * want.abs().max(y * y.ln().abs()).max(10.0);
            assert!((g - want).abs() < tol, "lgamma({y}) = {g}, want {want}");
        }
    }

    #[test]
    fn log_nb_matches_scipy() {
        // from scipy.stats import nbinom
        // for x, mu, theta in [(0, 0.5, 1.0), (3, 2.0, 0.5), (12, 7.5, 4.0), (0, 30.0, 0.2),
        //                      (57, 40.0, 12.0), (1, 1e-3, 2.0)]:
        //     p = theta / (theta + mu)
        //     print(nbinom.logpmf(x, theta, p))
        let cases = [
            (0.0, 0.5, 1.0, -0.405_465_108_108_164_4),
            (3.0, 2.0, 0.5, -2.637_300_419_965_36),
            (12.0, 7.5, 4.0, -3.233_241_455_969_575_5),
            (0.0, 30.0, 0.2, -1.003_455_967_362_984_8),
            (57.0, 40.0, 12.0, -4.492_522_333_908_983),
            (1.0, 1e-3, 2.0, -6.909_254_904_107_101),
        ];
        for &(x, mu, theta, want) in &cases {
            let f = log_nb_f64(x, mu, theta);
            assert!(
                (f - want).abs() < 1e-9,
                "f64 log NB({x}; {mu}, {theta}) = {f}, want {want}"
            );
        }
        let xs: Vec<f64> = cases.iter().map(|c| c.0).collect();
        let lm: Vec<f64> = cases.iter().map(|c| c.1.ln()).collect();
        let lt: Vec<f64> = cases.iter().map(|c| c.2.ln()).collect();
        let n = cases.len();
        // One row per case so that each has its own θ column.
        let got = host(log_nb_positive(t(&xs, 1), t(&lm, 1), t(&lt, 1)));
        for k in 0..n {
            let want = cases[k].3;
            assert!(
                (got[k] - want).abs() < 2e-4 * want.abs().max(1.0),
                "tensor log NB case {k}: {} vs {want}",
                got[k]
            );
        }
    }

    #[test]
    fn zinb_reduces_to_nb_without_dropout_and_normalises() {
        // π → −∞: no zero inflation, ZINB = NB.
        let xs = [0.0, 1.0, 4.0, 9.0];
        let lm = [1.5f64.ln(); 4];
        let lt = [0.7f64.ln(); 4];
        let nb = host(log_nb_positive(t(&xs, 1), t(&lm, 1), t(&lt, 1)));
        let zinb = host(log_zinb_positive(
            t(&xs, 1),
            t(&lm, 1),
            t(&lt, 1),
            t(&[-30.0; 4], 1),
        ));
        for (a, b) in nb.iter().zip(&zinb) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        // With π = 0.3 the probabilities still sum to 1 over x = 0..200.
        let xs: Vec<f64> = (0..200).map(f64::from).collect();
        let lp = host(log_zinb_positive(
            t(&xs, 1),
            t(&[3.0f64.ln(); 200], 1),
            t(&[0.5f64.ln(); 200], 1),
            t(&[0.3; 200], 1),
        ));
        let total: f64 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-3, "sum of ZINB pmf = {total}");
        // P(0) = sigmoid(π) + (1 − sigmoid(π)) NB(0).
        let pi = 1.0 / (1.0 + (-0.3f64).exp());
        let nb0 = (0.5f64 / 3.5).powf(0.5);
        assert!((lp[0].exp() - (pi + (1.0 - pi) * nb0)).abs() < 1e-4);
    }
}
