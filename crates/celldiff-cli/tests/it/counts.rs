//! Count-likelihood runs (issue 18): the default on count data is the NB decoder with a
//! library-size model; `generate` writes counts like the user's input (`X` integer CSR,
//! `obs['n_counts']`, `layers['log1p_norm']`), `--output log1p` swaps X and the layer,
//! `evaluate` compares the model's space from either form, SCLD's autoencoder trains the same
//! NB decoder and writes counts, counts are recovered from
//! log1p-normalised input (Kang), data without counts are refused for `nb`, and `demo` reports
//! a reconstruction row, the library-size KS statistic and the split; `--library-model joint`
//! and the flow-matching prior (`--prior flow`) train, generate and are refused where they
//! cannot be used.

use std::path::{Path, PathBuf};

use celldiff::anndata::{Column, Matrix};
use celldiff::io::{ReadOptions, read};
use serde_json::Value;

use crate::common::{
    TINY, assert_bad_input, assert_ok, bpk_tensors, celldiff, demo_h5ad, scratch, shared_data,
    stderr, tiny_nb_run,
};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn generate(run: &Path, extra: &[&str]) -> PathBuf {
    let out = scratch().join("gen.h5ad");
    let mut args = vec![
        "generate",
        "--run",
        s(run),
        "-n",
        "30",
        "--seed",
        "3",
        "--out",
        s(&out),
    ];
    args.extend(extra);
    assert_ok(&celldiff(&args));
    out
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn default_training_on_counts_uses_the_nb_decoder_and_its_library_model() {
    let run = tiny_nb_run();
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(cfg["vae"]["likelihood"], "nb");
    let lib = read_json(&run.join("library_size.json"));
    let clusters = lib["clusters"].as_array().unwrap();
    assert!(!clusters.is_empty());
    assert!(lib["mean_scale"].as_f64().unwrap() > 0.0);
    let sums = std::fs::read_to_string(run.join("SHA256SUMS")).unwrap();
    assert!(sums.contains("  library_size.json"), "{sums}");
    assert!(
        !run.join("observation.json").exists(),
        "no Gaussian patch for an NB run"
    );
}

/// Asserts that the generated file `out` holds counts like the user's input: X integer CSR,
/// `obs['n_counts']` its row sums, `layers['log1p_norm']` on the same count lattice, and the
/// decoder's likelihood `likelihood` in `uns`.
fn assert_counts_file(out: &Path, likelihood: &str) {
    let g = read(out, &ReadOptions::default()).unwrap();
    let Matrix::Csr(x) = &g.x else {
        panic!("X must be CSR counts")
    };
    assert!(x.data().iter().all(|&v| v > 0.0 && v == v.round()));
    let Column::Numeric(n_counts) = g.obs_column("n_counts").unwrap() else {
        panic!("obs['n_counts'] must be numeric")
    };
    let dense = g.x.to_dense();
    let (_, norm) = g.layers.iter().find(|(k, _)| k == "log1p_norm").unwrap();
    let norm = norm.to_dense();
    assert_eq!(n_counts.len(), dense.n_rows);
    for (i, &n_i) in n_counts.iter().enumerate() {
        let row = dense.row(i);
        let total: f64 = row.iter().map(|&v| v as f64).sum();
        assert_eq!(n_i, total, "cell {i}");
        // log1p(y·s) with one size factor per cell: zero where the count is zero, and the
        // counts come back from the layer's lattice.
        let rec = celldiff::counts::recover_counts(&norm.select_rows(&[i]));
        if total > 0.0 {
            assert_eq!(rec.counts.row(0), row, "cell {i}: layer and X disagree");
        }
    }
    assert_eq!(g.uns["celldiff"]["likelihood"], likelihood);
}

#[test]
fn generated_counts_are_integers_with_their_library_and_log1p_layer() {
    let out = generate(tiny_nb_run(), &[]);
    assert_counts_file(&out, "nb");
    // Same seed, same bytes.
    let again = generate(tiny_nb_run(), &[]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn scld_trains_an_nb_autoencoder_on_counts_and_writes_counts() {
    // The NB decoder on the SCLD autoencoder (the default stays the paper's Gaussian).
    let default_run = crate::scld::tiny_scld_run();
    assert_eq!(
        read_json(&default_run.join("config.json"))["ae"]["likelihood"],
        "gaussian"
    );
    let run = scratch().join("scld-nb");
    let data = demo_h5ad();
    let mut args = vec![
        "train",
        "--model",
        "scld",
        "--data",
        s(&data),
        "--condition-key",
        "bulk_labels",
        "--likelihood",
        "nb",
        "--beta-end",
        "0.05",
        "--out",
        s(&run),
    ];
    args.extend(TINY);
    assert_ok(&celldiff(&args));
    let run = run.as_path();
    assert!(run.join("library_size.json").is_file());
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(cfg["ae"]["likelihood"], "nb");
    let out = generate(run, &["--condition", "CD14+ Monocyte"]);
    assert_counts_file(&out, "nb");
    let again = generate(run, &["--condition", "CD14+ Monocyte"]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    // --output log1p swaps X and the layer for SCLD runs too.
    let counts = read(&out, &ReadOptions::default()).unwrap();
    let log1p = generate(run, &["--condition", "CD14+ Monocyte", "--output", "log1p"]);
    let log1p = read(&log1p, &ReadOptions::default()).unwrap();
    let layer = |d: &celldiff::anndata::AnnData, k: &str| {
        d.layers.iter().find(|(n, _)| n == k).unwrap().1.to_dense()
    };
    assert_eq!(log1p.x.to_dense().data, layer(&counts, "log1p_norm").data);
}

#[test]
fn output_log1p_swaps_x_and_the_layer_and_evaluate_sees_the_same_cells() {
    let counts = generate(tiny_nb_run(), &[]);
    let log1p = generate(tiny_nb_run(), &["--output", "log1p"]);
    let a = read(&counts, &ReadOptions::default()).unwrap();
    let b = read(&log1p, &ReadOptions::default()).unwrap();
    let layer = |d: &celldiff::anndata::AnnData, k: &str| {
        d.layers.iter().find(|(n, _)| n == k).unwrap().1.to_dense()
    };
    assert_eq!(b.x.to_dense().data, layer(&a, "log1p_norm").data);
    assert_eq!(layer(&b, "counts").data, a.x.to_dense().data);
    // evaluate compares the model's space whichever form X holds: identical metrics.
    let mut metrics = Vec::new();
    for g in [&counts, &log1p] {
        let m = scratch().join("m.json");
        assert_ok(&celldiff([
            "evaluate",
            "--real",
            s(&demo_h5ad()),
            "--generated",
            s(g),
            "--max-cells",
            "30",
            "-o",
            s(&m),
        ]));
        metrics.push(read_json(&m));
    }
    assert_eq!(metrics[0], metrics[1]);
    assert!(metrics[0]["rf_auc"].as_f64().unwrap().is_finite());
}

#[test]
fn nb_is_refused_where_no_counts_can_be_recovered() {
    let out = scratch().join("run");
    let data = demo_h5ad();
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--scale",
        "--likelihood",
        "nb",
        "--out",
        s(&out),
    ];
    args.extend(TINY);
    let o = celldiff(&args);
    assert_bad_input(&o, &["--likelihood gaussian"]);
    assert!(!out.exists());
}

#[test]
fn counts_are_recovered_from_log_normalised_kang() {
    let out = scratch().join("run");
    let data = shared_data("kang_pbmc_ifnb_valid/valid_kang.h5ad");
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--n-top-genes",
        "300",
        "--out",
        s(&out),
    ];
    args.extend(TINY);
    let o = celldiff(&args);
    assert_ok(&o);
    assert_eq!(
        read_json(&out.join("config.json"))["vae"]["likelihood"],
        "nb",
        "{}",
        stderr(&o)
    );
    let lib = read_json(&out.join("library_size.json"));
    // Kang's cells hold about 20 counts over 300 HVGs (about a thousand over all genes).
    let median = lib["median_library"].as_f64().unwrap();
    assert!((5.0..2_000.0).contains(&median), "median library {median}");
}

#[test]
fn demo_reports_reconstruction_library_ks_and_the_split() {
    let out = scratch().join("demo");
    let mut args = vec!["demo", "--seed", "1", "-o", s(&out)];
    args.extend(TINY);
    assert_ok(&celldiff(&args));
    let m = read_json(&out.join("metrics.json"));
    assert_eq!(m["likelihood"], "nb");
    let rows = m["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(
        names,
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
    for r in &rows[..4] {
        let ks = r["ks_log_library"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ks), "{r}");
        assert!(r["corr_mad"].as_f64().unwrap() >= 0.0, "{r}");
    }
    let split = read_json(&out.join("split.json"));
    let mut all: Vec<u64> = split["train"]
        .as_array()
        .unwrap()
        .iter()
        .chain(split["heldout"].as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..700).collect::<Vec<u64>>(),
        "train and held-out rows partition the input"
    );
    assert_eq!(split["heldout"].as_array().unwrap().len(), 140);
}

#[test]
fn count_only_flags_are_refused_where_they_would_be_ignored() {
    // --output on a Gaussian run: named error, exit 2, nothing written.
    let out = scratch().join("gen.h5ad");
    let o = celldiff([
        "generate",
        "--run",
        s(crate::common::tiny_run()),
        "-n",
        "5",
        "--output",
        "log1p",
        "-o",
        s(&out),
    ]);
    assert_bad_input(&o, &["--output log1p", "Gaussian decoder"]);
    assert!(!out.exists());
    // --output on a Gaussian SCLD run (the papers' MSE autoencoder, SCLD's default) is
    // refused the same way.
    let run = crate::scld::tiny_scld_run();
    assert!(!run.join("library_size.json").exists());
    let o = celldiff([
        "generate",
        "--run",
        s(run),
        "-n",
        "5",
        "--output",
        "log1p",
        "-o",
        s(&out),
    ]);
    assert_bad_input(&o, &["--output log1p", "Gaussian decoder"]);
    assert!(!out.exists());
}

#[test]
fn evaluate_with_a_run_adds_the_reconstruction_row() {
    let g = generate(tiny_nb_run(), &[]);
    let m = scratch().join("m.json");
    assert_ok(&celldiff([
        "evaluate",
        "--real",
        s(&demo_h5ad()),
        "--generated",
        s(&g),
        "--run",
        s(tiny_nb_run()),
        "--max-cells",
        "60",
        "-o",
        s(&m),
    ]));
    let doc = read_json(&m);
    let rec = &doc["reconstruction"];
    for k in ["rf_auc", "mmd", "corr_mad"] {
        assert!(rec[k].as_f64().is_some_and(f64::is_finite), "{k}: {rec}");
    }
    // The generated cells' own metrics stay at the top level, as without --run.
    assert!(doc["rf_auc"].as_f64().is_some_and(f64::is_finite));
}

/// `celldiff interpolate` on `run` from the demo's CD14+ monocytes to its dendritic cells,
/// written to `out`, with `extra` flags.
fn interpolate_demo(run: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let data = demo_h5ad();
    let mut args = vec![
        "interpolate",
        "--run",
        s(run),
        "--data",
        s(&data),
        "--key",
        "bulk_labels",
        "--from",
        "CD14+ Monocyte",
        "--to",
        "Dendritic",
        "-o",
        s(out),
    ];
    args.extend(extra);
    celldiff(&args)
}

/// `interpolate` on `run` fails as bad input naming `flag`, and writes nothing.
fn assert_interpolate_refused(run: &Path, flag: &str) {
    let o = scratch().join("interp.h5ad");
    assert_bad_input(&interpolate_demo(run, &o, &[]), &[flag]);
    assert!(!o.exists());
}

#[test]
fn library_model_joint_diffuses_the_library_size_with_the_latent() {
    let run = scratch().join("joint");
    let data = demo_h5ad();
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--library-model",
        "joint",
        "--out",
        s(&run),
    ];
    args.extend(TINY);
    assert_ok(&celldiff(&args));
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(cfg["library_model"], "joint");
    assert_eq!(
        cfg["denoiser"]["n_latent"].as_u64().unwrap(),
        cfg["vae"]["n_latent"].as_u64().unwrap() + 2
    );
    let lib = read_json(&run.join("library_size.json"));
    assert!(lib["joint"]["sd"][0].as_f64().unwrap() > 0.0, "{lib}");
    // The diffused sizes decide each cell's total: counts out, reproducible.
    let out = generate(&run, &[]);
    assert_counts_file(&out, "nb");
    let again = generate(&run, &[]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    // The diffusion analyses need a latent-only denoiser: named refusal, nothing written.
    assert_interpolate_refused(&run, "--library-model joint");
    // `train --stream` goes through the same stages: the demo data fit in one shuffle buffer,
    // so the streamed joint run is the in-memory one, bit for bit.
    let streamed = scratch().join("joint-stream");
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--library-model",
        "joint",
        "--stream",
        "--out",
        s(&streamed),
    ];
    args.extend(TINY);
    assert_ok(&celldiff(&args));
    for f in ["vae.bpk", "denoiser_ema.bpk"] {
        assert_eq!(
            bpk_tensors(&streamed.join(f)),
            bpk_tensors(&run.join(f)),
            "{f} differs between the streamed and the in-memory joint run"
        );
    }
    for f in ["library_size.json", "latent.json"] {
        assert_eq!(
            std::fs::read(streamed.join(f)).unwrap(),
            std::fs::read(run.join(f)).unwrap(),
            "{f} differs between the streamed and the in-memory joint run"
        );
    }
    // A joint library model without a count likelihood would be ignored: refused.
    let bad = scratch().join("joint-gaussian");
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--library-model",
        "joint",
        "--likelihood",
        "gaussian",
        "--out",
        s(&bad),
    ];
    args.extend(TINY);
    assert_bad_input(&celldiff(&args), &["--library-model joint", "gaussian"]);
    assert!(!bad.exists());
}

