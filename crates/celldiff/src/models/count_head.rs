//! The count head shared by every decoder with a count likelihood (the scVAEDer [`super::Vae`]
//! and the SCLD [`super::Autoencoder`]), after scVI (Lopez et al., *Nat. Methods* 15:1053,
//! 2018, Methods "Generative model"): the decoder's last layer gives logits whose softmax over
//! genes is ρ; the NB mean is `l·ρ` with the cell's library size `l`; one inverse dispersion
//! θ_g per gene; ZINB adds a per-gene-and-cell dropout-logit head
//! ([`super::likelihood`] for the densities).
//!
//! The models keep the head's parameters as their own fields (so their weight files keep
//! their names); the functions here are the one implementation of what those fields mean.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::TensorData;

use super::likelihood::{Likelihood, log_nb_positive, log_zinb_positive};

/// The stored parameter is ln θ / `THETA_SCALE`: Adam moves a parameter by about the learning
/// rate per step whatever its gradient's scale, so ln θ itself would move at most ~0.3 in the
/// ~300 steps a 560-cell dataset trains for, and θ stayed near its start (θ = 1) while the
/// highly expressed genes need θ ≈ 10–100 (measured on pbmc68k: generated cells had 4× the
/// real variance on the top genes). Scaling by 10 gives ln θ a tenfold learning rate.
pub const THETA_SCALE: f64 = 10.0;

/// A trained decoder with a count likelihood, as generation and the θ re-fit see it.
pub trait CountDecoder {
    /// The logits whose softmax over genes is ρ and, for ZINB, the dropout logits.
    ///
    /// # Shapes
    /// `z`: `[batch, n_latent]` → `([batch, n_genes], Option<[batch, n_genes]>)`
    fn count_logits(&self, z: Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>);

    /// ln θ_g `[n_genes]`; `None` for a Gaussian decoder.
    fn count_log_theta(&self) -> Option<Tensor<1>>;
}

/// The parameters of a new count head for `likelihood` over `n_genes` genes: ln θ (θ = 1 at
/// the start; scvi-tools draws ln θ ~ N(0, 1)) and the mean scale `c = 1` (not trained);
/// both `None` for the Gaussian likelihood.
pub(crate) fn init_head(
    likelihood: Likelihood,
    n_genes: usize,
    device: &Device,
) -> (Option<Param<Tensor<1>>>, Option<Param<Tensor<1>>>) {
    if !likelihood.is_count() {
        return (None, None);
    }
    (
        Some(Param::from_tensor(Tensor::zeros([n_genes], device))),
        Some(Param::from_tensor(Tensor::ones([1], device)).set_require_grad(false)),
    )
}

/// The likelihood a decoder's heads imply: no θ = Gaussian, θ alone = NB, θ and a dropout
/// head = ZINB.
pub(crate) fn likelihood_of<T>(
    log_theta: &Option<Param<Tensor<1>>>,
    dropout_head: &Option<T>,
) -> Likelihood {
    match (log_theta, dropout_head) {
        (None, _) => Likelihood::Gaussian,
        (Some(_), None) => Likelihood::Nb,
        (Some(_), Some(_)) => Likelihood::Zinb,
    }
}

/// ln θ_g `[n_genes]` from the stored parameter, clamped to [−12, 12] (θ between 6e-6 and
/// 1.6e5).
pub(crate) fn log_theta(p: &Option<Param<Tensor<1>>>) -> Option<Tensor<1>> {
    p.as_ref()
        .map(|p| p.val().mul_scalar(THETA_SCALE).clamp(-12.0, 12.0))
}

/// The stored ln θ parameter with new values ln θ_g (`[n_genes]`).
pub(crate) fn with_log_theta(
    p: Option<Param<Tensor<1>>>,
    log_theta: &[f64],
) -> Option<Param<Tensor<1>>> {
    let raw: Vec<f32> = log_theta
        .iter()
        .map(|&v| (v / THETA_SCALE) as f32)
        .collect();
    replace(p, raw)
}

/// A parameter with new values; `Param::map` keeps its id, so equal runs write equal weight
/// files.
pub(crate) fn replace(p: Option<Param<Tensor<1>>>, values: Vec<f32>) -> Option<Param<Tensor<1>>> {
    p.map(|p| {
        p.map(|t| {
            let n = values.len();
            Tensor::from_data(TensorData::new(values, [n]), &t.device())
        })
    })
}

/// The decoder mean in the model's space, `log1p(c·softmax(logits))`: the log1p-normalised
/// profile of a cell whose model-gene total is `c` normalised units.
///
/// # Shapes
/// `logits`: `[batch, n_genes]` → `[batch, n_genes]`
pub(crate) fn mean_log1p(logits: Tensor<2>, c: &Param<Tensor<1>>) -> Tensor<2> {
    burn::tensor::activation::softmax(logits, 1)
        .mul(c.val().unsqueeze::<2>())
        .log1p()
}

/// Element-wise log-likelihood `[batch, n_genes]` of `counts` under decoder `logits` (and
/// ZINB `dropout` logits) with library sizes `exp(log_library)` and inverse dispersions
/// `exp(log_theta)`.
///
/// # Shapes
/// - `log_theta`: `[n_genes]`
/// - `counts`, `logits`, `dropout`: `[batch, n_genes]` (counts: raw counts on the model genes)
/// - `log_library`: `[batch, 1]` ln of each cell's total count over the model genes
pub fn count_log_likelihood(
    log_theta: Tensor<1>,
    counts: Tensor<2>,
    log_library: Tensor<2>,
    logits: Tensor<2>,
    dropout: Option<Tensor<2>>,
) -> Tensor<2> {
    let [b, g] = counts.dims();
    let log_mu = burn::tensor::activation::log_softmax(logits, 1).add(log_library.expand([b, g]));
    let log_theta = log_theta.unsqueeze::<2>();
    match dropout {
        Some(pi) => log_zinb_positive(counts, log_mu, log_theta, pi),
        None => log_nb_positive(counts, log_mu, log_theta),
    }
}
