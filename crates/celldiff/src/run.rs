//! The run directory: everything a trained scVAEDer model needs, saved together and checked
//! on load (like scvi-tools' `model.save`: weights plus what the model was trained on).
//!
//! Layout of `RUN_DIR/`:
//! - `config.json`: [`RunConfig`] — data source, preprocessing, model and training parameters,
//!   noise schedule (with ᾱ_T), seed, the celldiff version that wrote it, and `run_format`
//!   ([`RUN_FORMAT`]).
//! - `genes.json`: the model's genes as a JSON array, in input order (any name round-trips:
//!   empty, with newlines). Runs written before it have `genes.txt`, one per line; still read.
//! - `preprocess.json`: the fitted preprocessing ([`FittedPreprocess`]) re-applied to new cells.
//! - `latent.json`: per-dimension latent standardisation ([`LatentStats`]).
//! - `vae.bpk`, `denoiser.bpk`, `denoiser_ema.bpk`: Burn burnpack weights.
//! - `observation.json`: the count observation model ([`CountObservation`]) of a Gaussian
//!   decoder, when the model's space is log1p-normalised counts (absent otherwise).
//! - `library_size.json`: the library-size model ([`LibrarySizeModel`]) of a count-likelihood
//!   (`nb`/`zinb`) decoder (absent for a Gaussian one).
//! - `metrics.jsonl`: one [`EpochRecord`] per line (informational, not checksummed).
//! - `SHA256SUMS` ([`MANIFEST`]): the SHA-256 of every other file, in `sha256sum` format.
//!
//! Loading checks, in order, and names the file and field of the first failure: the model
//! kind; the version that wrote the run (a newer major version is refused, [`check_version`]);
//! every file against `SHA256SUMS` (a run without it — written before checksums — loads with
//! a `tracing` warning, which the `celldiff` binary prints as `warning: ...`); then every
//! value's range and length against the config (dimensions, training parameters, the noise
//! schedule against its recorded ᾱ_T, latent std > 0, size factors, dispersion, ...).
//! SCLD runs ([`crate::scld`]) and classifier directories ([`crate::diffvae::classify`]) share this
//! format and its code (`save_run_dir`, `RunDir`).
//!
//! A run is written into a temporary sibling directory and renamed into place, so a failed
//! or interrupted `train` never leaves a half-written run; an existing run is only replaced
//! with `force`.

use std::fs;
use std::io::Write;
use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::counts::{LibraryModelKind, LibrarySizeModel};
use crate::error::{Error, Result};
use crate::io::output::OutputKind;
use crate::models::{Denoiser, DenoiserConfig, Likelihood, Vae, VaeConfig};
use crate::observation::CountObservation;
use crate::pp::{FittedPreprocess, PreprocessConfig};
use crate::schedulers::{NoiseSchedule, ScheduleConfig};
use crate::train::{DiffusionTrainConfig, EpochRecord, LatentStats, VaeTrainConfig};

/// Everything about how a run was trained (`config.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// celldiff version that wrote the run.
    pub celldiff_version: String,
    /// Model family (`"scvaeder"`).
    pub model: String,
    /// Input file or directory.
    pub data: String,
    /// Layer used as X (`--layer`), if any.
    pub layer: Option<String>,
    /// Whether `raw/X` was used.
    pub use_raw: bool,
    /// Cells excluded from training (`celldiff train --exclude`), if any.
    #[serde(default)]
    pub exclude: Option<String>,
    /// `obs` column with labels, if given (its categories are in `labels`).
    pub labels_key: Option<String>,
    /// Label categories of `labels_key`.
    pub labels: Vec<String>,
    /// Cells used for training (after filtering and any split).
    pub n_cells: usize,
    /// Preprocessing parameters.
    pub preprocess: PreprocessConfig,
    /// VAE architecture.
    pub vae: VaeConfig,
    /// VAE training parameters.
    pub vae_train: VaeTrainConfig,
    /// Denoiser architecture.
    pub denoiser: DenoiserConfig,
    /// Denoiser training parameters.
    pub diffusion_train: DiffusionTrainConfig,
    /// Noise schedule.
    pub schedule: ScheduleConfig,
    /// ᾱ_T of the schedule (1 − ᾱ_T is the fraction of noise variance at the last step).
    pub alphas_cumprod_terminal: f64,
    /// How generated cells get their library size: `joint` runs diffuse it with the latent
    /// (the denoiser has `n_latent + 2` dimensions); `cluster` for runs written before it.
    #[serde(default)]
    pub library_model: LibraryModelKind,
    /// Global seed.
    pub seed: u64,
    /// Wall time of each stage in seconds (`vae`, `diffusion`, ...).
    pub seconds: serde_json::Map<String, serde_json::Value>,
}

