//! The cell-type classifier of DiffVAE's latent-perturbation experiments (Bica,
//! Andrés-Terré, Cvejic & Liò, *Sci. Rep.* 10, 9790, 2020, "Cell state transitions"): a fully
//! connected network 256-512-256 with ReLU and a softmax output over the cell types, trained
//! with cross-entropy on expression. It judges whether a decoded, latent-shifted cell has
//! become the target type ([`crate::diffvae::shift`]).

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::layers::{Activation, Dense, DenseConfig};

/// Configuration of a [`CellTypeClassifier`].
#[derive(Config, Debug)]
pub struct CellTypeClassifierConfig {
    /// Input width: the genes of the expression the classifier sees (`n_genes`).
    pub n_input: usize,
    /// Number of cell types (softmax outputs).
    pub n_classes: usize,
    /// Hidden widths, input side first (the paper: 256, 512, 256).
    pub hidden: Vec<usize>,
}

/// MLP cell-type classifier. Create with [`CellTypeClassifierConfig::init`].
#[derive(Module, Debug)]
pub struct CellTypeClassifier {
    hidden: Vec<Dense>,
    out: Dense,
}

impl CellTypeClassifierConfig {
    /// The paper's network: hidden layers 256, 512, 256.
    pub fn paper(n_input: usize, n_classes: usize) -> Self {
        Self::new(n_input, n_classes, vec![256, 512, 256])
    }

    /// Builds the network on `device` (Burn's default ±1/√fan_in uniform initialisation, as
    /// Keras' and PyTorch's dense layers; the weights follow the device's seed).
    pub fn init(&self, device: &Device) -> CellTypeClassifier {
        let mut width = self.n_input;
        let hidden = self
            .hidden
            .iter()
            .map(|&h| {
                let d = DenseConfig::new(width, h).init(device);
                width = h;
                d
            })
            .collect();
        CellTypeClassifier {
            hidden,
            out: DenseConfig::new(width, self.n_classes).init(device),
        }
    }
}

impl CellTypeClassifier {
    /// Class logits (softmax inputs).
    ///
    /// # Shapes
    /// `x`: `[batch, n_input]` (expression in the classifier's space) → `[batch, n_classes]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = self
            .hidden
            .iter()
            .fold(x, |h, l| l.forward(h, Activation::Relu));
        self.out.forward(h, Activation::None)
    }

    /// Log class probabilities, log softmax of [`Self::forward`].
    ///
    /// # Shapes
    /// `[batch, n_input]` → `[batch, n_classes]`
    pub fn log_probs(&self, x: Tensor<2>) -> Tensor<2> {
        log_softmax(self.forward(x), 1)
    }

    /// Mean cross-entropy against one-hot labels.
    ///
    /// # Shapes
    /// - `x`: `[batch, n_input]`; `one_hot`: `[batch, n_classes]`
    /// - output: `[1]`
    pub fn loss(&self, x: Tensor<2>, one_hot: Tensor<2>) -> Tensor<1> {
        let [b, _] = x.dims();
        self.log_probs(x)
            .mul(one_hot)
            .sum()
            .neg()
            .div_scalar(b as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_probabilities() {
        let _rng = crate::test_rng_lock();
        let dev = Device::default();
        let net = CellTypeClassifierConfig::paper(7, 3).init(&dev);
        let x = Tensor::<2>::ones([4, 7], &dev);
        let lp = net.log_probs(x);
        assert_eq!(lp.dims(), [4, 3]);
        let rows: Vec<f32> = lp.exp().sum_dim(1).into_data().try_to_vec::<f32>().unwrap();
        for r in rows {
            assert!(
                (r - 1.0).abs() < 1e-5,
                "softmax rows must sum to 1, got {r}"
            );
        }
    }
}
