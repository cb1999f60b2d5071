//! The run directory: everything a trained scVAEDer model needs, saved together and checked
//! on load (like scvi-tools' `model.save`: weights plus what the model was trained on).
//!
//! Layout of `RUN_DIR/`:
//! - `config.json`: [`RunConfig`] — data source, preprocessing, model and training parameters,
//!   noise schedule (with ᾱ_T), seed, celldiff version.
//! - `genes.txt`: the model's genes, one per line, in input order.
//! - `preprocess.json`: the fitted preprocessing ([`FittedPreprocess`]) re-applied to new cells.
//! - `latent.json`: per-dimension latent standardisation ([`LatentStats`]).
//! - `vae.bpk`, `denoiser.bpk`, `denoiser_ema.bpk`: Burn burnpack weights.
//! - `observation.json`: the count observation model ([`CountObservation`]), when the model's
//!   space is log1p-normalised counts (absent otherwise).
//! - `metrics.jsonl`: one [`EpochRecord`] per line.
//!
//! A run is written into a temporary sibling directory and renamed into place, so a failed
//! or interrupted `train` never leaves a half-written run; an existing run is only replaced
//! with `force`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::{Denoiser, DenoiserConfig, Vae, VaeConfig};
use crate::observation::CountObservation;
use crate::preprocess::{FittedPreprocess, PreprocessConfig};
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
    /// The model's genes, in input order (`genes.txt`).
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

/// The temporary sibling directory a run is first written to.
pub(crate) fn temp_dir_for(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
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

/// Writes a run directory atomically: `write` fills a fresh temporary sibling directory, which
/// is then renamed onto `dir` (replacing it only with `force`). On any error the temporary
/// directory is removed and `dir` is left as it was. Shared by scVAEDer and SCLD runs.
///
/// # Errors
/// [`Error::AlreadyExists`] if `dir` exists and `force` is false; whatever `write` returns;
/// [`Error::Io`] for the directory operations.
pub(crate) fn save_dir_atomically(
    dir: &Path,
    force: bool,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    check_overwrite(dir, force)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = temp_dir_for(dir);
    let _ = fs::remove_dir_all(&tmp);
    let res = fs::create_dir_all(&tmp)
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| write(&tmp));
    if let Err(e) = res {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))
}

/// Writes `genes.txt` (one gene per line) into `dir`.
pub(crate) fn write_genes(dir: &Path, genes: &[String]) -> Result<()> {
    let p = dir.join("genes.txt");
    fs::write(&p, genes.join("\n") + "\n").map_err(|e| Error::io(p, e))
}

/// Reads `genes.txt` from `dir`.
pub(crate) fn read_genes(dir: &Path) -> Result<Vec<String>> {
    let gp = dir.join("genes.txt");
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

/// Fails with [`Error::AlreadyExists`] if `path` exists and `force` is false.
///
/// # Errors
/// [`Error::AlreadyExists`].
pub fn check_overwrite(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        return Err(Error::AlreadyExists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

impl Run {
    /// Writes the run directory `dir` atomically (temp dir + rename).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if `dir` exists and `force` is false; [`Error::Io`] on write
    /// failures (the temporary directory is removed).
    pub fn save(&self, dir: &Path, force: bool) -> Result<()> {
        save_dir_atomically(dir, force, |tmp| {
            write_json(&tmp.join("config.json"), &self.config)?;
            write_genes(tmp, &self.genes)?;
            write_json(&tmp.join("preprocess.json"), &self.preprocess)?;
            write_json(&tmp.join("latent.json"), &self.latent)?;
            if let Some(o) = &self.observation {
                write_json(&tmp.join("observation.json"), o)?;
            }
            save_module(&self.vae, &tmp.join("vae.bpk"))?;
            save_module(&self.denoiser, &tmp.join("denoiser.bpk"))?;
            save_module(&self.denoiser_ema, &tmp.join("denoiser_ema.bpk"))?;
            write_history(tmp, &self.history)
        })
    }

    /// Loads and checks a run directory: all files present, genes consistent with the
    /// preprocessing and the VAE width, weights readable.
    ///
    /// # Errors
    /// [`Error::Io`] for a missing directory or file; [`Error::Format`] naming the file for
    /// unreadable JSON, inconsistent gene lists, or corrupt/truncated weights.
    pub fn load(dir: &Path, device: &Device) -> Result<Run> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "run directory not found"),
            ));
        }
        let cp = dir.join("config.json");
        let model = read_model_name(&cp)?;
        if model != "scvaeder" {
            return Err(Error::format(
                &cp,
                "model",
                format!(
                    "this run was trained with --model {model}; this command needs a \
                     --model scvaeder run"
                ),
            ));
        }
        let config: RunConfig = read_json(&cp)?;
        let gp = dir.join("genes.txt");
        let genes = read_genes(dir)?;
        if genes.len() != config.vae.n_genes {
            return Err(Error::format(
                &gp,
                "genes",
                format!(
                    "{} genes listed, the VAE in config.json has {}",
                    genes.len(),
                    config.vae.n_genes
                ),
            ));
        }
        let preprocess: FittedPreprocess = read_json(&dir.join("preprocess.json"))?;
        let latent: LatentStats = read_json(&dir.join("latent.json"))?;
        if latent.mean.len() != config.vae.n_latent {
            return Err(Error::format(
                dir.join("latent.json"),
                "mean",
                "length differs from n_latent",
            ));
        }
        let vae = load_module(config.vae.init(device), &dir.join("vae.bpk"))?.valid();
        let denoiser = load_module(config.denoiser.init(device), &dir.join("denoiser.bpk"))?;
        let denoiser_ema =
            load_module(config.denoiser.init(device), &dir.join("denoiser_ema.bpk"))?;
        let op = dir.join("observation.json");
        let observation = if op.exists() {
            Some(read_json(&op)?)
        } else {
            None
        };
        let history = read_history(dir);
        Ok(Run {
            config,
            genes,
            preprocess,
            latent,
            vae,
            denoiser,
            denoiser_ema,
            observation,
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
