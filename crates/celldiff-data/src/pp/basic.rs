//! Element-wise and per-cell/per-gene steps: filtering, `normalize_total`, `log1p`, `scale`,
//! min-max scaling, and the input-kind checks.

use serde::{Deserialize, Serialize};
use sprs::CsMat;

use crate::anndata::{AnnData, Column, DenseMatrix, Matrix};
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
        "filter_cells({}) removed all {n} cells: lower --min-genes",
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
        "filter_genes({}) removed all {n} genes: lower --min-cells",
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

// ---------------------------------------------------------------------------------------------
// normalize_total / log1p
// ---------------------------------------------------------------------------------------------

/// Scales every cell (row) of `x` (`[n_cells, n_genes]`, raw counts) so that its total equals
/// `target_sum`, as `scanpy.pp.normalize_total(adata, target_sum=...)`.
///
/// `target_sum = None` uses the median of the non-zero library sizes (scanpy's default). Cells
/// with zero counts are left at zero. The arithmetic follows scanpy on `float32` data: library
/// sizes are summed in `f64` and rounded to `f32`, the size factor `size / target_sum` and the
/// division are done in `f32`. CSR stays CSR.
///
/// Returns the per-cell library sizes before normalisation (length `n_cells`, counts) and the
/// target sum used.
///
/// # Errors
/// [`Error::InvalidInput`] if `target_sum` is `None` and every cell has zero counts, or if
/// `target_sum` is not finite and positive.
pub fn normalize_total(x: &mut Matrix, target_sum: Option<f64>) -> Result<(Vec<f64>, f64)> {
    let sizes = row_sums_with(x, |v| v as f64);
    let target = resolve_target_sum(&sizes, target_sum)?;
    normalize_rows_with(x, &sizes, target);
    Ok((sizes, target))
}

/// The target of [`normalize_total`] for per-cell library sizes `sizes` (counts, one per cell):
/// `target_sum` itself, or the median non-zero size (`np.median` in `f32`) when `None`.
///
/// # Errors
/// [`Error::InvalidInput`] if `target_sum` is not finite and positive, or is `None` and every
/// size is zero.
pub(crate) fn resolve_target_sum(sizes: &[f64], target_sum: Option<f64>) -> Result<f64> {
    match target_sum {
        Some(t) if !(t.is_finite() && t > 0.0) => Err(Error::InvalidInput(format!(
            "normalize_total: target_sum must be finite and > 0, got {t}"
        ))),
        Some(t) => Ok(t),
        None => median_nonzero_f32(sizes).ok_or_else(|| {
            Error::InvalidInput(
                "normalize_total: every cell has zero counts, cannot take the median library size"
                    .into(),
            )
        }),
    }
}

/// Divides row `i` by `sizes[i] / target` with scanpy's `f32` arithmetic (zero rows unchanged).
pub(crate) fn normalize_rows_with(x: &mut Matrix, sizes: &[f64], target: f64) {
    let t32 = target as f32;
    let factors: Vec<f32> = sizes
        .iter()
        .map(|&s| {
            let f = (s as f32) / t32;
            if f == 0.0 { 1.0 } else { f }
        })
        .collect();
    match x {
        Matrix::Dense(d) => {
            for (i, &f) in factors.iter().enumerate() {
                d.row_mut(i).iter_mut().for_each(|v| *v /= f);
            }
        }
        Matrix::Csr(c) => {
            if !c.is_csr() {
                *c = c.to_csr();
            }
            let indptr = c.indptr().to_proper().into_owned();
            let data = c.data_mut();
            for (i, &f) in factors.iter().enumerate() {
                data[row_range(&indptr, i)].iter_mut().for_each(|v| *v /= f);
            }
        }
    }
}

/// Median of the positive values rounded to `f32`, the middle pair averaged in `f32`
/// (`np.median` on scanpy's `float32` library sizes).
fn median_nonzero_f32(sizes: &[f64]) -> Option<f64> {
    let mut v: Vec<f32> = sizes
        .iter()
        .map(|&s| s as f32)
        .filter(|&s| s > 0.0)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(m as f64)
}