/// A trained run held in memory.
#[derive(Debug, Clone)]
pub struct Run {
    /// `config.json`.
    pub config: RunConfig,
    /// The model's genes, in input order (`genes.json`).
    pub genes: Vec<String>,
    /// The fitted preprocessing (`preprocess.json`).
    pub preprocess: FittedPreprocess,
    /// Latent standardisation (`latent.json`).
    pub latent: LatentStats,
    /// The VAE (evaluation mode).
    pub vae: Vae,
    /// The denoiser's last weights.
    pub denoiser: Denoiser,
    /// The EMA denoiser (used for sampling).
    pub denoiser_ema: Denoiser,
    /// Count observation model for decoded cells (`observation.json`), if the model's space is
    /// log1p-normalised counts.
    pub observation: Option<CountObservation>,
    /// Library-size model of a count-likelihood decoder (`library_size.json`).
    pub library: Option<LibrarySizeModel>,
    /// Training history.
    pub history: Vec<EpochRecord>,
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

/// Checks an output path before any work ([`crate::io::output::check_output`] without input
/// paths): an existing directory is checked as a run directory ([`OutputKind::RunDir`]),
/// anything else as a file. Commands that read inputs should call `check_output` with them.
///
/// # Errors
/// [`Error::AlreadyExists`] if `path` exists and `force` is false; [`Error::Refused`] for `.`,
/// `..`, links, FIFOs, devices and folders celldiff did not write.
pub fn check_overwrite(path: &Path, force: bool) -> Result<()> {
    let kind = if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        OutputKind::RunDir
    } else {
        OutputKind::File
    };
    crate::io::output::check_output(path, force, kind, &[])
}

impl Run {
    /// Writes the run directory `dir` atomically (temp dir + rename), with [`GENES_JSON`] and
    /// the [`MANIFEST`] of checksums (module docs).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if `dir` exists and `force` is false; [`Error::Io`] on write
    /// failures (the temporary directory is removed).
    pub fn save(&self, dir: &Path, force: bool) -> Result<()> {
        save_run_dir(dir, force, &self.config, &self.genes, |tmp| {
            write_json(&tmp.join("preprocess.json"), &self.preprocess)?;
            write_json(&tmp.join("latent.json"), &self.latent)?;
            if let Some(o) = &self.observation {
                write_json(&tmp.join("observation.json"), o)?;
            }
            if let Some(l) = &self.library {
                write_json(&tmp.join(LIBRARY_JSON), l)?;
            }
            save_module(&self.vae, &tmp.join("vae.bpk"))?;
            save_module(&self.denoiser, &tmp.join("denoiser.bpk"))?;
            save_module(&self.denoiser_ema, &tmp.join("denoiser_ema.bpk"))?;
            write_history(tmp, &self.history)
        })
    }

    /// Loads and checks a run directory: the version that wrote it, every file against its
    /// SHA-256 in [`MANIFEST`] (runs written before checksums load with a warning), every
    /// parameter's range and length against the config (dimensions, training parameters, the
    /// noise schedule and its ᾱ_T, latent statistics, preprocessing, observation model), and
    /// the weights.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing directory or file; [`Error::Format`] naming the file and
    /// the field for another model, a newer celldiff version, a checksum mismatch, unreadable
    /// JSON, a value out of range or of the wrong length, or corrupt/truncated weights.
    pub fn load(dir: &Path, device: &Device) -> Result<Run> {
        let rd = RunDir::open(dir, "run directory", "scvaeder", |model| {
            format!(
                "this run was trained with --model {model}; this command needs a --model \
                 scvaeder run"
            )
        })?;
        let cp = rd.path("config.json");
        let config: RunConfig = rd.config()?;
        config.check(&cp)?;
        let (genes, _) = rd.genes(config.vae.n_genes, "the VAE in config.json")?;
        let preprocess: FittedPreprocess = rd.json("preprocess.json")?;
        check_preprocess(&rd.path("preprocess.json"), &preprocess, &genes)?;
        let latent: LatentStats = rd.json("latent.json")?;
        latent.check(&rd.path("latent.json"), config.vae.n_latent)?;
        let observation: Option<CountObservation> = rd.optional_json("observation.json")?;
        if let Some(o) = &observation {
            o.check(&rd.path("observation.json"))?;
        }
        let library = rd.library(config.vae.likelihood, config.vae.n_latent)?;
        if (config.library_model == LibraryModelKind::Joint)
            != library.as_ref().is_some_and(|l| l.joint.is_some())
        {
            return Err(Error::format(
                rd.path(LIBRARY_JSON),
                "joint",
                "present for exactly the runs with library_model joint in config.json",
            ));
        }
        let vae = rd.module(config.vae.init(device), "vae.bpk")?.valid();
        let denoiser = rd.module(config.denoiser.init(device), "denoiser.bpk")?;
        let denoiser_ema = rd.module(config.denoiser.init(device), "denoiser_ema.bpk")?;
        let history = rd.history();
        Ok(Run {
            config,
            genes,
            preprocess,
            latent,
            vae,
            denoiser,
            denoiser_ema,
            observation,
            library,
            history,
        })
    }

