//! Value transforms and their fitted statistics: `normalize_total`, `log1p`, `scale`
//! ([`ScaleStats`]) and min-max scaling ([`MinMaxStats`]).

use serde::{Deserialize, Serialize};

use super::{apply_values, col_mean_var, row_range, row_sums_with};
use crate::anndata::{DenseMatrix, Matrix};
use crate::error::{Error, Result};

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
