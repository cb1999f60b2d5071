//! The SCLD post-guidance `Scorer` (Wang, Li, Di & Chen, arXiv 2312.14220, Sec. 3.2.3): three
//! linear layers → 2 logits (real, generated), trained with cross-entropy to tell real cells
//! from cells the trained diffusion model generated. At generation time the cells with the
//! highest "real" probability are kept.
//!
//! The input is either the generated cells in the model's expression space `[batch, n_genes]`
//! (default; the space the evaluator's random forest sees) or standardised latents
//! `[batch, n_latent]`; see [`crate::scld::ScorerSpace`] for the measured difference.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::layers::{Activation, Dense, DenseConfig};

/// Configuration of a [`Scorer`].
#[derive(Config, Debug)]
pub struct ScorerConfig {
    /// Input width (`n_genes` in gene space, `n_latent` in latent space).
    pub n_input: usize,
    /// Hidden width of the two hidden layers.
    #[config(default = 256)]
    pub hidden: usize,
}

/// Real-vs-generated classifier. Create with [`ScorerConfig::init`].
#[derive(Module, Debug)]
pub struct Scorer {
    l1: Dense,
    l2: Dense,
    l3: Dense,
}

impl ScorerConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Scorer {
        Scorer {
            l1: DenseConfig::new(self.n_input, self.hidden).init(device),
            l2: DenseConfig::new(self.hidden, self.hidden).init(device),
            l3: DenseConfig::new(self.hidden, 2).init(device),
        }
    }
}

impl Scorer {
    /// Logits `[real, generated]`.
    ///
    /// # Shapes
    /// `z`: `[batch, n_input]` (cells or standardised latents) → `[batch, 2]`
    pub fn forward(&self, z: Tensor<2>) -> Tensor<2> {
        let h = self.l1.forward(z, Activation::Silu);
        let h = self.l2.forward(h, Activation::Silu);
        self.l3.forward(h, Activation::None)
    }

    /// log P(real | z), the score post-guidance ranks cells by.
    ///
    /// # Shapes
    /// `[batch, n_input]` → `[batch]`
    pub fn log_prob_real(&self, z: Tensor<2>) -> Tensor<1> {
        let [b, _] = z.dims();
        log_softmax(self.forward(z), 1).narrow(1, 0, 1).reshape([b])
    }

    /// Mean cross-entropy of the logits against `is_generated` (0 = real, 1 = generated).
    ///
    /// # Shapes
    /// - `z`: `[batch, n_input]`; `is_generated`: `[batch, 2]` one-hot rows
    /// - output: `[1]`
    pub fn loss(&self, z: Tensor<2>, one_hot: Tensor<2>) -> Tensor<1> {
        let [b, _] = z.dims();
        log_softmax(self.forward(z), 1)
            .mul(one_hot)
            .sum()
            .neg()
            .div_scalar(b as f64)
    }
}