    /// The run's noise schedule.
    ///
    /// # Errors
    /// [`Error::Param`] if the stored schedule is invalid.
    pub fn schedule(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::new(&self.config.schedule)
    }
}

// ---------------------------------------------------------------------------------------------
// The run-directory format shared by scVAEDer runs, SCLD runs and classifier directories:
// `config.json` (with `run_format` and `celldiff_version`), `genes.json`, the model's own files,
// and `SHA256SUMS` over all of them. Saving and checking live here once; each model only says
// which files it has and what their values must satisfy.
// ---------------------------------------------------------------------------------------------

impl RunDir {
    /// The run's `library_size.json`, checked against the latent width `n_latent`: required
    /// for a count `likelihood`, `None` when absent otherwise.
    ///
    /// # Errors
    /// [`Error::Format`] for a missing file of a count-likelihood run, unreadable JSON or
    /// values out of range.
    pub fn library(
        &self,
        likelihood: Likelihood,
        n_latent: usize,
    ) -> Result<Option<LibrarySizeModel>> {
        let library: Option<LibrarySizeModel> = self.optional_json(LIBRARY_JSON)?;
        match (&library, likelihood.is_count()) {
            (Some(l), true) => l.check(&self.path(LIBRARY_JSON), n_latent)?,
            (None, true) => {
                return Err(Error::format(
                    self.path(LIBRARY_JSON),
                    "(file)",
                    format!(
                        "missing: a run with the {} likelihood needs its library-size model",
                        likelihood.name()
                    ),
                ));
            }
            _ => {}
        }
        Ok(library)
    }
}

/// The library-size model of a count-likelihood run ([`LibrarySizeModel`]).
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

/// Files of a run directory that no model reads back, so the manifest leaves them out.
const UNSEALED: &[&str] = &["metrics.jsonl", MANIFEST];

/// Lowercase hex SHA-256 of a file's bytes (streamed).
fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(format!("{:x}", h.finalize()))
}

/// Writes [`MANIFEST`] over every regular file in `dir` but `metrics.jsonl` (sorted by name).
fn write_manifest(dir: &Path) -> Result<()> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_file = e.file_type().map_err(|x| Error::io(e.path(), x))?.is_file();
        if is_file && !UNSEALED.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names.sort();
    let mut s = String::new();
    for n in names {
        s += &format!("{}  {n}\n", sha256_file(&dir.join(&n))?);
    }
    let p = dir.join(MANIFEST);
    fs::write(&p, s).map_err(|e| Error::io(p, e))
}

/// Parses a [`MANIFEST`]: file name → lowercase hex SHA-256.
fn read_manifest(path: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let s = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = std::collections::BTreeMap::new();
    for (i, line) in s.lines().enumerate() {
        let bad = |msg: &str| Error::format(path, format!("line {}", i + 1), msg.to_string());
        let (hash, name) = line
            .split_once("  ")
            .ok_or_else(|| bad("expected `SHA-256  FILE` (sha256sum format)"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the checksum is not 64 hexadecimal digits"));
        }
        if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(bad("expected a file name inside the run directory"));
        }
        if out
            .insert(name.to_string(), hash.to_ascii_lowercase())
            .is_some()
        {
            return Err(bad("the file is listed twice"));
        }
    }
    Ok(out)
}

/// A warning about a loaded run (logged with `tracing::warn!`; the `celldiff` binary prints
/// it to stderr as `warning: ...`).
fn warn(msg: String) {
    tracing::warn!("{msg}");
}

