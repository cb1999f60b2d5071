//! 10x Genomics "filtered_feature_bc_matrix" directories (Cell Ranger ≥ 2 MatrixMarket export,
//! what scanpy's `sc.read_10x_mtx` reads).
//!
//! A directory holds
//! - `matrix.mtx` or `matrix.mtx.gz`: MatrixMarket `coordinate` (`integer`, `real` or
//!   `pattern`, `general`), **genes × cells**, 1-based; transposed here to cells × genes CSR
//!   with sorted column indices (duplicate entries are summed, as scipy does);
//! - `features.tsv(.gz)` (Cell Ranger ≥ 3) or `genes.tsv(.gz)` (Cell Ranger 2): tab-separated
//!   `gene_id [gene_symbol [feature_type]]`;
//! - `barcodes.tsv(.gz)`: one cell barcode per line;
//! - optionally `obs.tsv(.gz)`: a header row, then one row per cell whose first column is the
//!   barcode (checked against `barcodes.tsv`); every other column becomes an `obs` column,
//!   [`Column::Numeric`] if all its non-empty values parse as numbers, otherwise
//!   [`Column::Categorical`] (categories sorted, empty cells missing). Integer-like labels such
//!   as Louvain cluster ids therefore come back numeric.
//!
//! `var_names` are the gene symbols (column 2) when present, else the ids (column 1), like
//! scanpy's default `var_names='gene_symbols'`; with ≥ 2 columns the ids are kept as the `var`
//! column `gene_ids` and a third column as the categorical `feature_types`. Duplicate
//! `var_names` are made unique the way scanpy's `var_names_make_unique` does (the second `X`
//! becomes `X-1`, the third `X-2`, skipping names that already exist), with a warning that
//! lists them (`unique_var_names`, shared with the `.h5ad` reader). Names are kept as stored
//! otherwise (an empty symbol stays empty).
//!
//! # Sizes
//! The size line of the MatrixMarket file (`n_genes n_cells n_entries`) must match the number
//! of rows of `features.tsv` and `barcodes.tsv`, which are read first; the per-cell arrays are
//! only allocated after that check, and the entry buffers are reserved for no more entries than
//! the file's size could hold. A 3-line `matrix.mtx.gz` declaring `765 4000000000 0` is thus
//! refused on its size line, with both counts, instead of allocating 32 GB. Fewer entries than
//! declared is a truncated file; more is an error on the first extra line.
//!
//! # Crates
//! [`flate2`] (`MultiGzDecoder`) for `.gz`. The MatrixMarket body is parsed by a small streaming
//! parser here instead of `sprs::io::read_matrix_market_from_bufread`: sprs has to be told the
//! scalar type before the header is read (10x files are `integer`, exported ones often
//! `real`), builds a `TriMat` that must then be converted and transposed, and its errors carry
//! no line numbers; the parser in `mtx.rs` reads straight into per-cell triplets and reports the line
//! of any malformed entry.

mod mtx;
#[cfg(test)]
mod tests;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::anndata::{AnnData, Column, Frame, Matrix};
use crate::error::{Error, Result};
use mtx::{Expected, read_mtx_transposed};

