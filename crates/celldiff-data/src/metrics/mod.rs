//! Real-vs-generated evaluation of synthetic cells, following the protocol of scDiffusion
//! (Luo et al., Bioinformatics 2024) as used by SCLD (Wang et al., arXiv 2312.14220).
//!
//! [`evaluate`] takes real and generated cells in the same expression space (e.g.
//! log1p-normalised highly variable genes, same gene order) and returns [`EvalMetrics`]:
//!
//! 1. **Balance**: the larger set is subsampled (seeded, without replacement) to the size of
//!    the smaller, and both are capped at [`EvalOptions::max_cells`].
//! 2. **PCA-50 on the union** of the balanced real and generated cells ([`crate::tl::pca::Pca`],
//!    exact, centred). Fitting on the real cells alone makes the components fit those cells'
//!    noise: on Kang PBMC (two random halves of the same 1975 real cells, 2000 genes of
//!    highest variance, 400 cells per set) a random forest then separates real from *real*
//!    at AUC 0.905, against 0.482 with the union fit (test
//!    `kang_halves_indistinguishable_only_with_union_pca`). The real-only fit is kept as
//!    [`evaluate_with_pca_on_real_only`], a positive control only.
//! 3. **Stratified train/test split** (default 75/25, seeded) of the PCA scores.
//! 4. **Random-forest AUC**: sklearn-style `RandomForestClassifier(n_estimators=1000,
//!    max_depth=5, max_features="sqrt", bootstrap=True)` trained on the train split to tell
//!    generated (positive) from real; ROC AUC of its `predict_proba` on the test split.
//!    Written here (`forest.rs`): smartcore 0.7's forest has no `predict_proba` and
//!    linfa-ensemble returns vote fractions and pins `sprs =0.11.2`/`ndarray 0.16`.
//! 5. **kNN AUC**: each test cell's score is the share of generated cells among its `k = 5`
//!    nearest train cells (Euclidean, PCA space; sklearn `KNeighborsClassifier.predict_proba`);
//!    ROC AUC on the test split. Brute force with one `faer` GEMM per block (exact, a few ms
//!    for thousands of cells in 50 dimensions).
//! 6. **MMD** on the PCA scores of all balanced cells (not only the test split): unbiased
//!    MMD² (Gretton et al. 2012) with the SCLD multi-scale kernel
//!    `k(x, y) = Σ_{σ ∈ {m/2, m, 2m}} exp(−‖x − y‖² / (2σ²))` (a **sum** of three RBF
//!    kernels, so `k(x, x) = 3`), where `m` is the median over all cells (real ∪ generated)
//!    of the mean distance to their 25 nearest other cells. About 0 (can be slightly
//!    negative) when the two sets come from one distribution.
//! 7. **Marginals**: Pearson and Spearman correlation, across genes, of the per-gene means
//!    and of the per-gene variances (`ddof = 1`) of real vs generated cells (balanced sets),
//!    in expression space.
//!
//! 8. **Structure** (issue 18; RF AUC on ~140 held-out cells is noisy): the mean absolute
//!    difference between the gene–gene Pearson correlation matrices of real and generated
//!    cells over the [`CORR_GENES`] genes of highest variance in the real cells (off-diagonal
//!    pairs; a gene constant in one set counts as correlation 0), and the Pearson correlation
//!    across genes of the per-gene zero fractions (NaN when a set has no zeros in any gene).
//!
//! AUCs near 0.5 and MMD near 0 mean "indistinguishable"; correlations near 1 mean matching
//! marginals. Crates: `faer` (PCA, distance GEMMs), `rayon` (trees, blocks), `rand` (seeded
//! `StdRng`: same seed and same inputs give bit-identical metrics), `libm` (an SSE-only
//! `exp` for the MMD kernel; see `knn.rs`).
//!
//! Runtime (dev-profile test build, 2 shared cores): 2 × 987 Kang cells × 2000 genes in
//! ≈ 3.3 s; 2 × 1975 cells in ≈ 3.3–5 s, of which PCA ≈ 1.2 s, the 1000-tree forest ≈ 2 s,
//! MMD ≈ 0.3 s, kNN ≈ 0.02 s (ignored test `evaluate_timing`).

mod forest;
mod knn;
mod stats;
#[cfg(test)]
mod tests;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub use stats::{average_ranks, ks_statistic, pearson, roc_auc, spearman};

use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};
use crate::tl::pca::Pca;

/// Fewest cells accepted in either set (real or generated).
pub const MIN_CELLS: usize = 10;

