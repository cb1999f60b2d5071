//! The run directory: a trained model saved with everything it was trained on and checked on
//! load (like scvi-tools' `model.save`: weights plus genes, preprocessing, label categories,
//! checksums). One format for every method: scVAEDer runs ([`crate::scvaeder::Run`]), SCLD
//! runs ([`crate::scld::ScldRun`]) and classifier directories
//! ([`crate::diffvae::classify::Classifier`]) implement [`RunFiles`]; saving and checking are
//! written once, here.
//!
//! Layout of `RUN_DIR/`:
//! - `config.json`: the method's configuration, which embeds the common [`RunHeader`]
//!   (`celldiff_version`, `model`, `data`, `layer`, `use_raw`, `exclude`) and gets
//!   `run_format` ([`RUN_FORMAT`]) on save;
//! - `genes.json` ([`GENES_JSON`]): the model's genes as a JSON array, in input order (any name
//!   round-trips: empty, with newlines). Runs written before it have `genes.txt`, one per
//!   line; still read;
//! - the method's own files (weights as Burn burnpack `.bpk`, `preprocess.json`, ...; see
//!   each [`RunFiles`] implementation);
//! - `metrics.jsonl`: one [`EpochRecord`] per line (informational, not checksummed);
//! - `SHA256SUMS` ([`MANIFEST`]): the SHA-256 of every other file, in `sha256sum` format.
//!
//! Loading ([`RunFiles::load`]) checks, in order, and names the file and field of the first
//! failure: the model kind; the version that wrote the run (a newer major version is refused,
//! [`check_version`]); every file against `SHA256SUMS` (a run without it — written before
//! checksums — loads with a `tracing` warning, which the `celldiff` binary prints as
//! `warning: ...`); then the method checks every value's range and length against its config.
//!
//! A run is written into a temporary sibling directory and renamed into place, so a failed
//! or interrupted `train` never leaves a half-written run; an existing run is only replaced
//! with `force`, and only when it is a celldiff run.

use std::fs;
use std::io::Write;
use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::output::OutputKind;
use crate::train::EpochRecord;

mod check;
mod open;

pub(crate) use check::*;
pub use open::RunDir;
pub use open::check_version;
use open::write_manifest;

/// The fields every run directory's `config.json` starts with: what wrote it, which method,
/// and where its training data came from. Each method's config embeds it with
/// `#[serde(flatten)]`, so the keys stay at the top level of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    /// celldiff version that wrote the run.
    pub celldiff_version: String,
    /// The method (`"scvaeder"`, `"scld"`, `"classifier"`): checked on load.
    pub model: String,
    /// Input file or directory.
    pub data: String,
    /// Layer used as X (`--layer`), if any.
    #[serde(default)]
    pub layer: Option<String>,
    /// Whether `raw/X` was used.
    #[serde(default)]
    pub use_raw: bool,
    /// Cells excluded from training (`--exclude`), if any.
    #[serde(default)]
    pub exclude: Option<String>,
}

impl RunHeader {
    /// The header of a run of `model` written now by this celldiff from `source`.
    pub fn new(model: &str, source: &DataSource) -> Self {
        Self {
            celldiff_version: env!("CARGO_PKG_VERSION").to_string(),
            model: model.to_string(),
            data: source.path.clone(),
            layer: source.layer.clone(),
            use_raw: source.use_raw,
            exclude: source.exclude.clone(),
        }
    }
}

/// A trained model that lives in a run directory: the one save/load/check of every method.
/// An implementation says which files it has ([`RunFiles::write_files`]) and how to read and
/// check them ([`RunFiles::read`]); the config, the genes, the atomic write, the version and
/// the checksums are handled here.
pub trait RunFiles: Sized {
    /// `model` in `config.json`.
    const MODEL: &'static str;
    /// What the directory is called in errors (`"run directory"`, `"classifier directory"`).
    const WHAT: &'static str;
    /// The method's `config.json` (embedding a [`RunHeader`]).
    type Config: Serialize + DeserializeOwned;