/// Fills the VAE fields added after a run was written with the values such runs were trained
/// with (`vae.norm`: `batch`, `vae.activation`: `Relu`, issue 18): Burn's `Config` derive does
/// not default missing fields on deserialisation. Applies to `vae` of scVAEDer and SCLD runs.
fn fill_vae_defaults(config: &mut serde_json::Value) {
    if let Some(vae) = config.get_mut("vae").and_then(|v| v.as_object_mut()) {
        vae.entry("norm").or_insert_with(|| "batch".into());
        vae.entry("activation").or_insert_with(|| "Relu".into());
    }
}

/// Parses JSON into `T`, naming the failing field path in the error
/// (`diffusion_train.ema_decay: invalid type: null, expected f64`).
fn parse_json<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| json_error(path, &e))
}

/// [`parse_json`] from an already parsed value.
fn from_value<T: for<'de> Deserialize<'de>>(path: &Path, v: &serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| json_error(path, &e))
}

fn json_error<E: std::fmt::Display>(path: &Path, e: &serde_path_to_error::Error<E>) -> Error {
    let field = e.path().to_string();
    let field = if field == "." { "(json)".into() } else { field };
    let inner = e.inner().to_string();
    let hint = if inner.contains("null") {
        " (a NaN or infinite number is written as null: the run was trained with a value out \
         of range; train it again)"
    } else {
        ""
    };
    Error::format(path, field, format!("{inner}{hint}"))
}

/// Checks that the `celldiff_version` in `config` (the file at `path`) can be read by this
/// build: runs of older or compatible versions load; a run written by a newer, incompatible
/// version (another major version, or another minor version while the major is 0, as in
/// Cargo's semver rule) is refused with both versions named.
///
/// # Errors
/// [`Error::Format`] naming `celldiff_version` if it is missing, not a version, or newer and
/// incompatible.
pub fn check_version(path: &Path, config: &serde_json::Value) -> Result<()> {
    let running = env!("CARGO_PKG_VERSION");
    let field = "celldiff_version";
    let written = config
        .get(field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| Error::format(path, field, "missing or not a string"))?;
    let w = semver::Version::parse(written).map_err(|e| {
        Error::format(
            path,
            field,
            format!("`{written}` is not a version (MAJOR.MINOR.PATCH): {e}"),
        )
    })?;
    let r = semver::Version::parse(running).expect("CARGO_PKG_VERSION is semver");
    let compatible = w.major == r.major && (w.major != 0 || w.minor == r.minor);
    if w > r && !compatible {
        return Err(Error::format(
            path,
            field,
            format!(
                "written by celldiff {written}, a newer major version than this celldiff \
                 {running}, which cannot read it: upgrade celldiff, or train the model again \
                 with this version"
            ),
        ));
    }
    Ok(())
}

/// Fails with [`Error::Format`] naming `field` of `path` unless `ok`.
pub(crate) fn check_field(
    path: &Path,
    field: impl Into<String>,
    ok: bool,
    msg: impl FnOnce() -> String,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::format(path, field, msg()))
    }
}

/// Checks `v` is finite and within `lo..=hi` (`lo_open`: strictly above `lo`; `hi_open`:
/// strictly below `hi`).
pub(crate) fn check_range(
    path: &Path,
    field: &str,
    v: f64,
    (lo, lo_open): (f64, bool),
    (hi, hi_open): (f64, bool),
) -> Result<()> {
    let ok = v.is_finite()
        && if lo_open { v > lo } else { v >= lo }
        && if hi_open { v < hi } else { v <= hi };
    check_field(path, field, ok, || {
        let l = if lo_open { "(" } else { "[" };
        let h = if hi_open { ")" } else { "]" };
        let hi = if hi.is_infinite() {
            "∞".to_string()
        } else {
            hi.to_string()
        };
        format!("{v} is out of range: expected a number in {l}{lo}, {hi}{h}")
    })
}

/// Checks every value of `v` is finite (`what` names the field).
pub(crate) fn check_all_finite<T: Copy + Into<f64>>(
    path: &Path,
    what: &str,
    v: &[T],
) -> Result<()> {
    match v.iter().position(|&x| !x.into().is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::format(
            path,
            format!("{what}[{i}]"),
            format!("{} is not a finite number", v[i].into()),
        )),
    }
}

/// Checks a length against the one the rest of the run implies.
pub(crate) fn check_len(path: &Path, what: &str, got: usize, want: usize, why: &str) -> Result<()> {
    check_field(path, what, got == want, || {
        format!("{got} values, expected {want} ({why})")
    })
}