/// Settings of [`evaluate`]; the defaults are the scDiffusion/SCLD protocol.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct EvalOptions {
    /// Principal components of the evaluation space (default 50; clamped to
    /// `min(cells, genes) − 1`).
    pub n_pcs: usize,
    /// Trees of the random forest (default 1000).
    pub rf_trees: usize,
    /// Maximum depth of each tree (default 5; the root has depth 0).
    pub rf_max_depth: usize,
    /// Neighbours of the kNN classifier (default 5).
    pub knn_k: usize,
    /// Neighbours for the MMD bandwidth heuristic (default 25).
    pub mmd_knn: usize,
    /// Fraction of each class held out for the AUCs (default 0.25).
    pub test_fraction: f64,
    /// Seed of subsampling, split and forest (default 0).
    pub seed: u64,
    /// Cap on the cells used from each set after balancing (default `None`: no cap).
    pub max_cells: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            n_pcs: 50,
            rf_trees: 1000,
            rf_max_depth: 5,
            knn_k: 5,
            mmd_knn: 25,
            test_fraction: 0.25,
            seed: 0,
            max_cells: None,
        }
    }
}

/// Result of [`evaluate`]. AUCs are in `[0, 1]` (0.5 = indistinguishable), correlations in
/// `[-1, 1]` (NaN if a vector is constant), MMD² is unitless (PCA-space kernel values).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalMetrics {
    /// ROC AUC of a random forest telling generated from real cells (test split).
    pub rf_auc: f64,
    /// ROC AUC of a kNN (k = `knn_k`) classifier, same split.
    pub knn_auc: f64,
    /// Unbiased MMD² with the multi-scale RBF kernel, all balanced cells, PCA space.
    pub mmd: f64,
    /// Pearson correlation of per-gene means (real vs generated).
    pub mean_pearson: f64,
    /// Spearman correlation of per-gene means.
    pub mean_spearman: f64,
    /// Pearson correlation of per-gene variances (`ddof = 1`).
    pub var_pearson: f64,
    /// Spearman correlation of per-gene variances.
    pub var_spearman: f64,
    /// Mean |r_real − r_generated| over gene pairs of the [`CORR_GENES`] most variable genes
    /// (0 = the same correlation structure).
    #[serde(default = "nan")]
    pub corr_mad: f64,
    /// Pearson correlation across genes of the per-gene zero fractions.
    #[serde(default = "nan")]
    pub zero_fraction_pearson: f64,
    /// Real cells evaluated (after balancing / `max_cells`).
    pub n_real: usize,
    /// Generated cells evaluated (after balancing / `max_cells`).
    pub n_generated: usize,
}

/// Genes (of highest variance in the real cells) of the correlation-structure metric.
pub const CORR_GENES: usize = 200;

fn nan() -> f64 {
    f64::NAN
}

/// Gene–gene Pearson correlations `[p·p]` of the columns `genes` of `x` (a constant column
/// gives 0).
fn gene_correlations(x: &DenseMatrix, genes: &[usize]) -> Vec<f64> {
    let p = genes.len();
    let n = x.n_rows as f64;
    let cols: Vec<Vec<f64>> = genes
        .iter()
        .map(|&j| {
            let v: Vec<f64> = (0..x.n_rows).map(|i| x.row(i)[j] as f64).collect();
            let m = v.iter().sum::<f64>() / n;
            let c: Vec<f64> = v.iter().map(|a| a - m).collect();
            let norm = c.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm > 0.0 {
                c.iter().map(|a| a / norm).collect()
            } else {
                vec![0.0; c.len()]
            }
        })
        .collect();
    let mut r = vec![0.0; p * p];
    for a in 0..p {
        for b in a..p {
            let v: f64 = cols[a].iter().zip(&cols[b]).map(|(x, y)| x * y).sum();
            r[a * p + b] = v;
            r[b * p + a] = v;
        }
    }
    r
}

/// The structure metrics of the module docs (step 8): `(corr_mad, zero_fraction_pearson)`.
pub fn structure_metrics(real: &DenseMatrix, generated: &DenseMatrix) -> (f64, f64) {
    let (_, rv) = gene_mean_var(real);
    let mut order: Vec<usize> = (0..real.n_cols).collect();
    order.sort_by(|&a, &b| rv[b].total_cmp(&rv[a]).then(a.cmp(&b)));
    order.truncate(CORR_GENES.min(real.n_cols));
    let p = order.len();
    let (cr, cg) = (
        gene_correlations(real, &order),
        gene_correlations(generated, &order),
    );
    let pairs = (p * p.saturating_sub(1)) as f64;
    let corr_mad = if pairs > 0.0 {
        let mut s = 0.0;
        for a in 0..p {
            for b in 0..p {
                if a != b {
                    s += (cr[a * p + b] - cg[a * p + b]).abs();
                }
            }
        }
        s / pairs
    } else {
        f64::NAN
    };
    let zf = |x: &DenseMatrix| -> Vec<f64> {
        let mut z = vec![0.0; x.n_cols];
        for i in 0..x.n_rows {
            for (a, &v) in z.iter_mut().zip(x.row(i)) {
                *a += f64::from(u8::from(v == 0.0));
            }
        }
        z.iter().map(|a| a / x.n_rows.max(1) as f64).collect()
    };
    (corr_mad, pearson(&zf(real), &zf(generated)))
}

