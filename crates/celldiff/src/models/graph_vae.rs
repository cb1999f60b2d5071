//! Graph-DiffVAE's variational graph autoencoder (Bica, Andrés-Terré, Cvejic & Liò, *Sci.
//! Rep.* 10, 9790, 2020, section "Graph-DiffVAE"), built on graph convolutions (Kipf & Welling,
//! "Semi-supervised classification with graph convolutional networks", ICLR 2017, Eq. 2) and the
//! variational graph autoencoder (Kipf & Welling, "Variational graph auto-encoders", NIPS
//! Bayesian Deep Learning workshop 2016, arXiv 1611.07308).
//!
//! # Model
//! - **Graph convolution** ([`GraphConv`]): `H' = act(Â H W)` with `Â = D^−½ (A + I) D^−½`, a
//!   Glorot-uniform weight and no bias (as `GraphConvolution` of Kipf's `gae` code).
//! - **Encoder**: `H = ReLU(Â X W₀)` (`hidden`, 512), `μ = Â H W_μ`, `log σ² = Â H W_σ`
//!   (`n_latent`, 50 each; the first layer is shared), `Z = μ + σ ⊙ ε`.
//! - **Decoder**: `H_d = ReLU(Â [Z | X] W₂)` (`hidden`), `Z′ = Â H_d W₃` (`n_latent`),
//!   `Z* = (Z′ + Z) / 2`, and the edge probabilities `Â_ij = σ(z*_i · z*_j)`.
//!
//! # Sparse propagation
//! Burn has no sparse matrix product, so `Â H` is computed from the edge list of `Â`
//! ([`Propagation`]): the source rows are gathered (`Tensor::select`), scaled by the edge
//! weights and summed into the destination rows (`Tensor::select_assign` with
//! `IndexingUpdateOp::Add`). Both operations are differentiable in Burn's autodiff backend
//! (the gradient of a gather is a scatter-add and vice versa), so gradients reach `H` and every
//! weight. Cost `O(|E| · d)` per product instead of `O(N² d)`.
//!
//! # Loss
//! [`weighted_bce_dense`] / [`weighted_bce_pairs`]: the weighted binary cross-entropy of
//! Kipf & Welling's GAE (`norm · mean(pos_weight · y · softplus(−x) + (1 − y) · softplus(x))`
//! over all `N²` ordered pairs, `x = z*_i · z*_j`, labels `A + I`), and [`kl_per_node`], the
//! KL divergence of `q(Z | X, A)` from `N(0, I)` averaged over nodes and divided by `N` (the
//! GAE code's `0.5 / N · mean(Σ (1 + log σ² − μ² − σ²))`).

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::{IndexingUpdateOp, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::layers::Activation;
use crate::error::Error;

/// The product `Â H` for a fixed sparse `N × N` matrix `Â` given by its edge list
/// (`Â[dst, src] = weight`): `(Â H)_i = Σ_{e: dst_e = i} weight_e · H_{src_e}`.
///
/// Build it once per graph ([`Propagation::new`]) on the device the model runs on (the
/// autodiff device while training); it is a constant of the model, not a parameter.
#[derive(Debug, Clone)]
pub struct Propagation {
    n_nodes: usize,
    n_edges: usize,
    src: Tensor<1, Int>,
    dst: Tensor<1, Int>,
    /// `[n_edges, 1]`, broadcast over the feature columns.
    weight: Tensor<2>,
}

impl Propagation {
    /// Builds the operator from the stored entries `(dst[e], src[e]) = weight[e]` of `Â`
    /// (`n_nodes × n_nodes`); repeated pairs add up. A symmetric `Â` (as
    /// [`crate::diffvae::graph::NormalizedAdjacency`]) lists both directions.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the three slices differ in length, an index is
    /// `≥ n_nodes`, a weight is not finite, or `n_nodes` is 0.
    pub fn new(
        n_nodes: usize,
        src: &[usize],
        dst: &[usize],
        weight: &[f32],
        device: &Device,
    ) -> crate::error::Result<Self> {
        if n_nodes == 0 {
            return Err(Error::InvalidInput(
                "propagation: the graph has no nodes".into(),
            ));
        }
        let e = src.len();
        if dst.len() != e || weight.len() != e {
            return Err(Error::InvalidInput(format!(
                "propagation: {} sources, {} destinations and {} weights; expected equal counts",
                e,
                dst.len(),
                weight.len()
            )));
        }
        if let Some(&bad) = src.iter().chain(dst).find(|&&i| i >= n_nodes) {
            return Err(Error::InvalidInput(format!(
                "propagation: node index {bad} is out of range for {n_nodes} nodes"
            )));
        }
        if let Some(w) = weight.iter().find(|w| !w.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "propagation: edge weight {w} is not finite"
            )));
        }
        let int = |v: &[usize]| {
            Tensor::<1, Int>::from_data(
                TensorData::new(v.iter().map(|&i| i as i64).collect::<Vec<_>>(), [e]),
                device,
            )
        };
        Ok(Self {
            n_nodes,
            n_edges: e,
            src: int(src),
            dst: int(dst),
            weight: Tensor::from_data(TensorData::new(weight.to_vec(), [e, 1]), device),
        })
    }

    /// Number of nodes `N`.
    pub fn n_nodes(&self) -> usize {
        self.n_nodes
    }

    /// Number of stored entries of `Â`.
    pub fn n_edges(&self) -> usize {
        self.n_edges
    }

    /// `Â H`.
    ///
    /// # Shapes
    /// - `h`: `[n_nodes, d]`
    /// - output: `[n_nodes, d]`
    ///
    /// # Panics
    /// If `h` does not have `n_nodes` rows (a programming error: the model and the graph are
    /// built together).
    pub fn apply(&self, h: Tensor<2>) -> Tensor<2> {
        let [n, d] = h.dims();
        assert_eq!(
            n, self.n_nodes,
            "Propagation::apply: {n} rows for a {}-node graph",
            self.n_nodes
        );
        let messages = h.select(0, self.src.clone()).mul(self.weight.clone());
        let device = messages.device();
        Tensor::<2>::zeros([n, d], &device).select_assign(
            0,
            self.dst.clone(),
            messages,
            IndexingUpdateOp::Add,
        )
    }
}