/// Checks the training parameters of a latent model (`prefix` is its key in config.json).
pub(crate) fn check_vae_train(path: &Path, prefix: &str, c: &VaeTrainConfig) -> Result<()> {
    let f = |k: &str| format!("{prefix}.{k}");
    check_range(
        path,
        &f("learning_rate"),
        c.learning_rate,
        (0.0, true),
        (f64::INFINITY, true),
    )?;
    check_range(
        path,
        &f("kl_weight"),
        c.kl_weight,
        (0.0, false),
        (f64::INFINITY, true),
    )?;
    check_range(
        path,
        &f("validation_fraction"),
        c.validation_fraction,
        (0.0, false),
        (1.0, true),
    )?;
    check_field(path, f("batch_size"), c.batch_size > 0, || {
        "0, expected ≥ 1".into()
    })
}

/// Checks the training parameters of a denoiser (`prefix` is its key in config.json).
pub(crate) fn check_diffusion_train(
    path: &Path,
    prefix: &str,
    c: &DiffusionTrainConfig,
) -> Result<()> {
    let f = |k: &str| format!("{prefix}.{k}");
    check_range(
        path,
        &f("learning_rate"),
        c.learning_rate,
        (0.0, true),
        (f64::INFINITY, true),
    )?;
    check_range(
        path,
        &f("ema_decay"),
        c.ema_decay,
        (0.0, false),
        (1.0, false),
    )?;
    check_range(
        path,
        &f("validation_fraction"),
        c.validation_fraction,
        (0.0, false),
        (1.0, true),
    )?;
    check_field(path, f("batch_size"), c.batch_size > 0, || {
        "0, expected ≥ 1".into()
    })
}

/// Checks a dropout probability (in `[0, 1)`).
pub(crate) fn check_dropout(path: &Path, field: &str, p: f64) -> Result<()> {
    check_range(path, field, p, (0.0, false), (1.0, true))
}

/// Checks a stored noise schedule: valid parameters, and ᾱ_T recomputed from them equal to
/// the `alphas_cumprod_terminal` recorded at training (an edited `num_train_timesteps` or β
/// range changes it; the denoiser was trained for the recorded schedule).
pub(crate) fn check_schedule(path: &Path, s: &ScheduleConfig, terminal: f64) -> Result<()> {
    check_field(
        path,
        "schedule.num_train_timesteps",
        s.num_train_timesteps > 0,
        || "0, expected ≥ 1".into(),
    )?;
    let sched =
        NoiseSchedule::new(s).map_err(|e| Error::format(path, "schedule", e.to_string()))?;
    let got = sched.terminal_alpha_cumprod();
    check_field(
        path,
        "alphas_cumprod_terminal",
        (got - terminal).abs() <= 1e-9 * terminal.abs() + 1e-12,
        || {
            format!(
                "{terminal} recorded, but the schedule (T = {}, β {} .. {}) gives ᾱ_T = {got}: \
                 the schedule was changed after training, and the denoiser only works with the \
                 one it was trained on",
                s.num_train_timesteps, s.beta_start, s.beta_end
            )
        },
    )
}

/// Checks a fitted preprocessing against the model's genes `genes` (`path`: preprocess.json):
/// the same output genes, positive finite targets, per-gene statistics of the right length.
pub(crate) fn check_preprocess(path: &Path, p: &FittedPreprocess, genes: &[String]) -> Result<()> {
    check_field(path, "genes", p.genes == genes, || {
        format!(
            "{} output genes, which differ from the model's {} genes in {GENES_JSON}",
            p.genes.len(),
            genes.len()
        )
    })?;
    let n = genes.len();
    if let Some(t) = p.target_sum {
        check_range(path, "target_sum", t, (0.0, true), (f64::INFINITY, true))?;
    }
    for (i, s) in p.steps.iter().enumerate() {
        if let crate::pp::Step::NormalizeTotal { target_sum } = s {
            check_range(
                path,
                &format!("steps[{i}].target_sum"),
                *target_sum,
                (0.0, true),
                (f64::INFINITY, true),
            )?;
        }
    }
    if let Some(h) = &p.highly_variable {
        check_len(path, "highly_variable", h.len(), n, "one per gene")?;
    }
    if let Some(s) = &p.scale {
        check_len(path, "scale.mean", s.mean.len(), n, "one per gene")?;
        check_len(path, "scale.std", s.std.len(), n, "one per gene")?;
        check_all_finite(path, "scale.mean", &s.mean)?;
        if let Some(i) = s.std.iter().position(|&v| !(v.is_finite() && v > 0.0)) {
            return Err(Error::format(
                path,
                format!("scale.std[{i}]"),
                format!("{}, expected a finite number > 0", s.std[i]),
            ));
        }
    }
    if let Some(m) = &p.minmax {
        check_len(path, "minmax.min", m.min.len(), n, "one per gene")?;
        check_len(path, "minmax.max", m.max.len(), n, "one per gene")?;
        check_all_finite(path, "minmax.min", &m.min)?;
        check_all_finite(path, "minmax.max", &m.max)?;
        if let Some(i) = (0..n).find(|&i| m.min[i] > m.max[i]) {
            return Err(Error::format(
                path,
                format!("minmax.min[{i}]"),
                format!("{} is above the maximum {}", m.min[i], m.max[i]),
            ));
        }
    }
    Ok(())
}

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

