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

use std::ops::Range;

use super::basic::{
    ColSums, KindAccumulator, MinMaxAccumulator, ScaleStats, col_sums_nnz,
    filter_cells_removed_all, filter_genes_removed_all, log1p, normalize_rows_with, passes_filter,
    resolve_target_sum, row_nnz, row_sums_with,
};
use super::hvg::{HvgFlavor, SeuratV3Trend, check_hvg_input, seurat_expm1, seurat_select};
#[cfg(doc)]
use super::inspect_kind;
#[cfg(doc)]
use super::pipeline::fit_transform;
use super::pipeline::{FitPlan, FittedPreprocess, PreprocessConfig, validate_config};
use crate::anndata::{DenseMatrix, Matrix, RowBlocks, select_csr_cols, select_csr_rows};
use crate::error::{Error, Result};

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

/// The source and how it is cut into blocks.
struct Blocks<'a> {
    x: &'a mut dyn RowBlocks,
    n_rows: usize,
    n_cols: usize,
    block_rows: usize,
}

impl Blocks<'_> {
    /// One pass: `f(first row, block)` for every block, in row order.
    ///
    /// # Errors
    /// The first error of `read_rows` or `f`; [`Error::Internal`] for a block of the wrong
    /// shape.
    fn pass(&mut self, mut f: impl FnMut(usize, Matrix) -> Result<()>) -> Result<()> {
        let mut start = 0;
        while start < self.n_rows {
            let end = (start + self.block_rows).min(self.n_rows);
            let block = self.x.read_rows(start, end)?;
            if block.shape() != (end - start, self.n_cols) {
                let (r, c) = block.shape();
                return Err(Error::Internal(format!(
                    "read_rows({start}, {end}) returned a [{r}, {c}] block, expected [{}, {}]",
                    end - start,
                    self.n_cols
                )));
            }
            f(start, block)?;
            start = end;
        }
        Ok(())
    }
}

/// How a raw block becomes the matrix [`fit_transform`] computes a statistic on, at each stage
/// of the fit (the fields are filled in as the fit goes).
struct Prep<'a> {
    /// Rows kept by `filter_cells`, ascending.
    kept: &'a [usize],
    /// Genes kept by `filter_genes` (`None`: all, not selected).
    input_cols: Option<&'a [usize]>,
    /// Library sizes of the kept cells (by position in `kept`) and the target sum.
    norm: Option<(&'a [f64], f64)>,
    /// Whether `log1p` is applied.
    log: bool,
    /// Positions of the output genes among the input genes (`None`: all).
    out_cols: Option<&'a [usize]>,
}

impl Prep<'_> {
    /// Positions in `kept` of the rows `start..end`.
    fn kept_range(&self, start: usize, end: usize) -> Range<usize> {
        self.kept.partition_point(|&i| i < start)..self.kept.partition_point(|&i| i < end)
    }

    /// The filtered counts of the block starting at row `start` (kept rows, kept genes), and
    /// the positions of its rows in `kept`.
    fn counts(&self, start: usize, block: Matrix) -> (Matrix, Range<usize>) {
        let r = self.kept_range(start, start + block.n_rows());
        let block = if r.len() == block.n_rows() {
            block
        } else {
            let local: Vec<usize> = self.kept[r.clone()].iter().map(|&i| i - start).collect();
            select_rows(&block, &local)
        };
        let block = match self.input_cols {
            Some(idx) => select_cols(&block, idx),
            None => block,
        };
        (block, r)
    }

    /// The filtered block after `normalize_total` (fitted target) and `log1p`, as configured.
    fn logged(&self, start: usize, block: Matrix) -> Matrix {
        let (mut b, r) = self.counts(start, block);
        if let Some((sizes, t)) = self.norm {
            normalize_rows_with(&mut b, &sizes[r], t);
        }
        if self.log {
            log1p(&mut b);
        }
        b
    }

    /// The block in the output genes, dense (what `scale`/min-max scaling see).
    fn output(&self, start: usize, block: Matrix) -> DenseMatrix {
        let b = self.logged(start, block);
        match self.out_cols {
            Some(idx) => select_cols(&b, idx),
            None => b,
        }
        .to_dense()
    }
}