    /// The config to write.
    fn config(&self) -> &Self::Config;
    /// The model's genes, in input order.
    fn genes(&self) -> &[String];
    /// Writes the method's own files into the (temporary) run directory `dir`.
    ///
    /// # Errors
    /// [`Error::Io`] on write failures.
    fn write_files(&self, dir: &Path) -> Result<()>;
    /// The error message for a run of another method `found`.
    fn wrong_model(found: &str) -> String;
    /// Reads and checks the method's files from `rd` (already checksum-verified), given its
    /// parsed `config`.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file and field of a value out of range or of the wrong
    /// length; [`Error::Io`] for a missing file.
    fn read(rd: &RunDir, config: Self::Config, device: &Device) -> Result<Self>;

    /// Writes the run directory `dir` atomically (temporary directory + rename): `config.json`
    /// with `run_format`, [`GENES_JSON`], the method's files, then the [`MANIFEST`].
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if `dir` exists and `force` is false; [`Error::Refused`] if
    /// `dir` is not a celldiff run; [`Error::Io`] on write failures (the temporary directory
    /// is removed).
    fn save(&self, dir: &Path, force: bool) -> Result<()> {
        save_run_dir(dir, force, self.config(), self.genes(), |tmp| {
            self.write_files(tmp)
        })
    }

    /// Loads and checks the run directory `dir` (module docs), with weights on `device`.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing directory or file; [`Error::Format`] naming the file and the
    /// field for another method, a newer celldiff version, a checksum mismatch, unreadable
    /// JSON, a value out of range, or corrupt/truncated weights.
    fn load(dir: &Path, device: &Device) -> Result<Self> {
        let rd = RunDir::open(dir, Self::WHAT, Self::MODEL, Self::wrong_model)?;
        let config = rd.config()?;
        Self::read(&rd, config, device)
    }
}

/// Where the training data came from (recorded in `config.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataSource {
    /// File or directory read.
    pub path: String,
    /// `--layer`.
    pub layer: Option<String>,
    /// `--use-raw`.
    pub use_raw: bool,
    /// `--exclude` expression of the cells left out of training (e.g. the held-out
    /// stimulated cells of a perturbation task).
    pub exclude: Option<String>,
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Internal(format!("serialising {}: {e}", path.display())))?;
    fs::write(path, s).map_err(|e| Error::io(path, e))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let s = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&s).map_err(|e| Error::format(path, "(json)", e.to_string()))
}

pub(crate) fn save_module<M: Module>(m: &M, path: &Path) -> Result<()> {
    m.clone()
        .save_file(path)
        .map_err(|e| Error::Internal(format!("writing weights {}: {e:?}", path.display())))
}

pub(crate) fn load_module<M: Module>(m: M, path: &Path) -> Result<M> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "missing"),
        ));
    }
    // Burn can panic on some malformed inputs; a corrupt file must be an error, not a crash.
    let p = path.to_path_buf();
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || m.try_load_file(&p)));
    match res {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(Error::format(
            path,
            "weights",
            format!("corrupt, truncated or from another architecture: {e:?}"),
        )),
        Err(_) => Err(Error::format(
            path,
            "weights",
            "corrupt or truncated weights file",
        )),
    }
}

/// The `model` field of a run's `config.json` (`"scvaeder"`, `"scld"`).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Format`] if it is not JSON or has no
/// `model` string.
pub fn read_model_name(config_json: &Path) -> Result<String> {
    let v: serde_json::Value = read_json(config_json)?;
    v.get("model")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::format(config_json, "model", "missing or not a string"))
}

/// Writes a run directory atomically and never over anything celldiff did not write: `write`
/// fills a fresh temporary sibling directory, which is then renamed onto `dir` (see
/// [`crate::io::output::write_dir`] with [`OutputKind::RunDir`]). On any error the temporary
/// directory is removed and `dir` is left as it was. Shared by scVAEDer, SCLD and classifier
/// runs.
///
/// # Errors
/// [`Error::AlreadyExists`] if `dir` exists and `force` is false; [`Error::Refused`] if `dir` is
/// `.`/`..`, not a celldiff run, a file or a link, or appeared while `write` ran; whatever
/// `write` returns; [`Error::Io`] for the directory operations.
pub(crate) fn save_dir_atomically(
    dir: &Path,
    force: bool,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    crate::io::output::write_dir(dir, force, OutputKind::RunDir, write)
}

