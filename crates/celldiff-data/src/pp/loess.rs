//! One-dimensional loess as computed by `skmisc.loess.loess(x, y, span, degree=2)` with its
//! defaults (`family='gaussian'`, `surface='interpolate'`, `cell=0.2`), i.e. Cleveland, Grosse
//! and Shyu's netlib `dloess`: local quadratic fits with tricube weights at the vertices of a
//! k-d tree, blended by cubic Hermite interpolation between vertices.
//!
//! The tree, the vertex fits (value and slope) and the interpolation follow `lowesd`, `lowesb`
//! (`ehg131`, `ehg126`, `ehg124`, `ehg139`, `ehg127`) and `lowese` (`ehg128`) for `d = 1`.
//! Fitted values agree with skmisc to ~1e-13 relative on scanpy's `seurat_v3` inputs.

use crate::error::{Error, Result};

/// Fitted values of a degree-2 loess of `y` on `x` at the points `x` (`skmisc` defaults,
/// `surface='interpolate'`, no robustness iterations).
///
/// # Errors
/// [`Error::InvalidInput`] if there are too few points for the span (fewer than 4 neighbours)
/// or all neighbourhoods have zero width.
pub(crate) fn loess_fit(x: &[f64], y: &[f64], span: f64) -> Result<Vec<f64>> {
    let n = x.len();
    // lowesd: nf = min(n, floor(n * f)); the local model has k = 3 parameters.
    let nf = ((n as f64 * span).floor() as usize).min(n);
    if nf < 4 {
        return Err(Error::InvalidInput(format!(
            "loess: span {span} over {n} points gives {nf} neighbours; need at least 4"
        )));
    }
    // loess_(): cell = span * 0.2; lowesb: fc = floor(n * cell).
    let fc = (n as f64 * (span * 0.2)).floor() as usize;
    let mut sorted: Vec<f64> = x.to_vec();
    sorted.sort_by(f64::total_cmp);
    let tree = KdTree::build(&sorted, fc);
    let mut vval = Vec::with_capacity(tree.vertices.len());
    for &v in &tree.vertices {
        vval.push(local_fit(x, y, v, nf, span)?);
    }
    Ok(x.iter().map(|&z| tree.eval(z, &vval)).collect())
}

/// The 1-d k-d tree of `ehg126`/`ehg124`: cells split at data medians until they hold at most
/// `fc` points.
struct KdTree {
    /// Vertex coordinates: 0 and 1 are the bounding box, then split points in creation order.
    vertices: Vec<f64>,
    cells: Vec<Cell>,
}

struct Cell {
    /// Lower and upper vertex indices.
    lo_v: usize,
    hi_v: usize,
    /// `Some((split value, left child, right child))` for internal cells.
    split: Option<(f64, usize, usize)>,
}

impl KdTree {
    fn build(sorted: &[f64], fc: usize) -> Self {
        let n = sorted.len();
        // ehg126: bounding box expanded by 10% of ... 0.5% of the range on each side.
        let (alpha, beta) = (sorted[0], sorted[n - 1]);
        let mu = 0.005
            * f64::max(
                beta - alpha,
                1e-10 * f64::max(alpha.abs(), beta.abs()) + 1e-30,
            );
        let mut vertices = vec![alpha - mu, beta + mu];
        let mut cells = vec![Cell {
            lo_v: 0,
            hi_v: 1,
            split: None,
        }];
        // Point ranges (1-based, inclusive, as in the Fortran) of each cell.
        let mut ranges = vec![(1usize, n)];
        let nvmax = n.max(200);
        let mut p = 0;
        while p < cells.len() {
            let (l, u) = ranges[p];
            let (vlo, vhi) = (vertices[cells[p].lo_v], vertices[cells[p].hi_v]);
            let diam = vhi - vlo;
            let mut leaf = u + 1 - l <= fc || diam <= 0.0;
            if !leaf {
                // ncmax = nvmax = max(200, n) bounds the tree size.
                leaf = nvmax < cells.len() + 2 || (nvmax as f64) < vertices.len() as f64 + 1.0;
            }
            let mut m = (l + u) / 2;
            if !leaf {
                // btyner's 2006 fix: move the split off runs of ties, trying m, m+1, m-1, m+2, ...
                // and stopping (keeping m) as soon as the candidate leaves [l, u).
                let mut offset: isize = 0;
                loop {
                    let c = m as isize + offset;
                    if c >= u as isize || c < l as isize {
                        break;
                    }
                    let c = c as usize;
                    if sorted[c - 1] == sorted[c] {
                        offset = -offset;
                        if offset >= 0 {
                            offset += 1;
                        }
                    } else {
                        m = c;
                        break;
                    }
                }
                let t = sorted[m - 1];
                leaf = vlo == t || vhi == t;
            }
            if !leaf {
                let t = sorted[m - 1];
                vertices.push(t);
                let tv = vertices.len() - 1;
                let left = cells.len();
                cells.push(Cell {
                    lo_v: cells[p].lo_v,
                    hi_v: tv,
                    split: None,
                });
                ranges.push((l, m));
                let right = cells.len();
                cells.push(Cell {
                    lo_v: tv,
                    hi_v: cells[p].hi_v,
                    split: None,
                });
                ranges.push((m + 1, u));
                cells[p].split = Some((t, left, right));
            }
            p += 1;
        }
        KdTree { vertices, cells }
    }

