//! Reading and writing AnnData `.h5ad` files (HDF5). **All HDF5 access of celldiff lives here.**
//!
//! # Crates
//! - [`hdf5_pure`] (pure Rust, no libhdf5/cmake, builds in under a minute): it reads contiguous,
//!   chunked, gzip/shuffle/lzf-filtered datasets, variable- and fixed-length strings, compound
//!   types and attributes, and writes files that h5py/anndata read. It does **not** decode blosc,
//!   zstd, lz4, bzip2 or bitshuffle; such datasets are reported as an unsupported encoding.
//!   The AnnData layout on top of HDF5 is written here by hand (the `anndata` crate builds for
//!   14 minutes, rejects unsorted CSR indices and turns categoricals into strings).
//! - [`sprs`] for the CSR matrix of [`Matrix::Csr`].
//!
//! # Layouts read
//! - The AnnData on-disk specification
//!   (<https://anndata.readthedocs.io/en/latest/fileformat-prose.html>) as written by anndata
//!   ≥ 0.8: `encoding-type` attributes `anndata`, `dataframe` (`_index`, `column-order`),
//!   `categorical` (`codes` + `categories`), `string-array`, `array`, `csr_matrix`,
//!   `csc_matrix`, `dict`, `string`, `numeric-scalar`, `nullable-integer`, `nullable-boolean`,
//!   `nullable-string-array`.
//! - anndata 0.7 files: categorical columns stored as a codes dataset with the categories in
//!   `obs/__categories/<column>`.
//! - Pre-0.7 ("legacy", anndata ≤ 0.6) files: `obs`/`var`/`obsm` as HDF5 compound datasets,
//!   categories in `uns/<column>_categories`, sparse matrices as groups with the
//!   `h5sparse_format`/`h5sparse_shape` attributes, `raw.X`/`raw.var`.
//!
//! - HDF5 details anndata accepts: a user block before the superblock (`h5py.File(p, "w",
//!   userblock_size=512)`); soft links in h5py's default (symbol-table) groups, e.g. `X` →
//!   `/layers/counts`, followed in an in-memory copy (`h5ad_links.rs`; the streaming reader
//!   follows none); a sparse `shape` attribute of any integer type or of floats holding whole
//!   numbers.
//!
//! CSR column indices are sorted per row on read (scanpy can write unsorted indices); CSC is
//! converted to CSR. Every value type of `X` (float, integer, bool) becomes `f32`, unchanged
//! otherwise (raw counts stay counts).
//!
//! Names and categories are kept as stored (empty names and names holding newlines or tabs
//! included), with two repairs, each reported by a `tracing` warning that names the file and
//! the names (the CLI prints it as `warning: ...`):
//! - repeated `var_names` are made unique as anndata's `var_names_make_unique` does (`A`,
//!   `A-1`, `A-2`; the same function as the 10x reader), so no gene shadows another;
//! - a categorical whose categories repeat a label (which pandas, and so anndata, cannot
//!   open) has the repeats merged into the first: every cell keeps its label, and what
//!   celldiff writes back opens in anndata. Merging rather than refusing, because the labels
//!   are unambiguous and refusing would leave the user no way on without Python.
//!
//! # Robustness
//! A malformed file gives an [`Error::Format`] naming the file, the HDF5 field and what was
//! expected. Structures are validated before they are used (shapes, `indptr`, index ranges,
//! category codes), and any panic inside the HDF5 decoder on a corrupt file is caught and
//! turned into an error as well. Declared sizes are checked against what is present before
//! anything of that size is allocated:
//! - a dataset may not declare more bytes than the file could hold (uncompressed: its size;
//!   compressed: 1100 times it);
//! - the superblock's end-of-file address may not exceed the file's size ("is truncated");
//! - a dimension that no stored dataset backs (the minor axis of a sparse `X`, the rows of a
//!   dataframe stored without names, e.g. `var` deleted) may not exceed the file's size in
//!   bytes (at least 2^20): a 40 kB file whose `X` declares `[700, 2^40]` is refused with
//!   both numbers instead of allocating 2^40 gene names;
//! - `uns` arrays are read up to 10⁶ elements and 10⁶ rows; compound-array fields must fit
//!   their record.
//!
//! # Layout written
//! [`write_h5ad`] writes the anndata ≥ 0.8 specification (encoding versions as anndata 0.10–0.12
//! write them; [`write_h5ad_with_obsp`](crate::io::h5ad::write_h5ad_with_obsp) adds sparse `obsp` matrices, [`read_obsp`](crate::io::h5ad::read_obsp) reads them),
//! uncompressed, to a temporary file in the destination directory that is renamed
//! into place, so a failed write never leaves a half-written output. `uns` values use anndata's
//! own encodings (`None` as the `null` element, parameters as nested `dict`s, never JSON text).
//! [`write_annotated`](crate::io::h5ad::write_annotated) writes an annotated copy of an input file instead: the input copied and
//! edited in place, only the given `obs`/`obsm`/`obsp`/`uns` elements added or replaced (see
//! its module, `h5ad_patch.rs`).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use hdf5_pure::{
    AttrValue, DType, Dataset, DatasetBuilder, Datatype, DatatypeByteOrder, EnumTypeBuilder, File,
    FileBuilder, FormatError, Group, GroupBuilder, StringPadding, make_i8_type,
};
use serde_json::{Map, Value};
use sprs::CsMat;

use super::tenx::unique_var_names;
use crate::data::{AnnData, Column, DenseMatrix, Frame, Matrix};
use crate::error::{Error, Result};

/// Where [`read_h5ad`] (and [`crate::io::read`]) take the expression matrix `X` from.
///
/// The default reads `X` itself. `layer` and `use_raw` are mutually exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Take `X` from `layers/<name>` (e.g. `"counts"`), shape `[n_cells, n_genes]`.
    /// Reading fails with [`Error::Format`] (field `layers/<name>`) if the layer is absent.
    pub layer: Option<String>,
    /// Take `X` from `raw/X` and `var_names`/`var` from `raw/var` (`adata.raw`, often the
    /// log-normalised matrix over all genes before highly-variable-gene selection). `layers` are
    /// not read in this mode (their genes differ). Fails with [`Error::Format`] (field `raw/X`)
    /// if the file has no `raw`.
    pub use_raw: bool,
}

#[path = "h5ad_links.rs"]
mod links;
#[path = "h5ad_stream.rs"]
mod stream;
pub use stream::H5adStream;
#[path = "h5ad_patch.rs"]
mod patch;
pub use patch::{Annotations, write_annotated};
#[path = "h5ad_write.rs"]
mod write;
#[cfg(test)]
use write::{set_enc_group, vstr};
pub use write::{write_h5ad, write_h5ad_with_obsp};

const HDF5_SIGNATURE: [u8; 8] = [0x89, b'H', b'D', b'F', b'\r', b'\n', 0x1a, b'\n'];

/// HDF5 filters `hdf5-pure` decodes: deflate, shuffle, fletcher32, scale-offset, LZF.
const SUPPORTED_FILTERS: [u16; 5] = [1, 2, 3, 6, 32000];

/// Largest `uns` array (in elements) converted to JSON; larger ones are skipped.
const MAX_UNS_ELEMENTS: u64 = 1_000_000;

/// Largest sparse `obsm` entry (in dense elements) that is densified; larger ones are skipped.
const MAX_DENSIFY_ELEMENTS: usize = 50_000_000;

/// Checks that `path` starts with the HDF5 signature (at offset 0 or a user-block offset
/// 512, 1024, 2048, ...).
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or read; [`Error::Format`] with field `(file)`:
/// "is not a regular, seekable file" for a pipe, FIFO or device (checked before opening it), or
/// "expected an HDF5 file (.h5ad)" if no signature is found.
pub(crate) fn check_hdf5_signature(path: &Path) -> Result<()> {
    // Before opening: opening a FIFO without a writer would block.
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::format(
            path,
            "(file)",
            "is not a regular, seekable file (a pipe, FIFO, socket or device, e.g. from \
             `<(...)`); an .h5ad is read by seeking: save it to a file first",
        ));
    }
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut offset = 0u64;
    let mut buf = [0u8; 8];
    while offset + 8 <= len {
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(path, e))?;
        f.read_exact(&mut buf).map_err(|e| Error::io(path, e))?;
        if buf == HDF5_SIGNATURE {
            return Ok(());
        }
        offset = if offset == 0 { 512 } else { offset * 2 };
    }
    Err(Error::format(
        path,
        "(file)",
        "expected an HDF5 file (.h5ad): no HDF5 signature found (CSV, loom-less text, zarr \
         directories and gzip files are not .h5ad)",
    ))
}

/// Reads an AnnData `.h5ad` file written by anndata ≥ 0.7 (and, best-effort, the pre-0.7
/// compound-dataset layout of anndata ≤ 0.6, e.g. scanpy's `10x_pbmc68k_reduced.h5ad`).
///
/// Returns `X` as stored (raw counts stay counts; everything converted to `f32`), shape
/// `[n_cells, n_genes]`: dense if stored dense, otherwise CSR with sorted column indices (CSC is
/// converted). `obs_names`/`var_names` come from each dataframe's `_index`; `obs`/`var` columns
/// are categorical (anndata ≥ 0.8 groups, 0.7 `__categories`, legacy `uns/<col>_categories`),
/// strings, numbers or bools; `obsm` holds the dense (and small sparse, densified) per-cell
/// arrays; `layers` the dense/sparse layers; `uns` is best-effort JSON (scalars, strings,
/// numeric/string/bool arrays up to 10⁶ elements, nested dicts, anndata's `null` as JSON null,
/// and the position-keyed dicts [`write_h5ad`] writes for mixed lists back as lists; everything
/// else skipped).
/// Columns, `obsm` entries and layers in an encoding celldiff cannot read (e.g. blosc) are
/// skipped with a warning; `X` never is.
///
/// # Errors
/// - [`Error::Io`]: the file is missing or unreadable.
/// - [`Error::Format`] naming the file and field:
///   `(file)` not an HDF5 file, or a corrupt/truncated one;
///   `X` absent; an unsupported `X` encoding (unknown `encoding-type`, blosc or other
///   undecodable compression); `layers/<name>` absent when [`ReadOptions::layer`] is set;
///   `raw/X` absent when [`ReadOptions::use_raw`] is set; shape mismatches (`X/indptr` length,
///   `obs` length, out-of-range indices or category codes, ...); a `shape` attribute that is
///   not two whole non-negative numbers, or that declares a dimension larger than the file can
///   describe (field `X`, or `obs`/`var` when they are absent; see the module documentation).
///
/// Repeated `var_names` are made unique and repeated categories merged, each with a warning
/// (module documentation).
/// - [`Error::InvalidInput`]: both `layer` and `use_raw` were requested.
pub fn read_h5ad(path: &Path, opts: &ReadOptions) -> Result<AnnData> {
    if opts.use_raw && opts.layer.is_some() {
        return Err(Error::InvalidInput(
            "choose either a layer or raw (use_raw) as the source of X, not both".into(),
        ));
    }
    with_reader(path, |r| r.read(opts))
}

