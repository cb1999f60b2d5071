//! `celldiff cluster` end to end on pbmc68k_reduced raw counts: labels, PCA, UMAP, `uns`
//! parameters, agreement with the file's own cell-type labels, overwrite protection and bad
//! input.

use std::path::Path;

use celldiff::anndata::Column;
use celldiff::io::{ReadOptions, read};
use celldiff::tl::leiden::adjusted_rand_index;

use crate::common::{assert_bad_input, assert_ok, celldiff, scratch, shared_data};

fn pbmc() -> std::path::PathBuf {
    shared_data("pbmc68k_reduced/pbmc68k_reduced_counts.h5ad")
}

fn read_h5ad(p: &Path) -> celldiff::AnnData {
    read(p, &ReadOptions::default()).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Category codes of a categorical `obs` column, as cluster ids.
fn codes(a: &celldiff::AnnData, key: &str) -> (Vec<usize>, Vec<String>) {
    match a.obs_column(key).unwrap() {
        Column::Categorical { codes, categories } => (
            codes
                .iter()
                .map(|&c| usize::try_from(c).expect("no missing labels"))
                .collect(),
            categories.clone(),
        ),
        other => panic!("obs['{key}'] is not categorical: {other:?}"),
    }
}

#[test]
fn cluster_writes_leiden_labels_pca_and_umap() {
    let out = scratch().join("clustered.h5ad");
    let o = celldiff([
        "cluster",
        "--data",
        pbmc().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--umap",
    ]);
    assert_ok(&o);
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).expect("one JSON line");
    let a = read_h5ad(&out);
    let input = read_h5ad(&pbmc());
    // The input as read: all cells, all genes, counts untouched.
    assert_eq!(a.x.shape(), input.x.shape());
    assert_eq!(a.var_names, input.var_names);
    let (labels, cats) = codes(&a, "leiden");
    let n_clusters = cats.len();
    assert!(n_clusters > 1, "{n_clusters} clusters");
    assert_eq!(
        cats,
        (0..n_clusters).map(|c| c.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(summary["n_clusters"], n_clusters);
    assert_eq!(summary["n_cells"], 700);
    // Cluster 0 is the largest.
    let sizes: Vec<u64> = summary["cluster_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    assert_eq!(
        sizes[0] as usize,
        labels.iter().filter(|&&l| l == 0).count()
    );
    let pca = &a.obsm.iter().find(|(k, _)| k == "X_pca").expect("X_pca").1;
    assert_eq!((pca.n_rows, pca.n_cols), (700, 50));
    let um = &a
        .obsm
        .iter()
        .find(|(k, _)| k == "X_umap")
        .expect("X_umap")
        .1;
    assert_eq!((um.n_rows, um.n_cols), (700, 2));
    let params = &a.uns["leiden"]["params"];
    assert_eq!(params["resolution"].as_f64(), Some(1.0));
    assert_eq!(params["n_neighbors"].as_f64(), Some(15.0));
    assert_eq!(params["flavor"], "leiden");
    assert_eq!(
        a.uns["leiden"]["n_clusters"].as_f64(),
        Some(n_clusters as f64)
    );
    // Leiden clusters recover the curated cell types to a good degree.
    let bulk = input.obs_column("bulk_labels").unwrap().labels();
    let mut names: Vec<&String> = bulk.iter().collect();
    names.sort();
    names.dedup();
    let truth: Vec<usize> = bulk
        .iter()
        .map(|l| names.binary_search(&l).unwrap())
        .collect();
    let ari = adjusted_rand_index(&labels, &truth).unwrap();
    eprintln!(
        "pbmc68k: {n_clusters} Leiden clusters, ARI vs bulk_labels = {ari:.3}, {:.1}s",
        summary["seconds"].as_f64().unwrap()
    );
    assert!(ari > 0.3, "ARI vs bulk_labels {ari}");
}

#[test]
fn cluster_louvain_key_and_overwrite_protection() {
    let out = scratch().join("louvain.h5ad");
    let args = |force: bool| {
        let mut v = vec![
            "cluster".to_string(),
            "--data".into(),
            pbmc().display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "--flavor".into(),
            "louvain".into(),
            "--resolution".into(),
            "0.5".into(),
            "--n-top-genes".into(),
            "0".into(),
            "--seed".into(),
            "3".into(),
        ];
        if force {
            v.push("--force".into());
        }
        v
    };
    assert_ok(&celldiff(args(false)));
    let a = read_h5ad(&out);
    let (labels, cats) = codes(&a, "louvain");
    assert!(cats.len() > 1);
    assert!(a.obs_column("leiden").is_err());
    // Without --umap an existing obsm['X_umap'] of the input (pbmc68k has scanpy's) is kept.
    let input = read_h5ad(&pbmc());
    let umap_of = |x: &celldiff::AnnData| x.obsm.iter().find(|(k, _)| k == "X_umap").cloned();
    assert_eq!(umap_of(&a), umap_of(&input));
    assert_eq!(a.uns["louvain"]["params"]["flavor"], "louvain");
    let before = std::fs::read(&out).unwrap();
    assert_bad_input(&celldiff(args(false)), &["already exists", "--force"]);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "output left untouched"
    );
    // --force rewrites it, and the same seed reproduces the labels.
    assert_ok(&celldiff(args(true)));
    assert_eq!(codes(&read_h5ad(&out), "louvain").0, labels);
}

#[test]
fn cluster_rejects_bad_resolution_flavor_and_missing_file() {
    let dir = scratch();
    let out = dir.join("c.h5ad");
    for r in ["0", "-1"] {
        let o = celldiff([
            "cluster",
            "--data",
            pbmc().to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--resolution",
            r,
        ]);
        assert_bad_input(&o, &["--resolution", "positive"]);
        assert!(!out.exists());
    }
    let o = celldiff([
        "cluster",
        "--data",
        pbmc().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--flavor",
        "kmeans",
    ]);
    assert_bad_input(
        &o,
        &["--flavor", "kmeans", "possible values: leiden, louvain"],
    );
    let missing = dir.join("nope.h5ad");
    let o = celldiff([
        "cluster",
        "--data",
        missing.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["nope.h5ad"]);
    assert!(!out.exists());
    let o = celldiff([
        "cluster",
        "--data",
        pbmc().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--n-neighbors",
        "1",
    ]);
    assert_bad_input(&o, &["n_neighbors"]);
    assert!(!out.exists());
}