/// Rows `idx` of `m`, as [`crate::anndata::AnnData::select_obs`] selects them.
fn select_rows(m: &Matrix, idx: &[usize]) -> Matrix {
    match m {
        Matrix::Dense(d) => Matrix::Dense(d.select_rows(idx)),
        Matrix::Csr(c) => Matrix::Csr(select_csr_rows(c, idx)),
    }
}

/// Columns `idx` of `m`, as [`crate::anndata::AnnData::select_vars`] selects them.
fn select_cols(m: &Matrix, idx: &[usize]) -> Matrix {
    match m {
        Matrix::Dense(d) => Matrix::Dense(d.select_cols(idx)),
        Matrix::Csr(c) => Matrix::Csr(select_csr_cols(c, idx)),
    }
}

#[cfg(test)]
mod tests {
    //! `fit_streaming` against `fit_transform` on real data (pbmc68k_reduced counts, log1p and
    //! scaled; the 10x brain 10k subset; Weinreb), for block sizes 1, 37 and all rows.

    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    use super::*;
    use crate::anndata::AnnData;
    use crate::io::{ReadOptions, read};
    use crate::pp::{DataKind, Step, filter_cells, fit_transform};

    const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

    fn shared(rel: &str) -> PathBuf {
        let p = Path::new(SHARED).join(rel);
        assert!(
            p.exists(),
            "shared file missing: {} (expected the `shared/` folder beside the repository)",
            p.display()
        );
        p
    }

    fn load(rel: &str, use_raw: bool) -> AnnData {
        let opts = ReadOptions {
            use_raw,
            ..ReadOptions::default()
        };
        read(&shared(rel), &opts).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// pbmc68k_reduced raw counts (700 x 765, CSR).
    fn pbmc_counts() -> &'static AnnData {
        static A: OnceLock<AnnData> = OnceLock::new();
        A.get_or_init(|| load("data/pbmc68k_reduced/pbmc68k_reduced_counts.h5ad", false))
    }

