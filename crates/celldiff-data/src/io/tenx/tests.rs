//! Tests of the 10x reader: the shared 10x folders against their `.h5ad` twins, small
//! hand-written folders, `make_unique`, and malformed input.

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
