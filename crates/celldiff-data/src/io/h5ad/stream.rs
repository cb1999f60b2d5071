//! Reading `X` of an `.h5ad` file one block of rows at a time, for data larger than memory
//! (`celldiff train --stream`).
//!
//! The file is opened with hdf5-pure's streaming reader ([`File::open_streaming`]): metadata
//! and dataset chunks are read from disk on demand, so opening a 3 GB file costs the `obs`/`var`
//! tables and the CSR `indptr` (8 bytes a cell), not the matrix. A block of rows is then two
//! windowed reads (`X/data` and `X/indices` between `indptr[start]` and `indptr[end]`) or, for
//! a dense `X`, one window of rows. This is the access pattern of anndata's backed mode
//! (`anndata.read_h5ad(path, backed="r")`) and scvi-tools' / AnnLoader's chunked loaders.
//!
//! The checks of the in-memory reader apply (declared sizes against the file's size, a `shape`
//! attribute of any integer or whole-float type, unique `var_names` with a warning, merged
//! repeated categories), with one exception: HDF5 soft links are not followed here (the file is
//! not held in memory to resolve them); such a file is refused with a message that says so.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use hdf5_pure::{Dataset, File};
use sprs::CsMat;

use super::decode::sort_rows;
use super::{Node, ReadOptions, Reader, attr_str, check_hdf5_signature, decoder_panic};
use crate::anndata::{AnnData, Matrix, RowBlocks};
use crate::error::{Error, Result};

/// How `X` is stored.
enum Layout {
    /// A `csr_matrix` group: the whole `indptr` (length `n_obs + 1`) and the two 1-D datasets.
    Csr {
        indptr: Vec<u64>,
        data: Box<Dataset>,
        indices: Box<Dataset>,
    },
    /// A dense 2-D array `[n_obs, n_vars]`.
    Dense(Box<Dataset>),
}

/// An `.h5ad` file opened for block reads of its expression matrix.
///
/// [`H5adStream::metadata`] holds `obs_names`, `var_names`, `obs` and `var` (read once at
/// open) and an empty `X` (`[n_obs, n_vars]`, no stored values); [`RowBlocks::read_rows`]
/// returns rows of the real `X` (CSR with sorted column indices for `csr_matrix` storage,
/// dense for a dense array), in the stored units (raw counts stay counts, values as `f32`).
/// `obsm`, `layers` and `uns` are not read.
pub struct H5adStream {
    file: File,
    path: PathBuf,
    file_len: u64,
    field: String,
    layout: Layout,
    meta: AnnData,
}

impl std::fmt::Debug for H5adStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H5adStream")
            .field("path", &self.path)
            .field("field", &self.field)
            .field("shape", &self.meta.x.shape())
            .finish()
    }
}

/// Runs `f`, turning a panic inside the HDF5 decoder into an [`Error::Format`] on `(file)`.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(decoder_panic(path, p.as_ref())))
}

