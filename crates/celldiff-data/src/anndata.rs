//! In-memory AnnData: the expression matrix `X` with its `obs`, `var`, `obsm`, `layers` and
//! `uns`, mirroring Python's `anndata.AnnData` closely enough that files round-trip.
//!
//! `X` is kept sparse (CSR, [`sprs::CsMat<f32>`]) or dense ([`DenseMatrix`], row-major
//! `[n_cells, n_genes]`); cells stay sparse until a minibatch is densified
//! ([`Matrix::rows_dense`]).

use sprs::CsMat;

use crate::error::{Error, Result};

/// A dense row-major `f32` matrix of shape `[n_rows, n_cols]` (cells × genes for expression,
/// cells × dimensions for embeddings).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseMatrix {
    /// Number of rows (cells).
    pub n_rows: usize,
    /// Number of columns (genes or dimensions).
    pub n_cols: usize,
    /// Row-major values, `data[i * n_cols + j]`, length `n_rows * n_cols`.
    pub data: Vec<f32>,
}

impl DenseMatrix {
    /// `[self | other]`: the columns of `other` after those of `self` (`[n, a]`, `[n, b]` →
    /// `[n, a + b]`).
    ///
    /// # Panics
    /// If the row counts differ.
    pub fn hcat(&self, other: &DenseMatrix) -> Self {
        assert_eq!(self.n_rows, other.n_rows, "hcat: row counts differ");
        let n_cols = self.n_cols + other.n_cols;
        let mut data = Vec::with_capacity(self.n_rows * n_cols);
        for i in 0..self.n_rows {
            data.extend_from_slice(self.row(i));
            data.extend_from_slice(other.row(i));
        }
        Self {
            n_rows: self.n_rows,
            n_cols,
            data,
        }
    }

