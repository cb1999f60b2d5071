//! `celldiff identify` and `celldiff identify-bench` end to end on the embedded demo data
//! (pbmc68k_reduced raw counts, 700 cells): the documented outputs, agreement of the DiffVAE
//! clusters with the file's cell-type labels, overwrite protection and bad flags.

use std::path::Path;

use celldiff::anndata::Column;
use celldiff::io::{ReadOptions, read};

use crate::common::{assert_bad_input, assert_ok, celldiff, demo_h5ad, scratch};

/// Small, fast network and t-SNE settings.
const FAST: &[&str] = &[
    "--epochs",
    "3",
    "--latent",
    "10",
    "--hidden",
    "64,32",
    "--tsne-epochs",
    "250",
    "--kmeans-n-init",
    "2",
];

fn read_h5ad(p: &Path) -> celldiff::AnnData {
    read(p, &ReadOptions::default()).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn identify(extra: &[&str], out: &Path) -> std::process::Output {
    let demo = demo_h5ad();
    let mut args = vec![
        "identify",
        "--data",
        demo.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    celldiff(&args)
}

fn obsm<'a>(a: &'a celldiff::AnnData, key: &str) -> &'a celldiff::DenseMatrix {
    &a.obsm
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("obsm['{key}'] missing"))
        .1
}

fn stdout_json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).expect("one JSON line")
}

