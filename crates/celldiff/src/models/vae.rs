//! The scVAEDer variational autoencoder (Sadria & Layton, Genome Biology 2025, Methods
//! "Variational autoencoder"; Kingma & Welling 2014).
//!
//! Encoder: `n_genes → hidden[0] → … → hidden[k]`, each layer Linear → BatchNorm → ReLU →
//! Dropout (the normalisation and the activation are options, [`HiddenNorm`] and
//! [`Activation`]: `--vae-norm none --vae-activation silu` is the block of SCLD's autoencoder); Gaussian posterior heads μ and log σ² (`n_latent` each); reparameterisation
//! z = μ + σ ⊙ ε. Decoder mirrors the encoder (`n_latent → hidden[k] → … → hidden[0]`) and ends
//! in a linear layer to `n_genes` (linear output for log1p-normalised data).
//!
//! Loss (per cell, averaged over the minibatch), by [`Likelihood`]:
//! - `gaussian` (the paper's setting): `‖x − x̂‖²` summed over genes (Gaussian likelihood
//!   with unit variance up to a constant) `+ β · KL(q(z|x) ‖ N(0, I))`;
//! - `nb` / `zinb` (scVI, Lopez et al. 2018): the decoder's output are logits of gene
//!   proportions ρ = softmax(f(z)); `−log NB(x | l·ρ, θ)` (or ZINB, with a second head of
//!   per-gene-and-cell dropout logits) summed over genes on the cell's counts `x` and library
//!   size `l`, one learned inverse dispersion θ_g per gene ([`super::likelihood`]), `+ β · KL`.
//!
//! KL = −½ Σ_k (1 + log σ²_k − μ²_k − σ²_k) (Kingma & Welling 2014, Appendix B).

use burn::module::{Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig};
use burn::prelude::*;

use super::count_head::{self, CountDecoder};
use super::layers::{Activation, Dense, DenseConfig};
use super::likelihood::Likelihood;
use serde::{Deserialize, Serialize};

pub use super::count_head::THETA_SCALE;

/// Configuration of a [`Vae`].
#[derive(Config, Debug)]
pub struct VaeConfig {
    /// Number of input genes (e.g. 2000 highly variable genes).
    pub n_genes: usize,
    /// Hidden widths of the encoder, outermost first (decoder uses them reversed).
    #[config(default = "vec![512, 256]")]
    pub hidden: Vec<usize>,
    /// Latent dimension (`n_latent`; scVAEDer: 50).
    #[config(default = 50)]
    pub n_latent: usize,
    /// Dropout probability after each hidden layer.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Dropout in the decoder's hidden layers; `None` = `dropout` (runs written before it
    /// existed).
    #[config(default = "None")]
    pub decoder_dropout: Option<f64>,
    /// Decoder likelihood (`gaussian` for runs written before it existed).
    #[config(default = "Likelihood::Gaussian")]
    pub likelihood: Likelihood,
    /// Normalisation after each hidden layer (`--vae-norm`; `batch` for runs written before
    /// it existed).
    #[config(default = "HiddenNorm::Batch")]
    pub norm: HiddenNorm,
    /// Activation of each hidden layer (`--vae-activation`: `relu` or `silu`; `relu` for runs
    /// written before it existed).
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
}

/// Normalisation after the affine map of each hidden layer of the [`Vae`].
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HiddenNorm {
    /// BatchNorm (Ioffe & Szegedy 2015), as scVAEDer and scVI: batch statistics in training,
    /// running averages (momentum 0.1) at inference.
    #[default]
    Batch,
    /// None: the hidden layer is Linear → activation → Dropout, as SCLD's autoencoder.
    None,
}

/// One hidden layer: Linear → BatchNorm (optional) → activation → Dropout.
#[derive(Module, Debug)]
pub struct HiddenBlock {
    dense: Dense,
    norm: Option<BatchNorm>,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

impl HiddenBlock {
    fn new(d_in: usize, d_out: usize, dropout: f64, cfg: &VaeConfig, device: &Device) -> Self {
        Self {
            dense: DenseConfig::new(d_in, d_out).init(device),
            norm: (cfg.norm == HiddenNorm::Batch).then(|| BatchNormConfig::new(d_out).init(device)),
            dropout: DropoutConfig::new(dropout).init(),
            activation: cfg.activation,
        }
    }

