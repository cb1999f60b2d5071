//! [`fit_streaming`]: the [`FittedPreprocess`] of [`fit_transform`] fitted on a matrix that is
//! read one block of consecutive rows at a time ([`RowBlocks`], e.g. an `.h5ad` file's `X` on
//! disk), for inputs too large to hold in memory (`celldiff train --stream` on a million cells).
//!
//! # Passes
//! Each pass reads every block once, in row order, and keeps only per-cell and per-gene vectors
//! between blocks, so memory is bounded by one block (and a few transformed copies of it) plus
//! `O(n_cells + n_genes)` numbers, whatever the number of cells:
//! 1. the raw blocks: the input-kind scan ([`inspect_kind`] by blocks), per-cell non-zero counts
//!    for `filter_cells(min_genes)` (the cells are kept or dropped block by block), per-gene
//!    non-zero counts over the kept cells for `filter_genes(min_cells)`, and the library sizes
//!    of the kept cells when no gene filter changes them;
//! 2. only for non-integer, non-negative input: the per-cell totals (raw and `expm1`) of the
//!    input-kind test "normalised but not log-transformed";
//! 3. only with `min_cells` and count input: the library sizes over the genes kept;
//! 4. `seurat_v3` HVGs: three passes over the filtered counts (sums, squared deviations, clipped
//!    sums);
//! 5. `seurat` HVGs: two passes (sums, squared deviations) over `expm1` of the normalised,
//!    `log1p` blocks;
//! 6. `scale`: two passes over the output blocks (dense), or `minmax`: one.
//!
//! A block is transformed exactly as [`fit_transform`] transforms the whole matrix (rows kept,
//! genes kept, `normalize_total` with the fitted target and the cell's library size, `log1p`,
//! HVG subset, densified), and every statistic is accumulated in `f64` over the rows in
//! ascending order, as the in-memory code does. The result therefore equals
//! `fit_transform(adata, cfg).1` **bit for bit** (same statistics, messages, steps and errors),
//! for any block size.

mod blocks;
#[cfg(test)]
mod tests;

use super::basic::{
    ColSums, KindAccumulator, MinMaxAccumulator, ScaleStats, col_sums_nnz,
    filter_cells_removed_all, filter_genes_removed_all, passes_filter, resolve_target_sum, row_nnz,
    row_sums_with,
};
use super::hvg::{HvgFlavor, SeuratV3Trend, check_hvg_input, seurat_expm1, seurat_select};
#[cfg(doc)]
use super::inspect_kind;
#[cfg(doc)]
use super::pipeline::fit_transform;
use super::pipeline::{FitPlan, FittedPreprocess, PreprocessConfig, validate_config};
use crate::anndata::{Matrix, RowBlocks};
use crate::error::{Error, Result};
use blocks::{Blocks, Prep, select_rows};

/// The result of [`fit_streaming`].
#[derive(Clone, Debug, PartialEq)]
pub struct StreamFit {
    /// The fitted pipeline, equal to the one [`fit_transform`] returns on the same data.
    pub fitted: FittedPreprocess,
    /// Rows of the source kept by `filter_cells` (all rows when no `min_genes`), ascending:
    /// the training cells, in the order the pipeline saw them.
    pub kept: Vec<usize>,
}

