use super::*;
use burn::tensor::Distribution;

const ACTS: [Activation; 4] = [
    Activation::None,
    Activation::Relu,
    Activation::Silu,
    Activation::Sigmoid,
];

fn reference(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>, act: Activation) -> Tensor<2> {
    act.apply(x.matmul(w).add(b.unsqueeze_dim(0)))
}

fn close(a: Tensor<2>, b: Tensor<2>, tol: f32) {
    let (a, b) = (
        a.into_data().try_to_vec::<f32>().unwrap(),
        b.into_data().try_to_vec::<f32>().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
    }
}

/// Forward values and the gradients of x, W and b equal Burn's composed
/// `act(x.matmul(w) + b)` for every activation (a strided, transposed input included).
#[test]
fn fused_dense_matches_burn_ops_forward_and_backward() {
    let _rng = crate::test_rng_lock();
    let dev = crate::backend::cpu_device().autodiff();
    dev.seed(3);
    for act in ACTS {
        let xt = Tensor::<2>::random([40, 33], Distribution::Normal(0.0, 1.0), &dev);
        let x = xt.clone().transpose().require_grad(); // [33, 40], not contiguous
        let w = Tensor::<2>::random([40, 70], Distribution::Normal(0.0, 0.3), &dev).require_grad();
        let b = Tensor::<1>::random([70], Distribution::Normal(0.0, 0.3), &dev).require_grad();
        let target = Tensor::<2>::random([33, 70], Distribution::Normal(0.0, 1.0), &dev);
        let fused = dense_forward(&x, &w, &b, act).expect("flex autodiff path");
        let slow = reference(x.clone(), w.clone(), b.clone(), act);
        close(fused.clone(), slow.clone(), 1e-5);
        let g1 = fused.mul(target.clone()).sum().backward();
        let g2 = slow.mul(target).sum().backward();
        let grad = |t: &Tensor<2>, g| t.grad(g).unwrap().into_data().try_to_vec::<f32>().unwrap();
        for (a, b) in [
            (grad(&x, &g1), grad(&x, &g2)),
            (grad(&w, &g1), grad(&w, &g2)),
        ] {
            for (p, q) in a.iter().zip(&b) {
                assert!(
                    (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                    "{act:?}: {p} vs {q}"
                );
            }
        }
        let (gb1, gb2) = (b.grad(&g1).unwrap(), b.grad(&g2).unwrap());
        close(gb1.unsqueeze_dim(0), gb2.unsqueeze_dim(0), 1e-4);
    }
}

/// The residual block `x + act(x W + b)`: values and gradients equal Burn's composition
/// (x reaches the output both through the layer and directly). The 160 × 128 case is above
/// [`PARALLEL_MACS`], so with several threads its dW and dx GEMMs run side by side
/// (`rayon::join`); the plain layer of that size is checked the same way.
#[test]
fn fused_residual_matches_burn_ops() {
    let _rng = crate::test_rng_lock();
    let dev = crate::backend::cpu_device().autodiff();
    dev.seed(8);
    const { assert!(160 * 128 * 128 >= PARALLEL_MACS) };
    for ((n, k), residual, act) in ACTS
        .iter()
        .map(|&a| ((50, 64), true, a))
        .chain([((160, 128), true, Activation::Silu)])
        .chain([((160, 128), false, Activation::Relu)])
    {
        let x = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let w = Tensor::<2>::random([k, k], Distribution::Normal(0.0, 0.2), &dev).require_grad();
        let b = Tensor::<1>::random([k], Distribution::Normal(0.0, 0.2), &dev).require_grad();
        let target = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &dev);
        let (fused, slow) = if residual {
            let slow = x
                .clone()
                .add(reference(x.clone(), w.clone(), b.clone(), act));
            (dense_residual_forward(&x, &w, &b, act), slow)
        } else {
            let slow = reference(x.clone(), w.clone(), b.clone(), act);
            (dense_forward(&x, &w, &b, act), slow)
        };
        let fused = fused.expect("flex autodiff path");
        close(fused.clone(), slow.clone(), 1e-5);
        let g1 = fused.mul(target.clone()).sum().backward();
        let g2 = slow.mul(target).sum().backward();
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap(), 1e-4);
        close(w.grad(&g1).unwrap(), w.grad(&g2).unwrap(), 1e-4);
        close(
            b.grad(&g1).unwrap().unsqueeze_dim(0),
            b.grad(&g2).unwrap().unsqueeze_dim(0),
            1e-4,
        );
    }
    let inner = crate::backend::cpu_device();
    let x = Tensor::<2>::random([300, 32], Distribution::Normal(0.0, 1.0), &inner);
    let w = Tensor::<2>::random([32, 32], Distribution::Normal(0.0, 0.2), &inner);
    let b = Tensor::<1>::random([32], Distribution::Normal(0.0, 0.2), &inner);
    let fused = dense_residual_forward(&x, &w, &b, Activation::Silu).unwrap();
    close(
        fused,
        x.clone().add(reference(x, w, b, Activation::Silu)),
        1e-5,
    );
    let wide = Tensor::<2>::zeros([32, 40], &inner);
    let x = Tensor::<2>::zeros([2, 32], &inner);
    let b = Tensor::<1>::zeros([40], &inner);
    assert!(dense_residual_forward(&x, &wide, &b, Activation::Silu).is_none());
}

