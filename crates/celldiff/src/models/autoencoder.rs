//! The SCLD autoencoder (Wang, Li, Di & Chen, "Single-Cell RNA-seq Synthesis with Latent
//! Diffusion Model", arXiv 2312.14220, Sec. 3.1, Eq. 3–6): a deterministic "Round" (encoder
//! E: x → z, Eq. 3) and "Map" (decoder D: z → x̂, Eq. 4), trained with the mean squared
//! reconstruction error ‖x − D(E(x))‖² (Eq. 5–6). It is the alternative latent model to the
//! scVAEDer VAE (`celldiff train --model scld --latent-model ae`).
//!
//! Architecture (symmetric, two layers each side, an activation after each layer as in the
//! paper): encoder `n_genes → hidden → n_latent`, decoder `n_latent → hidden → n_genes`; SiLU
//! after every layer except the last decoder layer, which is linear (ReLU would also do for
//! log1p data, but a linear output lets the same model reconstruct scaled data). Dropout after
//! the hidden layers. The latent is standardised per dimension before the diffusion model sees
//! it (`LatentStats`), as for the VAE.
//!
//! With a count likelihood (`--likelihood nb|zinb`, issue 18) the last decoder layer gives
//! the logits of gene proportions ρ = softmax(D(z)) and the loss of SCLD Eq. 5–6 becomes
//! `−log NB(x | l·ρ, θ)` (or ZINB) on the cell's counts, one θ_g per gene, as the scVAEDer
//! VAE's count decoder ([`super::count_head`]; scVI, Lopez et al. 2018). Nothing else of the
//! autoencoder changes: it stays deterministic (no KL).

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;

use super::count_head::{self, CountDecoder};
use super::layers::{Activation, Dense, DenseConfig};
use super::likelihood::Likelihood;

/// Configuration of an [`Autoencoder`].
#[derive(Config, Debug)]
pub struct AutoencoderConfig {
    /// Number of input genes (e.g. 2000 highly variable genes).
    pub n_genes: usize,
    /// Hidden width of the encoder and the decoder.
    #[config(default = 512)]
    pub hidden: usize,
    /// Latent dimension (`n_latent`).
    #[config(default = 50)]
    pub n_latent: usize,
    /// Dropout after the hidden layers.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Decoder likelihood (`gaussian` for runs written before it existed).
    #[config(default = "Likelihood::Gaussian")]
    pub likelihood: Likelihood,
}

/// The deterministic autoencoder. Create with [`AutoencoderConfig::init`].
#[derive(Module, Debug)]
pub struct Autoencoder {
    enc1: Dense,
    enc2: Dense,
    dec1: Dense,
    dec2: Dense,
    dropout: Dropout,
    /// ln θ_g / [`count_head::THETA_SCALE`], `[n_genes]` (count likelihoods only).
    log_theta: Option<Param<Tensor<1>>>,
    /// Dropout-logit head (ZINB only).
    dropout_head: Option<Dense>,
    /// `[1]`: the scale `c` of the count decoder's mean `log1p(c·ρ)` (see the VAE's field of
    /// the same name). Not trained.
    mean_scale: Option<Param<Tensor<1>>>,
}

impl AutoencoderConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Autoencoder {
        let (log_theta, mean_scale) = count_head::init_head(self.likelihood, self.n_genes, device);
        Autoencoder {
            enc1: DenseConfig::new(self.n_genes, self.hidden).init(device),
            enc2: DenseConfig::new(self.hidden, self.n_latent).init(device),
            dec1: DenseConfig::new(self.n_latent, self.hidden).init(device),
            dec2: DenseConfig::new(self.hidden, self.n_genes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            log_theta,
            dropout_head: (self.likelihood == Likelihood::Zinb)
                .then(|| DenseConfig::new(self.hidden, self.n_genes).init(device)),
            mean_scale,
        }
    }
}

impl Autoencoder {
    /// The latent code z = E(x) (SCLD Eq. 3).
    ///
    /// # Shapes
    /// - `x`: `[batch, n_genes]` (the preprocessed expression, e.g. log1p-normalised HVGs)
    /// - output: `[batch, n_latent]`
    pub fn encode(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self.dropout.forward(self.enc1.forward(x, Activation::Silu));
        self.enc2.forward(h, Activation::Silu)
    }

