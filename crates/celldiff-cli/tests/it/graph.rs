//! `celldiff graph` (Graph-DiffVAE) end to end on the embedded demo data: node embedding,
//! predicted links in `obsp` and the TSV, held-out AUC/AP in `uns`, threshold mode,
//! reproducibility, overwrite protection and bad flags.

use std::path::{Path, PathBuf};

use celldiff::io::h5ad::{read_obsp, write_h5ad_with_obsp};
use celldiff::io::{ReadOptions, read};
use sprs::CsMat;

use crate::common::{assert_bad_input, assert_ok, celldiff, demo_h5ad, scratch};

/// Small, fast settings (the defaults are 200 epochs, 512 hidden, 50 latent, 2000 genes).
const FAST: &[&str] = &[
    "--epochs",
    "20",
    "--lr",
    "0.01",
    "--hidden",
    "64",
    "--latent",
    "16",
    "--n-top-genes",
    "500",
];

pub(crate) fn graph_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "graph".into(),
        "--data".into(),
        demo_h5ad().display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    // FAST flags that `extra` sets again are left out (clap rejects repeated flags).
    for pair in FAST.chunks(2) {
        if !extra.contains(&pair[0]) {
            v.extend(pair.iter().map(|s| s.to_string()));
        }
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn tsv_of(out: &Path) -> PathBuf {
    let stem = out.file_stem().unwrap().to_string_lossy().into_owned();
    out.with_file_name(format!("{stem}_links.tsv"))
}

fn obsp(path: &Path, n: usize, name: &str) -> CsMat<f32> {
    read_obsp(path, n)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no obsp['{name}']"))
        .1
}

fn assert_symmetric(m: &CsMat<f32>) {
    for (i, row) in m.outer_iterator().enumerate() {
        assert!(row.get(i).is_none(), "diagonal entry at {i}");
        for (j, &v) in row.iter() {
            assert_eq!(m.get(j, i), Some(&v), "({i}, {j}) not symmetric");
        }
    }
}

#[test]
fn graph_writes_embedding_links_tsv_and_heldout_metrics() {
    let dir = scratch();
    let out = dir.join("graph.h5ad");
    let o = celldiff(graph_args(&out, &["--seed", "1"]));
    assert_ok(&o);
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).expect("one JSON line");
    let a = read(&out, &ReadOptions::default()).unwrap();
    let input = read(&demo_h5ad(), &ReadOptions::default()).unwrap();
    // The input as read (all genes) plus the graph outputs.
    assert_eq!(a.x.shape(), input.x.shape());
    assert_eq!(a.obs_names, input.obs_names);
    let obsm = |k: &str| a.obsm.iter().find(|(n, _)| n == k).expect(k).1.clone();
    let z = obsm("X_graph");
    assert_eq!((z.n_rows, z.n_cols), (700, 16));
    assert!(z.data.iter().all(|v| v.is_finite()));
    assert_eq!(obsm("X_graph_mu").n_cols, 16);
    // Predicted links: symmetric probabilities, every cell with at least its top 5.
    let links = obsp(&out, 700, "celldiff_links");
    assert_eq!(links.shape(), (700, 700));
    assert_symmetric(&links);
    assert!(links.outer_iterator().all(|r| r.nnz() >= 5));
    assert!(links.data().iter().all(|&p| p > 0.0 && p <= 1.0));
    // The probabilities are σ(z*_i · z*_j) of obsm['X_graph'].
    let (i, row) = links.outer_iterator().enumerate().nth(10).unwrap();
    for (j, &p) in row.iter() {
        let dot: f64 = z
            .row(i)
            .iter()
            .zip(z.row(j))
            .map(|(&x, &y)| (x * y) as f64)
            .sum();
        let want = 1.0 / (1.0 + (-dot).exp());
        assert!(
            (p as f64 - want).abs() < 1e-4,
            "p({i},{j}) = {p}, σ = {want}"
        );
    }
    let input_graph = obsp(&out, 700, "celldiff_graph_input");
    assert_symmetric(&input_graph);
    assert!(input_graph.data().iter().all(|&v| v == 1.0));
    // Every cell has at least its most correlated partner.
    assert!(input_graph.outer_iterator().all(|r| r.nnz() >= 1));
    // uns: parameters, held-out scores, per-epoch losses.
    let u = &a.uns["celldiff_graph"];
    assert_eq!(u["params"]["k"].as_f64(), Some(1.0));
    assert_eq!(u["params"]["epochs"].as_f64(), Some(20.0));
    assert_eq!(u["params"]["top_k_links"].as_f64(), Some(5.0));
    assert_eq!(u["params"]["link_mode"], "top_k");
    let auc = u["test_auc"].as_f64().expect("test_auc");
    let ap = u["test_ap"].as_f64().expect("test_ap");
    assert!((0.0..=1.0).contains(&auc) && (0.0..=1.0).contains(&ap));
    assert!(u["val_auc"].as_f64().is_some() && u["val_ap"].as_f64().is_some());
    // The features' own correlation on the same test pairs, for reference.
    let auc_corr = u["test_auc_correlation"]
        .as_f64()
        .expect("correlation baseline");
    assert!(auc_corr > 0.5, "{auc_corr}");
    assert!(u["test_ap_correlation"].as_f64().is_some());
    let n_edges = u["n_edges"].as_f64().unwrap() as usize;
    assert_eq!(n_edges, input_graph.nnz() / 2);
    assert_eq!(u["n_test_edges"].as_f64().unwrap() as usize, n_edges / 10);
    let loss: Vec<f64> = u["loss"]
        .as_array()
        .expect("loss per epoch")
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(loss.len(), 20);
    assert!(loss[19] < loss[0], "loss {} -> {}", loss[0], loss[19]);
    assert_eq!(line["test_auc"].as_f64(), Some(auc));
    eprintln!(
        "demo, 20 epochs at lr 0.01: test AUC {auc:.3}, AP {ap:.3}, loss {:.3} -> {:.3}",
        loss[0], loss[19]
    );
    // The TSV lists each undirected link once, by cell name, with its probability.
    let tsv = std::fs::read_to_string(tsv_of(&out)).unwrap();
    let mut lines = tsv.lines();
    assert_eq!(
        lines.next(),
        Some("cell_i\tcell_j\tprobability\tin_input_graph")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), links.nnz() / 2);
    let index = |name: &str| a.obs_names.iter().position(|n| n == name).unwrap();
    for r in rows.iter().step_by(50) {
        let (i, j) = (index(r[0]), index(r[1]));
        let p: f32 = r[2].parse().unwrap();
        assert!((links.get(i, j).copied().unwrap() - p).abs() < 1e-5);
        assert_eq!(r[3] == "1", input_graph.get(i, j).is_some());
    }
    // The same seed reproduces the outputs exactly.
    let again = dir.join("again.h5ad");
    assert_ok(&celldiff(graph_args(&again, &["--seed", "1"])));
    assert_eq!(std::fs::read_to_string(tsv_of(&again)).unwrap(), tsv);
}

