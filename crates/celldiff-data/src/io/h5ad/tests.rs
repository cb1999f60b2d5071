//! Tests of the `.h5ad` reader and writer (round trips through anndata where Python is found).
//!
//! This file holds the reader tests (shared files, options, hand-built and corrupt files); the
//! writer, the round trips through anndata and `obsp` are tested in `tests_write.rs`.

/// The Python interpreter for the anndata round-trip tests: `$CELLDIFF_PYTHON` (set by
/// `.ci/run` when it installs anndata into a venv) or `python3`.
pub(super) fn python() -> String {
    std::env::var("CELLDIFF_PYTHON").unwrap_or_else(|_| "python3".into())
}

use super::decode::merge_duplicate_categories;
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

pub(super) fn format_field(e: Error) -> (String, String) {
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

/// anndata ≥ 0.13 with pandas' string dtype writes the row names as a
/// `nullable-string-array` group (`values` + `mask`), as `obs/_index` of
/// `anndata.AnnData(X, obs=pd.DataFrame(index=pd.Index(["a", "b"], dtype="string")))
/// .write_h5ad(p)`; another encoding in that place is a named error.
#[test]
fn reads_row_names_stored_as_a_nullable_string_array() {
    let tmp = tempfile::tempdir().unwrap();
    let file = |name: &str, enc: &'static str| {
        raw_file(tmp.path(), name, move |fb| {
            fb.create_dataset("X")
                .with_f32_data(&[1.0, 2.0])
                .with_shape(&[2, 1]);
            let mut g = fb.create_group("obs");
            set_enc_group(&mut g, "dataframe", "0.2.0");
            g.set_attr("_index", vstr("_index"));
            let mut i = g.create_group("_index");
            set_enc_group(&mut i, enc, "0.1.0");
            i.create_dataset("values")
                .with_vlen_strings(&["cell_a", "cell_b"]);
            i.create_dataset("mask").with_i8_data(&[0, 0]);
            g.add_group(i.finish());
            fb.add_group(g.finish());
        })
    };
    let a = read_h5ad(
        &file("ok.h5ad", "nullable-string-array"),
        &ReadOptions::default(),
    )
    .unwrap();
    assert_eq!(a.obs_names, ["cell_a", "cell_b"]);
    let e = read_h5ad(&file("bad.h5ad", "categorical"), &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("obs/_index") && e.contains("nullable-string-array"),
        "{e}"
    );
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
            Box::new(|fb| sparse_group(fb, "csr_matrix", [3, 3], &[0, 1, 2], &[0, 1], &[1.0, 1.0])),
            "X/indptr",
            "expected n_rows + 1",
        ),
        (
            "index_out_of_range",
            Box::new(|fb| sparse_group(fb, "csr_matrix", [2, 3], &[0, 1, 2], &[0, 7], &[1.0, 1.0])),
            "X/indices",
            "expected 0 <= index < n_cols",
        ),
        (
            "indptr_past_data",
            Box::new(|fb| sparse_group(fb, "csr_matrix", [2, 3], &[0, 1, 5], &[0, 1], &[1.0, 1.0])),
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
