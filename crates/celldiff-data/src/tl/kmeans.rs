//! k-means clustering of cell embeddings (sklearn's `KMeans(n_init)` protocol).
//!
//! **k-means** ([`kmeans`]): `smartcore` 0.7 (k-means++ initialisation, Lloyd iterations on
//! a BBD tree, at most 300), best of `n_init` seeded runs by inertia (sklearn's
//! `KMeans(n_init=10)` protocol). `linfa-clustering` was not used: it pins
//! `sprs = "=0.11.2"` while the workspace resolves sprs 0.11.6.

use std::collections::HashSet;

use super::check_finite;
use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};
use crate::tl::leiden::relabel_by_size;

/// k-means clustering of the rows of `x` (`[n_cells, d]`) into `k` clusters: the best (lowest
/// inertia, Σ squared distances to the centroids) of `n_init` smartcore k-means++ runs with
/// seeds `seed, seed + 1, …`. Returns one label per cell, `0` the largest cluster.
///
/// # Errors
/// [`Error::Param`] for `k = 0` or `n_init = 0`; [`Error::InvalidInput`] if `x` has fewer than
/// `k` distinct rows or non-finite values; [`Error::Internal`] if smartcore fails.
pub fn kmeans(x: &DenseMatrix, k: usize, n_init: usize, seed: u64) -> Result<Vec<usize>> {
    if k == 0 {
        return Err(Error::Param(
            "k-means: the number of clusters must be at least 1".into(),
        ));
    }
    if n_init == 0 {
        return Err(Error::Param("k-means: n_init must be at least 1".into()));
    }
    check_finite(x, "k-means input")?;
    let n = x.n_rows;
    let distinct: HashSet<Vec<u32>> = (0..n)
        .map(|i| x.row(i).iter().map(|v| (v + 0.0).to_bits()).collect())
        .collect();
    if distinct.len() < k {
        return Err(Error::InvalidInput(format!(
            "k-means: {k} clusters requested but the data have only {} distinct points \
             ({n} cells)",
            distinct.len()
        )));
    }
    if k == 1 {
        return Ok(vec![0; n]);
    }
    let m = smartcore::linalg::basic::matrix::DenseMatrix::new(n, x.n_cols, x.data.clone(), false)
        .map_err(|e| Error::Internal(format!("k-means: {e}")))?;
    let mut best: Option<(f64, Vec<usize>)> = None;
    for r in 0..n_init as u64 {
        let params = smartcore::cluster::kmeans::KMeansParameters {
            k,
            max_iter: 300,
            seed: Some(seed.wrapping_add(r)),
        };
        let fitted =
            smartcore::cluster::kmeans::KMeans::<f32, usize, _, Vec<usize>>::fit(&m, params)
                .map_err(|e| Error::Internal(format!("k-means: {e}")))?;
        let labels: Vec<usize> = fitted
            .predict(&m)
            .map_err(|e| Error::Internal(format!("k-means: {e}")))?;
        let inertia = inertia(x, &labels, k);
        if best.as_ref().is_none_or(|(b, _)| inertia < *b) {
            best = Some((inertia, labels));
        }
    }
    let (_, labels) = best.ok_or_else(|| Error::Internal("k-means: no run".into()))?;
    Ok(relabel_by_size(&labels))
}

/// Σ_i ‖x_i − c_{label(i)}‖² with c the cluster means, in `f64`.
fn inertia(x: &DenseMatrix, labels: &[usize], k: usize) -> f64 {
    let d = x.n_cols;
    let mut sums = vec![0f64; k * d];
    let mut counts = vec![0usize; k];
    for (i, &l) in labels.iter().enumerate() {
        counts[l] += 1;
        for (s, &v) in sums[l * d..(l + 1) * d].iter_mut().zip(x.row(i)) {
            *s += v as f64;
        }
    }
    labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let c = counts[l].max(1) as f64;
            x.row(i)
                .iter()
                .zip(&sums[l * d..(l + 1) * d])
                .map(|(&v, &s)| (v as f64 - s / c).powi(2))
                .sum::<f64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tl::leiden::adjusted_rand_index;
    use crate::tl::test_util::{blobs, matrix};

    #[test]
    fn kmeans_recovers_separated_blobs_and_checks_k() {
        let (x, truth) = blobs(
            &[[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 8.0]],
            40,
            1.0,
            3,
        );
        let l = kmeans(&x, 3, 5, 0).unwrap();
        assert_eq!(adjusted_rand_index(&l, &truth).unwrap(), 1.0);
        assert_eq!(l, kmeans(&x, 3, 5, 0).unwrap(), "seeded");
        assert!(l.iter().all(|&c| c < 3));
        assert_eq!(kmeans(&x, 1, 1, 0).unwrap(), vec![0; 120]);
        assert!(matches!(kmeans(&x, 0, 1, 0), Err(Error::Param(_))));
        assert!(matches!(kmeans(&x, 2, 0, 0), Err(Error::Param(_))));
        let dup = matrix(&[&[1.0, 1.0], &[1.0, 1.0], &[2.0, 2.0]]);
        match kmeans(&dup, 3, 1, 0) {
            Err(Error::InvalidInput(m)) => assert!(m.contains("2 distinct points"), "{m}"),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }
}