/// Natural-log transform `x <- ln(1 + x)` of every value (`[n_cells, n_genes]`, normalised
/// counts in, log1p-normalised out), as `scanpy.pp.log1p(adata)` (base e). CSR stays CSR
/// (zeros stay zeros).
pub fn log1p(x: &mut Matrix) {
    apply_values(x, f32::ln_1p);
}

// ---------------------------------------------------------------------------------------------
// scale / minmax
// ---------------------------------------------------------------------------------------------

/// Per-gene statistics used by [`scale`]: `mean` and `std` (length `n_genes`, in the units of
/// the data that were scaled, usually log1p-normalised expression).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ScaleStats {
    /// Per-gene mean (`f64`), subtracted when `zero_center`.
    pub mean: Vec<f64>,
    /// Per-gene standard deviation (`ddof = 1`); genes with zero variance get 1.
    pub std: Vec<f64>,
}

/// Scales every gene (column) of `x` (`[n_cells, n_genes]`, dense) to unit variance and, if
/// `zero_center`, zero mean, then clips at `max_value`, as
/// `scanpy.pp.scale(adata, zero_center=..., max_value=...)`.
///
/// Means and variances are computed in `f64` (`ddof = 1`, like scanpy); genes with standard
/// deviation 0 are divided by 1. With `zero_center` values are clipped to
/// `[-max_value, max_value]`, otherwise only from above (scanpy 1.11's `clip`). Values are
/// computed in `f64` and stored as `f32` (scaled units).
///
/// Returns the means and standard deviations used, for [`scale_with`] on new cells.
pub fn scale(x: &mut DenseMatrix, zero_center: bool, max_value: Option<f32>) -> ScaleStats {
    let m = Matrix::Dense(std::mem::replace(x, DenseMatrix::zeros(0, 0)));
    let (mean, var) = col_mean_var(&m);
    let Matrix::Dense(d) = m else { unreachable!() };
    *x = d;
    let stats = ScaleStats::from_mean_var(mean, &var);
    scale_with(x, &stats, zero_center, max_value);
    stats
}

impl ScaleStats {
    /// [`scale`]'s statistics from per-gene means and variances (`ddof = 1`): `std = sqrt(var)`,
    /// with 1 for genes whose standard deviation is 0 or NaN.
    pub(crate) fn from_mean_var(mean: Vec<f64>, var: &[f64]) -> Self {
        let std = var
            .iter()
            .map(|&v| {
                let s = v.sqrt();
                if s == 0.0 || s.is_nan() { 1.0 } else { s }
            })
            .collect();
        Self { mean, std }
    }
}

/// Applies fitted [`ScaleStats`] to `x` (`[n_cells, n_genes]`, the genes in the order of the
/// stats): `(x - mean) / std` (mean subtracted only if `zero_center`), then clipping as in
/// [`scale`]. Used to re-apply `scanpy.pp.scale` parameters to new cells.
///
/// # Panics
/// If `x.n_cols` differs from the length of the stats (an internal invariant of the pipeline).
pub fn scale_with(
    x: &mut DenseMatrix,
    stats: &ScaleStats,
    zero_center: bool,
    max_value: Option<f32>,
) {
    assert_eq!(
        x.n_cols,
        stats.mean.len(),
        "scale_with: gene count mismatch"
    );
    let n_cols = x.n_cols;
    let max = max_value.map(|m| m as f64);
    for row in x.data.chunks_mut(n_cols.max(1)) {
        for (j, v) in row.iter_mut().enumerate() {
            let mut y = *v as f64;
            if zero_center {
                y -= stats.mean[j];
            }
            y /= stats.std[j];
            if let Some(m) = max {
                if y > m {
                    y = m;
                } else if zero_center && y < -m {
                    y = -m;
                }
            }
            *v = y as f32;
        }
    }
}