/// A run directory opened for loading: its `config.json` parsed as JSON, the version checked,
/// and every file listed in [`MANIFEST`] verified against its SHA-256. Files are then read
/// through it, so a file missing from the manifest (added after training) is refused too.
pub(crate) struct RunDir {
    dir: std::path::PathBuf,
    config: serde_json::Value,
    /// `None` for a run written before checksums (format 1).
    sums: Option<std::collections::BTreeMap<String, String>>,
}

impl RunDir {
    /// Opens `dir`, a directory of kind `what` (`"run"`, `"classifier directory"`) whose
    /// `config.json` must have `"model": model`; `wrong_model` builds the message for another
    /// model name. Checks, in order: the directory exists, config.json is JSON with that
    /// model, the version ([`check_version`]), the format, and the checksums.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing directory or file; [`Error::Format`] naming the file for
    /// another model, a newer version or format, a missing [`MANIFEST`] in a format-2 run, or
    /// a file whose SHA-256 differs from the manifest (field `weights` for `.bpk` files).
    pub(crate) fn open(
        dir: &Path,
        what: &str,
        model: &str,
        wrong_model: impl FnOnce(&str) -> String,
    ) -> Result<RunDir> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("{what} not found")),
            ));
        }
        let cp = dir.join("config.json");
        let mut config: serde_json::Value = read_json(&cp)?;
        fill_vae_defaults(&mut config);
        let found = read_model_name(&cp)?;
        if found != model {
            return Err(Error::format(&cp, "model", wrong_model(&found)));
        }
        check_version(&cp, &config)?;
        let format = match config.get("run_format") {
            None => 1,
            Some(v) => v.as_u64().ok_or_else(|| {
                Error::format(&cp, "run_format", format!("{v}, expected an integer"))
            })?,
        };
        check_field(
            &cp,
            "run_format",
            (1..=RUN_FORMAT).contains(&format),
            || {
                format!(
                    "{format}: written by a newer celldiff; this celldiff {} reads formats 1 to \
                 {RUN_FORMAT}",
                    env!("CARGO_PKG_VERSION")
                )
            },
        )?;
        let mp = dir.join(MANIFEST);
        let sums = if format >= 2 || mp.exists() {
            if !mp.exists() {
                return Err(Error::io(
                    &mp,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "missing: the checksums of this run were deleted, so its files cannot \
                         be checked",
                    ),
                ));
            }
            let sums = read_manifest(&mp)?;
            for (name, want) in &sums {
                let p = dir.join(name);
                if !p.is_file() {
                    return Err(Error::io(
                        &p,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!("listed in {MANIFEST} but missing"),
                        ),
                    ));
                }
                let got = sha256_file(&p)?;
                if &got != want {
                    let field = if name.ends_with(".bpk") {
                        "weights"
                    } else {
                        "SHA-256"
                    };
                    return Err(Error::format(
                        &p,
                        field,
                        format!(
                            "the file changed after training (corrupt or edited): its SHA-256 \
                             is {got}, {MANIFEST} records {want}"
                        ),
                    ));
                }
            }
            Some(sums)
        } else {
            warn(format!(
                "{}: no {MANIFEST} (written by celldiff {} before runs recorded checksums): \
                 its files cannot be checked for corruption; train it again to get a checked run",
                dir.display(),
                config
                    .get("celldiff_version")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
            ));
            None
        };
        Ok(RunDir {
            dir: dir.to_path_buf(),
            config,
            sums,
        })
    }

    /// The path of file `name` in the run.
    pub(crate) fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(name)
    }

    /// Fails if the run has a manifest that does not list `name`.
    fn check_listed(&self, name: &str) -> Result<()> {
        match &self.sums {
            Some(s) if !s.contains_key(name) => Err(Error::format(
                self.path(name),
                "SHA-256",
                format!("not listed in {MANIFEST}: the file was added after training"),
            )),
            _ => Ok(()),
        }
    }

    /// `config.json` as `T`.
    ///
    /// # Errors
    /// [`Error::Format`] naming the field that does not parse.
    pub(crate) fn config<T: for<'de> Deserialize<'de>>(&self) -> Result<T> {
        from_value(&self.path("config.json"), &self.config)
    }

    /// Reads JSON file `name` as `T`.
    ///
    /// # Errors
    /// [`Error::Io`] if it is missing; [`Error::Format`] naming the field that does not parse,
    /// or if it is not in the manifest.
    pub(crate) fn json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T> {
        self.check_listed(name)?;
        let p = self.path(name);
        let s = fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        parse_json(&p, &s)
    }

    /// [`RunDir::json`] for a file that may be absent (`None`).
    ///
    /// # Errors
    /// As [`RunDir::json`].
    pub(crate) fn optional_json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>> {
        if self.path(name).exists() {
            self.json(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Loads weights file `name` into `m`.
    ///
    /// # Errors
    /// As [`load_module`]; [`Error::Format`] if the file is not in the manifest.
    pub(crate) fn module<M: Module>(&self, m: M, name: &str) -> Result<M> {
        self.check_listed(name)?;
        load_module(m, &self.path(name))
    }

    /// The model's genes ([`GENES_JSON`], or [`LEGACY_GENES_TXT`] of a format-1 run) and the
    /// file they came from; `n` is the count the config implies (`why` says where from).
    ///
    /// # Errors
    /// [`Error::Io`] if neither file exists; [`Error::Format`] naming the file if it does not
    /// parse or holds another number of genes.
    pub(crate) fn genes(&self, n: usize, why: &str) -> Result<(Vec<String>, std::path::PathBuf)> {
        let (genes, p) = if self.path(GENES_JSON).exists() || self.sums.is_some() {
            (self.json::<Vec<String>>(GENES_JSON)?, self.path(GENES_JSON))
        } else {
            (read_genes(&self.dir)?, self.path(LEGACY_GENES_TXT))
        };
        check_field(&p, "genes", genes.len() == n, || {
            format!("{} genes listed, {why} has {n}", genes.len())
        })?;
        Ok((genes, p))
    }

    /// The training history (`metrics.jsonl`, informational: unreadable lines are skipped).
    pub(crate) fn history(&self) -> Vec<EpochRecord> {
        read_history(&self.dir)
    }
}

/// Checks that every width in `dims` (named `fields`) is at least 1.
pub(crate) fn check_dims(path: &Path, dims: &[(&str, usize)]) -> Result<()> {
    for &(field, d) in dims {
        check_field(path, field, d >= 1, || "0, expected ≥ 1".into())?;
    }
    Ok(())
}

impl RunConfig {
    /// Checks the values of a loaded `config.json` (`path`): dimensions ≥ 1 and consistent
    /// between the VAE and the denoiser, dropout in [0, 1), training parameters in range,
    /// and the noise schedule against its recorded ᾱ_T (recomputed from its parameters).
    ///
    /// # Errors
    /// [`Error::Format`] naming `path` and the field.
    pub fn check(&self, path: &Path) -> Result<()> {
        let (v, d) = (&self.vae, &self.denoiser);
        check_dims(
            path,
            &[
                ("vae.n_genes", v.n_genes),
                ("vae.n_latent", v.n_latent),
                ("denoiser.width", d.width),
                ("denoiser.depth", d.depth),
                ("denoiser.time_dim", d.time_dim),
            ],
        )?;
        if let Some(i) = v.hidden.iter().position(|&h| h == 0) {
            return Err(Error::format(
                path,
                format!("vae.hidden[{i}]"),
                "0, expected ≥ 1",
            ));
        }
        let (extra, what) = match self.library_model {
            LibraryModelKind::Cluster => (0, "vae.n_latent"),
            LibraryModelKind::Joint => (2, "vae.n_latent + 2 (library_model joint)"),
        };
        check_len(
            path,
            "denoiser.n_latent",
            d.n_latent,
            v.n_latent + extra,
            what,
        )?;
        check_dropout(path, "vae.dropout", v.dropout)?;
        check_vae_train(path, "vae_train", &self.vae_train)?;
        check_diffusion_train(path, "diffusion_train", &self.diffusion_train)?;
        check_schedule(path, &self.schedule, self.alphas_cumprod_terminal)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_written_before_the_vae_block_options_load_with_batchnorm_and_relu() {
        let mut old = serde_json::json!({"vae": {"n_genes": 3, "hidden": [4]}});
        fill_vae_defaults(&mut old);
        assert_eq!(old["vae"]["norm"], "batch");
        assert_eq!(old["vae"]["activation"], "Relu");
        let mut new = serde_json::json!({"vae": {"norm": "none", "activation": "Silu"}});
        fill_vae_defaults(&mut new);
        assert_eq!(new["vae"]["norm"], "none");
        assert_eq!(new["vae"]["activation"], "Silu");
        // SCLD runs without a VAE are left alone.
        let mut scld = serde_json::json!({"vae": null});
        fill_vae_defaults(&mut scld);
        assert!(scld["vae"].is_null());
    }

    #[test]
    fn newer_incompatible_versions_are_refused_with_both_versions_named() {
        let p = Path::new("run/config.json");
        let v = |s: &str| serde_json::json!({ "celldiff_version": s });
        let running = env!("CARGO_PKG_VERSION");
        check_version(p, &v(running)).unwrap();
        check_version(p, &v("0.0.1")).unwrap();
        let r = semver::Version::parse(running).unwrap();
        // A newer patch release is compatible.
        let patch = format!("{}.{}.{}", r.major, r.minor, r.patch + 1);
        check_version(p, &v(&patch)).unwrap();
        for newer in ["99.0.0", &format!("{}.{}.0", r.major, r.minor + 1)] {
            let e = check_version(p, &v(newer)).unwrap_err().to_string();
            assert!(
                e.contains(newer) && e.contains(running) && e.contains("celldiff_version"),
                "{e}"
            );
        }
        let e = check_version(p, &v("latest")).unwrap_err().to_string();
        assert!(e.contains("not a version"), "{e}");
        let e = check_version(p, &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn the_manifest_round_trips_and_catches_a_changed_byte() {
        let d = tempfile::tempdir().unwrap();
        let cfg = serde_json::json!({ "model": "m", "celldiff_version": "0.0.1" });
        let genes: Vec<String> = vec!["".into(), "a\nb".into(), "c".into()];
        let dir = d.path().join("r");
        save_run_dir(&dir, false, &cfg, &genes, |tmp| {
            fs::write(tmp.join("w.bpk"), [1u8, 2, 3]).map_err(|e| Error::io(tmp, e))?;
            fs::write(tmp.join("metrics.jsonl"), "{}\n").map_err(|e| Error::io(tmp, e))
        })
        .unwrap();
        let sums = read_manifest(&dir.join(MANIFEST)).unwrap();
        let names: Vec<&str> = sums.keys().map(String::as_str).collect();
        assert_eq!(names, ["config.json", "genes.json", "w.bpk"]);
        // SHA-256 of the empty string, as a known answer.
        fs::write(dir.join("e"), "").unwrap();
        assert_eq!(
            sha256_file(&dir.join("e")).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        fs::remove_file(dir.join("e")).unwrap();
        let rd = RunDir::open(&dir, "run", "m", |m| m.into()).unwrap();
        assert_eq!(rd.genes(3, "test").unwrap().0, genes);
        // metrics.jsonl is not sealed: editing it is fine.
        fs::write(dir.join("metrics.jsonl"), "").unwrap();
        RunDir::open(&dir, "run", "m", |m| m.into()).unwrap();
        fs::write(dir.join("w.bpk"), [1u8, 2, 4]).unwrap();
        let e = RunDir::open(&dir, "run", "m", |m| m.into())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("w.bpk") && e.contains("weights"), "{e}");
        // Another model name is refused before anything else.
        let e = RunDir::open(&dir, "run", "other", |m| format!("got {m}"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("got m"), "{e}");
    }

    #[test]
    fn malformed_manifest_lines_are_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(MANIFEST);
        for (text, want) in [
            ("abc  x\n", "64 hexadecimal"),
            (
                &format!("{}  ../x\n", "0".repeat(64)),
                "inside the run directory",
            ),
            (&format!("{0}  x\n{0}  x\n", "0".repeat(64)), "listed twice"),
            ("no separator\n", "sha256sum format"),
        ] {
            fs::write(&p, text).unwrap();
            let e = read_manifest(&p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("line"), "{text}: {e}");
        }
    }
}
