//! The DiffVAE network (Bica, Andrés-Terré, Cvejic & Liò, "Unsupervised generative and graph
//! representation learning for modelling cell differentiation", *Sci. Rep.* 10, 9790, 2020,
//! Methods "DiffVAE") and its loss terms: a Bernoulli decoder on per-gene min-max scaled
//! log1p expression, regularised by the maximum mean discrepancy between the aggregate
//! posterior q(z) and N(0, I) (MMD-VAE / InfoVAE, Zhao, Song & Ermon, AAAI 2019).
//!
//! # Architecture
//! Encoder `n_genes → h2 → h1` (defaults h2 = 512, h1 = 256, the published
//! `--hidden_dimensions 512 256`), each layer Linear → BatchNorm → ReLU; two linear heads
//! μ and log σ² of width `n_latent` (m = 50). Decoder `m → h1 → h2 → n_genes`, Linear → ReLU
//! for the hidden layers and a sigmoid output (the Bernoulli mean p). As in the published
//! decoder (`autoencoder_models/VAE_models.py`, where its `BatchNormalization` lines are
//! commented out) the decoder has no BatchNorm, so the gene weights
//! ω = W(0)·W(1)·W(2) ([`DiffVae::gene_weights`]) multiply exactly the decoder's linear maps
//! (biases and ReLUs ignored). The published encoder applies BatchNorm after the ReLU; here
//! it comes before it, as in every other celldiff model.
//!
//! **Heads.** The paper applies ReLU to both heads (and BatchNorm after them). A ReLU
//! log-variance cannot go below 0, i.e. σ ≥ 1 for every cell (the posterior can never be
//! narrower than the prior), and a ReLU μ confines the latent code to the positive orthant.
//! [`DiffVaeConfig::relu_heads`] reproduces it; the default is linear heads. log σ² is
//! clamped to [−10, 10] in both cases, as in [`super::vae`].
//!
//! **Reparameterisation.** z = μ + σ ⊙ ε with ε of shape `[batch, m]` drawn per cell. The
//! published code draws `K.random_normal(shape=tf.shape(self.latent_dim))`, i.e. ε of shape
//! `tf.shape(50)` = `[1]`: one scalar shared by every latent dimension of every cell in the
//! minibatch, so the "sample" moves all codes along the same diagonal direction.
//!
//! # Loss (per cell, averaged over the minibatch)
//! - reconstruction: Bernoulli negative log-likelihood (binary cross-entropy) summed over
//!   genes, in the logits-stable form `softplus(l) − x·l` ([`bernoulli_nll`]); the targets x
//!   are the min-max scaled values in [0, 1] (a cross-entropy against fractional targets, as
//!   Keras' `binary_crossentropy` computes it in the published code);
//! - DiffVAE: `+ λ · MMD²(z, z')` between the minibatch's sampled codes z and as many draws
//!   z' ~ N(0, I) ([`mmd`]); the published code uses λ = 1;
//! - Gaussian VAE baseline: `+ β · KL(q(z|x) ‖ N(0, I))` ([`kl_standard_normal`]) instead;
//! - plain autoencoder baseline: z = μ (deterministic) and the squared error between the
//!   sigmoid output and x, summed over genes ([`squared_error`]), no regulariser.

