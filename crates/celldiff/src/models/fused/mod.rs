//! The CPU kernel of [`super::layers::Dense`]: `y = act(x W + b)` as one Burn operation with a
//! hand-written backward pass, on the `flex` backend (issue 6, "fused bias + activation").
//!
//! Why our own code: Burn composes a dense layer from three autodiff nodes (matmul, broadcast
//! bias add, activation), each with its own full pass over `[batch, d_out]` in the forward and
//! backward pass, and flex evaluates `exp` one element at a time through libm. Here the GEMM
//! writes a fresh buffer, one parallel vectorised pass adds the bias and applies the
//! activation (and the residual input, for [`dense_residual_forward`]), and the backward pass
//! computes `dz = dy ⊙ act'`, `dW = xᵀ dz`,
//! `db = Σ_rows dz` and `dx = dz Wᵀ` in one step, with strided GEMMs instead of transposed
//! copies, and skips the gradients nobody asked for (no `dx` for the data matrix).
//!
//! The mechanism is Burn's backend extension: [`Tensor::try_into_primitive`] to the
//! `Autodiff<Flex>` (or `Flex`) primitive, a [`Backward`] step registered in the autodiff graph,
//! and [`Tensor::from_primitive`] back. Other devices (CUDA, ndarray) and non-`f32` tensors
//! return `None` from [`dense_forward`], and the caller keeps Burn's own kernels. The GEMM is
//! the `gemm` crate that burn-flex itself uses (with AVX-512 kernels where the CPU has them).

use burn::prelude::*;
use burn::tensor::TensorData;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::layers::{Activation, exp_f32, silu_slice, simd_kernel};

/// Multiply-adds above which a GEMM is split over the rayon pool.
const PARALLEL_MACS: usize = 1 << 21;
/// Elements per rayon task in the element-wise passes.
const CHUNK: usize = 1 << 14;

/// `act(x W + b)` through the fused CPU kernel, or `None` when the tensors are not `f32` on
/// the flex backend (with or without autodiff, no gradient checkpointing): the caller then
/// uses Burn's ops. Differentiable in `x`, `w` and `b` (Burn's autodiff graph records one
/// node for the whole layer).
///
/// # Shapes
/// - `x`: `[batch, d_input]`
/// - `w`: `[d_input, d_output]` (Burn's `Linear` layout)
/// - `b`: `[d_output]`
/// - output: `[batch, d_output]`
pub fn dense_forward(
    x: &Tensor<2>,
    w: &Tensor<2>,
    b: &Tensor<1>,
    act: Activation,
) -> Option<Tensor<2>> {
    forward(x, w, b, act, false)
}

/// The residual block `x + act(x W + b)` (the denoiser's hidden blocks) as one fused
/// operation; `None` as for [`dense_forward`], or when `W` is not square.
///
/// # Shapes
/// - `x`: `[batch, width]`
/// - `w`: `[width, width]`
/// - `b`: `[width]`
/// - output: `[batch, width]`
pub fn dense_residual_forward(
    x: &Tensor<2>,
    w: &Tensor<2>,
    b: &Tensor<1>,
    act: Activation,
) -> Option<Tensor<2>> {
    forward(x, w, b, act, true)
}

fn forward(
    x: &Tensor<2>,
    w: &Tensor<2>,
    b: &Tensor<1>,
    act: Activation,
    residual: bool,
) -> Option<Tensor<2>> {
    if residual && w.dims()[0] != w.dims()[1] {
        return None;
    }
    if let (Ok(xp), Ok(wp), Ok(bp)) = (
        x.clone().try_into_primitive::<Autodiff<Flex>>(),
        w.clone().try_into_primitive::<Autodiff<Flex>>(),
        b.clone().try_into_primitive::<Autodiff<Flex>>(),
    ) {
        let out = tracked_forward(xp, wp, bp, act, residual)?;
        return Some(Tensor::from_primitive::<Autodiff<Flex>>(out));
    }
    let (Ok(xp), Ok(wp), Ok(bp)) = (
        x.clone().try_into_primitive::<Flex>(),
        w.clone().try_into_primitive::<Flex>(),
        b.clone().try_into_primitive::<Flex>(),
    ) else {
        return None;
    };
    let (xs, ws, bs) = (
        f32_contiguous(&xp)?,
        f32_contiguous(&wp)?,
        f32_contiguous(&bp)?,
    );
    let (n, k, m) = dims(&xp, &wp, &bp)?;
    let res = residual.then(|| xs.as_slice());
    let y = affine_act(
        xs.as_slice(),
        ws.as_slice(),
        bs.as_slice(),
        n,
        k,
        m,
        act,
        res,
    );
    Some(Tensor::from_primitive::<Flex>(flex_from(y, [n, m])))
}