/// Which cells the evaluation PCA is fitted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PcaFit {
    Union,
    RealOnly,
}

/// Evaluates `generated` cells against `real` ones (scDiffusion/SCLD protocol; see the module
/// docs for every step).
///
/// `real` is `[n_real, n_genes]` and `generated` `[n_generated, n_genes]`, in the same
/// expression space with the same gene order (e.g. log1p-normalised HVGs).
///
/// # Errors
/// - [`Error::InvalidInput`] if the gene counts differ, a set has fewer than [`MIN_CELLS`]
///   cells, or a set holds NaN/Inf (the message names the set, cell and gene).
/// - [`Error::Param`] for zero `n_pcs`/`rf_trees`/`rf_max_depth`/`knn_k`/`mmd_knn`,
///   `test_fraction` outside `(0, 1)`, or `max_cells < MIN_CELLS`.
/// - [`Error::Internal`] if the PCA fails to converge.
pub fn evaluate(
    real: &DenseMatrix,
    generated: &DenseMatrix,
    opts: &EvalOptions,
) -> Result<EvalMetrics> {
    evaluate_impl(real, generated, opts, PcaFit::Union)
}

/// As [`evaluate`] but with the PCA fitted on the balanced **real** cells only (their
/// components overfit those cells). A positive control that demonstrates why [`evaluate`]
/// fits on the union: on two halves of the same real data, this reports a high RF AUC where
/// [`evaluate`] reports ≈ 0.5. Not for judging models.
///
/// # Errors
/// As [`evaluate`].
pub fn evaluate_with_pca_on_real_only(
    real: &DenseMatrix,
    generated: &DenseMatrix,
    opts: &EvalOptions,
) -> Result<EvalMetrics> {
    evaluate_impl(real, generated, opts, PcaFit::RealOnly)
}

fn check_set(x: &DenseMatrix, name: &str) -> Result<()> {
    if x.n_rows < MIN_CELLS {
        return Err(Error::InvalidInput(format!(
            "{name} cells: {} cells, the evaluation needs at least {MIN_CELLS}",
            x.n_rows
        )));
    }
    if let Some(pos) = x.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "{name} cells hold a non-finite value ({}) at cell {}, gene {}",
            x.data[pos],
            pos / x.n_cols.max(1),
            pos % x.n_cols.max(1)
        )));
    }
    Ok(())
}

fn check_options(opts: &EvalOptions) -> Result<()> {
    let zero = [
        ("n_pcs", opts.n_pcs),
        ("rf_trees", opts.rf_trees),
        ("rf_max_depth", opts.rf_max_depth),
        ("knn_k", opts.knn_k),
        ("mmd_knn", opts.mmd_knn),
    ];
    if let Some((name, _)) = zero.iter().find(|(_, v)| *v == 0) {
        return Err(Error::Param(format!(
            "evaluation option {name} must be at least 1"
        )));
    }
    if !(opts.test_fraction > 0.0 && opts.test_fraction < 1.0) {
        return Err(Error::Param(format!(
            "evaluation option test_fraction must be in (0, 1), got {}",
            opts.test_fraction
        )));
    }
    if let Some(m) = opts.max_cells
        && m < MIN_CELLS
    {
        return Err(Error::Param(format!(
            "evaluation option max_cells = {m} is below the minimum of {MIN_CELLS}"
        )));
    }
    Ok(())
}

/// `n` sorted distinct indices from `0..total` (all of them, in order, if `n >= total`).
fn subsample(total: usize, n: usize, rng: &mut StdRng) -> Vec<usize> {
    if n >= total {
        return (0..total).collect();
    }
    let mut idx = rand::seq::index::sample(rng, total, n).into_vec();
    idx.sort_unstable();
    idx
}