/// Per-gene minimum and maximum used by [`minmax_scale`] (length `n_genes`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MinMaxStats {
    /// Per-gene minimum.
    pub min: Vec<f64>,
    /// Per-gene maximum.
    pub max: Vec<f64>,
}

/// Rescales every gene (column) of `x` (`[n_cells, n_genes]`, dense) to `[0, 1]`:
/// `(x - min) / (max - min)`; constant genes become 0. This is
/// `sklearn.preprocessing.MinMaxScaler` per gene (scanpy has no `pp` equivalent; scVAEDer and
/// SCLD feed min-max-scaled log data to their decoders). Computed in `f64`, stored as `f32`.
///
/// Returns the per-gene minima and maxima for [`minmax_with`] on new cells.
pub fn minmax_scale(x: &mut DenseMatrix) -> MinMaxStats {
    let mut acc = MinMaxAccumulator::new(x.n_cols);
    acc.add(x);
    let stats = acc.finish();
    minmax_with(x, &stats);
    stats
}

/// The statistics of [`minmax_scale`] accumulated one block of rows at a time: per-column
/// minimum and maximum of the values (dense, zeros included), in `f64`.
pub(crate) struct MinMaxAccumulator {
    min: Vec<f64>,
    max: Vec<f64>,
    n_rows: usize,
}

impl MinMaxAccumulator {
    /// No rows yet, `n_cols` columns.
    pub(crate) fn new(n_cols: usize) -> Self {
        Self {
            min: vec![f64::INFINITY; n_cols],
            max: vec![f64::NEG_INFINITY; n_cols],
            n_rows: 0,
        }
    }

    /// Adds the rows of `block` (`[rows, n_cols]`).
    pub(crate) fn add(&mut self, block: &DenseMatrix) {
        debug_assert_eq!(block.n_cols, self.min.len());
        self.n_rows += block.n_rows;
        for row in block.data.chunks(block.n_cols.max(1)) {
            for (j, &v) in row.iter().enumerate() {
                self.min[j] = self.min[j].min(v as f64);
                self.max[j] = self.max[j].max(v as f64);
            }
        }
    }

    /// The per-column minima and maxima (all 0 when no rows were added).
    pub(crate) fn finish(mut self) -> MinMaxStats {
        if self.n_rows == 0 {
            self.min.iter_mut().for_each(|v| *v = 0.0);
            self.max.iter_mut().for_each(|v| *v = 0.0);
        }
        MinMaxStats {
            min: self.min,
            max: self.max,
        }
    }
}

