//! Brute-force Euclidean neighbours and the multi-scale RBF MMD, both on low-dimensional
//! embeddings (PCA-50).
//!
//! Brute force on purpose: evaluation sets are a few thousand cells in 50 dimensions, where
//! one GEMM (`faer`, `‖a‖² + ‖b‖² − 2a·b` in `f64`) per block of rows costs milliseconds and
//! is exact; tree indices (`kiddo`) need the dimension at compile time, and approximate
//! graphs (`hnsw_rs`) would make the metric depend on index recall (see
//! `/work/shared/CRATES.md`: "a brute-force GEMM kNN may beat both at ≤ 20k cells").

use faer::{Accum, Mat, MatRef, Par};
use rayon::prelude::*;

/// Rows per GEMM block (memory: `BLOCK × n` doubles per block).
const BLOCK: usize = 256;

/// Row-major `[n, d]` `f32` as a column-major `f64` faer matrix.
pub(crate) fn to_mat(x: &[f32], n: usize, d: usize) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| x[i * d + j] as f64)
}

fn sq_norms(a: MatRef<'_, f64>) -> Vec<f64> {
    let mut out = vec![0.0; a.nrows()];
    for j in 0..a.ncols() {
        for (o, v) in out.iter_mut().zip(a.col(j).iter()) {
            *o += v * v;
        }
    }
    out
}

/// Squared distances from rows `c0..c1` of `b` to all rows of `a`, as a column-major
/// `[a.nrows(), c1 - c0]` matrix: column `c` (a contiguous slice via `col_as_slice`) holds
/// the distances of `b` row `c0 + c` to every row of `a`.
fn sq_dist_cols(
    a: MatRef<'_, f64>,
    a_norms: &[f64],
    b: MatRef<'_, f64>,
    b_norms: &[f64],
    c0: usize,
    c1: usize,
) -> Mat<f64> {
    let mut g = Mat::<f64>::zeros(a.nrows(), c1 - c0);
    faer::linalg::matmul::matmul(
        g.as_mut(),
        Accum::Replace,
        a,
        b.subrows(c0, c1 - c0).transpose(),
        -2.0,
        Par::Seq,
    );
    for c in 0..c1 - c0 {
        let bn = b_norms[c0 + c];
        for (v, an) in g.col_as_slice_mut(c).iter_mut().zip(a_norms) {
            *v = (*v + an + bn).max(0.0);
        }
    }
    g
}

/// `[start, end)` row blocks of `0..n`.
fn blocks(n: usize) -> Vec<(usize, usize)> {
    (0..n)
        .step_by(BLOCK)
        .map(|r0| (r0, (r0 + BLOCK).min(n)))
        .collect()
}

/// Indices of the `k` smallest entries of `d` (ties broken by index), unordered; `skip` is
/// excluded (a point itself).
fn k_smallest(d: &[f64], k: usize, skip: Option<usize>, idx: &mut Vec<usize>) {
    idx.clear();
    idx.extend((0..d.len()).filter(|&j| Some(j) != skip));
    let k = k.min(idx.len());
    if k == 0 {
        return;
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| d[a].total_cmp(&d[b]).then(a.cmp(&b)));
    idx.truncate(k);
}

/// For each row of `query` (`[m, dim]`), the fraction of its `k` nearest rows of `reference`
/// (`[n, dim]`, Euclidean, ties by index) whose label is `true`: sklearn
/// `KNeighborsClassifier(n_neighbors=k).predict_proba(query)[:, 1]` with brute force.
pub(crate) fn knn_positive_fraction(
    reference: MatRef<'_, f64>,
    labels: &[bool],
    query: MatRef<'_, f64>,
    k: usize,
) -> Vec<f64> {
    let rn = sq_norms(reference);
    let qn = sq_norms(query);
    let per_block: Vec<Vec<f64>> = blocks(query.nrows())
        .par_iter()
        .map(|&(c0, c1)| {
            let g = sq_dist_cols(reference, &rn, query, &qn, c0, c1);
            let mut nn = Vec::new();
            (0..c1 - c0)
                .map(|c| {
                    k_smallest(g.col_as_slice(c), k, None, &mut nn);
                    nn.iter().filter(|&&j| labels[j]).count() as f64 / nn.len() as f64
                })
                .collect()
        })
        .collect();
    per_block.into_iter().flatten().collect()
}