/// Reads the pairwise per-cell matrices `obsp` of an `.h5ad` file (anndata ≥ 0.7: scanpy's
/// `obsp['connectivities']`/`obsp['distances']`, celldiff's `obsp['celldiff_links']`), each as a
/// CSR matrix `[n_obs, n_obs]` with sorted column indices, in member-name order.
///
/// `csr_matrix` and `csc_matrix` groups and dense 2-D numeric arrays (converted to CSR,
/// zeros dropped) are read; members in an encoding celldiff cannot read (e.g. blosc) are
/// skipped with a warning. A file without `obsp` (or a pre-0.7 file, which kept these in
/// `uns`) gives an empty list. `n_obs` is the number of cells the caller read from `X`.
///
/// # Errors
/// - [`Error::Io`]: the file is missing or unreadable.
/// - [`Error::Format`] naming the file and field: `(file)` not HDF5 / corrupt; `obsp` is not a
///   group; `obsp/<name>` is not `[n_obs, n_obs]` or has an invalid sparse structure.
pub fn read_obsp(path: &Path, n_obs: usize) -> Result<Vec<(String, CsMat<f32>)>> {
    with_reader(path, |r| r.read_obsp(n_obs))
}

/// Opens `path` as HDF5 and runs `f` on a [`Reader`], turning a corrupt or truncated file and
/// any panic inside the HDF5 decoder into an [`Error::Format`] (field `(file)`).
fn with_reader<T>(path: &Path, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
    check_hdf5_signature(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file_len = bytes.len() as u64;
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<T> {
        let mut bytes = bytes;
        // Soft links (`X` → `/layers/counts`) become hard links in this in-memory copy.
        links::resolve_soft_links(&mut bytes);
        let file = File::from_bytes(bytes).map_err(|e| {
            Error::format(
                path,
                "(file)",
                format!("cannot parse the HDF5 structure ({e}); the file is corrupt or truncated"),
            )
        })?;
        // libhdf5 (h5py) and hdf5-pure record the end-of-file address as an absolute offset:
        // with a user block (base address 512, ...) it already includes the user block.
        let end = file.superblock().eof_address;
        if end != u64::MAX && end > file_len {
            return Err(Error::format(
                path,
                "(file)",
                format!(
                    "is truncated: its HDF5 superblock records {end} bytes but the file has \
                     {file_len}; expected a complete copy (re-copy or re-download it)"
                ),
            ));
        }
        f(&Reader {
            file: &file,
            path,
            file_len,
        })
    }));
    outcome.unwrap_or_else(|panic| Err(decoder_panic(path, panic.as_ref())))
}

/// A panic inside the HDF5 decoder as an [`Error::Format`] on field `(file)` of `path`.
fn decoder_panic(path: &Path, panic: &(dyn std::any::Any + Send)) -> Error {
    let msg = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    Error::format(
        path,
        "(file)",
        format!("the HDF5 decoder failed ({msg}); the file is corrupt or truncated"),
    )
}

// ------------------------------------------------------------------------------------------
// Reading
// ------------------------------------------------------------------------------------------

enum Node {
    Group(Group),
    Dataset(Box<Dataset>),
    Missing,
}

/// The classes of dataset element types the reader distinguishes.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Float,
    Int,
    Bool,
    Str,
    Compound,
    Other(String),
}

fn kind_of(dt: &DType) -> Kind {
    match dt {
        DType::F32 | DType::F64 => Kind::Float,
        DType::I8
        | DType::I16
        | DType::I32
        | DType::I64
        | DType::U8
        | DType::U16
        | DType::U32
        | DType::U64 => Kind::Int,
        DType::String | DType::VariableLengthString => Kind::Str,
        DType::Enum(names) if is_bool_enum(names) => Kind::Bool,
        DType::Enum(_) => Kind::Int,
        DType::Compound(_) => Kind::Compound,
        other => Kind::Other(other.to_string()),
    }
}

fn is_bool_enum(names: &[String]) -> bool {
    names.len() == 2
        && names
            .iter()
            .all(|n| n.eq_ignore_ascii_case("false") || n.eq_ignore_ascii_case("true"))
}

fn attr_str(attrs: &std::collections::HashMap<String, AttrValue>, key: &str) -> Option<String> {
    attrs
        .get(key)
        .and_then(AttrValue::as_str)
        .map(str::to_string)
}

/// The `shape` (anndata) or `h5sparse_shape` (pre-0.7) attribute of a sparse matrix group as
/// `[n_rows, n_cols]`. Any integer type is accepted, and floats holding whole non-negative
/// numbers (some writers store the shape as float64; anndata reads it).
///
/// # Errors
/// A message (for [`Reader::err`]) when the attribute is absent or not two such numbers.
fn sparse_shape_attr(attrs: &Attrs) -> std::result::Result<[u64; 2], String> {
    let v = attrs
        .get("shape")
        .or_else(|| attrs.get("h5sparse_shape"))
        .ok_or("has no `shape` attribute; expected [n_rows, n_cols]")?;
    let dims: Option<Vec<u64>> = if let Some(u) = v.to_u64s() {
        Some(u)
    } else if v.to_i64s().is_some() {
        None // negative
    } else {
        v.to_f64s().and_then(|f| {
            f.into_iter()
                .map(|d| (d >= 0.0 && d.fract() == 0.0 && d < 2f64.powi(63)).then_some(d as u64))
                .collect()
        })
    };
    match dims.as_deref() {
        Some(&[r, c]) => Ok([r, c]),
        _ => Err(format!(
            "has shape attribute {v:?}; expected 2 non-negative whole numbers [n_rows, n_cols]"
        )),
    }
}

fn filter_name(id: u16) -> &'static str {
    match id {
        4 => "szip",
        307 => "bzip2",
        32001 => "blosc",
        32004 => "lz4",
        32008 => "bitshuffle",
        32015 => "zstd",
        32026 => "blosc2",
        _ => "an unsupported filter",
    }
}

fn fmt_number(v: f64) -> String {
    format!("{v}")
}

struct Reader<'a> {
    file: &'a File,
    path: &'a Path,
    file_len: u64,
}

type Attrs = std::collections::HashMap<String, AttrValue>;

