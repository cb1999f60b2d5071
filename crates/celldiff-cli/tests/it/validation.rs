//! Issue 17, "No panic" and "Command line": every numeric flag is checked at parse time (exit
//! 2, the flag named, no panic), lists take negative numbers, a diverging loss is the user's
//! error with advice, the grouped top-level help, messages in the order of the work, flag names
//! in messages, log1p by default on normalised-but-not-logged input, the perturbation violins,
//! SCLD post-guidance with a Scorer at chance, and preprocess on an empty matrix.

use std::path::{Path, PathBuf};
use std::process::Output;

use celldiff::anndata::{AnnData, Column, DenseMatrix, Matrix};

use crate::common::{
    TINY, assert_bad_input, assert_ok, celldiff, copy_run, demo_h5ad, scratch, shared_data, stderr,
    tiny_run,
};

fn demo() -> String {
    demo_h5ad().display().to_string()
}

fn weinreb() -> PathBuf {
    shared_data("weinreb_larry_hematopoiesis_subset/test_adata_preprocessed.h5ad")
}

/// `args` must be refused while parsing: exit 2, `FLAG must be ...` (the flag and the accepted
/// range), no panic, and nothing written at `out` (when given).
fn assert_refused_at_parse(args: &[String], flag: &str, out: Option<&Path>) {
    let o = celldiff(args);
    assert_bad_input(&o, &[&format!("{flag} must be")]);
    if let Some(out) = out {
        assert!(!out.exists(), "{} written despite {args:?}", out.display());
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The [`TINY`] training flags without the pairs of `flags` (which the test sets itself).
fn tiny_without(flags: &[&str]) -> Vec<String> {
    TINY.chunks(2)
        .filter(|p| !flags.contains(&p[0]))
        .flatten()
        .map(|s| s.to_string())
        .collect()
}

/// `celldiff` with exactly `args` (no `--quiet --threads 2`).
fn celldiff_bare(args: &[String]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_celldiff"))
        .args(args)
        .output()
        .expect("running the celldiff binary")
}

#[test]
fn train_numeric_flags_are_checked_at_parse_time() {
    let out = scratch().join("run");
    let o = out.display().to_string();
    let cases: &[(&str, &str)] = &[
        ("--dropout", "1.5"),
        ("--dropout", "nan"),
        ("--dropout", "1"),
        ("--ema-decay", "nan"),
        ("--ema-decay", "2"),
        ("--lr-vae", "0"),
        ("--lr-vae", "nan"),
        ("--lr-diffusion", "inf"),
        ("--kl-weight", "nan"),
        ("--batch-size-vae", "0"),
        ("--batch-size-diffusion", "0"),
        ("--hidden", "64,0"),
        ("--hidden", "100000000"),
        ("--latent", "0"),
        ("--target-sum", "nan"),
        ("--target-sum", "-5"),
        ("--target-sum", "1e300"),
        ("--epochs-vae", "0"),
        ("--epochs-diffusion", "0"),
        ("--timesteps", "0"),
        ("--beta-end", "nan"),
        ("--denoiser-width", "0"),
        ("--time-dim", "0"),
        ("--max-value", "nan"),
        ("--shuffle-block", "0"),
        ("--cond-drop", "1.5"),
        ("--leiden-resolution", "nan"),
    ];
    for (flag, value) in cases {
        let mut args = strings(&["train", "--data", &demo(), "--out", &o]);
        args.extend(tiny_without(&[flag]));
        args.extend([flag.to_string(), value.to_string()]);
        assert_refused_at_parse(&args, flag, Some(&out));
    }
}

#[test]
fn generate_and_other_numeric_flags_are_checked_at_parse_time() {
    let run = tiny_run().display().to_string();
    let out = scratch().join("g.h5ad");
    let o = out.display().to_string();
    let generate: &[(&str, &str)] = &[
        ("-n", "18446744073709551615"),
        ("-n", "10000000000"),
        ("-n", "0"),
        ("--steps", "0"),
        ("--eta", "nan"),
        ("--guidance", "nan"),
        ("--keep", "0"),
        ("--keep", "1.5"),
    ];
    for (flag, value) in generate {
        let args = strings(&["generate", "--run", &run, "-o", &o, flag, value]);
        assert_refused_at_parse(&args, flag, Some(&out));
    }
    // The global --threads (without the test helper's `--threads 2`).
    let d = demo();
    for (n, needle) in [("0", "at least 1"), ("5000", "at most 1024")] {
        let o = celldiff_bare(&strings(&[
            "--quiet",
            "--threads",
            n,
            "preprocess",
            "--data",
            &d,
            "-o",
            &o,
        ]));
        assert_bad_input(&o, &["--threads must be", needle]);
        assert!(!out.exists());
    }
    // One flag of every other family of subcommands.
    let others: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["preprocess", "--data", &d, "-o", &o, "--target-sum", "-5"],
            "--target-sum",
        ),
        (
            vec![
                "interpolate",
                "--run",
                &run,
                "--data",
                &d,
                "--key",
                "bulk_labels",
                "--from",
                "a",
                "--to",
                "b",
                "-o",
                &o,
                "--noise-draws",
                "0",
            ],
            "--noise-draws",
        ),
        (
            vec![
                "interpolate",
                "--run",
                &run,
                "--data",
                &d,
                "--key",
                "bulk_labels",
                "--from",
                "a",
                "--to",
                "b",
                "-o",
                &o,
                "--t-start",
                "0",
            ],
            "--t-start",
        ),
        (
            vec!["cluster", "--data", &d, "-o", &o, "--resolution", "nan"],
            "--resolution",
        ),
        (
            vec!["cluster", "--data", &d, "-o", &o, "--n-neighbors", "0"],
            "--n-neighbors",
        ),
        (
            vec!["identify", "--data", &d, "-o", &o, "--perplexity", "inf"],
            "--perplexity",
        ),
        (
            vec!["identify", "--data", &d, "-o", &o, "--batch-size", "0"],
            "--batch-size",
        ),
        (vec!["graph", "--data", &d, "-o", &o, "--lr", "0"], "--lr"),
        (
            vec![
                "classify",
                "train",
                "--data",
                &d,
                "--labels-key",
                "bulk_labels",
                "-o",
                &o,
                "--classifier-hidden",
                "256,0",
            ],
            "--classifier-hidden",
        ),
        (vec!["simulate", "-o", &o, "--theta", "nan"], "--theta"),
        (vec!["simulate", "-o", &o, "--cells", "0"], "--cells"),
        (vec!["demo", "-o", &o, "--holdout", "1.5"], "--holdout"),
    ];
    for (args, flag) in others {
        assert_refused_at_parse(&strings(&args), flag, Some(&out));
    }
}

