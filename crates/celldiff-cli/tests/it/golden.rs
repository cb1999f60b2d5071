//! Golden outputs (issue 19, "behaviour must not change"): every method's training, sampling
//! and analysis commands run on the embedded demo data (`perturb`: Kang) with tiny settings, and what they write
//! is compared with `tests/it/golden.json`, recorded on the code before the redesign.
//!
//! Each output file gives one entry:
//! - `.json`/`.jsonl`: its numeric leaves (keys named `seconds` left out: wall-clock times);
//!   no hash, since they also hold the scratch paths of the run;
//! - `.h5ad`: the SHA-256 of its content (every value of `X`, `layers`, `obsm`, `obs`, `var`),
//!   the numbers in `uns` (but `seconds`) and the sums of `X`, `X²` and each `obsm` matrix;
//! - `.bpk` weights: the SHA-256 of the tensor bytes (the header holds random parameter ids);
//! - anything else (PNG figures, TSV links): the SHA-256 of its bytes.
//!
//! Floating-point results depend on the CPU (AVX-512 vs AVX2 kernels, the GEMM's blocking by
//! cache size), so the bytes are compared only on a machine with the recorded CPU fingerprint
//! (`vendor_id`, `cpu family`, `model`, `cache size`, AVX-512 or not): there every hash and
//! every number must be identical. On another CPU the numbers must agree within 10 % (or 0.02
//! absolute; KS statistics 0.1), which still catches a changed seed, step or default; fields
//! named after results (cluster and dimension ids) are compared where both runs have them,
//! and ranked dimension ids only on the recorded CPU.
//!
//! Re-record (only where a change of behaviour is intended and written in the closing note):
//! `CELLDIFF_BLESS_GOLDEN=1 cargo test -p celldiff-cli --test it golden`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::analysis::{kang, kang_run};
use crate::common::{assert_ok, bpk_tensors, celldiff, demo_h5ad, scratch, tiny_nb_run, tiny_run};
use crate::graph::graph_args;
use crate::scld::tiny_scld_run;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/golden.json");

/// The CPU facts that decide floating-point bytes, from `/proc/cpuinfo`.
fn fingerprint() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let avx512 = field("flags").split(' ').any(|f| f == "avx512f");
    format!(
        "{} {} family {} model {} cache {} avx512 {avx512}",
        std::env::consts::ARCH,
        field("vendor_id"),
        field("cpu family"),
        field("model"),
        field("cache size"),
    )
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of an AnnData's content: names, `obs`/`var`, the bits of every stored value of `X`,
/// `layers` and `obsm`. `uns` is compared by its numbers instead: it holds wall-clock times.
fn h5ad_content(a: &celldiff::AnnData) -> String {
    let mut h = Sha256::new();
    h.update(format!("{:?}", (&a.obs_names, &a.var_names, &a.obs, &a.var)).as_bytes());
    let mut matrix = |name: &str, m: &celldiff::anndata::Matrix| {
        h.update(format!("{name} {:?}", m.shape()).as_bytes());
        m.for_each_nonzero(|i, j, v| {
            h.update((i as u64).to_le_bytes());
            h.update((j as u64).to_le_bytes());
            h.update(v.to_bits().to_le_bytes());
        });
    };
    matrix("X", &a.x);
    for (k, m) in &a.layers {
        matrix(k, m);
    }
    for (k, m) in &a.obsm {
        h.update(format!("obsm {k} {} {}", m.n_rows, m.n_cols).as_bytes());
        m.data
            .iter()
            .for_each(|v| h.update(v.to_bits().to_le_bytes()));
    }
    hex(&h.finalize())
}

/// Numeric leaves of a JSON value, by path; keys named `seconds` are left out.
fn numbers(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
    match v {
        Value::Number(n) => {
            out.insert(prefix.to_string(), n.as_f64().unwrap());
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| numbers(&format!("{prefix}[{i}]"), x, out)),
        Value::Object(m) => m
            .iter()
            .filter(|(k, _)| k.as_str() != "seconds")
            .for_each(|(k, x)| numbers(&format!("{prefix}.{k}"), x, out)),
        _ => {}
    }
}

