//! Principal component analysis, matching scanpy's `sc.pp.pca(adata, svd_solver="arpack")`
//! (sklearn `PCA(svd_solver="arpack")` on dense input): the data are centred per gene (no
//! scaling), and the exact top `n_comps` principal axes are returned.
//!
//! # Method
//! Deterministic and exact to machine precision (no random projections): with `Xc` the
//! centred `[n_cells, n_genes]` matrix in `f64`,
//! - if `n_genes <= n_cells`, the `[n_genes, n_genes]` scatter matrix `Xcᵀ Xc` is
//!   eigendecomposed; its top eigenvectors are the components;
//! - otherwise the `[n_cells, n_cells]` Gram matrix `Xc Xcᵀ = U Λ Uᵀ` is eigendecomposed and
//!   the components are `Xcᵀ u_k / sqrt(λ_k)`.
//!
//! The cross-product matrix is formed with a triangular GEMM (half the flops). Its top
//! eigenpairs come from block Krylov with full re-orthogonalisation and Rayleigh–Ritz
//! (`krylov_top_eigen`; ARPACK, behind scanpy's `"arpack"`, is the same method family),
//! accepted only once every Ritz pair's true residual `‖C x − θ x‖` is below `1e-12 · θ₁`;
//! for `min(n_cells, n_genes) ≤ 1024`, or when Krylov has not converged within
//! `min(m/2, max(16k, 512))` vectors (noise-dominated spectra), the full dense symmetric
//! eigendecomposition (faer `self_adjoint_eigen`) is used instead. Either way the result is
//! exact to ~1e-10 relative (tested against the dense solver) and deterministic (fixed
//! start block). Forming the cross-product squares the condition number, which in `f64`
//! costs nothing measurable for the leading components (relative error ≈ 1e-16 · λ₁/λ_k).
//! All linear algebra is [`faer`] (pure Rust, rayon-parallel; see `/work/shared/CRATES.md`).
//!
//! Timings (dev-profile test build, 2 shared cores; ignored test `pca_timing`): 10,000 ×
//! 1,000 → 50 in 0.8 s (dense path); 2,000 × 7,000 with a decaying spectrum in 0.75–1.5 s
//! (Krylov); Kang PBMC 3,950 × 2,000 in 1.2 s; 2,000 × 7,000 of 3 factors + uniform noise
//! (Krylov gives up, dense fallback) in 6 s. Not used: faer 0.24.4's matrix-free Lanczos
//! (`partial_self_adjoint_eigen`): fast, but it can spin forever in its re-orthogonalisation
//! loop (`operator/self_adjoint_eigen/mod.rs`, `loop { .. converged[i] = |r| < f·‖v‖ }`)
//! when the Krylov space breaks down: a >9-minute run on the Kang PBMC Gram matrix with
//! tolerance 1e-10 (gdb: inside that loop), and a hang on a synthetic 3-factor matrix.
//!
//! # Sign convention
//! Eigenvectors have an arbitrary sign. As sklearn ≥ 1.5 does for `svd_solver="arpack"`
//! (`svd_flip(u, v, u_based_decision=False)`), each component is flipped so that its entry of
//! largest absolute value (the first such entry on exact ties) is positive.

use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, Mat, MatRef, Par, Side};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};

/// A fitted PCA (scanpy `sc.pp.pca`, `svd_solver="arpack"`, `zero_center=True`).
#[derive(Debug, Clone)]
pub struct Pca {
    /// Per-gene mean of the training data, length `n_genes` (sklearn `mean_`).
    pub mean: Vec<f32>,
    /// Principal axes `[n_comps, n_genes]`, orthonormal rows, sorted by decreasing variance
    /// (sklearn `components_`, scanpy `adata.varm["PCs"].T`). Sign: see the module docs.
    pub components: DenseMatrix,
    /// Variance of the data along each component, `ddof = 1` (squared singular value
    /// `/ (n_cells - 1)`; sklearn `explained_variance_`, scanpy `uns["pca"]["variance"]`).
    pub explained_variance: Vec<f64>,
    /// `explained_variance` divided by the total variance (sum of the per-gene `ddof = 1`
    /// variances; sklearn `explained_variance_ratio_`). Sums to at most 1.
    pub explained_variance_ratio: Vec<f64>,
}

