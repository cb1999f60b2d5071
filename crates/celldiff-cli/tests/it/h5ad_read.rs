//! The readers on hostile and unusual inputs (issue 17): tiny files that declare huge sizes are
//! refused before anything that size is allocated; valid files that anndata reads (a 512-byte
//! HDF5 user block, a float-typed sparse `shape`) are read; repeated gene names are made unique
//! with a warning; repeated categories are merged with a warning; empty and multi-line gene
//! names come back as stored. Every input is built here (hdf5-pure's `FileBuilder`, flate2), in
//! a temporary folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use celldiff::anndata::{Column, Matrix};
use celldiff::io::{ReadOptions, read_h5ad};
use hdf5_pure::{AttrValue, FileBuilder, GroupBuilder};

use crate::common::{assert_bad_input, assert_ok, celldiff, scratch, shared_data, stderr};

/// Runs `celldiff --quiet --threads 2 ARGS` with its address space limited to 8 GiB
/// (`ulimit -v`), so that a reader that allocates what a corrupt size field declares (tens of
/// GB) fails at once instead of exhausting the test machine's memory.
fn celldiff_limited(args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 8388608 && exec \"$0\" --quiet --threads 2 \"$@\"")
        .arg(env!("CARGO_BIN_EXE_celldiff"))
        .args(args)
        .output()
        .expect("running the celldiff binary under sh")
}

fn enc(g: &mut GroupBuilder, kind: &str, version: &str) {
    g.set_attr("encoding-type", AttrValue::String(kind.into()));
    g.set_attr("encoding-version", AttrValue::String(version.into()));
}

/// `X` as an anndata `csr_matrix` group with the given `shape` attribute.
fn csr_x(fb: &mut FileBuilder, shape: AttrValue, indptr: &[i32], indices: &[i32], data: &[f32]) {
    let mut g = fb.create_group("X");
    enc(&mut g, "csr_matrix", "0.1.0");
    g.set_attr("shape", shape);
    g.create_dataset("data").with_f32_data(data);
    g.create_dataset("indices").with_i32_data(indices);
    g.create_dataset("indptr").with_i32_data(indptr);
    fb.add_group(g.finish());
}

/// A dataframe group `name` with row names and optionally one categorical column
/// `(column, codes, categories)`.
fn frame(fb: &mut FileBuilder, name: &str, index: &[&str], cat: Option<(&str, &[i8], &[&str])>) {
    let mut g = fb.create_group(name);
    enc(&mut g, "dataframe", "0.2.0");
    g.set_attr("_index", AttrValue::String("_index".into()));
    g.create_dataset("_index").with_vlen_strings(index);
    let order: Vec<String> = cat.iter().map(|c| c.0.to_string()).collect();
    g.set_attr("column-order", AttrValue::VarLenStringArray(order));
    if let Some((col, codes, cats)) = cat {
        let mut c = g.create_group(col);
        enc(&mut c, "categorical", "0.2.0");
        c.create_dataset("codes").with_i8_data(codes);
        c.create_dataset("categories").with_vlen_strings(cats);
        g.add_group(c.finish());
    }
    fb.add_group(g.finish());
}

/// A small valid count matrix `[6 cells, 4 genes]` as CSR arrays (sorted indices), and its
/// dense row-major values.
fn counts() -> (Vec<i32>, Vec<i32>, Vec<f32>, Vec<f32>) {
    let (mut indptr, mut indices, mut data) = (vec![0], Vec::new(), Vec::new());
    let mut dense = vec![0f32; 24];
    for i in 0..6 {
        let mut row = [(i % 4, (i + 1) as f32), ((i + 2) % 4, 2.0)];
        row.sort_by_key(|e| e.0);
        for (j, v) in row {
            indices.push(j as i32);
            data.push(v);
            dense[i * 4 + j] = v;
        }
        indptr.push(indices.len() as i32);
    }
    (indptr, indices, data, dense)
}

const CELLS: [&str; 6] = ["c0", "c1", "c2", "c3", "c4", "c5"];