#[test]
fn identify_writes_the_documented_keys_and_tsvs() {
    let dir = scratch();
    let out = dir.join("ident.h5ad");
    let mut args = FAST.to_vec();
    args.extend([
        "--n-clusters",
        "4",
        "--top-dimensions",
        "3",
        "--top-genes",
        "5",
        "--seed",
        "0",
    ]);
    let o = identify(&args, &out);
    assert_ok(&o);
    let summary = stdout_json(&o);
    assert_eq!(summary["n_clusters"], 4);
    let a = read_h5ad(&out);
    let input = read_h5ad(&demo_h5ad());
    // The input as read (all genes, counts untouched) plus the new keys.
    assert_eq!(a.x.shape(), input.x.shape());
    assert_eq!(a.var_names, input.var_names);
    match a.obs_column("celldiff_cluster").unwrap() {
        Column::Categorical { codes, categories } => {
            assert_eq!(categories, &["0", "1", "2", "3"]);
            assert!(codes.iter().all(|&c| (0..4).contains(&c)));
        }
        other => panic!("obs['celldiff_cluster'] is not categorical: {other:?}"),
    }
    let z = obsm(&a, "X_celldiff");
    assert_eq!((z.n_rows, z.n_cols), (700, 10));
    let t = obsm(&a, "X_tsne");
    assert_eq!((t.n_rows, t.n_cols), (700, 2));
    assert!(t.data.iter().all(|v| v.is_finite()));
    let uns = &a.uns["celldiff_identify"];
    assert_eq!(uns["params"]["latent_model"], "diffvae");
    assert_eq!(uns["params"]["clustering"], "kmeans");
    assert_eq!(uns["params"]["on"], "latent");
    assert_eq!(uns["params"]["n_latent"], 10);
    assert_eq!(uns["params"]["epochs"], 3);
    assert_eq!(uns["params"]["seed"], 0);
    assert_eq!(uns["n_clusters"], 4);
    let c0 = &uns["clusters"]["0"];
    assert_eq!(c0["dimensions"].as_array().unwrap().len(), 3);
    assert_eq!(c0["shares"].as_array().unwrap().len(), 3);
    let d0 = c0["dimensions"][0].as_i64().unwrap().to_string();
    assert_eq!(
        c0["high_weight_genes"][d0.as_str()]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    // The TSVs beside the output.
    let dims = std::fs::read_to_string(dir.join("ident_dimensions.tsv")).unwrap();
    let mut lines = dims.lines();
    assert_eq!(
        lines.next().unwrap(),
        "cluster\trank\tdimension\tshare\tn_cluster_extreme\tn_extreme"
    );
    assert_eq!(lines.count(), 4 * 3);
    let genes = std::fs::read_to_string(dir.join("ident_genes.tsv")).unwrap();
    let mut lines = genes.lines();
    assert_eq!(
        lines.next().unwrap(),
        "cluster\tdimension\tgene\tweight\tshared"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 4 * 3 * 5);
    for r in &rows {
        assert_eq!(r.len(), 5);
        assert!(input.var_names.iter().any(|g| g == r[2]), "{r:?}");
        r[3].parse::<f32>().unwrap();
        assert!(r[4] == "true" || r[4] == "false");
    }
    // Same seed, same clusters and layout.
    let out2 = dir.join("again.h5ad");
    assert_ok(&identify(&args, &out2));
    let b = read_h5ad(&out2);
    assert_eq!(
        a.obs_column("celldiff_cluster").unwrap(),
        b.obs_column("celldiff_cluster").unwrap()
    );
    assert_eq!(obsm(&a, "X_celldiff"), obsm(&b, "X_celldiff"));
    assert_eq!(obsm(&a, "X_tsne"), obsm(&b, "X_tsne"));
}

#[test]
fn identify_diffvae_kmeans_agrees_with_bulk_labels() {
    // The published network (512-256-50) and k = 10 bulk_labels, 20 epochs.
    let out = scratch().join("diffvae.h5ad");
    let o = identify(
        &[
            "--labels-key",
            "bulk_labels",
            "--epochs",
            "20",
            "--tsne-epochs",
            "250",
            "--seed",
            "0",
        ],
        &out,
    );
    assert_ok(&o);
    let s = stdout_json(&o);
    let ari = s["ari"].as_f64().unwrap();
    eprintln!("DiffVAE (20 epochs) k-means ARI vs bulk_labels = {ari:.3}");
    assert_eq!(s["n_clusters"], 10);
    assert!(ari > 0.3, "ARI {ari}");
    let a = read_h5ad(&out);
    let uns = &a.uns["celldiff_identify"];
    assert_eq!(uns["params"]["labels_key"], "bulk_labels");
    assert!((uns["ari"].as_f64().unwrap() - ari).abs() < 1e-12);
    assert_eq!(uns["n_labelled"], 700);
}

#[test]
fn identify_dbscan_on_the_tsne_labels_noise() {
    let out = scratch().join("dbscan.h5ad");
    let o = identify(
        &[
            "--latent-model",
            "pca",
            "--latent",
            "20",
            "--tsne-epochs",
            "250",
            "--dbscan-eps",
            "auto",
            "--eps-quantile",
            "0.5",
            "--on",
            "tsne",
        ],
        &out,
    );
    assert_ok(&o);
    let s = stdout_json(&o);
    let n = s["n_clusters"].as_u64().unwrap() as usize;
    let noise = s["n_noise"].as_u64().unwrap();
    assert!(n >= 2 && noise > 0, "{s}");
    let a = read_h5ad(&out);
    match a.obs_column("celldiff_cluster").unwrap() {
        Column::Categorical { categories, .. } => {
            assert_eq!(categories.len(), n + 1);
            assert_eq!(categories.last().unwrap(), "noise");
        }
        other => panic!("not categorical: {other:?}"),
    }
    let uns = &a.uns["celldiff_identify"];
    assert_eq!(uns["params"]["clustering"], "dbscan");
    assert_eq!(uns["params"]["dbscan_min_samples"], 5);
    assert!(uns["params"]["dbscan_eps"].as_f64().unwrap() > 0.0);
}

#[test]
fn identify_refuses_to_overwrite_without_force() {
    let dir = scratch();
    let out = dir.join("o.h5ad");
    let pca = [
        "--latent-model",
        "pca",
        "--n-clusters",
        "3",
        "--tsne-epochs",
        "250",
    ];
    std::fs::write(&out, "keep me").unwrap();
    let o = identify(&pca, &out);
    assert_bad_input(&o, &["already exists", "--force"]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    assert!(!dir.join("o_dimensions.tsv").exists());
    // A TSV sibling alone also blocks the run, and nothing is written.
    let out2 = dir.join("p.h5ad");
    std::fs::write(dir.join("p_genes.tsv"), "old").unwrap();
    let o = identify(&pca, &out2);
    assert_bad_input(&o, &["p_genes.tsv", "already exists"]);
    assert!(!out2.exists());
    assert!(!dir.join("p_dimensions.tsv").exists());
    // --force replaces all three.
    assert_ok(&identify(&[&pca[..], &["--force"]].concat(), &out));
    read_h5ad(&out);
    assert!(dir.join("o_dimensions.tsv").exists() && dir.join("o_genes.tsv").exists());
}

#[test]
fn identify_bad_flags_exit_2_with_a_clear_message() {
    let dir = scratch();
    let out = dir.join("bad.h5ad");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--n-clusters", "3", "--dbscan-eps", "0.5"],
            &["--n-clusters", "--dbscan-eps", "cannot be used with"],
        ),
        (
            &["--latent-model", "scvi", "--n-clusters", "3"],
            &[
                "--latent-model",
                "invalid value 'scvi'",
                "possible values: diffvae, vae, ae, pca",
            ],
        ),
        (&["--n-clusters", "0"], &["--n-clusters must be at least 1"]),
        (&[], &["--n-clusters", "--labels-key", "--dbscan-eps"]),
        (
            &["--dbscan-eps", "-1"],
            &["--dbscan-eps", "positive number or `auto`"],
        ),
        (
            &["--dbscan-eps", "auto", "--on", "umap"],
            &[
                "--on",
                "invalid value 'umap'",
                "possible values: latent, tsne",
            ],
        ),
        (
            &["--n-clusters", "3", "--latent", "0"],
            &["--latent must be at least 1"],
        ),
        (
            &["--n-clusters", "3", "--hidden", "64"],
            &["--hidden", "two widths"],
        ),
        (
            &["--labels-key", "no_such_key"],
            &["--labels-key", "no_such_key", "bulk_labels"],
        ),
        (
            &["--n-clusters", "701", "--latent-model", "pca"],
            &["701 clusters", "700 cells"],
        ),
    ];
    for (flags, needles) in cases {
        let o = identify(flags, &out);
        assert_bad_input(&o, needles);
        assert!(!out.exists(), "{flags:?} left an output");
        assert!(!dir.join("bad_genes.tsv").exists(), "{flags:?} left a TSV");
    }
}