type AdTensor = <Autodiff<Flex> as burn_backend::BackendTypes>::FloatTensorPrimitive;

/// What the backward pass of one fused layer needs.
#[derive(Debug, Clone)]
struct FusedState {
    /// Input `[n, k]` (kept only when `W` needs a gradient).
    x: Option<FlexTensor>,
    /// Weight `[k, m]` (kept only when `x` needs a gradient).
    w: Option<FlexTensor>,
    /// Pre-activation `z` (SiLU) or activation `act(z)` (ReLU, sigmoid) `[n, m]`; `None` for
    /// identity.
    saved: Option<FlexTensor>,
    act: Activation,
    /// `y = x + act(z)`: the output gradient flows to `x` unchanged as well.
    residual: bool,
    n: usize,
    k: usize,
    m: usize,
}

#[derive(Debug)]
struct FusedDenseBackward;

impl Backward<Flex, 3> for FusedDenseBackward {
    type State = FusedState;

    fn backward(self, ops: Ops<FusedState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let dy = f32_contiguous(&dy).expect("f32 gradient of an f32 layer");
        // dz = dy ⊙ act'(z)
        let dz_owned = match (s.act, &s.saved) {
            (Activation::None, _) | (_, None) => None,
            (act, Some(saved)) => {
                let saved = f32_contiguous(saved).expect("f32 saved activation");
                Some(activation_grad(dy.as_slice(), saved.as_slice(), act))
            }
        };
        let dz: &[f32] = dz_owned.as_deref().unwrap_or(dy.as_slice());
        let [px, pw, pb] = ops.parents;
        // dW[k, m] = xᵀ[k, n] · dz[n, m]
        let weight_grad = |parallel: bool| {
            let x = s.x.as_ref().expect("x saved when W is tracked");
            let x = f32_contiguous(x).expect("f32 input");
            gemm_new(
                s.k,
                s.m,
                s.n,
                x.as_slice(),
                s.k as isize,
                1,
                dz,
                1,
                s.m as isize,
                parallel,
            )
        };
        // dx[n, k] = dz[n, m] · Wᵀ[m, k]  (+ dy for the residual block, k = m)
        let input_grad = |parallel: bool| {
            let w = s.w.as_ref().expect("W saved when x is tracked");
            let w = f32_contiguous(w).expect("f32 weight");
            if s.residual {
                let mut dx = dy.as_slice().to_vec();
                // SAFETY: dx holds n·k elements, row-major.
                unsafe {
                    gemm_raw(
                        s.n,
                        s.k,
                        s.m,
                        dx.as_mut_ptr(),
                        dx.len(),
                        s.k as isize,
                        dz,
                        1,
                        s.m as isize,
                        w.as_slice(),
                        s.m as isize,
                        1,
                        true,
                        parallel,
                    );
                }
                dx
            } else {
                gemm_new(
                    s.n,
                    s.k,
                    s.m,
                    dz,
                    1,
                    s.m as isize,
                    w.as_slice(),
                    s.m as isize,
                    1,
                    parallel,
                )
            }
        };
        // The two GEMMs are independent and, in the hidden layers, the same size (n·k·m
        // multiply-adds each): with several threads they run side by side, one thread each,
        // which avoids the GEMM's own fork-join points and its serial packing (docs/RESULTS.md).
        let macs = s.n.saturating_mul(s.k).saturating_mul(s.m);
        let (dw, dx) = match (&pw, &px) {
            (Some(_), Some(_)) if rayon::current_num_threads() > 1 && macs >= PARALLEL_MACS => {
                let (dw, dx) = rayon::join(|| weight_grad(false), || input_grad(false));
                (Some(dw), Some(dx))
            }
            _ => (
                pw.as_ref().map(|_| weight_grad(true)),
                px.as_ref().map(|_| input_grad(true)),
            ),
        };
        if let (Some(p), Some(dw)) = (pw, dw) {
            grads.register::<Flex>(p.id, flex_from(dw, [s.k, s.m]));
        }
        if let Some(p) = pb {
            grads.register::<Flex>(p.id, flex_from(column_sums(dz, s.n, s.m), [s.m]));
        }
        if let (Some(p), Some(dx)) = (px, dx) {
            grads.register::<Flex>(p.id, flex_from(dx, [s.n, s.k]));
        }
    }
}

