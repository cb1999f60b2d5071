//! `celldiff train --model scld`, `celldiff generate` on SCLD runs (conditions, guidance,
//! post-guidance) and `celldiff scld-bench`, on the embedded demo data (pbmc68k_reduced).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use celldiff::anndata::Column;
use celldiff::io::{ReadOptions, read};

use crate::common::{TINY, assert_bad_input, assert_ok, celldiff, demo_h5ad, scratch, tiny_run};

fn read_h5ad(p: &Path) -> celldiff::AnnData {
    read(p, &ReadOptions::default()).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// TINY flags, with a schedule whose ᾱ_T stays near the default's 0.08 at T = 100.
fn tiny_scld_args() -> Vec<String> {
    let mut v: Vec<String> = TINY.iter().map(|s| s.to_string()).collect();
    v.extend(["--beta-end", "0.05"].map(String::from));
    v
}

/// One tiny SCLD run on the demo data (conditions: bulk_labels), shared read-only.
pub fn tiny_scld_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = scratch().join("scld-run");
        let mut args: Vec<String> = vec![
            "train".into(),
            "--model".into(),
            "scld".into(),
            "--data".into(),
            demo_h5ad().display().to_string(),
            "--condition-key".into(),
            "bulk_labels".into(),
            "--out".into(),
            run.display().to_string(),
        ];
        args.extend(tiny_scld_args());
        assert_ok(&celldiff(&args));
        run
    })
}