impl H5adStream {
    /// Opens `path` for streaming: `X` (or `layers/<layer>` with `opts.layer`, or `raw/X` with
    /// `opts.use_raw`) must be a `csr_matrix` group or a dense 2-D array; reads `obs` and `var`
    /// (or `raw/var`) and the CSR `indptr`, and checks the CSR structure that can be checked
    /// without the data (`indptr` starts at 0, never decreases, ends at the length of
    /// `data`/`indices`).
    ///
    /// # Errors
    /// - [`Error::Io`]: the file cannot be opened.
    /// - [`Error::Format`] naming the file and field: not HDF5; `X` absent; `X` stored as
    ///   `csc_matrix` (a CSC matrix has no row blocks: convert it in Python with
    ///   `adata.X = adata.X.tocsr()`); an unsupported encoding or compression; an invalid
    ///   `indptr`; `obs`/`var` that do not match `X`.
    /// - [`Error::InvalidInput`] for both `layer` and `use_raw`.
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        if opts.use_raw && opts.layer.is_some() {
            return Err(Error::InvalidInput(
                "choose either a layer or raw (use_raw) as the source of X, not both".into(),
            ));
        }
        check_hdf5_signature(path)?;
        let file_len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        guarded(path, || {
            let file = File::open_streaming(path).map_err(|e| {
                Error::format(
                    path,
                    "(file)",
                    format!(
                        "cannot parse the HDF5 structure ({e}); the file is corrupt or truncated"
                    ),
                )
            })?;
            let r = Reader {
                file: &file,
                path,
                file_len,
            };
            let (field, var_field) = r.x_fields(opts).map_err(|e| match e {
                // hdf5-pure's streaming reader skips soft links: say so (the in-memory
                // reader follows them).
                Error::Format {
                    path,
                    field,
                    message,
                } if message.starts_with("absent") => Error::Format {
                    path,
                    field,
                    message: format!(
                        "{message}. If it is an HDF5 soft link (h5py.SoftLink), read it in memory \
                         (not streamed): streamed reads do not follow links"
                    ),
                },
                other => other,
            })?;
            let (layout, n_obs, n_vars) = open_layout(&r, &field)?;
            let mut used_uns = Vec::new();
            let (obs_names, obs) = r.read_dataframe("obs", n_obs, &mut used_uns)?;
            let (var_names, var) = r.read_dataframe(&var_field, n_vars, &mut used_uns)?;
            let var_names = super::unique_var_names(path, &var_field, var_names);
            let empty = CsMat::new((n_obs, n_vars), vec![0; n_obs + 1], Vec::new(), Vec::new());
            let mut meta = AnnData::new(Matrix::Csr(empty), var_names);
            meta.obs_names = obs_names;
            meta.obs = obs;
            meta.var = var;
            Ok(Self {
                file,
                path: path.to_path_buf(),
                file_len,
                field,
                layout,
                meta,
            })
        })
    }

    /// `obs_names`, `var_names`, `obs`, `var`; `X` is an empty `[n_obs, n_vars]` CSR matrix.
    pub fn metadata(&self) -> &AnnData {
        &self.meta
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The field `X` is read from (`X`, `layers/<name>` or `raw/X`).
    pub fn field(&self) -> &str {
        &self.field
    }

    fn read_block(&self, start: usize, end: usize) -> Result<Matrix> {
        let r = Reader {
            file: &self.file,
            path: &self.path,
            file_len: self.file_len,
        };
        let n_vars = self.meta.n_vars();
        match &self.layout {
            Layout::Dense(ds) => {
                let data = ds
                    .read_f32_rows(start as u64, (end - start) as u64)
                    .map_err(|e| r.h5(&self.field, e))?;
                if data.len() != (end - start) * n_vars {
                    return Err(r.err(
                        &self.field,
                        format!(
                            "rows {start}..{end}: read {} values; expected {}",
                            data.len(),
                            (end - start) * n_vars
                        ),
                    ));
                }
                Ok(Matrix::Dense(crate::anndata::DenseMatrix {
                    n_rows: end - start,
                    n_cols: n_vars,
                    data,
                }))
            }
            Layout::Csr {
                indptr,
                data,
                indices,
            } => {
                let (p0, p1) = (indptr[start], indptr[end]);
                let f_data = format!("{}/data", self.field);
                let f_ind = format!("{}/indices", self.field);
                let values = data
                    .read_f32_rows(p0, p1 - p0)
                    .map_err(|e| r.h5(&f_data, e))?;
                let cols = indices
                    .read_i64_rows(p0, p1 - p0)
                    .map_err(|e| r.h5(&f_ind, e))?;
                let want = (p1 - p0) as usize;
                if values.len() != want || cols.len() != want {
                    return Err(r.err(
                        &self.field,
                        format!(
                            "rows {start}..{end}: read {} values and {} indices; expected {want}",
                            values.len(),
                            cols.len()
                        ),
                    ));
                }
                let local: Vec<usize> = indptr[start..=end]
                    .iter()
                    .map(|&p| (p - p0) as usize)
                    .collect();
                if let Some(k) = cols
                    .iter()
                    .position(|&j| j < 0 || j as u64 >= n_vars as u64)
                {
                    let row = start + local.partition_point(|&p| p <= k) - 1;
                    return Err(r.err(
                        &f_ind,
                        format!(
                            "row {row} has column index {}; expected 0 <= index < n_cols = \
                             {n_vars}",
                            cols[k]
                        ),
                    ));
                }
                let cols: Vec<usize> = cols.into_iter().map(|j| j as usize).collect();
                let (local, cols, values) = sort_rows(local, cols, values);
                if let Some(i) = (0..end - start).find(|&i| {
                    cols[local[i]..local[i + 1]]
                        .windows(2)
                        .any(|w| w[0] == w[1])
                }) {
                    return Err(r.err(
                        &f_ind,
                        format!(
                            "row {} has a duplicate column index; expected unique entries",
                            start + i
                        ),
                    ));
                }
                CsMat::try_new((end - start, n_vars), local, cols, values)
                    .map(Matrix::Csr)
                    .map_err(|(_, _, _, e)| {
                        r.err(&self.field, format!("invalid sparse structure: {e}"))
                    })
            }
        }
    }
}