/// Configuration of a [`GraphConv`] layer.
#[derive(Config, Debug)]
pub struct GraphConvConfig {
    /// Input feature width.
    pub d_input: usize,
    /// Output feature width.
    pub d_output: usize,
}

impl GraphConvConfig {
    /// The layer with a Glorot-uniform weight `[d_input, d_output]` and no bias (Kipf &
    /// Welling's `gae` `GraphConvolution`), on `device`, drawn from Burn's device RNG.
    pub fn init(&self, device: &Device) -> GraphConv {
        GraphConv {
            linear: LinearConfig::new(self.d_input, self.d_output)
                .with_bias(false)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device),
        }
    }

    /// As [`GraphConvConfig::init`], with the weights `U(−a, a)`, `a = √(6 / (d_input +
    /// d_output))` (Glorot & Bengio 2010) drawn from `rng`: reproducible even when other threads
    /// use Burn's global RNG.
    pub fn init_with_rng(&self, device: &Device, rng: &mut StdRng) -> GraphConv {
        let a = (6.0 / (self.d_input + self.d_output) as f64).sqrt() as f32;
        let w: Vec<f32> = (0..self.d_input * self.d_output)
            .map(|_| rng.random_range(-a..=a))
            .collect();
        GraphConv {
            linear: Linear {
                weight: Param::from_data(TensorData::new(w, [self.d_input, self.d_output]), device),
                bias: None,
            },
        }
    }
}

/// A graph convolution `act(Â H W)` (Kipf & Welling 2017, Eq. 2).
#[derive(Module, Debug)]
pub struct GraphConv {
    /// The weight `W`, `[d_input, d_output]` (no bias).
    pub linear: Linear,
}

impl GraphConv {
    /// `act(Â H W)`; the cheaper of `Â (H W)` and `(Â H) W` is computed (same result).
    ///
    /// # Shapes
    /// - `h`: `[n_nodes, d_input]`
    /// - output: `[n_nodes, d_output]`
    pub fn forward(&self, adj: &Propagation, h: Tensor<2>, act: Activation) -> Tensor<2> {
        let [d_in, d_out] = self.linear.weight.dims();
        let out = if d_out <= d_in {
            adj.apply(self.linear.forward(h))
        } else {
            self.linear.forward(adj.apply(h))
        };
        act.apply(out)
    }
}

