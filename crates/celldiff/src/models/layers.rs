//! The dense layer `y = act(x W + b)` that all celldiff MLPs are built from.
//!
//! Callers only see [`Dense::forward`]; the body is Burn's [`Linear`] followed by the
//! activation. A faster fused CPU kernel (Burn backend extension) can be dropped in here later
//! without changing any model.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation;
use serde::{Deserialize, Serialize};

/// Activation applied after the affine map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Activation {
    /// Identity (linear output).
    #[default]
    None,
    /// max(0, x).
    Relu,
    /// x · sigmoid(x) (Swish; Elfwing et al. 2018).
    Silu,
    /// 1 / (1 + e^{−x}).
    Sigmoid,
}

impl Activation {
    /// Applies the activation elementwise.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::None => x,
            Activation::Relu => activation::relu(x),
            Activation::Silu => activation::silu(x),
            Activation::Sigmoid => activation::sigmoid(x),
        }
    }
}

/// Configuration of a [`Dense`] layer.
#[derive(Config, Debug)]
pub struct DenseConfig {
    /// Input width.
    pub d_input: usize,
    /// Output width.
    pub d_output: usize,
}

impl DenseConfig {
    /// Initialises the layer (Burn's default uniform ±1/√d_input init, as PyTorch's
    /// `nn.Linear`) on `device`.
    pub fn init(&self, device: &Device) -> Dense {
        Dense {
            linear: LinearConfig::new(self.d_input, self.d_output).init(device),
        }
    }
}

/// An affine layer; the activation is applied by [`Dense::forward`] so that a fused kernel
/// can compute both at once.
#[derive(Module, Debug)]
pub struct Dense {
    /// Weight `[d_input, d_output]` and bias `[d_output]`.
    pub linear: Linear,
}

impl Dense {
    /// `act(x W + b)`.
    ///
    /// # Shapes
    /// - `x`: `[batch, d_input]`
    /// - output: `[batch, d_output]`
    pub fn forward(&self, x: Tensor<2>, act: Activation) -> Tensor<2> {
        act.apply(self.linear.forward(x))
    }
}