/// Applies fitted [`MinMaxStats`] to `x` (`[n_cells, n_genes]`): `(x - min) / (max - min)`,
/// 0 for genes that were constant. New cells are not clipped, so values may fall outside
/// `[0, 1]` (as `MinMaxScaler(clip=False)`).
///
/// # Panics
/// If `x.n_cols` differs from the length of the stats (an internal invariant of the pipeline).
pub fn minmax_with(x: &mut DenseMatrix, stats: &MinMaxStats) {
    assert_eq!(
        x.n_cols,
        stats.min.len(),
        "minmax_with: gene count mismatch"
    );
    let n_cols = x.n_cols;
    for row in x.data.chunks_mut(n_cols.max(1)) {
        for (j, v) in row.iter_mut().enumerate() {
            let range = stats.max[j] - stats.min[j];
            *v = if range > 0.0 {
                ((*v as f64 - stats.min[j]) / range) as f32
            } else {
                0.0
            };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Input kind
// ---------------------------------------------------------------------------------------------

/// What an expression matrix appears to hold.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// Non-negative integers: raw UMI/read counts.
    Counts,
    /// Non-negative, non-integer, small (max < 20): `log1p` of normalised counts.
    LogNormalized,
    /// Negative values present: centred/scaled data (`scanpy.pp.scale`, PCA-like).
    Scaled,
    /// Anything else (non-finite values, normalised but not log-transformed, large floats).
    Other,
}

impl DataKind {
    /// A short human name ("raw integer counts", ...).
    pub fn name(self) -> &'static str {
        match self {
            DataKind::Counts => "raw integer counts",
            DataKind::LogNormalized => "log1p-normalised expression",
            DataKind::Scaled => "scaled (centred) expression",
            DataKind::Other => "unrecognised values",
        }
    }
}

impl std::fmt::Display for DataKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of [`inspect_kind`]: the detected [`DataKind`], a one-line human explanation and
/// the statistics it is based on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KindReport {
    /// The detected kind.
    pub kind: DataKind,
    /// Why, in words (e.g. "integer values 0..624, 6.9% non-zero: raw counts").
    pub message: String,
    /// Smallest stored value (0 for an all-zero sparse matrix).
    pub min: f64,
    /// Largest stored value.
    pub max: f64,
    /// The first non-integer value found, as `(cell, gene, value)`, if any.
    pub first_non_integer: Option<(usize, usize, f32)>,
    /// The first negative value found, as `(cell, gene, value)`, if any.
    pub first_negative: Option<(usize, usize, f32)>,
    /// The first NaN/infinite value found, as `(cell, gene, value)`, if any.
    pub first_non_finite: Option<(usize, usize, f32)>,
    /// Non-integer values whose per-cell totals are constant while their `expm1` totals are
    /// not: `normalize_total` was applied but not `log1p` (kind [`DataKind::Other`]);
    /// preprocessing then applies `log1p` unless told not to.
    pub normalized_not_logged: bool,
}

/// Relative spread (coefficient of variation) below which per-cell totals count as constant.
const CONSTANT_TOTAL_CV: f64 = 1e-3;
/// Largest value accepted for log1p-normalised data (`ln(1 + 1e6)` is 13.8).
const LOG_MAX: f64 = 20.0;

fn coefficient_of_variation(v: &[f64]) -> Option<(f64, f64)> {
    let pos: Vec<f64> = v.iter().copied().filter(|&s| s > 0.0).collect();
    if pos.len() < 2 {
        return None;
    }
    let n = pos.len() as f64;
    let mean = pos.iter().sum::<f64>() / n;
    let var = pos.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / (n - 1.0);
    Some((var.sqrt() / mean, mean))
}

/// Inspects `x` (`[n_cells, n_genes]`) and says what it holds, with the evidence:
/// - non-finite values → [`DataKind::Other`];
/// - negative values → [`DataKind::Scaled`];
/// - all non-negative integers → [`DataKind::Counts`];
/// - non-negative, non-integer, max < 20 → [`DataKind::LogNormalized`] (the message says whether
///   the `expm1` per-cell totals are constant, i.e. `normalize_total` + `log1p` on all genes),
///   unless the raw per-cell totals are constant and the `expm1` totals are not (normalised
///   but not log-transformed → [`DataKind::Other`]);
/// - otherwise [`DataKind::Other`].
///
/// scanpy has no such function; it mirrors the checks of `scanpy._utils.check_nonnegative_integers`
/// and the `log1p` warnings in `sc.pp.log1p`/`sc.pp.highly_variable_genes`.
pub fn inspect_kind(x: &Matrix) -> KindReport {
    let (n_rows, n_cols) = x.shape();
    let mut acc = KindAccumulator::new();
    acc.add_block(x, 0);
    if acc.needs_row_sums() {
        acc.add_row_sums(x);
    }
    acc.finish(n_rows, n_cols)
}

/// [`inspect_kind`] fed one block of consecutive rows at a time, for matrices that are read in
/// blocks (`fit_streaming`). The result is the report of the whole matrix, bit for bit.
///
/// Use: [`add_block`](Self::add_block) for every block in row order; then, only if
/// [`needs_row_sums`](Self::needs_row_sums) (non-integer, non-negative, finite data), a second
/// pass [`add_row_sums`](Self::add_row_sums) over every block in row order (the per-cell totals
/// for the "constant totals" test, raw and `expm1`); then [`finish`](Self::finish).
pub(crate) struct KindAccumulator {
    min: f64,
    max: f64,
    first_non_integer: Option<(usize, usize, f32)>,
    first_negative: Option<(usize, usize, f32)>,
    first_non_finite: Option<(usize, usize, f32)>,
    nnz: usize,
    stored: usize,
    raw_sums: Vec<f64>,
    exp_sums: Vec<f64>,
}

