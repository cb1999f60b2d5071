//! Element-wise and per-cell/per-gene steps: filtering, `normalize_total`, `log1p`, `scale`,
//! min-max scaling, and the input-kind checks.

mod kind;
mod transform;

use sprs::CsMat;

pub use kind::{DataKind, KindReport, check_counts, detect_kind, inspect_kind};
pub(crate) use kind::{KindAccumulator, cell_gene, check_counts_named};
pub(crate) use transform::{MinMaxAccumulator, normalize_rows_with, resolve_target_sum};
pub use transform::{
    MinMaxStats, ScaleStats, log1p, minmax_scale, minmax_with, normalize_total, scale, scale_with,
};

use crate::anndata::{AnnData, Column, Matrix};
use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// A CSR view of a sparse matrix: `(indptr starting at 0, indices, data)`. Matrices stored in
/// CSC order are converted first (returned as an owned copy).
pub(crate) fn csr_of(c: &CsMat<f32>) -> std::borrow::Cow<'_, CsMat<f32>> {
    if c.is_csr() {
        std::borrow::Cow::Borrowed(c)
    } else {
        std::borrow::Cow::Owned(c.to_csr())
    }
}

/// Row `i`'s `(indices, values)` of a CSR matrix given its raw parts.
#[inline]
fn row_range(indptr: &[usize], i: usize) -> std::ops::Range<usize> {
    indptr[i]..indptr[i + 1]
}

/// Per-row sums of `f(value)` over stored values, accumulated in `f64` (zeros must map to 0).
pub(crate) fn row_sums_with(x: &Matrix, f: impl Fn(f32) -> f64) -> Vec<f64> {
    match x {
        Matrix::Dense(d) => (0..d.n_rows)
            .map(|i| d.row(i).iter().map(|&v| f(v)).sum())
            .collect(),
        Matrix::Csr(c) => {
            let c = csr_of(c);
            let indptr = c.indptr().to_proper().into_owned();
            let data = c.data();
            (0..c.rows())
                .map(|i| data[row_range(&indptr, i)].iter().map(|&v| f(v)).sum())
                .collect()
        }
    }
}

/// Per-row number of stored values that are non-zero (`filter_cells(min_genes)`'s count).
pub(crate) fn row_nnz(x: &Matrix) -> Vec<usize> {
    match x {
        Matrix::Dense(d) => (0..d.n_rows)
            .map(|i| d.row(i).iter().filter(|&&v| v != 0.0).count())
            .collect(),
        Matrix::Csr(c) => {
            let c = csr_of(c);
            let indptr = c.indptr().to_proper().into_owned();
            let data = c.data();
            (0..c.rows())
                .map(|i| {
                    data[row_range(&indptr, i)]
                        .iter()
                        .filter(|&&v| v != 0.0)
                        .count()
                })
                .collect()
        }
    }
}

/// Per-column sums (`f64`) and non-zero counts (`filter_genes`' statistics).
pub(crate) fn col_sums_nnz(x: &Matrix) -> (Vec<f64>, Vec<usize>) {
    let n_cols = x.n_cols();
    let mut sums = vec![0.0f64; n_cols];
    let mut nnz = vec![0usize; n_cols];
    x.for_each_nonzero(|_, j, v| {
        sums[j] += v as f64;
        if v != 0.0 {
            nnz[j] += 1;
        }
    });
    (sums, nnz)
}

/// First pass of [`col_mean_var_with`], fed one block of consecutive rows at a time (in row
/// order): per-column sums of `f(value)` over the stored values, in `f64`.
///
/// Feeding the blocks of a matrix in order gives bit for bit the sums of the whole matrix
/// (every column is accumulated over its rows in ascending order either way).
pub(crate) struct ColSums {
    sums: Vec<f64>,
    n_rows: usize,
}

impl ColSums {
    /// Empty sums over `n_cols` columns.
    pub(crate) fn new(n_cols: usize) -> Self {
        Self {
            sums: vec![0.0; n_cols],
            n_rows: 0,
        }
    }

    /// Adds the rows of `block` (`[rows, n_cols]`, the next rows after those already added).
    pub(crate) fn add(&mut self, block: &Matrix, f: impl Fn(f32) -> f64) {
        debug_assert_eq!(block.n_cols(), self.sums.len());
        self.n_rows += block.n_rows();
        let sums = &mut self.sums;
        block.for_each_nonzero(|_, j, v| sums[j] += f(v));
    }