    /// `ehg128` for `d = 1`: cubic Hermite interpolation of the vertex values and slopes.
    fn eval(&self, z: f64, vval: &[(f64, f64)]) -> f64 {
        let mut j = 0;
        while let Some((t, left, right)) = self.cells[j].split {
            j = if z <= t { left } else { right };
        }
        let cell = &self.cells[j];
        let (v0, v1) = (self.vertices[cell.lo_v], self.vertices[cell.hi_v]);
        let (g0, d0) = vval[cell.lo_v];
        let (g1, d1) = vval[cell.hi_v];
        let h = (z - v0) / (v1 - v0);
        let phi0 = (1.0 - h).powi(2) * (1.0 + 2.0 * h);
        let phi1 = h * h * (3.0 - 2.0 * h);
        let psi0 = h * (1.0 - h).powi(2);
        let psi1 = h * h * (h - 1.0);
        phi0 * g0 + phi1 * g1 + (psi0 * d0 + psi1 * d1) * (v1 - v0)
    }
}

/// `ehg127` for `d = 1`, degree 2: the weighted least-squares quadratic fit at `q` over the `nf`
/// nearest points with tricube weights, solved through a QR decomposition and the SVD of R
/// with a pseudo-inverse (singular values below `100 * eps * sigma_max` dropped). Returns the
/// fitted value and slope at `q`.
fn local_fit(x: &[f64], y: &[f64], q: f64, nf: usize, span: f64) -> Result<(f64, f64)> {
    let n = x.len();
    let dist: Vec<f64> = x.iter().map(|&xi| (xi - q) * (xi - q)).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.select_nth_unstable_by(nf - 1, |&a, &b| dist[a].total_cmp(&dist[b]));
    let rho = dist[order[nf - 1]] * f64::max(1.0, span);
    if rho <= 0.0 {
        return Err(Error::InvalidInput(format!(
            "loess: zero-width neighbourhood at {q}: more than {nf} identical x values"
        )));
    }
    let near = &order[..nf];
    // Design matrix rows (scaled by sqrt of tricube weights) and response.
    let k = 3;
    let mut b = vec![[0.0f64; 3]; nf];
    let mut eta = vec![0.0f64; nf];
    let mut any_weight = false;
    for (r, &i) in near.iter().enumerate() {
        let u = (dist[i] / rho).sqrt();
        let w = (1.0 - u * u * u).powi(3).max(0.0).sqrt();
        any_weight |= w > 0.0;
        let d = x[i] - q;
        b[r] = [w, w * d, w * d * d];
        eta[r] = w * y[i];
    }
    if !any_weight {
        return Err(Error::InvalidInput(format!(
            "loess: all neighbours of {q} lie on the neighbourhood boundary"
        )));
    }
    // Equilibrate columns.
    let mut colnor = [1.0f64; 3];
    for (j, cn) in colnor.iter_mut().enumerate() {
        let s = b.iter().map(|row| row[j] * row[j]).sum::<f64>().sqrt();
        if s > 0.0 {
            b.iter_mut().for_each(|row| row[j] /= s);
            *cn = s;
        }
    }
    // Householder QR of the nf x 3 matrix (dqrdc without pivoting); apply Q^T to eta.
    let mut r = [[0.0f64; 3]; 3];
    for j in 0..k {
        let norm = b[j..].iter().map(|row| row[j] * row[j]).sum::<f64>().sqrt();
        if norm == 0.0 {
            continue;
        }
        let alpha = if b[j][j] >= 0.0 { -norm } else { norm };
        // v = x - alpha e1, stored in place.
        b[j][j] -= alpha;
        let vnorm2: f64 = b[j..].iter().map(|row| row[j] * row[j]).sum();
        if vnorm2 > 0.0 {
            for c in j + 1..k {
                let dot: f64 = b[j..].iter().map(|row| row[j] * row[c]).sum();
                let f = 2.0 * dot / vnorm2;
                for row in b[j..].iter_mut() {
                    row[c] -= f * row[j];
                }
            }
            let dot: f64 = b[j..]
                .iter()
                .zip(&eta[j..])
                .map(|(row, e)| row[j] * e)
                .sum();
            let f = 2.0 * dot / vnorm2;
            for (row, e) in b[j..].iter().zip(eta[j..].iter_mut()) {
                *e -= f * row[j];
            }
        }
        r[j][j] = alpha;
        for c in j + 1..k {
            r[j][c] = b[j][c];
        }
    }
    // SVD of the 3x3 R by one-sided Jacobi: R = U S V^T.
    let (u, sigma, v) = svd3(r);
    let smax = sigma.iter().copied().fold(0.0, f64::max);
    let tol = smax * (100.0 * f64::EPSILON);
    let mut gamma = [0.0f64; 3];
    for j in 0..k {
        if sigma[j] > tol {
            gamma[j] = (0..k).map(|i| u[i][j] * eta[i]).sum::<f64>() / sigma[j];
        }
    }
    let coef = |row: usize| (0..k).map(|j| v[row][j] * gamma[j]).sum::<f64>() / colnor[row];
    Ok((coef(0), coef(1)))
}