    /// The matrix as CSR (sorted column indices, explicit zeros dropped), same shape.
    pub fn to_csr(&self) -> CsMat<f32> {
        let mut indptr = Vec::with_capacity(self.n_rows + 1);
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        indptr.push(0);
        for i in 0..self.n_rows {
            for (j, &v) in self.row(i).iter().enumerate() {
                if v != 0.0 {
                    indices.push(j);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        CsMat::new((self.n_rows, self.n_cols), indptr, indices, values)
    }

    /// A `[n_rows, n_cols]` matrix of zeros.
    pub fn zeros(n_rows: usize, n_cols: usize) -> Self {
        Self {
            n_rows,
            n_cols,
            data: vec![0.0; n_rows * n_cols],
        }
    }

    /// Wraps row-major `data`.
    ///
    /// # Errors
    /// [`Error::Internal`] if `data.len() != n_rows * n_cols`.
    pub fn from_vec(n_rows: usize, n_cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != n_rows * n_cols {
            return Err(Error::Internal(format!(
                "DenseMatrix::from_vec: {} values for shape [{n_rows}, {n_cols}]",
                data.len()
            )));
        }
        Ok(Self {
            n_rows,
            n_cols,
            data,
        })
    }

    /// Row `i` as a slice of length `n_cols`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }

    /// Row `i` as a mutable slice of length `n_cols`.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }

    /// The rows `idx` (in that order) as a new `[idx.len(), n_cols]` matrix.
    pub fn select_rows(&self, idx: &[usize]) -> Self {
        let mut data = Vec::with_capacity(idx.len() * self.n_cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Self {
            n_rows: idx.len(),
            n_cols: self.n_cols,
            data,
        }
    }

    /// The columns `idx` (in that order) as a new `[n_rows, idx.len()]` matrix.
    pub fn select_cols(&self, idx: &[usize]) -> Self {
        let mut data = Vec::with_capacity(idx.len() * self.n_rows);
        for i in 0..self.n_rows {
            let r = self.row(i);
            data.extend(idx.iter().map(|&j| r[j]));
        }
        Self {
            n_rows: self.n_rows,
            n_cols: idx.len(),
            data,
        }
    }
}

/// The expression matrix `X` (or a layer): sparse CSR or dense, `[n_cells, n_genes]`.
#[derive(Debug, Clone)]
pub enum Matrix {
    /// Dense row-major matrix.
    Dense(DenseMatrix),
    /// Compressed sparse rows with sorted column indices.
    Csr(CsMat<f32>),
}

impl Matrix {
    /// `(n_rows, n_cols)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Matrix::Dense(d) => (d.n_rows, d.n_cols),
            Matrix::Csr(c) => (c.rows(), c.cols()),
        }
    }

    /// Number of rows (cells).
    pub fn n_rows(&self) -> usize {
        self.shape().0
    }

    /// Number of columns (genes).
    pub fn n_cols(&self) -> usize {
        self.shape().1
    }

    /// The rows `idx` densified into a `[idx.len(), n_cols]` matrix (a minibatch).
    pub fn rows_dense(&self, idx: &[usize]) -> DenseMatrix {
        match self {
            Matrix::Dense(d) => d.select_rows(idx),
            Matrix::Csr(c) => {
                let n_cols = c.cols();
                let mut out = DenseMatrix::zeros(idx.len(), n_cols);
                for (k, &i) in idx.iter().enumerate() {
                    if let Some(row) = c.outer_view(i) {
                        let dst = out.row_mut(k);
                        for (j, &v) in row.iter() {
                            dst[j] = v;
                        }
                    }
                }
                out
            }
        }
    }

    /// The whole matrix as dense `[n_rows, n_cols]`.
    pub fn to_dense(&self) -> DenseMatrix {
        match self {
            Matrix::Dense(d) => d.clone(),
            Matrix::Csr(_) => {
                let idx: Vec<usize> = (0..self.n_rows()).collect();
                self.rows_dense(&idx)
            }
        }
    }

    /// Calls `f(row, col, value)` for every stored value (all values if dense).
    pub fn for_each_nonzero(&self, mut f: impl FnMut(usize, usize, f32)) {
        match self {
            Matrix::Dense(d) => {
                for i in 0..d.n_rows {
                    for (j, &v) in d.row(i).iter().enumerate() {
                        f(i, j, v);
                    }
                }
            }
            Matrix::Csr(c) => {
                for (i, row) in c.outer_iterator().enumerate() {
                    for (j, &v) in row.iter() {
                        f(i, j, v);
                    }
                }
            }
        }
    }
}

/// One `obs` or `var` column.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// pandas `Categorical`: `codes[i]` indexes `categories`; `-1` is missing (NaN).
    Categorical {
        /// Category codes, one per row, `-1` for missing.
        codes: Vec<i32>,
        /// Category labels.
        categories: Vec<String>,
    },
    /// Free strings.
    String(Vec<String>),
    /// Numbers (integers are widened to `f64`).
    Numeric(Vec<f64>),
    /// Booleans (`var['highly_variable']`).
    Bool(Vec<bool>),
}

impl Column {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Categorical { codes, .. } => codes.len(),
            Column::String(v) => v.len(),
            Column::Numeric(v) => v.len(),
            Column::Bool(v) => v.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column as one label per row (categoricals and strings; numbers formatted);
    /// missing categorical values become `"nan"` as in pandas' `astype(str)`.
    pub fn labels(&self) -> Vec<String> {
        match self {
            Column::Categorical { codes, categories } => codes
                .iter()
                .map(|&c| {
                    if c < 0 {
                        "nan".to_string()
                    } else {
                        categories[c as usize].clone()
                    }
                })
                .collect(),
            Column::String(v) => v.clone(),
            Column::Numeric(v) => v.iter().map(|x| format!("{x}")).collect(),
            Column::Bool(v) => v.iter().map(|x| format!("{x}")).collect(),
        }
    }

