//! The scVAEDer variational autoencoder (Sadria & Layton, Genome Biology 2025, Methods
//! "Variational autoencoder"; Kingma & Welling 2014).
//!
//! Encoder: `n_genes → hidden[0] → … → hidden[k]`, each layer Linear → BatchNorm → ReLU →
//! Dropout; Gaussian posterior heads μ and log σ² (`n_latent` each); reparameterisation
//! z = μ + σ ⊙ ε. Decoder mirrors the encoder (`n_latent → hidden[k] → … → hidden[0]`) and ends
//! in a linear layer to `n_genes` (linear output for log1p-normalised data).
//!
//! Loss (per cell, averaged over the minibatch): `‖x − x̂‖²` summed over genes (Gaussian
//! likelihood with unit variance up to a constant) `+ β · KL(q(z|x) ‖ N(0, I))`,
//! KL = −½ Σ_k (1 + log σ²_k − μ²_k − σ²_k) (Kingma & Welling 2014, Appendix B).

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig};
use burn::prelude::*;

use super::layers::{Activation, Dense, DenseConfig};

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
}

/// One hidden layer: Linear → BatchNorm → ReLU → Dropout.
#[derive(Module, Debug)]
pub struct HiddenBlock {
    dense: Dense,
    norm: BatchNorm,
    dropout: Dropout,
}

impl HiddenBlock {
    fn new(d_in: usize, d_out: usize, dropout: f64, device: &Device) -> Self {
        Self {
            dense: DenseConfig::new(d_in, d_out).init(device),
            norm: BatchNormConfig::new(d_out).init(device),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// # Shapes
    /// `[batch, d_in]` → `[batch, d_out]`
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self.norm.forward(self.dense.forward(x, Activation::None));
        #[cfg(feature = "flex")]
        if self.dropout.training.is_enabled()
            && let Some(y) = super::fused::relu_dropout(&h, self.dropout.prob)
        {
            return y;
        }
        self.dropout.forward(Activation::Relu.apply(h))
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
}

impl VaeConfig {
    /// Builds the VAE on `device`.
    pub fn init(&self, device: &Device) -> Vae {
        let mut dims = vec![self.n_genes];
        dims.extend(&self.hidden);
        let encoder = dims
            .windows(2)
            .map(|w| HiddenBlock::new(w[0], w[1], self.dropout, device))
            .collect();
        let last = *dims.last().unwrap();
        let mut rev: Vec<usize> = self.hidden.iter().rev().copied().collect();
        rev.insert(0, self.n_latent);
        let decoder = rev
            .windows(2)
            .map(|w| HiddenBlock::new(w[0], w[1], self.dropout, device))
            .collect();
        let dec_last = *rev.last().unwrap();
        Vae {
            encoder,
            mu: DenseConfig::new(last, self.n_latent).init(device),
            logvar: DenseConfig::new(last, self.n_latent).init(device),
            decoder,
            out: DenseConfig::new(dec_last, self.n_genes).init(device),
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

    /// Decoder mean x̂ = g(z).
    ///
    /// # Shapes
    /// - `z`: `[batch, n_latent]`
    /// - output: `[batch, n_genes]` (same units as the training input)
    pub fn decode(&self, z: Tensor<2>) -> Tensor<2> {
        let mut h = z;
        for b in &self.decoder {
            h = b.forward(h);
        }
        self.out.forward(h, Activation::None)
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
        VaeOutput {
            recon: self.decode(z),
            mu,
            logvar,
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
    let kl = out
        .logvar
        .clone()
        .add_scalar(1.0)
        .sub(out.mu.clone().square())
        .sub(out.logvar.clone().exp())
        .sum()
        .mul_scalar(-0.5 / n);
    (recon, kl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_kl_of_standard_normal_is_zero() {
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
        };
        let (r, kl) = vae_loss_terms(x, &fake);
        assert!(r.into_scalar::<f32>().abs() < 1e-6);
        assert!(kl.into_scalar::<f32>().abs() < 1e-6);
    }
}