impl Pca {
    /// Fits a centred PCA with `n_comps` components to `x` (`[n_cells, n_genes]`, e.g.
    /// log1p-normalised expression).
    ///
    /// `n_comps` is clamped to `min(n_cells, n_genes) - 1` (the most scanpy's arpack solver
    /// allows; a centred matrix has rank at most `n_cells - 1`), with a `tracing` warning.
    ///
    /// If `n_cells < n_genes` and the data are rank-deficient, components beyond the rank
    /// (zero variance) are returned as zero vectors.
    ///
    /// # Errors
    /// - [`Error::Param`] if `n_comps == 0`.
    /// - [`Error::InvalidInput`] if `x` has fewer than 2 cells or genes, or holds NaN/Inf.
    /// - [`Error::Internal`] if the eigendecomposition does not converge.
    pub fn fit(x: &DenseMatrix, n_comps: usize) -> Result<Pca> {
        let (n, p) = (x.n_rows, x.n_cols);
        if n_comps == 0 {
            return Err(Error::Param("PCA: n_comps must be at least 1".into()));
        }
        if n < 2 || p < 2 {
            return Err(Error::InvalidInput(format!(
                "PCA needs at least 2 cells and 2 genes, got [{n}, {p}]"
            )));
        }
        if let Some(pos) = x.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "PCA input holds a non-finite value ({}) at cell {}, gene {}",
                x.data[pos],
                pos / p,
                pos % p
            )));
        }
        let max_comps = n.min(p) - 1;
        let k = if n_comps > max_comps {
            tracing::warn!(
                "PCA: n_comps = {n_comps} clamped to min(n_cells, n_genes) - 1 = {max_comps}"
            );
            max_comps
        } else {
            n_comps
        };

        // Per-gene means in f64.
        let mut mean = vec![0.0f64; p];
        for i in 0..n {
            for (m, &v) in mean.iter_mut().zip(x.row(i)) {
                *m += v as f64;
            }
        }
        for m in &mut mean {
            *m /= n as f64;
        }
        let xc = Mat::<f64>::from_fn(n, p, |i, j| x.data[i * p + j] as f64 - mean[j]);
        let total_var: f64 = xc
            .col_iter()
            .map(|c| c.iter().map(|v| v * v).sum::<f64>())
            .sum::<f64>()
            / (n - 1) as f64;

        // Eigendecomposition of the smaller cross-product matrix.
        let tall = p <= n;
        let cross = if tall {
            cross_product(xc.transpose())
        } else {
            cross_product(xc.as_ref())
        };
        let (u, eigvals) = top_eigen(&cross, k)?;
        drop(cross);
        // components: [p, k] column-major, each column a unit principal axis.
        let components = if tall {
            u
        } else {
            let mut comps = Mat::<f64>::zeros(p, k);
            faer::linalg::matmul::matmul(
                comps.as_mut(),
                Accum::Replace,
                xc.transpose(),
                u.as_ref(),
                1.0,
                faer::get_global_parallelism(),
            );
            // Rank cut-off relative to the leading eigenvalue.
            let tol = eigvals.first().copied().unwrap_or(0.0) * 1e-12;
            for (c, &lam) in eigvals.iter().enumerate() {
                let scale = if lam > tol && lam > 0.0 {
                    1.0 / lam.sqrt()
                } else {
                    0.0
                };
                for j in 0..p {
                    comps[(j, c)] *= scale;
                }
            }
            comps
        };

        let mut comp_data = Vec::with_capacity(k * p);
        for c in 0..k {
            let col = components.col(c);
            // sklearn svd_flip(u_based_decision=False): largest |loading| positive
            // (np.argmax: the first maximum on ties).
            let mut best = 0usize;
            for j in 1..p {
                if col[j].abs() > col[best].abs() {
                    best = j;
                }
            }
            let sign = if col[best] < 0.0 { -1.0 } else { 1.0 };
            comp_data.extend((0..p).map(|j| (sign * col[j]) as f32));
        }
        let explained_variance: Vec<f64> = eigvals.iter().map(|l| l / (n - 1) as f64).collect();
        let explained_variance_ratio = explained_variance
            .iter()
            .map(|v| if total_var > 0.0 { v / total_var } else { 0.0 })
            .collect();
        Ok(Pca {
            mean: mean.iter().map(|&m| m as f32).collect(),
            components: DenseMatrix {
                n_rows: k,
                n_cols: p,
                data: comp_data,
            },
            explained_variance,
            explained_variance_ratio,
        })
    }

    /// Projects `x` (`[n_cells, n_genes]`, same genes in the same order as the fit) onto the
    /// components: `(x - mean) · componentsᵀ`, shape `[n_cells, n_comps]` (sklearn
    /// `PCA.transform`, scanpy `obsm["X_pca"]` for the training cells). Computed in `f64`.
    ///
    /// # Panics
    /// If `x.n_cols` differs from the number of genes of the fit.
    pub fn transform(&self, x: &DenseMatrix) -> DenseMatrix {
        let p = self.mean.len();
        assert_eq!(
            x.n_cols, p,
            "Pca::transform: input has {} genes, the PCA was fitted on {p}",
            x.n_cols
        );
        let k = self.components.n_rows;
        let n = x.n_rows;
        if n == 0 || k == 0 {
            return DenseMatrix::zeros(n, k);
        }
        let xc = Mat::<f64>::from_fn(n, p, |i, j| x.data[i * p + j] as f64 - self.mean[j] as f64);
        let vt = Mat::<f64>::from_fn(p, k, |j, c| self.components.data[c * p + j] as f64);
        let mut out = Mat::<f64>::zeros(n, k);
        let par = if n * p * k > 1 << 20 {
            faer::get_global_parallelism()
        } else {
            Par::Seq
        };
        faer::linalg::matmul::matmul(
            out.as_mut(),
            Accum::Replace,
            xc.as_ref(),
            vt.as_ref(),
            1.0,
            par,
        );
        let mut data = Vec::with_capacity(n * k);
        for i in 0..n {
            data.extend((0..k).map(|c| out[(i, c)] as f32));
        }
        DenseMatrix {
            n_rows: n,
            n_cols: k,
            data,
        }
    }
}