/// Fits the same [`FittedPreprocess`] as [`fit_transform`] on an `[n_cells, n_genes]` matrix
/// read `block_rows` consecutive rows at a time, never holding more than one block (plus
/// per-cell and per-gene vectors of `f64`/`usize`).
///
/// Passes over `x`, each reading every block once in row order: one over the raw blocks (input
/// kind, `filter_cells`, `filter_genes` counts, library sizes); one more for non-integer,
/// non-negative input (per-cell totals for the kind test); one for the library sizes when
/// `min_cells` is set on counts; three for `seurat_v3` HVGs; two for `seurat` HVGs; two for
/// `scale` or one for `minmax`. E.g. the default on counts (normalize + log1p + seurat HVGs)
/// reads the data 3 times.
///
/// Steps, each the scanpy 1.11 function of the same name, exactly as in [`fit_transform`]:
/// input-kind detection, `filter_cells(min_genes)`, `filter_genes(min_cells)`,
/// `highly_variable_genes(flavor='seurat_v3')` on the counts, `normalize_total(target_sum)` (the
/// median library size when `target_sum` is `None`), `log1p`,
/// `highly_variable_genes(flavor='seurat')` on the log data, the subset to the HVGs, and the
/// statistics of `scale(zero_center=True, max_value)` or of min-max scaling.
///
/// - `x`: the expression matrix in the units of the source (raw counts, or already
///   log1p-normalised data); read from row 0 to the end once per pass.
/// - `var_names`: the `n_genes` gene names (`var_names`); `obs_names`: the `n_cells` cell names,
///   used in error messages as [`fit_transform`] uses `adata.obs_names` (without them cells are
///   named by row).
/// - `block_rows`: rows per block (any value ≥ 1 gives the same result; memory grows with it).
///
/// The result equals `fit_transform(adata, cfg).1` bit for bit, with `kept` the rows that
/// `filter_cells` keeps. One difference: already-log input is taken as natural-log
/// (`fit_transform` honours an `adata.uns['log1p']['base']`, which a block source does not
/// carry).
///
/// # Errors
/// - [`Error::Param`] for the configuration errors of [`fit_transform`] and `block_rows = 0`.
/// - [`Error::InvalidInput`] for every data error of [`fit_transform`], with the same text (the
///   input kind does not fit the requested steps, non-finite values, filtering removes
///   everything, ...), and if `var_names` (or `obs_names`) do not match the shape of `x`.
/// - Whatever `x.read_rows` returns (e.g. [`Error::Format`] or [`Error::Io`] for a file), and
///   [`Error::Internal`] if it returns a block of the wrong shape.
pub fn fit_streaming(
    x: &mut dyn RowBlocks,
    var_names: &[String],
    obs_names: Option<&[String]>,
    cfg: &PreprocessConfig,
    block_rows: usize,
) -> Result<StreamFit> {
    validate_config(cfg)?;
    if block_rows == 0 {
        return Err(Error::Param("fit_streaming: block_rows must be > 0".into()));
    }
    let (n_rows, n_cols) = x.shape();
    if var_names.len() != n_cols {
        return Err(Error::InvalidInput(format!(
            "fit_streaming: {} gene names for the {n_cols} columns of X",
            var_names.len()
        )));
    }
    if let Some(o) = obs_names
        && o.len() != n_rows
    {
        return Err(Error::InvalidInput(format!(
            "fit_streaming: {} cell names for the {n_rows} rows of X",
            o.len()
        )));
    }
    let mut src = Blocks {
        x,
        n_rows,
        n_cols,
        block_rows,
    };

    // Pass 1: kind, cell filter, gene non-zero counts over the kept cells, library sizes.
    let mut kind = KindAccumulator::new();
    let mut kept_rows: Vec<usize> = Vec::new();
    let mut gene_nnz = cfg.min_cells.map(|_| vec![0usize; n_cols]);
    let mut raw_sizes: Vec<f64> = Vec::new();
    let sizes_in_pass1 = cfg.min_cells.is_none();
    src.pass(|start, block| {
        kind.add_block(&block, start);
        let block = match cfg.min_genes {
            Some(m) => {
                let local: Vec<usize> = row_nnz(&block)
                    .iter()
                    .enumerate()
                    .filter(|&(_, &g)| passes_filter(0.0, g, None, Some(m)))
                    .map(|(i, _)| i)
                    .collect();
                kept_rows.extend(local.iter().map(|&i| start + i));
                if local.len() == block.n_rows() {
                    block
                } else {
                    select_rows(&block, &local)
                }
            }
            None => block,
        };
        if let Some(nnz) = gene_nnz.as_mut() {
            for (t, c) in nnz.iter_mut().zip(col_sums_nnz(&block).1) {
                *t += c;
            }
        }
        if sizes_in_pass1 {
            raw_sizes.extend(row_sums_with(&block, |v| v as f64));
        }
        Ok(())
    })?;
    if kind.needs_row_sums() {
        src.pass(|_, block| {
            kind.add_row_sums(&block);
            Ok(())
        })?;
    }
    let report = kind.finish(n_rows, n_cols);
    let mut fit = FitPlan::new(&report, cfg, n_rows, n_cols, obs_names, Some(var_names))?;

    let kept = match cfg.min_genes {
        Some(m) => {
            if kept_rows.is_empty() {
                return Err(filter_cells_removed_all(n_rows, None, Some(m)));
            }
            fit.filtered_cells(m, n_rows, kept_rows.len());
            kept_rows
        }
        None => (0..n_rows).collect(),
    };
    let input_cols: Option<Vec<usize>> = match (cfg.min_cells, gene_nnz) {
        (Some(m), Some(nnz)) => {
            let idx: Vec<usize> = (0..n_cols)
                .filter(|&j| passes_filter(0.0, nnz[j], None, Some(m)))
                .collect();
            if idx.is_empty() {
                return Err(filter_genes_removed_all(n_cols, None, Some(m)));
            }
            fit.filtered_genes(m, n_cols, idx.len());
            Some(idx)
        }
        _ => None,
    };
    let n_cells = kept.len();
    let n_input = input_cols.as_ref().map_or(n_cols, Vec::len);
    let mut prep = Prep {
        kept: &kept,
        input_cols: input_cols.as_deref(),
        norm: None,
        log: false,
        out_cols: None,
    };

    let hvg_n = fit.hvg_n(n_input);
    if let Some(params) = fit.hvg_params(hvg_n, HvgFlavor::SeuratV3) {
        check_hvg_input(&params, n_cells, n_input)?;
        // seurat_v3's check for negative or non-finite counts cannot fail here: FitPlan::new
        // accepts seurat_v3 only on integer counts.
        let counts = |v: f32| v as f64;
        let mut sums = ColSums::new(n_input);
        src.pass(|start, block| {
            sums.add(&prep.counts(start, block).0, counts);
            Ok(())
        })?;
        let mut dev = sums.into_deviations();
        src.pass(|start, block| {
            dev.add(&prep.counts(start, block).0, counts);
            Ok(())
        })?;
        let (means, variances) = dev.finish();
        let trend = SeuratV3Trend::fit(means, variances, n_cells, &params)?;
        let mut clipped = trend.clipped_sums();
        src.pass(|start, block| {
            clipped.add(&prep.counts(start, block).0);
            Ok(())
        })?;
        fit.hvg(&trend.select(clipped, &params));
    }

    let input_genes: Vec<String> = match &input_cols {
        Some(idx) => idx.iter().map(|&j| var_names[j].clone()).collect(),
        None => var_names.to_vec(),
    };
    let mut sizes = Vec::new();
    let mut target_sum = None;
    if fit.do_norm {
        sizes = if sizes_in_pass1 {
            raw_sizes
        } else {
            let mut s = Vec::with_capacity(n_cells);
            src.pass(|start, block| {
                s.extend(row_sums_with(&prep.counts(start, block).0, |v| v as f64));
                Ok(())
            })?;
            s
        };
        let t = resolve_target_sum(&sizes, cfg.target_sum)?;
        fit.normalized(&sizes, t);
        target_sum = Some(t);
    }
    prep.norm = target_sum.map(|t| (sizes.as_slice(), t));
    if fit.do_log {
        fit.logged();
        prep.log = true;
    }

    if let Some(params) = fit.hvg_params(hvg_n, HvgFlavor::Seurat) {
        check_hvg_input(&params, n_cells, n_input)?;
        let f = seurat_expm1(None);
        let mut sums = ColSums::new(n_input);
        src.pass(|start, block| {
            sums.add(&prep.logged(start, block), f);
            Ok(())
        })?;
        let mut dev = sums.into_deviations();
        src.pass(|start, block| {
            dev.add(&prep.logged(start, block), f);
            Ok(())
        })?;
        let (mean, var) = dev.finish();
        fit.hvg(&seurat_select(mean, &var, &params)?);
    }

    let out_cols = fit.subset_genes();
    let genes: Vec<String> = match &out_cols {
        Some(idx) => idx.iter().map(|&k| input_genes[k].clone()).collect(),
        None => input_genes.clone(),
    };
    prep.out_cols = out_cols.as_deref();
    let n_out = genes.len();
    let mut scale = None;
    let mut minmax = None;
    if cfg.scale {
        let values = |v: f32| v as f64;
        let mut sums = ColSums::new(n_out);
        src.pass(|start, block| {
            sums.add(&Matrix::Dense(prep.output(start, block)), values);
            Ok(())
        })?;
        let mut dev = sums.into_deviations();
        src.pass(|start, block| {
            dev.add(&Matrix::Dense(prep.output(start, block)), values);
            Ok(())
        })?;
        let (mean, var) = dev.finish();
        scale = Some(ScaleStats::from_mean_var(mean, &var));
        fit.scaled(n_cells, n_out);
    } else if cfg.minmax {
        let mut acc = MinMaxAccumulator::new(n_out);
        src.pass(|start, block| {
            acc.add(&prep.output(start, block));
            Ok(())
        })?;
        minmax = Some(acc.finish());
        fit.minmaxed(n_cells, n_out);
    }
    let fitted = fit.finish(input_genes, genes, target_sum, scale, minmax);
    Ok(StreamFit { fitted, kept })
}