/// Running on a pool worker ([`crate::backend::in_pool`], as the CLI does) computes the
/// same bits as running from the test thread: the values and all three gradients of a
/// residual layer large enough for the side-by-side backward GEMMs.
#[test]
fn in_pool_computes_the_same_bits() {
    let _rng = crate::test_rng_lock();
    let run = || {
        let dev = crate::backend::cpu_device().autodiff();
        let data = |n: usize, k: usize, f: f32| {
            let v: Vec<f32> = (0..n * k).map(|i| ((i as f32) * f).sin() * 0.5).collect();
            burn::tensor::TensorData::new(v, [n, k])
        };
        let x = Tensor::<2>::from_data(data(160, 128, 0.37), &dev).require_grad();
        let w = Tensor::<2>::from_data(data(128, 128, 0.11), &dev).require_grad();
        let b = Tensor::<2>::from_data(data(1, 128, 0.7), &dev)
            .reshape([128])
            .require_grad();
        let y = dense_residual_forward(&x, &w, &b, Activation::Silu).expect("flex path");
        let g = y.clone().sum().backward();
        let bits = |t: Tensor<2>| -> Vec<u32> {
            let v: Vec<f32> = t.into_data().try_to_vec().unwrap();
            v.into_iter().map(f32::to_bits).collect()
        };
        [
            bits(y.inner()),
            bits(x.grad(&g).unwrap()),
            bits(w.grad(&g).unwrap()),
            bits(b.grad(&g).unwrap().unsqueeze_dim(0)),
        ]
    };
    assert_eq!(run(), crate::backend::in_pool(run));
}

