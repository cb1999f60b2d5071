//! Helpers shared by the integration tests: running the binary, the demo dataset, and one tiny
//! trained run reused by every test that needs a model.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// Runs the `celldiff` binary with `args` (always `--quiet --threads 2`).
pub fn celldiff<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    std::process::Command::new(env!("CARGO_BIN_EXE_celldiff"))
        .args(["--quiet", "--threads", "2"])
        .args(args)
        .output()
        .expect("running the celldiff binary")
}

/// stderr of a finished command, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the command succeeded, printing its stderr otherwise.
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "celldiff failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// Asserts exit code 2 and that stderr mentions every one of `needles`.
pub fn assert_bad_input(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit code 2, stderr:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "stderr should mention `{n}`:\n{err}");
    }
    assert!(
        !err.contains("panicked"),
        "a panic instead of an error:\n{err}"
    );
}

/// The embedded demo dataset (pbmc68k_reduced raw counts, 700 × 765).
pub fn demo_h5ad() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/demo/pbmc68k_reduced_counts.h5ad")
}

/// A file under the shared data folder (`shared/` beside the repository).
pub fn shared_data(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(rel);
    assert!(
        p.exists(),
        "shared dataset missing: {} (expected `shared/` beside the repo)",
        p.display()
    );
    p
}

/// Flags that make `train` fast enough for tests (tiny networks, few epochs).
pub const TINY: &[&str] = &[
    "--epochs-vae",
    "8",
    "--epochs-diffusion",
    "20",
    "--hidden",
    "64,32",
    "--latent",
    "8",
    "--denoiser-width",
    "64",
    "--denoiser-depth",
    "2",
    "--time-dim",
    "16",
    "--timesteps",
    "100",
];

/// A directory that lives until the test binary exits.
pub fn scratch() -> PathBuf {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().to_path_buf();
    std::mem::forget(d);
    p
}

/// One tiny run trained on the demo data (seed 0, labels `bulk_labels`, the Gaussian decoder
/// and its count observation model: `--likelihood gaussian`), trained once per test binary and
/// shared read-only. Tests that modify a run copy it first ([`copy_run`]).
pub fn tiny_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| train_tiny(&["--likelihood", "gaussian"]))
}

/// As [`tiny_run`] with the default flags: the NB decoder (`--likelihood nb` is the default
/// on the demo's raw counts) and its library-size model.
pub fn tiny_nb_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| train_tiny(&[]))
}

fn train_tiny(extra: &[&str]) -> PathBuf {
    {
        let run = scratch().join("run");
        let mut args: Vec<String> = vec![
            "train".into(),
            "--data".into(),
            demo_h5ad().display().to_string(),
            "--labels-key".into(),
            "bulk_labels".into(),
            "--seed".into(),
            "0".into(),
            "--out".into(),
            run.display().to_string(),
        ];
        args.extend(TINY.iter().map(|s| s.to_string()));
        args.extend(extra.iter().map(|s| s.to_string()));
        assert_ok(&celldiff(&args));
        run
    }
}

/// Copies a run directory into a fresh scratch directory and returns the copy's path.
pub fn copy_run(src: &Path) -> PathBuf {
    let dst = scratch().join("run-copy");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

/// The tensor bytes of a Burn `.bpk` file: everything after its header (magic, version, the
/// metadata length and the metadata, which holds per-process random parameter ids).
pub fn bpk_tensors(path: &std::path::Path) -> Vec<u8> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(
        &b[..4],
        b"NRUB",
        "{} is not a burnpack file",
        path.display()
    );
    let len = u32::from_le_bytes([b[6], b[7], b[8], b[9]]) as usize;
    b[10 + len..].to_vec()
}