    /// Builds a categorical column from labels, categories in order of first appearance
    /// sorted lexicographically (pandas' default for `astype('category')`).
    pub fn categorical_from_labels(labels: &[String]) -> Self {
        let mut categories: Vec<String> = labels.to_vec();
        categories.sort();
        categories.dedup();
        let codes = labels
            .iter()
            .map(|l| categories.binary_search(l).map(|c| c as i32).unwrap_or(-1))
            .collect();
        Column::Categorical { codes, categories }
    }

    /// The rows `idx` as a new column (categoricals keep all categories).
    pub fn select(&self, idx: &[usize]) -> Self {
        match self {
            Column::Categorical { codes, categories } => Column::Categorical {
                codes: idx.iter().map(|&i| codes[i]).collect(),
                categories: categories.clone(),
            },
            Column::String(v) => Column::String(idx.iter().map(|&i| v[i].clone()).collect()),
            Column::Numeric(v) => Column::Numeric(idx.iter().map(|&i| v[i]).collect()),
            Column::Bool(v) => Column::Bool(idx.iter().map(|&i| v[i]).collect()),
        }
    }
}

/// An ordered table of named columns (`obs` or `var`), all of one length.
pub type Frame = Vec<(String, Column)>;

/// Annotated data matrix, as Python's `anndata.AnnData`.
#[derive(Debug, Clone)]
pub struct AnnData {
    /// Expression `[n_obs, n_vars]`: raw counts, log1p-normalised or scaled (see `uns`).
    pub x: Matrix,
    /// Cell barcodes / ids, length `n_obs`.
    pub obs_names: Vec<String>,
    /// Gene names, length `n_vars`.
    pub var_names: Vec<String>,
    /// Per-cell annotations.
    pub obs: Frame,
    /// Per-gene annotations.
    pub var: Frame,
    /// Per-cell embeddings, each `[n_obs, k]` (e.g. `X_celldiff`, `X_pca`).
    pub obsm: Vec<(String, DenseMatrix)>,
    /// Alternative matrices of the same shape as `x` (e.g. `counts`).
    pub layers: Vec<(String, Matrix)>,
    /// Unstructured metadata; written as nested HDF5 groups/attributes/JSON strings.
    pub uns: serde_json::Map<String, serde_json::Value>,
}

impl AnnData {
    /// A new AnnData with default `obs_names` (`"0"`, `"1"`, ...) and `var_names`, no
    /// annotations.
    pub fn new(x: Matrix, var_names: Vec<String>) -> Self {
        let n = x.n_rows();
        Self {
            x,
            obs_names: (0..n).map(|i| i.to_string()).collect(),
            var_names,
            obs: Vec::new(),
            var: Vec::new(),
            obsm: Vec::new(),
            layers: Vec::new(),
            uns: serde_json::Map::new(),
        }
    }

    /// Number of cells.
    pub fn n_obs(&self) -> usize {
        self.x.n_rows()
    }

    /// Number of genes.
    pub fn n_vars(&self) -> usize {
        self.x.n_cols()
    }