    /// # Shapes
    /// `[batch, d_in]` → `[batch, d_out]`
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self.dense.forward(x, Activation::None);
        let h = match &self.norm {
            Some(norm) => norm.forward(h),
            None => h,
        };
        #[cfg(feature = "flex")]
        if self.activation == Activation::Relu
            && self.dropout.training.is_enabled()
            && let Some(y) = super::fused::relu_dropout(&h, self.dropout.prob)
        {
            return y;
        }
        self.dropout.forward(self.activation.apply(h))
    }
}

/// The VAE. Create with [`VaeConfig::init`].
#[derive(Module, Debug)]
pub struct Vae {
    encoder: Vec<HiddenBlock>,
    mu: Dense,
    logvar: Dense,
    decoder: Vec<HiddenBlock>,
    out: Dense,
    /// ln θ_g / [`THETA_SCALE`], `[n_genes]` (count likelihoods only).
    log_theta: Option<Param<Tensor<1>>>,
    /// Dropout-logit head (ZINB only).
    dropout_head: Option<Dense>,
    /// `[1]`: the scale `c` of [`Vae::decode`]'s mean `log1p(c·ρ)` for count likelihoods, the
    /// median over training cells of `l_i · s_i` (library size times the size factor of one
    /// count: the normalised units of the cell's model-gene total). Not trained; set with
    /// [`Vae::with_mean_scale`].
    mean_scale: Option<Param<Tensor<1>>>,
}

/// What [`Vae::forward`] returns.
#[derive(Debug, Clone)]
pub struct VaeOutput {
    /// Reconstruction x̂ `[batch, n_genes]`, in the input's units.
    pub recon: Tensor<2>,
    /// Posterior mean μ `[batch, n_latent]`.
    pub mu: Tensor<2>,
    /// Posterior log-variance log σ² `[batch, n_latent]`.
    pub logvar: Tensor<2>,
    /// ZINB dropout logits π `[batch, n_genes]` (ZINB only).
    pub dropout: Option<Tensor<2>>,
}

impl VaeConfig {
    /// Builds the VAE on `device`.
    pub fn init(&self, device: &Device) -> Vae {
        let mut dims = vec![self.n_genes];
        dims.extend(&self.hidden);
        let encoder = dims
            .windows(2)
            .map(|w| HiddenBlock::new(w[0], w[1], self.dropout, self, device))
            .collect();
        let last = *dims.last().unwrap();
        let mut rev: Vec<usize> = self.hidden.iter().rev().copied().collect();
        rev.insert(0, self.n_latent);
        let dec_dropout = self.decoder_dropout.unwrap_or(self.dropout);
        let decoder = rev
            .windows(2)
            .map(|w| HiddenBlock::new(w[0], w[1], dec_dropout, self, device))
            .collect();
        let dec_last = *rev.last().unwrap();
        let (log_theta, mean_scale) = count_head::init_head(self.likelihood, self.n_genes, device);
        Vae {
            encoder,
            mu: DenseConfig::new(last, self.n_latent).init(device),
            logvar: DenseConfig::new(last, self.n_latent).init(device),
            decoder,
            out: DenseConfig::new(dec_last, self.n_genes).init(device),
            log_theta,
            dropout_head: (self.likelihood == Likelihood::Zinb)
                .then(|| DenseConfig::new(dec_last, self.n_genes).init(device)),
            mean_scale,
        }
    }
}

impl Vae {
    /// Posterior parameters (μ, log σ²) of q(z | x).
    ///
    /// # Shapes
    /// - `x`: `[batch, n_genes]` (log1p-normalised expression)
    /// - output: `([batch, n_latent], [batch, n_latent])`
    pub fn encode(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let mut h = x;
        for b in &self.encoder {
            h = b.forward(h);
        }
        // log σ² is clamped to [−10, 10] for numerical safety (σ ∈ [0.0067, 148]).
        (
            self.mu.forward(h.clone(), Activation::None),
            self.logvar.forward(h, Activation::None).clamp(-10.0, 10.0),
        )
    }