impl RowBlocks for H5adStream {
    fn shape(&self) -> (usize, usize) {
        self.meta.x.shape()
    }

    fn read_rows(&mut self, start: usize, end: usize) -> Result<Matrix> {
        let n = self.meta.n_obs();
        if start > end || end > n {
            return Err(Error::Internal(format!(
                "read_rows({start}, {end}) out of range for {n} rows of {}",
                self.path.display()
            )));
        }
        let path = self.path.clone();
        guarded(&path, || self.read_block(start, end))
    }
}

/// The storage of `field` and its shape `(n_obs, n_vars)`.
fn open_layout(r: &Reader<'_>, field: &str) -> Result<(Layout, usize, usize)> {
    match r.node(field)? {
        Node::Missing => Err(r.err(field, "absent; expected a matrix")),
        Node::Dataset(ds) => {
            let shape = r.checked_shape(&ds, field)?;
            r.expect_numeric(&ds, field)?;
            if shape.len() != 2 {
                return Err(r.err(
                    field,
                    format!("has shape {shape:?}; expected a 2-D array [n_cells, n_genes]"),
                ));
            }
            Ok((Layout::Dense(ds), shape[0], shape[1]))
        }
        Node::Group(g) => {
            let attrs = r.group_attrs(&g, field)?;
            let enc =
                attr_str(&attrs, "encoding-type").or_else(|| attr_str(&attrs, "h5sparse_format"));
            match enc.as_deref() {
                Some("csr_matrix") | Some("csr") => {}
                Some("csc_matrix") | Some("csc") => {
                    return Err(r.err(
                        field,
                        "is a csc_matrix: streaming reads blocks of rows (cells), which a CSC \
                         matrix does not store together; expected a csr_matrix or a dense \
                         array (in Python: `adata.X = adata.X.tocsr(); adata.write_h5ad(path)`), \
                         or train in memory (not streamed)",
                    ));
                }
                other => {
                    return Err(r.err(
                        field,
                        format!(
                            "has encoding-type {other:?}; expected a csr_matrix group or a dense \
                             array"
                        ),
                    ));
                }
            }
            let (n_obs, n_vars) = r.sparse_dims(field, &attrs, true)?;
            let f_data = format!("{field}/data");
            let f_ind = format!("{field}/indices");
            let f_ptr = format!("{field}/indptr");
            let data = r.dataset(&f_data, "the stored values (1-D)")?;
            let indices = r.dataset(&f_ind, "the column indices (1-D integers)")?;
            let ds_ptr = r.dataset(&f_ptr, "the row pointer (1-D integers)")?;
            let n_data = r.checked_shape(&data, &f_data)?;
            r.expect_numeric(&data, &f_data)?;
            let n_ind = r.checked_shape(&indices, &f_ind)?;
            let (_, indptr) = r.read_i64(&ds_ptr, &f_ptr)?;
            let nnz = n_data.first().copied().unwrap_or(0);
            if n_ind.first().copied().unwrap_or(0) != nnz {
                return Err(r.err(
                    &f_ind,
                    format!("has {n_ind:?} entries but data has {nnz}; expected equal"),
                ));
            }
            if indptr.len() != n_obs + 1 {
                return Err(r.err(
                    &f_ptr,
                    format!(
                        "has {} entries; expected n_rows + 1 = {} for shape [{n_obs}, {n_vars}]",
                        indptr.len(),
                        n_obs + 1
                    ),
                ));
            }
            if indptr[0] != 0 || indptr.windows(2).any(|w| w[1] < w[0]) {
                return Err(r.err(&f_ptr, "expected non-decreasing offsets starting at 0"));
            }
            if indptr[n_obs] != nnz as i64 {
                return Err(r.err(
                    &f_ptr,
                    format!(
                        "ends at {} but data has {nnz} entries; expected equal",
                        indptr[n_obs]
                    ),
                ));
            }
            let indptr = indptr.into_iter().map(|p| p as u64).collect();
            Ok((
                Layout::Csr {
                    indptr,
                    data: Box::new(data),
                    indices: Box::new(indices),
                },
                n_obs,
                n_vars,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{read_h5ad, write_h5ad};

    #[test]
    fn blocks_equal_the_in_memory_matrix() {
        let path = shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad");
        let full = read_h5ad(path, &ReadOptions::default()).unwrap();
        let mut s = H5adStream::open(path, &ReadOptions::default()).unwrap();
        assert_eq!(s.shape(), full.x.shape());
        assert_eq!(s.metadata().var_names, full.var_names);
        assert_eq!(s.metadata().obs_names, full.obs_names);
        assert_eq!(s.metadata().obs.len(), full.obs.len());
        let n = full.n_obs();
        let mut x = full.x.clone();
        for (a, b) in [(0, 1), (0, 37), (37, 300), (699, 700), (0, n), (5, 5)] {
            let got = s.read_rows(a, b).unwrap();
            let want = x.read_rows(a, b).unwrap();
            assert_eq!(got.to_dense(), want.to_dense(), "rows {a}..{b}");
        }
        assert!(matches!(s.read_rows(10, n + 1), Err(Error::Internal(_))));
    }

    #[test]
    fn dense_x_is_read_by_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("dense.h5ad");
        let d = crate::anndata::DenseMatrix::from_vec(3, 2, vec![1., 2., 3., 4., 5., 6.]).unwrap();
        write_h5ad(
            &p,
            &AnnData::new(Matrix::Dense(d), vec!["a".into(), "b".into()]),
        )
        .unwrap();
        let mut s = H5adStream::open(&p, &ReadOptions::default()).unwrap();
        assert_eq!(
            s.read_rows(1, 3).unwrap().to_dense().data,
            vec![3., 4., 5., 6.]
        );
    }

    #[test]
    fn missing_layer_and_non_hdf5_are_named() {
        let path = shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad");
        let opts = ReadOptions {
            layer: Some("nope".into()),
            use_raw: false,
        };
        match H5adStream::open(path, &opts) {
            Err(Error::Format { field, .. }) => assert_eq!(field, "layers/nope"),
            other => panic!("expected a format error, got {other:?}"),
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.h5ad");
        std::fs::write(&p, "not hdf5").unwrap();
        assert!(matches!(
            H5adStream::open(&p, &ReadOptions::default()),
            Err(Error::Format { .. })
        ));
    }
}