impl Reader<'_> {
    fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::format(self.path, field, msg)
    }

    fn h5(&self, field: &str, e: hdf5_pure::Error) -> Error {
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

    fn node(&self, field: &str) -> Result<Node> {
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

    fn exists(&self, field: &str) -> bool {
        !matches!(self.node(field), Ok(Node::Missing) | Err(_))
    }

    fn group_attrs(&self, g: &Group, field: &str) -> Result<Attrs> {
        g.attrs().map_err(|e| self.h5(field, e))
    }

    /// Sorted member names (datasets and groups) of a group.
    fn members(&self, g: &Group, field: &str) -> Result<Vec<String>> {
        let mut names = g.datasets().map_err(|e| self.h5(field, e))?;
        names.extend(g.groups().map_err(|e| self.h5(field, e))?);
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn dataset(&self, field: &str, what: &str) -> Result<Dataset> {
        match self.node(field)? {
            Node::Dataset(d) => Ok(*d),
            Node::Group(_) => Err(self.err(field, format!("is a group; expected {what}"))),
            Node::Missing => Err(self.err(field, format!("absent; expected {what}"))),
        }
    }

    /// An unsupported compression filter of `ds`, as a message.
    fn unsupported_filter(&self, ds: &Dataset) -> Option<String> {
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
    fn unreadable_reason(&self, field: &str) -> Option<String> {
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
    fn checked_shape(&self, ds: &Dataset, field: &str) -> Result<Vec<usize>> {
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
    fn max_unbacked_rows(&self) -> u64 {
        self.file_len.max(1 << 20)
    }

    /// `[n_rows, n_cols]` of the sparse group at `field` from its `shape` attribute, with the
    /// minor dimension (`n_cols` for CSR, `n_rows` for CSC, which no dataset backs) bounded by
    /// [`Self::max_unbacked_rows`]. The major dimension is checked against `indptr` later.
    fn sparse_dims(&self, field: &str, attrs: &Attrs, csr: bool) -> Result<(usize, usize)> {
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

    fn kind(&self, ds: &Dataset, field: &str) -> Result<Kind> {
        Ok(kind_of(&ds.dtype().map_err(|e| self.h5(field, e))?))
    }

    fn expect_numeric(&self, ds: &Dataset, field: &str) -> Result<()> {
        match self.kind(ds, field)? {
            Kind::Float | Kind::Int | Kind::Bool => Ok(()),
            k => Err(self.err(field, format!("has element type {k:?}; expected numbers"))),
        }
    }

    fn read_f32(&self, ds: &Dataset, field: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let shape = self.checked_shape(ds, field)?;
        self.expect_numeric(ds, field)?;
        let v = ds.read_f32().map_err(|e| self.h5(field, e))?;
        self.check_len(field, &shape, v.len())?;
        Ok((shape, v))
    }

    fn read_f64(&self, ds: &Dataset, field: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let shape = self.checked_shape(ds, field)?;
        self.expect_numeric(ds, field)?;
        let v = ds.read_f64().map_err(|e| self.h5(field, e))?;
        self.check_len(field, &shape, v.len())?;
        Ok((shape, v))
    }

    fn read_i64(&self, ds: &Dataset, field: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let shape = self.checked_shape(ds, field)?;
        match self.kind(ds, field)? {
            Kind::Int | Kind::Bool => {}
            k => return Err(self.err(field, format!("has element type {k:?}; expected integers"))),
        }
        let v = ds.read_i64().map_err(|e| self.h5(field, e))?;
        self.check_len(field, &shape, v.len())?;
        Ok((shape, v))
    }

    fn read_bool(&self, ds: &Dataset, field: &str) -> Result<Vec<bool>> {
        let (_, v) = self.read_i64(ds, field)?;
        Ok(v.into_iter().map(|x| x != 0).collect())
    }

    /// Strings, or numbers formatted as strings (numeric categories / indices).
    fn read_labels(&self, ds: &Dataset, field: &str) -> Result<Vec<String>> {
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

    fn check_len(&self, field: &str, shape: &[usize], got: usize) -> Result<()> {
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
    fn x_fields(&self, opts: &ReadOptions) -> Result<(String, String)> {
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

    fn read(&self, opts: &ReadOptions) -> Result<AnnData> {
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

    fn layer_names(&self) -> Vec<String> {
        match self.node("layers") {
            Ok(Node::Group(g)) => self.members(&g, "layers").unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// A dense array dataset or a sparse group at `field` as a matrix.
    fn read_matrix(&self, field: &str) -> Result<Matrix> {
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
    fn read_sparse(&self, field: &str, attrs: &Attrs, csr: bool) -> Result<CsMat<f32>> {
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

    /// `obs`/`var`: names and columns, validated to `n_rows`.
    fn read_dataframe(
        &self,
        field: &str,
        n_rows: usize,
        used_uns: &mut Vec<String>,
    ) -> Result<(Vec<String>, Frame)> {
        match self.node(field)? {
            Node::Missing => Ok((self.default_names(field, n_rows)?, Vec::new())),
            Node::Dataset(ds) => self.read_compound_frame(&ds, field, n_rows, used_uns),
            Node::Group(g) => {
                let attrs = self.group_attrs(&g, field)?;
                let members = self.members(&g, field)?;
                let index_key = attr_str(&attrs, "_index").unwrap_or_else(|| "_index".into());
                let f_index = format!("{field}/{index_key}");
                let names = if members.contains(&index_key) {
                    let ds = self.dataset(&f_index, "the row names (strings)")?;
                    self.read_labels(&ds, &f_index)?
                } else {
                    self.default_names(&f_index, n_rows)?
                };
                if names.len() != n_rows {
                    return Err(self.err(
                        &f_index,
                        format!("has {} names; expected {n_rows} to match X", names.len()),
                    ));
                }
                let order: Vec<String> = match attrs.get("column-order") {
                    Some(v) => v.as_strings().map(<[String]>::to_vec).unwrap_or_default(),
                    None => members
                        .iter()
                        .filter(|m| **m != index_key && *m != "__categories")
                        .cloned()
                        .collect(),
                };
                let mut frame = Frame::new();
                for col in order {
                    let f_col = format!("{field}/{col}");
                    if let Some(reason) = self.unreadable_reason(&f_col) {
                        tracing::warn!("{}: skipping `{f_col}`: {reason}", self.path.display());
                        continue;
                    }
                    if let Some(c) = self.read_column(field, &col, &f_col)? {
                        if c.len() != n_rows {
                            return Err(self
                                .err(&f_col, format!("has {} rows; expected {n_rows}", c.len())));
                        }
                        frame.push((col, c));
                    }
                }
                Ok((names, frame))
            }
        }
    }

    /// `"0"`, `"1"`, ... for a dataframe stored without row names (anndata's default index),
    /// after checking that `n_rows` (declared by the shape of `X`) is no more than
    /// [`Self::max_unbacked_rows`]: a tiny file declaring 2^40 genes is refused here instead
    /// of allocating 2^40 names.
    fn default_names(&self, field: &str, n_rows: usize) -> Result<Vec<String>> {
        let max = self.max_unbacked_rows();
        if n_rows as u64 > max {
            return Err(self.err(
                field,
                format!(
                    "is absent, and X declares {n_rows} rows for it: more than this {}-byte file \
                     can describe without stored names (at most {max}); expected a dataframe \
                     with one name per row, or X's shape is corrupt",
                    self.file_len
                ),
            ));
        }
        Ok((0..n_rows).map(|i| i.to_string()).collect())
    }

    /// One dataframe column; `None` for encodings that are skipped (with a warning).
    fn read_column(&self, frame: &str, col: &str, f_col: &str) -> Result<Option<Column>> {
        match self.node(f_col)? {
            Node::Missing => Err(self.err(
                f_col,
                "absent although listed in column-order; expected a column dataset or group",
            )),
            Node::Group(g) => {
                let attrs = self.group_attrs(&g, f_col)?;
                let enc = attr_str(&attrs, "encoding-type").unwrap_or_default();
                match enc.as_str() {
                    "categorical" => {
                        let f_codes = format!("{f_col}/codes");
                        let f_cats = format!("{f_col}/categories");
                        let categories = self
                            .read_labels(&self.dataset(&f_cats, "the category labels")?, &f_cats)?;
                        let codes_ds = self.dataset(&f_codes, "the category codes (integers)")?;
                        let codes = self.read_codes(&codes_ds, &f_codes, categories.len())?;
                        Ok(Some(self.categorical(f_col, codes, categories)))
                    }
                    "nullable-integer" | "nullable-boolean" | "nullable-string-array" => {
                        self.read_nullable(f_col, &enc).map(Some)
                    }
                    other => {
                        tracing::warn!(
                            "{}: skipping column `{f_col}` with unsupported encoding-type `{other}`",
                            self.path.display()
                        );
                        Ok(None)
                    }
                }
            }
            Node::Dataset(ds) => {
                let f_legacy = format!("{frame}/__categories/{col}");
                if self.exists(&f_legacy) {
                    let categories = self
                        .read_labels(&self.dataset(&f_legacy, "the category labels")?, &f_legacy)?;
                    let codes = self.read_codes(&ds, f_col, categories.len())?;
                    return Ok(Some(self.categorical(f_col, codes, categories)));
                }
                let shape = self.checked_shape(&ds, f_col)?;
                if shape.len() != 1 {
                    tracing::warn!(
                        "{}: skipping column `{f_col}` of shape {shape:?} (expected 1-D)",
                        self.path.display()
                    );
                    return Ok(None);
                }
                match self.kind(&ds, f_col)? {
                    Kind::Str => Ok(Some(Column::String(self.read_labels(&ds, f_col)?))),
                    Kind::Bool => Ok(Some(Column::Bool(self.read_bool(&ds, f_col)?))),
                    Kind::Float | Kind::Int => {
                        Ok(Some(Column::Numeric(self.read_f64(&ds, f_col)?.1)))
                    }
                    k => {
                        tracing::warn!(
                            "{}: skipping column `{f_col}` of element type {k:?}",
                            self.path.display()
                        );
                        Ok(None)
                    }
                }
            }
        }
    }

    /// A categorical column from validated `codes` (-1 = missing) and `categories`. Repeated
    /// category labels (which pandas, and so anndata, refuses: "Categorical categories must be
    /// unique") are merged into their first occurrence, with a warning naming the column and
    /// the labels: every cell keeps its label, and the file celldiff writes opens in anndata.
    fn categorical(&self, field: &str, codes: Vec<i32>, categories: Vec<String>) -> Column {
        let (codes, categories, repeated) = merge_duplicate_categories(codes, categories);
        if !repeated.is_empty() {
            tracing::warn!(
                "{}: categorical `{field}` lists the categories {} more than once; merged into \
                 one category each (pandas/anndata require unique categories)",
                self.path.display(),
                list_names(&repeated)
            );
        }
        Column::Categorical { codes, categories }
    }

    fn read_codes(&self, ds: &Dataset, field: &str, n_cat: usize) -> Result<Vec<i32>> {
        let (_, codes) = self.read_i64(ds, field)?;
        if let Some(&bad) = codes.iter().find(|&&c| c < -1 || c >= n_cat as i64) {
            return Err(self.err(
                field,
                format!("contains code {bad}; expected -1 (missing) or 0..{n_cat} (categories)"),
            ));
        }
        Ok(codes.into_iter().map(|c| c as i32).collect())
    }

    /// anndata's nullable arrays (`values` + `mask`, mask true = missing).
    fn read_nullable(&self, f_col: &str, enc: &str) -> Result<Column> {
        let f_vals = format!("{f_col}/values");
        let f_mask = format!("{f_col}/mask");
        let vals = self.dataset(&f_vals, "the values")?;
        let mask = match self.node(&f_mask)? {
            Node::Dataset(d) => Some(self.read_bool(&d, &f_mask)?),
            _ => None,
        };
        let missing = |i: usize| {
            mask.as_ref()
                .is_some_and(|m| m.get(i).copied().unwrap_or(false))
        };
        match enc {
            "nullable-string-array" => {
                let v = self.read_labels(&vals, &f_vals)?;
                Ok(Column::String(
                    v.into_iter()
                        .enumerate()
                        .map(|(i, s)| if missing(i) { "nan".to_string() } else { s })
                        .collect(),
                ))
            }
            "nullable-boolean" if !mask.as_ref().is_some_and(|m| m.iter().any(|&b| b)) => {
                Ok(Column::Bool(self.read_bool(&vals, &f_vals)?))
            }
            _ => {
                let (_, v) = self.read_f64(&vals, &f_vals)?;
                Ok(Column::Numeric(
                    v.into_iter()
                        .enumerate()
                        .map(|(i, x)| if missing(i) { f64::NAN } else { x })
                        .collect(),
                ))
            }
        }
    }

    /// Pre-0.7 dataframe: a compound dataset with an `index` field; categories of integer
    /// fields in `uns/<field>_categories`.
    fn read_compound_frame(
        &self,
        ds: &Dataset,
        field: &str,
        n_rows: usize,
        used_uns: &mut Vec<String>,
    ) -> Result<(Vec<String>, Frame)> {
        let fields = self.decode_compound(ds, field, n_rows)?;
        let mut names = None;
        let mut frame = Frame::new();
        for (name, decoded) in fields {
            if name == "index" {
                names = Some(match decoded {
                    Decoded::Str(s) => s,
                    Decoded::Int(v) => v.iter().map(|x| x.to_string()).collect(),
                    Decoded::Num(v) => v.into_iter().map(fmt_number).collect(),
                    _ => return Err(self.err(field, "field `index` is not strings or numbers")),
                });
                continue;
            }
            let uns_key = format!("{name}_categories");
            let f_cats = format!("uns/{uns_key}");
            let col = match decoded {
                Decoded::Int(codes) if self.exists(&f_cats) => {
                    let categories =
                        self.read_labels(&self.dataset(&f_cats, "category labels")?, &f_cats)?;
                    let n_cat = categories.len() as i64;
                    if let Some(&bad) = codes.iter().find(|&&c| c < -1 || c >= n_cat) {
                        return Err(self.err(
                            &format!("{field}/{name}"),
                            format!("contains code {bad}; expected -1..{n_cat}"),
                        ));
                    }
                    used_uns.push(uns_key);
                    self.categorical(
                        &format!("{field}/{name}"),
                        codes.into_iter().map(|c| c as i32).collect(),
                        categories,
                    )
                }
                Decoded::Int(v) => Column::Numeric(v.into_iter().map(|x| x as f64).collect()),
                Decoded::Num(v) => Column::Numeric(v),
                Decoded::Bool(v) => Column::Bool(v),
                Decoded::Str(v) => Column::String(v),
                Decoded::Array { .. } => continue,
            };
            frame.push((name, col));
        }
        let names = names.unwrap_or_else(|| (0..n_rows).map(|i| i.to_string()).collect());
        Ok((names, frame))
    }

    /// All decodable fields of a compound dataset of `n_rows` records.
    fn decode_compound(
        &self,
        ds: &Dataset,
        field: &str,
        n_rows: usize,
    ) -> Result<Vec<(String, Decoded)>> {
        let shape = self.checked_shape(ds, field)?;
        let dt = ds.datatype().map_err(|e| self.h5(field, e))?;
        let Datatype::Compound { size, members } = dt else {
            return Err(self.err(
                field,
                "is a dataset but not a compound (legacy) table; expected a dataframe group",
            ));
        };
        if shape.len() != 1 || shape[0] != n_rows {
            return Err(self.err(
                field,
                format!("has shape {shape:?}; expected [{n_rows}] rows to match X"),
            ));
        }
        let raw = ds.read_raw().map_err(|e| self.h5(field, e))?;
        let rec = size as usize;
        if raw.len() != rec * n_rows {
            return Err(self.err(field, "record bytes do not match the shape; file corrupt"));
        }
        let mut out = Vec::new();
        for m in members {
            match decode_field(&raw, rec, n_rows, m.byte_offset as usize, &m.datatype) {
                Some(d) => out.push((m.name, d)),
                None => tracing::warn!(
                    "{}: skipping compound field `{field}/{}` (unsupported type)",
                    self.path.display(),
                    m.name
                ),
            }
        }
        Ok(out)
    }

    fn read_obsm(&self, n_obs: usize) -> Result<Vec<(String, DenseMatrix)>> {
        let mut out = Vec::new();
        match self.node("obsm")? {
            Node::Missing => {}
            Node::Dataset(ds) => {
                for (name, d) in self.decode_compound(&ds, "obsm", n_obs)? {
                    if let Decoded::Array { width, data } = d {
                        out.push((
                            name,
                            DenseMatrix {
                                n_rows: n_obs,
                                n_cols: width,
                                data,
                            },
                        ));
                    }
                }
            }
            Node::Group(g) => {
                for name in self.members(&g, "obsm")? {
                    let field = format!("obsm/{name}");
                    if let Some(reason) = self.unreadable_reason(&field) {
                        tracing::warn!("{}: skipping `{field}`: {reason}", self.path.display());
                        continue;
                    }
                    let m = match self.node(&field)? {
                        Node::Dataset(ds) => match self.numeric_2d(&ds, &field)? {
                            Some(m) => m,
                            None => continue,
                        },
                        Node::Group(sub) => {
                            if self.sparse_encoding(&sub, &field)?.is_none() {
                                continue;
                            }
                            let m = self.read_matrix(&field)?;
                            let (r, c) = m.shape();
                            if r.saturating_mul(c) > MAX_DENSIFY_ELEMENTS {
                                tracing::warn!(
                                    "{}: skipping sparse `{field}` [{r}, {c}] (too large to densify)",
                                    self.path.display()
                                );
                                continue;
                            }
                            m.to_dense()
                        }
                        Node::Missing => continue,
                    };
                    if m.n_rows != n_obs {
                        return Err(self.err(
                            &field,
                            format!("has {} rows; expected n_obs = {n_obs}", m.n_rows),
                        ));
                    }
                    out.push((name, m));
                }
            }
        }
        Ok(out)
    }

    /// A 2-D numeric dataset of `obsm`/`obsp` as a dense matrix; `None` (with a warning) for
    /// anything else, which is skipped.
    fn numeric_2d(&self, ds: &Dataset, field: &str) -> Result<Option<DenseMatrix>> {
        let shape = self.checked_shape(ds, field)?;
        let numeric = matches!(self.kind(ds, field)?, Kind::Float | Kind::Int | Kind::Bool);
        if shape.len() != 2 || !numeric {
            tracing::warn!(
                "{}: skipping `{field}` (not a 2-D numeric array)",
                self.path.display()
            );
            return Ok(None);
        }
        let (_, data) = self.read_f32(ds, field)?;
        Ok(Some(DenseMatrix {
            n_rows: shape[0],
            n_cols: shape[1],
            data,
        }))
    }

    /// The attributes of a `csr_matrix` / `csc_matrix` member group and whether it is CSR;
    /// `None` (with a warning) for another encoding, which is skipped.
    fn sparse_encoding(&self, g: &Group, field: &str) -> Result<Option<(Attrs, bool)>> {
        let attrs = self.group_attrs(g, field)?;
        let enc = attr_str(&attrs, "encoding-type").unwrap_or_default();
        match enc.as_str() {
            "csr_matrix" => Ok(Some((attrs, true))),
            "csc_matrix" => Ok(Some((attrs, false))),
            _ => {
                tracing::warn!(
                    "{}: skipping `{field}` (encoding-type `{enc}`)",
                    self.path.display()
                );
                Ok(None)
            }
        }
    }

    /// `obsp`: every sparse or dense 2-D numeric member as CSR `[n_obs, n_obs]`.
    fn read_obsp(&self, n_obs: usize) -> Result<Vec<(String, CsMat<f32>)>> {
        let g = match self.node("obsp")? {
            Node::Missing => return Ok(Vec::new()),
            Node::Dataset(_) => {
                return Err(self.err(
                    "obsp",
                    "is a dataset; expected a group of [n_obs, n_obs] matrices",
                ));
            }
            Node::Group(g) => g,
        };
        let mut out = Vec::new();
        for name in self.members(&g, "obsp")? {
            let field = format!("obsp/{name}");
            if let Some(reason) = self.unreadable_reason(&field) {
                tracing::warn!("{}: skipping `{field}`: {reason}", self.path.display());
                continue;
            }
            let m = match self.node(&field)? {
                Node::Dataset(ds) => match self.numeric_2d(&ds, &field)? {
                    Some(d) => d.to_csr(),
                    None => continue,
                },
                Node::Group(sub) => match self.sparse_encoding(&sub, &field)? {
                    Some((attrs, csr)) => self.read_sparse(&field, &attrs, csr)?,
                    None => continue,
                },
                Node::Missing => continue,
            };
            if m.shape() != (n_obs, n_obs) {
                return Err(self.err(
                    &field,
                    format!(
                        "has shape [{}, {}]; expected [n_obs, n_obs] = [{n_obs}, {n_obs}]",
                        m.rows(),
                        m.cols()
                    ),
                ));
            }
            out.push((name, m));
        }
        Ok(out)
    }

    fn read_layers(&self, n_obs: usize, n_vars: usize) -> Result<Vec<(String, Matrix)>> {
        let mut out = Vec::new();
        for name in self.layer_names() {
            let field = format!("layers/{name}");
            if let Some(reason) = self.unreadable_reason(&field) {
                tracing::warn!("{}: skipping `{field}`: {reason}", self.path.display());
                continue;
            }
            let m = self.read_matrix(&field)?;
            if m.shape() != (n_obs, n_vars) {
                return Err(self.err(
                    &field,
                    format!(
                        "has shape {:?}; expected X's shape [{n_obs}, {n_vars}]",
                        m.shape()
                    ),
                ));
            }
            out.push((name, m));
        }
        Ok(out)
    }

    /// Best effort: never fails, skips what it cannot represent.
    fn read_uns(&self) -> Map<String, Value> {
        match self.node("uns") {
            Ok(Node::Group(g)) => self.uns_group(&g, "uns", 0),
            _ => Map::new(),
        }
    }

    fn uns_group(&self, g: &Group, field: &str, depth: usize) -> Map<String, Value> {
        let mut out = Map::new();
        if depth > 32 {
            return out;
        }
        for name in self.members(g, field).unwrap_or_default() {
            let f = format!("{field}/{name}");
            let v = match self.node(&f) {
                Ok(Node::Group(sub)) => {
                    let attrs = sub.attrs().unwrap_or_default();
                    let enc = attr_str(&attrs, "encoding-type");
                    if attrs.contains_key("h5sparse_format") {
                        None
                    } else {
                        match enc.as_deref() {
                            None | Some("dict") => {
                                let m = self.uns_group(&sub, &f, depth + 1);
                                Some(if attrs.contains_key(write::LIST_MARKER) {
                                    list_from_dict(m)
                                } else {
                                    Value::Object(m)
                                })
                            }
                            _ => None,
                        }
                    }
                }
                Ok(Node::Dataset(ds)) => self.uns_dataset(&ds, &f),
                _ => None,
            };
            if let Some(v) = v {
                out.insert(name, v);
            }
        }
        out
    }

    fn uns_dataset(&self, ds: &Dataset, field: &str) -> Option<Value> {
        if self.unsupported_filter(ds).is_some() {
            return None;
        }
        // anndata's `None` (encoding-type `null`, any dataspace).
        if attr_str(&ds.attrs().unwrap_or_default(), "encoding-type").as_deref() == Some("null") {
            return Some(Value::Null);
        }
        let shape = ds.shape().ok()?;
        let n: u64 = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
        // Each dimension too: a [2^40, 0] array has no elements but 2^40 (empty) rows.
        if n > MAX_UNS_ELEMENTS || shape.len() > 2 || shape.iter().any(|&d| d > MAX_UNS_ELEMENTS) {
            return None;
        }
        self.checked_shape(ds, field).ok()?;
        let values: Vec<Value> = match self.kind(ds, field).ok()? {
            Kind::Str => ds
                .read_string()
                .ok()?
                .into_iter()
                .map(Value::String)
                .collect(),
            Kind::Bool => ds
                .read_i64()
                .ok()?
                .into_iter()
                .map(|b| Value::Bool(b != 0))
                .collect(),
            Kind::Int => match ds.dtype().ok()? {
                DType::U64 => ds.read_u64().ok()?.into_iter().map(Value::from).collect(),
                _ => ds.read_i64().ok()?.into_iter().map(Value::from).collect(),
            },
            Kind::Float => ds
                .read_f64()
                .ok()?
                .into_iter()
                .map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number))
                .collect(),
            _ => return None,
        };
        if values.len() as u64 != n {
            return None;
        }
        match shape.len() {
            0 => values.into_iter().next(),
            1 => Some(Value::Array(values)),
            _ => {
                let cols = shape[1] as usize;
                if cols == 0 {
                    return Some(Value::Array(
                        (0..shape[0]).map(|_| Value::Array(Vec::new())).collect(),
                    ));
                }
                Some(Value::Array(
                    values
                        .chunks(cols)
                        .map(|r| Value::Array(r.to_vec()))
                        .collect(),
                ))
            }
        }
    }
}

/// A `uns` dict that [`write_h5ad`] wrote for a list (marked with the attribute
/// `write::LIST_MARKER`, keyed exactly `"0"`, `"1"`, ...; see `write::list_as_dict`) read
/// back as that list; any other keys leave it an object.
fn list_from_dict(m: Map<String, Value>) -> Value {
    let n = m.len();
    let mut slots: Vec<Option<&Value>> = vec![None; n];
    for (k, v) in &m {
        match k.parse::<usize>() {
            Ok(i) if i < n && *k == i.to_string() => slots[i] = Some(v),
            _ => return Value::Object(m),
        }
    }
    let items: Vec<Value> = slots.into_iter().flatten().cloned().collect();
    if items.len() == n {
        return Value::Array(items);
    }
    Value::Object(m)
}

/// Merges repeated labels of `categories` into their first occurrence and remaps `codes`
/// (-1, missing, stays -1). Returns the codes, the unique categories in first-occurrence order
/// and the labels that were repeated (each once); unchanged input when all are unique.
fn merge_duplicate_categories(
    codes: Vec<i32>,
    categories: Vec<String>,
) -> (Vec<i32>, Vec<String>, Vec<String>) {
    let mut first: std::collections::HashMap<&str, i32> =
        std::collections::HashMap::with_capacity(categories.len());
    let mut remap = Vec::with_capacity(categories.len());
    let mut unique: Vec<String> = Vec::new();
    let mut repeated: Vec<String> = Vec::new();
    let mut listed: HashSet<&str> = HashSet::new();
    for c in &categories {
        match first.get(c.as_str()) {
            Some(&k) => {
                remap.push(k);
                if listed.insert(c.as_str()) {
                    repeated.push(c.clone());
                }
            }
            None => {
                let k = unique.len() as i32;
                first.insert(c, k);
                remap.push(k);
                unique.push(c.clone());
            }
        }
    }
    if repeated.is_empty() {
        return (codes, categories, repeated);
    }
    let codes = codes
        .into_iter()
        .map(|c| if c < 0 { c } else { remap[c as usize] })
        .collect();
    (codes, unique, repeated)
}

/// Up to 10 names, quoted, then how many more: `"A", "B" and 3 more`.
pub(crate) fn list_names(names: &[String]) -> String {
    let shown: Vec<String> = names.iter().take(10).map(|n| format!("{n:?}")).collect();
    match names.len() {
        n if n > 10 => format!("{} and {} more", shown.join(", "), n - 10),
        _ => shown.join(", "),
    }
}

/// A decoded compound field, one value per record.
enum Decoded {
    Int(Vec<i64>),
    Num(Vec<f64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    /// A fixed-size array per record, flattened row-major `[n_rows, width]`.
    Array {
        width: usize,
        data: Vec<f32>,
    },
}

fn int_from_bytes(b: &[u8], signed: bool, order: &DatatypeByteOrder) -> i64 {
    let mut le = b.to_vec();
    if matches!(order, DatatypeByteOrder::BigEndian) {
        le.reverse();
    }
    let neg = signed && le.last().is_some_and(|&x| x & 0x80 != 0);
    let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
    let k = le.len().min(8);
    buf[..k].copy_from_slice(&le[..k]);
    i64::from_le_bytes(buf)
}

fn float_from_bytes(b: &[u8], order: &DatatypeByteOrder) -> Option<f64> {
    let big = matches!(order, DatatypeByteOrder::BigEndian);
    match b.len() {
        4 => {
            let a: [u8; 4] = b.try_into().ok()?;
            Some(f64::from(if big {
                f32::from_be_bytes(a)
            } else {
                f32::from_le_bytes(a)
            }))
        }
        8 => {
            let a: [u8; 8] = b.try_into().ok()?;
            Some(if big {
                f64::from_be_bytes(a)
            } else {
                f64::from_le_bytes(a)
            })
        }
        _ => None,
    }
}

/// A scalar element type of a compound array field: integer or float of `size` bytes.
#[derive(Clone, Copy)]
enum Scalar {
    Int {
        size: usize,
        signed: bool,
        order: DatatypeByteOrder,
    },
    Float {
        size: usize,
        order: DatatypeByteOrder,
    },
}

impl Scalar {
    /// Fixed-point, floating-point and enum (through its base) types.
    fn of(dt: &Datatype) -> Option<Self> {
        match dt {
            Datatype::FixedPoint {
                size,
                byte_order,
                layout,
            } if (1..=8).contains(size) => Some(Scalar::Int {
                size: *size as usize,
                signed: layout.signed,
                order: *byte_order,
            }),
            Datatype::FloatingPoint {
                size, byte_order, ..
            } if *size == 4 || *size == 8 => Some(Scalar::Float {
                size: *size as usize,
                order: *byte_order,
            }),
            Datatype::Enumeration { base_type, .. } => Scalar::of(base_type),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            Scalar::Int { size, .. } | Scalar::Float { size, .. } => size,
        }
    }

    fn decode(self, b: &[u8]) -> Option<f64> {
        match self {
            Scalar::Int { signed, order, .. } => Some(int_from_bytes(b, signed, &order) as f64),
            Scalar::Float { order, .. } => float_from_bytes(b, &order),
        }
    }
}

fn decode_field(raw: &[u8], rec: usize, n: usize, off: usize, dt: &Datatype) -> Option<Decoded> {
    let elem = |i: usize, sz: usize| raw.get(i * rec + off..i * rec + off + sz);
    match dt {
        Datatype::FixedPoint {
            size,
            byte_order,
            layout,
        } if (1..=8).contains(size) => {
            let sz = *size as usize;
            (0..n)
                .map(|i| elem(i, sz).map(|b| int_from_bytes(b, layout.signed, byte_order)))
                .collect::<Option<Vec<_>>>()
                .map(Decoded::Int)
        }
        Datatype::FloatingPoint {
            size, byte_order, ..
        } => {
            let sz = *size as usize;
            (0..n)
                .map(|i| elem(i, sz).and_then(|b| float_from_bytes(b, byte_order)))
                .collect::<Option<Vec<_>>>()
                .map(Decoded::Num)
        }
        Datatype::Enumeration {
            base_type, members, ..
        } => {
            let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
            let ints = match decode_field(raw, rec, n, off, base_type)? {
                Decoded::Int(v) => v,
                _ => return None,
            };
            if is_bool_enum(&names) {
                Some(Decoded::Bool(ints.into_iter().map(|x| x != 0).collect()))
            } else {
                Some(Decoded::Int(ints))
            }
        }
        Datatype::String { size, padding, .. } => {
            let sz = *size as usize;
            (0..n)
                .map(|i| {
                    elem(i, sz).map(|b| {
                        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                        let s = String::from_utf8_lossy(&b[..end]);
                        if matches!(padding, StringPadding::SpacePad) {
                            s.trim_end_matches(' ').to_string()
                        } else {
                            s.into_owned()
                        }
                    })
                })
                .collect::<Option<Vec<_>>>()
                .map(Decoded::Str)
        }
        Datatype::Array {
            base_type,
            dimensions,
        } => {
            let width = dimensions
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d as usize))?;
            let scalar = Scalar::of(base_type)?;
            let sz = scalar.size();
            // The array must fit in its record (a corrupt dimension must not size the buffer).
            if width.checked_mul(sz)?.checked_add(off)? > rec {
                return None;
            }
            let mut data = Vec::with_capacity(n * width);
            for i in 0..n {
                let b = elem(i, sz * width)?;
                for k in 0..width {
                    data.push(scalar.decode(&b[k * sz..(k + 1) * sz])? as f32);
                }
            }
            Some(Decoded::Array { width, data })
        }
        _ => None,
    }
}

/// Sorts the column indices (and values) of each CSR row.
fn sort_rows(
    indptr: Vec<usize>,
    mut indices: Vec<usize>,
    mut data: Vec<f32>,
) -> (Vec<usize>, Vec<usize>, Vec<f32>) {
    for w in indptr.windows(2) {
        let (a, b) = (w[0], w[1]);
        let idx = &indices[a..b];
        if idx.windows(2).all(|p| p[0] <= p[1]) {
            continue;
        }
        let mut pairs: Vec<(usize, f32)> = idx
            .iter()
            .copied()
            .zip(data[a..b].iter().copied())
            .collect();
        pairs.sort_unstable_by_key(|p| p.0);
        for (k, (j, v)) in pairs.into_iter().enumerate() {
            indices[a + k] = j;
            data[a + k] = v;
        }
    }
    (indptr, indices, data)
}

/// Transposes compressed storage (CSC → CSR): the output has `n_inner` outer slots and
/// sorted minor indices.
fn transpose_compressed(
    n_inner: usize,
    indptr: &[usize],
    indices: &[usize],
    data: &[f32],
) -> (Vec<usize>, Vec<usize>, Vec<f32>) {
    let mut counts = vec![0usize; n_inner + 1];
    for &j in indices {
        counts[j + 1] += 1;
    }
    for i in 0..n_inner {
        counts[i + 1] += counts[i];
    }
    let out_ptr = counts.clone();
    let mut next = counts;
    let mut out_ind = vec![0usize; indices.len()];
    let mut out_data = vec![0f32; data.len()];
    for (outer, w) in indptr.windows(2).enumerate() {
        for k in w[0]..w[1] {
            let j = indices[k];
            let dst = next[j];
            out_ind[dst] = outer;
            out_data[dst] = data[k];
            next[j] += 1;
        }
    }
    (out_ptr, out_ind, out_data)
}

#[cfg(test)]
mod tests {
    /// The Python interpreter for the anndata round-trip tests: `$CELLDIFF_PYTHON` (set by
    /// `.ci/run` when it installs anndata into a venv) or `python3`.
    fn python() -> String {
        std::env::var("CELLDIFF_PYTHON").unwrap_or_else(|_| "python3".into())
    }

    use super::*;
    use std::time::Instant;

    fn timed_read(path: &Path, opts: &ReadOptions) -> AnnData {
        let t = Instant::now();
        let a = read_h5ad(path, opts).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        eprintln!(
            "read {} ({:?}): [{}, {}] in {:.3} s",
            path.file_name().unwrap_or_default().to_string_lossy(),
            opts,
            a.n_obs(),
            a.n_vars(),
            t.elapsed().as_secs_f64()
        );
        a
    }

    fn categories(a: &AnnData, key: &str) -> Vec<String> {
        match a.obs_column(key).unwrap() {
            Column::Categorical { categories, .. } => categories.clone(),
            other => panic!("obs `{key}` is not categorical: {other:?}"),
        }
    }

    fn var_col<'a>(a: &'a AnnData, key: &str) -> &'a Column {
        &a.var
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no var `{key}`"))
            .1
    }

    fn obsm<'a>(a: &'a AnnData, key: &str) -> &'a DenseMatrix {
        &a.obsm
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no obsm `{key}`"))
            .1
    }

    fn assert_csr_sorted_integral(x: &Matrix) {
        let Matrix::Csr(c) = x else {
            panic!("expected CSR X")
        };
        for row in c.outer_iterator() {
            let idx = row.indices();
            assert!(
                idx.windows(2).all(|w| w[0] < w[1]),
                "CSR indices not sorted"
            );
            assert!(
                row.data().iter().all(|v| *v >= 0.0 && v.fract() == 0.0),
                "not counts"
            );
        }
    }

    fn format_field(e: Error) -> (String, String) {
        match e {
            Error::Format { field, message, .. } => (field, message),
            other => panic!("expected Error::Format, got {other:?}"),
        }
    }

    #[test]
    fn reads_pbmc68k_counts() {
        let p = shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad");
        let a = timed_read(p, &ReadOptions::default());
        assert_eq!(a.x.shape(), (700, 765));
        assert_csr_sorted_integral(&a.x);
        let Matrix::Csr(c) = &a.x else { unreachable!() };
        assert_eq!(c.nnz(), 174_400);
        assert!(c.data().iter().any(|&v| v > 1.0));
        let cats = categories(&a, "bulk_labels");
        assert_eq!(cats.len(), 10);
        assert!(cats.contains(&"CD14+ Monocyte".to_string()), "{cats:?}");
        assert_eq!(categories(&a, "louvain").len(), 11);
        assert_eq!(a.obs_names[0], "AAAGCCTGGCTAAC-1");
        assert_eq!(a.var_names[0], "HES4");
        assert!(matches!(
            a.obs_column("n_genes").unwrap(),
            Column::Numeric(_)
        ));
        assert_eq!(a.obs.len(), 8);
        let umap = obsm(&a, "X_umap");
        assert_eq!((umap.n_rows, umap.n_cols), (700, 2));
    }

    #[test]
    fn reads_kang_pre07_layout() {
        let p = shared_data!("kang_pbmc_ifnb_valid/valid_kang.h5ad");
        let a = timed_read(p, &ReadOptions::default());
        assert_eq!(a.x.shape(), (1975, 6998));
        // Category order as stored in the file (uns/condition_categories).
        assert_eq!(categories(&a, "condition"), ["stimulated", "control"]);
        assert_eq!(a.obs_column("condition").unwrap().labels()[0], "control");
        assert_eq!(categories(&a, "cell_type").len(), 7);
        assert_eq!(a.obs_names[0], "TGCTGAGATGCTAG-1-control");
        assert_eq!(a.var_names[0], "AL627309.1");
        assert!(matches!(var_col(&a, "n_cells"), Column::Numeric(_)));
        let pca = obsm(&a, "X_pca");
        assert_eq!((pca.n_rows, pca.n_cols), (1975, 50));
        // Legacy category arrays are consumed, not left in uns.
        assert!(!a.uns.contains_key("condition_categories"));
        assert!(a.uns.contains_key("cell_type_colors"));
    }

    #[test]
    fn reads_mouse_brain_subset() {
        let p = shared_data!("mouse_brain_1m_10k_subset/brain_1m_10k_cells_1000_genes.h5ad");
        let a = timed_read(p, &ReadOptions::default());
        assert_eq!(a.x.shape(), (10_000, 1000));
        assert_csr_sorted_integral(&a.x);
        assert_eq!(a.obs_names[0], "AAACCTGAGATAGGAG-1");
        assert_eq!(a.var_names[0], "Xkr4");
        match var_col(&a, "gene_ids") {
            Column::String(v) => assert_eq!(v[0], "ENSMUSG00000051951"),
            other => panic!("gene_ids: {other:?}"),
        }
    }

    #[test]
    fn reads_weinreb_anndata07_categoricals() {
        let p = shared_data!("weinreb_larry_hematopoiesis_subset/test_adata_preprocessed.h5ad");
        let a = timed_read(p, &ReadOptions::default());
        assert_eq!(a.x.shape(), (781, 2481));
        let states = categories(&a, "state_info");
        assert_eq!(states.len(), 12);
        assert!(states.contains(&"Neutrophil".to_string()));
        assert_eq!(categories(&a, "time_info").len(), 3);
        assert!(matches!(var_col(&a, "highly_variable"), Column::Bool(_)));
        let pca = obsm(&a, "X_pca");
        assert_eq!((pca.n_rows, pca.n_cols), (781, 40));
        let clone = obsm(&a, "X_clone");
        assert_eq!((clone.n_rows, clone.n_cols), (781, 339));
        assert_eq!(clone.data.iter().filter(|&&v| v == 1.0).count(), 781);
        assert_eq!(
            a.uns["state_info_colors"].as_array().map(Vec::len),
            Some(12)
        );
    }

    #[test]
    fn reads_dentate_gyrus_layers_and_raw() {
        let p = shared_data!("dentate_gyrus_velocity_200/adata_200.h5ad");
        let a = timed_read(p, &ReadOptions::default());
        assert_eq!(a.x.shape(), (200, 530));
        assert_eq!(categories(&a, "clusters").len(), 14);
        assert!(matches!(
            a.obs_column("latent_time").unwrap(),
            Column::Numeric(_)
        ));
        let layer_names: Vec<&str> = a.layers.iter().map(|(k, _)| k.as_str()).collect();
        for l in ["spliced", "unspliced", "Ms", "velocity"] {
            assert!(layer_names.contains(&l), "{layer_names:?}");
        }
        assert!(a.uns["iroot"].is_number(), "{:?}", a.uns.get("iroot"));
        let spliced = read_h5ad(
            p,
            &ReadOptions {
                layer: Some("spliced".into()),
                use_raw: false,
            },
        )
        .unwrap();
        let Matrix::Csr(s) = &spliced.x else {
            panic!("spliced should be sparse")
        };
        assert_eq!(s.nnz(), 42_351);
        let raw = timed_read(
            p,
            &ReadOptions {
                layer: None,
                use_raw: true,
            },
        );
        assert_eq!(raw.x.shape(), (200, 50));
        assert_eq!(raw.var_names.len(), 50);
        assert!(raw.var.iter().any(|(k, _)| k == "symbol"));
        assert!(raw.layers.is_empty());
    }

    #[test]
    fn reads_scanpy_pre07_pbmc68k_reduced() {
        let p = shared_data!("pbmc68k_reduced/10x_pbmc68k_reduced.h5ad");
        let a = timed_read(p, &ReadOptions::default());
        assert_eq!(a.x.shape(), (700, 765));
        assert!(matches!(a.x, Matrix::Dense(_)));
        assert_eq!(categories(&a, "bulk_labels").len(), 10);
        assert_eq!(categories(&a, "phase"), ["G1", "G2M", "S"]);
        assert!(matches!(var_col(&a, "highly_variable"), Column::Bool(_)));
        let pca = obsm(&a, "X_pca");
        assert_eq!((pca.n_rows, pca.n_cols), (700, 50));
        let raw = timed_read(
            p,
            &ReadOptions {
                layer: None,
                use_raw: true,
            },
        );
        assert_eq!(raw.x.shape(), (700, 765));
        assert!(matches!(raw.x, Matrix::Csr(_)));
        // The same cells in the same order as the modern counts file.
        let counts = read_h5ad(
            shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad"),
            &ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(a.obs_names, counts.obs_names);
        assert_eq!(
            a.obs_column("bulk_labels").unwrap().labels(),
            counts.obs_column("bulk_labels").unwrap().labels()
        );
    }

    #[test]
    fn option_errors_name_the_field() {
        let p = shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad");
        let e = read_h5ad(
            p,
            &ReadOptions {
                layer: Some("counts".into()),
                use_raw: false,
            },
        );
        let (field, msg) = format_field(e.unwrap_err());
        assert_eq!(field, "layers/counts");
        assert!(msg.contains("no layer `counts`"), "{msg}");
        let (field, _) = format_field(
            read_h5ad(
                p,
                &ReadOptions {
                    layer: None,
                    use_raw: true,
                },
            )
            .unwrap_err(),
        );
        assert_eq!(field, "raw/X");
        let both = ReadOptions {
            layer: Some("x".into()),
            use_raw: true,
        };
        assert!(matches!(read_h5ad(p, &both), Err(Error::InvalidInput(_))));
    }

    /// A small AnnData exercising every column type, obsm, layers and uns.
    fn example(dense: bool) -> AnnData {
        // [[1, 0, 2], [0, 0, 0], [0, 3, 0], [4.5, 0, 6]]
        let csr = CsMat::new(
            (4, 3),
            vec![0, 2, 2, 3, 5],
            vec![0, 2, 1, 0, 2],
            vec![1.0, 2.0, 3.0, 4.5, 6.0],
        );
        let x = if dense {
            Matrix::Dense(Matrix::Csr(csr.clone()).to_dense())
        } else {
            Matrix::Csr(csr.clone())
        };
        let mut a = AnnData::new(x, vec!["CD3E".into(), "MS4A1".into(), "LYZ".into()]);
        a.obs_names = vec!["c0".into(), "c1".into(), "c2".into(), "c3".into()];
        a.set_obs(
            "cell_type",
            Column::Categorical {
                codes: vec![1, 0, -1, 1],
                categories: vec!["B".into(), "T".into()],
            },
        );
        a.set_obs(
            "note",
            Column::String(vec!["a".into(), "".into(), "é ü".into(), "d".into()]),
        );
        a.set_obs("score", Column::Numeric(vec![0.5, -1.0, 1e10, 3.0]));
        a.set_obs("flag", Column::Bool(vec![true, false, false, true]));
        a.set_var(
            "gene_ids",
            Column::String(vec!["E1".into(), "E2".into(), "E3".into()]),
        );
        a.set_obsm(
            "X_pca",
            DenseMatrix::from_vec(4, 2, (0..8).map(|i| i as f32 * 0.5).collect()).unwrap(),
        );
        a.layers.push(("counts".into(), Matrix::Csr(csr)));
        a.layers
            .push(("dense".into(), Matrix::Dense(DenseMatrix::zeros(4, 3))));
        let uns = serde_json::json!({
            "n": 7,
            "big": 18_000_000_000_000_000_000u64,
            "x": 2.5,
            "s": "hi",
            "flag": true,
            "ints": [1, 2, 3],
            "floats": [0.5, 1.5],
            "strs": ["x", "y"],
            "bools": [true, false],
            "mat": [[1.0, 2.0], [3.0, 4.5]],
            "nested": {"deep": {"k": "v", "empty": {}}},
        });
        a.uns = uns.as_object().unwrap().clone();
        a
    }

    fn assert_same(a: &AnnData, b: &AnnData) {
        assert_eq!(a.x.shape(), b.x.shape());
        assert_eq!(a.x.to_dense(), b.x.to_dense());
        assert_eq!(matches!(a.x, Matrix::Csr(_)), matches!(b.x, Matrix::Csr(_)));
        assert_eq!(a.obs_names, b.obs_names);
        assert_eq!(a.var_names, b.var_names);
        assert_eq!(a.obs, b.obs);
        assert_eq!(a.var, b.var);
        assert_eq!(a.obsm, b.obsm);
        assert_eq!(a.layers.len(), b.layers.len());
        for ((ka, ma), (kb, mb)) in a.layers.iter().zip(&b.layers) {
            assert_eq!(ka, kb);
            assert_eq!(ma.to_dense(), mb.to_dense());
        }
        assert_eq!(a.uns, b.uns);
    }

    #[test]
    fn write_read_round_trip_csr_and_dense() {
        let tmp = tempfile::tempdir().unwrap();
        for dense in [false, true] {
            let a = example(dense);
            let p = tmp.path().join(format!("rt_{dense}.h5ad"));
            write_h5ad(&p, &a).unwrap();
            let b = read_h5ad(&p, &ReadOptions::default()).unwrap();
            assert_same(&a, &b);
            let c = read_h5ad(
                &p,
                &ReadOptions {
                    layer: Some("counts".into()),
                    use_raw: false,
                },
            )
            .unwrap();
            assert_eq!(c.x.to_dense(), a.layers[0].1.to_dense());
        }
        // Only the output remains: no temporary files left beside it.
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn write_uns_null_mixed_and_object_lists_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("uns.h5ad");
        let mut a = example(false);
        a.uns = serde_json::json!({"mixed": [1, "a"], "nothing": null, "objs": [{"a": 1}]})
            .as_object()
            .unwrap()
            .clone();
        write_h5ad(&p, &a).unwrap();
        let b = read_h5ad(&p, &ReadOptions::default()).unwrap();
        assert_eq!(b.uns["mixed"], serde_json::json!([1, "a"]));
        assert_eq!(b.uns["nothing"], Value::Null);
        assert_eq!(b.uns["objs"], serde_json::json!([{"a": 1}]));
    }

    #[test]
    fn write_rejects_inconsistent_adata_and_keeps_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("out.h5ad");
        std::fs::write(&p, b"previous").unwrap();
        let mut a = example(false);
        a.obs_names.pop();
        assert!(matches!(write_h5ad(&p, &a), Err(Error::InvalidInput(_))));
        let mut a = example(false);
        a.set_obs(
            "bad",
            Column::Categorical {
                codes: vec![0, 0, 5, 0],
                categories: vec!["x".into()],
            },
        );
        assert!(matches!(write_h5ad(&p, &a), Err(Error::InvalidInput(_))));
        let mut a = example(false);
        a.uns.insert("a/b".into(), Value::from(1));
        assert!(matches!(write_h5ad(&p, &a), Err(Error::InvalidInput(_))));
        assert_eq!(std::fs::read(&p).unwrap(), b"previous");
        // Missing parent directories are created; a parent that is a file is an I/O error.
        let nested = tmp.path().join("new/dir/out.h5ad");
        write_h5ad(&nested, &example(false)).unwrap();
        assert!(nested.exists());
        let under_file = p.join("out.h5ad");
        assert!(matches!(
            write_h5ad(&under_file, &example(false)),
            Err(Error::Io { .. })
        ));
    }

    /// Builds an HDF5 file by hand (for malformed-layout tests).
    fn raw_file(dir: &Path, name: &str, build: impl FnOnce(&mut FileBuilder)) -> PathBuf {
        let mut fb = FileBuilder::new();
        build(&mut fb);
        let p = dir.join(name);
        fb.write(&p).unwrap();
        p
    }

    fn sparse_group(
        fb: &mut FileBuilder,
        enc: &str,
        shape: [i64; 2],
        indptr: &[i32],
        indices: &[i32],
        data: &[f32],
    ) {
        let mut g = fb.create_group("X");
        set_enc_group(&mut g, enc, "0.1.0");
        g.set_attr("shape", AttrValue::I64Array(shape.to_vec()));
        g.create_dataset("data").with_f32_data(data);
        g.create_dataset("indices").with_i32_data(indices);
        g.create_dataset("indptr").with_i32_data(indptr);
        fb.add_group(g.finish());
    }

    #[test]
    fn duplicate_categories_are_merged_keeping_every_label() {
        let cats = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (codes, c, rep) =
            merge_duplicate_categories(vec![0, 1, 2, -1, 3, 1], cats(&["a", "b", "a", "b"]));
        assert_eq!(c, cats(&["a", "b"]));
        assert_eq!(rep, cats(&["a", "b"]));
        assert_eq!(codes, vec![0, 1, 0, -1, 1, 1]);
        let (codes, c, rep) = merge_duplicate_categories(vec![1, 0], cats(&["x", "y"]));
        assert_eq!((codes, c), (vec![1, 0], cats(&["x", "y"])));
        assert!(rep.is_empty());
    }

    #[test]
    fn sparse_shape_accepts_integer_and_whole_float_attributes() {
        let attrs = |v: AttrValue| Attrs::from([("shape".to_string(), v)]);
        assert_eq!(
            sparse_shape_attr(&attrs(AttrValue::I64Array(vec![2, 3]))),
            Ok([2, 3])
        );
        assert_eq!(
            sparse_shape_attr(&attrs(AttrValue::U64Array(vec![2, 3]))),
            Ok([2, 3])
        );
        assert_eq!(
            sparse_shape_attr(&attrs(AttrValue::F64Array(vec![2.0, 3.0]))),
            Ok([2, 3])
        );
        for bad in [
            AttrValue::F64Array(vec![2.5, 3.0]),
            AttrValue::F64Array(vec![-1.0, 3.0]),
            AttrValue::F64Array(vec![f64::NAN, 3.0]),
            AttrValue::I64Array(vec![-2, 3]),
            AttrValue::I64Array(vec![2, 3, 4]),
            AttrValue::String("2,3".into()),
        ] {
            assert!(sparse_shape_attr(&attrs(bad.clone())).is_err(), "{bad:?}");
        }
        assert!(sparse_shape_attr(&Attrs::new()).is_err());
    }

    #[test]
    fn reads_csc_and_sorts_unsorted_csr() {
        let tmp = tempfile::tempdir().unwrap();
        // The matrix [[1, 0, 2], [0, 3, 0]] stored as CSC.
        let p = raw_file(tmp.path(), "csc.h5ad", |fb| {
            sparse_group(
                fb,
                "csc_matrix",
                [2, 3],
                &[0, 1, 2, 3],
                &[0, 1, 0],
                &[1.0, 3.0, 2.0],
            );
        });
        let a = read_h5ad(&p, &ReadOptions::default()).unwrap();
        assert_eq!(a.x.to_dense().data, vec![1.0, 0.0, 2.0, 0.0, 3.0, 0.0]);
        assert_eq!(a.obs_names, ["0", "1"]);
        // Unsorted column indices in row 0.
        let p = raw_file(tmp.path(), "unsorted.h5ad", |fb| {
            sparse_group(
                fb,
                "csr_matrix",
                [2, 3],
                &[0, 2, 3],
                &[2, 0, 1],
                &[2.0, 1.0, 3.0],
            );
        });
        let a = read_h5ad(&p, &ReadOptions::default()).unwrap();
        let Matrix::Csr(c) = &a.x else { panic!() };
        assert_eq!(c.outer_view(0).unwrap().indices(), &[0, 2]);
        assert_eq!(a.x.to_dense().data, vec![1.0, 0.0, 2.0, 0.0, 3.0, 0.0]);
    }

    #[test]
    fn malformed_layouts_give_format_errors() {
        let tmp = tempfile::tempdir().unwrap();
        type Case = (
            &'static str,
            Box<dyn FnOnce(&mut FileBuilder)>,
            &'static str,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "short_indptr",
                Box::new(|fb| {
                    sparse_group(fb, "csr_matrix", [3, 3], &[0, 1, 2], &[0, 1], &[1.0, 1.0])
                }),
                "X/indptr",
                "expected n_rows + 1",
            ),
            (
                "index_out_of_range",
                Box::new(|fb| {
                    sparse_group(fb, "csr_matrix", [2, 3], &[0, 1, 2], &[0, 7], &[1.0, 1.0])
                }),
                "X/indices",
                "expected 0 <= index < n_cols",
            ),
            (
                "indptr_past_data",
                Box::new(|fb| {
                    sparse_group(fb, "csr_matrix", [2, 3], &[0, 1, 5], &[0, 1], &[1.0, 1.0])
                }),
                "X/indptr",
                "expected equal",
            ),
            (
                "unknown_encoding",
                Box::new(|fb| {
                    sparse_group(
                        fb,
                        "awkward-array",
                        [2, 3],
                        &[0, 1, 2],
                        &[0, 1],
                        &[1.0, 1.0],
                    )
                }),
                "X",
                "unsupported encoding-type `awkward-array`",
            ),
            (
                "no_x",
                Box::new(|fb| {
                    let mut g = fb.create_group("obs");
                    set_enc_group(&mut g, "dataframe", "0.2.0");
                    fb.add_group(g.finish());
                }),
                "X",
                "absent",
            ),
            (
                "x_1d",
                Box::new(|fb| {
                    fb.create_dataset("X").with_f32_data(&[1.0, 2.0]);
                }),
                "X",
                "expected a 2-D array",
            ),
            (
                "x_strings",
                Box::new(|fb| {
                    fb.create_dataset("X")
                        .with_vlen_strings(&["a", "b"])
                        .with_shape(&[1, 2]);
                }),
                "X",
                "expected numbers",
            ),
            (
                "obs_too_short",
                Box::new(|fb| {
                    fb.create_dataset("X")
                        .with_f32_data(&[1.0, 2.0])
                        .with_shape(&[2, 1]);
                    let mut g = fb.create_group("obs");
                    set_enc_group(&mut g, "dataframe", "0.2.0");
                    g.set_attr("_index", vstr("_index"));
                    g.create_dataset("_index").with_vlen_strings(&["only_one"]);
                    fb.add_group(g.finish());
                }),
                "obs/_index",
                "expected 2",
            ),
            (
                "bad_codes",
                Box::new(|fb| {
                    fb.create_dataset("X")
                        .with_f32_data(&[1.0, 2.0])
                        .with_shape(&[2, 1]);
                    let mut g = fb.create_group("obs");
                    set_enc_group(&mut g, "dataframe", "0.2.0");
                    g.set_attr("_index", vstr("_index"));
                    g.set_attr(
                        "column-order",
                        AttrValue::VarLenStringArray(vec!["ct".into()]),
                    );
                    g.create_dataset("_index").with_vlen_strings(&["a", "b"]);
                    let mut c = g.create_group("ct");
                    set_enc_group(&mut c, "categorical", "0.2.0");
                    c.create_dataset("codes").with_i8_data(&[0, 3]);
                    c.create_dataset("categories").with_vlen_strings(&["x"]);
                    g.add_group(c.finish());
                    fb.add_group(g.finish());
                }),
                "obs/ct/codes",
                "contains code 3",
            ),
        ];
        for (name, build, want_field, want_msg) in cases {
            let p = raw_file(tmp.path(), &format!("{name}.h5ad"), build);
            let (field, msg) = format_field(
                read_h5ad(&p, &ReadOptions::default())
                    .map(|_| ())
                    .expect_err(name),
            );
            assert_eq!(field, want_field, "{name}: {msg}");
            assert!(msg.contains(want_msg), "{name}: {msg}");
        }
    }

    #[test]
    fn bad_files_give_the_right_error() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing.h5ad");
        assert!(matches!(
            read_h5ad(&missing, &ReadOptions::default()),
            Err(Error::Io { .. })
        ));

        let text = tmp.path().join("table.h5ad");
        std::fs::write(&text, "gene\tcount\nCD3E\t4\n").unwrap();
        let (field, msg) = format_field(read_h5ad(&text, &ReadOptions::default()).unwrap_err());
        assert_eq!(field, "(file)");
        assert!(msg.contains("expected an HDF5 file (.h5ad)"), "{msg}");

        let empty = tmp.path().join("empty.h5ad");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            format_field(read_h5ad(&empty, &ReadOptions::default()).unwrap_err()).0,
            "(file)"
        );

        let no_x = raw_file(tmp.path(), "no_x.h5ad", |fb| {
            fb.create_dataset("something_else").with_f32_data(&[1.0]);
        });
        let (field, msg) = format_field(read_h5ad(&no_x, &ReadOptions::default()).unwrap_err());
        assert_eq!(field, "X");
        assert!(msg.contains("absent"), "{msg}");

        // Truncated copies of a real file: every one is an error, none panics.
        let src = shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad");
        let bytes = std::fs::read(src).unwrap();
        for frac in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99] {
            let cut = (bytes.len() as f64 * frac) as usize;
            let p = tmp.path().join(format!("truncated_{cut}.h5ad"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            match read_h5ad(&p, &ReadOptions::default()) {
                Err(Error::Format { field, message, .. }) => {
                    assert_eq!(field, "(file)", "truncated at {cut}: {message}");
                    assert!(
                        message.contains("is truncated"),
                        "truncated at {cut}: {message}"
                    );
                }
                other => panic!("truncated at {cut} bytes: expected Error::Format, got {other:?}"),
            }
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let src = shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad");
        let bytes = std::fs::read(src).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for k in 0..24 {
            let mut b = bytes.clone();
            // Corrupt a run of bytes, mostly in the metadata near the start.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let limit = if k % 2 == 0 {
                8192.min(b.len())
            } else {
                b.len()
            };
            let at = 8 + (state as usize) % (limit - 40);
            for (i, byte) in b[at..at + 16].iter_mut().enumerate() {
                *byte ^= (state >> (i % 8 * 8)) as u8 | 1;
            }
            let p = tmp.path().join(format!("corrupt_{k}.h5ad"));
            std::fs::write(&p, &b).unwrap();
            // Either an error or (when only values were hit) a result; never a panic.
            match read_h5ad(&p, &ReadOptions::default()) {
                Ok(a) => eprintln!("corrupt_{k} at {at}: read [{}, {}]", a.n_obs(), a.n_vars()),
                Err(e) => eprintln!("corrupt_{k} at {at}: {e}"),
            }
        }
    }

    #[test]
    fn python_anndata_reads_our_file_without_warnings() {
        let ok = std::process::Command::new(python())
            .args(["-c", "import anndata"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!(
                "skipping: `{} -c \"import anndata\"` failed (anndata not installed)",
                python()
            );
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let ours = tmp.path().join("ours.h5ad");
        let dense = tmp.path().join("ours_dense.h5ad");
        let theirs = tmp.path().join("theirs.h5ad");
        write_h5ad(&ours, &example(false)).unwrap();
        write_h5ad(&dense, &example(true)).unwrap();
        // Edge cases: no columns (empty column-order), all-zero CSR (empty datasets), no uns.
        let minimal = tmp.path().join("minimal.h5ad");
        let zero = CsMat::new((3, 2), vec![0, 0, 0, 0], Vec::new(), Vec::new());
        write_h5ad(
            &minimal,
            &AnnData::new(Matrix::Csr(zero), vec!["a".into(), "b".into()]),
        )
        .unwrap();
        let m = read_h5ad(&minimal, &ReadOptions::default()).unwrap();
        assert_eq!((m.x.shape(), m.obs.len(), m.uns.len()), ((3, 2), 0, 0));
        let script = r#"
import sys, warnings
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad
warnings.simplefilter("error")
expected = np.array([[1, 0, 2], [0, 0, 0], [0, 3, 0], [4.5, 0, 6]], dtype=np.float32)
for path, sparse in [(sys.argv[1], True), (sys.argv[2], False)]:
    a = ad.read_h5ad(path)
    assert a.shape == (4, 3), a.shape
    assert sp.issparse(a.X) == sparse, type(a.X)
    X = a.X.toarray() if sparse else a.X
    assert X.dtype == np.float32 and np.array_equal(X, expected), X
    if sparse:
        assert a.X.format == "csr"
    assert list(a.obs_names) == ["c0", "c1", "c2", "c3"]
    assert list(a.var_names) == ["CD3E", "MS4A1", "LYZ"]
    ct = a.obs["cell_type"]
    assert isinstance(ct.dtype, pd.CategoricalDtype), ct.dtype
    assert list(ct.cat.categories) == ["B", "T"], list(ct.cat.categories)
    assert ct.isna().tolist() == [False, False, True, False]
    assert list(ct.astype(str)) == ["T", "B", "nan", "T"]
    assert list(a.obs["note"]) == ["a", "", "é ü", "d"]
    assert a.obs["score"].dtype == np.float64 and a.obs["score"].tolist() == [0.5, -1.0, 1e10, 3.0]
    assert a.obs["flag"].dtype == bool and a.obs["flag"].tolist() == [True, False, False, True]
    assert list(a.var["gene_ids"]) == ["E1", "E2", "E3"]
    assert np.allclose(a.obsm["X_pca"], np.arange(8).reshape(4, 2) * 0.5)
    assert np.array_equal(a.layers["counts"].toarray(), expected)
    assert a.layers["dense"].shape == (4, 3)
    u = a.uns
    assert u["n"] == 7 and u["x"] == 2.5 and u["s"] == "hi" and bool(u["flag"]) is True
    assert u["big"] == 18000000000000000000
    assert list(u["ints"]) == [1, 2, 3] and list(u["floats"]) == [0.5, 1.5]
    assert list(u["strs"]) == ["x", "y"] and list(u["bools"]) == [True, False]
    assert np.array_equal(u["mat"], [[1.0, 2.0], [3.0, 4.5]])
    assert u["nested"]["deep"]["k"] == "v" and dict(u["nested"]["deep"]["empty"]) == {}
    # anndata can write it back (no leftover oddities in the in-memory object).
    a.write_h5ad(path + ".rewritten.h5ad")
m = ad.read_h5ad(sys.argv[4])
assert m.shape == (3, 2) and m.X.nnz == 0 and list(m.obs_names) == ["0", "1", "2"]
assert len(m.obs.columns) == 0 and len(m.uns) == 0
warnings.resetwarnings()
# A file written by anndata itself: CSC X, categorical / nullable / bool columns.
Xc = sp.csc_matrix(expected)
obs = pd.DataFrame({
    "cell_type": pd.Categorical(["T", "B", None, "T"]),
    "n": pd.array([1, None, 3, 4], dtype="Int64"),
    "ok": [True, False, True, True],
    "label": ["a", "b", "c", "d"],
}, index=["c0", "c1", "c2", "c3"])
b = ad.AnnData(X=Xc, obs=obs, var=pd.DataFrame(index=["CD3E", "MS4A1", "LYZ"]))
b.obsm["X_umap"] = np.ones((4, 2))
b.uns["params"] = {"k": 15, "method": "umap"}
b.write_h5ad(sys.argv[3], compression="gzip")
print("PYTHON_OK")
"#;
        let out = std::process::Command::new(python())
            .args(["-c", script])
            .arg(&ours)
            .arg(&dense)
            .arg(&theirs)
            .arg(&minimal)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("PYTHON_OK"),
            "python check failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        // Python's rewrite of our file and its own file read back here.
        let re = read_h5ad(
            &PathBuf::from(format!("{}.rewritten.h5ad", ours.display())),
            &ReadOptions::default(),
        )
        .unwrap();
        assert_same(&example(false), &re);
        let b = read_h5ad(&theirs, &ReadOptions::default()).unwrap();
        assert_eq!(b.x.to_dense(), example(true).x.to_dense());
        assert!(matches!(b.x, Matrix::Csr(_)));
        assert_eq!(
            b.obs_column("cell_type").unwrap().labels(),
            ["T", "B", "nan", "T"]
        );
        match b.obs_column("n").unwrap() {
            Column::Numeric(v) => {
                assert_eq!((v[0], v[2], v[3]), (1.0, 3.0, 4.0));
                assert!(v[1].is_nan());
            }
            other => panic!("n: {other:?}"),
        }
        assert_eq!(
            b.obs_column("ok").unwrap(),
            &Column::Bool(vec![true, false, true, true])
        );
        assert_eq!(
            b.obs_column("label").unwrap().labels(),
            ["a", "b", "c", "d"]
        );
        assert_eq!(b.uns["params"]["k"], 15);
        assert_eq!(b.uns["params"]["method"], "umap");
    }

    #[test]
    fn blosc_compressed_x_is_a_clear_error() {
        let ok = std::process::Command::new(python())
            .args(["-c", "import anndata, hdf5plugin"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipping: python3 with anndata and hdf5plugin is not available");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let x_blosc = tmp.path().join("x_blosc.h5ad");
        let layer_blosc = tmp.path().join("layer_blosc.h5ad");
        let script = r#"
import sys, h5py, hdf5plugin, numpy as np, scipy.sparse as sp, anndata as ad
X = sp.random(30, 10, density=0.3, format="csr", dtype=np.float32, random_state=0)
a = ad.AnnData(X=X)
blosc = hdf5plugin.Blosc(cname="lz4")  # the default blosclz codec crashes on some CPUs
a.write_h5ad(sys.argv[1])
with h5py.File(sys.argv[1], "a") as f:
    del f["X/data"]
    f["X"].create_dataset("data", data=X.data, chunks=(20,), compression=blosc)
a.write_h5ad(sys.argv[2])
with h5py.File(sys.argv[2], "a") as f:
    f["layers"].create_dataset("counts", data=X.toarray(), chunks=(10, 10),
                               compression=blosc)
"#;
        let out = std::process::Command::new(python())
            .args(["-c", script])
            .arg(&x_blosc)
            .arg(&layer_blosc)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (field, msg) = format_field(read_h5ad(&x_blosc, &ReadOptions::default()).unwrap_err());
        assert!(field.starts_with("X/"), "{field}: {msg}");
        assert!(msg.contains("blosc (HDF5 filter 32001)"), "{msg}");
        // A blosc layer is skipped (with a warning) unless it is the one asked for.
        let a = read_h5ad(&layer_blosc, &ReadOptions::default()).unwrap();
        assert_eq!(a.x.shape(), (30, 10));
        assert!(a.layers.is_empty());
        let opts = ReadOptions {
            layer: Some("counts".into()),
            use_raw: false,
        };
        let (field, msg) = format_field(read_h5ad(&layer_blosc, &opts).unwrap_err());
        assert_eq!(field, "layers/counts");
        assert!(msg.contains("blosc"), "{msg}");
    }

    #[test]
    fn obsp_round_trip_and_anndata_reads_it() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("obsp.h5ad");
        // A symmetric 4-cell graph with probabilities, and an empty one.
        let links = CsMat::new(
            (4, 4),
            vec![0, 2, 4, 5, 8],
            vec![1, 3, 0, 3, 3, 0, 1, 2],
            vec![0.9, 0.75, 0.9, 0.5, 0.5, 0.75, 0.5, 0.5],
        );
        let empty = CsMat::new((4, 4), vec![0; 5], Vec::new(), Vec::new());
        let obsp = vec![("links".to_string(), links.clone()), ("zero".into(), empty)];
        write_h5ad_with_obsp(&p, &example(false), &obsp).unwrap();
        // The rest of the file is unchanged and obsp reads back exactly.
        assert_same(
            &example(false),
            &read_h5ad(&p, &ReadOptions::default()).unwrap(),
        );
        let back = read_obsp(&p, 4).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0, "links");
        assert_eq!(back[0].1, links);
        assert_eq!((back[1].0.as_str(), back[1].1.nnz()), ("zero", 0));
        // A file without obsp entries, and a wrong n_obs.
        let plain = tmp.path().join("plain.h5ad");
        write_h5ad(&plain, &example(false)).unwrap();
        assert!(read_obsp(&plain, 4).unwrap().is_empty());
        let (field, msg) = format_field(read_obsp(&p, 5).unwrap_err());
        assert_eq!(field, "obsp/links");
        assert!(msg.contains("expected [n_obs, n_obs] = [5, 5]"), "{msg}");
        // Bad obsp input: nothing is written.
        let q = tmp.path().join("bad.h5ad");
        let wrong = CsMat::new((3, 3), vec![0; 4], Vec::new(), Vec::new());
        for bad in [
            vec![("w".to_string(), wrong)],
            vec![("a/b".to_string(), links.clone())],
            vec![
                ("d".to_string(), links.clone()),
                ("d".into(), links.clone()),
            ],
        ] {
            assert!(matches!(
                write_h5ad_with_obsp(&q, &example(false), &bad),
                Err(Error::InvalidInput(_))
            ));
            assert!(!q.exists());
        }
        let ok = std::process::Command::new(python())
            .args(["-c", "import anndata"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipping the anndata part: anndata not installed");
            return;
        }
        let theirs = tmp.path().join("theirs.h5ad");
        let script = r#"
import sys, warnings
import numpy as np, scipy.sparse as sp, anndata as ad
warnings.simplefilter("error")
a = ad.read_h5ad(sys.argv[1])
L = a.obsp["links"]
assert sp.issparse(L) and L.format == "csr" and L.dtype == np.float32, (type(L), L.dtype)
expected = np.array([[0, .9, 0, .75], [.9, 0, 0, .5], [0, 0, 0, .5], [.75, .5, .5, 0]], np.float32)
assert np.array_equal(L.toarray(), expected), L.toarray()
assert np.array_equal(L.toarray(), L.toarray().T)
assert a.obsp["zero"].nnz == 0
# anndata's own obsp: a CSR and a dense matrix.
a.obsp["dense"] = np.eye(4, dtype=np.float32) * 2
a.obsp["csc"] = sp.csc_matrix(expected)
a.write_h5ad(sys.argv[2])
print("PYTHON_OK")
"#;
        let out = std::process::Command::new(python())
            .args(["-c", script])
            .arg(&p)
            .arg(&theirs)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("PYTHON_OK"),
            "python check failed:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let back: std::collections::HashMap<String, CsMat<f32>> =
            read_obsp(&theirs, 4).unwrap().into_iter().collect();
        assert_eq!(back["links"], links);
        let dense = &back["dense"];
        assert_eq!(dense.nnz(), 4);
        assert!((0..4).all(|i| dense.get(i, i) == Some(&2.0)));
        // anndata writes a csc_matrix as CSC; we read it as CSR.
        assert_eq!(back["csc"].get(0, 1), Some(&0.9));
        assert_eq!(back["csc"].get(2, 3), Some(&0.5));
    }
}