/// Configuration of a [`GraphVae`] (Graph-DiffVAE).
#[derive(Config, Debug)]
pub struct GraphVaeConfig {
    /// Number of node features (genes, e.g. 2000 min-max scaled HVGs).
    pub n_features: usize,
    /// Width of the hidden graph convolutions of encoder and decoder (paper: 512).
    #[config(default = 512)]
    pub hidden: usize,
    /// Latent dimension (paper: 50).
    #[config(default = 50)]
    pub n_latent: usize,
}

/// Graph-DiffVAE. Create with [`GraphVaeConfig::init`].
#[derive(Module, Debug)]
pub struct GraphVae {
    enc_hidden: GraphConv,
    enc_mu: GraphConv,
    enc_logvar: GraphConv,
    dec_hidden: GraphConv,
    dec_out: GraphConv,
}

/// What [`GraphVae::forward`] returns.
#[derive(Debug, Clone)]
pub struct GraphVaeOutput {
    /// Posterior mean μ `[n_nodes, n_latent]`.
    pub mu: Tensor<2>,
    /// Posterior log-variance log σ² `[n_nodes, n_latent]` (clamped to [−10, 10]).
    pub logvar: Tensor<2>,
    /// The node embedding `Z* = (Z′ + Z) / 2` whose inner products are the edge logits,
    /// `[n_nodes, n_latent]`.
    pub z_star: Tensor<2>,
}

impl GraphVaeConfig {
    /// Builds the model on `device` (weights from Burn's device RNG).
    pub fn init(&self, device: &Device) -> GraphVae {
        let conv = |a, b| GraphConvConfig::new(a, b).init(device);
        GraphVae {
            enc_hidden: conv(self.n_features, self.hidden),
            enc_mu: conv(self.hidden, self.n_latent),
            enc_logvar: conv(self.hidden, self.n_latent),
            dec_hidden: conv(self.n_latent + self.n_features, self.hidden),
            dec_out: conv(self.hidden, self.n_latent),
        }
    }

    /// Builds the model on `device` with Glorot-uniform weights drawn from a `StdRng` seeded
    /// with `seed` ([`GraphConvConfig::init_with_rng`]): the same seed gives the same weights
    /// whatever else runs in the process.
    pub fn init_seeded(&self, device: &Device, seed: u64) -> GraphVae {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut conv = |a, b| GraphConvConfig::new(a, b).init_with_rng(device, &mut rng);
        GraphVae {
            enc_hidden: conv(self.n_features, self.hidden),
            enc_mu: conv(self.hidden, self.n_latent),
            enc_logvar: conv(self.hidden, self.n_latent),
            dec_hidden: conv(self.n_latent + self.n_features, self.hidden),
            dec_out: conv(self.hidden, self.n_latent),
        }
    }
}

impl GraphVae {
    /// Posterior parameters `(μ, log σ²)` of `q(Z | X, Â)`.
    ///
    /// # Shapes
    /// - `x`: `[n_nodes, n_features]`
    /// - output: `([n_nodes, n_latent], [n_nodes, n_latent])`
    pub fn encode(&self, adj: &Propagation, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let h = self.enc_hidden.forward(adj, x, Activation::Relu);
        let mu = self.enc_mu.forward(adj, h.clone(), Activation::None);
        let logvar = self
            .enc_logvar
            .forward(adj, h, Activation::None)
            .clamp(-10.0, 10.0);
        (mu, logvar)
    }

    /// The decoder's node embedding `Z* = (Â ReLU(Â [Z | X] W₂) W₃ + Z) / 2`.
    ///
    /// # Shapes
    /// - `z`: `[n_nodes, n_latent]`, `x`: `[n_nodes, n_features]`
    /// - output: `[n_nodes, n_latent]`
    pub fn decode(&self, adj: &Propagation, z: Tensor<2>, x: Tensor<2>) -> Tensor<2> {
        let h = self
            .dec_hidden
            .forward(adj, Tensor::cat(vec![z.clone(), x], 1), Activation::Relu);
        let z_prime = self.dec_out.forward(adj, h, Activation::None);
        z_prime.add(z).mul_scalar(0.5)
    }