fn tracked_forward(
    x: AdTensor,
    w: AdTensor,
    b: AdTensor,
    act: Activation,
    residual: bool,
) -> Option<AdTensor> {
    let (n, k, m) = dims(x.primitive(), w.primitive(), b.primitive())?;
    let (xs, ws, bs) = (
        f32_contiguous(x.primitive())?,
        f32_contiguous(w.primitive())?,
        f32_contiguous(b.primitive())?,
    );
    let (x_tracked, w_tracked) = (x.is_tracked(), w.is_tracked());
    let prep = FusedDenseBackward
        .prepare::<NoCheckpointing>([x.node(), w.node(), b.node()])
        .compute_bound()
        .stateful();
    let (x_s, w_s, b_s) = (xs.as_slice(), ws.as_slice(), bs.as_slice());
    let res = residual.then_some(x_s);
    let (y, saved) = match (&prep, act, residual) {
        (OpsKind::UnTracked(_), _, _) | (_, Activation::None, _) => {
            (affine_act(x_s, w_s, b_s, n, k, m, act, res), None)
        }
        (_, Activation::Silu, _) => {
            let z = affine_act(x_s, w_s, b_s, n, k, m, Activation::None, None);
            let mut y = par_new(z.len(), |i, c| silu_into(c, &z[i * CHUNK..][..c.len()]));
            if let Some(r) = res {
                add_in_place(&mut y, r);
            }
            (y, Some(z))
        }
        // ReLU, sigmoid: the saved activation is the output itself, or the output minus `x`.
        (_, _, false) => (affine_act(x_s, w_s, b_s, n, k, m, act, None), None),
        (_, _, true) => {
            let a = affine_act(x_s, w_s, b_s, n, k, m, act, None);
            let mut y = a.clone();
            add_in_place(&mut y, x_s);
            (y, Some(a))
        }
    };
    let y = flex_from(y, [n, m]);
    Some(match prep {
        OpsKind::Tracked(prep) => {
            let saved = match (act, saved) {
                (Activation::None, _) => None,
                (_, Some(v)) => Some(flex_from(v, [n, m])),
                // The output and the saved activation share one buffer (copy-on-write).
                (_, None) => Some(y.clone()),
            };
            let state = FusedState {
                x: w_tracked.then(|| xs.into_flex([n, k])),
                w: x_tracked.then(|| ws.into_flex([k, m])),
                saved,
                act,
                residual,
                n,
                k,
                m,
            };
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(y),
    })
}

/// `[n, k]`, `[k, m]`, `[m]` → `(n, k, m)`, or `None` on any other shape.
fn dims(x: &FlexTensor, w: &FlexTensor, b: &FlexTensor) -> Option<(usize, usize, usize)> {
    let (xs, ws, bs) = (x.layout().shape(), w.layout().shape(), b.layout().shape());
    if xs.num_dims() != 2 || ws.num_dims() != 2 || bs.num_dims() != 1 {
        return None;
    }
    let (n, k, m) = (xs[0], xs[1], ws[1]);
    (ws[0] == k && bs[0] == m).then_some((n, k, m))
}

/// A contiguous `f32` view of a flex tensor: borrowed when it already is one, else a copy.
enum F32Data {
    Shared(FlexTensor),
    Owned(Vec<f32>),
}

impl F32Data {
    fn as_slice(&self) -> &[f32] {
        match self {
            F32Data::Shared(t) => t.as_slice::<f32>().expect("checked contiguous f32"),
            F32Data::Owned(v) => v,
        }
    }
    fn into_flex<const D: usize>(self, shape: [usize; D]) -> FlexTensor {
        match self {
            F32Data::Shared(t) => t,
            F32Data::Owned(v) => flex_from(v, shape),
        }
    }
}

fn f32_contiguous(t: &FlexTensor) -> Option<F32Data> {
    if t.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    if t.as_slice::<f32>().is_some() {
        return Some(F32Data::Shared(t.clone()));
    }
    let c = t.to_contiguous();
    Some(F32Data::Owned(c.as_slice::<f32>()?.to_vec()))
}

fn flex_from<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape))
}

