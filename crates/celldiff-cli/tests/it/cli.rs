//! Every subcommand end to end: what it writes, that scanpy-facing names are right, that the
//! same seed reproduces, and that outputs are never overwritten without `--force`.

use std::path::Path;

use celldiff::anndata::Column;
use celldiff::io::{ReadOptions, read};

use crate::common::{
    TINY, assert_bad_input, assert_ok, celldiff, demo_h5ad, scratch, shared_data, tiny_run,
};

fn read_h5ad(p: &Path) -> celldiff::AnnData {
    read(p, &ReadOptions::default()).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn generate(run: &Path, extra: &[&str]) -> celldiff::AnnData {
    let out = scratch().join("gen.h5ad");
    let mut args: Vec<String> = vec![
        "generate".into(),
        "--run".into(),
        run.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    assert_ok(&celldiff(&args));
    read_h5ad(&out)
}

#[test]
fn train_writes_a_complete_run_and_losses_fall() {
    let run = tiny_run();
    for f in [
        "config.json",
        "genes.json",
        "preprocess.json",
        "latent.json",
        "vae.bpk",
        "denoiser.bpk",
        "denoiser_ema.bpk",
        "metrics.jsonl",
        "observation.json",
    ] {
        assert!(run.join(f).is_file(), "run is missing {f}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"], "scvaeder");
    assert_eq!(config["labels_key"], "bulk_labels");
    assert_eq!(config["labels"].as_array().unwrap().len(), 10);
    // ᾱ_T of the default linear 1e-5…5e-3 schedule rescaled to T = 100 is far from 0.
    assert!(config["alphas_cumprod_terminal"].as_f64().unwrap() > 0.5);
    let genes: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(run.join("genes.json")).unwrap()).unwrap();
    assert_eq!(genes.len(), 765, "pbmc68k_reduced has 765 genes, all kept");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let losses = |stage: &str| -> Vec<f64> {
        records
            .iter()
            .filter(|r| r["stage"] == stage)
            .map(|r| r["train_loss"].as_f64().unwrap())
            .collect()
    };
    let (vae, diff) = (losses("vae"), losses("diffusion"));
    assert!(!vae.is_empty() && !diff.is_empty());
    // Reconstruction dominates the VAE loss; it must fall although the KL weight warms up.
    let recon: Vec<f64> = records
        .iter()
        .filter(|r| r["stage"] == "vae")
        .map(|r| r["recon"].as_f64().unwrap())
        .collect();
    assert!(
        recon.last().unwrap() < &(0.9 * recon[0]),
        "VAE recon did not fall: {recon:?}"
    );
    assert!(
        diff.last().unwrap() < &diff[0],
        "diffusion loss did not fall: {diff:?}"
    );
}

#[test]
fn train_refuses_to_overwrite_a_run_without_force() {
    let run = tiny_run();
    let before = std::fs::read(run.join("vae.bpk")).unwrap();
    let mut args = vec![
        "train".to_string(),
        "--data".into(),
        demo_h5ad().display().to_string(),
        "--out".into(),
        run.display().to_string(),
    ];
    args.extend(TINY.iter().map(|s| s.to_string()));
    assert_bad_input(&celldiff(&args), &["already exists", "--force"]);
    assert_eq!(std::fs::read(run.join("vae.bpk")).unwrap(), before);
}

#[test]
fn generate_writes_cells_scanpy_can_use_and_is_reproducible() {
    let run = tiny_run();
    let a = generate(run, &["-n", "50", "--seed", "3"]);
    assert_eq!(a.x.shape(), (50, 765));
    let genes: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(run.join("genes.json")).unwrap()).unwrap();
    assert_eq!(a.var_names, genes);
    match a.obs_column("celldiff_source").unwrap() {
        Column::Categorical { categories, codes } => {
            assert_eq!(categories, &["generated".to_string()]);
            assert!(codes.iter().all(|&c| c == 0));
        }
        c => panic!("celldiff_source should be categorical, got {c:?}"),
    }
    let z = &a
        .obsm
        .iter()
        .find(|(k, _)| k == "X_celldiff")
        .expect("obsm X_celldiff")
        .1;
    assert_eq!((z.n_rows, z.n_cols), (50, 8));
    assert!(
        a.uns.contains_key("celldiff"),
        "uns['celldiff'] records the preprocessing"
    );
    // log1p-normalised output is non-negative and finite.
    let x = a.x.to_dense();
    assert!(x.data.iter().all(|v| v.is_finite() && *v >= 0.0));
    // Same seed → same cells; another seed → other cells.
    let b = generate(run, &["-n", "50", "--seed", "3"]);
    assert_eq!(x.data, b.x.to_dense().data);
    let c = generate(run, &["-n", "50", "--seed", "4"]);
    assert_ne!(x.data, c.x.to_dense().data);
}

