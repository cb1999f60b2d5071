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
//!   `/layers/counts`, followed in an in-memory copy (`links.rs`; the streaming reader
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
//! its module, `patch.rs`).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use hdf5_pure::{
    AttrValue, DType, Dataset, DatasetBuilder, Datatype, EnumTypeBuilder, File, FileBuilder, Group,
    GroupBuilder, make_i8_type,
};
use serde_json::{Map, Value};
use sprs::CsMat;

use super::tenx::unique_var_names;
use crate::anndata::{AnnData, Column, DenseMatrix, Frame, Matrix};
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

mod decode;
pub(crate) use decode::list_names;
mod frame;
mod links;
mod read;
mod stream;
pub use stream::H5adStream;
mod patch;
pub use patch::{Annotations, write_annotated};
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

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_write;