use burn::module::{Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig, Linear};
use burn::prelude::*;
use burn::tensor::{TensorData, activation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::layers::{Activation, Dense, DenseConfig};

/// Configuration of a [`DiffVae`] (defaults: the published DiffVAE).
#[derive(Config, Debug)]
pub struct DiffVaeConfig {
    /// Number of input genes (the highly variable genes, e.g. 2000).
    pub n_genes: usize,
    /// Width h1 of the inner hidden layer (next to the latent); paper: 256.
    #[config(default = 256)]
    pub h1: usize,
    /// Width h2 of the outer hidden layer (next to the genes); paper: 512 = 2·h1.
    #[config(default = 512)]
    pub h2: usize,
    /// Latent dimension m; paper: 50.
    #[config(default = 50)]
    pub n_latent: usize,
    /// Apply ReLU to the μ and log σ² heads as the paper does (σ ≥ 1 and μ ≥ 0 then; see
    /// the module docs). Default false: linear heads.
    #[config(default = false)]
    pub relu_heads: bool,
}

/// The DiffVAE encoder/decoder (also the network of the Gaussian-VAE and autoencoder
/// baselines). Create with [`DiffVaeConfig::init`].
#[derive(Module, Debug)]
pub struct DiffVae {
    enc1: Dense,
    bn1: BatchNorm,
    enc2: Dense,
    bn2: BatchNorm,
    mu: Dense,
    logvar: Dense,
    dec1: Dense,
    dec2: Dense,
    out: Dense,
    #[module(skip)]
    relu_heads: bool,
}

impl DiffVaeConfig {
    /// Builds the network on `device` (weights from the device's seeded generator).
    pub fn init(&self, device: &Device) -> DiffVae {
        DiffVae {
            enc1: DenseConfig::new(self.n_genes, self.h2).init(device),
            bn1: BatchNormConfig::new(self.h2).init(device),
            enc2: DenseConfig::new(self.h2, self.h1).init(device),
            bn2: BatchNormConfig::new(self.h1).init(device),
            mu: DenseConfig::new(self.h1, self.n_latent).init(device),
            logvar: DenseConfig::new(self.h1, self.n_latent).init(device),
            dec1: DenseConfig::new(self.n_latent, self.h1).init(device),
            dec2: DenseConfig::new(self.h1, self.h2).init(device),
            out: DenseConfig::new(self.h2, self.n_genes).init(device),
            relu_heads: self.relu_heads,
        }
    }

    /// Builds the network on `device` with every dense layer drawn from `StdRng(seed)` on the
    /// host: weights and biases U(−1/√d_in, 1/√d_in), the distribution of Burn's (and
    /// PyTorch's) default `Linear` initialisation. Unlike [`DiffVaeConfig::init`] it does not
    /// use the device's global generator, so concurrent fits in one process (e.g. parallel
    /// tests) cannot change each other's initial weights.
    pub fn init_seeded(&self, device: &Device, seed: u64) -> DiffVae {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut dense = |d_in: usize, d_out: usize| seeded_dense(d_in, d_out, &mut rng, device);
        let (enc1, enc2) = (dense(self.n_genes, self.h2), dense(self.h2, self.h1));
        let (mu, logvar) = (dense(self.h1, self.n_latent), dense(self.h1, self.n_latent));
        let (dec1, dec2) = (dense(self.n_latent, self.h1), dense(self.h1, self.h2));
        let out = dense(self.h2, self.n_genes);
        DiffVae {
            enc1,
            bn1: BatchNormConfig::new(self.h2).init(device),
            enc2,
            bn2: BatchNormConfig::new(self.h1).init(device),
            mu,
            logvar,
            dec1,
            dec2,
            out,
            relu_heads: self.relu_heads,
        }
    }
}

/// A dense layer `[d_in, d_out]` with weights and bias U(−1/√d_in, 1/√d_in) from `rng`.
fn seeded_dense(d_in: usize, d_out: usize, rng: &mut StdRng, device: &Device) -> Dense {
    let k = 1.0 / (d_in.max(1) as f32).sqrt();
    let w: Vec<f32> = (0..d_in * d_out).map(|_| rng.random_range(-k..k)).collect();
    let b: Vec<f32> = (0..d_out).map(|_| rng.random_range(-k..k)).collect();
    Dense {
        linear: Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [d_in, d_out]),
                device,
            )),
            bias: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b, [d_out]),
                device,
            ))),
        },
    }
}

impl DiffVae {
    /// Posterior parameters (μ, log σ²) of q(z | x); log σ² is clamped to [−10, 10].
    ///
    /// # Shapes
    /// - `x`: `[batch, n_genes]` (min-max scaled log1p expression, values in [0, 1])
    /// - output: `([batch, n_latent], [batch, n_latent])`
    pub fn encode(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let h = Activation::Relu.apply(self.bn1.forward(self.enc1.forward(x, Activation::None)));
        let h = Activation::Relu.apply(self.bn2.forward(self.enc2.forward(h, Activation::None)));
        let head = if self.relu_heads {
            Activation::Relu
        } else {
            Activation::None
        };
        (
            self.mu.forward(h.clone(), head),
            self.logvar.forward(h, head).clamp(-10.0, 10.0),
        )
    }

    /// Decoder logits l (the Bernoulli mean is sigmoid(l)).
    ///
    /// # Shapes
    /// `z`: `[batch, n_latent]` → `[batch, n_genes]`
    pub fn decode_logits(&self, z: Tensor<2>) -> Tensor<2> {
        let h = self.dec1.forward(z, Activation::Relu);
        let h = self.dec2.forward(h, Activation::Relu);
        self.out.forward(h, Activation::None)
    }