/// `--guidance-values -1,1` and `--lambda -0.5,1` are values, not unknown flags: the command
/// gets as far as reading its (missing) input.
#[test]
fn lists_accept_negative_numbers() {
    let missing = scratch().join("missing.h5ad").display().to_string();
    let o = scratch().join("o").display().to_string();
    for args in [
        strings(&[
            "scld-bench",
            "--data",
            &missing,
            "--condition-key",
            "bulk_labels",
            "--guidance-values",
            "-1,1",
            "-o",
            &o,
        ]),
        strings(&[
            "shift",
            "--data",
            &missing,
            "--labels-key",
            "bulk_labels",
            "--source",
            "a",
            "--target",
            "b",
            "--lambda",
            "-0.5,1",
            "-o",
            &o,
        ]),
    ] {
        let out = celldiff(&args);
        let err = stderr(&out);
        assert!(!err.contains("unexpected argument"), "{args:?}:\n{err}");
        assert_bad_input(&out, &["missing.h5ad"]);
    }
}

#[test]
fn a_diverging_loss_is_bad_input_with_the_epoch_and_advice() {
    let out = scratch().join("run");
    let mut args = strings(&[
        "train",
        "--data",
        &demo(),
        "--out",
        &out.display().to_string(),
    ]);
    args.extend(TINY.iter().map(|s| s.to_string()));
    args.extend(strings(&["--lr-vae", "1e30"]));
    let o = celldiff(&args);
    assert_bad_input(
        &o,
        &[
            "non-finite",
            "at epoch",
            "lower the learning rate",
            "--lr-vae",
        ],
    );
    assert!(!out.exists());
}

