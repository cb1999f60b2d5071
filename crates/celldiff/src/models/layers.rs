//! The dense layer `y = act(x W + b)` that all celldiff MLPs are built from.
//!
//! Callers only see [`Dense::forward`] (and [`Dense::forward_residual`]); on the flex CPU
//! backend the body is the fused kernel of [`super::fused`] (GEMM + bias + activation as one
//! autodiff node), elsewhere Burn's [`Linear`] followed by the activation. `exp_f32` and the
//! `simd_kernel!` macro give the element-wise kernels a vectorised `exp` (burn-flex evaluates
//! it one element at a time through libm); [`silu_inference`] is the sampling loop's SiLU where
//! the fused kernel does not apply.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::{TensorData, activation};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// `e^x` in `f32` without branches, so that loops over it vectorise: Cody–Waite range
/// reduction `x = k ln 2 + r`, the degree-6 minimax polynomial of Cephes `expf` on
/// `|r| ≤ ln 2 / 2` (relative error < 2e-7), and `2^k` built in the exponent bits. Inputs are
/// clamped to `[-87.3, 88.7]` (the `f32` range).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    let x = x.clamp(-87.3, 88.7);
    // Round x·log2(e) to the nearest integer k by the 1.5·2^23 trick: k sits in the low
    // mantissa bits of `t`, so 2^k is built from integer bit operations only (no float → int
    // conversion, which kept the loop from vectorising).
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let kf = t - MAGIC;
    let k = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let r = x - kf * 0.693_359_4 + kf * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits((k.wrapping_add(127) << 23) as u32)
}

/// Defines a function whose body is compiled three times (AVX-512, AVX2 + FMA, baseline) and
/// picks the best version for the CPU at run time, so that element-wise loops over
/// [`exp_f32`] run with the widest vectors the CPU has. A closure handed to a
/// `#[target_feature]` function is not compiled with its features, hence a macro.
macro_rules! simd_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features `v4` is compiled for (checked above).
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above, for `v3`.
                    return unsafe { v3($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
#[cfg_attr(not(feature = "flex"), allow(unused_imports))]
pub(crate) use simd_kernel;

simd_kernel! {
    /// `x ↦ x / (1 + e^{-x})` (SiLU) in place.
    pub(crate) fn silu_slice(v: &mut [f32]) {
        for e in v {
            *e /= 1.0 + exp_f32(-*e);
        }
    }
}

/// SiLU `x σ(x)` (Elfwing et al. 2018) for inference: on the CPU backend the values are mapped
/// on the host by a vectorised loop (AVX2 when the CPU has it), in parallel; elsewhere Burn's
/// `silu`. burn-flex evaluates `exp` one element at a time through libm, which made SiLU a
/// quarter of the sampling loop's time (`perf`, docs/RESULTS.md). Not differentiable: for the
/// sampling loop only (training keeps [`Activation::Silu`]).
///
/// # Shapes
/// any `[d0, d1]` → the same shape
pub fn silu_inference(x: Tensor<2>) -> Tensor<2> {
    let device = x.device();
    if !crate::backend::is_cpu(&device) || !crate::backend::own_kernels_enabled() {
        return activation::silu(x);
    }
    let dims = x.dims();
    let mut v = x
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data after convert::<f32>");
    v.par_chunks_mut(8192).for_each(silu_slice);
    Tensor::from_data(TensorData::new(v, dims), &device)
}

/// Activation applied after the affine map.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Activation {
    /// Identity (linear output).
    #[default]
    #[cfg_attr(feature = "clap", value(skip))]
    None,
    /// max(0, x).
    Relu,
    /// x · sigmoid(x) (Swish; Elfwing et al. 2018).
    Silu,
    /// 1 / (1 + e^{−x}).
    #[cfg_attr(feature = "clap", value(skip))]
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
    /// [`Dense::forward`] with SiLU for inference ([`silu_inference`]) when `act` is
    /// [`Activation::Silu`].
    ///
    /// # Shapes
    /// `x`: `[batch, d_input]` → `[batch, d_output]`
    pub fn forward_inference(&self, x: Tensor<2>, act: Activation) -> Tensor<2> {
        #[cfg(feature = "flex")]
        if let Some(y) = self.fused(&x, act) {
            return y;
        }
        match act {
            Activation::Silu => silu_inference(self.linear.forward(x)),
            a => self.forward(x, a),
        }
    }

    /// `act(x W + b)`.
    ///
    /// # Shapes
    /// - `x`: `[batch, d_input]`
    /// - output: `[batch, d_output]`
    pub fn forward(&self, x: Tensor<2>, act: Activation) -> Tensor<2> {
        #[cfg(feature = "flex")]
        if let Some(y) = self.fused(&x, act) {
            return y;
        }
        act.apply(self.linear.forward(x))
    }

    /// The residual block `x + act(x W + b)` (square layers only): one fused operation on the
    /// CPU backend ([`super::fused::dense_residual_forward`]), else Burn's ops (with
    /// [`Dense::forward_inference`] when `inference`).
    ///
    /// # Shapes
    /// `x`: `[batch, width]` → `[batch, width]`
    pub fn forward_residual(&self, x: Tensor<2>, act: Activation, inference: bool) -> Tensor<2> {
        #[cfg(feature = "flex")]
        if let Some(b) = &self.linear.bias
            && crate::backend::own_kernels_enabled()
            && let Some(y) =
                super::fused::dense_residual_forward(&x, &self.linear.weight.val(), &b.val(), act)
        {
            return y;
        }
        let y = if inference {
            self.forward_inference(x.clone(), act)
        } else {
            self.forward(x.clone(), act)
        };
        x.add(y)
    }

    /// The fused CPU kernel ([`super::fused::dense_forward`]), when it applies.
    #[cfg(feature = "flex")]
    fn fused(&self, x: &Tensor<2>, act: Activation) -> Option<Tensor<2>> {
        if !crate::backend::own_kernels_enabled() {
            return None;
        }
        let b = self.linear.bias.as_ref()?;
        super::fused::dense_forward(x, &self.linear.weight.val(), &b.val(), act)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_and_silu_match_libm() {
        let _rng = crate::test_rng_lock();
        let mut worst = 0f32;
        for i in -2000..=2000 {
            let x = i as f32 * 0.043;
            let rel = (exp_f32(x) - x.exp()).abs() / x.exp();
            worst = worst.max(rel);
        }
        assert!(worst < 1e-6, "exp relative error {worst}");
        assert_eq!(exp_f32(-200.0), (-87.3f32).exp());
        let dev = crate::backend::cpu_device();
        let x = Tensor::<2>::random([37, 65], burn::tensor::Distribution::Normal(0.0, 4.0), &dev);
        let fast = silu_inference(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let slow = activation::silu(x).into_data().try_to_vec::<f32>().unwrap();
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
