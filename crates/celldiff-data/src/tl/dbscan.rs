//! DBSCAN clustering of cell embeddings with sklearn's semantics, and its automatic ε.
//!
//! **DBSCAN** ([`dbscan`]): Ester, Kriegel, Sander & Xu (KDD 1996) with sklearn's semantics
//! (a core point has ≥ `min_samples` points, itself included, within distance ≤ ε; border
//! points join the first cluster, in order of the clusters' smallest core point, that
//! reaches them; the rest is noise). Implemented here with exact brute-force neighbour
//! scans (rayon): `smartcore`'s DBSCAN keeps its fit labels private and its `predict`
//! relabels every point by a majority vote over its ε-neighbourhood (noise included), which
//! differs from DBSCAN's labels for border and noise points. ε can be chosen
//! automatically ([`auto_dbscan_eps`]): a quantile of the distances to the
//! `min_samples`-th nearest point (the "k-distance" heuristic of Ester et al.).

use std::collections::HashMap;

use rayon::prelude::*;

use super::{check_finite, sq_dist};
use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};
use crate::tl::leiden::relabel_by_size;

/// Default quantile of the k-distances used as DBSCAN's ε by [`auto_dbscan_eps`] (`identify
/// --dbscan-eps auto`).
pub const DEFAULT_EPS_QUANTILE: f64 = 0.8;

/// Indices `j` (ascending) with ‖x_i − x_j‖² ≤ eps², `i` itself included, optionally only
/// those with `keep[j]`.
fn radius_neighbors(x: &DenseMatrix, i: usize, eps2: f32, keep: Option<&[bool]>) -> Vec<usize> {
    let xi = x.row(i);
    (0..x.n_rows)
        .filter(|&j| keep.is_none_or(|k| k[j]) && sq_dist(xi, x.row(j)) <= eps2)
        .collect()
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// DBSCAN (Ester et al. 1996) of the rows of `x` (`[n_cells, d]`) with sklearn's semantics
/// (see the module docs): returns one label per cell, `Some(c)` with `0` the largest cluster,
/// `None` for noise. Deterministic (no randomness; exact Euclidean distances).
///
/// Cost: three brute-force passes of `n_cells² · d` operations (parallel over cells), no
/// neighbour lists stored (memory O(n_cells)).
///
/// # Errors
/// [`Error::Param`] for `eps` not a positive number or `min_samples = 0`;
/// [`Error::InvalidInput`] for non-finite values.
pub fn dbscan(x: &DenseMatrix, eps: f64, min_samples: usize) -> Result<Vec<Option<usize>>> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(Error::Param(format!(
            "DBSCAN: eps must be a positive number, got {eps}"
        )));
    }
    if min_samples == 0 {
        return Err(Error::Param(
            "DBSCAN: min_samples must be at least 1".into(),
        ));
    }
    check_finite(x, "DBSCAN input")?;
    let n = x.n_rows;
    let eps2 = (eps * eps) as f32;
    let core: Vec<bool> = (0..n)
        .into_par_iter()
        .map(|i| {
            let xi = x.row(i);
            (0..n).filter(|&j| sq_dist(xi, x.row(j)) <= eps2).count() >= min_samples
        })
        .collect();
    // Connected components of the core points (union–find), in blocks of 512 core points so
    // that the edge lists in flight stay bounded.
    let core_idx: Vec<usize> = (0..n).filter(|&i| core[i]).collect();
    let mut parent: Vec<usize> = (0..n).collect();
    for block in core_idx.chunks(512) {
        let edges: Vec<Vec<usize>> = block
            .par_iter()
            .map(|&i| {
                radius_neighbors(x, i, eps2, Some(&core))
                    .into_iter()
                    .filter(|&j| j > i)
                    .collect()
            })
            .collect();
        for (&i, js) in block.iter().zip(&edges) {
            for &j in js {
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                if a != b {
                    // The smaller index becomes the root: a component's root is its smallest
                    // core point, the point sklearn starts that cluster from.
                    parent[a.max(b)] = a.min(b);
                }
            }
        }
    }
    // Clusters numbered in order of their smallest core point (sklearn's creation order).
    let mut cluster_of_root: HashMap<usize, usize> = HashMap::new();
    let mut labels: Vec<Option<usize>> = vec![None; n];
    for &i in &core_idx {
        let r = find(&mut parent, i);
        let next = cluster_of_root.len();
        labels[i] = Some(*cluster_of_root.entry(r).or_insert(next));
    }
    // Border points: the first-created cluster among their core neighbours.
    let border: Vec<(usize, Option<usize>)> = (0..n)
        .into_par_iter()
        .filter(|&i| !core[i])
        .map(|i| {
            let c = radius_neighbors(x, i, eps2, Some(&core))
                .into_iter()
                .filter_map(|j| labels[j])
                .min();
            (i, c)
        })
        .collect();
    for (i, c) in border {
        labels[i] = c;
    }
    Ok(relabel_optional(&labels))
}

/// Renumbers `Some` labels by cluster size (`0` the largest), keeping `None`.
fn relabel_optional(labels: &[Option<usize>]) -> Vec<Option<usize>> {
    let idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i].is_some()).collect();
    let ids: Vec<usize> = idx.iter().filter_map(|&i| labels[i]).collect();
    let new = relabel_by_size(&ids);
    let mut out = vec![None; labels.len()];
    for (&i, l) in idx.iter().zip(new) {
        out[i] = Some(l);
    }
    out
}