    /// The per-column means (sums over the rows added) and the second pass that uses them.
    pub(crate) fn into_deviations(self) -> ColDeviations {
        let n = self.n_rows as f64;
        let n_cols = self.sums.len();
        ColDeviations {
            means: self.sums.iter().map(|s| s / n).collect(),
            acc: vec![0.0; n_cols],
            stored: vec![0; n_cols],
            n_rows: self.n_rows,
            seen: 0,
        }
    }
}

/// Second pass of [`col_mean_var_with`] (from [`ColSums::into_deviations`]): per-column sums of
/// squared deviations of the stored values from the mean, fed with the same blocks in the same
/// order as the first pass.
pub(crate) struct ColDeviations {
    means: Vec<f64>,
    acc: Vec<f64>,
    stored: Vec<usize>,
    n_rows: usize,
    seen: usize,
}

impl ColDeviations {
    /// Adds the rows of `block` (the same values as given to [`ColSums::add`]).
    pub(crate) fn add(&mut self, block: &Matrix, f: impl Fn(f32) -> f64) {
        debug_assert_eq!(block.n_cols(), self.means.len());
        self.seen += block.n_rows();
        let (means, acc, stored) = (&self.means, &mut self.acc, &mut self.stored);
        block.for_each_nonzero(|_, j, v| {
            let d = f(v) - means[j];
            acc[j] += d * d;
            stored[j] += 1;
        });
    }

    /// Per-column `(mean, variance with ddof = 1)`; the variance is NaN with fewer than 2 rows.
    pub(crate) fn finish(self) -> (Vec<f64>, Vec<f64>) {
        debug_assert_eq!(self.seen, self.n_rows, "deviation pass saw other rows");
        let n_rows = self.n_rows;
        let n = n_rows as f64;
        let vars = (0..self.means.len())
            .map(|j| {
                if n_rows < 2 {
                    return f64::NAN;
                }
                let zeros = (n_rows - self.stored[j]) as f64;
                let m = self.means[j];
                let v = (self.acc[j] + zeros * m * m) / n;
                v * (n / (n - 1.0))
            })
            .collect();
        (self.means, vars)
    }
}

/// Per-column mean and variance (`ddof = 1`) of `f(value)`, in `f64`, with the two-pass
/// algorithm scanpy uses for sparse data (`f(0)` must be 0: unstored entries count as zeros).
///
/// Matches `fast_array_utils.stats.mean_var(X, axis=0, correction=1)` /
/// `scanpy.pp._utils._get_mean_var`. The passes are [`ColSums`] and [`ColDeviations`], which
/// streaming code feeds block by block with the same result.
pub(crate) fn col_mean_var_with(x: &Matrix, f: impl Fn(f32) -> f64) -> (Vec<f64>, Vec<f64>) {
    let mut sums = ColSums::new(x.n_cols());
    sums.add(x, &f);
    let mut dev = sums.into_deviations();
    dev.add(x, &f);
    dev.finish()
}

/// Per-column mean and variance (`ddof = 1`) in `f64` of the values as stored.
pub(crate) fn col_mean_var(x: &Matrix) -> (Vec<f64>, Vec<f64>) {
    col_mean_var_with(x, |v| v as f64)
}

fn apply_values(x: &mut Matrix, f: impl Fn(f32) -> f32) {
    match x {
        Matrix::Dense(d) => d.data.iter_mut().for_each(|v| *v = f(*v)),
        Matrix::Csr(c) => c.data_mut().iter_mut().for_each(|v| *v = f(*v)),
    }
}

// ---------------------------------------------------------------------------------------------
// Filtering
// ---------------------------------------------------------------------------------------------

/// Keeps the cells with at least `min_counts` total counts and at least `min_genes` expressed
/// (non-zero) genes, as `scanpy.pp.filter_cells(adata, min_counts=..., min_genes=...)`.
///
/// `adata.x` is `[n_cells, n_genes]`, usually raw counts. Returns the filtered copy (with
/// `obs['n_counts']` and/or `obs['n_genes']` set, as scanpy does for the criteria given) and the
/// boolean mask over the input cells (`true` = kept). Unlike scanpy, both criteria may be given
/// at once (a cell must pass both).
///
/// # Errors
/// - [`Error::Param`] if neither criterion is given.
/// - [`Error::InvalidInput`] if no cell passes, naming the filter and threshold.
pub fn filter_cells(
    adata: &AnnData,
    min_counts: Option<f64>,
    min_genes: Option<usize>,
) -> Result<(AnnData, Vec<bool>)> {
    if min_counts.is_none() && min_genes.is_none() {
        return Err(Error::Param(
            "filter_cells: provide one of `min_counts`, `min_genes`".into(),
        ));
    }
    let counts = min_counts.map(|_| row_sums_with(&adata.x, |v| v as f64));
    let genes = min_genes.map(|_| row_nnz(&adata.x));
    let n = adata.n_obs();
    let mask: Vec<bool> = (0..n)
        .map(|i| {
            passes_filter(
                counts.as_ref().map_or(0.0, |c| c[i]),
                genes.as_ref().map_or(0, |g| g[i]),
                min_counts,
                min_genes,
            )
        })
        .collect();
    let idx: Vec<usize> = (0..n).filter(|&i| mask[i]).collect();
    if idx.is_empty() {
        return Err(filter_cells_removed_all(n, min_counts, min_genes));
    }
    let mut out = adata.select_obs(&idx);
    if let Some(c) = counts {
        out.set_obs(
            "n_counts",
            Column::Numeric(idx.iter().map(|&i| c[i]).collect()),
        );
    }
    if let Some(g) = genes {
        out.set_obs(
            "n_genes",
            Column::Numeric(idx.iter().map(|&i| g[i] as f64).collect()),
        );
    }
    Ok((out, mask))
}

