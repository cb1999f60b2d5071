//! `train --stream` (issue 6): the streamed run equals the in-memory one, and bad uses are
//! named errors.

use crate::common::{
    TINY, assert_bad_input, assert_ok, bpk_tensors, celldiff, demo_h5ad, scratch, shared_data,
    tiny_run,
};

/// Same file content (`.bpk`: same tensors).
fn same(a: &std::path::Path, b: &std::path::Path) -> bool {
    if a.extension().is_some_and(|e| e == "bpk") {
        bpk_tensors(a) == bpk_tensors(b)
    } else {
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
    }
}

fn train_args(data: &str, out: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "train".into(),
        "--data".into(),
        data.into(),
        "--labels-key".into(),
        "bulk_labels".into(),
        "--seed".into(),
        "0".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(TINY.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The demo data (700 cells) fit in one shuffle buffer, so the streamed order is the full
/// shuffle and the saved weights are those of the in-memory run (`tiny_run`, same flags and
/// seed), bit for bit: for the Gaussian decoder with its observation model, and for the
/// default NB decoder with its library-size model (`tiny_nb_run`).
#[test]
fn streamed_run_is_byte_identical_to_the_in_memory_run() {
    let data = demo_h5ad().display().to_string();
    let nb = scratch().join("streamed-nb");
    assert_ok(&celldiff(train_args(&data, &nb, &["--stream"])));
    for f in [
        "vae.bpk",
        "denoiser_ema.bpk",
        "library_size.json",
        "latent.json",
    ] {
        assert!(
            same(&nb.join(f), &crate::common::tiny_nb_run().join(f)),
            "{f} differs between the streamed and the in-memory NB run"
        );
    }
    let mem = tiny_run();
    let out = scratch().join("streamed");
    assert_ok(&celldiff(train_args(
        &data,
        &out,
        &["--stream", "--likelihood", "gaussian"],
    )));
    for f in [
        "vae.bpk",
        "denoiser.bpk",
        "denoiser_ema.bpk",
        "latent.json",
        "preprocess.json",
        "observation.json",
        "genes.json",
    ] {
        assert!(
            same(&out.join(f), &mem.join(f)),
            "{f} differs between the streamed and the in-memory run"
        );
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vae_train"]["shuffle"]["kind"], "blocks");
    assert_eq!(config["vae_train"]["shuffle"]["block_cells"], 1024);
}

/// Several shuffle buffers: streamed and in-memory runs with the same `--shuffle-block` agree.
#[test]
fn block_shuffle_in_memory_reproduces_a_streamed_run() {
    let data = demo_h5ad().display().to_string();
    let flags = [
        "--shuffle-block",
        "100",
        "--shuffle-buffer",
        "2",
        "--no-observation",
    ];
    let a = scratch().join("a");
    let b = scratch().join("b");
    let mut streamed = flags.to_vec();
    streamed.push("--stream");
    assert_ok(&celldiff(train_args(&data, &a, &streamed)));
    assert_ok(&celldiff(train_args(&data, &b, &flags)));
    for f in ["vae.bpk", "denoiser_ema.bpk"] {
        assert!(same(&a.join(f), &b.join(f)), "{f} differs");
    }
}

#[test]
fn stream_refuses_a_10x_folder_scld_and_a_zero_block() {
    let out = scratch().join("bad");
    let tenx = shared_data("pbmc68k_reduced/counts_mtx")
        .display()
        .to_string();
    assert_bad_input(
        &celldiff(train_args(&tenx, &out, &["--stream"])),
        &["--stream", "is a directory"],
    );
    let data = demo_h5ad().display().to_string();
    assert_bad_input(
        &celldiff(train_args(&data, &out, &["--stream", "--model", "scld"])),
        &["--stream", "scvaeder"],
    );
    assert_bad_input(
        &celldiff(train_args(
            &data,
            &out,
            &["--stream", "--shuffle-block", "0"],
        )),
        &["--shuffle-block"],
    );
    assert!(!out.exists(), "a failed run left {}", out.display());
}
