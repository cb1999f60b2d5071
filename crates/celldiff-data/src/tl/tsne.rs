//! t-SNE of cell embeddings (DiffVAE's cell-type identification, Bica et al., Sci. Rep. 2020).
//!
//! **t-SNE** ([`tsne`]): Barnes–Hut t-SNE (van der Maaten 2014) of the crate `bhtsne`
//! 0.7.13, Euclidean, perplexity 30 (sklearn's default; lowered to ⌊(n − 1)/3⌋ for small n),
//! θ = 0.5, 1000 epochs, learning rate `max(n / 12 / 4, 50)`. `bhtsne` has no seed
//! parameter (its random initialisation draws from the thread RNG), so the initial layout
//! is drawn here from a seeded N(0, 10⁻⁸ I) (the same distribution) and passed as its
//! initial embedding. Its vantage-point tree also draws pivots from the thread RNG, which
//! reorders tied neighbours between runs, so the 3·perplexity exact nearest neighbours
//! (brute force, ties by index) are computed here and passed in; and it runs in a
//! one-thread rayon pool because its P normalisation and per-epoch recentring are rayon
//! float sums whose association order depends on work stealing. A seed then gives one
//! layout, bit for bit (at the cost of the second core).

use bhtsne::{Neighbor, tSNE};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{check_finite, sq_dist};
use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};

/// Parameters of [`tsne`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TsneOptions {
    /// Perplexity (sklearn default 30); lowered to ⌊(n − 1)/3⌋ when there are few cells.
    pub perplexity: f64,
    /// Barnes–Hut accuracy θ > 0 (0.5; smaller is slower and more exact).
    pub theta: f64,
    /// Gradient-descent epochs (1000; early exaggeration 12 for the first 250).
    pub epochs: usize,
    /// Seed of the initial layout.
    pub seed: u64,
}

impl Default for TsneOptions {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            theta: 0.5,
            epochs: 1000,
            seed: 0,
        }
    }
}

impl TsneOptions {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::Param`] for a perplexity or θ that is not a positive number, or 0 epochs.
    pub fn validate(&self) -> Result<()> {
        if !(self.perplexity.is_finite() && self.perplexity > 0.0) {
            return Err(Error::Param(format!(
                "t-SNE perplexity must be a positive number, got {}",
                self.perplexity
            )));
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            return Err(Error::Param(format!(
                "t-SNE θ must be a positive number, got {}",
                self.theta
            )));
        }
        if self.epochs == 0 {
            return Err(Error::Param("t-SNE epochs must be at least 1".into()));
        }
        Ok(())
    }
}

/// Barnes–Hut t-SNE of the rows of `x` (`[n_cells, d]`, e.g. the latent means) to 2-D
/// (see the module docs for the parameters and how it is seeded).
///
/// # Shapes
/// `[n_cells, d]` → `[n_cells, 2]` (arbitrary units).
///
/// # Errors
/// [`Error::Param`] for invalid `opts`; [`Error::InvalidInput`] for fewer than 4 cells, no
/// columns, or non-finite values.
pub fn tsne(x: &DenseMatrix, opts: &TsneOptions) -> Result<DenseMatrix> {
    opts.validate()?;
    let n = x.n_rows;
    if n < 4 || x.n_cols == 0 {
        return Err(Error::InvalidInput(format!(
            "t-SNE needs at least 4 cells and 1 dimension, got {n} × {}",
            x.n_cols
        )));
    }
    check_finite(x, "t-SNE input")?;
    // bhtsne panics unless n − 1 ≥ 3·⌊perplexity⌋.
    let perplexity = opts.perplexity.min(((n - 1) / 3) as f64).max(1.0);
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let normal = Normal::new(0.0f32, 1e-4).map_err(|e| Error::Internal(e.to_string()))?;
    let init: Vec<f32> = (0..2 * n).map(|_| normal.sample(&mut rng)).collect();
    // Exact neighbours, ties by index: bhtsne's own vantage-point tree picks its pivots with
    // the thread RNG, which changes the neighbour order (and the float sums) between runs.
    let k = ((3.0 * perplexity) as usize).clamp(1, n - 1);
    let neighbors: Vec<Vec<Neighbor<f32>>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let xi = x.row(i);
            let mut d: Vec<(f32, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (sq_dist(xi, x.row(j)), j))
                .collect();
            let by = |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            if k < d.len() {
                d.select_nth_unstable_by(k - 1, by);
                d.truncate(k);
            }
            d.sort_by(by);
            d.into_iter()
                .map(|(d2, j)| Neighbor {
                    index: j,
                    distance: d2.sqrt(),
                })
                .collect()
        })
        .collect();
    let rows: Vec<&[f32]> = (0..n).map(|i| x.row(i)).collect();
    // One rayon thread: bhtsne's P normalisation and per-epoch recentring are rayon float
    // sums whose association order depends on work stealing, i.e. not reproducible with
    // several threads.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| Error::Internal(format!("t-SNE thread pool: {e}")))?;
    let y = pool.install(|| {
        let mut t: tSNE<f32, &[f32]> = tSNE::new(&rows);
        t.perplexity(perplexity as f32)
            .epochs(opts.epochs)
            .initial_embedding(init);
        t.barnes_hut_with_neighbors(opts.theta as f32, &neighbors);
        t.embedding()
    });
    let out = DenseMatrix::from_vec(n, 2, y)?;
    if out.data.iter().any(|v| !v.is_finite()) {
        return Err(Error::Internal(
            "t-SNE produced non-finite coordinates".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tl::kmeans::kmeans;
    use crate::tl::leiden::adjusted_rand_index;
    use crate::tl::test_util::blobs;

    #[test]
    fn tsne_is_seeded_separates_blobs_and_handles_few_cells() {
        let (x, truth) = blobs(&[[0.0, 0.0, 0.0], [10.0, 10.0, 0.0]], 30, 1.0, 5);
        let o = TsneOptions {
            epochs: 500,
            seed: 7,
            ..TsneOptions::default()
        };
        let a = tsne(&x, &o).unwrap();
        assert_eq!((a.n_rows, a.n_cols), (60, 2));
        assert_eq!(a, tsne(&x, &o).unwrap(), "same seed, same layout");
        assert_ne!(
            a,
            tsne(
                &x,
                &TsneOptions {
                    seed: 8,
                    ..o.clone()
                }
            )
            .unwrap()
        );
        let l = kmeans(&a, 2, 3, 0).unwrap();
        assert_eq!(adjusted_rand_index(&l, &truth).unwrap(), 1.0);
        // 6 cells: perplexity lowered to 1 instead of bhtsne's panic.
        let few = x.select_rows(&[0, 1, 2, 30, 31, 32]);
        assert_eq!(tsne(&few, &o).unwrap().n_rows, 6);
        assert!(matches!(
            tsne(&x.select_rows(&[0, 1, 2]), &o),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            tsne(
                &x,
                &TsneOptions {
                    perplexity: 0.0,
                    ..o
                }
            ),
            Err(Error::Param(_))
        ));
    }
}