    /// The `obs` column `key`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the key and listing the available columns.
    pub fn obs_column(&self, key: &str) -> Result<&Column> {
        self.obs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, c)| c)
            .ok_or_else(|| {
                let keys: Vec<&str> = self.obs.iter().map(|(k, _)| k.as_str()).collect();
                Error::InvalidInput(format!("obs has no column `{key}` (available: {keys:?})"))
            })
    }

    /// Sets (replaces or appends) the `obs` column `key`.
    pub fn set_obs(&mut self, key: &str, col: Column) {
        set_column(&mut self.obs, key, col);
    }

    /// Sets (replaces or appends) the `var` column `key`.
    pub fn set_var(&mut self, key: &str, col: Column) {
        set_column(&mut self.var, key, col);
    }

    /// Sets (replaces or appends) `obsm[key]`.
    pub fn set_obsm(&mut self, key: &str, m: DenseMatrix) {
        if let Some(slot) = self.obsm.iter_mut().find(|(k, _)| k == key) {
            slot.1 = m;
        } else {
            self.obsm.push((key.to_string(), m));
        }
    }

    /// The cells `idx` (in that order), with their `obs`, `obsm` and `layers` rows.
    pub fn select_obs(&self, idx: &[usize]) -> Self {
        let x = match &self.x {
            Matrix::Dense(d) => Matrix::Dense(d.select_rows(idx)),
            Matrix::Csr(c) => Matrix::Csr(select_csr_rows(c, idx)),
        };
        Self {
            x,
            obs_names: idx.iter().map(|&i| self.obs_names[i].clone()).collect(),
            var_names: self.var_names.clone(),
            obs: self
                .obs
                .iter()
                .map(|(k, c)| (k.clone(), c.select(idx)))
                .collect(),
            var: self.var.clone(),
            obsm: self
                .obsm
                .iter()
                .map(|(k, m)| (k.clone(), m.select_rows(idx)))
                .collect(),
            layers: self
                .layers
                .iter()
                .map(|(k, m)| {
                    let m = match m {
                        Matrix::Dense(d) => Matrix::Dense(d.select_rows(idx)),
                        Matrix::Csr(c) => Matrix::Csr(select_csr_rows(c, idx)),
                    };
                    (k.clone(), m)
                })
                .collect(),
            uns: self.uns.clone(),
        }
    }

    /// X's columns for `genes` (matched by name, in that order) as a dense
    /// `[n_obs, genes.len()]` matrix.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming `what` and the first five missing genes.
    pub fn columns_by_name(&self, genes: &[String], what: &str) -> Result<DenseMatrix> {
        let pos: std::collections::HashMap<&str, usize> = self
            .var_names
            .iter()
            .enumerate()
            .map(|(i, g)| (g.as_str(), i))
            .collect();
        let mut idx = Vec::with_capacity(genes.len());
        let mut missing = Vec::new();
        for g in genes {
            match pos.get(g.as_str()) {
                Some(&i) => idx.push(i),
                None => missing.push(g.as_str()),
            }
        }
        if !missing.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{what}: field `var_names`: {} of the {} genes asked for are missing (first: {})",
                missing.len(),
                genes.len(),
                missing[..missing.len().min(5)].join(", ")
            )));
        }
        Ok(self.x.to_dense().select_cols(&idx))
    }

    /// The genes `idx` (in that order), with their `var` rows; `obsm` and `uns` are kept.
    pub fn select_vars(&self, idx: &[usize]) -> Self {
        let sel = |m: &Matrix| match m {
            Matrix::Dense(d) => Matrix::Dense(d.select_cols(idx)),
            Matrix::Csr(c) => Matrix::Csr(select_csr_cols(c, idx)),
        };
        Self {
            x: sel(&self.x),
            obs_names: self.obs_names.clone(),
            var_names: idx.iter().map(|&j| self.var_names[j].clone()).collect(),
            obs: self.obs.clone(),
            var: self
                .var
                .iter()
                .map(|(k, c)| (k.clone(), c.select(idx)))
                .collect(),
            obsm: self.obsm.clone(),
            layers: self
                .layers
                .iter()
                .map(|(k, m)| (k.clone(), sel(m)))
                .collect(),
            uns: self.uns.clone(),
        }
    }
}

fn set_column(frame: &mut Frame, key: &str, col: Column) {
    if let Some(slot) = frame.iter_mut().find(|(k, _)| k == key) {
        slot.1 = col;
    } else {
        frame.push((key.to_string(), col));
    }
}

/// A matrix read a block of consecutive rows at a time: the in-memory [`Matrix`] or an `.h5ad`
/// file's `X` on disk ([`crate::io::H5adStream`]). Streaming passes (preprocessing statistics,
/// `train --stream`) only ever see one block, so their memory does not grow with the number of
/// cells.
pub trait RowBlocks {
    /// `[n_rows, n_cols]` of the whole matrix.
    fn shape(&self) -> (usize, usize);

