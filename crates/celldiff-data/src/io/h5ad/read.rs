//! The `.h5ad` reader, part 1: HDF5 access with errors that name the field, checked shapes
//! and declared sizes, typed dataset reads, and `X` (dense, CSR, CSC, legacy `h5sparse`).

use hdf5_pure::{Dataset, FormatError, Group};
use sprs::CsMat;

use crate::anndata::{AnnData, DenseMatrix, Matrix};
use crate::error::{Error, Result};
use crate::io::tenx::unique_var_names;

use super::decode::*;
use super::*;

impl Reader<'_> {
    pub(super) fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::format(self.path, field, msg)
    }

    pub(super) fn h5(&self, field: &str, e: hdf5_pure::Error) -> Error {
        let e = e.to_string();
        // An undefined address (2^64 - 1) is what a link hdf5-pure cannot follow reads as.
        let why = if e.contains(&u64::MAX.to_string()) {
            "the file holds an HDF5 soft or external link celldiff could not follow (streamed \
             reads, `--stream`, follow none: read without it, or store the object itself), or \
             it is corrupt"
        } else {
            "the file is corrupt or truncated"
        };
        self.err(field, format!("cannot read ({e}); {why}"))
    }

    pub(super) fn node(&self, field: &str) -> Result<Node> {
        match self.file.dataset(field) {
            Ok(d) => Ok(Node::Dataset(Box::new(d))),
            Err(hdf5_pure::Error::NotADataset(_)) => match self.file.group(field) {
                Ok(g) => Ok(Node::Group(g)),
                Err(hdf5_pure::Error::NotAGroup(_)) => Ok(Node::Missing),
                Err(e) => Err(self.h5(field, e)),
            },
            Err(hdf5_pure::Error::Format(FormatError::PathNotFound(_)))
            | Err(hdf5_pure::Error::NotAGroup(_)) => Ok(Node::Missing),
            Err(e) => Err(self.h5(field, e)),
        }
    }

    pub(super) fn exists(&self, field: &str) -> bool {
        !matches!(self.node(field), Ok(Node::Missing) | Err(_))
    }

    pub(super) fn group_attrs(&self, g: &Group, field: &str) -> Result<Attrs> {
        g.attrs().map_err(|e| self.h5(field, e))
    }

    /// Sorted member names (datasets and groups) of a group.
    pub(super) fn members(&self, g: &Group, field: &str) -> Result<Vec<String>> {
        let mut names = g.datasets().map_err(|e| self.h5(field, e))?;
        names.extend(g.groups().map_err(|e| self.h5(field, e))?);
        names.sort();
        names.dedup();
        Ok(names)
    }

    pub(super) fn dataset(&self, field: &str, what: &str) -> Result<Dataset> {
        match self.node(field)? {
            Node::Dataset(d) => Ok(*d),
            Node::Group(_) => Err(self.err(field, format!("is a group; expected {what}"))),
            Node::Missing => Err(self.err(field, format!("absent; expected {what}"))),
        }
    }

    /// An unsupported compression filter of `ds`, as a message.
    pub(super) fn unsupported_filter(&self, ds: &Dataset) -> Option<String> {
        ds.filters().into_iter().find(|f| !SUPPORTED_FILTERS.contains(f)).map(|f| {
            format!(
                "is compressed with {} (HDF5 filter {f}), which celldiff cannot decode; expected \
                 gzip, lzf or no compression (re-save in Python with \
                 `adata.write_h5ad(path, compression=\"gzip\")`)",
                filter_name(f)
            )
        })
    }

    /// Why the matrix/array at `field` cannot be read (an undecodable filter), if so.
    pub(super) fn unreadable_reason(&self, field: &str) -> Option<String> {
        match self.node(field).ok()? {
            Node::Dataset(d) => self.unsupported_filter(&d),
            Node::Group(g) => {
                for name in g.datasets().ok()? {
                    if let Ok(d) = g.dataset(&name)
                        && let Some(r) = self.unsupported_filter(&d)
                    {
                        return Some(format!("{name} {r}"));
                    }
                }
                None
            }
            Node::Missing => None,
        }
    }

    /// Validates filters and declared size of `ds`; returns its shape.
    pub(super) fn checked_shape(&self, ds: &Dataset, field: &str) -> Result<Vec<usize>> {
        if let Some(msg) = self.unsupported_filter(ds) {
            return Err(self.err(field, msg));
        }
        let shape = ds.shape().map_err(|e| self.h5(field, e))?;
        let esz = ds.element_size().map_err(|e| self.h5(field, e))?;
        let bytes = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(esz));
        // gzip expands at most ~1032:1; uncompressed data must fit in the file.
        let factor = if ds.filters().is_empty() { 1 } else { 1100 };
        let limit = self.file_len.saturating_mul(factor).saturating_add(1 << 20);
        match bytes {
            Some(b) if b <= limit => {}
            _ => {
                return Err(self.err(
                    field,
                    format!(
                        "declares shape {shape:?} ({esz}-byte elements), more than this {}-byte \
                         file can hold; the file is corrupt or truncated",
                        self.file_len
                    ),
                ));
            }
        }
        shape
            .into_iter()
            .map(|d| usize::try_from(d).map_err(|_| self.err(field, "dimension too large")))
            .collect()
    }

    /// The most rows a dimension may declare when no stored dataset holds one entry per row
    /// (a dataframe without names, the minor axis of a sparse matrix): the file's size in
    /// bytes, and at least 2^20. Checked before anything of that size is allocated.
    pub(super) fn max_unbacked_rows(&self) -> u64 {
        self.file_len.max(1 << 20)
    }

    /// `[n_rows, n_cols]` of the sparse group at `field` from its `shape` attribute, with the
    /// minor dimension (`n_cols` for CSR, `n_rows` for CSC, which no dataset backs) bounded by
    /// [`Self::max_unbacked_rows`]. The major dimension is checked against `indptr` later.
    pub(super) fn sparse_dims(
        &self,
        field: &str,
        attrs: &Attrs,
        csr: bool,
    ) -> Result<(usize, usize)> {
        let [r, c] = sparse_shape_attr(attrs).map_err(|m| self.err(field, m))?;
        let (minor, name) = if csr { (c, "n_cols") } else { (r, "n_rows") };
        let max = self.max_unbacked_rows();
        if minor > max || r.max(c) > usize::MAX as u64 / 2 {
            return Err(self.err(
                field,
                format!(
                    "declares shape [{r}, {c}]: {name} = {minor} is more than this {}-byte file \
                     can describe (at most {max}); the `shape` attribute is corrupt (expected \
                     the matrix's real [n_rows, n_cols])",
                    self.file_len
                ),
            ));
        }
        Ok((r as usize, c as usize))
    }

    pub(super) fn kind(&self, ds: &Dataset, field: &str) -> Result<Kind> {
        Ok(kind_of(&ds.dtype().map_err(|e| self.h5(field, e))?))
    }

    pub(super) fn expect_numeric(&self, ds: &Dataset, field: &str) -> Result<()> {
        match self.kind(ds, field)? {
            Kind::Float | Kind::Int | Kind::Bool => Ok(()),
            k => Err(self.err(field, format!("has element type {k:?}; expected numbers"))),
        }
    }

    pub(super) fn read_f32(&self, ds: &Dataset, field: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let shape = self.checked_shape(ds, field)?;
        self.expect_numeric(ds, field)?;
        let v = ds.read_f32().map_err(|e| self.h5(field, e))?;
        self.check_len(field, &shape, v.len())?;
        Ok((shape, v))
    }

    pub(super) fn read_f64(&self, ds: &Dataset, field: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let shape = self.checked_shape(ds, field)?;
        self.expect_numeric(ds, field)?;
        let v = ds.read_f64().map_err(|e| self.h5(field, e))?;
        self.check_len(field, &shape, v.len())?;
        Ok((shape, v))
    }

    pub(super) fn read_i64(&self, ds: &Dataset, field: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let shape = self.checked_shape(ds, field)?;
        match self.kind(ds, field)? {
            Kind::Int | Kind::Bool => {}
            k => return Err(self.err(field, format!("has element type {k:?}; expected integers"))),
        }
        let v = ds.read_i64().map_err(|e| self.h5(field, e))?;
        self.check_len(field, &shape, v.len())?;
        Ok((shape, v))
    }

    pub(super) fn read_bool(&self, ds: &Dataset, field: &str) -> Result<Vec<bool>> {
        let (_, v) = self.read_i64(ds, field)?;
        Ok(v.into_iter().map(|x| x != 0).collect())
    }

    /// Strings, or numbers formatted as strings (numeric categories / indices).
    pub(super) fn read_labels(&self, ds: &Dataset, field: &str) -> Result<Vec<String>> {
        let shape = self.checked_shape(ds, field)?;
        let v = match self.kind(ds, field)? {
            Kind::Str => ds.read_string().map_err(|e| self.h5(field, e))?,
            Kind::Float | Kind::Int => ds
                .read_f64()
                .map_err(|e| self.h5(field, e))?
                .into_iter()
                .map(fmt_number)
                .collect(),
            Kind::Bool => self
                .read_bool(ds, field)?
                .into_iter()
                .map(|b| if b { "True" } else { "False" }.to_string())
                .collect(),
            k => return Err(self.err(field, format!("has element type {k:?}; expected strings"))),
        };
        self.check_len(field, &shape, v.len())?;
        Ok(v)
    }

    pub(super) fn check_len(&self, field: &str, shape: &[usize], got: usize) -> Result<()> {
        let want: usize = shape.iter().product();
        if want != got {
            return Err(self.err(
                field,
                format!("decoded {got} values for shape {shape:?}; the file is corrupt"),
            ));
        }
        Ok(())
    }

    /// The fields of `X` and of its `var` for these options (`X`, `layers/<name>` or
    /// `raw/X` / legacy `raw.X`), checked to exist.
    pub(super) fn x_fields(&self, opts: &ReadOptions) -> Result<(String, String)> {
        Ok(if let Some(layer) = &opts.layer {
            let field = format!("layers/{layer}");
            if !self.exists(&field) {
                return Err(self.err(
                    &field,
                    format!(
                        "absent: the file has no layer `{layer}`; available layers: {:?}",
                        self.layer_names()
                    ),
                ));
            }
            (field, "var".to_string())
        } else if opts.use_raw {
            if self.exists("raw/X") {
                ("raw/X".to_string(), "raw/var".to_string())
            } else if self.exists("raw.X") {
                ("raw.X".to_string(), "raw.var".to_string())
            } else {
                return Err(self.err(
                    "raw/X",
                    "absent: the file has no `adata.raw`; expected raw/X when reading raw \
                         (read X or a layer instead)",
                ));
            }
        } else {
            if !self.exists("X") {
                return Err(self.err(
                    "X",
                    format!(
                        "absent: expected the expression matrix X (a dense array or a \
                             csr_matrix/csc_matrix group); layers in this file: {:?}",
                        self.layer_names()
                    ),
                ));
            }
            ("X".to_string(), "var".to_string())
        })
    }

    pub(super) fn read(&self, opts: &ReadOptions) -> Result<AnnData> {
        let (x_field, var_field) = self.x_fields(opts)?;
        let x = self.read_matrix(&x_field)?;
        let (n_obs, n_vars) = x.shape();
        let mut used_uns = Vec::new();
        let (obs_names, obs) = self.read_dataframe("obs", n_obs, &mut used_uns)?;
        let (var_names, var) = self.read_dataframe(&var_field, n_vars, &mut used_uns)?;
        let var_names = unique_var_names(self.path, &var_field, var_names);
        let obsm = self.read_obsm(n_obs)?;
        let layers = if opts.use_raw {
            Vec::new()
        } else {
            self.read_layers(n_obs, n_vars)?
        };
        let mut uns = self.read_uns();
        for k in used_uns {
            uns.remove(&k);
        }
        Ok(AnnData {
            x,
            obs_names,
            var_names,
            obs,
            var,
            obsm,
            layers,
            uns,
        })
    }

    pub(super) fn layer_names(&self) -> Vec<String> {
        match self.node("layers") {
            Ok(Node::Group(g)) => self.members(&g, "layers").unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// A dense array dataset or a sparse group at `field` as a matrix.
    pub(super) fn read_matrix(&self, field: &str) -> Result<Matrix> {
        match self.node(field)? {
            Node::Missing => Err(self.err(field, "absent; expected a matrix")),
            Node::Dataset(ds) => {
                let (shape, data) = self.read_f32(&ds, field)?;
                if shape.len() != 2 {
                    return Err(self.err(
                        field,
                        format!("has shape {shape:?}; expected a 2-D array [n_cells, n_genes]"),
                    ));
                }
                Ok(Matrix::Dense(DenseMatrix {
                    n_rows: shape[0],
                    n_cols: shape[1],
                    data,
                }))
            }
            Node::Group(g) => {
                let attrs = self.group_attrs(&g, field)?;
                let enc = attr_str(&attrs, "encoding-type")
                    .or_else(|| attr_str(&attrs, "h5sparse_format"));
                match enc.as_deref() {
                    Some("csr_matrix") | Some("csr") => {
                        self.read_sparse(field, &attrs, true).map(Matrix::Csr)
                    }
                    Some("csc_matrix") | Some("csc") => {
                        self.read_sparse(field, &attrs, false).map(Matrix::Csr)
                    }
                    Some(other) => Err(self.err(
                        field,
                        format!(
                            "has unsupported encoding-type `{other}`; expected a dense array or \
                             a csr_matrix/csc_matrix group"
                        ),
                    )),
                    None => Err(self.err(
                        field,
                        "is a group without an encoding-type attribute; expected a dense array \
                         or a csr_matrix/csc_matrix group",
                    )),
                }
            }
        }
    }

    /// A `csr_matrix`/`csc_matrix` group as CSR with sorted indices.
    pub(super) fn read_sparse(&self, field: &str, attrs: &Attrs, csr: bool) -> Result<CsMat<f32>> {
        let (n_rows, n_cols) = self.sparse_dims(field, attrs, csr)?;
        let f_data = format!("{field}/data");
        let f_ind = format!("{field}/indices");
        let f_ptr = format!("{field}/indptr");
        let (ds_data, ds_ind, ds_ptr) = (
            self.dataset(&f_data, "the stored values (1-D)")?,
            self.dataset(&f_ind, "the minor indices (1-D integers)")?,
            self.dataset(&f_ptr, "the index pointer (1-D integers)")?,
        );
        let (_, data) = self.read_f32(&ds_data, &f_data)?;
        let (_, indices) = self.read_i64(&ds_ind, &f_ind)?;
        let (_, indptr) = self.read_i64(&ds_ptr, &f_ptr)?;
        let (n_outer, n_inner) = if csr {
            (n_rows, n_cols)
        } else {
            (n_cols, n_rows)
        };
        let (outer_name, inner_name) = if csr {
            ("n_rows", "n_cols")
        } else {
            ("n_cols", "n_rows")
        };
        if indptr.len() != n_outer + 1 {
            return Err(self.err(
                &f_ptr,
                format!(
                    "has {} entries; expected {outer_name} + 1 = {} for shape [{n_rows}, {n_cols}]",
                    indptr.len(),
                    n_outer + 1
                ),
            ));
        }
        if indices.len() != data.len() {
            return Err(self.err(
                &f_ind,
                format!(
                    "has {} entries but data has {}; expected equal",
                    indices.len(),
                    data.len()
                ),
            ));
        }
        if indptr[0] != 0 || indptr.windows(2).any(|w| w[1] < w[0]) {
            return Err(self.err(&f_ptr, "expected non-decreasing offsets starting at 0"));
        }
        if indptr[n_outer] != data.len() as i64 {
            return Err(self.err(
                &f_ptr,
                format!(
                    "ends at {} but data has {} entries; expected equal",
                    indptr[n_outer],
                    data.len()
                ),
            ));
        }
        if let Some(&bad) = indices
            .iter()
            .find(|&&j| j < 0 || j as u64 >= n_inner as u64)
        {
            return Err(self.err(
                &f_ind,
                format!("contains index {bad}; expected 0 <= index < {inner_name} = {n_inner}"),
            ));
        }
        let indptr: Vec<usize> = indptr.into_iter().map(|p| p as usize).collect();
        let indices: Vec<usize> = indices.into_iter().map(|j| j as usize).collect();
        let (indptr, indices, data) = if csr {
            sort_rows(indptr, indices, data)
        } else {
            transpose_compressed(n_inner, &indptr, &indices, &data)
        };
        if let Some(row) = (0..n_rows).find(|&i| {
            indices[indptr[i]..indptr[i + 1]]
                .windows(2)
                .any(|w| w[0] == w[1])
        }) {
            return Err(self.err(
                &f_ind,
                format!("row {row} has a duplicate column index; expected unique entries"),
            ));
        }
        CsMat::try_new((n_rows, n_cols), indptr, indices, data)
            .map_err(|(_, _, _, e)| self.err(field, format!("invalid sparse structure: {e}")))
    }
}