#[test]
fn flow_prior_trains_by_velocity_and_generates_for_both_methods() {
    let data = demo_h5ad();
    let diffusion_losses = |run: &Path| -> Vec<f64> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["stage"] == "diffusion")
            .map(|r| r["train_loss"].as_f64().unwrap())
            .collect()
    };
    // scVAEDer with a flow-matching prior.
    let run = scratch().join("flow");
    let mut args = vec![
        "train",
        "--data",
        s(&data),
        "--prior",
        "flow",
        // The default block on counts (no BatchNorm, SiLU) needs more than TINY's 8 VAE
        // epochs before its decoded paths move from A to B (at 8 both correlations rise).
        "--epochs-vae",
        "100",
        "--out",
        s(&run),
    ];
    for pair in TINY.chunks(2) {
        if pair[0] != "--epochs-vae" {
            args.extend(pair);
        }
    }
    assert_ok(&celldiff(&args));
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(cfg["diffusion_train"]["objective"], "velocity");
    assert_eq!(cfg["vae"]["norm"], "none");
    let d = diffusion_losses(&run);
    assert!(
        d.len() >= 2 && d[d.len() - 1] < d[0],
        "velocity loss did not fall: {d:?}"
    );
    let out = generate(&run, &["--sampler", "ddim", "--steps", "10"]);
    assert_counts_file(&out, "nb");
    let again = generate(&run, &["--sampler", "ddim", "--steps", "10"]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    // The 2nd-order ODE solvers: counts out, reproducible, and other cells than Euler's.
    let heun = generate(&run, &["--sampler", "heun", "--steps", "5"]);
    assert_counts_file(&heun, "nb");
    let heun_again = generate(&run, &["--sampler", "heun", "--steps", "5"]);
    assert_eq!(
        std::fs::read(&heun).unwrap(),
        std::fs::read(&heun_again).unwrap()
    );
    let mid = generate(&run, &["--sampler", "midpoint", "--steps", "5"]);
    assert_counts_file(&mid, "nb");
    let euler = generate(&run, &["--sampler", "ddim", "--steps", "5"]);
    for other in [&mid, &euler] {
        assert_ne!(std::fs::read(&heun).unwrap(), std::fs::read(other).unwrap());
    }
    // They integrate a flow's ODE: on a diffusion run (the Gaussian run's default prior) a
    // named refusal, nothing written.
    let refused = scratch().join("heun-on-diffusion.h5ad");
    let res = celldiff([
        "generate",
        "--run",
        s(crate::common::tiny_run()),
        "--sampler",
        "heun",
        "--out",
        s(&refused),
    ]);
    assert_bad_input(&res, &["heun", "flow"]);
    assert!(!refused.exists());
    // The analyses run on a flow prior (its linear path and ODE in place of the forward
    // process and DDIM inversion): the path moves from one group to the other with either
    // encoding, reproducibly (the same cells; the file also records its wall time), and the
    // two encodings give different paths.
    let interp = |encode: &str| {
        let o = scratch().join(format!("flow-interp-{encode}.h5ad"));
        let res = interpolate_demo(
            &run,
            &o,
            &[
                "--n-steps",
                "50",
                "--sampler",
                "ddim",
                "--steps",
                "20",
                "--encode",
                encode,
                "--seed",
                "3",
                "--force",
            ],
        );
        assert_ok(&res);
        let a = read(&o, &ReadOptions::default()).unwrap();
        assert_eq!(a.n_obs(), 50);
        let u = &a.uns["celldiff_interpolation"];
        let (from, to) = (
            u["spearman_from"].as_f64().unwrap(),
            u["spearman_to"].as_f64().unwrap(),
        );
        assert!(
            from < -0.5 && to > 0.5,
            "{encode}: Spearman ρ of the path with A {from}, with B {to}"
        );
        // K = T maps to the flow level of the β schedule's terminal signal-to-noise ratio,
        // (1 − s)/s = √(ᾱ_T/(1 − ᾱ_T)), not to pure noise (s = 1): the last level of the
        // 20-step grid (spacing 5/100) at or below it.
        let ab = cfg["alphas_cumprod_terminal"].as_f64().unwrap();
        let expected = (1.0 - ab).sqrt() / (ab.sqrt() + (1.0 - ab).sqrt());
        let level = u["flow_level"].as_f64().unwrap();
        assert!(
            level <= expected + 1e-9 && level > expected - 0.05 - 1e-9,
            "flow level {level}, signal-to-noise level {expected}"
        );
        a.x.to_dense().data
    };
    let forward = interp("forward");
    assert!(forward == interp("forward"), "same seed, other cells");
    assert!(
        forward != interp("ddim"),
        "both encodings gave the same path"
    );
    // SCLD with a flow-matching prior and classifier-free guidance on the velocity.
    let run = scratch().join("scld-flow");
    let mut args = vec![
        "train",
        "--model",
        "scld",
        "--data",
        s(&data),
        "--condition-key",
        "bulk_labels",
        "--prior",
        "flow",
        "--likelihood",
        "nb",
        "--no-scorer",
        "--out",
        s(&run),
    ];
    args.extend(TINY);
    assert_ok(&celldiff(&args));
    assert_eq!(
        read_json(&run.join("config.json"))["diffusion_train"]["objective"],
        "velocity"
    );
    let out = generate(&run, &["--condition", "CD14+ Monocyte", "--guidance", "1"]);
    assert_counts_file(&out, "nb");
    let out = generate(
        &run,
        &[
            "--condition",
            "CD14+ Monocyte",
            "--sampler",
            "midpoint",
            "--steps",
            "4",
        ],
    );
    assert_counts_file(&out, "nb");
}

