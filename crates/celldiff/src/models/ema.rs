//! Exponential moving average of model weights, as diffusers' `EMAModel` (which scVAEDer's
//! published code defines but never applies; celldiff samples with the EMA weights).
//!
//! After optimisation step k (1-based), with `decay_k = min(decay, (1 + k) / (10 + k))`
//! (diffusers' warm-up, `use_ema_warmup=False`): θ_ema ← decay_k · θ_ema + (1 − decay_k) · θ.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

/// EMA state: a shadow copy of a module (on a plain, non-autodiff device) and the step count.
#[derive(Debug, Clone)]
pub struct Ema<M: Module> {
    shadow: M,
    decay: f64,
    step: u64,
}

struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().without_autodiff();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]));
    }
}

struct Blend {
    params: std::vec::IntoIter<Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(src) = self.params.next() else {
            return param;
        };
        let decay = self.decay;
        param.map(|old| {
            let shape = old.shape();
            #[cfg(feature = "flex")]
            if crate::backend::own_kernels_enabled()
                && let Some(t) = blend_cpu(&old, &src, decay)
            {
                return t;
            }
            old.mul_scalar(decay)
                .add(src.reshape(shape).mul_scalar(1.0 - decay))
        })
    }
}

/// `old · decay + src · (1 − decay)` in one pass over host memory (flex, `f32`), with the
/// same `f32` operations as the Burn expression above, so the same bits; `None` elsewhere.
#[cfg(feature = "flex")]
fn blend_cpu<const D: usize>(old: &Tensor<D>, src: &Tensor<1>, decay: f64) -> Option<Tensor<D>> {
    use burn::tensor::DType;
    use burn_flex::{Flex, FlexTensor};
    use rayon::prelude::*;
    let flex = |t: FlexTensor| -> Option<FlexTensor> {
        if t.dtype() != DType::F32 {
            return None;
        }
        Some(if t.as_slice::<f32>().is_some() {
            t
        } else {
            t.to_contiguous()
        })
    };
    let o = flex(old.clone().try_into_primitive::<Flex>().ok()?)?;
    let s = flex(src.clone().try_into_primitive::<Flex>().ok()?)?;
    let (o, s) = (o.as_slice::<f32>()?, s.as_slice::<f32>()?);
    if o.len() != s.len() {
        return None;
    }
    let (d, e) = (decay as f32, (1.0 - decay) as f32);
    let mut out = Vec::with_capacity(o.len());
    o.par_iter()
        .zip(s)
        .with_min_len(1 << 14)
        .map(|(&a, &b)| a * d + b * e)
        .collect_into_vec(&mut out);
    let shape: [usize; D] = old.dims();
    Some(Tensor::from_primitive::<Flex>(FlexTensor::from_data(
        burn::tensor::TensorData::new(out, shape),
    )))
}

impl<M: Module> Ema<M> {
    /// Starts the average at the current weights of `model` (moved to a plain device).
    pub fn new(model: &M, decay: f64) -> Self {
        Self {
            shadow: model.valid(),
            decay,
            step: 0,
        }
    }

    /// The decay used at the next update (with diffusers' warm-up).
    pub fn current_decay(&self) -> f64 {
        let k = (self.step + 1) as f64;
        self.decay.min((1.0 + k) / (10.0 + k))
    }

    /// Folds the current weights of `model` into the average.
    pub fn update(&mut self, model: &M) {
        let mut c = Collect(Vec::new());
        model.visit(&mut c);
        let decay = self.current_decay();
        let shadow = self.shadow.clone();
        self.shadow = shadow.map(&mut Blend {
            params: c.0.into_iter(),
            decay,
        });
        self.step += 1;
    }

    /// The averaged module.
    pub fn model(&self) -> &M {
        &self.shadow
    }

    /// Consumes the EMA, returning the averaged module.
    pub fn into_model(self) -> M {
        self.shadow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::layers::DenseConfig;

    #[test]
    fn ema_follows_diffusers_warmup() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let a = DenseConfig::new(2, 1).init(&device);
        let mut ema = Ema::new(&a, 0.999);
        let w0: Vec<f32> = a.linear.weight.val().into_data().try_to_vec().unwrap();
        // A "trained" model whose weights are all zero.
        let zero = a.clone().map(&mut Zero);
        ema.update(&zero);
        // First step: decay = min(0.999, 2/11).
        let d = 2.0 / 11.0;
        let w1: Vec<f32> = ema
            .model()
            .linear
            .weight
            .val()
            .into_data()
            .try_to_vec()
            .unwrap();
        for (x, y) in w0.iter().zip(&w1) {
            assert!((*y as f64 - d * *x as f64).abs() < 1e-6);
        }
        assert!((ema.current_decay() - 3.0 / 12.0).abs() < 1e-12);
    }

    /// The one-pass CPU blend equals Burn's `old·d + src·(1 − d)` bit for bit.
    #[cfg(feature = "flex")]
    #[test]
    fn cpu_blend_equals_burn_expression() {
        let _rng = crate::test_rng_lock();
        let dev = crate::backend::cpu_device();
        dev.seed(5);
        let old = Tensor::<2>::random([70, 900], burn::tensor::Distribution::Default, &dev);
        let src = Tensor::<1>::random([63_000], burn::tensor::Distribution::Default, &dev);
        let d = 0.987_654_3;
        let fast = blend_cpu(&old, &src, d).unwrap();
        let slow = old
            .clone()
            .mul_scalar(d)
            .add(src.reshape([70, 900]).mul_scalar(1.0 - d));
        assert_eq!(
            fast.into_data().try_to_vec::<f32>().unwrap(),
            slow.into_data().try_to_vec::<f32>().unwrap()
        );
    }

    struct Zero;
    impl ModuleMapper for Zero {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            p.map(|t| t.zeros_like())
        }
    }
}