fn generate(run: &Path, extra: &[&str]) -> celldiff::AnnData {
    let out = scratch().join("scld-gen.h5ad");
    let mut args: Vec<String> = vec![
        "generate".into(),
        "--run".into(),
        run.display().to_string(),
        "--sampler".into(),
        "ddim".into(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    assert_ok(&celldiff(&args));
    read_h5ad(&out)
}

fn labels(ad: &celldiff::AnnData, key: &str) -> Vec<String> {
    ad.obs_column(key).unwrap().labels()
}

#[test]
fn scld_train_writes_a_complete_run_with_conditions() {
    let run = tiny_scld_run();
    for f in [
        "config.json",
        "genes.json",
        "preprocess.json",
        "latent.json",
        "conditions.json",
        "ae.bpk",
        "denoiser.bpk",
        "denoiser_ema.bpk",
        "scorer.bpk",
        "metrics.jsonl",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model"], "scld");
    assert_eq!(cfg["condition_key"], "bulk_labels");
    let cond: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("conditions.json")).unwrap())
            .unwrap();
    // pbmc68k_reduced has 10 bulk_labels categories: 10 cluster means + the holistic mean.
    assert_eq!(cond["names"].as_array().unwrap().len(), 10);
    assert_eq!(cond["vectors"].as_array().unwrap().len(), 11);
    let total: u64 = cond["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 700);
    // The training loss of the conditional denoiser falls.
    let losses: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["stage"] == "diffusion")
        .map(|r| r["train_loss"].as_f64().unwrap())
        .collect();
    assert!(losses.last().unwrap() < &losses[0], "{losses:?}");
}

#[test]
fn scld_generate_conditions_scores_and_reproduces() {
    let run = tiny_scld_run();
    let one = generate(
        run,
        &["-n", "30", "--condition", "CD14+ Monocyte", "--seed", "4"],
    );
    assert_eq!(one.n_obs(), 30);
    assert!(
        labels(&one, "celldiff_condition")
            .iter()
            .all(|l| l == "CD14+ Monocyte")
    );
    match one.obs_column("celldiff_score").unwrap() {
        Column::Numeric(v) => assert!(v.iter().all(|s| (0.0..=1.0).contains(s))),
        c => panic!("celldiff_score is not numeric: {c:?}"),
    }
    let again = generate(
        run,
        &["-n", "30", "--condition", "CD14+ Monocyte", "--seed", "4"],
    );
    assert_eq!(one.x.to_dense(), again.x.to_dense());
    // The mix follows the training proportions (CD4+/CD25 T Reg is 68 of 700 demo cells).
    let mix = generate(
        run,
        &["-n", "100", "--condition-mix", "--post-guidance", "off"],
    );
    let treg = labels(&mix, "celldiff_condition")
        .iter()
        .filter(|l| *l == "CD4+/CD25 T Reg")
        .count();
    assert!((9..=11).contains(&treg), "{treg} T Reg cells of 100");
    assert!(mix.obs_column("celldiff_score").is_ok());
    // ω = −1 is holistic generation.
    let hol = generate(run, &["-n", "20", "--guidance", "-1"]);
    assert!(
        labels(&hol, "celldiff_condition")
            .iter()
            .all(|l| l == "holistic")
    );
}

#[test]
fn scld_generate_rejects_bad_flags_and_scvaeder_runs_reject_scld_flags() {
    let run = tiny_scld_run();
    let out = scratch().join("bad.h5ad");
    let o = celldiff([
        "generate",
        "--run",
        run.to_str().unwrap(),
        "--condition",
        "Nonexistent",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["Nonexistent", "CD14+ Monocyte"]);
    let o = celldiff([
        "generate",
        "--run",
        run.to_str().unwrap(),
        "--keep",
        "1.5",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["--keep"]);
    assert!(!out.exists());
    let o = celldiff([
        "generate",
        "--run",
        tiny_run().to_str().unwrap(),
        "--guidance",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["SCLD run"]);
    // An SCLD run given to a scVAEDer-only analysis names the model.
    let o = celldiff([
        "embed",
        "--run",
        run.to_str().unwrap(),
        "--data",
        demo_h5ad().to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["--model scld"]);
    // SCLD training needs conditions, and checks the key.
    let o = celldiff([
        "train",
        "--model",
        "scld",
        "--data",
        demo_h5ad().to_str().unwrap(),
        "--out",
        scratch().join("r").to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["--condition-key", "--leiden-resolution"]);
    let o = celldiff([
        "train",
        "--model",
        "scld",
        "--data",
        demo_h5ad().to_str().unwrap(),
        "--condition-key",
        "no_such_column",
        "--out",
        scratch().join("r").to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["no_such_column"]);
}

#[test]
fn scld_trains_on_leiden_clusters_with_unet_attention_and_a_zinb_vae_latent() {
    let run = scratch().join("scld-leiden");
    let mut args: Vec<String> = [
        "train",
        "--model",
        "scld",
        "--data",
        demo_h5ad().to_str().unwrap(),
        "--leiden-resolution",
        "0.5",
        "--latent-model",
        "vae",
        "--likelihood",
        "zinb",
        "--denoiser",
        "unet",
        "--fusion",
        "attention",
        "--no-scorer",
        "--out",
        run.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(tiny_scld_args());
    assert_ok(&celldiff(&args));
    assert!(run.join("vae.bpk").exists() && !run.join("scorer.bpk").exists());
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["condition_key"], "leiden");
    assert_eq!(cfg["denoiser"]["architecture"], "unet");
    assert_eq!(cfg["denoiser"]["fusion"], "attention");
    assert_eq!(cfg["vae"]["likelihood"], "zinb");
    let g = generate(&run, &["-n", "12", "--condition", "0"]);
    assert!(labels(&g, "celldiff_condition").iter().all(|l| l == "0"));
    assert_eq!(g.uns["celldiff"]["likelihood"], "zinb");
    assert!(
        matches!(g.x, celldiff::anndata::Matrix::Csr(_)),
        "ZINB counts in X"
    );
    // Without a Scorer there is no score, and asking for post-guidance is an error.
    assert!(g.obs_column("celldiff_score").is_err());
    let out = scratch().join("post.h5ad");
    let o = celldiff([
        "generate",
        "--run",
        run.to_str().unwrap(),
        "--post-guidance",
        "on",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["Scorer"]);
}