#[test]
fn scld_bench_with_the_nb_autoencoder_reports_finite_reconstruction_rows() {
    // The count paths of scld-bench: SCLD's NB reconstruction (held-out cells with their own
    // library sizes) and generated counts evaluated in the model's space.
    let out = scratch().join("scld-bench-nb");
    let data = demo_h5ad();
    let mut args = vec![
        "scld-bench",
        "--data",
        s(&data),
        "--condition-key",
        "bulk_labels",
        "--likelihood",
        "nb",
        "--no-scorer",
        "--sampler",
        "ddim",
        "--steps",
        "10",
        "--guidance-values",
        "1",
        "--beta-end",
        "0.05",
        "-o",
        s(&out),
    ];
    args.extend(TINY);
    assert_ok(&celldiff(&args));
    let doc = read_json(&out.join("results.json"));
    let rows = doc["holistic"].as_array().unwrap();
    for name in [
        "scld-reconstruction",
        "scld-pre-guidance",
        "scvaeder-reconstruction",
    ] {
        let r = rows
            .iter()
            .find(|r| r["method"] == name)
            .unwrap_or_else(|| panic!("no {name} row: {doc}"));
        let auc = r["rf_auc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{name}: {r}");
        assert!(r["mmd"].as_f64().unwrap().is_finite(), "{name}: {r}");
    }
}