#[test]
fn identify_bench_writes_results_and_table() {
    let dir = scratch().join("bench");
    let demo = demo_h5ad();
    let o = celldiff([
        "identify-bench",
        "--data",
        demo.to_str().unwrap(),
        "--labels-key",
        "bulk_labels",
        "--repeats",
        "2",
        "--latent-sizes",
        "5",
        "--models",
        "ae,pca",
        "--epochs",
        "1",
        "--hidden",
        "32,16",
        "--tsne-epochs",
        "250",
        "--kmeans-n-init",
        "1",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_ok(&o);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let cells = r["cells"].as_array().unwrap();
    assert_eq!(
        cells.len(),
        2 * 4,
        "2 models × {{k-means, DBSCAN}} × {{latent, t-SNE}}"
    );
    for c in cells {
        assert_eq!(c["ari"].as_array().unwrap().len(), 2);
        assert!(c["sd"].as_f64().is_some());
        assert!(c["mean"].as_f64().unwrap().is_finite());
    }
    assert_eq!(r["n_labels"], 10);
    let md = std::fs::read_to_string(dir.join("table.md")).unwrap();
    assert!(
        md.contains("| ae | 5 |") && md.contains("| pca | 5 |"),
        "{md}"
    );
    assert!(md.contains(" ± "), "{md}");
    // Existing outputs are kept without --force.
    let o = celldiff([
        "identify-bench",
        "--data",
        demo.to_str().unwrap(),
        "--labels-key",
        "bulk_labels",
        "--models",
        "pca",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["already exists"]);
    let o = celldiff([
        "identify-bench",
        "--data",
        demo.to_str().unwrap(),
        "--labels-key",
        "bulk_labels",
        "--models",
        "umap",
        "-o",
        scratch().join("b2").to_str().unwrap(),
    ]);
    assert_bad_input(
        &o,
        &["--models", "invalid value 'umap'", "diffvae, vae, ae, pca"],
    );
}
