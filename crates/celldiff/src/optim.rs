//! Adam (Kingma & Ba 2015, Algorithm 1) in one pass over each parameter on the CPU.
//!
//! Burn's [`Adam`](burn::optim::Adam) updates a parameter with about a dozen tensor operations (scale the first
//! moment, scale the gradient, add, square, …), each a full pass over the parameter with a new
//! buffer; on the benchmark VAE (2.2 M parameters) those passes were the second-largest cost of
//! a training step after the GEMMs (`perf`, docs/RESULTS.md). [`FusedAdam`] computes the same
//! update, operation for operation in the same `f32` order (so the results are bit-identical
//! to Burn's, tested), in one loop that updates both moments in place. It implements Burn's
//! [`Optimizer`] trait with Burn's [`AdamState`] record, so it plugs into [`ModuleOptimizer`]
//! unchanged; on other devices (CUDA), other dtypes or with `amsgrad` it calls Burn's [`Adam`](burn::optim::Adam).
//! Our own code because no crate offers a fused Adam for Burn's CPU backend.

use burn::optim::{AdamConfig, AdamState, LearningRate, ModuleOptimizer, Optimizer};
use burn::prelude::*;

/// Adam with Burn's defaults `β₁ = 0.9`, `β₂ = 0.999` and the given `ε` (celldiff's training
/// loops use `1e-8`, PyTorch's default), no weight decay, as a [`ModuleOptimizer`]:
/// `optim.step(lr, model, grads)`.
pub fn adam(epsilon: f32) -> ModuleOptimizer {
    ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, epsilon))
}

/// Adam whose CPU update is one fused pass; see the module docs.
#[derive(Clone)]
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    /// Burn's Adam with the same constants, for devices without the fused pass.
    fallback: burn::optim::Adam,
}