#[test]
fn top_level_help_groups_the_subcommands() {
    let o = celldiff(["--help"]);
    assert_ok(&o);
    let help = String::from_utf8_lossy(&o.stdout).into_owned();
    for heading in [
        "Data:",
        "scVAEDer",
        "SCLD",
        "DiffVAE:",
        "Evaluation:",
        "Benchmarks:",
    ] {
        assert!(help.contains(heading), "`{heading}` missing:\n{help}");
    }
    for sub in [
        "preprocess",
        "cluster",
        "simulate",
        "train",
        "generate",
        "embed",
        "interpolate",
        "velocity",
        "perturb",
        "scld-bench",
        "identify",
        "identify-bench",
        "classify",
        "shift",
        "graph",
        "evaluate",
        "evaluate-perturbation",
        "demo",
        "bench",
    ] {
        assert!(
            help.contains(&format!("\n  {sub} ")),
            "`{sub}` missing:\n{help}"
        );
    }
    // Data comes before the models, the models before evaluation and benchmarks.
    let at = |s: &str| help.find(s).unwrap();
    assert!(at("\nData:") < at("\nscVAEDer") && at("\nDiffVAE:") < at("\nEvaluation:"));
    assert!(at("Evaluation:") < at("Benchmarks:"));
}

/// `celldiff` without `--quiet`, so the informational messages are printed.
fn celldiff_verbose(args: &[String]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_celldiff"))
        .args(["--threads", "2"])
        .args(args)
        .output()
        .expect("running the celldiff binary")
}

#[test]
fn train_messages_come_in_the_order_of_the_work_and_count_the_epochs_run() {
    let out = scratch().join("run");
    let mut args = strings(&[
        "train",
        "--data",
        &demo(),
        "--out",
        &out.display().to_string(),
    ]);
    args.extend(tiny_without(&["--epochs-vae"]));
    // Early stopping right after the first epoch without improvement.
    args.extend(strings(&[
        "--epochs-vae",
        "200",
        "--kl-warmup",
        "0",
        "--patience",
        "1",
        "--no-observation",
    ]));
    let o = celldiff_verbose(&args);
    assert_ok(&o);
    let err = stderr(&o);
    let at = |s: &str| {
        err.find(s)
            .unwrap_or_else(|| panic!("`{s}` missing:\n{err}"))
    };
    // Input detection and preprocessing before training, not after.
    assert!(at("preprocess: input") < at("vae: "), "{err}");
    assert!(at("vae: ") < at("diffusion: "), "{err}");
    // `vae: N epochs in Xs (reason)`: N is the number of epochs run.
    let line = err.lines().find(|l| l.starts_with("vae: ")).unwrap();
    let n: usize = line["vae: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    match line.split("early stop at epoch ").nth(1) {
        Some(rest) => {
            let stop: usize = rest.split(':').next().unwrap().parse().unwrap();
            assert_eq!(n, stop, "{line}");
            assert!(n < 200, "{line}");
        }
        None => assert_eq!(n, 200, "{line}"),
    }
    let records = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let vae_epochs = records.lines().filter(|l| l.contains("\"vae\"")).count();
    assert_eq!(n, vae_epochs, "{line}");
}