    /// Decoder mean p = sigmoid(l) ∈ (0, 1), in min-max scaled log1p units.
    ///
    /// # Shapes
    /// `z`: `[batch, n_latent]` → `[batch, n_genes]`
    pub fn decode(&self, z: Tensor<2>) -> Tensor<2> {
        activation::sigmoid(self.decode_logits(z))
    }

    /// The decoder's weight matrices W(0) `[n_latent, h1]`, W(1) `[h1, h2]`, W(2)
    /// `[h2, n_genes]` (Burn stores `Linear` weights as `[d_in, d_out]`).
    pub fn decoder_weights(&self) -> [Tensor<2>; 3] {
        [
            self.dec1.linear.weight.val(),
            self.dec2.linear.weight.val(),
            self.out.linear.weight.val(),
        ]
    }

    /// DiffVAE's latent-to-gene weights ω = W(0)·W(1)·W(2) (paper, "High-weight genes";
    /// published `get_weights_latent_genes`): the product of the decoder's weight matrices,
    /// ignoring biases and the ReLU nonlinearities (the decoder has no BatchNorm).
    ///
    /// # Shapes
    /// output: `[n_latent, n_genes]`
    pub fn gene_weights(&self) -> Tensor<2> {
        let [w0, w1, w2] = self.decoder_weights();
        w0.matmul(w1).matmul(w2)
    }
}

/// Bernoulli negative log-likelihood (binary cross-entropy with logits) summed over genes and
/// averaged over cells: `Σ_g softplus(l_g) − x_g l_g`, computed as
/// `max(l, 0) − x·l + log1p(exp(−|l|))` (no overflow for any l; equals
/// `−[x log p + (1 − x) log(1 − p)]` with p = sigmoid(l)).
///
/// # Shapes
/// `logits`, `x`: `[batch, n_genes]` (x in [0, 1]); returns a scalar `[1]` (nats per cell).
pub fn bernoulli_nll(logits: Tensor<2>, x: Tensor<2>) -> Tensor<1> {
    let n = logits.dims()[0].max(1) as f64;
    let softplus = activation::relu(logits.clone()).add(logits.clone().abs().neg().exp().log1p());
    softplus.sub(x.mul(logits)).sum().div_scalar(n)
}

/// Squared error `Σ_g (x̂_g − x_g)²` summed over genes, averaged over cells (the
/// autoencoder baseline's loss).
///
/// # Shapes
/// `recon`, `x`: `[batch, n_genes]`; returns a scalar `[1]`.
pub fn squared_error(recon: Tensor<2>, x: Tensor<2>) -> Tensor<1> {
    let n = recon.dims()[0].max(1) as f64;
    recon.sub(x).square().sum().div_scalar(n)
}

/// KL(N(μ, σ²) ‖ N(0, I)) = −½ Σ_k (1 + log σ²_k − μ²_k − σ²_k) summed over latent
/// dimensions, averaged over cells (Kingma & Welling 2014, Appendix B).
///
/// # Shapes
/// `mu`, `logvar`: `[batch, n_latent]`; returns a scalar `[1]`.
pub fn kl_standard_normal(mu: Tensor<2>, logvar: Tensor<2>) -> Tensor<1> {
    let n = mu.dims()[0].max(1) as f64;
    logvar
        .clone()
        .add_scalar(1.0)
        .sub(mu.square())
        .sub(logvar.exp())
        .sum()
        .mul_scalar(-0.5 / n)
}

/// Sum of the Gaussian kernel `k(a, b) = exp(−‖a − b‖² / m)` over all pairs of rows of `a`
/// and `b` (`m` = the number of columns), with ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b floored at 0.
fn kernel_sum(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let m = a.dims()[1].max(1) as f64;
    let a2 = a.clone().square().sum_dim(1); // [n, 1]
    let b2 = b.clone().square().sum_dim(1).transpose(); // [1, n']
    let d2 = a2
        .add(b2)
        .sub(a.matmul(b.transpose()).mul_scalar(2.0))
        .clamp_min(0.0);
    d2.div_scalar(m).neg().exp().sum()
}