    /// Decoder mean in the model's space: x̂ = g(z) for the Gaussian likelihood; for NB/ZINB
    /// `log1p(c·ρ(z))` with `c` the mean scale ([`Vae::with_mean_scale`]), the log1p-normalised
    /// profile of a cell with the typical library size.
    ///
    /// # Shapes
    /// - `z`: `[batch, n_latent]`
    /// - output: `[batch, n_genes]` (same units as the training input: log1p-normalised)
    pub fn decode(&self, z: Tensor<2>) -> Tensor<2> {
        let logits = self.decode_logits(z).0;
        match &self.mean_scale {
            None => logits,
            Some(c) => count_head::mean_log1p(logits, c),
        }
    }

    /// The decoder's raw output and, for ZINB, its dropout logits: for the Gaussian
    /// likelihood the mean x̂ itself, for NB/ZINB the logits whose softmax over genes is ρ.
    ///
    /// # Shapes
    /// - `z`: `[batch, n_latent]`
    /// - output: `([batch, n_genes], Option<[batch, n_genes]>)`
    pub fn decode_logits(&self, z: Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>) {
        let mut h = z;
        for b in &self.decoder {
            h = b.forward(h);
        }
        let dropout = self
            .dropout_head
            .as_ref()
            .map(|d| d.forward(h.clone(), Activation::None));
        (self.out.forward(h, Activation::None), dropout)
    }

    /// The decoder's likelihood, read off its heads.
    pub fn likelihood(&self) -> Likelihood {
        count_head::likelihood_of(&self.log_theta, &self.dropout_head)
    }

    /// ln θ_g `[n_genes]` of a count likelihood, clamped to [−12, 12] (θ between 6e-6 and
    /// 1.6e5); `None` for the Gaussian likelihood.
    pub fn log_theta(&self) -> Option<Tensor<1>> {
        count_head::log_theta(&self.log_theta)
    }

    /// Replaces ln θ_g (`[n_genes]`, e.g. re-fitted by [`crate::counts::fit_log_theta`]);
    /// no effect on a Gaussian decoder.
    pub fn with_log_theta(mut self, log_theta: &[f64]) -> Self {
        self.log_theta = count_head::with_log_theta(self.log_theta, log_theta);
        self
    }

    /// Sets the scale `c` of the decoder mean `log1p(c·ρ)` of a count likelihood (see the
    /// field's docs); no effect on a Gaussian decoder.
    pub fn with_mean_scale(mut self, c: f64) -> Self {
        self.mean_scale = count_head::replace(self.mean_scale, vec![c as f32]);
        self
    }

    /// The scale `c` set by [`Vae::with_mean_scale`] (`None` for a Gaussian decoder).
    pub fn mean_scale(&self) -> Option<f64> {
        self.mean_scale
            .as_ref()
            .map(|p| p.val().into_scalar::<f32>() as f64)
    }

    /// Encode, reparameterise with `eps ~ N(0, I)` (z = μ + exp(½ log σ²) ⊙ ε), decode.
    ///
    /// # Shapes
    /// - `x`: `[batch, n_genes]`, `eps`: `[batch, n_latent]`
    pub fn forward(&self, x: Tensor<2>, eps: Tensor<2>) -> VaeOutput {
        let (mu, logvar) = self.encode(x);
        let z = mu
            .clone()
            .add(logvar.clone().mul_scalar(0.5).exp().mul(eps));
        let (recon, dropout) = self.decode_logits(z);
        VaeOutput {
            recon,
            mu,
            logvar,
            dropout,
        }
    }
}

/// Per-batch loss terms `(reconstruction, kl)`, each averaged over cells; reconstruction is
/// the squared error summed over genes, KL is summed over latent dimensions.
///
/// # Shapes
/// `x`: `[batch, n_genes]`; returns two scalars `[1]`.
pub fn vae_loss_terms(x: Tensor<2>, out: &VaeOutput) -> (Tensor<1>, Tensor<1>) {
    let n = x.dims()[0] as f64;
    let recon = out.recon.clone().sub(x).square().sum().div_scalar(n);
    (recon, kl_term(out, n))
}