/// ReLU + dropout: kept cells are `relu(x) / keep`, dropped ones 0, the kept share is
/// `keep` within sampling error, the gradient is the same multiplier, and the mask is
/// fixed by its seed (explicit seeds: the device generator is shared by parallel tests).
#[test]
fn relu_dropout_keeps_scales_and_is_seeded() {
    let _rng = crate::test_rng_lock();
    let dev = crate::backend::cpu_device().autodiff();
    let x = Tensor::<2>::random([200, 300], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let xs = x.clone().into_data().try_to_vec::<f32>().unwrap();
    let run = |seed| {
        let y = relu_dropout_seeded(&x, 0.25, seed).expect("flex autodiff path");
        let g = y.clone().sum().backward();
        let ys = y.into_data().try_to_vec::<f32>().unwrap();
        let gs = x.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap();
        (ys, gs)
    };
    let (ys, gs) = run(1);
    let (mut pos, mut kept) = (0usize, 0usize);
    for ((&x, &y), &g) in xs.iter().zip(&ys).zip(&gs) {
        if x > 0.0 {
            pos += 1;
            if y != 0.0 {
                kept += 1;
                assert!((y - x / 0.75).abs() < 1e-6 && (g - 1.0 / 0.75).abs() < 1e-6);
            } else {
                assert_eq!(g, 0.0);
            }
        } else {
            assert!(y == 0.0 && g == 0.0);
        }
    }
    let share = kept as f64 / pos as f64;
    assert!((share - 0.75).abs() < 0.01, "kept share {share}");
    assert_eq!(run(1).0, ys);
    assert_ne!(run(2).0, ys);
    // The public entry draws its seed from the device generator and applies the same rule.
    let y = relu_dropout(&x, 0.25)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert!(
        y.iter()
            .zip(&xs)
            .all(|(&y, &x)| y == 0.0 || (y - x / 0.75).abs() < 1e-6)
    );
    assert!(relu_dropout(&x, 0.0).is_none());
}

/// Inference device (no autodiff): same values as Burn's ops; an input without gradient
/// on the autodiff device gets no gradient and still gives W its gradient.
#[test]
fn fused_dense_inference_and_untracked_input() {
    let _rng = crate::test_rng_lock();
    let dev = crate::backend::cpu_device();
    dev.seed(4);
    let x = Tensor::<2>::random([300, 64], Distribution::Normal(0.0, 1.0), &dev);
    let w = Tensor::<2>::random([64, 96], Distribution::Normal(0.0, 0.2), &dev);
    let b = Tensor::<1>::random([96], Distribution::Normal(0.0, 0.2), &dev);
    let fused = dense_forward(&x, &w, &b, Activation::Silu).expect("flex path");
    close(
        fused,
        reference(x.clone(), w.clone(), b.clone(), Activation::Silu),
        1e-5,
    );

    let ad = dev.autodiff();
    let (x, w, b) = (
        Tensor::<2>::from_data(x.into_data(), &ad),
        Tensor::<2>::from_data(w.into_data(), &ad).require_grad(),
        Tensor::<1>::from_data(b.into_data(), &ad),
    );
    let g = dense_forward(&x, &w, &b, Activation::Relu)
        .unwrap()
        .sum()
        .backward();
    assert!(x.grad(&g).is_none() && b.grad(&g).is_none());
    let gw = w.grad(&g).unwrap();
    let g2 = reference(x, w.clone(), b, Activation::Relu)
        .sum()
        .backward();
    close(gw, w.grad(&g2).unwrap(), 1e-4);
}

/// The parameters' gradients, in the module's visiting order (`None` for tensors that get
/// none, such as BatchNorm's running statistics).
struct CollectGrads<'a> {
    grads: &'a burn::optim::GradientsParams,
    out: Vec<Option<Vec<f32>>>,
}

impl burn::module::ModuleVisitor for CollectGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let g = self.grads.get::<D>(param.id);
        self.out
            .push(g.map(|g| g.into_data().try_to_vec::<f32>().unwrap()));
    }
}

fn all_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (p, q)) in a.iter().zip(b).enumerate() {
        assert!(
            (p - q).abs() <= tol * (1.0 + q.abs()),
            "{what}[{i}]: fused {p} vs generic {q}"
        );
    }
}

/// Loss and every parameter's gradient, on the fused CPU kernels or on Burn's generic ops.
fn loss_and_grads<M: burn::module::Module>(
    net: &M,
    generic: bool,
    loss: impl Fn(&M) -> Tensor<1>,
) -> (f32, Vec<Option<Vec<f32>>>) {
    let run = || {
        let l = loss(net);
        let value: f32 = l.clone().into_scalar();
        let grads = burn::optim::GradientsParams::from_grads(l.backward(), net);
        let mut c = CollectGrads {
            grads: &grads,
            out: Vec::new(),
        };
        net.visit(&mut c);
        (value, c.out)
    };
    if generic {
        crate::backend::with_generic_kernels(run)
    } else {
        run()
    }
}

