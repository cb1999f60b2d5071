//! How [`fit_streaming`](super::fit_streaming) reads its source ([`Blocks`]: one pass over the
//! row blocks) and turns a raw block into what each statistic is computed on ([`Prep`]).

use std::ops::Range;

use crate::anndata::{DenseMatrix, Matrix, RowBlocks, select_csr_cols, select_csr_rows};
use crate::error::{Error, Result};
use crate::pp::basic::{log1p, normalize_rows_with};
#[cfg(doc)]
use crate::pp::fit_transform;

/// The source and how it is cut into blocks.
pub(super) struct Blocks<'a> {
    pub(super) x: &'a mut dyn RowBlocks,
    pub(super) n_rows: usize,
    pub(super) n_cols: usize,
    pub(super) block_rows: usize,
}

impl Blocks<'_> {
    /// One pass: `f(first row, block)` for every block, in row order.
    ///
    /// # Errors
    /// The first error of `read_rows` or `f`; [`Error::Internal`] for a block of the wrong
    /// shape.
    pub(super) fn pass(&mut self, mut f: impl FnMut(usize, Matrix) -> Result<()>) -> Result<()> {
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
pub(super) struct Prep<'a> {
    /// Rows kept by `filter_cells`, ascending.
    pub(super) kept: &'a [usize],
    /// Genes kept by `filter_genes` (`None`: all, not selected).
    pub(super) input_cols: Option<&'a [usize]>,
    /// Library sizes of the kept cells (by position in `kept`) and the target sum.
    pub(super) norm: Option<(&'a [f64], f64)>,
    /// Whether `log1p` is applied.
    pub(super) log: bool,
    /// Positions of the output genes among the input genes (`None`: all).
    pub(super) out_cols: Option<&'a [usize]>,
}

impl Prep<'_> {
    /// Positions in `kept` of the rows `start..end`.
    fn kept_range(&self, start: usize, end: usize) -> Range<usize> {
        self.kept.partition_point(|&i| i < start)..self.kept.partition_point(|&i| i < end)
    }

    /// The filtered counts of the block starting at row `start` (kept rows, kept genes), and
    /// the positions of its rows in `kept`.
    pub(super) fn counts(&self, start: usize, block: Matrix) -> (Matrix, Range<usize>) {
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
    pub(super) fn logged(&self, start: usize, block: Matrix) -> Matrix {
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
    pub(super) fn output(&self, start: usize, block: Matrix) -> DenseMatrix {
        let b = self.logged(start, block);
        match self.out_cols {
            Some(idx) => select_cols(&b, idx),
            None => b,
        }
        .to_dense()
    }
}

/// Rows `idx` of `m`, as [`crate::anndata::AnnData::select_obs`] selects them.
pub(super) fn select_rows(m: &Matrix, idx: &[usize]) -> Matrix {
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