impl KindAccumulator {
    /// Nothing seen yet.
    pub(crate) fn new() -> Self {
        Self {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first_non_integer: None,
            first_negative: None,
            first_non_finite: None,
            nnz: 0,
            stored: 0,
            raw_sums: Vec::new(),
            exp_sums: Vec::new(),
        }
    }

    /// Scans `block` (`[rows, n_cols]`), whose first row is row `row_offset` of the whole
    /// matrix (positions in the report are global).
    pub(crate) fn add_block(&mut self, block: &Matrix, row_offset: usize) {
        let (n_rows, n_cols) = block.shape();
        self.stored += match block {
            Matrix::Dense(_) => n_rows * n_cols,
            Matrix::Csr(c) => c.nnz(),
        };
        block.for_each_nonzero(|i, j, v| {
            let i = i + row_offset;
            if !v.is_finite() {
                if self.first_non_finite.is_none() {
                    self.first_non_finite = Some((i, j, v));
                }
                return;
            }
            if v != 0.0 {
                self.nnz += 1;
            }
            self.min = self.min.min(v as f64);
            self.max = self.max.max(v as f64);
            if v < 0.0 && self.first_negative.is_none() {
                self.first_negative = Some((i, j, v));
            }
            if v.fract() != 0.0 && self.first_non_integer.is_none() {
                self.first_non_integer = Some((i, j, v));
            }
        });
    }

    /// Whether [`finish`](Self::finish) needs the per-cell totals: all values seen are finite
    /// and non-negative, and some are not integers.
    pub(crate) fn needs_row_sums(&self) -> bool {
        self.first_non_finite.is_none()
            && self.first_negative.is_none()
            && self.first_non_integer.is_some()
    }

    /// Adds the per-row totals (raw and `expm1`, `f64`) of `block`, the next rows in order.
    pub(crate) fn add_row_sums(&mut self, block: &Matrix) {
        self.raw_sums.extend(row_sums_with(block, |v| v as f64));
        self.exp_sums
            .extend(row_sums_with(block, |v| (v as f64).exp_m1()));
    }