/// An automatic DBSCAN ε: the `quantile` (in [0, 1], linear interpolation) of the distances
/// from each cell to its `min_samples`-th nearest cell, the cell itself counted first (so a
/// fraction ≈ `quantile` of the cells are core points; Ester et al.'s k-distance heuristic).
/// A zero quantile (duplicated cells) is replaced by the smallest positive k-distance.
///
/// # Errors
/// [`Error::Param`] for `quantile` outside [0, 1] or `min_samples = 0`;
/// [`Error::InvalidInput`] for fewer than `min_samples` cells, non-finite values, or all
/// cells identical.
pub fn auto_dbscan_eps(x: &DenseMatrix, min_samples: usize, quantile: f64) -> Result<f64> {
    if !(0.0..=1.0).contains(&quantile) {
        return Err(Error::Param(format!(
            "DBSCAN ε quantile must be in [0, 1], got {quantile}"
        )));
    }
    if min_samples == 0 {
        return Err(Error::Param(
            "DBSCAN: min_samples must be at least 1".into(),
        ));
    }
    let n = x.n_rows;
    if n < min_samples {
        return Err(Error::InvalidInput(format!(
            "DBSCAN: {n} cells, fewer than min_samples = {min_samples}"
        )));
    }
    check_finite(x, "DBSCAN input")?;
    let mut kd: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let xi = x.row(i);
            let mut d: Vec<f32> = (0..n).map(|j| sq_dist(xi, x.row(j))).collect();
            let (_, v, _) = d.select_nth_unstable_by(min_samples - 1, f32::total_cmp);
            (*v as f64).sqrt()
        })
        .collect();
    kd.sort_by(f64::total_cmp);
    let pos = quantile * (n - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let mut eps = kd[lo] + (kd[hi] - kd[lo]) * (pos - lo as f64);
    if eps <= 0.0 {
        eps = kd.iter().copied().find(|&v| v > 0.0).ok_or_else(|| {
            Error::InvalidInput("DBSCAN: all cells are identical; no ε separates them".into())
        })?;
    }
    Ok(eps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tl::test_util::matrix;

    #[test]
    fn dbscan_follows_sklearn_semantics() {
        // Cluster Y (indices 0–3) is created before cluster X (4–7); point 8 is a border point
        // of both (3 points within ε, itself included, < min_samples = 4) and joins Y, the
        // first cluster that reaches it; point 9 is noise.
        let x = matrix(&[
            &[2.0],
            &[2.1],
            &[2.2],
            &[2.3],
            &[0.0],
            &[0.1],
            &[0.2],
            &[0.3],
            &[1.15],
            &[9.0],
        ]);
        let l = dbscan(&x, 0.9, 4).unwrap();
        // Y has 5 members with the border point, so it is relabelled 0; X is 1.
        assert_eq!(
            l,
            vec![
                Some(0),
                Some(0),
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(1),
                Some(1),
                Some(0),
                None
            ]
        );
        // ε is inclusive (distance ≤ ε), and the point itself counts towards min_samples.
        let pair = matrix(&[&[0.0], &[1.0], &[5.0]]);
        assert_eq!(dbscan(&pair, 1.0, 2).unwrap(), vec![Some(0), Some(0), None]);
        assert_eq!(
            dbscan(&pair, 1.0, 1).unwrap(),
            vec![Some(0), Some(0), Some(1)]
        );
        // Two chained core regions are one cluster (density-connected).
        let chain = matrix(&[&[0.0], &[0.5], &[1.0], &[1.5], &[2.0]]);
        assert_eq!(dbscan(&chain, 0.6, 3).unwrap(), vec![Some(0); 5]);
        assert!(matches!(dbscan(&chain, 0.0, 3), Err(Error::Param(_))));
        assert!(matches!(dbscan(&chain, f64::NAN, 3), Err(Error::Param(_))));
        assert!(matches!(dbscan(&chain, 1.0, 0), Err(Error::Param(_))));
        let mut bad = chain.clone();
        bad.data[2] = f32::NAN;
        assert!(matches!(dbscan(&bad, 1.0, 2), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn auto_eps_is_a_quantile_of_the_k_distances() {
        let line = DenseMatrix::from_vec(10, 1, (0..10).map(|i| i as f32).collect()).unwrap();
        // The 2nd nearest point counting the point itself is the nearest neighbour: 1 for all.
        assert_eq!(auto_dbscan_eps(&line, 2, 0.5).unwrap(), 1.0);
        // The 3rd: distance 1 for interior points, 2 at both ends.
        assert_eq!(auto_dbscan_eps(&line, 3, 0.0).unwrap(), 1.0);
        assert_eq!(auto_dbscan_eps(&line, 3, 1.0).unwrap(), 2.0);
        assert!(matches!(
            auto_dbscan_eps(&line, 3, 1.5),
            Err(Error::Param(_))
        ));
        assert!(matches!(
            auto_dbscan_eps(&line, 11, 0.5),
            Err(Error::InvalidInput(_))
        ));
        let same = DenseMatrix::zeros(5, 2);
        assert!(matches!(
            auto_dbscan_eps(&same, 2, 0.5),
            Err(Error::InvalidInput(_))
        ));
    }
}
