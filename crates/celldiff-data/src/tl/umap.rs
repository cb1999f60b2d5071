//! A 2-D UMAP layout of a neighbourhood graph (McInnes, Healy & Melville 2018, arXiv
//! 1802.03426), as scanpy's `sc.tl.umap` (umap-learn `simplicial_set_embedding` →
//! `optimize_layout_euclidean`), written here because the crate `umap-rs` 0.4.5 has a gradient
//! bug: in `src/layout/optimize_layout_euclidean.rs` both gradient denominators use
//! `a·d^{2b}·d² + 1` where `a·d^{2b} + 1` is right (its kNN preservation is 0.10 where scanpy
//! reaches 0.39; `/work/shared/CRATES.md`).
//!
//! # Method (umap-learn 0.5 defaults, as scanpy calls it)
//! - The curve `1 / (1 + a d^{2b})` is fit by least squares to `exp(−(d − min_dist)/spread)`
//!   (1 below `min_dist`) on 300 points of `[0, 3·spread]` ([`find_ab_params`], umap-learn
//!   `find_ab_params`); scanpy's `min_dist = 0.5`, `spread = 1` give `a ≈ 0.5830`,
//!   `b ≈ 1.3342`.
//! - Edges with weight `< max / n_epochs` are dropped; edge `e` is sampled every
//!   `max / w_e` epochs (`make_epochs_per_sample`), with `negative_sample_rate` (5) uniformly
//!   drawn negative samples per positive sample.
//! - Attraction along a sampled edge at squared distance `d²`: gradient coefficient
//!   `−2ab d^{2(b−1)} / (a d^{2b} + 1)`, moving both ends; repulsion from a negative sample:
//!   `2γb / ((0.001 + d²)(a d^{2b} + 1))`, moving the head only; each gradient component is
//!   clipped to `[−4, 4]`; the learning rate (1) decays linearly to 0 over `n_epochs` (500 for
//!   at most 10,000 cells, else 200).
//! - **Initialisation (differs from scanpy):** scanpy's default is the spectral embedding of
//!   the graph; here the layout starts from the first two columns of the given coordinates
//!   (the PCA scores, umap-learn's `init="pca"`), scaled so the largest absolute value is 10,
//!   plus seeded Gaussian noise of standard deviation 1e-4 (umap-learn `noisy_scale_coords`),
//!   then min-max scaled to `[0, 10]` per axis as umap-learn does before optimising.
//!
//! The SGD is sequential (one thread) and seeded (a [`StdRng`] for the initial noise, which
//! also seeds the `taus88` Tausworthe generator umap-learn's `tau_rand_int` uses for negative
//! samples), so the layout is a pure function of the graph, the initial coordinates and the
//! options. umap-learn's random stream itself is not reproduced; layouts agree in quality, not
//! coordinates.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};
use sprs::CsMat;

use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};

/// Gradient clipping bound (umap-learn `clip`).
const CLIP: f32 = 4.0;
/// Standard deviation of the initial noise (umap-learn `noisy_scale_coords(noise=0.0001)`).
const INIT_NOISE: f64 = 1e-4;

/// Parameters of [`umap_layout`]; the default is scanpy's `sc.tl.umap` (with a PCA instead of
/// a spectral initialisation, see the module docs).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UmapOptions {
    /// SGD epochs; `None` = umap-learn's default, 500 for at most 10,000 cells, else 200.
    pub n_epochs: Option<usize>,
    /// Minimum distance between embedded points (scanpy `min_dist`, default 0.5), `0 ≤
    /// min_dist ≤ spread` in practice (must be finite and `≥ 0`).
    pub min_dist: f64,
    /// Scale of the embedded points (scanpy `spread`, default 1), `> 0`.
    pub spread: f64,
    /// Negative samples per positive sample (scanpy `negative_sample_rate`, default 5).
    pub negative_sample_rate: usize,
    /// Initial SGD learning rate (scanpy `alpha`, default 1), `> 0`.
    pub learning_rate: f64,
    /// Weight of the repulsive term γ (scanpy `gamma`, default 1), `≥ 0`.
    pub repulsion_strength: f64,
    /// The curve parameters `(a, b)`; `None` = [`find_ab_params`]`(spread, min_dist)`.
    pub ab: Option<(f64, f64)>,
    /// Seed of the initial noise and the negative sampling (scanpy `random_state`, default 0).
    pub seed: u64,
}