    /// pbmc68k_reduced `raw.X`: log1p-normalised (700 x 765).
    fn pbmc_log() -> &'static AnnData {
        static A: OnceLock<AnnData> = OnceLock::new();
        A.get_or_init(|| load("data/pbmc68k_reduced/10x_pbmc68k_reduced.h5ad", true))
    }

    /// pbmc68k_reduced `X`: scaled, dense (700 x 765).
    fn pbmc_scaled() -> &'static AnnData {
        static A: OnceLock<AnnData> = OnceLock::new();
        A.get_or_init(|| load("data/pbmc68k_reduced/10x_pbmc68k_reduced.h5ad", false))
    }

    /// The 10x mouse-brain subset: raw counts, 10,000 x 1,000 (285 genes never detected).
    fn brain() -> &'static AnnData {
        static A: OnceLock<AnnData> = OnceLock::new();
        A.get_or_init(|| {
            load(
                "data/mouse_brain_1m_10k_subset/brain_1m_10k_cells_1000_genes.h5ad",
                false,
            )
        })
    }

    /// Weinreb: normalised to 1e4 per cell over all genes, not log-transformed (781 x 2481).
    fn weinreb() -> &'static AnnData {
        static A: OnceLock<AnnData> = OnceLock::new();
        A.get_or_init(|| {
            load(
                "data/weinreb_larry_hematopoiesis_subset/test_adata_preprocessed.h5ad",
                false,
            )
        })
    }

    fn streamed(ad: &AnnData, cfg: &PreprocessConfig, block_rows: usize) -> Result<StreamFit> {
        fit_streaming(
            &mut ad.x.clone(),
            &ad.var_names,
            Some(&ad.obs_names),
            cfg,
            block_rows,
        )
    }

    /// `fit_streaming` equals `fit_transform` for block sizes 1, 37 and all rows, and `kept`
    /// is what `filter_cells` keeps. Returns the fitted pipeline.
    fn assert_same(ad: &AnnData, cfg: &PreprocessConfig) -> FittedPreprocess {
        let (_, want) = fit_transform(ad, cfg).unwrap();
        let n = ad.n_obs();
        let want_kept: Vec<usize> = match cfg.min_genes {
            Some(m) => {
                let mask = filter_cells(ad, None, Some(m)).unwrap().1;
                (0..n).filter(|&i| mask[i]).collect()
            }
            None => (0..n).collect(),
        };
        for b in [1, 37, n] {
            let got = streamed(ad, cfg, b).unwrap();
            let f = &got.fitted;
            // Field by field first, for a readable failure.
            assert_eq!(f.messages, want.messages, "messages, block_rows {b}");
            assert_eq!(f.steps, want.steps, "steps, block_rows {b}");
            assert_eq!(f.input_kind, want.input_kind, "kind, block_rows {b}");
            assert_eq!(f.target_sum, want.target_sum, "target_sum, block_rows {b}");
            assert_eq!(
                f.input_genes, want.input_genes,
                "input_genes, block_rows {b}"
            );
            assert_eq!(f.genes, want.genes, "genes, block_rows {b}");
            assert_eq!(
                f.highly_variable, want.highly_variable,
                "hv, block_rows {b}"
            );
            assert_eq!(f.scale, want.scale, "scale stats, block_rows {b}");
            assert_eq!(f.minmax, want.minmax, "minmax stats, block_rows {b}");
            assert_eq!(*f, want, "block_rows {b}");
            assert_eq!(got.kept, want_kept, "kept, block_rows {b}");
        }
        want
    }

    /// Both fail with the same variant and text, for every block size.
    fn assert_same_error(ad: &AnnData, cfg: &PreprocessConfig) -> String {
        let want = fit_transform(ad, cfg).unwrap_err();
        for b in [1, 37, ad.n_obs().max(1)] {
            let got = streamed(ad, cfg, b).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "block_rows {b}: {got} vs {want}"
            );
            assert_eq!(got.to_string(), want.to_string(), "block_rows {b}");
        }
        want.to_string()
    }

    fn top(n: usize) -> PreprocessConfig {
        PreprocessConfig {
            n_top_genes: Some(n),
            ..PreprocessConfig::default()
        }
    }

    fn has_hvg(f: &FittedPreprocess) -> bool {
        f.steps
            .iter()
            .any(|s| matches!(s, Step::HighlyVariableGenes { .. }))
    }

    #[test]
    fn pbmc_counts_default_median_filters_subset() {
        let ad = pbmc_counts();
        // Default: 765 genes < 2000, normalize 1e4 + log1p, all genes kept.
        let f = assert_same(ad, &PreprocessConfig::default());
        assert_eq!(f.input_kind, DataKind::Counts);
        assert_eq!(f.target_sum, Some(1e4));
        assert!(!has_hvg(&f));
        // 300 seurat HVGs.
        let f = assert_same(ad, &top(300));
        assert!(has_hvg(&f) && f.genes.len() >= 300);
        // Median target.
        let f = assert_same(
            ad,
            &PreprocessConfig {
                target_sum: None,
                ..top(300)
            },
        );
        assert!(f.target_sum.is_some_and(|t| t != 1e4));
        // Both filters: some cells and genes go.
        let cfg = PreprocessConfig {
            min_genes: Some(230),
            min_cells: Some(60),
            ..top(300)
        };
        let f = assert_same(ad, &cfg);
        let s = streamed(ad, &cfg, 100).unwrap();
        assert!(s.kept.len() < 700 && s.kept.len() > 100, "{}", s.kept.len());
        assert!(f.input_genes.len() < 765, "{}", f.input_genes.len());
        // No subset: HVG mask over all genes.
        let f = assert_same(
            ad,
            &PreprocessConfig {
                subset: false,
                ..top(300)
            },
        );
        assert_eq!(f.highly_variable.as_ref().map(Vec::len), Some(765));
        // Normalised, not logged, no HVGs.
        assert_same(
            ad,
            &PreprocessConfig {
                log1p: Some(false),
                n_top_genes: None,
                ..PreprocessConfig::default()
            },
        );
    }

    #[test]
    fn pbmc_counts_scale_minmax_and_dense_input() {
        let ad = pbmc_counts();
        let f = assert_same(
            ad,
            &PreprocessConfig {
                scale: true,
                max_value: Some(10.0),
                ..top(300)
            },
        );
        assert!(f.scale.is_some());
        let f = assert_same(
            ad,
            &PreprocessConfig {
                minmax: true,
                min_genes: Some(230),
                ..top(300)
            },
        );
        assert!(f.minmax.is_some());
        // The same counts stored dense: dense blocks, dense statistics.
        let mut dense = ad.clone();
        dense.x = Matrix::Dense(ad.x.to_dense());
        assert_same(
            &dense,
            &PreprocessConfig {
                scale: true,
                max_value: Some(10.0),
                min_genes: Some(230),
                min_cells: Some(60),
                target_sum: None,
                ..top(300)
            },
        );
        assert_same(
            &dense,
            &PreprocessConfig {
                subset: false,
                minmax: true,
                ..top(200)
            },
        );
    }

    #[test]
    fn pbmc_seurat_v3() {
        let ad = pbmc_counts();
        let v3 = |n| PreprocessConfig {
            flavor: HvgFlavor::SeuratV3,
            ..top(n)
        };
        let f = assert_same(ad, &v3(300));
        assert!(matches!(
            f.steps[0],
            Step::HighlyVariableGenes {
                flavor: HvgFlavor::SeuratV3,
                n_selected: 300,
                ..
            }
        ));
        assert_same(
            ad,
            &PreprocessConfig {
                min_genes: Some(230),
                min_cells: Some(60),
                scale: true,
                ..v3(200)
            },
        );
    }

    #[test]
    fn already_log_and_scaled_input() {
        let ad = pbmc_log();
        let f = assert_same(ad, &PreprocessConfig::default());
        assert_eq!(f.input_kind, DataKind::LogNormalized);
        assert!(
            !f.steps
                .iter()
                .any(|s| matches!(s, Step::NormalizeTotal { .. } | Step::Log1p))
        );
        assert_same(ad, &top(300));
        assert_same(
            ad,
            &PreprocessConfig {
                min_cells: Some(60),
                min_genes: Some(230),
                scale: true,
                ..top(300)
            },
        );
        // Scaled (dense, negative) input, used as is.
        let sc = pbmc_scaled();
        let f = assert_same(
            sc,
            &PreprocessConfig {
                n_top_genes: None,
                minmax: true,
                ..PreprocessConfig::default()
            },
        );
        assert_eq!(f.input_kind, DataKind::Scaled);
    }

    #[test]
    fn brain_10k() {
        let ad = brain();
        let f = assert_same(ad, &PreprocessConfig::default());
        assert_eq!(f.genes.len(), 1000);
        let f = assert_same(
            ad,
            &PreprocessConfig {
                min_genes: Some(20),
                min_cells: Some(3),
                scale: true,
                max_value: Some(10.0),
                ..top(500)
            },
        );
        assert!(f.input_genes.len() < 1000);
        assert_same(
            ad,
            &PreprocessConfig {
                target_sum: None,
                subset: false,
                minmax: true,
                ..top(300)
            },
        );
        assert_same(
            ad,
            &PreprocessConfig {
                flavor: HvgFlavor::SeuratV3,
                min_cells: Some(3),
                ..top(300)
            },
        );
    }

    #[test]
    fn weinreb_normalised_not_logged() {
        let ad = weinreb();
        // log1p only (no normalisation), then 2000 seurat HVGs of 2481 genes.
        let f = assert_same(
            ad,
            &PreprocessConfig {
                log1p: Some(true),
                ..PreprocessConfig::default()
            },
        );
        assert_eq!(f.input_kind, DataKind::Other);
        assert_eq!(f.steps.first(), Some(&Step::Log1p));
        assert!(has_hvg(&f));
        assert_same(
            ad,
            &PreprocessConfig {
                log1p: Some(true),
                scale: true,
                max_value: Some(10.0),
                min_genes: Some(500),
                ..PreprocessConfig::default()
            },
        );
        // Used as is with --no-log1p.
        assert_same(
            ad,
            &PreprocessConfig {
                n_top_genes: None,
                log1p: Some(false),
                minmax: true,
                ..PreprocessConfig::default()
            },
        );
        // Default: detected as normalised but not logged, so log1p is applied.
        let f = assert_same(ad, &PreprocessConfig::default());
        assert_eq!(f.steps.first(), Some(&Step::Log1p));
        assert!(f.messages.iter().any(|m| m.contains("log1p applied")));
        // seurat HVGs with log1p turned off: the same refusal, naming the CLI flags.
        let msg = assert_same_error(
            ad,
            &PreprocessConfig {
                log1p: Some(false),
                ..PreprocessConfig::default()
            },
        );
        assert!(
            msg.contains("--flavor seurat needs log1p-normalised") && msg.contains("--log1p"),
            "{msg}"
        );
    }

    /// Sets stored value `k` of a CSR `X` to `v`.
    fn with_value(ad: &AnnData, k: usize, v: f32) -> AnnData {
        let mut bad = ad.clone();
        let Matrix::Csr(c) = &mut bad.x else {
            panic!("expected CSR")
        };
        c.data_mut()[k] = v;
        bad
    }

    #[test]
    fn bad_input_same_errors() {
        let ad = pbmc_counts();
        let nnz = match &ad.x {
            Matrix::Csr(c) => c.nnz(),
            Matrix::Dense(_) => panic!("expected CSR"),
        };
        let k = nnz / 2 + 3;
        // A negative count with log1p forced.
        let neg = with_value(ad, k, -1.0);
        let forced = PreprocessConfig {
            log1p: Some(true),
            ..PreprocessConfig::default()
        };
        let msg = assert_same_error(&neg, &forced);
        assert!(msg.contains("negative values"), "{msg}");
        // A non-finite value, named by cell and gene.
        let nan = with_value(ad, k, f32::NAN);
        let msg = assert_same_error(&nan, &PreprocessConfig::default());
        assert!(
            msg.contains("non-finite") && msg.contains("cell `"),
            "{msg}"
        );
        let inf = with_value(ad, nnz - 1, f32::INFINITY);
        assert_same_error(&inf, &top(100));
        // log1p forced on log data; seurat_v3 on log data.
        assert_same_error(pbmc_log(), &forced);
        let msg = assert_same_error(
            pbmc_log(),
            &PreprocessConfig {
                flavor: HvgFlavor::SeuratV3,
                ..top(100)
            },
        );
        assert!(msg.contains("seurat_v3 needs raw counts"), "{msg}");
        // Filters removing everything.
        let msg = assert_same_error(
            ad,
            &PreprocessConfig {
                min_genes: Some(100_000),
                ..PreprocessConfig::default()
            },
        );
        assert!(msg.contains("min_genes=100000"), "{msg}");
        let msg = assert_same_error(
            ad,
            &PreprocessConfig {
                min_cells: Some(100_000),
                ..PreprocessConfig::default()
            },
        );
        assert!(msg.contains("min_cells=100000"), "{msg}");
        // A bad target sum (found after filtering) and configuration errors.
        assert_same_error(
            ad,
            &PreprocessConfig {
                target_sum: Some(-1.0),
                min_genes: Some(10),
                ..PreprocessConfig::default()
            },
        );
        assert_same_error(
            ad,
            &PreprocessConfig {
                scale: true,
                minmax: true,
                ..PreprocessConfig::default()
            },
        );
        assert_same_error(ad, &top(0));
    }

    #[test]
    fn tiny_inputs_same_results_and_errors() {
        // 3 cells x 4 genes, one zero cell; only cell 1 has >= 3 genes.
        let x = Matrix::Dense(
            DenseMatrix::from_vec(
                3,
                4,
                vec![1.0, 0.0, 2.0, 0.0, 3.0, 1.0, 1.0, 5.0, 0.0, 0.0, 0.0, 0.0],
            )
            .unwrap(),
        );
        let mut ad = AnnData::new(x, (0..4).map(|j| format!("g{j}")).collect());
        ad.obs_names = (0..3).map(|i| format!("c{i}")).collect();
        // Zero-count cell warning, median target.
        let f = assert_same(
            &ad,
            &PreprocessConfig {
                target_sum: None,
                n_top_genes: None,
                ..PreprocessConfig::default()
            },
        );
        assert!(
            f.messages
                .iter()
                .any(|m| m.contains("1 cells have zero counts"))
        );
        // One cell left: HVGs need two.
        let msg = assert_same_error(
            &ad,
            &PreprocessConfig {
                min_genes: Some(3),
                ..top(2)
            },
        );
        assert!(msg.contains("at least 2 cells"), "{msg}");
    }

    /// A source whose `read_rows` fails on call `fail_on` (1-based).
    struct Failing {
        inner: Matrix,
        calls: usize,
        fail_on: usize,
    }

    impl RowBlocks for Failing {
        fn shape(&self) -> (usize, usize) {
            self.inner.shape()
        }

        fn read_rows(&mut self, start: usize, end: usize) -> Result<Matrix> {
            self.calls += 1;
            if self.calls == self.fail_on {
                return Err(Error::format(
                    "/data/cells.h5ad",
                    "X/data",
                    format!("truncated chunk at rows {start}..{end}"),
                ));
            }
            self.inner.read_rows(start, end)
        }
    }

    #[test]
    fn read_errors_propagate() {
        let ad = pbmc_counts();
        let cfg = PreprocessConfig {
            scale: true,
            ..top(300)
        };
        // 700 rows in blocks of 100: 7 reads per pass; fail in the first pass, in the HVG
        // passes and in the last (scale) pass.
        for fail_on in [1, 7, 10, 30, 35] {
            let mut src = Failing {
                inner: ad.x.clone(),
                calls: 0,
                fail_on,
            };
            let err = fit_streaming(&mut src, &ad.var_names, None, &cfg, 100).unwrap_err();
            assert!(matches!(err, Error::Format { .. }), "{err}");
            assert!(err.to_string().contains("truncated chunk"), "{err}");
            assert_eq!(src.calls, fail_on, "stopped at the failing read");
        }
        // The same source without failure: 5 passes (kind, 2 HVG, 2 scale).
        let mut src = Failing {
            inner: ad.x.clone(),
            calls: 0,
            fail_on: usize::MAX,
        };
        let s = fit_streaming(&mut src, &ad.var_names, None, &cfg, 100).unwrap();
        assert_eq!(src.calls, 35);
        assert_eq!(s.fitted, fit_transform(ad, &cfg).unwrap().1);
    }

    #[test]
    fn bad_arguments() {
        let ad = pbmc_counts();
        let cfg = PreprocessConfig::default();
        let err = streamed(ad, &cfg, 0).unwrap_err();
        assert!(matches!(err, Error::Param(_)), "{err}");
        let err = fit_streaming(&mut ad.x.clone(), &ad.var_names[1..], None, &cfg, 10).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        let err = fit_streaming(
            &mut ad.x.clone(),
            &ad.var_names,
            Some(&ad.obs_names[1..]),
            &cfg,
            10,
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }
}