#[test]
fn errors_name_cli_flags_not_python_parameters() {
    // Weinreb is normalised but not logged: seurat HVGs with log1p turned off are refused.
    let out = scratch().join("pp.h5ad");
    let o = celldiff(strings(&[
        "preprocess",
        "--data",
        &weinreb().display().to_string(),
        "--no-log1p",
        "--n-top-genes",
        "100",
        "-o",
        &out.display().to_string(),
    ]));
    assert_bad_input(&o, &["--log1p", "--n-top-genes 0"]);
    let err = stderr(&o);
    assert!(
        !err.contains("n_top_genes=None") && !err.contains("set log1p"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn normalised_but_not_logged_input_gets_log1p_by_default() {
    let out = scratch().join("weinreb_pp.h5ad");
    let o = celldiff_verbose(&strings(&[
        "preprocess",
        "--data",
        &weinreb().display().to_string(),
        "--n-top-genes",
        "200",
        "--subset",
        "-o",
        &out.display().to_string(),
    ]));
    assert_ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("normalised but not log-transformed: log1p applied"),
        "{err}"
    );
    let input = celldiff::io::read(&weinreb(), &Default::default()).unwrap();
    let pp = celldiff::io::read(&out, &Default::default()).unwrap();
    assert_eq!(pp.n_obs(), input.n_obs());
    assert_eq!(pp.n_vars(), 200);
    // X is log1p of the input's values on the kept genes.
    let x_in = input.x.to_dense();
    let x_pp = pp.x.to_dense();
    let j_in = input
        .var_names
        .iter()
        .position(|g| g == &pp.var_names[0])
        .unwrap();
    for i in 0..pp.n_obs() {
        let want = (x_in.row(i)[j_in] as f64).ln_1p();
        let got = x_pp.row(i)[0] as f64;
        assert!(
            (want - got).abs() < 1e-4,
            "cell {i}: {got} vs log1p = {want}"
        );
    }
}

/// Three tiny matrices over genes G0..G19 where G3 and G7 respond to the "stimulus".
fn perturbation_files() -> (PathBuf, PathBuf, PathBuf) {
    let genes: Vec<String> = (0..20).map(|j| format!("G{j}")).collect();
    let make = |name: &str, shift: f32, seed: u32| {
        let n = 40;
        let mut v = Vec::with_capacity(n * genes.len());
        for i in 0..n {
            for j in 0..genes.len() {
                // Deterministic spread in [0, 1) plus the response on G3 and G7.
                let h = ((i as u32 * 31 + j as u32 * 17 + seed * 7) % 97) as f32 / 97.0;
                let resp = if j == 3 || j == 7 { shift } else { 0.0 };
                v.push(h + resp);
            }
        }
        let mut a = AnnData::new(
            Matrix::Dense(DenseMatrix::from_vec(n, genes.len(), v).unwrap()),
            genes.clone(),
        );
        a.set_obs(
            "cond",
            Column::Categorical {
                codes: vec![0; n],
                categories: vec![name.to_string()],
            },
        );
        let p = scratch().join(format!("{name}.h5ad"));
        celldiff::io::write_h5ad(&p, &a).unwrap();
        p
    };
    (
        make("ctrl", 0.0, 1),
        make("stim", 2.0, 2),
        make("pred", 1.8, 3),
    )
}

#[test]
fn perturbation_violins_warn_on_missing_genes_and_default_to_top_degs() {
    let (ctrl, stim, pred) = perturbation_files();
    let prefix = scratch().join("eval");
    let o = celldiff(strings(&[
        "evaluate-perturbation",
        "--real-stim",
        &stim.display().to_string(),
        "--pred",
        &pred.display().to_string(),
        "--control",
        &ctrl.display().to_string(),
        "--n-top",
        "5",
        "-o",
        &prefix.display().to_string(),
    ]));
    assert_ok(&o);
    let err = stderr(&o);
    // The default genes (Kang's ISG15, ...) are not among G0..G19: named in a warning, and the
    // plot shows the top DEGs, which start with the two responding genes.
    assert!(err.contains("warning") && err.contains("ISG15"), "{err}");
    let plotted = err
        .split("plotting ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `plotting` in:\n{err}"));
    assert!(plotted.contains("G3") && plotted.contains("G7"), "{err}");
    let png = PathBuf::from(format!("{}_violin.png", prefix.display()));
    let bytes = std::fs::read(&png).unwrap();
    // PNG IHDR: width and height, big-endian, at bytes 16..24.
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert!(width >= 1200, "violin plot {width} px wide");

    // Explicit genes: the missing one is named, the present one plotted.
    let prefix2 = scratch().join("eval2");
    let o = celldiff(strings(&[
        "evaluate-perturbation",
        "--real-stim",
        &stim.display().to_string(),
        "--pred",
        &pred.display().to_string(),
        "--control",
        &ctrl.display().to_string(),
        "--genes",
        "NOPE,G7",
        "-o",
        &prefix2.display().to_string(),
    ]));
    assert_ok(&o);
    let err = stderr(&o);
    assert!(err.contains("NOPE") && err.contains("plotting G7"), "{err}");
}

#[test]
fn scld_post_guidance_is_off_by_default_with_a_scorer_at_chance() {
    let run = copy_run(crate::scld::tiny_scld_run());
    let cfg_path = run.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["scorer_accuracy"] = serde_json::json!(0.479);
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    // Record the edited config.json's checksum, as if celldiff had written it.
    let sum = std::process::Command::new("sha256sum")
        .arg("config.json")
        .current_dir(&run)
        .output()
        .expect("sha256sum (coreutils)");
    assert!(sum.status.success());
    let sum = String::from_utf8(sum.stdout).unwrap();
    let manifest = run.join(celldiff::run_dir::MANIFEST);
    let sums: String = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(|l| {
            if l.ends_with("  config.json") {
                sum.clone()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&manifest, sums).unwrap();
    let gen_with = |extra: &[&str]| {
        let out = scratch().join("pg.h5ad");
        let mut args = strings(&[
            "generate",
            "--run",
            &run.display().to_string(),
            "--sampler",
            "ddim",
            "--steps",
            "10",
            "-n",
            "40",
            "--seed",
            "3",
            "--force",
            "-o",
            &out.display().to_string(),
        ]);
        args.extend(strings(extra));
        let o = celldiff(&args);
        assert_ok(&o);
        let a = celldiff::io::read(&out, &Default::default()).unwrap();
        (stderr(&o), a.x.to_dense())
    };
    let (err, default) = gen_with(&[]);
    assert!(
        err.contains("post-guidance off") && err.contains("0.479"),
        "{err}"
    );
    let (err_off, off) = gen_with(&["--post-guidance", "off"]);
    assert!(!err_off.contains("at chance"), "{err_off}");
    assert_eq!(default, off, "the default must equal --post-guidance off");
    // Given explicitly, post-guidance stays on (with a warning).
    let (err_on, on) = gen_with(&["--post-guidance", "on"]);
    assert!(err_on.contains("at chance"), "{err_on}");
    assert_ne!(on, off);
}

#[test]
fn preprocess_refuses_an_empty_matrix() {
    for (n, g) in [(0usize, 5usize), (5, 0)] {
        let a = AnnData::new(
            Matrix::Dense(DenseMatrix::from_vec(n, g, vec![]).unwrap()),
            (0..g).map(|j| format!("g{j}")).collect(),
        );
        let p = scratch().join("empty.h5ad");
        celldiff::io::write_h5ad(&p, &a).unwrap();
        let out = scratch().join("out.h5ad");
        let o = celldiff(strings(&[
            "preprocess",
            "--data",
            &p.display().to_string(),
            "-o",
            &out.display().to_string(),
        ]));
        assert_bad_input(&o, &[if n == 0 { "0 cells" } else { "0 genes" }]);
        assert!(
            !out.exists(),
            "{} written for a {n} × {g} input",
            out.display()
        );
    }
}

/// Choice flags (`--denoiser`, `--fusion`, `--latent-model`, `--scorer-space`, `--model`,
/// `--sampler`, `--observation`) are checked when the command line is read: before, `train
/// --denoiser abc` on a scVAEDer run was silently accepted (found by bench/reliability.py).
#[test]
fn choice_flags_are_checked_at_parse_time() {
    let demo = demo_h5ad().display().to_string();
    for (flag, value) in [
        ("--denoiser", "abc"),
        ("--fusion", "nan"),
        ("--latent-model", "pca"),
        ("--scorer-space", "x"),
        ("--model", "scvi"),
    ] {
        let o = celldiff([
            "train",
            "--data",
            &demo,
            "--out",
            "/nonexistent/run",
            flag,
            value,
        ]);
        assert_bad_input(&o, &[flag, value]);
    }
    // Finite but past what float32 counts hold (found by bench/reliability.py).
    for (flag, value) in [("--mean-library", "1e300"), ("--theta", "1e300")] {
        let o = celldiff([
            "simulate",
            "--cells",
            "10",
            "--genes",
            "5",
            "-o",
            "/nonexistent/s.h5ad",
            flag,
            value,
        ]);
        assert_bad_input(&o, &[flag, value]);
    }
    for (flag, value) in [("--sampler", "euler"), ("--observation", "zinb")] {
        let o = celldiff([
            "generate",
            "--run",
            "/nonexistent/run",
            flag,
            value,
            "-o",
            "/nonexistent/g.h5ad",
        ]);
        assert_bad_input(&o, &[flag, value]);
    }
}
