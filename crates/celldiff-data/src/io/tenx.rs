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
//! no line numbers; the parser below reads straight into per-cell triplets and reports the line
//! of any malformed entry.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use sprs::CsMat;

use crate::anndata::{AnnData, Column, Frame, Matrix};
use crate::error::{Error, Result};

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

/// The matrix size implied by `features.tsv` and `barcodes.tsv`, checked against the
/// MatrixMarket size line before anything is allocated.
struct Expected<'a> {
    n_genes: usize,
    n_cells: usize,
    feat_path: &'a Path,
    bc_path: &'a Path,
}

#[derive(Clone, Copy)]
enum Field {
    Integer,
    Real,
    Pattern,
}

/// Parses a genes × cells MatrixMarket coordinate file into a cells × genes CSR matrix.
///
/// The size line must declare `expect`'s genes and cells (an error on that line names both
/// files' counts otherwise), so a 3-line file declaring 4·10⁹ cells is refused before the
/// per-cell arrays are allocated; the entry buffers are reserved for at most as many entries
/// as the file's size could hold, not for the declared count.
fn read_mtx_transposed(path: &Path, expect: &Expected<'_>) -> Result<CsMat<f32>> {
    let file_len = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    // An entry takes at least 6 bytes of text (`1 1 1\n`); gzip rarely gets below 2 bytes.
    let max_reserve = if path.extension().is_some_and(|e| e == "gz") {
        file_len / 2
    } else {
        file_len / 6
    } as usize
        + 1;
    let mut field = None::<Field>;
    let mut dims: Option<(usize, usize, usize)> = None;
    // (cell, gene, value) triplets.
    let mut cells: Vec<u32> = Vec::new();
    let mut genes: Vec<u32> = Vec::new();
    let mut vals: Vec<f32> = Vec::new();
    let err = |line: usize, msg: String| Error::format(path, format!("line {line}"), msg);
    for_each_line(path, |n, line| {
        if n == 1 {
            let toks: Vec<String> = line
                .split_ascii_whitespace()
                .map(str::to_ascii_lowercase)
                .collect();
            if toks.first().map(String::as_str) != Some("%%matrixmarket") || toks.len() < 5 {
                return Err(err(
                    n,
                    format!(
                        "header `{line}`; expected `%%MatrixMarket matrix coordinate \
                         <integer|real|pattern> general`"
                    ),
                ));
            }
            if toks[1] != "matrix" || toks[2] != "coordinate" {
                return Err(err(
                    n,
                    format!("is `{} {}`; expected `matrix coordinate`", toks[1], toks[2]),
                ));
            }
            field = Some(match toks[3].as_str() {
                "integer" => Field::Integer,
                "real" | "double" => Field::Real,
                "pattern" => Field::Pattern,
                other => {
                    return Err(err(
                        n,
                        format!("has value type `{other}`; expected integer or real"),
                    ));
                }
            });
            if toks[4] != "general" {
                return Err(err(
                    n,
                    format!("has symmetry `{}`; expected general", toks[4]),
                ));
            }
            return Ok(());
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('%') {
            return Ok(());
        }
        let mut it = line.split_ascii_whitespace();
        let Some((n_rows, n_cols, nnz)) = dims else {
            let mut next = || it.next().and_then(|t| t.parse::<usize>().ok());
            let d = (next(), next(), next());
            let (Some(r), Some(c), Some(z)) = d else {
                return Err(err(
                    n,
                    format!("size line `{line}`; expected `n_genes n_cells n_entries`"),
                ));
            };
            if r != expect.n_genes || c != expect.n_cells {
                return Err(err(
                    n,
                    format!(
                        "size line `{line}` declares {r} genes × {c} cells, but {} lists {} genes \
                         and {} lists {} barcodes; expected the same counts (a file from another \
                         matrix, or a corrupt size line)",
                        expect.feat_path.display(),
                        expect.n_genes,
                        expect.bc_path.display(),
                        expect.n_cells
                    ),
                ));
            }
            if r > u32::MAX as usize || c > u32::MAX as usize {
                return Err(err(n, "dimensions exceed 2^32".into()));
            }
            dims = Some((r, c, z));
            let cap = z.min(max_reserve);
            cells.reserve(cap);
            genes.reserve(cap);
            vals.reserve(cap);
            return Ok(());
        };
        let bad = || {
            err(
                n,
                format!("entry `{line}`; expected `gene cell value` (1-based)"),
            )
        };
        let i: usize = it.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let j: usize = it.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        if i == 0 || i > n_rows || j == 0 || j > n_cols {
            return Err(err(
                n,
                format!("entry ({i}, {j}) outside the declared [{n_rows}, {n_cols}] (1-based)"),
            ));
        }
        let v = match field.unwrap_or(Field::Real) {
            Field::Pattern => 1.0,
            Field::Integer => {
                let t = it.next().ok_or_else(bad)?;
                t.parse::<i64>().map_err(|_| bad())? as f32
            }
            Field::Real => {
                let t = it.next().ok_or_else(bad)?;
                t.parse::<f64>().map_err(|_| bad())? as f32
            }
        };
        if genes.len() >= nnz {
            return Err(err(
                n,
                format!("more entries than the {nnz} declared in the size line"),
            ));
        }
        genes.push((i - 1) as u32);
        cells.push((j - 1) as u32);
        vals.push(v);
        Ok(())
    })?;
    let Some((n_genes, n_cells, nnz)) = dims else {
        return Err(Error::format(
            path,
            "(file)",
            "no size line; expected a MatrixMarket file",
        ));
    };
    if genes.len() != nnz {
        return Err(Error::format(
            path,
            "(file)",
            format!(
                "has {} entries; the size line declares {nnz} (truncated file?)",
                genes.len()
            ),
        ));
    }
    // Counting sort by cell.
    let mut indptr = vec![0usize; n_cells + 1];
    for &c in &cells {
        indptr[c as usize + 1] += 1;
    }
    for k in 0..n_cells {
        indptr[k + 1] += indptr[k];
    }
    let mut next = indptr.clone();
    let mut indices = vec![0usize; nnz];
    let mut data = vec![0f32; nnz];
    for k in 0..nnz {
        let c = cells[k] as usize;
        indices[next[c]] = genes[k] as usize;
        data[next[c]] = vals[k];
        next[c] += 1;
    }
    drop((cells, genes, vals));
    // Sort each row by gene and sum duplicates.
    let mut out_ptr = Vec::with_capacity(n_cells + 1);
    let mut out_ind = Vec::with_capacity(nnz);
    let mut out_data = Vec::with_capacity(nnz);
    out_ptr.push(0);
    let mut row: Vec<(usize, f32)> = Vec::new();
    for c in 0..n_cells {
        let (a, b) = (indptr[c], indptr[c + 1]);
        row.clear();
        row.extend(
            indices[a..b]
                .iter()
                .copied()
                .zip(data[a..b].iter().copied()),
        );
        if row.windows(2).any(|w| w[0].0 >= w[1].0) {
            row.sort_by_key(|e| e.0);
        }
        for &(g, v) in &row {
            if out_ind.len() > out_ptr[c] && out_ind.last() == Some(&g) {
                if let Some(last) = out_data.last_mut() {
                    *last += v;
                }
            } else {
                out_ind.push(g);
                out_data.push(v);
            }
        }
        out_ptr.push(out_ind.len());
    }
    CsMat::try_new((n_cells, n_genes), out_ptr, out_ind, out_data).map_err(|(_, _, _, e)| {
        Error::Internal(format!("building CSR from {}: {e}", path.display()))
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::h5ad::{ReadOptions, read_h5ad};
    use std::io::Write;
    use std::time::Instant;

    fn timed(dir: &Path) -> AnnData {
        let t = Instant::now();
        let a = read_10x_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        eprintln!(
            "read 10x {}: [{}, {}] in {:.3} s",
            dir.display(),
            a.n_obs(),
            a.n_vars(),
            t.elapsed().as_secs_f64()
        );
        a
    }

    fn write_gz(path: &Path, text: &str) {
        let f = fs::File::create(path).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap();
    }

    #[test]
    fn pbmc68k_10x_folder_matches_h5ad() {
        let dir = shared_data!("pbmc68k_reduced/counts_mtx");
        let a = timed(dir);
        let h = read_h5ad(
            shared_data!("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad"),
            &ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(a.x.shape(), (700, 765));
        let (Matrix::Csr(x10), Matrix::Csr(xh)) = (&a.x, &h.x) else {
            panic!("expected CSR")
        };
        assert_eq!(x10.indptr().raw_storage(), xh.indptr().raw_storage());
        assert_eq!(x10.indices(), xh.indices());
        assert_eq!(x10.data(), xh.data());
        assert_eq!(a.obs_names, h.obs_names);
        assert_eq!(a.var_names, h.var_names);
        assert_eq!(
            a.obs_column("bulk_labels").unwrap().labels(),
            h.obs_column("bulk_labels").unwrap().labels()
        );
        // Integer-like labels become numeric (documented), with the same values.
        match a.obs_column("louvain").unwrap() {
            Column::Numeric(v) => {
                let hl = h.obs_column("louvain").unwrap().labels();
                assert!(v.iter().zip(&hl).all(|(x, l)| format!("{x}") == *l));
            }
            other => panic!("louvain: {other:?}"),
        }
        assert!(matches!(
            a.obs_column("n_counts").unwrap(),
            Column::Numeric(_)
        ));
        assert!(a.var.iter().any(|(k, _)| k == "gene_ids"));
    }

    #[test]
    fn reads_other_shared_10x_folders() {
        let kang = timed(shared_data!("kang_pbmc_ifnb_valid/mtx"));
        assert_eq!(kang.x.shape(), (1975, 6998));
        assert_eq!(kang.obs_column("condition").unwrap().labels()[0], "control");
        let cats = match kang.obs_column("cell_type").unwrap() {
            Column::Categorical { categories, .. } => categories.len(),
            other => panic!("{other:?}"),
        };
        assert_eq!(cats, 7);
        let brain = timed(shared_data!("mouse_brain_1m_10k_subset/mtx"));
        assert_eq!(brain.x.shape(), (10_000, 1000));
        assert!(brain.obs.is_empty());
        assert_eq!(brain.var_names[0], "Xkr4");
        let h = read_h5ad(
            shared_data!("mouse_brain_1m_10k_subset/brain_1m_10k_cells_1000_genes.h5ad"),
            &ReadOptions::default(),
        )
        .unwrap();
        assert_eq!(brain.x.to_dense(), h.x.to_dense());
        let weinreb = timed(shared_data!("weinreb_larry_hematopoiesis_subset/mtx"));
        assert_eq!(weinreb.x.shape(), (781, 2481));
        match weinreb.obs_column("state_info").unwrap() {
            Column::Categorical { categories, .. } => assert_eq!(categories.len(), 12),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_folder_transposes_sums_duplicates_and_uniquifies() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // 3 genes x 2 cells; gene 2 of cell 1 appears twice (summed), entries unsorted.
        fs::write(
            d.join("matrix.mtx"),
            "%%MatrixMarket matrix coordinate integer general\n%comment\n3 2 4\n3 1 5\n1 1 2\n\
             2 2 7\n3 1 1\n",
        )
        .unwrap();
        write_gz(
            &d.join("features.tsv.gz"),
            "ID1\tACTB\tGene Expression\nID2\tACTB\tGene Expression\nID3\tACTB-1\tGene Expression\n",
        );
        write_gz(&d.join("barcodes.tsv.gz"), "AAA-1\nCCC-1\n");
        fs::write(
            d.join("obs.tsv"),
            "\tgroup\tdepth\nAAA-1\tx\t1.5\nCCC-1\t\tNA\n",
        )
        .unwrap();
        let a = read_10x_dir(d).unwrap();
        assert_eq!(a.x.shape(), (2, 3));
        assert_eq!(a.x.to_dense().data, vec![2.0, 0.0, 6.0, 0.0, 7.0, 0.0]);
        assert_eq!(a.var_names, ["ACTB", "ACTB-2", "ACTB-1"]);
        assert_eq!(a.obs_names, ["AAA-1", "CCC-1"]);
        assert_eq!(
            a.obs_column("group").unwrap(),
            &Column::Categorical {
                codes: vec![0, -1],
                categories: vec!["x".into()]
            }
        );
        match a.obs_column("depth").unwrap() {
            Column::Numeric(v) => assert!(v[0] == 1.5 && v[1].is_nan()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            a.var[0].1,
            Column::String(vec!["ID1".into(), "ID2".into(), "ID3".into()])
        );
    }

    #[test]
    fn make_unique_matches_scanpy() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(make_unique(&v(&["a", "b"])), (v(&["a", "b"]), 0));
        assert_eq!(
            make_unique(&v(&["a", "a", "a", "b"])),
            (v(&["a", "a-1", "a-2", "b"]), 2)
        );
        // `a-1` exists already, so the duplicate `a` becomes `a-2`.
        assert_eq!(
            make_unique(&v(&["a", "a-1", "a"])),
            (v(&["a", "a-1", "a-2"]), 1)
        );
    }

    #[test]
    fn malformed_folders_give_format_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let e = read_10x_dir(&d.join("nope")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
        let e = read_10x_dir(d).unwrap_err();
        assert!(
            matches!(&e, Error::Format { field, .. } if field == "matrix.mtx"),
            "{e:?}"
        );
        fs::write(d.join("features.tsv"), "g1\ng2\n").unwrap();
        fs::write(d.join("barcodes.tsv"), "c1\n").unwrap();
        let cases = [
            (
                "%%MatrixMarket matrix array real general\n2 1\n1\n2\n",
                "line 1",
            ),
            (
                "%%MatrixMarket matrix coordinate complex general\n2 1 1\n1 1 1 0\n",
                "line 1",
            ),
            (
                "%%MatrixMarket matrix coordinate integer general\n2 1 1\n3 1 1\n",
                "line 3",
            ),
            (
                "%%MatrixMarket matrix coordinate integer general\n2 1 1\n1 1 x\n",
                "line 3",
            ),
            (
                "%%MatrixMarket matrix coordinate integer general\n2 1 2\n1 1 1\n",
                "(file)",
            ),
            // The size line disagrees with barcodes.tsv (1 cell): refused on that line.
            (
                "%%MatrixMarket matrix coordinate integer general\n2 2 1\n1 1 1\n",
                "line 2",
            ),
        ];
        for (mtx, want) in cases {
            fs::write(d.join("matrix.mtx"), mtx).unwrap();
            match read_10x_dir(d) {
                Err(Error::Format { field, .. }) => assert_eq!(field, want, "{mtx}"),
                other => panic!("{mtx}: expected Error::Format, got {other:?}"),
            }
        }
        // Truncated gzip stream.
        fs::remove_file(d.join("matrix.mtx")).unwrap();
        let src = fs::read(shared_data!("pbmc68k_reduced/counts_mtx/matrix.mtx.gz")).unwrap();
        fs::write(d.join("matrix.mtx.gz"), &src[..src.len() / 2]).unwrap();
        assert!(matches!(read_10x_dir(d), Err(Error::Format { .. })));
        // obs.tsv whose barcodes differ.
        fs::write(d.join("matrix.mtx.gz"), []).unwrap();
        fs::remove_file(d.join("matrix.mtx.gz")).unwrap();
        fs::write(
            d.join("matrix.mtx"),
            "%%MatrixMarket matrix coordinate real general\n2 1 1\n1 1 0.5\n",
        )
        .unwrap();
        fs::write(d.join("obs.tsv"), "barcode\tx\nc2\t1\n").unwrap();
        match read_10x_dir(d) {
            Err(Error::Format { field, message, .. }) => {
                assert_eq!(field, "line 2");
                assert!(message.contains("differs from barcodes.tsv"), "{message}");
            }
            other => panic!("expected Error::Format, got {other:?}"),
        }
    }
}