/// 20 cells with DDIM, 10 steps, η = 0, seed 1.
const DDIM10: &[&str] = &[
    "-n",
    "20",
    "--sampler",
    "ddim",
    "--steps",
    "10",
    "--seed",
    "1",
];

#[test]
fn generate_with_ddim_and_the_vae_prior() {
    let run = tiny_run();
    let d = generate(run, DDIM10);
    assert_eq!(d.x.shape(), (20, 765));
    // η = 0 DDIM is deterministic given the seed of the starting noise.
    let d2 = generate(run, DDIM10);
    assert_eq!(d.x.to_dense().data, d2.x.to_dense().data);
    let v = generate(run, &["-n", "20", "--prior", "vae", "--seed", "1"]);
    assert_eq!(v.x.shape(), (20, 765));
    assert_ne!(d.x.to_dense().data, v.x.to_dense().data);
}

#[test]
fn count_observation_makes_cells_sparse_like_real_data() {
    let run = tiny_run();
    let zero_fraction = |a: &celldiff::AnnData| {
        let x = a.x.to_dense();
        x.data.iter().filter(|&&v| v == 0.0).count() as f64 / x.data.len() as f64
    };
    let counts = generate(run, &["-n", "100", "--seed", "2"]);
    let mean = generate(run, &["-n", "100", "--seed", "2", "--observation", "mean"]);
    // Real demo cells (log1p-normalised counts) are 67 % zeros (0.85 seen for this tiny,
    // under-trained model); decoder means are almost never 0.
    let (zc, zm) = (zero_fraction(&counts), zero_fraction(&mean));
    assert!(zc > 0.5 && zc < 0.95, "sampled counts: zero fraction {zc}");
    assert!(
        zm < zc - 0.2,
        "decoder mean zero fraction {zm} should be far below {zc}"
    );
    // Sampled values lie on the count lattice log1p(s·k) of one size factor per cell.
    let x = counts.x.to_dense();
    for i in 0..5 {
        let row: Vec<f32> = x.row(i).to_vec();
        assert!(
            celldiff::observation::size_factor(row.iter().copied()).is_some(),
            "cell {i} is not on a count lattice"
        );
    }
    let obs = counts.uns["celldiff"]["observation"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(obs.starts_with("counts"), "{obs}");
    assert_eq!(mean.uns["celldiff"]["observation"], "mean");
}

#[test]
fn embed_adds_the_posterior_mean() {
    let out = scratch().join("embedded.h5ad");
    assert_ok(&celldiff([
        "embed".as_ref(),
        "--run".as_ref(),
        tiny_run().as_os_str(),
        "--data".as_ref(),
        demo_h5ad().as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]));
    let a = read_h5ad(&out);
    assert_eq!(a.n_obs(), 700);
    let z = &a
        .obsm
        .iter()
        .find(|(k, _)| k == "X_celldiff")
        .expect("obsm X_celldiff")
        .1;
    assert_eq!((z.n_rows, z.n_cols), (700, 8));
    // Cell types separate in the latent: the mean latent of two labels differ.
    let labels = a.obs_column("bulk_labels").unwrap().labels();
    let mean_of = |name: &str| -> Vec<f64> {
        let rows: Vec<usize> = (0..700).filter(|&i| labels[i] == name).collect();
        (0..8)
            .map(|j| rows.iter().map(|&i| z.row(i)[j] as f64).sum::<f64>() / rows.len() as f64)
            .collect()
    };
    let (b, m) = (mean_of("CD19+ B"), mean_of("CD14+ Monocyte"));
    let dist: f64 = b
        .iter()
        .zip(&m)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        dist > 0.5,
        "B cells and monocytes should differ in the latent (distance {dist})"
    );
}

#[test]
fn evaluate_writes_the_documented_keys_and_detects_a_bad_generator() {
    let run = tiny_run();
    let gen_path = scratch().join("gen.h5ad");
    assert_ok(&celldiff([
        "generate".as_ref(),
        "--run".as_ref(),
        run.as_os_str(),
        "-n".as_ref(),
        "200".as_ref(),
        "--seed".as_ref(),
        "0".as_ref(),
        "-o".as_ref(),
        gen_path.as_os_str(),
    ]));
    let metrics = scratch().join("metrics.json");
    // Real cells as raw counts: the generated file's recorded preprocessing is applied first.
    assert_ok(&celldiff([
        "evaluate".as_ref(),
        "--real".as_ref(),
        demo_h5ad().as_os_str(),
        "--generated".as_ref(),
        gen_path.as_os_str(),
        "-o".as_ref(),
        metrics.as_os_str(),
    ]));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    for k in [
        "rf_auc",
        "knn_auc",
        "mmd",
        "mean_pearson",
        "mean_spearman",
        "var_pearson",
        "n_real",
        "n_generated",
    ] {
        assert!(
            m.get(k).is_some_and(|v| v.is_number()),
            "metrics.json lacks a number `{k}`: {m}"
        );
    }
    assert_eq!(m["n_real"], m["n_generated"], "classes are balanced");
    // The tiny model is a recognisable fake: the forest tells it from real cells.
    assert!(m["rf_auc"].as_f64().unwrap() > 0.6, "{m}");
    // Per-gene means still correlate with the real ones (0.71 seen for this tiny model).
    assert!(m["mean_pearson"].as_f64().unwrap() > 0.5, "{m}");
    // Refuses to overwrite without --force.
    let o = celldiff([
        "evaluate".as_ref(),
        "--real".as_ref(),
        demo_h5ad().as_os_str(),
        "--generated".as_ref(),
        gen_path.as_os_str(),
        "-o".as_ref(),
        metrics.as_os_str(),
    ]);
    assert_bad_input(&o, &["metrics.json", "--force"]);
}