/// Per-gene mean and `ddof = 1` variance of `x` (`[n, genes]`), in `f64`.
fn gene_mean_var(x: &DenseMatrix) -> (Vec<f64>, Vec<f64>) {
    let (n, p) = (x.n_rows, x.n_cols);
    let mut mean = vec![0.0f64; p];
    for i in 0..n {
        for (m, &v) in mean.iter_mut().zip(x.row(i)) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0f64; p];
    for i in 0..n {
        for ((s, &v), &m) in var.iter_mut().zip(x.row(i)).zip(&mean) {
            let d = v as f64 - m;
            *s += d * d;
        }
    }
    var.iter_mut().for_each(|s| *s /= (n - 1) as f64);
    (mean, var)
}

fn evaluate_impl(
    real: &DenseMatrix,
    generated: &DenseMatrix,
    opts: &EvalOptions,
    fit: PcaFit,
) -> Result<EvalMetrics> {
    check_options(opts)?;
    if real.n_cols != generated.n_cols {
        return Err(Error::InvalidInput(format!(
            "real cells have {} genes, generated cells {}: both must be in the same gene space",
            real.n_cols, generated.n_cols
        )));
    }
    check_set(real, "real")?;
    check_set(generated, "generated")?;

    let mut rng = StdRng::seed_from_u64(opts.seed);
    let n = real
        .n_rows
        .min(generated.n_rows)
        .min(opts.max_cells.unwrap_or(usize::MAX));
    let real_b = real.select_rows(&subsample(real.n_rows, n, &mut rng));
    let gen_b = generated.select_rows(&subsample(generated.n_rows, n, &mut rng));

    // PCA space: rows 0..n real, n..2n generated.
    let mut union = real_b.clone();
    union.n_rows += gen_b.n_rows;
    union.data.extend_from_slice(&gen_b.data);
    let pca = match fit {
        PcaFit::Union => Pca::fit(&union, opts.n_pcs)?,
        PcaFit::RealOnly => Pca::fit(&real_b, opts.n_pcs)?,
    };
    let z = pca.transform(&union);
    let d = z.n_cols;
    let labels: Vec<bool> = (0..2 * n).map(|i| i >= n).collect();

    // Stratified split: the same number of test cells from each (equal-sized) class.
    let n_test = ((opts.test_fraction * n as f64).round() as usize).clamp(1, n - 1);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for offset in [0, n] {
        let mut idx: Vec<usize> = (offset..offset + n).collect();
        idx.shuffle(&mut rng);
        test.extend_from_slice(&idx[..n_test]);
        train.extend_from_slice(&idx[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    let z_train = z.select_rows(&train);
    let z_test = z.select_rows(&test);
    let y_train: Vec<bool> = train.iter().map(|&i| labels[i]).collect();
    let y_test: Vec<bool> = test.iter().map(|&i| labels[i]).collect();

    // Random forest.
    let params = forest::ForestParams {
        n_trees: opts.rf_trees,
        max_depth: opts.rf_max_depth,
        seed: rng.random::<u64>(),
    };
    let rf = forest::RandomForest::fit(&z_train.data, train.len(), d, &y_train, params);
    let rf_auc = roc_auc(&rf.predict_proba(&z_test.data), &y_test);

    // kNN.
    let ref_m = knn::to_mat(&z_train.data, train.len(), d);
    let query_m = knn::to_mat(&z_test.data, test.len(), d);
    let k = opts.knn_k.min(train.len());
    let knn_scores = knn::knn_positive_fraction(ref_m.as_ref(), &y_train, query_m.as_ref(), k);
    let knn_auc = roc_auc(&knn_scores, &y_test);

    // MMD on all balanced cells.
    let z_all = knn::to_mat(&z.data, 2 * n, d);
    let mmd = knn::mmd_multiscale(z_all.as_ref(), n, opts.mmd_knn.min(2 * n - 1));
    tracing::debug!(
        "evaluate: {n} + {n} cells, {d} PCs, MMD bandwidth m = {:.4}",
        mmd.median_knn_dist
    );
    let mmd = mmd.mmd2;

    // Marginals in expression space.
    let (rm, rv) = gene_mean_var(&real_b);
    let (gm, gv) = gene_mean_var(&gen_b);
    let (corr_mad, zero_fraction_pearson) = structure_metrics(&real_b, &gen_b);

    Ok(EvalMetrics {
        rf_auc,
        knn_auc,
        mmd,
        mean_pearson: pearson(&rm, &gm),
        mean_spearman: spearman(&rm, &gm),
        var_pearson: pearson(&rv, &gv),
        var_spearman: spearman(&rv, &gv),
        corr_mad,
        zero_fraction_pearson,
        n_real: n,
        n_generated: n,
    })
}