impl Default for UmapOptions {
    fn default() -> Self {
        Self {
            n_epochs: None,
            min_dist: 0.5,
            spread: 1.0,
            negative_sample_rate: 5,
            learning_rate: 1.0,
            repulsion_strength: 1.0,
            ab: None,
            seed: 0,
        }
    }
}

impl UmapOptions {
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Param`] naming the option: `n_epochs = Some(0)`, `spread ≤ 0`, `min_dist < 0`,
    /// `learning_rate ≤ 0`, `repulsion_strength < 0`, `a ≤ 0` or `b ≤ 0`, or any of them not
    /// finite.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64| {
            Err(Error::Param(format!(
                "umap: {what} must be a finite {}, got {v}",
                if what == "min_dist" || what == "repulsion_strength" {
                    "number >= 0"
                } else {
                    "number > 0"
                }
            )))
        };
        if self.n_epochs == Some(0) {
            return Err(Error::Param("umap: n_epochs must be at least 1".into()));
        }
        if !(self.spread.is_finite() && self.spread > 0.0) {
            return bad("spread", self.spread);
        }
        if !(self.min_dist.is_finite() && self.min_dist >= 0.0) {
            return bad("min_dist", self.min_dist);
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad("learning_rate", self.learning_rate);
        }
        if !(self.repulsion_strength.is_finite() && self.repulsion_strength >= 0.0) {
            return bad("repulsion_strength", self.repulsion_strength);
        }
        if let Some((a, b)) = self.ab {
            if !(a.is_finite() && a > 0.0) {
                return bad("a", a);
            }
            if !(b.is_finite() && b > 0.0) {
                return bad("b", b);
            }
        }
        Ok(())
    }
}

/// Fits `(a, b)` of the UMAP output kernel `1 / (1 + a d^{2b})` by nonlinear least squares
/// to `exp(−(d − min_dist)/spread)` (1 for `d < min_dist`) on 300 evenly spaced `d` in
/// `[0, 3·spread]`: umap-learn `find_ab_params(spread, min_dist)` (scipy `curve_fit` from
/// `(1, 1)`; here Levenberg–Marquardt from `(1, 1)` to the same minimum). Distances are in
/// embedding units. scanpy's defaults `spread = 1`, `min_dist = 0.5` give
/// `(0.5830, 1.3342)`.
///
/// # Errors
/// - [`Error::Param`]: `spread` not finite or `≤ 0`, `min_dist` not finite or `< 0`.
/// - [`Error::Internal`]: the fit did not reach a finite `a, b > 0`.
pub fn find_ab_params(spread: f64, min_dist: f64) -> Result<(f64, f64)> {
    if !(spread.is_finite() && spread > 0.0) {
        return Err(Error::Param(format!(
            "umap: spread must be a finite number > 0, got {spread}"
        )));
    }
    if !(min_dist.is_finite() && min_dist >= 0.0) {
        return Err(Error::Param(format!(
            "umap: min_dist must be a finite number >= 0, got {min_dist}"
        )));
    }
    let n = 300;
    let xs: Vec<f64> = (0..n)
        .map(|i| 3.0 * spread * i as f64 / (n - 1) as f64)
        .collect();
    let ys: Vec<f64> = xs
        .iter()
        .map(|&x| {
            if x < min_dist {
                1.0
            } else {
                (-(x - min_dist) / spread).exp()
            }
        })
        .collect();
    let sse = |a: f64, b: f64| -> f64 {
        xs.iter()
            .zip(&ys)
            .map(|(&x, &y)| {
                let r = 1.0 / (1.0 + a * x.powf(2.0 * b)) - y;
                r * r
            })
            .sum()
    };
    let (mut a, mut b) = (1.0f64, 1.0f64);
    let mut cost = sse(a, b);
    let mut lambda = 1e-3;
    for _ in 0..500 {
        // Normal equations JᵀJ δ = −Jᵀr with the analytic Jacobian.
        let (mut jaa, mut jab, mut jbb, mut ga, mut gb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&x, &y) in xs.iter().zip(&ys) {
            let u = if x > 0.0 { x.powf(2.0 * b) } else { 0.0 };
            let f = 1.0 / (1.0 + a * u);
            let r = f - y;
            let da = -u * f * f;
            let db = if x > 0.0 {
                -a * f * f * 2.0 * x.ln() * u
            } else {
                0.0
            };
            jaa += da * da;
            jab += da * db;
            jbb += db * db;
            ga += da * r;
            gb += db * r;
        }
        let mut improved = false;
        for _ in 0..30 {
            let (m11, m22) = (jaa * (1.0 + lambda), jbb * (1.0 + lambda));
            let det = m11 * m22 - jab * jab;
            if det.abs() < 1e-300 {
                lambda *= 10.0;
                continue;
            }
            let dla = (-ga * m22 + gb * jab) / det;
            let dlb = (-gb * m11 + ga * jab) / det;
            let (na, nb) = (a + dla, b + dlb);
            let c = if na > 0.0 && nb > 0.0 {
                sse(na, nb)
            } else {
                f64::INFINITY
            };
            if c.is_finite() && c <= cost {
                let rel = (cost - c) / cost.max(1e-300);
                let step = (dla / a).abs().max((dlb / b).abs());
                a = na;
                b = nb;
                cost = c;
                lambda = (lambda / 10.0).max(1e-12);
                improved = rel > 1e-15 || step > 1e-12;
                break;
            }
            lambda *= 10.0;
        }
        if !improved {
            break;
        }
    }
    if !(a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0) {
        return Err(Error::Internal(format!(
            "umap: find_ab_params(spread={spread}, min_dist={min_dist}) did not converge \
             (a = {a}, b = {b})"
        )));
    }
    Ok((a, b))
}

/// Lays out the nodes of a fuzzy graph in 2-D by UMAP's stochastic gradient descent:
/// umap-learn `simplicial_set_embedding(graph, n_components=2, ...)` with
/// `optimize_layout_euclidean`, as scanpy's `sc.tl.umap` (see the module docs for the method
/// and the initialisation, which differs from scanpy's spectral default).
///
/// - `graph`: square `[n_cells, n_cells]` non-negative weights, normally the symmetric UMAP
///   connectivities of [`crate::tl::neighbors::neighbors`]; every stored entry `(i, j)` is one
///   directed edge.
/// - `init`: `[n_cells, ≥ 2]` starting coordinates; the first two columns are used (e.g. the
///   PCA scores `[n_cells, n_pcs]`).
///
/// Returns the layout `[n_cells, 2]` (scanpy `obsm["X_umap"]`), in embedding units (initially
/// `[0, 10]` per axis). Deterministic for a given `opts.seed`.
///
/// # Errors
/// - [`Error::Param`]: invalid `opts` ([`UmapOptions::validate`]).
/// - [`Error::InvalidInput`]: `graph` not square, `init` with another number of rows or fewer
///   than 2 columns, negative or non-finite weights or coordinates, or a graph without any
///   positive edge weight.
/// - [`Error::Internal`]: [`find_ab_params`] failed.
pub fn umap_layout(
    graph: &CsMat<f32>,
    init: &DenseMatrix,
    opts: &UmapOptions,
) -> Result<DenseMatrix> {
    opts.validate()?;
    let n = graph.rows();
    if graph.cols() != n {
        return Err(Error::InvalidInput(format!(
            "umap: the graph must be square, got [{n}, {}]",
            graph.cols()
        )));
    }
    if init.n_rows != n || init.n_cols < 2 || init.data.len() != init.n_rows * init.n_cols {
        return Err(Error::InvalidInput(format!(
            "umap: initial coordinates [{}, {}] for a graph of {n} cells (need [{n}, >= 2])",
            init.n_rows, init.n_cols
        )));
    }
    if let Some(p) = init.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "umap: initial coordinate {} of cell {} is not finite",
            init.data[p],
            p / init.n_cols
        )));
    }
    let (a, b) = match opts.ab {
        Some(ab) => ab,
        None => find_ab_params(opts.spread, opts.min_dist)?,
    };
    let n_epochs = opts.n_epochs.unwrap_or(if n <= 10_000 { 500 } else { 200 });

    // Edges (COO order of the CSR: by head, then tail), weights thresholded at max / n_epochs.
    let csr;
    let g = if graph.is_csr() {
        graph
    } else {
        csr = graph.to_csr();
        &csr
    };
    let mut w_max = 0.0f32;
    for (i, row) in g.outer_iterator().enumerate() {
        for (j, &w) in row.iter() {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::InvalidInput(format!(
                    "umap: graph weight {w} at ({i}, {j}) is not a finite non-negative number"
                )));
            }
            w_max = w_max.max(w);
        }
    }
    if w_max <= 0.0 {
        return Err(Error::InvalidInput(
            "umap: the graph has no edge with a positive weight".into(),
        ));
    }
    let threshold = w_max / n_epochs as f32;
    let mut head: Vec<u32> = Vec::new();
    let mut tail: Vec<u32> = Vec::new();
    let mut epochs_per_sample: Vec<f64> = Vec::new();
    for (i, row) in g.outer_iterator().enumerate() {
        for (j, &w) in row.iter() {
            if w >= threshold && w > 0.0 {
                head.push(i as u32);
                tail.push(j as u32);
                // make_epochs_per_sample: n_epochs / (n_epochs · w / w_max).
                let n_samples = n_epochs as f64 * (w as f64 / w_max as f64);
                epochs_per_sample.push(n_epochs as f64 / n_samples);
            }
        }
    }

    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut emb = initial_layout(init, &mut rng);
    let mut taus = Taus88::from_rng(&mut rng);

    // optimize_layout_euclidean (move_other = True, one thread).
    let (a32, b32) = (a as f32, b as f32);
    let gamma = opts.repulsion_strength as f32;
    let neg_rate = opts.negative_sample_rate as f64;
    let epochs_per_negative_sample: Vec<f64> =
        epochs_per_sample.iter().map(|e| e / neg_rate).collect();
    let mut next_negative = epochs_per_negative_sample.clone();
    let mut next_sample = epochs_per_sample.clone();
    let mut alpha = opts.learning_rate as f32;
    for epoch in 0..n_epochs {
        let nf = epoch as f64;
        for e in 0..head.len() {
            if next_sample[e] > nf {
                continue;
            }
            let (j, k) = (head[e] as usize, tail[e] as usize);
            let mut cur = [emb[2 * j], emb[2 * j + 1]];
            let mut oth = [emb[2 * k], emb[2 * k + 1]];
            let d2 = sq(cur[0] - oth[0]) + sq(cur[1] - oth[1]);
            let coeff = if d2 > 0.0 {
                let p = d2.powf(b32 - 1.0);
                -2.0 * a32 * b32 * p / (a32 * p * d2 + 1.0)
            } else {
                0.0
            };
            for d in 0..2 {
                let grad = clip(coeff * (cur[d] - oth[d]));
                cur[d] += grad * alpha;
                oth[d] -= grad * alpha;
            }
            if k != j {
                emb[2 * k] = oth[0];
                emb[2 * k + 1] = oth[1];
            } else {
                cur = oth;
            }
            next_sample[e] += epochs_per_sample[e];
            let n_neg = ((nf - next_negative[e]) / epochs_per_negative_sample[e]) as i64;
            for _ in 0..n_neg.max(0) {
                let kk = taus.below(n);
                if kk == j {
                    // umap-learn: distance 0 to itself → skipped.
                    continue;
                }
                let o = [emb[2 * kk], emb[2 * kk + 1]];
                let d2 = sq(cur[0] - o[0]) + sq(cur[1] - o[1]);
                if d2 > 0.0 {
                    let pb = d2.powf(b32);
                    let coeff = 2.0 * gamma * b32 / ((0.001 + d2) * (a32 * pb + 1.0));
                    if coeff > 0.0 {
                        for d in 0..2 {
                            cur[d] += clip(coeff * (cur[d] - o[d])) * alpha;
                        }
                    }
                }
            }
            next_negative[e] += n_neg as f64 * epochs_per_negative_sample[e];
            emb[2 * j] = cur[0];
            emb[2 * j + 1] = cur[1];
        }
        alpha = opts.learning_rate as f32 * (1.0 - epoch as f32 / n_epochs as f32);
    }
    if let Some(p) = emb.iter().position(|v| !v.is_finite()) {
        return Err(Error::Internal(format!(
            "umap: the layout diverged (cell {} has a non-finite coordinate)",
            p / 2
        )));
    }
    DenseMatrix::from_vec(n, 2, emb)
}

/// L'Ecuyer's three-component Tausworthe generator `taus88` (umap-learn's `tau_rand_int`),
/// seeded from a [`StdRng`]: cheap uniform draws for the negative sampling.
struct Taus88([u32; 3]);

impl Taus88 {
    fn from_rng(rng: &mut StdRng) -> Self {
        // Seeds must exceed 1, 7 and 15 respectively.
        let mut s = [0u32; 3];
        for (v, min) in s.iter_mut().zip([2u32, 8, 16]) {
            *v = rng.random::<u32>().max(min);
        }
        Taus88(s)
    }

    #[inline]
    fn next_u32(&mut self) -> u32 {
        let s = &mut self.0;
        s[0] = ((s[0] & 0xFFFF_FFFE) << 12) ^ (((s[0] << 13) ^ s[0]) >> 19);
        s[1] = ((s[1] & 0xFFFF_FFF8) << 4) ^ (((s[1] << 2) ^ s[1]) >> 25);
        s[2] = ((s[2] & 0xFFFF_FFF0) << 17) ^ (((s[2] << 3) ^ s[2]) >> 11);
        s[0] ^ s[1] ^ s[2]
    }

    /// A draw from `0..n` (`n ≤ 2³²`; multiply-shift reduction).
    #[inline]
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u32() as u64 * n as u64) >> 32) as usize
    }
}

#[inline]
fn sq(x: f32) -> f32 {
    x * x
}

#[inline]
fn clip(x: f32) -> f32 {
    x.clamp(-CLIP, CLIP)
}

/// The first two columns of `init`, scaled so that max |value| = 10, plus N(0, 1e-4) noise
/// (umap-learn `noisy_scale_coords`), then min-max scaled to `[0, 10]` per axis; row-major
/// `[n, 2]`.
fn initial_layout(init: &DenseMatrix, rng: &mut StdRng) -> Vec<f32> {
    let n = init.n_rows;
    let mut c: Vec<f64> = Vec::with_capacity(2 * n);
    for i in 0..n {
        let r = init.row(i);
        c.push(r[0] as f64);
        c.push(r[1] as f64);
    }
    let max_abs = c.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let expansion = if max_abs > 0.0 { 10.0 / max_abs } else { 1.0 };
    for v in &mut c {
        let z: f64 = rng.sample(StandardNormal);
        *v = (*v * expansion) as f32 as f64 + INIT_NOISE * z;
    }
    let mut out = vec![0.0f32; 2 * n];
    for d in 0..2 {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for i in 0..n {
            lo = lo.min(c[2 * i + d]);
            hi = hi.max(c[2 * i + d]);
        }
        let range = hi - lo;
        for i in 0..n {
            out[2 * i + d] = if range > 0.0 {
                (10.0 * (c[2 * i + d] - lo) / range) as f32
            } else {
                0.0
            };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ReadOptions, read};
    use crate::tl::leiden::{ClusterOptions, cluster_pipeline};
    use crate::tl::neighbors::knn_euclidean;

    #[test]
    fn ab_params_match_umap_learn() {
        // umap-learn find_ab_params(1.0, 0.5) (scanpy's defaults) and (1.0, 0.1) (umap's).
        let (a, b) = find_ab_params(1.0, 0.5).unwrap();
        assert!(
            (a - 0.5830).abs() < 2e-4 && (b - 1.3342).abs() < 2e-4,
            "{a} {b}"
        );
        let (a, b) = find_ab_params(1.0, 0.1).unwrap();
        assert!(
            (a - 1.5769).abs() < 2e-3 && (b - 0.8951).abs() < 2e-3,
            "{a} {b}"
        );
        assert!(matches!(find_ab_params(0.0, 0.5), Err(Error::Param(_))));
        assert!(matches!(find_ab_params(1.0, -0.1), Err(Error::Param(_))));
    }

    #[test]
    fn layout_rejects_bad_input() {
        let g: CsMat<f32> = CsMat::new((2, 2), vec![0, 1, 2], vec![1, 0], vec![1.0, 1.0]);
        let init = DenseMatrix::zeros(2, 2);
        let o = UmapOptions::default();
        assert!(umap_layout(&g, &init, &o).is_ok());
        assert!(matches!(
            umap_layout(&g, &DenseMatrix::zeros(2, 1), &o),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            umap_layout(&g, &DenseMatrix::zeros(3, 2), &o),
            Err(Error::InvalidInput(_))
        ));
        let neg: CsMat<f32> = CsMat::new((2, 2), vec![0, 1, 2], vec![1, 0], vec![-1.0, 1.0]);
        assert!(matches!(
            umap_layout(&neg, &init, &o),
            Err(Error::InvalidInput(_))
        ));
        let empty: CsMat<f32> = CsMat::new((2, 2), vec![0, 0, 0], vec![], vec![]);
        assert!(matches!(
            umap_layout(&empty, &init, &o),
            Err(Error::InvalidInput(_))
        ));
        for bad in [
            UmapOptions {
                n_epochs: Some(0),
                ..UmapOptions::default()
            },
            UmapOptions {
                spread: 0.0,
                ..UmapOptions::default()
            },
            UmapOptions {
                learning_rate: f64::NAN,
                ..UmapOptions::default()
            },
            UmapOptions {
                ab: Some((-1.0, 1.0)),
                ..UmapOptions::default()
            },
        ] {
            assert!(matches!(umap_layout(&g, &init, &bad), Err(Error::Param(_))));
        }
    }

    /// Mean fraction of each cell's `k` nearest other cells in `a` that are among its `k`
    /// nearest other cells in `b`.
    fn knn_preservation(a: &DenseMatrix, b: &DenseMatrix, k: usize) -> f64 {
        let na = knn_euclidean(a, k + 1).unwrap();
        let nb = knn_euclidean(b, k + 1).unwrap();
        let mut tot = 0usize;
        for i in 0..a.n_rows {
            let sa = &na.row_indices(i)[1..];
            let sb = &nb.row_indices(i)[1..];
            tot += sa.iter().filter(|j| sb.contains(j)).count();
        }
        tot as f64 / (a.n_rows * k) as f64
    }

    #[test]
    fn layout_preserves_neighbours_on_pbmc68k_and_is_seeded() {
        let p = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad"
        ));
        assert!(p.exists(), "shared dataset missing: {}", p.display());
        let adata = read(p, &ReadOptions::default()).unwrap();
        let opts = ClusterOptions {
            umap: Some(UmapOptions::default()),
            ..ClusterOptions::default()
        };
        let t0 = std::time::Instant::now();
        let res = cluster_pipeline(&adata, &opts).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let layout = res.umap.as_ref().unwrap();
        assert_eq!((layout.n_rows, layout.n_cols), (700, 2));
        let pres = knn_preservation(&res.pca, layout, 15);
        // The same for the (scaled) PCA initialisation alone, and for a random layout.
        let init_pres = knn_preservation(&res.pca, &res.pca.select_cols(&[0, 1]), 15);
        eprintln!(
            "pbmc68k UMAP: 15-NN preservation {pres:.3} (PCA-2 init {init_pres:.3}, random \
             ≈ {:.3}); pipeline incl. layout {secs:.1}s",
            15.0 / 699.0
        );
        assert!(pres > 0.25, "kNN preservation {pres}");
        assert!(pres > init_pres, "{pres} vs init {init_pres}");
        // Same seed → identical layout; another seed → another layout.
        let g = &res.neighbors.connectivities;
        let again = umap_layout(g, &res.pca, &UmapOptions::default()).unwrap();
        assert_eq!(&again, layout);
        let other = umap_layout(
            g,
            &res.pca,
            &UmapOptions {
                seed: 1,
                ..UmapOptions::default()
            },
        )
        .unwrap();
        assert_ne!(&other, layout);
    }

    /// Timing of the layout on the 10k-cell mouse-brain subset (run with `--ignored
    /// --nocapture`).
    #[test]
    #[ignore]
    fn umap_timing_brain10k() {
        let p = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/data/mouse_brain_1m_10k_subset/brain_1m_10k_cells_1000_genes.h5ad"
        ));
        let adata = read(p, &ReadOptions::default()).unwrap();
        let mut opts = ClusterOptions::default();
        opts.preprocess.n_top_genes = Some(200);
        let res = cluster_pipeline(&adata, &opts).unwrap();
        let t0 = std::time::Instant::now();
        let layout = umap_layout(
            &res.neighbors.connectivities,
            &res.pca,
            &UmapOptions::default(),
        )
        .unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let pres = knn_preservation(&res.pca, &layout, 15);
        let g = &res.neighbors.connectivities;
        let w_max = g.data().iter().fold(0.0f32, |m, &w| m.max(w));
        let per_epoch: f64 = g
            .data()
            .iter()
            .filter(|&&w| w >= w_max / 500.0)
            .map(|&w| (w / w_max) as f64)
            .sum();
        eprintln!(
            "brain10k UMAP: {secs:.1}s for {} cells, {} graph entries, ~{:.1}M positive samples \
             (x 6 with negatives); 15-NN preservation {pres:.3}",
            layout.n_rows,
            g.nnz(),
            per_epoch * 500.0 / 1e6
        );
    }
}