/// Singular value decomposition of a 3x3 matrix by one-sided Jacobi rotations:
/// returns `(U, sigma, V)` with `A = U diag(sigma) V^T` (columns of U for zero singular values
/// are left as zero vectors; they are never used).
fn svd3(a: [[f64; 3]; 3]) -> ([[f64; 3]; 3], [f64; 3], [[f64; 3]; 3]) {
    let mut w = a; // columns get orthogonalised: W = A V
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..60 {
        let mut rotated = false;
        for p in 0..2 {
            for q in p + 1..3 {
                let alpha: f64 = (0..3).map(|i| w[i][p] * w[i][p]).sum();
                let beta: f64 = (0..3).map(|i| w[i][q] * w[i][q]).sum();
                let gamma: f64 = (0..3).map(|i| w[i][p] * w[i][q]).sum();
                if gamma == 0.0 || gamma.abs() <= 1e-300 + f64::EPSILON * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for row in w.iter_mut() {
                    let (wp, wq) = (row[p], row[q]);
                    row[p] = c * wp - s * wq;
                    row[q] = s * wp + c * wq;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut sigma = [0.0f64; 3];
    let mut u = [[0.0f64; 3]; 3];
    for j in 0..3 {
        let s = (0..3).map(|i| w[i][j] * w[i][j]).sum::<f64>().sqrt();
        sigma[j] = s;
        if s > 0.0 {
            for i in 0..3 {
                u[i][j] = w[i][j] / s;
            }
        }
    }
    (u, sigma, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svd3_reconstructs() {
        let a = [[2.0, -1.0, 0.5], [0.0, 3.0, 1.0], [0.0, 0.0, 1e-3]];
        let (u, s, v) = svd3(a);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3).map(|k| u[i][k] * s[k] * v[j][k]).sum();
                assert!((r - a[i][j]).abs() < 1e-12, "{i},{j}: {r} vs {}", a[i][j]);
            }
        }
    }

    #[test]
    fn quadratic_is_reproduced_exactly() {
        // A degree-2 local fit reproduces a global quadratic at every point.
        let x: Vec<f64> = (0..200)
            .map(|i| (i as f64 * 0.37).sin() * 3.0 + i as f64 * 0.01)
            .collect();
        let y: Vec<f64> = x.iter().map(|&t| 0.5 * t * t - 2.0 * t + 1.0).collect();
        let fit = loess_fit(&x, &y, 0.3).unwrap();
        for (f, t) in fit.iter().zip(&y) {
            assert!((f - t).abs() < 1e-8, "{f} vs {t}");
        }
    }

    #[test]
    fn too_few_points_is_an_error() {
        assert!(loess_fit(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], 0.3).is_err());
    }
}
