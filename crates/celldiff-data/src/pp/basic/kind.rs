//! The input-kind checks: what an expression matrix holds ([`DataKind`], [`inspect_kind`],
//! also block by block) and the raw-count guard [`check_counts`].

use serde::{Deserialize, Serialize};

use super::row_sums_with;
use crate::anndata::Matrix;
use crate::error::{Error, Result};

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
