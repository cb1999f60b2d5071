//! Run directories that were edited or damaged after training never load silently (issue 17):
//! `SHA256SUMS` checks every file a model needs, every loaded value is checked against the
//! config (naming the file and the field), a run of a newer major version is refused, runs
//! written before checksums load with a warning, and gene lists round-trip any name
//! (`genes.json`). The same checks cover SCLD runs and classifier directories.
//!
//! Every test copies the shared tiny runs ([`tiny_run`], the SCLD one of `scld.rs`) and damages
//! the copy; only the gene-name test trains a run of its own.

use std::path::{Path, PathBuf};
use std::process::Output;

use celldiff::io::{ReadOptions, read};
use serde_json::Value;

use crate::common::{
    TINY, assert_bad_input, assert_ok, celldiff, copy_run, demo_h5ad, scratch, stderr, tiny_nb_run,
    tiny_run,
};

/// `celldiff generate -n 10` from `run` into a fresh file; returns the output and its path.
fn generate(run: &Path) -> (Output, PathBuf) {
    let out = scratch().join("gen.h5ad");
    let o = celldiff([
        "generate".as_ref(),
        "--run".as_ref(),
        run.as_os_str(),
        "-n".as_ref(),
        "10".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    (o, out)
}

/// Asserts `generate` on `run` exits 2 with every needle in stderr and writes nothing.
fn refused(run: &Path, needles: &[&str]) {
    let (o, out) = generate(run);
    assert_bad_input(&o, needles);
    assert!(!out.exists(), "{} was written", out.display());
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Rewrites JSON file `p` through `f`.
fn edit_json(p: &Path, f: impl FnOnce(&mut Value)) {
    let mut v = read_json(p);
    f(&mut v);
    std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Turns a run into one as celldiff wrote it before checksums: no `SHA256SUMS`, no
/// `run_format`, the genes in `genes.txt` (one per line).
fn make_legacy(run: &Path) {
    std::fs::remove_file(run.join("SHA256SUMS")).unwrap();
    edit_json(&run.join("config.json"), |c| {
        c.as_object_mut().unwrap().remove("run_format");
    });
    let genes: Vec<String> = serde_json::from_value(read_json(&run.join("genes.json"))).unwrap();
    std::fs::write(run.join("genes.txt"), genes.join("\n") + "\n").unwrap();
    std::fs::remove_file(run.join("genes.json")).unwrap();
}

/// Flips one bit in the middle of `p` (inside the tensor data of a weights file).
fn flip_a_bit(p: &Path) {
    let mut bytes = std::fs::read(p).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(p, &bytes).unwrap();
}

#[test]
fn sha256sums_lists_every_file_the_model_needs() {
    let run = tiny_run();
    let listed: Vec<String> = std::fs::read_to_string(run.join("SHA256SUMS"))
        .expect("a run has SHA256SUMS")
        .lines()
        .map(|l| {
            let (hash, name) = l.split_once("  ").expect("sha256sum format");
            assert_eq!(hash.len(), 64, "{l}");
            name.to_string()
        })
        .collect();
    let want = [
        "config.json",
        "denoiser.bpk",
        "denoiser_ema.bpk",
        "genes.json",
        "latent.json",
        "observation.json",
        "preprocess.json",
        "vae.bpk",
    ];
    assert_eq!(listed, want);
    assert_eq!(read_json(&run.join("config.json"))["run_format"], 2);
    // The standard tool agrees with the recorded checksums.
    match std::process::Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(run)
        .output()
    {
        Ok(o) => assert!(o.status.success(), "sha256sum -c: {}", stderr(&o)),
        Err(e) => eprintln!("sha256sum not available ({e}); skipping its check"),
    }
}

#[test]
fn a_bit_flip_inside_the_vae_weights_is_refused() {
    let run = copy_run(tiny_run());
    flip_a_bit(&run.join("vae.bpk"));
    refused(&run, &["vae.bpk", "weights", "SHA-256", "SHA256SUMS"]);
}

#[test]
fn an_edited_json_file_is_refused_by_its_checksum() {
    // A plausible value (the check of ranges would accept it): only the checksum catches it.
    let run = copy_run(tiny_run());
    edit_json(&run.join("latent.json"), |v| {
        let m = v["mean"][0].as_f64().unwrap();
        v["mean"][0] = (m + 0.5).into();
    });
    refused(
        &run,
        &["latent.json", "changed after training", "SHA256SUMS"],
    );
    // config.json is checked too (seed is not used at load, so nothing else would notice).
    let run = copy_run(tiny_run());
    edit_json(&run.join("config.json"), |v| v["seed"] = 7.into());
    refused(&run, &["config.json", "SHA256SUMS"]);
}

#[test]
fn a_checked_run_whose_manifest_was_deleted_is_refused() {
    let run = copy_run(tiny_run());
    std::fs::remove_file(run.join("SHA256SUMS")).unwrap();
    refused(&run, &["SHA256SUMS", "missing"]);
}

#[test]
fn a_run_written_before_checksums_loads_with_a_warning() {
    let run = copy_run(tiny_run());
    make_legacy(&run);
    let (o, out) = generate(&run);
    assert_ok(&o);
    assert!(out.is_file());
    let err = stderr(&o);
    assert!(
        err.contains("warning") && err.contains("SHA256SUMS"),
        "expected a warning about the missing checksums:\n{err}"
    );
}

#[test]
fn out_of_range_or_shortened_values_are_refused_naming_file_and_field() {
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, &[&str])] = &[
        (
            "latent.json",
            |v| v["std"][0] = 0.0.into(),
            &["std[0]", "expected > 0"],
        ),
        ("latent.json", |v| v["std"][1] = (-1.0).into(), &["std[1]"]),
        (
            "latent.json",
            |v| v["std"][2] = Value::Null,
            &["std[2]", "null"],
        ),
        (
            "latent.json",
            |v| {
                v["std"].as_array_mut().unwrap().pop();
            },
            &["`std`", "7 values, expected 8"],
        ),
        (
            "observation.json",
            |v| v["size_factors"] = Value::Array(vec![]),
            &["size_factors", "empty"],
        ),
        (
            "observation.json",
            |v| v["dispersion"] = (-0.5).into(),
            &["dispersion", "-0.5"],
        ),
        (
            "config.json",
            |v| v["schedule"]["num_train_timesteps"] = 1000.into(),
            &[
                "alphas_cumprod_terminal",
                "T = 1000",
                "schedule was changed",
            ],
        ),
        (
            "config.json",
            |v| v["diffusion_train"]["ema_decay"] = Value::Null,
            &["diffusion_train.ema_decay", "null"],
        ),
        (
            "config.json",
            |v| v["diffusion_train"]["ema_decay"] = 2.0.into(),
            &["diffusion_train.ema_decay", "out of range"],
        ),
        (
            "config.json",
            |v| v["vae"]["dropout"] = 1.5.into(),
            &["vae.dropout"],
        ),
        (
            "config.json",
            |v| v["vae_train"]["learning_rate"] = (-1.0).into(),
            &["vae_train.learning_rate"],
        ),
        (
            "config.json",
            |v| v["denoiser"]["n_latent"] = 5.into(),
            &["denoiser.n_latent", "expected 8"],
        ),
    ];
    for (file, edit, needles) in cases {
        // Without SHA256SUMS (a run written before checksums), so that the value checks speak.
        let run = copy_run(tiny_run());
        make_legacy(&run);
        edit_json(&run.join(file), edit);
        let mut all = vec![*file];
        all.extend_from_slice(needles);
        refused(&run, &all);
    }
}

#[test]
fn a_run_written_by_a_newer_major_version_is_refused() {
    let run = copy_run(tiny_run());
    edit_json(&run.join("config.json"), |v| {
        v["celldiff_version"] = "99.0.0".into()
    });
    refused(
        &run,
        &[
            "config.json",
            "celldiff_version",
            "99.0.0",
            env!("CARGO_PKG_VERSION"),
            "newer",
        ],
    );
    // A later run format is refused the same way.
    let run = copy_run(tiny_run());
    edit_json(&run.join("config.json"), |v| v["run_format"] = 3.into());
    refused(&run, &["config.json", "run_format", "newer"]);
}

#[test]
fn gene_names_that_are_empty_or_hold_a_newline_round_trip() {
    let mut a = read(&demo_h5ad(), &ReadOptions::default()).unwrap();
    a.var_names[0] = String::new();
    a.var_names[1] = "a\nb".into();
    a.var_names[2] = " spaced\ttab ".into();
    let data = scratch().join("odd-names.h5ad");
    celldiff::io::write_h5ad(&data, &a).unwrap();
    let run = scratch().join("odd-run");
    let mut args: Vec<String> = vec![
        "train".into(),
        "--data".into(),
        data.display().to_string(),
        "--out".into(),
        run.display().to_string(),
    ];
    args.extend(TINY.iter().map(|s| s.to_string()));
    assert_ok(&celldiff(&args));
    let genes: Vec<String> = serde_json::from_value(read_json(&run.join("genes.json"))).unwrap();
    assert_eq!(genes, a.var_names, "genes.json keeps every name as it was");
    let (o, out) = generate(&run);
    assert_ok(&o);
    let g = read(&out, &ReadOptions::default()).unwrap();
    assert_eq!(g.var_names, a.var_names);
}

#[test]
fn scld_runs_are_checked_the_same_way() {
    let src = crate::scld::tiny_scld_run();
    assert!(src.join("SHA256SUMS").is_file());
    let run = copy_run(src);
    flip_a_bit(&run.join("scorer.bpk"));
    refused(&run, &["scorer.bpk", "weights", "SHA256SUMS"]);

    let run = copy_run(src);
    make_legacy(&run);
    edit_json(&run.join("conditions.json"), |v| {
        v["vectors"][1].as_array_mut().unwrap().pop();
    });
    refused(&run, &["conditions.json", "vectors"]);

    let run = copy_run(src);
    make_legacy(&run);
    edit_json(&run.join("latent.json"), |v| v["std"][0] = 0.0.into());
    refused(&run, &["latent.json", "std[0]"]);

    let run = copy_run(src);
    edit_json(&run.join("config.json"), |v| {
        v["celldiff_version"] = "99.0.0".into()
    });
    refused(&run, &["config.json", "99.0.0"]);
}

#[test]
fn classifier_directories_are_checked_the_same_way() {
    let clf = scratch().join("clf");
    let demo = demo_h5ad();
    assert_ok(&celldiff([
        "classify".as_ref(),
        "train".as_ref(),
        "--data".as_ref(),
        demo.as_os_str(),
        "--labels-key".as_ref(),
        "bulk_labels".as_ref(),
        "--classifier-epochs".as_ref(),
        "2".as_ref(),
        "-o".as_ref(),
        clf.as_os_str(),
    ]));
    assert!(clf.join("SHA256SUMS").is_file() && clf.join("genes.json").is_file());
    let predict = |dir: &Path| {
        let out = scratch().join("pred.h5ad");
        let o = celldiff([
            "classify".as_ref(),
            "predict".as_ref(),
            "--data".as_ref(),
            demo.as_os_str(),
            "--model".as_ref(),
            dir.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ]);
        (o, out)
    };
    assert_ok(&predict(&clf).0);

    let bad = copy_run(&clf);
    flip_a_bit(&bad.join("classifier.bpk"));
    let (o, out) = predict(&bad);
    assert_bad_input(&o, &["classifier.bpk", "weights", "SHA256SUMS"]);
    assert!(!out.exists());

    let bad = copy_run(&clf);
    edit_json(&bad.join("config.json"), |v| {
        v["celldiff_version"] = "99.0.0".into()
    });
    assert_bad_input(&predict(&bad).0, &["config.json", "99.0.0"]);

    // A classifier written before checksums still loads.
    let old = copy_run(&clf);
    make_legacy(&old);
    assert_ok(&predict(&old).0);
}

/// The VAE block and prior (issue 18): on count data the default is SCLD's block (no
/// BatchNorm, SiLU) with the flow prior, on `--likelihood gaussian` the paper's (BatchNorm,
/// ReLU, DDPM); explicit flags override either, are recorded in the run and used again on
/// load (the run generates), and `--vae-norm` is refused for SCLD, whose latent models do not
/// take it.
#[test]
fn vae_block_options_are_recorded_and_refused_for_scld() {
    let config = |run: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap()
    };
    // Defaults: by likelihood.
    let cfg = config(tiny_nb_run());
    assert_eq!(cfg["vae"]["likelihood"], "nb");
    assert_eq!(cfg["vae"]["norm"], "none");
    assert_eq!(cfg["vae"]["activation"], "Silu");
    assert_eq!(cfg["diffusion_train"]["objective"], "velocity");
    let cfg = config(tiny_run());
    assert_eq!(cfg["vae"]["likelihood"], "gaussian");
    assert_eq!(cfg["vae"]["norm"], "batch");
    assert_eq!(cfg["vae"]["activation"], "Relu");
    assert_eq!(cfg["diffusion_train"]["objective"], "epsilon");
    // The paper's model on count data, by flags.
    let run = scratch().join("paper-block");
    let mut args: Vec<String> = [
        "train",
        "--data",
        demo_h5ad().to_str().unwrap(),
        "--seed",
        "0",
        "--vae-norm",
        "batch",
        "--vae-activation",
        "relu",
        "--prior",
        "diffusion",
        "--out",
        run.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(TINY.iter().map(|s| s.to_string()));
    assert_ok(&celldiff(&args));
    let cfg = config(&run);
    assert_eq!(cfg["vae"]["likelihood"], "nb");
    assert_eq!(cfg["vae"]["norm"], "batch");
    assert_eq!(cfg["vae"]["activation"], "Relu");
    assert_eq!(cfg["diffusion_train"]["objective"], "epsilon");
    let (o, out) = generate(&run);
    assert_ok(&o);
    let a = read(&out, &ReadOptions::default()).unwrap();
    assert_eq!(a.n_obs(), 10);
    let o = celldiff([
        "train",
        "--model",
        "scld",
        "--data",
        demo_h5ad().to_str().unwrap(),
        "--vae-norm",
        "none",
        "--out",
        scratch().join("scld").to_str().unwrap(),
    ]);
    assert_bad_input(&o, &["--vae-norm", "scvaeder"]);
}

/// A run written by celldiff 0.1.0 (`tests/it/fixtures/run-0.1.0`, committed with the command
/// that made it in its README) still loads and generates after every later change of the
/// code: its checksums verify, its config parses (the `RunHeader` fields at the top level of
/// `config.json`), and the cells come out with the run's genes as integer counts, the same
/// bytes for the same seed. A change that breaks this breaks users' saved models.
#[test]
fn a_run_written_by_celldiff_0_1_0_still_loads_and_generates() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/run-0.1.0");
    let run = copy_run(&fixture);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["celldiff_version"], "0.1.0");
    let genes: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(run.join("genes.json")).unwrap()).unwrap();
    let (o, out) = generate(&run);
    assert_ok(&o);
    let a = read(&out, &ReadOptions::default()).unwrap();
    assert_eq!(a.x.shape(), (10, genes.len()));
    assert_eq!(a.var_names, genes);
    let mut integral = true;
    a.x.for_each_nonzero(|_, _, v| integral &= v >= 0.0 && v.fract() == 0.0);
    assert!(integral, "X holds counts");
    let (o2, out2) = generate(&run);
    assert_ok(&o2);
    let b = read(&out2, &ReadOptions::default()).unwrap();
    assert_eq!(format!("{:?}", a.x), format!("{:?}", b.x));
}