    /// Encode, reparameterise `Z = μ + exp(½ log σ²) ⊙ ε`, decode. With `eps = None` the
    /// posterior mean is decoded (`Z = μ`; evaluation).
    ///
    /// # Shapes
    /// - `x`: `[n_nodes, n_features]`, `eps`: `[n_nodes, n_latent]`
    pub fn forward(
        &self,
        adj: &Propagation,
        x: Tensor<2>,
        eps: Option<Tensor<2>>,
    ) -> GraphVaeOutput {
        let (mu, logvar) = self.encode(adj, x.clone());
        let z = match eps {
            Some(e) => mu.clone().add(logvar.clone().mul_scalar(0.5).exp().mul(e)),
            None => mu.clone(),
        };
        let z_star = self.decode(adj, z, x);
        GraphVaeOutput { mu, logvar, z_star }
    }
}

/// `softplus(x) = log(1 + eˣ)`, computed stably as `max(x, 0) + log1p(e^{−|x|})`.
fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let pos = x.clone().clamp_min(0.0);
    pos.add(x.abs().neg().exp().log1p())
}

/// The GAE reconstruction loss over all `N²` ordered node pairs (dense; for `N` up to a few
/// thousand):
/// `norm / N² · Σ_ij [pos_weight · y_ij · softplus(−x_ij) + (1 − y_ij) · softplus(x_ij)]`
/// with logits `x = Z* Z*ᵀ` (TensorFlow's `weighted_cross_entropy_with_logits`, Kipf &
/// Welling 2016's `gae/optimizer.py`).
///
/// # Shapes
/// - `z_star`: `[N, d]`; `labels`: `[N, N]` with 1 for an edge (self-loops included) and 0
///   otherwise
/// - output: a scalar `[1]` (nats per pair, times `norm`)
pub fn weighted_bce_dense(
    z_star: Tensor<2>,
    labels: Tensor<2>,
    pos_weight: f64,
    norm: f64,
) -> Tensor<1> {
    let [n, _] = z_star.dims();
    let logits = z_star.clone().matmul(z_star.transpose());
    let pos = softplus(logits.clone().neg())
        .mul(labels.clone())
        .mul_scalar(pos_weight);
    let neg = softplus(logits).mul(labels.neg().add_scalar(1.0));
    pos.add(neg).sum().mul_scalar(norm / (n as f64 * n as f64))
}

/// An unbiased estimate of [`weighted_bce_dense`] that never forms the `N × N` matrix: the
/// exact sum over the positive pairs plus the negative sum estimated from a uniform sample of
/// non-edges, re-weighted by `neg_scale = #non-edges / #sampled`:
/// `norm / N² · [pos_weight · Σ_pos softplus(−x) + neg_scale · Σ_sampled softplus(x)]`.
///
/// `pos_*` are the ordered positive pairs (both directions of each edge and the self-loops),
/// `neg_*` the sampled ordered non-edges, both as node indices `[n_pairs]` on `z_star`'s
/// device.
///
/// # Shapes
/// - `z_star`: `[N, d]`; output: a scalar `[1]`
#[allow(clippy::too_many_arguments)]
pub fn weighted_bce_pairs(
    z_star: Tensor<2>,
    pos_i: Tensor<1, Int>,
    pos_j: Tensor<1, Int>,
    neg_i: Tensor<1, Int>,
    neg_j: Tensor<1, Int>,
    pos_weight: f64,
    neg_scale: f64,
    norm: f64,
) -> Tensor<1> {
    let [n, _] = z_star.dims();
    let pos = pair_logits(z_star.clone(), pos_i, pos_j);
    let neg = pair_logits(z_star, neg_i, neg_j);
    softplus(pos.neg())
        .sum()
        .mul_scalar(pos_weight)
        .add(softplus(neg).sum().mul_scalar(neg_scale))
        .mul_scalar(norm / (n as f64 * n as f64))
}

/// The logits `z*_i · z*_j` of the pairs `(i[p], j[p])`.
///
/// # Shapes
/// - `z_star`: `[N, d]`; `i`, `j`: `[n_pairs]`; output: `[n_pairs]`
pub fn pair_logits(z_star: Tensor<2>, i: Tensor<1, Int>, j: Tensor<1, Int>) -> Tensor<1> {
    let a = z_star.clone().select(0, i);
    let b = z_star.select(0, j);
    a.mul(b).sum_dim(1).squeeze_dim(1)
}