    /// Rows `start..end` (`start <= end <= n_rows`) as a `[end - start, n_cols]` matrix in the
    /// units of the source (CSR with sorted column indices, or dense).
    ///
    /// # Errors
    /// Whatever reading the source fails with (for a file: [`Error::Format`] naming the file
    /// and field, [`Error::Io`]).
    fn read_rows(&mut self, start: usize, end: usize) -> Result<Matrix>;
}

impl RowBlocks for Matrix {
    fn shape(&self) -> (usize, usize) {
        Matrix::shape(self)
    }

    fn read_rows(&mut self, start: usize, end: usize) -> Result<Matrix> {
        let (n, _) = Matrix::shape(self);
        if start > end || end > n {
            return Err(Error::Internal(format!(
                "read_rows({start}, {end}) out of range for {n} rows"
            )));
        }
        let idx: Vec<usize> = (start..end).collect();
        Ok(match self {
            Matrix::Dense(d) => Matrix::Dense(d.select_rows(&idx)),
            Matrix::Csr(c) => Matrix::Csr(select_csr_rows(&crate::pp::csr_of(c), &idx)),
        })
    }
}

/// Rows `idx` of a CSR matrix, in that order.
pub fn select_csr_rows(c: &CsMat<f32>, idx: &[usize]) -> CsMat<f32> {
    let mut indptr = Vec::with_capacity(idx.len() + 1);
    let mut indices = Vec::new();
    let mut data = Vec::new();
    indptr.push(0);
    for &i in idx {
        if let Some(row) = c.outer_view(i) {
            for (j, &v) in row.iter() {
                indices.push(j);
                data.push(v);
            }
        }
        indptr.push(indices.len());
    }
    CsMat::new((idx.len(), c.cols()), indptr, indices, data)
}

/// Columns `idx` of a CSR matrix, in that order (output indices sorted).
pub fn select_csr_cols(c: &CsMat<f32>, idx: &[usize]) -> CsMat<f32> {
    let mut map = vec![usize::MAX; c.cols()];
    for (new, &old) in idx.iter().enumerate() {
        map[old] = new;
    }
    let mut indptr = Vec::with_capacity(c.rows() + 1);
    let mut indices = Vec::new();
    let mut data = Vec::new();
    indptr.push(0);
    for row in c.outer_iterator() {
        let mut entries: Vec<(usize, f32)> = row
            .iter()
            .filter_map(|(j, &v)| (map[j] != usize::MAX).then_some((map[j], v)))
            .collect();
        entries.sort_unstable_by_key(|e| e.0);
        for (j, v) in entries {
            indices.push(j);
            data.push(v);
        }
        indptr.push(indices.len());
    }
    CsMat::new((c.rows(), idx.len()), indptr, indices, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> CsMat<f32> {
        // [[1, 0, 2], [0, 0, 3]]
        CsMat::new((2, 3), vec![0, 2, 3], vec![0, 2, 2], vec![1.0, 2.0, 3.0])
    }

    #[test]
    fn csr_densify_and_select() {
        let m = Matrix::Csr(small());
        assert_eq!(m.to_dense().data, vec![1.0, 0.0, 2.0, 0.0, 0.0, 3.0]);
        assert_eq!(m.rows_dense(&[1]).data, vec![0.0, 0.0, 3.0]);
        let cols = select_csr_cols(&small(), &[2, 0]);
        assert_eq!(Matrix::Csr(cols).to_dense().data, vec![2.0, 1.0, 3.0, 0.0]);
    }

    #[test]
    fn categorical_from_labels_sorts_categories() {
        let l: Vec<String> = ["b", "a", "b"].iter().map(|s| s.to_string()).collect();
        let c = Column::categorical_from_labels(&l);
        assert_eq!(
            c,
            Column::Categorical {
                codes: vec![1, 0, 1],
                categories: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(c.labels(), l);
    }
}