/// Issue 21: on `--device cuda` none of celldiff's CPU kernels apply and every layer runs
/// Burn's generic ops. Here, on the CPU, the whole count VAE (BatchNorm, ReLU, NB head) and
/// the residual denoiser give the same loss and the same gradient for every parameter on both
/// paths, so a CUDA run trains the same model. Dropout is off: the fused ReLU + dropout draws
/// its mask from its own generator (`relu_dropout_keeps_scales_and_is_seeded`).
#[test]
fn generic_ops_path_gives_the_fused_kernels_loss_and_gradients() {
    use crate::models::{DenoiserConfig, Likelihood, VaeConfig};
    let _rng = crate::test_rng_lock();
    let dev = crate::backend::cpu_device().autodiff();
    dev.seed(21);
    let (n, g) = (48, 120);
    let vae = VaeConfig::new(g)
        .with_hidden(vec![64, 32])
        .with_n_latent(8)
        .with_dropout(0.0)
        .with_likelihood(Likelihood::Nb)
        .init(&dev);
    let counts = Tensor::<2>::random([n, g], Distribution::Uniform(0.0, 6.0), &dev).floor();
    let log_lib = counts.clone().sum_dim(1).add_scalar(1.0).log();
    let x = counts.clone().add_scalar(1.0).log();
    let eps = Tensor::<2>::random([n, 8], Distribution::Normal(0.0, 1.0), &dev);
    let vae_loss = |v: &crate::models::Vae| {
        let out = v.forward(x.clone(), eps.clone());
        let (r, k) =
            crate::models::vae::vae_count_loss_terms(v, counts.clone(), log_lib.clone(), &out);
        r.add(k)
    };
    let (l_fused, g_fused) = loss_and_grads(&vae, false, vae_loss);
    let (l_generic, g_generic) = loss_and_grads(&vae, true, vae_loss);
    assert!(l_fused.is_finite() && l_fused > 0.0);
    all_close("VAE loss", &[l_fused], &[l_generic], 1e-5);
    assert_eq!(g_fused.len(), g_generic.len());
    let trained = g_fused.iter().filter(|g| g.is_some()).count();
    assert!(trained >= 10, "{trained} parameter tensors with a gradient");
    for (i, (a, b)) in g_fused.iter().zip(&g_generic).enumerate() {
        let (Some(a), Some(b)) = (a, b) else {
            assert_eq!(
                a.is_some(),
                b.is_some(),
                "VAE parameter {i}: a gradient on one path only"
            );
            continue;
        };
        assert!(
            b.iter().any(|v| *v != 0.0),
            "VAE parameter {i} has a zero gradient"
        );
        all_close(&format!("VAE grad {i}"), a, b, 1e-3);
    }

    let den = DenoiserConfig::new(8)
        .with_width(64)
        .with_depth(3)
        .with_time_dim(16)
        .init(&dev);
    let ts: Vec<usize> = (0..n).map(|i| (i * 37) % 1000).collect();
    let emb = den.embed_timesteps(&ts, &dev);
    let den_loss = |d: &crate::models::Denoiser| {
        d.forward(eps.clone(), emb.clone())
            .sub(x.clone().slice([0..n, 0..8]))
            .square()
            .mean()
    };
    let (l_fused, g_fused) = loss_and_grads(&den, false, den_loss);
    let (l_generic, g_generic) = loss_and_grads(&den, true, den_loss);
    all_close("denoiser loss", &[l_fused], &[l_generic], 1e-5);
    assert_eq!(
        g_fused.len(),
        8,
        "input, two residual blocks and output: weight + bias"
    );
    for (i, (a, b)) in g_fused.iter().zip(&g_generic).enumerate() {
        let (Some(a), Some(b)) = (a, b) else {
            panic!("denoiser parameter {i} has no gradient");
        };
        all_close(&format!("denoiser grad {i}"), a, b, 1e-3);
    }
    // The sampling loop's inference path (vectorised SiLU on the CPU, Burn's `silu` on CUDA).
    let cpu = crate::backend::cpu_device();
    let inner = DenoiserConfig::new(8)
        .with_width(64)
        .with_depth(3)
        .with_time_dim(16)
        .init(&cpu);
    let z = Tensor::<2>::from_data(eps.clone().into_data(), &cpu);
    let e = Tensor::<2>::from_data(emb.clone().into_data(), &cpu);
    let fast = inner.forward_inference(z.clone(), e.clone());
    let slow = crate::backend::with_generic_kernels(|| inner.forward_inference(z, e));
    close(fast, slow, 1e-5);
}