#[test]
fn preprocess_marks_and_subsets_highly_variable_genes() {
    let out = scratch().join("pp.h5ad");
    assert_ok(&celldiff([
        "preprocess".as_ref(),
        "--data".as_ref(),
        demo_h5ad().as_os_str(),
        "--n-top-genes".as_ref(),
        "200".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]));
    let a = read_h5ad(&out);
    assert_eq!(a.n_vars(), 765, "without --subset all genes stay");
    let hv = a
        .var
        .iter()
        .find(|(k, _)| k == "highly_variable")
        .expect("var['highly_variable']");
    let Column::Bool(flags) = &hv.1 else {
        panic!("highly_variable should be boolean")
    };
    let n_hv = flags.iter().filter(|&&f| f).count();
    assert!((200..=202).contains(&n_hv), "{n_hv} genes flagged");
    // log1p(normalize_total(1e4)): each cell's expm1 sums to 1e4.
    let x = a.x.to_dense();
    let s: f64 = x.row(0).iter().map(|&v| (v as f64).exp_m1()).sum();
    assert!((s - 1e4).abs() < 1.0, "row 0 sums to {s} after expm1");

    let sub = scratch().join("pp_subset.h5ad");
    assert_ok(&celldiff([
        "preprocess".as_ref(),
        "--data".as_ref(),
        demo_h5ad().as_os_str(),
        "--n-top-genes".as_ref(),
        "200".as_ref(),
        "--subset".as_ref(),
        "-o".as_ref(),
        sub.as_os_str(),
    ]));
    assert_eq!(read_h5ad(&sub).n_vars(), n_hv);
}

#[test]
fn a_10x_folder_reads_like_the_h5ad() {
    let dir = shared_data("pbmc68k_reduced/counts_mtx");
    let out = scratch().join("from_mtx.h5ad");
    assert_ok(&celldiff([
        "preprocess".as_ref(),
        "--data".as_ref(),
        dir.as_os_str(),
        "--n-top-genes".as_ref(),
        "0".as_ref(),
        "--no-log1p".as_ref(),
        "--target-sum".as_ref(),
        "10000".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]));
    let a = read_h5ad(&out);
    let b = read_h5ad(&demo_h5ad());
    assert_eq!(a.x.shape(), b.x.shape());
    assert_eq!(a.var_names, b.var_names);
}

#[test]
fn demo_writes_the_comparison_table() {
    let out = scratch().join("demo");
    let o = celldiff([
        "demo".as_ref(),
        "--epochs-vae".as_ref(),
        "3".as_ref(),
        "--epochs-diffusion".as_ref(),
        "3".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert_ok(&o);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(m["dataset"].is_string());
    let methods: Vec<&str> = m["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "reconstruction",
            "diffusion-ddpm",
            "diffusion-ddim50",
            "flow-heun25",
            "flow-midpoint25",
            "vae-prior",
            "positive-control"
        ]
    );
    for r in m["rows"].as_array().unwrap() {
        assert!(
            r["rf_auc"].is_number() && r["mmd"].is_number() && r["n_real"] == 140,
            "{r}"
        );
    }
    // Real train cells vs real held-out cells are nearly indistinguishable.
    let control = m["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == "positive-control")
        .unwrap();
    assert!(control["rf_auc"].as_f64().unwrap() < 0.65, "{control}");
    assert!(m["seconds"].is_object());
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("positive-control") && table.contains("rf_auc"),
        "{table}"
    );
}

#[test]
fn bench_prints_the_documented_json_keys() {
    let o = celldiff([
        "bench",
        "--json",
        "--vae-cells",
        "256",
        "--denoiser-steps",
        "2",
        "--sample-cells",
        "16",
    ]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "vae_train_cells_per_s",
        "denoiser_train_steps_per_s",
        "sample_ddpm1000_10k_s",
        "sample_ddim50_10k_s",
    ] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {v}");
    }
    assert_eq!(v["threads"], 2);
}
