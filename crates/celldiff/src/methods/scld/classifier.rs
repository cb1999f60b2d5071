//! The label classifier behind SCLD's "fraction of generated cells assigned to the requested
//! cluster" (scld-bench).

use super::*;

/// The classifier behind SCLD's "fraction of generated cells assigned to the requested
/// cluster" check: a k-nearest-neighbour majority vote (k = 15, Euclidean) in the PCA-50 space
/// of labelled real cells (sklearn `KNeighborsClassifier` on `PCA(50).fit(real)` scores). Ties
/// go to the label whose tied neighbours are closest in total.
#[derive(Debug, Clone)]
pub struct LabelClassifier {
    pca: crate::tl::pca::Pca,
    scores: DenseMatrix,
    labels: Vec<usize>,
    n_labels: usize,
    k: usize,
}

impl LabelClassifier {
    /// Fits on real cells `x` (`[n_cells, n_genes]`, the model's expression space) with
    /// `labels[i] ∈ 0..n_labels`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a length mismatch or fewer than `k` cells; PCA errors.
    pub fn fit(x: &DenseMatrix, labels: &[usize], n_pcs: usize, k: usize) -> Result<Self> {
        if labels.len() != x.n_rows || x.n_rows < k.max(2) {
            return Err(Error::InvalidInput(format!(
                "label classifier: {} cells with {} labels (need ≥ {k} cells, one label each)",
                x.n_rows,
                labels.len()
            )));
        }
        let pca = crate::tl::pca::Pca::fit(x, n_pcs)?;
        let scores = pca.transform(x);
        Ok(Self {
            pca,
            scores,
            n_labels: labels.iter().max().map_or(0, |m| m + 1),
            labels: labels.to_vec(),
            k,
        })
    }

    /// Predicted label of every row of `q` (`[n, n_genes]`) → `[n]`.
    pub fn predict(&self, q: &DenseMatrix) -> Vec<usize> {
        use rayon::prelude::*;
        let qs = self.pca.transform(q);
        let d = qs.n_cols;
        (0..qs.n_rows)
            .into_par_iter()
            .map(|i| {
                let a = qs.row(i);
                let mut dist: Vec<(f32, usize)> = (0..self.scores.n_rows)
                    .map(|j| {
                        let b = self.scores.row(j);
                        let s: f32 = (0..d).map(|t| (a[t] - b[t]) * (a[t] - b[t])).sum();
                        (s, j)
                    })
                    .collect();
                let k = self.k.min(dist.len());
                dist.select_nth_unstable_by(k - 1, |x, y| x.0.total_cmp(&y.0));
                let mut votes = vec![(0usize, 0f32); self.n_labels];
                for &(s, j) in &dist[..k] {
                    let v = &mut votes[self.labels[j]];
                    v.0 += 1;
                    v.1 += s.sqrt();
                }
                (0..self.n_labels)
                    .max_by(|&x, &y| {
                        votes[x]
                            .0
                            .cmp(&votes[y].0)
                            .then(votes[y].1.total_cmp(&votes[x].1))
                    })
                    .unwrap_or(0)
            })
            .collect()
    }
}
