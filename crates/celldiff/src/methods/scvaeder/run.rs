//! scVAEDer's run directory ([`Run`]): the VAE, the denoiser and its EMA, the latent
//! standardisation, the preprocessing and the count/library-size models, saved and loaded
//! through [`RunFiles`] (the one format of [`crate::run_dir`]).
//!
//! Files besides the common ones: `preprocess.json` ([`FittedPreprocess`]), `latent.json`
//! ([`LatentStats`]), `vae.bpk`, `denoiser.bpk`, `denoiser_ema.bpk`, `observation.json`
//! ([`CountObservation`], Gaussian decoder on log1p-normalised counts) and `library_size.json`
//! ([`LibrarySizeModel`], count-likelihood decoder).

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::counts::{LibraryModelKind, LibrarySizeModel};
use crate::error::{Error, Result};
use crate::models::{Denoiser, DenoiserConfig, Vae, VaeConfig};
use crate::observation::CountObservation;
use crate::pp::{FittedPreprocess, PreprocessConfig};
use crate::run_dir::{
    LIBRARY_JSON, RunDir, RunFiles, RunHeader, check_diffusion_train, check_dims, check_dropout,
    check_len, check_preprocess, check_schedule, check_vae_train, save_module, write_history,
    write_json,
};
use crate::schedulers::{NoiseSchedule, ScheduleConfig};
use crate::train::{DiffusionTrainConfig, EpochRecord, LatentStats, VaeTrainConfig};

/// Everything about how a run was trained (`config.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// Version, model (`"scvaeder"`) and data source.
    #[serde(flatten)]
    pub header: RunHeader,
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

impl RunFiles for Run {
    const MODEL: &'static str = "scvaeder";
    const WHAT: &'static str = "run directory";
    type Config = RunConfig;

    fn config(&self) -> &RunConfig {
        &self.config
    }

    fn genes(&self) -> &[String] {
        &self.genes
    }

    fn write_files(&self, tmp: &Path) -> Result<()> {
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
    }

    fn wrong_model(model: &str) -> String {
        format!("this is a {model} run; expected a scvaeder run (model \"scvaeder\")")
    }

    /// Checks every parameter's range and length against the config (dimensions, training
    /// parameters, the noise schedule and its ᾱ_T, latent statistics, preprocessing,
    /// observation and library-size models), then loads the weights.
    fn read(rd: &RunDir, config: RunConfig, device: &Device) -> Result<Run> {
        let cp = rd.path("config.json");
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
}

impl Run {
    /// The run's noise schedule.
    ///
    /// # Errors
    /// [`Error::Param`] if the stored schedule is invalid.
    pub fn schedule(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::new(&self.config.schedule)
    }
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