/// Squared maximum mean discrepancy between the samples `x` and `y` (Gretton et al. 2012,
/// Lemma 6, the unbiased U-statistic), with the Gaussian kernel `k(a, b) = exp(−‖a − b‖² / m)`,
/// m = the latent dimension:
///
/// `MMD²_u = Σ_{i≠j} k(x_i, x_j) / (n(n−1)) + Σ_{i≠j} k(y_i, y_j) / (n'(n'−1))
///           − 2 Σ_{i,j} k(x_i, y_j) / (n n')`.
///
/// Bandwidth: 2σ² = m, the scale of the squared distance between two N(0, I) draws
/// (E‖a − b‖² = 2m), so the kernel is informative where q(z) should match the prior. The
/// MMD-VAE tutorial code that DiffVAE's implementation copied computes
/// `exp(−mean_k (a_k − b_k)² / m) = exp(−‖a − b‖² / m²)`, which at m = 50 is ≈ e^{−2/m} ≈
/// 0.96 for nearly every pair: an almost flat kernel and a very weak regulariser. The
/// U-statistic is ≈ 0 (either sign) for two samples of the same distribution; the biased
/// V-statistic of the tutorial adds ≈ 2(1 − E k)/n.
///
/// # Shapes
/// `x`: `[n, m]`, `y`: `[n', m]` with n, n' ≥ 2; returns a scalar `[1]`. For n or n' < 2 the
/// within-sample terms are undefined and the result is 0.
pub fn mmd(x: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    let (n, n2) = (x.dims()[0], y.dims()[0]);
    let device = x.device();
    if n < 2 || n2 < 2 {
        return Tensor::<1>::zeros([1], &device);
    }
    let (nf, n2f) = (n as f64, n2 as f64);
    // k(a, a) = 1 on the diagonal: subtract it to keep only i ≠ j.
    let kxx = kernel_sum(x.clone(), x.clone())
        .sub_scalar(nf)
        .div_scalar(nf * (nf - 1.0));
    let kyy = kernel_sum(y.clone(), y.clone())
        .sub_scalar(n2f)
        .div_scalar(n2f * (n2f - 1.0));
    let kxy = kernel_sum(x, y).mul_scalar(2.0 / (nf * n2f));
    kxx.add(kyy).sub(kxy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn shapes_and_gene_weights() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let net = DiffVaeConfig::new(20)
            .with_h1(8)
            .with_h2(16)
            .with_n_latent(4)
            .init(&device);
        let x = Tensor::<2>::random([5, 20], Distribution::Default, &device);
        let (mu, logvar) = net.encode(x);
        assert_eq!(mu.dims(), [5, 4]);
        assert_eq!(logvar.dims(), [5, 4]);
        let p = net.decode(mu);
        assert_eq!(p.dims(), [5, 20]);
        let v: Vec<f32> = p.into_data().try_to_vec::<f32>().unwrap();
        assert!(v.iter().all(|&p| p > 0.0 && p < 1.0));
        assert_eq!(net.gene_weights().dims(), [4, 20]);
    }

    #[test]
    fn relu_heads_give_nonnegative_mu_and_logvar() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let net = DiffVaeConfig::new(10)
            .with_h1(8)
            .with_h2(8)
            .with_n_latent(6)
            .with_relu_heads(true)
            .init(&device);
        let x = Tensor::<2>::random([7, 10], Distribution::Default, &device);
        let (mu, logvar) = net.encode(x);
        let mu: Vec<f32> = mu.into_data().try_to_vec::<f32>().unwrap();
        let lv: Vec<f32> = logvar.into_data().try_to_vec::<f32>().unwrap();
        assert!(mu.iter().chain(&lv).all(|&v| v >= 0.0));
    }

    #[test]
    fn bernoulli_nll_matches_the_direct_formula_and_survives_large_logits() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let l = [-3.0f32, 0.0, 2.5, 40.0, -40.0, 0.7];
        let x = [0.0f32, 0.5, 1.0, 1.0, 0.0, 0.2];
        let lt = Tensor::<2>::from_data(TensorData::new(l.to_vec(), [2, 3]), &device);
        let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [2, 3]), &device);
        let got: f32 = bernoulli_nll(lt, xt).into_scalar();
        let want: f64 = l
            .iter()
            .zip(&x)
            .map(|(&l, &x)| {
                let (l, x) = (l as f64, x as f64);
                // −[x log p + (1 − x) log(1 − p)] with log p = −ln(1 + e^{−l}) and
                // log(1 − p) = −ln(1 + e^{l}).
                let log_p = -(-l).exp().ln_1p();
                let log_1mp = -l.exp().ln_1p();
                -(x * log_p + (1.0 - x) * log_1mp)
            })
            .sum::<f64>()
            / 2.0;
        assert!(got.is_finite());
        assert!(((got as f64) - want).abs() < 1e-4, "{got} vs {want}");
    }

    #[test]
    fn kl_of_standard_normal_posterior_is_zero() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let z = Tensor::<2>::zeros([3, 4], &device);
        let kl: f32 = kl_standard_normal(z.clone(), z).into_scalar();
        assert!(kl.abs() < 1e-7);
    }
}