/// `a · aᵀ` (`[m, m]`, symmetric) for `a` of shape `[m, l]`; only the lower half is computed
/// (faer triangular GEMM) and then mirrored.
fn cross_product(a: MatRef<'_, f64>) -> Mat<f64> {
    let m = a.nrows();
    let mut c = Mat::<f64>::zeros(m, m);
    faer::linalg::matmul::triangular::matmul(
        c.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        a,
        BlockStructure::Rectangular,
        a.transpose(),
        BlockStructure::Rectangular,
        1.0,
        faer::get_global_parallelism(),
    );
    for j in 0..m {
        for i in j + 1..m {
            c[(j, i)] = c[(i, j)];
        }
    }
    c
}

/// Block size of the Krylov solver.
const KRYLOV_BLOCK: usize = 16;
/// Matrices up to this size are always decomposed densely.
const DENSE_MAX: usize = 1024;
/// Ritz pairs are accepted when `‖C x − θ x‖ ≤ KRYLOV_TOL · θ₁`.
const KRYLOV_TOL: f64 = 1e-12;

/// The `k` largest eigenvalues (descending, clamped at 0) and their unit eigenvectors
/// (`[m, k]`) of the symmetric positive semi-definite `c` (`[m, m]`).
///
/// Block Krylov ([`krylov_top_eigen`], basis capped at `min(m / 2, max(16k, 512))`) for
/// `m > 1024`, falling back to (and for smaller `m` using) the full dense
/// eigendecomposition (faer `self_adjoint_eigen`).
fn top_eigen(c: &Mat<f64>, k: usize) -> Result<(Mat<f64>, Vec<f64>)> {
    let m = c.nrows();
    if m > DENSE_MAX
        && let Some(found) = krylov_top_eigen(c, k, KRYLOV_TOL, (m / 2).min((16 * k).max(512)))
    {
        return Ok(found);
    }
    dense_top_eigen(c, k)
}