/// Per-batch loss terms `(reconstruction, kl)` of a count likelihood: the negative NB/ZINB
/// log-likelihood of `counts` summed over genes and averaged over cells, and the KL as in
/// [`vae_loss_terms`].
///
/// # Shapes
/// - `counts`: `[batch, n_genes]` raw counts on the model genes
/// - `log_library`: `[batch, 1]` ln of each cell's library size `l` (total count over the model
///   genes)
/// - returns two scalars `[1]`
///
/// # Panics
/// If `vae` has a Gaussian decoder (no θ).
pub fn vae_count_loss_terms(
    vae: &Vae,
    counts: Tensor<2>,
    log_library: Tensor<2>,
    out: &VaeOutput,
) -> (Tensor<1>, Tensor<1>) {
    let n = counts.dims()[0] as f64;
    let log_theta = vae
        .log_theta()
        .expect("vae_count_loss_terms on a Gaussian decoder");
    let ll = count_head::count_log_likelihood(
        log_theta,
        counts,
        log_library,
        out.recon.clone(),
        out.dropout.clone(),
    );
    (ll.sum().neg().div_scalar(n), kl_term(out, n))
}

impl CountDecoder for Vae {
    fn count_logits(&self, z: Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>) {
        self.decode_logits(z)
    }

    fn count_log_theta(&self) -> Option<Tensor<1>> {
        self.log_theta()
    }
}

/// KL(q(z|x) ‖ N(0, I)) summed over latent dimensions, averaged over `n` cells.
fn kl_term(out: &VaeOutput, n: f64) -> Tensor<1> {
    out.logvar
        .clone()
        .add_scalar(1.0)
        .sub(out.mu.clone().square())
        .sub(out.logvar.clone().exp())
        .sum()
        .mul_scalar(-0.5 / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_norm_none_drops_batchnorm_and_the_activation_is_applied() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let cfg = VaeConfig::new(12).with_hidden(vec![8]).with_n_latent(3);
        let plain = cfg
            .clone()
            .with_norm(HiddenNorm::None)
            .with_activation(Activation::Silu);
        // BatchNorm has γ, β and the running mean and variance (8 each; Burn counts all four)
        // in the one hidden block of each side.
        assert_eq!(
            cfg.init(&device).num_params() - plain.init(&device).num_params(),
            2 * 4 * 8
        );
        // ReLU blocks never give negative values; SiLU ones do (its minimum is ≈ −0.278).
        let x = Tensor::<2>::random(
            [64, 12],
            burn::tensor::Distribution::Normal(0.0, 2.0),
            &device,
        );
        let min = |c: &VaeConfig| {
            let b = HiddenBlock::new(12, 32, 0.0, c, &device);
            b.forward(x.clone()).min().into_scalar::<f32>()
        };
        assert!(min(&cfg.clone().with_norm(HiddenNorm::None)) >= 0.0);
        let m = min(&plain);
        assert!((-0.2785..0.0).contains(&m), "SiLU minimum {m}");
    }

    #[test]
    fn shapes_and_kl_of_standard_normal_is_zero() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let vae = VaeConfig::new(20)
            .with_hidden(vec![16, 8])
            .with_n_latent(4)
            .init(&device);
        let x = Tensor::<2>::random([5, 20], burn::tensor::Distribution::Default, &device);
        let eps = Tensor::<2>::zeros([5, 4], &device);
        let out = vae.forward(x.clone(), eps);
        assert_eq!(out.recon.dims(), [5, 20]);
        assert_eq!(out.mu.dims(), [5, 4]);
        let fake = VaeOutput {
            recon: x.clone(),
            mu: Tensor::zeros([5, 4], &device),
            logvar: Tensor::zeros([5, 4], &device),
            dropout: None,
        };
        let (r, kl) = vae_loss_terms(x, &fake);
        assert!(r.into_scalar::<f32>().abs() < 1e-6);
        assert!(kl.into_scalar::<f32>().abs() < 1e-6);
    }
}