/// Reads a 10x Genomics MatrixMarket directory into an [`AnnData`] of shape
/// `[n_cells, n_genes]` (the file is genes × cells and is transposed) with CSR `X` holding the
/// values as stored (UMI counts for Cell Ranger output), `obs_names` = barcodes, `var_names` =
/// gene symbols (made unique), `var` columns `gene_ids` (and `feature_types`), and the `obs`
/// columns of an optional `obs.tsv(.gz)`. See the module documentation for the layout.
///
/// # Errors
/// - [`Error::Io`]: `dir` does not exist or a file cannot be opened.
/// - [`Error::Format`] naming the file and line: a required file is missing (`matrix.mtx(.gz)`,
///   `features.tsv(.gz)`/`genes.tsv(.gz)`, `barcodes.tsv(.gz)`), a malformed MatrixMarket header
///   or entry (non-coordinate, complex, symmetric, index out of range, wrong entry count), a
///   truncated gzip stream, a size line whose gene/cell counts differ from `features.tsv` /
///   `barcodes.tsv` (field `line N` of the matrix file, checked before allocating), an `obs.tsv` whose
///   barcodes differ from `barcodes.tsv` or whose rows have the wrong number of fields.
pub fn read_10x_dir(dir: &Path) -> Result<AnnData> {
    let meta = fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::format(
            dir,
            "(directory)",
            "expected a 10x directory with matrix.mtx(.gz), features.tsv(.gz), barcodes.tsv(.gz)",
        ));
    }
    let mtx_path = find(dir, &["matrix.mtx.gz", "matrix.mtx"], "matrix.mtx")?;
    let feat_path = find(
        dir,
        &[
            "features.tsv.gz",
            "features.tsv",
            "genes.tsv.gz",
            "genes.tsv",
        ],
        "features.tsv",
    )?;
    let bc_path = find(dir, &["barcodes.tsv.gz", "barcodes.tsv"], "barcodes.tsv")?;

    let features = read_tsv(&feat_path)?;
    let barcodes: Vec<String> = read_tsv(&bc_path)?
        .into_iter()
        .map(|mut r| r.swap_remove(0))
        .collect();
    let expect = Expected {
        n_genes: features.len(),
        n_cells: barcodes.len(),
        feat_path: &feat_path,
        bc_path: &bc_path,
    };
    let x = read_mtx_transposed(&mtx_path, &expect)?;
    let n_fields = features.iter().map(Vec::len).min().unwrap_or(1);
    let var_names: Vec<String> = features
        .iter()
        .map(|r| {
            if n_fields >= 2 {
                r[1].clone()
            } else {
                r[0].clone()
            }
        })
        .collect();
    let var_names = unique_var_names(&feat_path, "gene names", var_names);
    let mut var = Frame::new();
    if n_fields >= 2 {
        var.push((
            "gene_ids".into(),
            Column::String(features.iter().map(|r| r[0].clone()).collect()),
        ));
    }
    if n_fields >= 3 {
        let types: Vec<String> = features.iter().map(|r| r[2].clone()).collect();
        var.push((
            "feature_types".into(),
            Column::categorical_from_labels(&types),
        ));
    }
    let obs = match find(dir, &["obs.tsv.gz", "obs.tsv"], "obs.tsv") {
        Ok(p) => read_obs_tsv(&p, &barcodes)?,
        Err(_) => Frame::new(),
    };
    Ok(AnnData {
        x: Matrix::Csr(x),
        obs_names: barcodes,
        var_names,
        obs,
        var,
        obsm: Vec::new(),
        layers: Vec::new(),
        uns: serde_json::Map::new(),
    })
}

/// The first of `names` present in `dir`.
fn find(dir: &Path, names: &[&str], what: &str) -> Result<PathBuf> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::format(
                dir,
                what,
                format!("not found; expected one of {names:?} in this 10x directory"),
            )
        })
}

fn open_text(path: &Path) -> Result<Box<dyn BufRead>> {
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            MultiGzDecoder::new(f),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, f)))
    }
}

fn read_failed(path: &Path, line: usize, e: std::io::Error) -> Error {
    Error::format(
        path,
        format!("line {line}"),
        format!("read failed ({e}); the file is truncated or corrupt"),
    )
}

/// Reads lines (without the newline) and calls `f(line_number, line)`; 1-based numbers.
fn for_each_line(path: &Path, mut f: impl FnMut(usize, &str) -> Result<()>) -> Result<()> {
    let mut r = open_text(path)?;
    let mut buf = Vec::with_capacity(256);
    let mut n = 0usize;
    loop {
        buf.clear();
        let got = r
            .read_until(b'\n', &mut buf)
            .map_err(|e| read_failed(path, n + 1, e))?;
        if got == 0 {
            return Ok(());
        }
        n += 1;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|_| Error::format(path, format!("line {n}"), "is not valid UTF-8 text"))?;
        f(n, line)?;
    }
}

/// Tab-separated rows, skipping empty lines; fields have surrounding `"` removed.
fn read_tsv(path: &Path) -> Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for_each_line(path, |_, line| {
        if !line.is_empty() {
            rows.push(line.split('\t').map(unquote).collect());
        }
        Ok(())
    })?;
    Ok(rows)
}

fn unquote(s: &str) -> String {
    let t = s.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        t[1..t.len() - 1].to_string()
    } else {
        t.to_string()
    }
}