/// [`top_eigen`] through the full dense eigendecomposition.
fn dense_top_eigen(c: &Mat<f64>, k: usize) -> Result<(Mat<f64>, Vec<f64>)> {
    let m = c.nrows();
    let evd = c
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Internal(format!("PCA eigendecomposition failed: {e:?}")))?;
    let s = evd.S().column_vector();
    let u = evd.U();
    // Eigenvalues ascending: take the last k, in reverse.
    let vecs = Mat::<f64>::from_fn(m, k, |i, j| u[(i, m - 1 - j)]);
    let vals = (0..k).map(|j| s[m - 1 - j].max(0.0)).collect();
    Ok((vecs, vals))
}

/// `w ← w − V (Vᵀ w)`, twice (classical Gram–Schmidt with re-orthogonalisation, as GEMMs).
fn project_out(w: &mut Mat<f64>, v: MatRef<'_, f64>, par: Par) {
    if v.ncols() == 0 {
        return;
    }
    for _ in 0..2 {
        let mut h = Mat::<f64>::zeros(v.ncols(), w.ncols());
        faer::linalg::matmul::matmul(
            h.as_mut(),
            Accum::Replace,
            v.transpose(),
            w.as_ref(),
            1.0,
            par,
        );
        faer::linalg::matmul::matmul(w.as_mut(), Accum::Add, v, h.as_ref(), -1.0, par);
    }
}