/// `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`. Strides are in elements, column stride (`_cs`)
/// before row stride (`_rs`) as in `gemm::gemm`: element `(i, j)` of `lhs` is
/// `lhs[i·lhs_rs + j·lhs_cs]`. `dst` is row-major with row stride `dst_rs`; `accumulate` keeps
/// what `dst` holds (`dst += lhs·rhs`), else `dst = lhs·rhs`. `parallel` lets the GEMM use the
/// rayon pool (above [`PARALLEL_MACS`] multiply-adds); `false` keeps it on the calling thread.
///
/// # Safety
/// `dst` must be valid for writes of `dst_len` elements (and reads, with `accumulate`). The
/// operand strides are checked against the slice lengths (panics otherwise).
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_len: usize,
    dst_rs: isize,
    lhs: &[f32],
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: &[f32],
    rhs_cs: isize,
    rhs_rs: isize,
    accumulate: bool,
    parallel: bool,
) {
    // Guard the safety contract: the last element each operand addresses is inside it.
    let last = |rows: usize, cols: usize, rs: isize, cs: isize| {
        (rows.max(1) - 1) * rs as usize + (cols.max(1) - 1) * cs as usize
    };
    assert!(
        m == 0
            || n == 0
            || k == 0
            || (last(m, k, lhs_rs, lhs_cs) < lhs.len()
                && last(k, n, rhs_rs, rhs_cs) < rhs.len()
                && last(m, n, dst_rs, 1) < dst_len),
        "gemm operand out of bounds"
    );
    let par = if parallel && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MACS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: forwarded to the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            accumulate,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// A new row-major `[m, n]` buffer `lhs[m, k] · rhs[k, n]` (strides as in [`gemm_raw`]),
/// written by the GEMM without zero-filling it first.
#[allow(clippy::too_many_arguments)]
fn gemm_new(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[f32],
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: &[f32],
    rhs_cs: isize,
    rhs_rs: isize,
    parallel: bool,
) -> Vec<f32> {
    let len = m * n;
    if k == 0 {
        return vec![0.0; len];
    }
    let mut out = Vec::with_capacity(len);
    // SAFETY: the bounds of lhs and rhs are checked in gemm_raw; with `accumulate` false the
    // GEMM writes every one of the `len` elements of `out` (k > 0) and reads none.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            out.as_mut_ptr(),
            len,
            n as isize,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            false,
            parallel,
        );
        out.set_len(len);
    }
    out
}

/// `act(x W + b)` (plus `res`, the residual input, when given): the GEMM into a new buffer,
/// then one parallel pass that adds the bias, applies the activation and adds `res`.
#[allow(clippy::too_many_arguments)]
fn affine_act(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    n: usize,
    k: usize,
    m: usize,
    act: Activation,
    res: Option<&[f32]>,
) -> Vec<f32> {
    let mut z = gemm_new(n, m, k, x, 1, k as isize, w, 1, m as isize, true);
    if m == 0 {
        return z;
    }
    let rows = (CHUNK / m).max(1);
    let pass = |(i, c): (usize, &mut [f32])| {
        bias_act_rows(c, b, act);
        if let Some(r) = res {
            add_slice(c, &r[i * rows * m..][..c.len()]);
        }
    };
    if n <= rows {
        pass((0, &mut z));
    } else {
        z.par_chunks_mut(rows * m).enumerate().for_each(pass);
    }
    z
}

