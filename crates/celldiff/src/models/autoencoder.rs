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

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::prelude::*;

use super::layers::{Activation, Dense, DenseConfig};

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
}

/// The deterministic autoencoder. Create with [`AutoencoderConfig::init`].
#[derive(Module, Debug)]
pub struct Autoencoder {
    enc1: Dense,
    enc2: Dense,
    dec1: Dense,
    dec2: Dense,
    dropout: Dropout,
}

impl AutoencoderConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Autoencoder {
        Autoencoder {
            enc1: DenseConfig::new(self.n_genes, self.hidden).init(device),
            enc2: DenseConfig::new(self.hidden, self.n_latent).init(device),
            dec1: DenseConfig::new(self.n_latent, self.hidden).init(device),
            dec2: DenseConfig::new(self.hidden, self.n_genes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
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

    /// The reconstruction x̂ = D(z) (SCLD Eq. 4), in the input's units.
    ///
    /// # Shapes
    /// `[batch, n_latent]` → `[batch, n_genes]`
    pub fn decode(&self, z: Tensor<2>) -> Tensor<2> {
        let h = self.dropout.forward(self.dec1.forward(z, Activation::Silu));
        self.dec2.forward(h, Activation::None)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_round_trip() {
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