/// Keeps the genes with at least `min_counts` total counts and expressed (non-zero) in at least
/// `min_cells` cells, as `scanpy.pp.filter_genes(adata, min_counts=..., min_cells=...)`.
///
/// `adata.x` is `[n_cells, n_genes]`, usually raw counts. Returns the filtered copy (with
/// `var['n_counts']` and/or `var['n_cells']` set, as scanpy does) and the boolean mask over the
/// input genes (`true` = kept). Both criteria may be given at once (a gene must pass both).
///
/// # Errors
/// - [`Error::Param`] if neither criterion is given.
/// - [`Error::InvalidInput`] if no gene passes, naming the filter and threshold.
pub fn filter_genes(
    adata: &AnnData,
    min_counts: Option<f64>,
    min_cells: Option<usize>,
) -> Result<(AnnData, Vec<bool>)> {
    if min_counts.is_none() && min_cells.is_none() {
        return Err(Error::Param(
            "filter_genes: provide one of `min_counts`, `min_cells`".into(),
        ));
    }
    let (sums, nnz) = col_sums_nnz(&adata.x);
    let n = adata.n_vars();
    let mask: Vec<bool> = (0..n)
        .map(|j| passes_filter(sums[j], nnz[j], min_counts, min_cells))
        .collect();
    let idx: Vec<usize> = (0..n).filter(|&j| mask[j]).collect();
    if idx.is_empty() {
        return Err(filter_genes_removed_all(n, min_counts, min_cells));
    }
    let mut out = adata.select_vars(&idx);
    if min_counts.is_some() {
        out.set_var(
            "n_counts",
            Column::Numeric(idx.iter().map(|&j| sums[j]).collect()),
        );
    }
    if min_cells.is_some() {
        out.set_var(
            "n_cells",
            Column::Numeric(idx.iter().map(|&j| nnz[j] as f64).collect()),
        );
    }
    Ok((out, mask))
}

/// The rule of [`filter_cells`] (per cell) and [`filter_genes`] (per gene): at least
/// `min_counts` in total (`total`, counts) and at least `min_n` non-zero entries (`n_nonzero`);
/// a threshold that is `None` always passes (its statistic is then ignored).
pub(crate) fn passes_filter(
    total: f64,
    n_nonzero: usize,
    min_counts: Option<f64>,
    min_n: Option<usize>,
) -> bool {
    min_counts.is_none_or(|m| total >= m) && min_n.is_none_or(|m| n_nonzero >= m)
}

/// The [`Error::InvalidInput`] of [`filter_cells`] when no cell of the `n` passes.
pub(crate) fn filter_cells_removed_all(
    n: usize,
    min_counts: Option<f64>,
    min_genes: Option<usize>,
) -> Error {
    Error::InvalidInput(format!(
        "filter_cells({}) removed all {n} cells: lower min_genes",
        describe_thresholds(&[
            ("min_counts", min_counts),
            ("min_genes", min_genes.map(|m| m as f64))
        ])
    ))
}

/// The [`Error::InvalidInput`] of [`filter_genes`] when no gene of the `n` passes.
pub(crate) fn filter_genes_removed_all(
    n: usize,
    min_counts: Option<f64>,
    min_cells: Option<usize>,
) -> Error {
    Error::InvalidInput(format!(
        "filter_genes({}) removed all {n} genes: lower min_cells",
        describe_thresholds(&[
            ("min_counts", min_counts),
            ("min_cells", min_cells.map(|m| m as f64))
        ])
    ))
}

fn describe_thresholds(t: &[(&str, Option<f64>)]) -> String {
    t.iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(", ")
}