/// Reads `obs.tsv(.gz)`: header, then `barcode\tcol1\tcol2...` rows in barcode order.
fn read_obs_tsv(path: &Path, barcodes: &[String]) -> Result<Frame> {
    let rows = read_tsv(path)?;
    let Some((header, body)) = rows.split_first() else {
        return Err(Error::format(
            path,
            "(header)",
            "is empty; expected a header row",
        ));
    };
    if body.len() != barcodes.len() {
        return Err(Error::format(
            path,
            "(rows)",
            format!(
                "has {} data rows; barcodes.tsv has {} cells",
                body.len(),
                barcodes.len()
            ),
        ));
    }
    let width = body.first().map_or(header.len(), Vec::len);
    let names: Vec<String> = if header.len() == width {
        header[1..].to_vec()
    } else if header.len() + 1 == width {
        header.clone()
    } else {
        return Err(Error::format(
            path,
            "(header)",
            format!("has {} fields but the rows have {width}", header.len()),
        ));
    };
    for (i, r) in body.iter().enumerate() {
        if r.len() != width {
            return Err(Error::format(
                path,
                format!("line {}", i + 2),
                format!("has {} fields; expected {width}", r.len()),
            ));
        }
        if r[0] != barcodes[i] {
            return Err(Error::format(
                path,
                format!("line {}", i + 2),
                format!(
                    "barcode `{}` differs from barcodes.tsv row {} (`{}`); expected the same cells \
                     in the same order",
                    r[0],
                    i + 1,
                    barcodes[i]
                ),
            ));
        }
    }
    let mut frame = Frame::new();
    for (k, name) in names.iter().enumerate() {
        let values: Vec<&str> = body.iter().map(|r| r[k + 1].as_str()).collect();
        let name = if name.is_empty() {
            format!("column_{}", k + 1)
        } else {
            name.clone()
        };
        if frame.iter().any(|(n, _)| *n == name) {
            return Err(Error::format(
                path,
                "(header)",
                format!("column `{name}` appears twice"),
            ));
        }
        frame.push((name, parse_column(&values)));
    }
    Ok(frame)
}

fn is_missing(s: &str) -> bool {
    matches!(s, "" | "nan" | "NaN" | "NA" | "N/A" | "None")
}

/// Numeric if every non-missing value is a number, else categorical (missing → code -1).
fn parse_column(values: &[&str]) -> Column {
    let nums: Option<Vec<f64>> = values
        .iter()
        .map(|s| {
            if is_missing(s) {
                Some(f64::NAN)
            } else {
                s.parse::<f64>().ok()
            }
        })
        .collect();
    if let Some(v) = nums {
        return Column::Numeric(v);
    }
    let labels: Vec<String> = values.iter().map(|s| s.to_string()).collect();
    let mut categories: Vec<String> = labels.iter().filter(|s| !is_missing(s)).cloned().collect();
    categories.sort();
    categories.dedup();
    let codes = labels
        .iter()
        .map(|l| categories.binary_search(l).map_or(-1, |c| c as i32))
        .collect();
    Column::Categorical { codes, categories }
}

/// Gene names made unique with [`make_unique`] (anndata's `var_names_make_unique`: the second
/// `A` becomes `A-1`, the third `A-2`, ...), with a warning that names the file, `field` and
/// the repeated names. Used by both readers (`.h5ad` and 10x), so a gene never silently
/// shadows another one of the same name.
pub(crate) fn unique_var_names(path: &Path, field: &str, names: Vec<String>) -> Vec<String> {
    let (unique, n_renamed) = make_unique(&names);
    if n_renamed == 0 {
        return names;
    }
    let mut repeated: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    let mut listed = std::collections::HashSet::new();
    for n in &names {
        if !seen.insert(n.as_str()) && listed.insert(n.as_str()) {
            repeated.push(n.clone());
        }
    }
    tracing::warn!(
        "{}: {n_renamed} repeated gene names in `{field}` made unique as anndata's \
         var_names_make_unique does (the second NAME becomes NAME-1, the third NAME-2): {}",
        path.display(),
        super::h5ad::list_names(&repeated)
    );
    unique
}

/// scanpy/anndata `make_index_unique` with join `-`: the first occurrence keeps its name, later
/// ones get `-1`, `-2`, ... skipping names already taken. Returns the names and how many were
/// renamed.
pub(crate) fn make_unique(names: &[String]) -> (Vec<String>, usize) {
    use std::collections::{HashMap, HashSet};
    let mut seen: HashSet<&str> = HashSet::with_capacity(names.len());
    let dup: Vec<bool> = names.iter().map(|n| !seen.insert(n.as_str())).collect();
    if !dup.iter().any(|&d| d) {
        return (names.to_vec(), 0);
    }
    let mut taken: HashSet<String> = names.iter().cloned().collect();
    let mut counter: HashMap<&str, usize> = HashMap::new();
    let mut out = names.to_vec();
    let mut renamed = 0;
    for (i, n) in names.iter().enumerate() {
        if !dup[i] {
            continue;
        }
        let c = counter.entry(n.as_str()).or_insert(0);
        loop {
            *c += 1;
            let candidate = format!("{n}-{c}");
            if taken.insert(candidate.clone()) {
                out[i] = candidate;
                renamed += 1;
                break;
            }
        }
    }
    (out, renamed)
}