    /// The report for the whole `[n_rows, n_cols]` matrix.
    pub(crate) fn finish(self, n_rows: usize, n_cols: usize) -> KindReport {
        let Self {
            mut min,
            mut max,
            first_non_integer,
            first_negative,
            first_non_finite,
            nnz,
            stored,
            raw_sums,
            exp_sums,
        } = self;
        let total = (n_rows * n_cols).max(1) as f64;
        if stored < n_rows * n_cols || !min.is_finite() {
            // Unstored entries of a sparse matrix are zeros.
            min = min.min(0.0);
            max = max.max(0.0);
        }
        if !min.is_finite() {
            min = 0.0;
            max = 0.0;
        }
        let density = 100.0 * nnz as f64 / total;
        let mut report = KindReport {
            kind: DataKind::Other,
            message: String::new(),
            min,
            max,
            first_non_integer,
            first_negative,
            first_non_finite,
            normalized_not_logged: false,
        };
        if let Some((i, j, v)) = first_non_finite {
            report.message = format!("non-finite value {v} at cell {i}, gene {j}");
            return report;
        }
        if let Some((i, j, v)) = first_negative {
            report.kind = DataKind::Scaled;
            report.message = format!(
                "negative values present (min {min:.4}, first at cell {i}, gene {j}: {v}): looks \
                 centred/scaled (sc.pp.scale)"
            );
            return report;
        }
        if first_non_integer.is_none() {
            report.kind = DataKind::Counts;
            report.message = format!(
                "non-negative integers 0..{max}, {density:.1}% non-zero: looks like raw counts"
            );
            return report;
        }
        debug_assert_eq!(raw_sums.len(), n_rows, "KindAccumulator: row sums missing");
        let raw_cv = coefficient_of_variation(&raw_sums);
        let exp_cv = coefficient_of_variation(&exp_sums);
        let raw_constant = raw_cv.is_some_and(|(cv, _)| cv < CONSTANT_TOTAL_CV);
        let exp_constant = exp_cv.is_some_and(|(cv, _)| cv < CONSTANT_TOTAL_CV);
        if raw_constant && !exp_constant {
            let total = raw_cv.map(|(_, m)| m).unwrap_or(0.0);
            report.message = format!(
                "non-integer values with constant per-cell totals (~{total:.4}): normalised but \
                 not log-transformed"
            );
            report.normalized_not_logged = true;
            return report;
        }
        if max < LOG_MAX {
            report.kind = DataKind::LogNormalized;
            report.message = match exp_cv {
                Some((cv, total)) if cv < CONSTANT_TOTAL_CV => format!(
                    "non-negative non-integer values, max {max:.3}, expm1 per-cell totals \
                     constant (~{total:.1}): looks like normalize_total + log1p"
                ),
                _ => format!(
                    "non-negative non-integer values, max {max:.3} (< {LOG_MAX}): looks \
                     log1p-normalised (per-cell totals vary, e.g. after gene subsetting)"
                ),
            };
            return report;
        }
        report.message = format!(
            "non-negative non-integer values up to {max:.1}: neither counts nor log1p data \
             (normalised but not log-transformed?)"
        );
        report
    }
}

/// The [`DataKind`] of `x` (`[n_cells, n_genes]`); see [`inspect_kind`] for the rules and a
/// human explanation.
pub fn detect_kind(x: &Matrix) -> DataKind {
    inspect_kind(x).kind
}

/// Checks that `x` (`[n_cells, n_genes]`) can be raw counts: no negative or non-finite values.
/// Non-integer values are allowed here (scanpy only warns about them; see [`detect_kind`]).
/// The counterpart of scanpy's `check_nonnegative_integers` guard in `seurat_v3`.
///
/// # Errors
/// [`Error::InvalidInput`] naming the first offending cell and gene (row-major order) and its
/// value.
pub fn check_counts(x: &Matrix) -> Result<()> {
    check_counts_named(x, None, None)
}

/// [`check_counts`] with cell and gene names for the error message.
pub(crate) fn check_counts_named(
    x: &Matrix,
    obs_names: Option<&[String]>,
    var_names: Option<&[String]>,
) -> Result<()> {
    let mut bad: Option<(usize, usize, f32)> = None;
    x.for_each_nonzero(|i, j, v| {
        if bad.is_none() && (v < 0.0 || !v.is_finite()) {
            bad = Some((i, j, v));
        }
    });
    match bad {
        None => Ok(()),
        Some((i, j, v)) => Err(Error::InvalidInput(format!(
            "expected raw counts, but found {} value {v} at {}: counts must be non-negative \
             integers",
            if v.is_finite() {
                "negative"
            } else {
                "non-finite"
            },
            cell_gene(i, j, obs_names, var_names)
        ))),
    }
}

/// "cell `name` (row i), gene `name` (column j)".
pub(crate) fn cell_gene(
    i: usize,
    j: usize,
    obs_names: Option<&[String]>,
    var_names: Option<&[String]>,
) -> String {
    let cell = match obs_names.and_then(|n| n.get(i)) {
        Some(n) => format!("cell `{n}` (row {i})"),
        None => format!("cell {i}"),
    };
    let gene = match var_names.and_then(|n| n.get(j)) {
        Some(n) => format!("gene `{n}` (column {j})"),
        None => format!("gene {j}"),
    };
    format!("{cell}, {gene}")
}