/// The entry of one output file (see the module docs).
fn entry(path: &Path) -> Value {
    let name = path.file_name().unwrap().to_string_lossy();
    let mut values = BTreeMap::new();
    let mut hash = None;
    if name.ends_with(".jsonl") {
        let text = std::fs::read_to_string(path).unwrap();
        for (i, line) in text.lines().enumerate() {
            numbers(
                &format!("{i}"),
                &serde_json::from_str(line).unwrap(),
                &mut values,
            );
        }
    } else if name.ends_with(".json") {
        let v = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        numbers("", &v, &mut values);
    } else if name.ends_with(".h5ad") {
        let a = celldiff::io::read(path, &Default::default()).unwrap();
        hash = Some(h5ad_content(&a));
        numbers("uns", &Value::Object(a.uns.clone()), &mut values);
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        a.x.for_each_nonzero(|_, _, v| {
            s += v as f64;
            s2 += (v as f64) * (v as f64);
        });
        values.insert("X.sum".into(), s);
        values.insert("X.sum_sq".into(), s2);
        for (k, m) in &a.obsm {
            let t: f64 = m.data.iter().map(|&v| v as f64).sum();
            values.insert(format!("obsm.{k}.sum"), t);
        }
    } else if name.ends_with(".bpk") {
        hash = Some(hex(&Sha256::digest(bpk_tensors(path))));
    } else {
        hash = Some(hex(&Sha256::digest(std::fs::read(path).unwrap())));
    }
    // Numbers as Rust's shortest round-trip text: serde_json's float parser may be one ulp off.
    let values: BTreeMap<String, String> = values
        .into_iter()
        .map(|(k, v)| (k, format!("{v:?}")))
        .collect();
    json!({ "sha256": hash, "values": values })
}

/// Entries of every file in `dir` (not recursing; `SHA256SUMS` left out: it hashes
/// `config.json`, which holds wall-clock times), named `step/file`.
fn entries(step: &str, dir: &Path, items: &mut BTreeMap<String, Value>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with("SHA256SUMS"))
        .collect();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        items.insert(format!("{step}/{name}"), entry(&f));
    }
}

fn run_ok(args: &[&str]) {
    assert_ok(&celldiff(args));
}

/// Runs every golden command; returns the entries by `step/file`.
fn outputs() -> BTreeMap<String, Value> {
    let demo = demo_h5ad();
    let demo = demo.to_str().unwrap();
    let mut items = BTreeMap::new();
    // scVAEDer: train (the shared tiny NB run), generate, interpolate on the Gaussian run.
    entries("train_scvaeder", tiny_nb_run(), &mut items);
    let d = scratch().join("generate");
    std::fs::create_dir_all(&d).unwrap();
    let g = d.join("gen.h5ad");
    let run = tiny_nb_run().to_str().unwrap();
    run_ok(&[
        "generate",
        "--run",
        run,
        "-n",
        "64",
        "--seed",
        "3",
        "-o",
        g.to_str().unwrap(),
    ]);
    let g2 = d.join("gen_ddim.h5ad");
    run_ok(&[
        "generate",
        "--run",
        run,
        "-n",
        "64",
        "--seed",
        "3",
        "--sampler",
        "ddim",
        "--steps",
        "10",
        "-o",
        g2.to_str().unwrap(),
    ]);
    entries("generate", &d, &mut items);
    let d = scratch().join("interpolate");
    std::fs::create_dir_all(&d).unwrap();
    let o = d.join("interp.h5ad");
    run_ok(&[
        "interpolate",
        "--run",
        tiny_run().to_str().unwrap(),
        "--data",
        demo,
        "--key",
        "bulk_labels",
        "--from",
        "CD14+ Monocyte",
        "--to",
        "CD19+ B",
        "--n-steps",
        "20",
        "--seed",
        "0",
        "-o",
        o.to_str().unwrap(),
    ]);
    entries("interpolate", &d, &mut items);
    // perturb: latent arithmetic on the tiny Kang run that never saw stimulated CD4T cells.
    let d = scratch().join("perturb");
    std::fs::create_dir_all(&d).unwrap();
    let o = d.join("p.h5ad");
    run_ok(&[
        "perturb",
        "--run",
        kang_run().to_str().unwrap(),
        "--data",
        kang().to_str().unwrap(),
        "--predict",
        "CD4T",
        "--steps",
        "20",
        "-o",
        o.to_str().unwrap(),
    ]);
    entries("perturb", &d, &mut items);
    // The demo protocol with tiny networks.
    let d = scratch().join("demo");
    let mut args = vec![
        "demo",
        "--data",
        demo,
        "--seed",
        "0",
        "-o",
        d.to_str().unwrap(),
    ];
    args.extend_from_slice(crate::common::TINY);
    run_ok(&args);
    entries("demo", &d, &mut items);
    // SCLD: train (the shared tiny run) and generate with guidance.
    entries("train_scld", tiny_scld_run(), &mut items);
    let d = scratch().join("scld_generate");
    std::fs::create_dir_all(&d).unwrap();
    let o = d.join("gen.h5ad");
    run_ok(&[
        "generate",
        "--run",
        tiny_scld_run().to_str().unwrap(),
        "-n",
        "32",
        "--sampler",
        "ddim",
        "--condition",
        "CD14+ Monocyte",
        "--seed",
        "2",
        "-o",
        o.to_str().unwrap(),
    ]);
    entries("scld_generate", &d, &mut items);
    // DiffVAE: identify, classify train, graph; the scanpy-style cluster.
    let d = scratch().join("identify");
    std::fs::create_dir_all(&d).unwrap();
    let o = d.join("ident.h5ad");
    run_ok(&[
        "identify",
        "--data",
        demo,
        "--labels-key",
        "bulk_labels",
        "--epochs",
        "5",
        "--tsne-epochs",
        "100",
        "--seed",
        "0",
        "-o",
        o.to_str().unwrap(),
    ]);
    entries("identify", &d, &mut items);
    let d = scratch().join("classify");
    run_ok(&[
        "classify",
        "train",
        "--data",
        demo,
        "--labels-key",
        "bulk_labels",
        "--classifier-epochs",
        "5",
        "--seed",
        "0",
        "-o",
        d.to_str().unwrap(),
    ]);
    entries("classify", &d, &mut items);
    let d = scratch().join("graph");
    std::fs::create_dir_all(&d).unwrap();
    let o = d.join("g.h5ad");
    let args = graph_args(&o, &["--seed", "0"]);
    assert_ok(&celldiff(&args));
    entries("graph", &d, &mut items);
    let d = scratch().join("cluster");
    std::fs::create_dir_all(&d).unwrap();
    let o = d.join("c.h5ad");
    run_ok(&[
        "cluster",
        "--data",
        demo,
        "--umap",
        "--seed",
        "0",
        "-o",
        o.to_str().unwrap(),
    ]);
    entries("cluster", &d, &mut items);
    items
}