/// A valid `.h5ad` of [`counts`] with `var` names `genes`; `edit` adds to / changes the
/// builder before it is written.
fn small_h5ad(path: &Path, genes: &[&str], edit: impl FnOnce(&mut FileBuilder)) {
    let (indptr, indices, data, _) = counts();
    let mut fb = FileBuilder::new();
    fb.set_attr("encoding-type", AttrValue::String("anndata".into()));
    fb.set_attr("encoding-version", AttrValue::String("0.1.0".into()));
    csr_x(
        &mut fb,
        AttrValue::I64Array(vec![6, 4]),
        &indptr,
        &indices,
        &data,
    );
    frame(&mut fb, "var", genes, None);
    edit(&mut fb);
    fb.write(path).unwrap();
}

/// Reads `path` through the CLI (`preprocess --no-log1p`) and returns the output file's
/// contents (names, columns; `X` is normalised) and the command's stderr.
fn through_cli(path: &Path) -> (celldiff::anndata::AnnData, String) {
    let out = path.with_extension("out.h5ad");
    let o = celldiff([
        "preprocess",
        "--data",
        path.to_str().unwrap(),
        "--no-log1p",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    (
        read_h5ad(&out, &ReadOptions::default()).unwrap(),
        stderr(&o),
    )
}

fn dense(m: &Matrix) -> Vec<f32> {
    m.to_dense().data
}

/// `X` of `path` as the library reads it, dense row-major (the CLI's output is normalised).
fn x_of(path: &Path) -> Vec<f32> {
    dense(&read_h5ad(path, &ReadOptions::default()).unwrap().x)
}

#[test]
fn tiny_h5ad_declaring_2_pow_40_genes_without_var_is_refused() {
    let dir = scratch();
    let p = dir.join("huge_shape.h5ad");
    let n_obs = 700usize;
    // One stored value per cell, column 0; X claims 2^40 genes; no `var` at all.
    let indptr: Vec<i32> = (0..=n_obs as i32).collect();
    let names: Vec<String> = (0..n_obs).map(|i| format!("cell{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fb = FileBuilder::new();
    csr_x(
        &mut fb,
        AttrValue::I64Array(vec![n_obs as i64, 1 << 40]),
        &indptr,
        &vec![0; n_obs],
        &vec![1.0; n_obs],
    );
    frame(&mut fb, "obs", &names, None);
    fb.write(&p).unwrap();
    assert!(std::fs::metadata(&p).unwrap().len() < 100_000);
    let out = dir.join("out.h5ad");
    let o = celldiff_limited(&[
        "preprocess",
        "--data",
        p.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["huge_shape.h5ad", "1099511627776", "-byte file"]);
    assert!(!out.exists());
    // The same through the streaming reader (train --stream opens the file differently).
    let run = dir.join("run");
    let o = celldiff_limited(&[
        "train",
        "--data",
        p.to_str().unwrap(),
        "--stream",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["huge_shape.h5ad", "1099511627776"]);
    assert!(!run.exists());
}

/// Writes `text` gzip-compressed to `path`.
fn write_gz(path: &Path, text: &str) {
    let f = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
}

/// A 10x folder with the demo's 765 features and 700 barcodes and `mtx` as `matrix.mtx.gz`.
fn tenx_dir(mtx: &str) -> PathBuf {
    let dir = scratch().join("tenx");
    std::fs::create_dir_all(&dir).unwrap();
    let src = shared_data("pbmc68k_reduced/counts_mtx");
    for f in ["features.tsv.gz", "barcodes.tsv.gz"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    write_gz(&dir.join("matrix.mtx.gz"), mtx);
    dir
}

#[test]
fn tiny_mtx_declaring_4e9_cells_is_refused_with_the_counts() {
    let dir = tenx_dir("%%MatrixMarket matrix coordinate integer general\n%\n765 4000000000 0\n");
    let out = dir.with_file_name("out.h5ad");
    let o = celldiff_limited(&[
        "preprocess",
        "--data",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad_input(
        &o,
        &[
            "matrix.mtx.gz",
            "line 3",
            "4000000000 cells",
            "700 barcodes",
        ],
    );
    assert!(!out.exists());
}

#[test]
fn h5ad_with_a_512_byte_user_block_is_read() {
    let dir = scratch();
    let p = dir.join("userblock.h5ad");
    small_h5ad(&p, &["g0", "g1", "g2", "g3"], |fb| {
        fb.with_userblock(512);
        frame(fb, "obs", &CELLS, None);
    });
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(
        &bytes[512..520],
        b"\x89HDF\r\n\x1a\n",
        "no user block written"
    );
    let (a, _) = through_cli(&p);
    assert_eq!(a.obs_names, CELLS);
    assert_eq!(x_of(&p), counts().3);
    // A user-block file cut short is still reported as truncated.
    let cut = dir.join("userblock_cut.h5ad");
    std::fs::write(&cut, &bytes[..bytes.len() - 64]).unwrap();
    let o = celldiff([
        "preprocess",
        "--data",
        cut.to_str().unwrap(),
        "-o",
        dir.join("cut_out.h5ad").to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["userblock_cut.h5ad", "truncated"]);
}

#[test]
fn float_typed_sparse_shape_is_read() {
    let dir = scratch();
    let p = dir.join("float_shape.h5ad");
    let (indptr, indices, data, want) = counts();
    let mut fb = FileBuilder::new();
    csr_x(
        &mut fb,
        AttrValue::F64Array(vec![6.0, 4.0]),
        &indptr,
        &indices,
        &data,
    );
    frame(&mut fb, "obs", &CELLS, None);
    frame(&mut fb, "var", &["g0", "g1", "g2", "g3"], None);
    fb.write(&p).unwrap();
    let (a, _) = through_cli(&p);
    assert_eq!(a.x.shape(), (6, 4));
    assert_eq!(x_of(&p), want);
    // A fractional shape is still refused, naming the attribute.
    let bad = dir.join("fractional_shape.h5ad");
    let mut fb = FileBuilder::new();
    csr_x(
        &mut fb,
        AttrValue::F64Array(vec![6.0, 4.5]),
        &indptr,
        &indices,
        &data,
    );
    fb.write(&bad).unwrap();
    let o = celldiff([
        "preprocess",
        "--data",
        bad.to_str().unwrap(),
        "-o",
        dir.join("bad_out.h5ad").to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["fractional_shape.h5ad", "shape", "4.5"]);
}

#[test]
fn repeated_h5ad_var_names_are_made_unique_with_a_warning() {
    let p = scratch().join("dup_genes.h5ad");
    small_h5ad(&p, &["ACTB", "ACTB", "CD3E", "ACTB"], |fb| {
        frame(fb, "obs", &CELLS, None)
    });
    let (a, err) = through_cli(&p);
    assert_eq!(a.var_names, ["ACTB", "ACTB-1", "CD3E", "ACTB-2"]);
    // Every column is kept under its own name (none aliased to an earlier one).
    assert_eq!(a.x.shape(), (6, 4));
    assert_eq!(x_of(&p), counts().3);
    assert!(
        err.contains("warning:") && err.contains("dup_genes.h5ad") && err.contains("\"ACTB\""),
        "expected a warning naming the file and the repeated name:\n{err}"
    );
}

#[test]
fn repeated_10x_gene_names_are_reported_in_a_warning() {
    let dir = scratch().join("tenx_dup");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("matrix.mtx"),
        "%%MatrixMarket matrix coordinate integer general\n3 2 3\n1 1 4\n2 2 5\n3 1 6\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("features.tsv"),
        "E1\tMT-ND1\tGene Expression\nE2\tMT-ND1\tGene Expression\nE3\tLYZ\tGene Expression\n",
    )
    .unwrap();
    std::fs::write(dir.join("barcodes.tsv"), "AAA-1\nCCC-1\n").unwrap();
    let out = dir.with_file_name("tenx_dup.h5ad");
    let o = celldiff([
        "preprocess",
        "--data",
        dir.to_str().unwrap(),
        "--no-log1p",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("warning:") && err.contains("features.tsv") && err.contains("\"MT-ND1\""),
        "expected a warning naming the file and the repeated name:\n{err}"
    );
    let a = read_h5ad(&out, &ReadOptions::default()).unwrap();
    assert_eq!(a.var_names, ["MT-ND1", "MT-ND1-1", "LYZ"]);
}

#[test]
fn repeated_categories_are_merged_keeping_every_label() {
    let p = scratch().join("dup_cats.h5ad");
    // Categories "T", "B", "T": codes 0 and 2 are both "T".
    small_h5ad(&p, &["g0", "g1", "g2", "g3"], |fb| {
        frame(
            fb,
            "obs",
            &CELLS,
            Some(("cell_type", &[0, 1, 2, -1, 2, 0], &["T", "B", "T"])),
        )
    });
    let (a, err) = through_cli(&p);
    match a.obs_column("cell_type").unwrap() {
        Column::Categorical { codes, categories } => {
            assert_eq!(categories, &["T", "B"]);
            assert_eq!(codes, &[0, 1, 0, -1, 0, 0]);
        }
        other => panic!("cell_type is not categorical: {other:?}"),
    }
    assert!(
        err.contains("warning:") && err.contains("obs/cell_type") && err.contains("\"T\""),
        "expected a warning naming the column and the repeated category:\n{err}"
    );
}

#[test]
fn empty_and_multiline_gene_names_are_kept_as_stored() {
    let p = scratch().join("odd_names.h5ad");
    let genes = ["", "two\nlines", "tab\there", " padded "];
    small_h5ad(&p, &genes, |fb| frame(fb, "obs", &CELLS, None));
    let (a, _) = through_cli(&p);
    assert_eq!(a.var_names, genes);
    assert_eq!(x_of(&p), counts().3);
}

/// `$CELLDIFF_PYTHON` (else `python3`) if it imports h5py, or why not.
fn python_with_h5py() -> Result<String, String> {
    let py = std::env::var("CELLDIFF_PYTHON").unwrap_or_else(|_| "python3".into());
    match Command::new(&py).args(["-c", "import h5py"]).output() {
        Ok(o) if o.status.success() => Ok(py),
        Ok(o) => Err(format!(
            "{py} cannot import h5py: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("no {py}: {e}")),
    }
}

#[test]
fn x_stored_as_a_soft_link_to_a_layer_is_read() {
    let py = match python_with_h5py() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping the soft-link test: {why} (h5py writes the fixture)");
            return;
        }
    };
    let dir = scratch();
    // h5py's default (old-style) groups, as anndata writes them; `X` and a dense layer are
    // soft links to `layers/counts` (sparse) and `layers/dense` (relative target).
    let script = r#"
import sys, h5py, numpy as np
def enc(o, t, v):
    o.attrs["encoding-type"] = t
    o.attrs["encoding-version"] = v
with h5py.File(sys.argv[1], "w") as f:
    enc(f, "anndata", "0.1.0")
    ly = f.create_group("layers"); enc(ly, "dict", "0.1.0")
    c = ly.create_group("counts"); enc(c, "csr_matrix", "0.1.0")
    c.attrs["shape"] = np.array([2, 3])
    c["data"] = np.array([1, 2, 3], dtype=np.float32)
    c["indices"] = np.array([0, 2, 1], dtype=np.int32)
    c["indptr"] = np.array([0, 2, 3], dtype=np.int32)
    d = ly.create_dataset("dense", data=np.array([[5, 0, 0], [0, 0, 6]], dtype=np.float32))
    enc(d, "array", "0.2.0")
    ly["alias"] = h5py.SoftLink("dense")
    f["X"] = h5py.SoftLink("/layers/counts")
    for name, idx in (("obs", ["c0", "c1"]), ("var", ["g0", "g1", "g2"])):
        g = f.create_group(name); enc(g, "dataframe", "0.2.0")
        g.attrs["_index"] = "_index"
        g.attrs["column-order"] = np.array([], dtype=h5py.string_dtype())
        g.create_dataset("_index", data=np.array(idx, dtype=h5py.string_dtype()))
"#;
    let p = dir.join("soft_link.h5ad");
    let o = Command::new(&py)
        .args(["-c", script, p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, _) = through_cli(&p);
    assert_eq!(x_of(&p), [1.0, 0.0, 2.0, 0.0, 3.0, 0.0]);
    assert_eq!(a.var_names, ["g0", "g1", "g2"]);
    // The library reader sees the linked layer too (under both names).
    let direct = read_h5ad(&p, &ReadOptions::default()).unwrap();
    let layer = |name: &str| {
        let m = &direct.layers.iter().find(|(k, _)| k == name).expect(name).1;
        dense(m)
    };
    assert_eq!(layer("dense"), layer("alias"));
    let alias = layer("alias");
    assert_eq!(alias, [5.0, 0.0, 0.0, 0.0, 0.0, 6.0]);
    // The streaming reader cannot follow the link and says so.
    let run = dir.join("run");
    let o = celldiff([
        "train",
        "--data",
        p.to_str().unwrap(),
        "--stream",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["soft_link.h5ad", "soft link", "leave out --stream"]);
    assert!(!run.exists());
}