/// The KL term of the GAE objective: `KL(q(Z) ‖ N(0, I))` summed over latent dimensions,
/// averaged over nodes and divided by the number of nodes `N`,
/// `−½ / N · mean_i Σ_k (1 + log σ²_ik − μ²_ik − σ²_ik)` (Kipf & Welling 2016, `gae` code).
///
/// # Shapes
/// `mu`, `logvar`: `[N, n_latent]`; output: a scalar `[1]` (nats)
pub fn kl_per_node(mu: Tensor<2>, logvar: Tensor<2>) -> Tensor<1> {
    let [n, _] = mu.dims();
    let nf = n as f64;
    logvar
        .clone()
        .add_scalar(1.0)
        .sub(mu.square())
        .sub(logvar.exp())
        .sum()
        .mul_scalar(-0.5 / (nf * nf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(t: Tensor<2>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    /// A 4-node graph with an asymmetric weighted matrix and a repeated pair.
    fn toy() -> (usize, Vec<usize>, Vec<usize>, Vec<f32>) {
        let src = vec![0, 1, 2, 3, 0, 2, 3, 3];
        let dst = vec![0, 0, 1, 2, 3, 3, 1, 1];
        let w = vec![0.5, 0.25, 1.0, -0.75, 2.0, 0.1, 0.3, 0.2];
        (4, src, dst, w)
    }

    fn dense_of(n: usize, src: &[usize], dst: &[usize], w: &[f32]) -> Vec<f32> {
        let mut a = vec![0.0; n * n];
        for ((&s, &d), &v) in src.iter().zip(dst).zip(w) {
            a[d * n + s] += v;
        }
        a
    }

    #[test]
    fn sparse_propagation_matches_dense_product_and_its_gradient() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let ad = device.clone().autodiff();
        let (n, src, dst, w) = toy();
        let p = Propagation::new(n, &src, &dst, &w, &ad).unwrap();
        assert_eq!((p.n_nodes(), p.n_edges()), (4, 8));
        let h_data: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let g_data: Vec<f32> = (0..12).map(|i| (i as f32 * 0.11).cos()).collect();
        let a = Tensor::<2>::from_data(TensorData::new(dense_of(n, &src, &dst, &w), [n, n]), &ad);
        let h_sparse =
            Tensor::<2>::from_data(TensorData::new(h_data.clone(), [n, 3]), &ad).require_grad();
        let h_dense =
            Tensor::<2>::from_data(TensorData::new(h_data.clone(), [n, 3]), &ad).require_grad();
        let g = Tensor::<2>::from_data(TensorData::new(g_data.clone(), [n, 3]), &ad);
        let out_s = p.apply(h_sparse.clone());
        let out_d = a.matmul(h_dense.clone());
        for (x, y) in host(out_s.clone()).iter().zip(host(out_d.clone())) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        // d/dH Σ (ÂH ⊙ G) = Âᵀ G, through select + select_assign.
        let gs = out_s.mul(g.clone()).sum().backward();
        let gd = out_d.mul(g).sum().backward();
        let grad_s = host(h_sparse.grad(&gs).unwrap());
        let grad_d = host(h_dense.grad(&gd).unwrap());
        // The analytic gradient Âᵀ G.
        let a_host = dense_of(n, &src, &dst, &w);
        for i in 0..n {
            for c in 0..3 {
                let want: f32 = (0..n).map(|r| a_host[r * n + i] * g_data[r * 3 + c]).sum();
                assert!((grad_s[i * 3 + c] - want).abs() < 1e-5);
                assert!((grad_d[i * 3 + c] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn seeded_init_is_reproducible_and_glorot_bounded() {
        let _rng = crate::test_rng_lock();
        let d = Device::default();
        let cfg = GraphVaeConfig::new(6).with_hidden(8).with_n_latent(3);
        let w = |m: &GraphVae| host(m.enc_hidden.linear.weight.val());
        let (a, b, c) = (
            cfg.init_seeded(&d, 1),
            cfg.init_seeded(&d, 1),
            cfg.init_seeded(&d, 2),
        );
        assert_eq!(w(&a), w(&b));
        assert_ne!(w(&a), w(&c));
        let bound = (6.0f32 / 14.0).sqrt();
        assert!(w(&a).iter().all(|v| v.abs() <= bound));
        assert_eq!(a.dec_hidden.linear.weight.dims(), [9, 8]);
        assert!(a.enc_mu.linear.bias.is_none());
    }

    #[test]
    fn propagation_rejects_bad_edge_lists() {
        let _rng = crate::test_rng_lock();
        let d = Device::default();
        assert!(Propagation::new(0, &[], &[], &[], &d).is_err());
        assert!(Propagation::new(2, &[0], &[0, 1], &[1.0], &d).is_err());
        assert!(Propagation::new(2, &[2], &[0], &[1.0], &d).is_err());
        assert!(Propagation::new(2, &[0], &[0], &[f32::NAN], &d).is_err());
    }

    #[test]
    fn model_shapes_and_gradients_reach_every_layer() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let ad = device.clone().autodiff();
        let (n, src, dst, w) = toy();
        let p = Propagation::new(n, &src, &dst, &w, &ad).unwrap();
        let m = GraphVaeConfig::new(6)
            .with_hidden(8)
            .with_n_latent(3)
            .init(&ad);
        let x = Tensor::<2>::random([n, 6], burn::tensor::Distribution::Default, &ad);
        let eps = Tensor::<2>::random([n, 3], burn::tensor::Distribution::Default, &ad);
        let out = m.forward(&p, x, Some(eps));
        assert_eq!(out.z_star.dims(), [4, 3]);
        assert_eq!(out.mu.dims(), [4, 3]);
        let labels = Tensor::<2>::eye(n, &ad);
        let loss =
            weighted_bce_dense(out.z_star, labels, 3.0, 0.7).add(kl_per_node(out.mu, out.logvar));
        let grads = loss.backward();
        for (name, w) in [
            ("enc_hidden", &m.enc_hidden),
            ("enc_mu", &m.enc_mu),
            ("enc_logvar", &m.enc_logvar),
            ("dec_hidden", &m.dec_hidden),
            ("dec_out", &m.dec_out),
        ] {
            let g = w.linear.weight.grad(&grads).expect(name);
            let s: f32 = g.abs().sum().into_scalar();
            assert!(s > 0.0 && s.is_finite(), "{name}: |grad| = {s}");
        }
    }

    #[test]
    fn pair_loss_equals_dense_loss_when_all_pairs_are_listed() {
        let _rng = crate::test_rng_lock();
        let device = Device::default();
        let n = 5;
        let z = Tensor::<2>::from_data(
            TensorData::new((0..15).map(|i| (i as f32 * 0.7).sin()).collect(), [n, 3]),
            &device,
        );
        let edges = [(0usize, 1usize), (1, 2), (3, 4)];
        let mut lab = vec![0.0f32; n * n];
        let (mut pi, mut pj, mut ni, mut nj) = (vec![], vec![], vec![], vec![]);
        for i in 0..n {
            lab[i * n + i] = 1.0;
        }
        for &(a, b) in &edges {
            lab[a * n + b] = 1.0;
            lab[b * n + a] = 1.0;
        }
        for i in 0..n {
            for j in 0..n {
                if lab[i * n + j] > 0.0 {
                    pi.push(i as i64);
                    pj.push(j as i64);
                } else {
                    ni.push(i as i64);
                    nj.push(j as i64);
                }
            }
        }
        let int = |v: Vec<i64>| {
            let len = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [len]), &device)
        };
        let labels = Tensor::<2>::from_data(TensorData::new(lab, [n, n]), &device);
        let dense: f32 = weighted_bce_dense(z.clone(), labels, 2.5, 0.8).into_scalar();
        let pairs: f32 =
            weighted_bce_pairs(z, int(pi), int(pj), int(ni), int(nj), 2.5, 1.0, 0.8).into_scalar();
        assert!((dense - pairs).abs() < 1e-5, "{dense} vs {pairs}");
        // softplus is stable for large logits.
        let big = Tensor::<1>::from_data([-200.0f32, 0.0, 200.0], &device);
        let v = softplus(big).into_data().try_to_vec::<f32>().unwrap();
        assert!(
            v[0].abs() < 1e-6 && (v[1] - 2f32.ln()).abs() < 1e-6 && (v[2] - 200.0).abs() < 1e-3
        );
    }
}