impl FusedAdam {
    /// Adam with moment decay rates `beta_1`, `beta_2` and denominator constant `epsilon`.
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32) -> Self {
        let fallback = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .build();
        Self {
            beta_1,
            beta_2,
            epsilon,
            fallback,
        }
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> (Tensor<D>, Option<AdamState<D>>) {
        #[cfg(feature = "flex")]
        if fused::eligible(&tensor, &grad, state.as_ref()) {
            return fused::step(self, lr, tensor, grad, state);
        }
        self.fallback.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(mut state: AdamState<D>, device: &Device) -> AdamState<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

#[cfg(feature = "flex")]
mod fused {
    use super::*;
    use burn::optim::AdaptiveMomentumState;
    use burn::tensor::{DType, TensorData};
    use burn_flex::{Flex, FlexTensor};
    use rayon::prelude::*;

    /// Elements per rayon task.
    const CHUNK: usize = 1 << 15;

    /// Whether every tensor is an `f32` tensor of the flex CPU device and the state has no
    /// AMSGrad maximum, so that [`step`] applies.
    pub(super) fn eligible<const D: usize>(
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<&AdamState<D>>,
    ) -> bool {
        let ok = |t: &Tensor<D>| t.dtype() == DType::F32 && crate::backend::is_cpu(&t.device());
        let state_ok = state.is_none_or(|s| {
            s.momentum.max_moment_2.is_none()
                && ok(&s.momentum.moment_1)
                && ok(&s.momentum.moment_2)
        });
        ok(tensor) && ok(grad) && state_ok && crate::backend::own_kernels_enabled()
    }

    fn flex<const D: usize>(t: Tensor<D>) -> FlexTensor {
        let t = t
            .try_into_primitive::<Flex>()
            .expect("checked by `eligible`: an f32 tensor of the flex CPU device");
        if t.is_contiguous() && t.layout().start_offset() == 0 {
            t
        } else {
            t.to_contiguous()
        }
    }

    /// The whole buffer of a contiguous tensor, copied first only if it is shared.
    fn buffer_mut(t: &mut FlexTensor) -> &mut [f32] {
        let n = t.layout().num_elements();
        &mut t.storage_mut::<f32>()[..n]
    }

    pub(super) fn step<const D: usize>(
        o: &FusedAdam,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<AdamState<D>>,
    ) -> (Tensor<D>, Option<AdamState<D>>) {
        let shape: [usize; D] = tensor.dims();
        let n: usize = shape.iter().product();
        let g = flex(grad);
        let g = &g.storage::<f32>()[..n];
        let mut p = flex(tensor);
        let (time, mut m, mut v) = match state {
            Some(s) => (
                s.momentum.time + 1,
                flex(s.momentum.moment_1),
                flex(s.momentum.moment_2),
            ),
            None => {
                let zeros = || FlexTensor::zeros(shape.to_vec().into(), DType::F32);
                (1, zeros(), zeros())
            }
        };
        let first = time == 1;
        let (b1, b2, eps) = (o.beta_1, o.beta_2, o.epsilon);
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        // As Burn's `AdaptiveMomentum::transform`, in f32.
        let bc2_sqrt = (1.0 - b2.powi(time as i32)).sqrt();
        let combined = bc2_sqrt / (1.0 - b1.powi(time as i32));
        let eps_c = eps * bc2_sqrt;
        let lr = lr as f32;
        // The new parameter value from the old one; updates both moments in place. Same
        // operations and order as Burn's Adam (no fused multiply-add), so the same bits.
        let update = |p: f32, g: f32, m: &mut f32, v: &mut f32| -> f32 {
            if first {
                *m = g * f1;
                *v = (g * g) * f2;
            } else {
                *m = *m * b1 + g * f1;
                *v = *v * b2 + (g * g) * f2;
            }
            p - ((*m * combined) / (v.sqrt() + eps_c)) * lr
        };
        let (ms, vs) = (buffer_mut(&mut m), buffer_mut(&mut v));
        let p = if let Some(ps) = p.try_storage_mut::<f32>() {
            // The optimizer holds the only reference: update in place.
            let ps = &mut ps[..n];
            let run = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                    *p = update(*p, g, m, v);
                }
            };
            if n <= CHUNK {
                run(ps, g, ms, vs);
            } else {
                ps.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(ms.par_chunks_mut(CHUNK))
                    .zip(vs.par_chunks_mut(CHUNK))
                    .for_each(|(((p, g), m), v)| run(p, g, m, v));
            }
            p
        } else {
            // The caller still holds the model: write the new values to a new buffer (one
            // pass, instead of a copy and then an update).
            let old = &p.storage::<f32>()[..n];
            let mut out: Vec<f32> = Vec::with_capacity(n);
            let run = |o: &mut [std::mem::MaybeUninit<f32>],
                       p: &[f32],
                       g: &[f32],
                       m: &mut [f32],
                       v: &mut [f32]| {
                for ((((o, &p), &g), m), v) in o.iter_mut().zip(p).zip(g).zip(m).zip(v) {
                    o.write(update(p, g, m, v));
                }
            };
            let spare = &mut out.spare_capacity_mut()[..n];
            if n <= CHUNK {
                run(spare, old, g, ms, vs);
            } else {
                spare
                    .par_chunks_mut(CHUNK)
                    .zip(old.par_chunks(CHUNK))
                    .zip(g.par_chunks(CHUNK))
                    .zip(ms.par_chunks_mut(CHUNK))
                    .zip(vs.par_chunks_mut(CHUNK))
                    .for_each(|((((o, p), g), m), v)| run(o, p, g, m, v));
            }
            // SAFETY: `run` wrote each of the first `n` elements.
            unsafe { out.set_len(n) };
            FlexTensor::from_data(TensorData::new(out, shape))
        };
        let wrap = |t: FlexTensor| Tensor::<D>::from_primitive::<Flex>(t);
        let momentum = AdaptiveMomentumState::new(time, wrap(m), wrap(v));
        (wrap(p), Some(AdamState::new(momentum)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::layers::{Activation, DenseConfig};
    use burn::optim::GradientsParams;
    use burn::tensor::Distribution;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Ten steps of training a small two-layer MLP: the fused update gives bit-identical weights
    /// to Burn's `AdamConfig` Adam (same ε), so switching optimizers changes no result.
    #[test]
    fn fused_adam_equals_burn_adam_bit_for_bit() {
        let _rng = crate::test_rng_lock();
        let dev = crate::backend::cpu_device().autodiff();
        dev.seed(11);
        let l1 = DenseConfig::new(300, 200).init(&dev);
        let l2 = DenseConfig::new(200, 7).init(&dev);
        let x = Tensor::<2>::random([64, 300], Distribution::Normal(0.0, 1.0), &dev);
        let y = Tensor::<2>::random([64, 7], Distribution::Normal(0.0, 1.0), &dev);
        let run = |mut optim: ModuleOptimizer| {
            let (mut a, mut b) = (l1.clone(), l2.clone());
            for _ in 0..10 {
                let out = b.forward(a.forward(x.clone(), Activation::Silu), Activation::None);
                let loss = out.sub(y.clone()).square().mean();
                let mut grads = loss.backward();
                let ga = GradientsParams::from_module(&mut grads, &a);
                let gb = GradientsParams::from_module(&mut grads, &b);
                a = optim.step(3e-3, a, ga);
                b = optim.step(3e-3, b, gb);
            }
            let mut v = values(a.linear.weight.val());
            v.extend(values(b.linear.bias.unwrap().val()));
            v
        };
        let fused = run(adam(1e-8));
        let burn = run(AdamConfig::new().with_epsilon(1e-8).init());
        let start = values(l1.linear.weight.val());
        assert_ne!(fused[..start.len()], start[..], "the weights moved");
        assert_eq!(fused, burn);
    }
}