simd_kernel! {
    /// `y ← y + r`.
    fn add_slice(y: &mut [f32], r: &[f32]) {
        y.iter_mut().zip(r).for_each(|(a, &b)| *a += b);
    }
}

fn add_in_place(y: &mut [f32], r: &[f32]) {
    if y.len() <= CHUNK {
        add_slice(y, r);
    } else {
        y.par_chunks_mut(CHUNK)
            .zip(r.par_chunks(CHUNK))
            .for_each(|(a, b)| add_slice(a, b));
    }
}

simd_kernel! {
    /// `row ↦ act(row + b)` for each row of `c` (rows of `b.len()` elements).
    fn bias_act_rows(c: &mut [f32], b: &[f32], act: Activation) {
        for row in c.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(e, &bj)| *e += bj);
            act_slice(row, act);
        }
    }
}

simd_kernel! {
    /// `act` on every element, in place.
    fn act_slice(y: &mut [f32], act: Activation) {
        match act {
            Activation::None => {}
            Activation::Relu => y.iter_mut().for_each(|e| *e = e.max(0.0)),
            Activation::Silu => silu_slice(y),
            Activation::Sigmoid => y.iter_mut().for_each(|e| *e = 1.0 / (1.0 + exp_f32(-*e))),
        }
    }
}

simd_kernel! {
    /// `dz = dy ⊙ act'` into `dz` (uninitialised), from the saved pre-activation (SiLU) or
    /// activation (ReLU, sigmoid).
    fn act_grad_into(dz: &mut [MaybeUninit<f32>], dy: &[f32], saved: &[f32], act: Activation) {
        let it = dz.iter_mut().zip(dy).zip(saved);
        match act {
            Activation::None => it.for_each(|((d, &g), _)| {
                d.write(g);
            }),
            Activation::Relu => it.for_each(|((d, &g), &y)| {
                d.write(if y > 0.0 { g } else { 0.0 });
            }),
            Activation::Sigmoid => it.for_each(|((d, &g), &y)| {
                d.write(g * (y * (1.0 - y)));
            }),
            // d/dz z σ(z) = σ(z) (1 + z (1 − σ(z)))
            Activation::Silu => it.for_each(|((d, &g), &z)| {
                let sig = 1.0 / (1.0 + exp_f32(-z));
                d.write(g * (sig * (1.0 + z * (1.0 - sig))));
            }),
        }
    }
}

simd_kernel! {
    /// `y = SiLU(z)` into `y` (uninitialised).
    fn silu_into(y: &mut [MaybeUninit<f32>], z: &[f32]) {
        for (o, &v) in y.iter_mut().zip(z) {
            o.write(v / (1.0 + exp_f32(-v)));
        }
    }
}

/// A new buffer of `len` elements, each written by `fill(chunk_index, chunk)` over chunks of
/// [`CHUNK`] elements, in parallel; `fill` must write every element of its chunk.
fn par_new(len: usize, fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let spare = &mut out.spare_capacity_mut()[..len];
    if len <= CHUNK {
        fill(0, spare);
    } else {
        spare
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, c)| fill(i, c));
    }
    // SAFETY: `fill` wrote each of the `len` elements (its contract; all callers write
    // element-wise maps over the whole chunk).
    unsafe { out.set_len(len) };
    out
}

/// `dy ⊙ act'` as a new buffer.
fn activation_grad(dy: &[f32], saved: &[f32], act: Activation) -> Vec<f32> {
    par_new(dy.len(), |i, c| {
        let r = i * CHUNK..i * CHUNK + c.len();
        act_grad_into(c, &dy[r.clone()], &saved[r], act)
    })
}

/// `Σ_rows dz` → `[m]`.
fn column_sums(dz: &[f32], n: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; m];
    for row in dz.chunks_exact(m).take(n) {
        out.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
    }
    out
}

