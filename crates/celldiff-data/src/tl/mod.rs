//! scanpy-style tools (`sc.tl` and `sc.pp.neighbors`): PCA, the kNN graph with UMAP
//! connectivities, Leiden/Louvain clustering and the UMAP layout; and the embeddings and
//! clusterings of DiffVAE's cell-type identification (t-SNE, k-means, DBSCAN).

pub mod dbscan;
pub mod kmeans;
pub mod leiden;
pub mod neighbors;
pub mod pca;
pub mod tsne;
pub mod umap;

use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};

/// Squared Euclidean distance of two rows.
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// [`Error::InvalidInput`] naming the first non-finite value of `x` (`what` names the matrix).
pub(crate) fn check_finite(x: &DenseMatrix, what: &str) -> Result<()> {
    if let Some(k) = x.data.iter().position(|v| !v.is_finite()) {
        let d = x.n_cols.max(1);
        return Err(Error::InvalidInput(format!(
            "{what} holds {} at (cell {}, dimension {}) (0-based)",
            x.data[k],
            k / d,
            k % d
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_util {
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution as _, StandardNormal};

    use crate::anndata::DenseMatrix;

    pub(crate) fn matrix(rows: &[&[f32]]) -> DenseMatrix {
        let d = rows[0].len();
        DenseMatrix::from_vec(
            rows.len(),
            d,
            rows.iter().flat_map(|r| r.to_vec()).collect(),
        )
        .unwrap()
    }

    /// `n` points around each of `centres` (σ = `sd`), and the true group of each point.
    pub(crate) fn blobs(
        centres: &[[f32; 3]],
        n: usize,
        sd: f32,
        seed: u64,
    ) -> (DenseMatrix, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut data = Vec::new();
        let mut truth = Vec::new();
        for (g, c) in centres.iter().enumerate() {
            for _ in 0..n {
                for &v in c {
                    let e: f32 = StandardNormal.sample(&mut rng);
                    data.push(v + sd * e);
                }
                truth.push(g);
            }
        }
        (
            DenseMatrix::from_vec(centres.len() * n, 3, data).unwrap(),
            truth,
        )
    }
}