    /// The reconstruction x̂ = D(z) (SCLD Eq. 4), in the input's units; for a count
    /// likelihood the mean `log1p(c·ρ(z))` ([`Autoencoder::with_mean_scale`]).
    ///
    /// # Shapes
    /// `[batch, n_latent]` → `[batch, n_genes]`
    pub fn decode(&self, z: Tensor<2>) -> Tensor<2> {
        let logits = self.decode_logits(z).0;
        match &self.mean_scale {
            None => logits,
            Some(c) => count_head::mean_log1p(logits, c),
        }
    }

    /// The last decoder layer's output (Gaussian: x̂; NB/ZINB: the logits of ρ) and, for
    /// ZINB, the dropout logits.
    ///
    /// # Shapes
    /// `[batch, n_latent]` → `([batch, n_genes], Option<[batch, n_genes]>)`
    pub fn decode_logits(&self, z: Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>) {
        let h = self.dropout.forward(self.dec1.forward(z, Activation::Silu));
        let pi = self
            .dropout_head
            .as_ref()
            .map(|d| d.forward(h.clone(), Activation::None));
        (self.dec2.forward(h, Activation::None), pi)
    }

    /// The decoder's likelihood, read off its heads.
    pub fn likelihood(&self) -> Likelihood {
        count_head::likelihood_of(&self.log_theta, &self.dropout_head)
    }

    /// ln θ_g `[n_genes]` of a count likelihood (clamped to [−12, 12]); `None` for Gaussian.
    pub fn log_theta(&self) -> Option<Tensor<1>> {
        count_head::log_theta(&self.log_theta)
    }

    /// Replaces ln θ_g (`[n_genes]`); no effect on a Gaussian decoder.
    pub fn with_log_theta(mut self, log_theta: &[f64]) -> Self {
        self.log_theta = count_head::with_log_theta(self.log_theta, log_theta);
        self
    }

    /// Sets the scale `c` of the count decoder's mean `log1p(c·ρ)`; no effect on a Gaussian
    /// decoder.
    pub fn with_mean_scale(mut self, c: f64) -> Self {
        self.mean_scale = count_head::replace(self.mean_scale, vec![c as f32]);
        self
    }

    /// Mean squared reconstruction error per cell, summed over genes (SCLD Eq. 5–6 up to the
    /// constant 1/n_genes, matching the scale of the VAE's reconstruction term).
    ///
    /// # Shapes
    /// `x`: `[batch, n_genes]` → scalar `[1]`
    pub fn loss(&self, x: Tensor<2>) -> Tensor<1> {
        let [b, _] = x.dims();
        let recon = self.decode(self.encode(x.clone()));
        recon.sub(x).square().sum().div_scalar(b as f64)
    }

    /// The count likelihood's loss: `−log NB(counts | l·ρ(E(x)), θ)` (or ZINB) summed over
    /// genes, averaged over cells.
    ///
    /// # Shapes
    /// - `x`: `[batch, n_genes]` log1p-normalised (the encoder's input)
    /// - `counts`: `[batch, n_genes]` raw counts; `log_library`: `[batch, 1]`
    /// - output: scalar `[1]`
    ///
    /// # Panics
    /// On a Gaussian autoencoder (no θ).
    pub fn count_loss(&self, x: Tensor<2>, counts: Tensor<2>, log_library: Tensor<2>) -> Tensor<1> {
        let [b, _] = x.dims();
        let (logits, pi) = self.decode_logits(self.encode(x));
        let log_theta = self
            .log_theta()
            .expect("count_loss on a Gaussian autoencoder");
        count_head::count_log_likelihood(log_theta, counts, log_library, logits, pi)
            .sum()
            .neg()
            .div_scalar(b as f64)
    }
}

impl CountDecoder for Autoencoder {
    fn count_logits(&self, z: Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>) {
        self.decode_logits(z)
    }

    fn count_log_theta(&self) -> Option<Tensor<1>> {
        self.log_theta()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_round_trip() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let ae = AutoencoderConfig::new(12)
            .with_hidden(8)
            .with_n_latent(3)
            .init(&device);
        let x = Tensor::<2>::ones([5, 12], &device);
        let z = ae.encode(x.clone());
        assert_eq!(z.dims(), [5, 3]);
        assert_eq!(ae.decode(z).dims(), [5, 12]);
        let l: f32 = ae.loss(x).into_scalar();
        assert!(l.is_finite() && l > 0.0);
    }
}
