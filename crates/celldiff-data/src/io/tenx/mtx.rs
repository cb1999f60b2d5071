//! The MatrixMarket parser of [`read_10x_dir`](super::read_10x_dir): `matrix.mtx(.gz)`
//! (genes × cells, 1-based) read straight into a cells × genes CSR matrix.

use std::fs;
use std::path::Path;

use sprs::CsMat;

use super::for_each_line;
use crate::error::{Error, Result};

/// The matrix size implied by `features.tsv` and `barcodes.tsv`, checked against the
/// MatrixMarket size line before anything is allocated.
pub(super) struct Expected<'a> {
    pub(super) n_genes: usize,
    pub(super) n_cells: usize,
    pub(super) feat_path: &'a Path,
    pub(super) bc_path: &'a Path,
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
pub(super) fn read_mtx_transposed(path: &Path, expect: &Expected<'_>) -> Result<CsMat<f32>> {
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