/// Top-`k` eigenpairs of the symmetric PSD `c` by block Krylov (block Lanczos with full
/// re-orthogonalisation and no restarts) and Rayleigh–Ritz.
///
/// From a seeded random orthonormal `[m, 16]` block, the basis `V` grows by
/// `orth(C · newest block)` (projected out of `V` twice, QR'd, projected and QR'd again, so
/// a breakdown — a rank-deficient `c` — continues with fresh directions). At geometrically
/// spaced sizes the Ritz pairs of `T = Vᵀ C V` are formed and their true residuals
/// `‖C x − θ x‖` (from the stored `C V`) checked; all `k` below `tol · θ₁` ends the search.
/// Returns `None` if that needs more than `jmax` basis vectors (the caller then uses the
/// dense eigendecomposition, whose cost a basis of ~m/2 would match).
///
/// Exactness: the Ritz vectors are eigenvectors up to angle `tol · θ₁ / gap`, the Ritz
/// values eigenvalues up to `(tol · θ₁)² / gap`; `tol = 1e-12` gives agreement with the dense
/// solver to ~1e-10 in the tests (Kang PBMC included). Deterministic: fixed seed, no
/// data-dependent thread scheduling.
fn krylov_top_eigen(c: &Mat<f64>, k: usize, tol: f64, jmax: usize) -> Option<(Mat<f64>, Vec<f64>)> {
    let m = c.nrows();
    let b = KRYLOV_BLOCK;
    let jmax = jmax.min(m);
    if k + 2 * b > jmax {
        return None;
    }
    let par = faer::get_global_parallelism();
    let mut v = Mat::<f64>::zeros(m, jmax);
    let mut cv = Mat::<f64>::zeros(m, jmax);
    // T = Vᵀ C V, grown by one block of columns (and, by symmetry, rows) per step.
    let mut t = Mat::<f64>::zeros(jmax, jmax);
    let mut rng = StdRng::seed_from_u64(0x5eed_f9ca);
    let start = Mat::<f64>::from_fn(m, b, |_, _| rng.random::<f64>() - 0.5);
    v.as_mut()
        .subcols_mut(0, b)
        .copy_from(start.qr().compute_thin_Q());
    let mut j = b; // basis size
    let mut next_check = (2 * k).max(k + 2 * b);
    loop {
        // C · newest block, and its column block of T.
        faer::linalg::matmul::matmul(
            cv.as_mut().subcols_mut(j - b, b),
            Accum::Replace,
            c.as_ref(),
            v.as_ref().subcols(j - b, b),
            1.0,
            par,
        );
        faer::linalg::matmul::matmul(
            t.as_mut().get_mut(0..j, j - b..j),
            Accum::Replace,
            v.as_ref().subcols(0, j).transpose(),
            cv.as_ref().subcols(j - b, b),
            1.0,
            par,
        );
        // Mirror into the new rows (Vᵀ_old C V_new = (Vᵀ_new C V_old)ᵀ); symmetrise the new
        // diagonal block.
        for q in j - b..j {
            for r in 0..j - b {
                t[(q, r)] = t[(r, q)];
            }
            for r in j - b..q {
                let avg = 0.5 * (t[(r, q)] + t[(q, r)]);
                t[(r, q)] = avg;
                t[(q, r)] = avg;
            }
        }
        if j >= next_check || j + b > jmax {
            let tj = t.as_ref().get(0..j, 0..j);
            let evd = tj.self_adjoint_eigen(Side::Lower).ok()?;
            let theta = evd.S().column_vector();
            let sk = Mat::<f64>::from_fn(j, k, |r, q| evd.U()[(r, j - 1 - q)]);
            let vals: Vec<f64> = (0..k).map(|q| theta[j - 1 - q]).collect();
            let (vj, cvj) = (v.as_ref().subcols(0, j), cv.as_ref().subcols(0, j));
            let mut x = Mat::<f64>::zeros(m, k);
            faer::linalg::matmul::matmul(x.as_mut(), Accum::Replace, vj, sk.as_ref(), 1.0, par);
            let mut cx = Mat::<f64>::zeros(m, k);
            faer::linalg::matmul::matmul(cx.as_mut(), Accum::Replace, cvj, sk.as_ref(), 1.0, par);
            let scale = vals[0].abs().max(f64::MIN_POSITIVE);
            let converged = (0..k).all(|q| {
                let (xq, cq) = (x.col_as_slice(q), cx.col_as_slice(q));
                let r2: f64 = xq
                    .iter()
                    .zip(cq)
                    .map(|(a, b)| (b - vals[q] * a).powi(2))
                    .sum();
                r2.sqrt() <= tol * scale
            });
            if converged {
                return Some((x, vals.iter().map(|v| v.max(0.0)).collect()));
            }
            if j + b > jmax {
                tracing::debug!("PCA: block Krylov not converged at {j} vectors; dense fallback");
                return None;
            }
            // Convergence is fast once it starts: check every ~j/8 vectors.
            next_check = j + (j / 8).max(2 * b);
        }
        // Next block: orth(C · newest block) against the basis.
        let mut w = cv.as_ref().subcols(j - b, b).to_owned();
        project_out(&mut w, v.as_ref().subcols(0, j), par);
        let mut q = w.qr().compute_thin_Q();
        project_out(&mut q, v.as_ref().subcols(0, j), par);
        let q = q.qr().compute_thin_Q();
        v.as_mut().subcols_mut(j, b).copy_from(&q);
        j += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference (sklearn 1.9.1, numpy 2.4):
    /// ```python
    /// import numpy as np
    /// from sklearn.decomposition import PCA
    /// X = np.array([[2.,0.,1.],[0.,1.,3.],[4.,2.,2.],[1.,3.,0.],[3.,5.,4.]])
    /// p = PCA(n_components=2, svd_solver='arpack').fit(X)
    /// p.components_, p.explained_variance_, p.explained_variance_ratio_, p.transform(X)
    /// ```
    /// By hand: mean (2, 2.2, 2); covariance [[2.5, 1, 0.5], [1, 3.7, 1.25], [0.5, 1.25, 2.5]]
    /// with trace 8.7; its eigenvalues are the explained variances, 4.98540 + 2.03289 + 1.68171.
    #[test]
    fn matches_sklearn_on_small_example() {
        let x = DenseMatrix::from_vec(
            5,
            3,
            vec![2., 0., 1., 0., 1., 3., 4., 2., 2., 1., 3., 0., 3., 5., 4.],
        )
        .unwrap();
        let pca = Pca::fit(&x, 2).unwrap();
        let comps = [
            0.40906815740118224,
            0.779524778407478,
            0.47434624742815623,
            0.8694350968476796,
            -0.1751440929955129,
            -0.4619601271303022,
        ];
        let ev = [4.985399764627626, 2.03288732185628];
        let evr = [0.5730344557043249, 0.23366520940876784];
        let t = [
            -2.189300759924608,
            0.8472771317204306,
            -1.2792198014631815,
            -1.9906574092310458,
            0.6622313591208693,
            1.773899012294462,
            -0.7341408295315119,
            -0.08563011698348544,
            3.540430031798434,
            -0.5448886178003607,
        ];
        assert_eq!(pca.mean, vec![2.0, 2.2, 2.0]);
        for (a, b) in pca.components.data.iter().zip(comps) {
            assert!((*a as f64 - b).abs() < 1e-6, "component {a} vs sklearn {b}");
        }
        for (a, b) in pca.explained_variance.iter().zip(ev) {
            assert!((a - b).abs() < 1e-10, "variance {a} vs sklearn {b}");
        }
        for (a, b) in pca.explained_variance_ratio.iter().zip(evr) {
            assert!((a - b).abs() < 1e-10, "ratio {a} vs sklearn {b}");
        }
        let y = pca.transform(&x);
        assert_eq!((y.n_rows, y.n_cols), (5, 2));
        for (a, b) in y.data.iter().zip(t) {
            assert!((*a as f64 - b).abs() < 1e-5, "score {a} vs sklearn {b}");
        }
    }

    fn lcg_matrix(n: usize, p: usize, seed: u64) -> DenseMatrix {
        // Correlated data: a few latent factors plus noise, deterministic.
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5
        };
        let f: Vec<f32> = (0..n * 3).map(|_| next()).collect();
        let w: Vec<f32> = (0..3 * p).map(|_| next()).collect();
        let mut data = vec![0.0f32; n * p];
        for i in 0..n {
            for j in 0..p {
                let mut v = 0.3 * next();
                for l in 0..3 {
                    v += f[i * 3 + l] * w[l * p + j] * (3 - l) as f32;
                }
                data[i * p + j] = v + j as f32 * 0.01;
            }
        }
        DenseMatrix::from_vec(n, p, data).unwrap()
    }

    fn check_orthonormal(pca: &Pca) {
        let (k, p) = (pca.components.n_rows, pca.components.n_cols);
        for a in 0..k {
            for b in 0..k {
                let d: f64 = (0..p)
                    .map(|j| {
                        pca.components.data[a * p + j] as f64
                            * pca.components.data[b * p + j] as f64
                    })
                    .sum();
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-4, "components {a}·{b} = {d}");
            }
        }
        let sum: f64 = pca.explained_variance_ratio.iter().sum();
        assert!(sum <= 1.0 + 1e-9, "ratios sum to {sum}");
        for w in pca.explained_variance.windows(2) {
            assert!(w[0] >= w[1] - 1e-12, "variances not sorted: {w:?}");
        }
    }

    #[test]
    fn orthonormal_components_and_score_variances() {
        // Tall path: 40 cells × 30 genes.
        let x = lcg_matrix(40, 30, 7);
        let tall = Pca::fit(&x, 10).unwrap();
        check_orthonormal(&tall);
        // Wide: 20 cells × 30 genes.
        let idx: Vec<usize> = (0..20).collect();
        let xw = x.select_rows(&idx);
        let wide = Pca::fit(&xw, 10).unwrap();
        check_orthonormal(&wide);
        // Cross-check the wide fit: the variance of its scores equals explained_variance,
        // and scores of different components are uncorrelated.
        let y = wide.transform(&xw);
        for c in 0..10 {
            let var: f64 = (0..20)
                .map(|i| (y.data[i * 10 + c] as f64).powi(2))
                .sum::<f64>()
                / 19.0;
            let rel = (var - wide.explained_variance[c]).abs() / wide.explained_variance[c];
            assert!(
                rel < 1e-4,
                "component {c}: score variance {var} vs {}",
                wide.explained_variance[c]
            );
        }
        // Same check on the tall fit.
        let y = tall.transform(&x);
        for c in 0..10 {
            let var: f64 = (0..40)
                .map(|i| (y.data[i * 10 + c] as f64).powi(2))
                .sum::<f64>()
                / 39.0;
            let rel = (var - tall.explained_variance[c]).abs() / tall.explained_variance[c];
            assert!(
                rel < 1e-4,
                "component {c}: score variance {var} vs {}",
                tall.explained_variance[c]
            );
        }
        // Sign convention: the largest |loading| of each component is positive.
        for c in 0..10 {
            let row = tall.components.row(c);
            let m = row
                .iter()
                .fold(0.0f32, |a, &b| if b.abs() > a.abs() { b } else { a });
            assert!(m > 0.0);
        }
    }

    #[test]
    fn wide_path_matches_tall_path() {
        // Same data through both code paths: 12 × 8 (tall path) and the same cells with 10
        // extra all-zero genes, 12 × 18 (wide path). Zero genes add no variance and must get
        // zero loadings; everything else must agree.
        let x = lcg_matrix(12, 8, 3);
        let tall = Pca::fit(&x, 5).unwrap();
        let mut padded = Vec::new();
        for i in 0..12 {
            padded.extend_from_slice(x.row(i));
            padded.extend(std::iter::repeat_n(0.0f32, 10));
        }
        let xw = DenseMatrix::from_vec(12, 18, padded).unwrap();
        let wide = Pca::fit(&xw, 5).unwrap();
        for c in 0..5 {
            assert!((tall.explained_variance[c] - wide.explained_variance[c]).abs() < 1e-9);
            assert!(
                (tall.explained_variance_ratio[c] - wide.explained_variance_ratio[c]).abs() < 1e-9
            );
            for j in 0..8 {
                let (a, b) = (tall.components.row(c)[j], wide.components.row(c)[j]);
                assert!((a - b).abs() < 1e-5, "comp {c} gene {j}: {a} vs {b}");
            }
            for j in 8..18 {
                assert!(wide.components.row(c)[j].abs() < 1e-6);
            }
        }
    }

    #[test]
    fn rejects_bad_input_and_clamps() {
        let x = DenseMatrix::from_vec(2, 2, vec![1.0, f32::NAN, 0.0, 1.0]).unwrap();
        assert!(matches!(Pca::fit(&x, 1), Err(Error::InvalidInput(_))));
        let x = lcg_matrix(6, 4, 1);
        assert!(matches!(Pca::fit(&x, 0), Err(Error::Param(_))));
        assert_eq!(Pca::fit(&x, 50).unwrap().components.n_rows, 3);
    }

    /// Cells from `n_factors` latent factors with power-law strengths (`l^-0.7`, like the
    /// decaying PCA spectrum of scRNA-seq) plus uniform noise of amplitude `noise`.
    fn factor_matrix(n: usize, p: usize, n_factors: usize, noise: f32, seed: u64) -> DenseMatrix {
        let f = lcg_matrix(n, n_factors, seed);
        let w = lcg_matrix(n_factors, p, seed + 1);
        let nz = lcg_matrix(n, p, seed + 2);
        let mut data = vec![0.0f32; n * p];
        for i in 0..n {
            for l in 0..n_factors {
                let a = f.data[i * n_factors + l] * ((l + 1) as f32).powf(-0.7);
                for j in 0..p {
                    data[i * p + j] += a * w.data[l * p + j];
                }
            }
            for j in 0..p {
                data[i * p + j] += noise * nz.data[i * p + j];
            }
        }
        DenseMatrix::from_vec(n, p, data).unwrap()
    }

    /// Block Krylov vs the dense eigendecomposition: a decaying spectrum, the same with a
    /// noise floor, a rank-deficient matrix (Krylov breakdown) and pure noise (clustered
    /// spectrum: may give up, must not be wrong).
    #[test]
    fn krylov_matches_dense_eigendecomposition() {
        let noise = {
            let mut s = 99u64;
            let data = (0..1200 * 500)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (s >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            DenseMatrix::from_vec(1200, 500, data).unwrap()
        };
        for (name, x, k, must_converge) in [
            ("decaying", factor_matrix(1000, 500, 200, 0.0, 1), 50, true),
            (
                "decaying + noise",
                factor_matrix(1000, 500, 100, 0.05, 2),
                50,
                true,
            ),
            ("rank 8", factor_matrix(800, 500, 8, 0.0, 3), 20, true),
            ("noise", noise, 50, false),
        ] {
            let (n, p) = (x.n_rows, x.n_cols);
            let mean: Vec<f64> = (0..p)
                .map(|j| (0..n).map(|i| x.data[i * p + j] as f64).sum::<f64>() / n as f64)
                .collect();
            let xc = Mat::<f64>::from_fn(n, p, |i, j| x.data[i * p + j] as f64 - mean[j]);
            let c = cross_product(xc.transpose());
            let Some((vecs, vals)) = krylov_top_eigen(&c, k, KRYLOV_TOL, p / 2) else {
                assert!(!must_converge, "{name}: block Krylov did not converge");
                continue;
            };
            let (dvecs, dvals) = dense_top_eigen(&c, k).unwrap();
            for q in 0..k {
                let err = (vals[q] - dvals[q]).abs();
                assert!(
                    err <= 1e-10 * dvals[0],
                    "{name}: eigenvalue {q}: {} vs {}",
                    vals[q],
                    dvals[q]
                );
                if dvals[q] > 1e-8 * dvals[0] {
                    let cos: f64 = (0..p).map(|i| vecs[(i, q)] * dvecs[(i, q)]).sum();
                    assert!(
                        1.0 - cos.abs() < 1e-8,
                        "{name}: eigenvector {q}: |cos| {}",
                        cos.abs()
                    );
                }
            }
        }
    }

    /// Timing of the sizes scanpy users hit; run with
    /// `cargo test -p celldiff --lib pca_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn pca_timing() {
        for (n, p, what) in [
            (10_000, 1000, "decaying spectrum"),
            (2000, 7000, "decaying spectrum"),
            (2000, 7000, "3 factors + uniform noise (Krylov gives up)"),
        ] {
            let x = if what.starts_with("decaying") {
                factor_matrix(n, p, 200, 0.05, 11)
            } else {
                lcg_matrix(n, p, 11)
            };
            let t = std::time::Instant::now();
            let pca = Pca::fit(&x, 50).unwrap();
            let fit = t.elapsed();
            let _ = pca.transform(&x);
            eprintln!(
                "PCA {n} × {p} → 50, {what}: fit {fit:?}, fit+transform {:?}",
                t.elapsed()
            );
            check_orthonormal(&pca);
        }
    }
}