/// Result of [`mmd_multiscale`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct MmdResult {
    /// Unbiased MMD² estimate.
    pub mmd2: f64,
    /// The median kNN distance `m` (σ ∈ {m/2, m, 2m}).
    pub median_knn_dist: f64,
}

/// Unbiased MMD² between the first `n_x` rows of `z` (set X) and the rest (set Y), with the
/// kernel `k(a, b) = Σ_{σ ∈ {m/2, m, 2m}} exp(−‖a − b‖² / (2σ²))`, where `m` is the median
/// over all rows of `z` of the mean Euclidean distance to their `knn` nearest other rows.
///
/// `MMD²_u = Σ_{i≠j} k(xᵢ,xⱼ)/(n(n−1)) + Σ_{i≠j} k(yᵢ,yⱼ)/(l(l−1)) − 2 Σ k(xᵢ,yⱼ)/(n l)`
/// (Gretton et al. 2012, eq. 3). If `m == 0` the kernel degenerates to `3·[a == b]`.
pub(crate) fn mmd_multiscale(z: MatRef<'_, f64>, n_x: usize, knn: usize) -> MmdResult {
    let n = z.nrows();
    let n_y = n - n_x;
    let zn = sq_norms(z);
    let bl = blocks(n);
    // Pass 1: mean distance to the knn nearest other rows.
    let knn_mean: Vec<f64> = bl
        .par_iter()
        .map(|&(c0, c1)| {
            let g = sq_dist_cols(z, &zn, z, &zn, c0, c1);
            let mut buf = Vec::with_capacity(n);
            (0..c1 - c0)
                .map(|c| {
                    // Only the values matter here (a sum), so select on a copy, self excluded.
                    buf.clear();
                    buf.extend_from_slice(g.col_as_slice(c));
                    buf.swap_remove(c0 + c);
                    let kk = knn.min(buf.len());
                    if kk == 0 {
                        return 0.0;
                    }
                    buf.select_nth_unstable_by(kk - 1, f64::total_cmp);
                    buf[..kk].iter().map(|d2| d2.sqrt()).sum::<f64>() / kk as f64
                })
                .collect::<Vec<f64>>()
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flatten()
        .collect();
    let m = median(&knn_mean);
    // k(d²) = Σ_σ exp(−d²/(2σ²)), σ ∈ {m/2, m, 2m}: with e = exp(−d²/(8m²)) (σ = 2m) the
    // other two terms are e⁴ (σ = m) and e¹⁶ (σ = m/2), so one `exp` per pair. Terms below
    // ~1e-300 are set to 0 instead of being computed through subnormal numbers.
    // `libm::exp` (pure Rust, SSE2) rather than `f64::exp` (glibc's VEX/FMA code): this thread
    // has just run faer's AVX-512 GEMM, which leaves the upper vector state dirty, and on this
    // machine every SSE↔VEX transition then costs ~250 ns (measured: glibc `exp` 20× slower,
    // 2.5 s instead of 0.15 s for the 15.6M pairs of 2 × 1975 cells).
    let inv8m2 = if m > 0.0 {
        1.0 / (8.0 * m * m)
    } else {
        f64::INFINITY
    };
    let kernel = |d2: f64| -> f64 {
        if !inv8m2.is_finite() {
            return if d2 == 0.0 { 3.0 } else { 0.0 };
        }
        let a = -d2 * inv8m2;
        if a < -690.0 {
            return 0.0;
        }
        let e = libm::exp(a);
        let e4 = if a > -172.0 { (e * e) * (e * e) } else { 0.0 };
        let e16 = if a > -43.0 {
            (e4 * e4) * (e4 * e4)
        } else {
            0.0
        };
        e + e4 + e16
    };
    // Pass 2: kernel sums per block, combined in block order (deterministic).
    let sums: Vec<[f64; 3]> = bl
        .par_iter()
        .map(|&(c0, c1)| {
            let g = sq_dist_cols(z, &zn, z, &zn, c0, c1);
            let mut s = [0.0f64; 3]; // xx, yy, xy
            for c in 0..c1 - c0 {
                let gi = c0 + c;
                let col = g.col_as_slice(c);
                let (same, other) = if gi < n_x { (0, 2) } else { (1, 2) };
                let (mut s_x, mut s_y) = (0.0, 0.0);
                for (j, &d2) in col.iter().enumerate() {
                    if j == gi {
                        continue;
                    }
                    if j < n_x {
                        s_x += kernel(d2);
                    } else {
                        s_y += kernel(d2);
                    }
                }
                if gi < n_x {
                    s[same] += s_x;
                    s[other] += s_y;
                } else {
                    s[same] += s_y;
                    s[other] += s_x;
                }
            }
            s
        })
        .collect();
    let mut tot = [0.0f64; 3];
    for s in sums {
        for c in 0..3 {
            tot[c] += s[c];
        }
    }
    let (nx, ny) = (n_x as f64, n_y as f64);
    // Each unordered X–Y pair was visited twice (once from each side).
    let mmd2 = tot[0] / (nx * (nx - 1.0)) + tot[1] / (ny * (ny - 1.0)) - tot[2] / (nx * ny);
    MmdResult {
        mmd2,
        median_knn_dist: m,
    }
}

/// numpy `median`: the mean of the two middle values for even lengths.
fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let h = s.len() / 2;
    if s.len() % 2 == 1 {
        s[h]
    } else {
        (s[h - 1] + s[h]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_fraction_small_example() {
        // Reference on a line: 0,1,2 (false) and 10,11,12 (true).
        let r = to_mat(&[0.0, 1.0, 2.0, 10.0, 11.0, 12.0], 6, 1);
        let labels = [false, false, false, true, true, true];
        let q = to_mat(&[0.5, 11.2, 6.2], 3, 1);
        let p = knn_positive_fraction(r.as_ref(), &labels, q.as_ref(), 3);
        // 6.2 is at 6.2, 5.2, 4.2, 3.8, 4.8, 5.8 from the references → 3 nearest: 10, 2, 11
        // → 2/3 positive. 0.5 → {0, 1, 2}: 0. 11.2 → {11, 12, 10}: 1.
        assert_eq!(p, vec![0.0, 1.0, 2.0 / 3.0]);
    }

    #[test]
    fn mmd_by_hand() {
        // X = {0, 1}, Y = {3, 4} in 1-D, knn = 1: every point's nearest other point is at
        // distance 1 → m = 1, σ ∈ {0.5, 1, 2}.
        let z = to_mat(&[0.0, 1.0, 3.0, 4.0], 4, 1);
        let r = mmd_multiscale(z.as_ref(), 2, 1);
        assert_eq!(r.median_knn_dist, 1.0);
        let k = |d2: f64| {
            [0.5f64, 1.0, 2.0]
                .iter()
                .map(|s| (-d2 / (2.0 * s * s)).exp())
                .sum::<f64>()
        };
        // Kxx (off-diagonal) = k(1), Kyy = k(1); Kxy over pairs d = 3, 4, 2, 3.
        let want = k(1.0) + k(1.0) - 2.0 * (k(9.0) + k(16.0) + k(4.0) + k(9.0)) / 4.0;
        assert!((r.mmd2 - want).abs() < 1e-12, "{} vs {want}", r.mmd2);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
