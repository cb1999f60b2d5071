//! Bad input: each case gets an error naming the file and field, exit code 2, and no output
//! file (the first issue's "Bad input" list, one test per case).

use std::path::{Path, PathBuf};

use celldiff::anndata::{AnnData, DenseMatrix, Matrix};
use hdf5_pure::{AttrValue, FileBuilder};

use crate::common::{
    assert_bad_input, assert_ok, celldiff, copy_run, demo_h5ad, scratch, tiny_run,
};

/// `celldiff preprocess --data INPUT -o OUT` must fail with exit 2 and leave no OUT.
fn preprocess_fails(input: &Path, extra: &[&str], needles: &[&str]) {
    let out = scratch().join("out.h5ad");
    let mut args = vec![
        "preprocess".to_string(),
        "--data".into(),
        input.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = celldiff(&args);
    assert_bad_input(&o, needles);
    assert!(
        !out.exists(),
        "{} was written despite the error",
        out.display()
    );
}

/// `celldiff train` on INPUT must fail with exit 2 and leave no run directory.
fn train_fails(input: &Path, extra: &[&str], needles: &[&str]) {
    let out = scratch().join("run");
    let mut args = vec![
        "train".to_string(),
        "--data".into(),
        input.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(crate::common::TINY.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = celldiff(&args);
    assert_bad_input(&o, needles);
    assert!(
        !out.exists(),
        "{} was created despite the error",
        out.display()
    );
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

fn raw_hdf5(name: &str, build: impl FnOnce(&mut FileBuilder)) -> PathBuf {
    let mut fb = FileBuilder::new();
    build(&mut fb);
    let p = scratch().join(name);
    fb.write(&p).unwrap();
    p
}

fn small_dense(values: Vec<f32>, n: usize, g: usize) -> PathBuf {
    let x = DenseMatrix::from_vec(n, g, values).unwrap();
    let a = AnnData::new(
        Matrix::Dense(x),
        (0..g).map(|j| format!("gene{j}")).collect(),
    );
    let p = scratch().join("small.h5ad");
    celldiff::io::write_h5ad(&p, &a).unwrap();
    p
}

#[test]
fn missing_file() {
    let p = scratch().join("does_not_exist.h5ad");
    preprocess_fails(&p, &[], &["does_not_exist.h5ad"]);
}

#[test]
fn not_hdf5() {
    let p = scratch().join("table.h5ad");
    std::fs::write(&p, "gene\tcount\nCD3E\t4\n").unwrap();
    preprocess_fails(&p, &[], &["table.h5ad", "expected an HDF5 file"]);
}

#[test]
fn h5ad_without_x() {
    let p = raw_hdf5("no_x.h5ad", |fb| {
        fb.create_dataset("something_else").with_f32_data(&[1.0]);
    });
    preprocess_fails(&p, &[], &["no_x.h5ad", "field `X`"]);
}

#[test]
fn unsupported_x_encoding() {
    let p = raw_hdf5("coo.h5ad", |fb| {
        let mut g = fb.create_group("X");
        g.set_attr(
            "encoding-type",
            AttrValue::VarLenString("coo_matrix".into()),
        );
        g.set_attr("encoding-version", AttrValue::VarLenString("0.1.0".into()));
        g.create_dataset("data").with_f32_data(&[1.0]);
        fb.add_group(g.finish());
    });
    preprocess_fails(&p, &[], &["coo.h5ad", "X", "coo_matrix"]);
}

#[test]
fn nan_in_x() {
    let mut v = vec![1.0f32; 6 * 4];
    v[2 * 4 + 1] = f32::NAN;
    let p = small_dense(v, 6, 4);
    preprocess_fails(&p, &[], &["small.h5ad", "NaN at (cell 2, gene 1)"]);
}

#[test]
fn inf_in_x() {
    let mut v = vec![1.0f32; 6 * 4];
    v[3] = f32::INFINITY;
    let p = small_dense(v, 6, 4);
    preprocess_fails(&p, &[], &["small.h5ad", "X"]);
}

#[test]
fn negative_values_where_counts_are_expected() {
    // seurat_v3 needs raw counts; these values are integers except one negative entry.
    let mut v: Vec<f32> = (0..40 * 5).map(|i| (i % 7) as f32).collect();
    v[17] = -3.0;
    let p = small_dense(v, 40, 5);
    preprocess_fails(
        &p,
        &["--flavor", "seurat_v3", "--n-top-genes", "2"],
        &["negative", "counts"],
    );
}

#[test]
fn zero_cells_after_filtering() {
    train_fails(
        &demo_h5ad(),
        &["--min-genes", "100000"],
        &["min_genes", "0 cells"],
    );
}

#[test]
fn zero_genes_after_filtering() {
    train_fails(
        &demo_h5ad(),
        &["--min-cells", "100000"],
        &["min_cells", "removed all 765 genes"],
    );
}

#[test]
fn labels_key_not_in_obs() {
    train_fails(
        &demo_h5ad(),
        &["--labels-key", "no_such_column"],
        &["no_such_column", "obs"],
    );
}

#[test]
fn embed_with_a_run_from_another_gene_set() {
    // The demo data restricted to its first 100 genes: most of the run's genes are missing.
    let a = celldiff::io::read(&demo_h5ad(), &Default::default()).unwrap();
    let sub = a.select_vars(&(0..100).collect::<Vec<_>>());
    let data = scratch().join("first100.h5ad");
    celldiff::io::write_h5ad(&data, &sub).unwrap();
    let out = scratch().join("embedded.h5ad");
    let o = celldiff([
        "embed".as_ref(),
        "--run".as_ref(),
        tiny_run().as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    // The error names the first missing gene of the run.
    let first_missing = &a.var_names[100];
    assert_bad_input(&o, &["first100.h5ad", "missing", first_missing]);
    assert!(!out.exists());
}

#[test]
fn generate_with_a_run_whose_gene_list_was_changed() {
    let run = copy_run(tiny_run());
    let genes: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(run.join("genes.json")).unwrap()).unwrap();
    std::fs::write(
        run.join("genes.json"),
        serde_json::to_string(&genes[10..]).unwrap(),
    )
    .unwrap();
    let out = scratch().join("gen.h5ad");
    let o = celldiff([
        "generate".as_ref(),
        "--run".as_ref(),
        run.as_os_str(),
        "-n".as_ref(),
        "10".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_bad_input(&o, &["genes.json"]);
    assert!(!out.exists());
}

fn generate_with_damaged_weights(damage: impl FnOnce(&Path)) {
    let run = copy_run(tiny_run());
    damage(&run.join("vae.bpk"));
    let out = scratch().join("gen.h5ad");
    let o = celldiff([
        "generate".as_ref(),
        "--run".as_ref(),
        run.as_os_str(),
        "-n".as_ref(),
        "10".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_bad_input(&o, &["vae.bpk", "weights"]);
    assert!(!out.exists());
}

#[test]
fn truncated_weights() {
    generate_with_damaged_weights(|p| {
        let bytes = std::fs::read(p).unwrap();
        std::fs::write(p, &bytes[..bytes.len() / 2]).unwrap();
    });
}

#[test]
fn corrupt_weights() {
    generate_with_damaged_weights(|p| {
        let mut bytes = std::fs::read(p).unwrap();
        for b in bytes.iter_mut().take(64) {
            *b ^= 0x5a;
        }
        std::fs::write(p, &bytes).unwrap();
    });
}

#[test]
fn existing_output_is_not_overwritten_without_force() {
    let out = scratch().join("keep.h5ad");
    std::fs::write(&out, b"precious").unwrap();
    let o = celldiff([
        "preprocess".as_ref(),
        "--data".as_ref(),
        demo_h5ad().as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_bad_input(&o, &["keep.h5ad", "--force"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
}

#[test]
fn simulate_refuses_zero_sizes_and_an_existing_file() {
    let dir = scratch();
    let out = dir.join("sim.h5ad");
    let o = out.display().to_string();
    assert_bad_input(
        &celldiff(["simulate", "--cells", "0", "-o", &o]),
        &["simulate", "at least 1"],
    );
    assert!(!out.exists(), "a refused simulate left {o}");
    assert_ok(&celldiff([
        "simulate", "--cells", "20", "--genes", "8", "-o", &o,
    ]));
    let before = std::fs::read(&out).unwrap();
    assert_bad_input(
        &celldiff(["simulate", "--cells", "30", "--genes", "8", "-o", &o]),
        &["already exists", "--force"],
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "the existing file was touched"
    );
}

/// A sparse `X` group with the given encoding, shape [3, 2] and row pointer `indptr`.
fn sparse_x(name: &str, encoding: &str, indptr: &[i64]) -> PathBuf {
    raw_hdf5(name, |fb| {
        let mut g = fb.create_group("X");
        g.set_attr("encoding-type", AttrValue::VarLenString(encoding.into()));
        g.set_attr("encoding-version", AttrValue::VarLenString("0.1.0".into()));
        g.set_attr("shape", AttrValue::I64Array(vec![3, 2]));
        g.create_dataset("data").with_f32_data(&[1.0, 2.0, 3.0]);
        g.create_dataset("indices").with_i64_data(&[0, 1, 0]);
        g.create_dataset("indptr").with_i64_data(indptr);
        fb.add_group(g.finish());
    })
}

fn train_stream_fails(p: &Path, needles: &[&str]) {
    let out = scratch().join("run");
    let o = celldiff([
        "train",
        "--data",
        &p.display().to_string(),
        "--stream",
        "--out",
        &out.display().to_string(),
    ]);
    assert_bad_input(&o, needles);
    assert!(
        !out.exists(),
        "a failed train --stream left {}",
        out.display()
    );
}

#[test]
fn stream_refuses_csc_x_and_a_bad_row_pointer() {
    let csc = sparse_x("csc.h5ad", "csc_matrix", &[0, 2, 3]);
    train_stream_fails(&csc, &["csc.h5ad", "`X`", "csc_matrix", "tocsr"]);
    let bad = sparse_x("bad_indptr.h5ad", "csr_matrix", &[0, 2, 1, 3]);
    train_stream_fails(&bad, &["bad_indptr.h5ad", "X/indptr", "non-decreasing"]);
}
