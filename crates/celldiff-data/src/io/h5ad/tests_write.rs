//! Tests of the `.h5ad` writer: round trips of a small AnnData with every column type through
//! our reader and through anndata (where Python is found), and `obsp` graphs.

use super::tests::{format_field, python};
use super::*;

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