/// Agreement on another CPU: within 10 % (or 0.02 absolute); Kolmogorov–Smirnov statistics
/// (`ks_*`: steps of 1/n over ~140 cells, whose sampling noise is ~0.1) within 0.1 absolute.
fn close(key: &str, a: f64, b: f64) -> bool {
    let abs: f64 = if key.contains("ks_") { 0.1 } else { 0.02 };
    a == b || (a - b).abs() <= abs.max(0.1 * a.abs().max(b.abs())) || (a.is_nan() && b.is_nan())
}

#[test]
fn outputs_match_the_golden_record() {
    let items = outputs();
    let fp = fingerprint();
    if std::env::var_os("CELLDIFF_BLESS_GOLDEN").is_some() {
        let record = json!({ "fingerprint": fp, "items": items });
        std::fs::write(
            GOLDEN,
            serde_json::to_string_pretty(&record).unwrap() + "\n",
        )
        .unwrap();
        return;
    }
    let record: Value = serde_json::from_str(&std::fs::read_to_string(GOLDEN).unwrap()).unwrap();
    let exact = record["fingerprint"] == fp;
    let golden = record["items"].as_object().unwrap();
    let names = |m: &mut dyn Iterator<Item = &String>| m.cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&mut golden.keys()),
        names(&mut items.keys()),
        "the commands wrote other files than recorded"
    );
    let mut diffs = Vec::new();
    for (name, want) in golden {
        let got = &items[name];
        if exact && want["sha256"] != got["sha256"] {
            diffs.push(format!("{name}: bytes differ"));
        }
        let (w, g) = (
            want["values"].as_object().unwrap(),
            got["values"].as_object().unwrap(),
        );
        // Some field names come from the results (cluster and latent-dimension ids of
        // `identify`), so on another CPU only the fields both have are compared, and at least
        // half of the recorded ones must be there.
        if names(&mut w.keys()) != names(&mut g.keys()) {
            let common = w.keys().filter(|k| g.contains_key(*k)).count();
            if exact || 2 * common < w.len() {
                diffs.push(format!(
                    "{name}: other numeric fields ({common} of {} recorded ones present)",
                    w.len()
                ));
                continue;
            }
        }
        // `identify`'s ranked dimension ids (`…dimensions[i]`) are labels, not measurements:
        // on another CPU two close shares may swap ranks, so they are compared exactly only.
        let ids = |k: &str| !exact && k.contains(".dimensions[");
        for (k, wv) in w.iter().filter(|(k, _)| g.contains_key(*k) && !ids(k)) {
            let num = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
            let (a, b) = (num(wv), num(&g[k]));
            let same = if exact {
                a.to_bits() == b.to_bits()
            } else {
                close(k, a, b)
            };
            if !same {
                diffs.push(format!("{name} {k}: recorded {a}, now {b}"));
            }
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differences from tests/it/golden.json ({} comparison; recorded on `{}`, this \
         machine `{fp}`):\n{}",
        diffs.len(),
        if exact { "exact" } else { "tolerant" },
        record["fingerprint"],
        diffs.join("\n")
    );
}