/// Writes [`GENES_JSON`] (a JSON array, so any name round-trips: empty, with newlines, ...)
/// into `dir`.
pub(crate) fn write_genes(dir: &Path, genes: &[String]) -> Result<()> {
    write_json(&dir.join(GENES_JSON), &genes)
}

/// Reads [`LEGACY_GENES_TXT`] (one gene per line, empty lines skipped) of a run written
/// before [`GENES_JSON`].
pub(crate) fn read_genes(dir: &Path) -> Result<Vec<String>> {
    let gp = dir.join(LEGACY_GENES_TXT);
    Ok(fs::read_to_string(&gp)
        .map_err(|e| Error::io(&gp, e))?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Writes the training history as `metrics.jsonl` (one [`EpochRecord`] per line) into `dir`.
pub(crate) fn write_history(dir: &Path, history: &[EpochRecord]) -> Result<()> {
    let p = dir.join("metrics.jsonl");
    let mut f = fs::File::create(&p).map_err(|e| Error::io(&p, e))?;
    for r in history {
        let line = serde_json::to_string(r).map_err(|e| Error::Internal(e.to_string()))?;
        writeln!(f, "{line}").map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// Reads `metrics.jsonl` from `dir` (missing file or unreadable lines: skipped — the history is
/// informational).
pub(crate) fn read_history(dir: &Path) -> Vec<EpochRecord> {
    fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|s| {
            s.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

pub use crate::io::output::check_overwrite;

/// The library-size model of a count-likelihood run ([`LibrarySizeModel`](crate::counts::LibrarySizeModel)).
pub const LIBRARY_JSON: &str = "library_size.json";

/// The checksum manifest of a run directory: one `SHA-256  NAME` line per file the model
/// needs, in `sha256sum` format (`cd RUN && sha256sum -c SHA256SUMS` checks it by hand).
pub const MANIFEST: &str = "SHA256SUMS";

/// The gene list of a run directory: a JSON array of strings, in the model's column order.
pub const GENES_JSON: &str = "genes.json";

/// The gene list of runs written before [`GENES_JSON`]: one name per line (read, never written).
pub const LEGACY_GENES_TXT: &str = "genes.txt";

/// `run_format` written into every `config.json`: 2 = [`GENES_JSON`] + [`MANIFEST`]. Runs
/// without the field (format 1: `genes.txt`, no checksums) still load, with a warning.
pub const RUN_FORMAT: u64 = 2;

/// Writes a run directory in the shared format, atomically (see [`save_dir_atomically`]):
/// `config.json` (`config` plus `run_format`), [`GENES_JSON`], whatever `write` adds, then
/// [`MANIFEST`] over all of it. Used by scVAEDer runs, SCLD runs and classifier directories.
///
/// # Errors
/// [`Error::AlreadyExists`] if `dir` exists and `force` is false; whatever `write` returns;
/// [`Error::Io`] on write failures; [`Error::Internal`] if `config` is not a JSON object.
pub(crate) fn save_run_dir(
    dir: &Path,
    force: bool,
    config: &impl Serialize,
    genes: &[String],
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let mut cfg = serde_json::to_value(config)
        .map_err(|e| Error::Internal(format!("serialising config.json: {e}")))?;
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| Error::Internal("config.json is not a JSON object".into()))?;
    obj.insert("run_format".into(), RUN_FORMAT.into());
    save_dir_atomically(dir, force, |tmp| {
        write_json(&tmp.join("config.json"), &cfg)?;
        write_genes(tmp, genes)?;
        write(tmp)?;
        write_manifest(tmp)
    })
}