#[test]
fn graph_threshold_mode_keeps_only_probable_links_and_the_input_obsp() {
    let dir = scratch();
    // The demo data with an obsp matrix of its own (as scanpy's connectivities).
    let input = dir.join("with_obsp.h5ad");
    let demo = read(&demo_h5ad(), &ReadOptions::default()).unwrap();
    let theirs = CsMat::new(
        (700, 700),
        (0..=700).collect(),
        (0..700).rev().collect(),
        vec![0.5; 700],
    );
    write_h5ad_with_obsp(&input, &demo, &[("connectivities".into(), theirs.clone())]).unwrap();
    let out = dir.join("thr.h5ad");
    // --dense-max-cells 0: the sampled (edges + non-edges) loss of large datasets.
    let mut args = graph_args(
        &out,
        &[
            "--epochs",
            "5",
            "--threshold",
            "0.9",
            "--k",
            "2",
            "--dense-max-cells",
            "0",
        ],
    );
    args[2] = input.display().to_string();
    assert_ok(&celldiff(args));
    assert_eq!(obsp(&out, 700, "connectivities"), theirs);
    let links = obsp(&out, 700, "celldiff_links");
    assert_symmetric(&links);
    assert!(links.data().iter().all(|&p| p >= 0.9));
    let a = read(&out, &ReadOptions::default()).unwrap();
    let u = &a.uns["celldiff_graph"];
    assert_eq!(u["params"]["link_mode"], "threshold");
    assert_eq!(u["params"]["threshold"].as_f64(), Some(0.9));
    assert_eq!(u["params"]["k"].as_f64(), Some(2.0));
    assert!(u["params"].get("top_k_links").is_none());
    let dense = &u["dense_loss"];
    assert!(
        dense.as_bool() == Some(false) || dense.as_f64() == Some(0.0),
        "{dense}"
    );
    assert!(u["negatives_per_epoch"].as_f64().unwrap() > 700.0);
    assert!(u["test_auc"].as_f64().is_some());
    assert!(tsv_of(&out).exists());
}

#[test]
fn graph_refuses_overwrite_and_rejects_bad_flags() {
    let dir = scratch();
    let out = dir.join("g.h5ad");
    let tsv = tsv_of(&out);
    for (flags, needles) in [
        (vec!["--k", "0"], vec!["--k", "at least 1"]),
        (vec!["--epochs", "0"], vec!["--epochs", "at least 1"]),
        (vec!["--lr", "0"], vec!["--lr", "positive"]),
        (
            vec!["--threshold", "1.5"],
            vec!["--threshold", "between 0 and 1"],
        ),
        (
            vec!["--top-k-links", "0"],
            vec!["--top-k-links", "at least 1"],
        ),
        (vec!["--k", "700"], vec!["--k 700", "700 cells"]),
        (
            vec!["--threshold", "0.5", "--top-k-links", "3"],
            vec!["--threshold", "--top-k-links"],
        ),
    ] {
        let o = celldiff(graph_args(&out, &flags));
        assert_bad_input(&o, &needles);
        assert!(!out.exists() && !tsv.exists(), "no output for {flags:?}");
    }
    let missing = dir.join("nope.h5ad");
    let o = celldiff([
        "graph",
        "--data",
        missing.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["nope.h5ad"]);
    assert!(!out.exists() && !tsv.exists());
    // An existing output (or just its TSV) is never overwritten without --force.
    std::fs::write(&out, b"previous").unwrap();
    let o = celldiff(graph_args(&out, &["--epochs", "1"]));
    assert_bad_input(&o, &["already exists", "--force"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    assert!(!tsv.exists());
    std::fs::remove_file(&out).unwrap();
    std::fs::write(&tsv, b"old links").unwrap();
    let o = celldiff(graph_args(&out, &["--epochs", "1"]));
    assert_bad_input(&o, &["g_links.tsv", "already exists"]);
    assert!(!out.exists());
    assert_eq!(std::fs::read(&tsv).unwrap(), b"old links");
    // --force replaces both.
    assert_ok(&celldiff(graph_args(&out, &["--epochs", "1", "--force"])));
    assert!(out.exists());
    assert!(
        std::fs::read_to_string(&tsv)
            .unwrap()
            .starts_with("cell_i\t")
    );
}