/// `ReLU` then inverted dropout (Srivastava et al. 2014: keep with probability `1 − prob`,
/// scale kept values by `1 / (1 − prob)`) as one autodiff operation on the flex backend: one
/// pass forward, one multiply backward, the keep mask drawn in parallel from a seed that is
/// itself drawn from the device's generator (so `device.seed(s)` fixes it, as for Burn's
/// `Dropout`). Burn's version is a per-element `f64` Bernoulli draw, two multiplies and the
/// ReLU, each a node of its own. `None` unless `x` is an `f32` tensor on the flex autodiff
/// device and `0 < prob < 1` (evaluation, or no dropout: the caller applies the ReLU).
///
/// # Shapes
/// `x`: `[batch, width]` → `[batch, width]`
pub fn relu_dropout(x: &Tensor<2>, prob: f64) -> Option<Tensor<2>> {
    if prob <= 0.0 || prob >= 1.0 {
        return None;
    }
    // Only on the flex autodiff device (checked before a draw from the device generator).
    x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    // 48 random bits from the device generator seed the mask.
    let bits = Tensor::<1>::random([2], burn::tensor::Distribution::Default, &x.device())
        .into_data()
        .try_to_vec::<f32>()
        .ok()?;
    let seed = ((bits[0] * 16_777_216.0) as u64) << 24 | (bits[1] * 16_777_216.0) as u64;
    relu_dropout_seeded(x, prob, seed)
}

/// [`relu_dropout`] with the mask drawn from `seed` (the same seed, the same mask).
///
/// # Shapes
/// `x`: `[batch, width]` → `[batch, width]`
pub(crate) fn relu_dropout_seeded(x: &Tensor<2>, prob: f64, seed: u64) -> Option<Tensor<2>> {
    if prob <= 0.0 || prob >= 1.0 {
        return None;
    }
    let xp = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let xs = f32_contiguous(xp.primitive())?;
    let [n, m] = x.dims();
    let keep = 1.0 - prob;
    let threshold = (keep * 4_294_967_296.0).min(4_294_967_295.0) as u32;
    let inv = (1.0 / keep) as f32;
    // scale = 1/keep where x > 0 and the cell is kept, else 0; y = x · scale.
    let mut scale = vec![0f32; n * m];
    let mut y = vec![0f32; n * m];
    const MASK_CHUNK: usize = 4096;
    scale
        .par_chunks_mut(MASK_CHUNK)
        .zip(y.par_chunks_mut(MASK_CHUNK))
        .zip(xs.as_slice().par_chunks(MASK_CHUNK))
        .enumerate()
        .for_each(|(c, ((sc, yc), xc))| {
            use rand::{RngCore, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            for ((s, o), &v) in sc.iter_mut().zip(yc.iter_mut()).zip(xc) {
                let kept = rng.next_u32() < threshold;
                *s = if kept && v > 0.0 { inv } else { 0.0 };
                *o = v * *s;
            }
        });
    let prep = ScaleBackward
        .prepare::<NoCheckpointing>([xp.node()])
        .compute_bound()
        .stateful();
    let y = flex_from(y, [n, m]);
    let out = match prep {
        OpsKind::Tracked(prep) => prep.finish(flex_from(scale, [n, m]), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// Backward of `y = x ⊙ scale` with a constant `scale` (the ReLU-dropout multiplier).
#[derive(Debug)]
struct ScaleBackward;

impl Backward<Flex, 1> for ScaleBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node);
        let [Some(parent)] = ops.parents else {
            return;
        };
        let dy = f32_contiguous(&dy).expect("f32 gradient of an f32 op");
        let scale = f32_contiguous(&ops.state).expect("f32 scale");
        let mut dx = dy.as_slice().to_vec();
        dx.par_chunks_mut(CHUNK)
            .zip(scale.as_slice().par_chunks(CHUNK))
            .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d *= s));
        let shape: [usize; 2] = [ops.state.layout().shape()[0], ops.state.layout().shape()[1]];
        grads.register::<Flex>(parent.id, flex_from(dx, shape));
    }
}

#[cfg(test)]
mod tests;
