//! Saving and loading SCLD run directories (`config.json`, weights, `conditions.json`,
//! `latent.json`, `library_size.json`) through [`RunFiles`], the one run-directory format of
//! [`crate::run_dir`].

use super::*;

impl ScldRun {
    /// The run's noise schedule.
    ///
    /// # Errors
    /// [`Error::Param`] if the stored schedule is invalid.
    pub fn schedule(&self) -> Result<NoiseSchedule> {
        NoiseSchedule::new(&self.config.schedule)
    }
}

impl RunFiles for ScldRun {
    const MODEL: &'static str = "scld";
    const WHAT: &'static str = "run directory";
    type Config = ScldConfig;

    fn config(&self) -> &ScldConfig {
        &self.config
    }

    fn genes(&self) -> &[String] {
        &self.genes
    }

    fn write_files(&self, tmp: &Path) -> Result<()> {
        write_json(&tmp.join("preprocess.json"), &self.preprocess)?;
        write_json(&tmp.join("latent.json"), &self.latent)?;
        write_json(&tmp.join("conditions.json"), &self.conditions)?;
        if let Some(o) = &self.observation {
            write_json(&tmp.join("observation.json"), o)?;
        }
        if let Some(l) = &self.library {
            write_json(&tmp.join(crate::run_dir::LIBRARY_JSON), l)?;
        }
        match &self.latent_model {
            LatentModel::Ae(a) => save_module(a, &tmp.join("ae.bpk"))?,
            LatentModel::Vae(v) => save_module(v, &tmp.join("vae.bpk"))?,
        }
        save_module(&self.denoiser, &tmp.join("denoiser.bpk"))?;
        save_module(&self.denoiser_ema, &tmp.join("denoiser_ema.bpk"))?;
        if let Some(s) = &self.scorer {
            save_module(s, &tmp.join("scorer.bpk"))?;
        }
        write_history(tmp, &self.history)
    }

    fn wrong_model(model: &str) -> String {
        format!("expected an SCLD run (model \"scld\"), found \"{model}\"")
    }

    /// Checks ranges and lengths as scVAEDer's run does, plus the conditions (one per
    /// cluster, their genes) and the Scorer, then loads the weights.
    fn read(rd: &RunDir, config: ScldConfig, device: &Device) -> Result<ScldRun> {
        let cp = rd.path("config.json");
        config.check(&cp)?;
        let (genes, _) = rd.genes(
            config.denoiser.n_cond,
            "the denoiser's conditions in config.json",
        )?;
        let preprocess: FittedPreprocess = rd.json("preprocess.json")?;
        check_preprocess(&rd.path("preprocess.json"), &preprocess, &genes)?;
        let latent: LatentStats = rd.json("latent.json")?;
        latent.check(&rd.path("latent.json"), config.denoiser.n_latent)?;
        let conditions: Conditions = rd.json("conditions.json")?;
        conditions.check(&rd.path("conditions.json"), genes.len())?;
        let observation: Option<CountObservation> = rd.optional_json("observation.json")?;
        if let Some(o) = &observation {
            o.check(&rd.path("observation.json"))?;
        }
        let likelihood = match (&config.latent_model, &config.ae, &config.vae) {
            (LatentKind::Ae, Some(c), _) => c.likelihood,
            (LatentKind::Vae, _, Some(c)) => c.likelihood,
            _ => Likelihood::Gaussian,
        };
        let library = rd.library(likelihood, config.denoiser.n_latent)?;
        let latent_model = match (&config.latent_model, &config.ae, &config.vae) {
            (LatentKind::Ae, Some(c), _) => {
                LatentModel::Ae(rd.module(c.init(device), "ae.bpk")?.valid())
            }
            (LatentKind::Vae, _, Some(c)) => {
                LatentModel::Vae(rd.module(c.init(device), "vae.bpk")?.valid())
            }
            _ => {
                return Err(Error::format(
                    &cp,
                    "latent_model",
                    "no architecture stored for the latent model",
                ));
            }
        };
        let denoiser = rd.module(config.denoiser.init(device), "denoiser.bpk")?;
        let denoiser_ema = rd.module(config.denoiser.init(device), "denoiser_ema.bpk")?;
        let scorer = match &config.scorer {
            Some(c) => Some(rd.module(c.init(device), "scorer.bpk")?),
            None => None,
        };
        let history = rd.history();
        Ok(ScldRun {
            config,
            genes,
            preprocess,
            latent,
            latent_model,
            denoiser,
            denoiser_ema,
            conditions,
            scorer,
            observation,
            library,
            history,
        })
    }
}

impl ScldConfig {
    /// Checks the values of a loaded SCLD `config.json` (`path`): the latent model's
    /// architecture is stored, dimensions are ≥ 1 and agree (latent model ↔ denoiser ↔
    /// Scorer), dropout and condition-drop probabilities, training parameters, the guidance
    /// weight, and the noise schedule against its ᾱ_T.
    ///
    /// # Errors
    /// [`Error::Format`] naming `path` and the field.
    pub fn check(&self, path: &Path) -> Result<()> {
        let d = &self.denoiser;
        let (n_genes, n_latent, dropout) = match (&self.latent_model, &self.ae, &self.vae) {
            (LatentKind::Ae, Some(c), _) => {
                check_dims(path, &[("ae.hidden", c.hidden)])?;
                (c.n_genes, c.n_latent, ("ae.dropout", c.dropout))
            }
            (LatentKind::Vae, _, Some(c)) => {
                if let Some(i) = c.hidden.iter().position(|&h| h == 0) {
                    return Err(Error::format(
                        path,
                        format!("vae.hidden[{i}]"),
                        "0, expected ≥ 1",
                    ));
                }
                (c.n_genes, c.n_latent, ("vae.dropout", c.dropout))
            }
            _ => {
                return Err(Error::format(
                    path,
                    "latent_model",
                    "no architecture stored for the latent model",
                ));
            }
        };
        check_dims(
            path,
            &[
                ("n_genes", n_genes),
                ("n_latent", n_latent),
                ("denoiser.width", d.width),
                ("denoiser.depth", d.depth),
                ("denoiser.time_dim", d.time_dim),
            ],
        )?;
        check_len(
            path,
            "denoiser.n_latent",
            d.n_latent,
            n_latent,
            "the latent model's n_latent",
        )?;
        check_len(
            path,
            "denoiser.n_cond",
            d.n_cond,
            n_genes,
            "the latent model's n_genes",
        )?;
        check_dropout(path, dropout.0, dropout.1)?;
        check_range(
            path,
            "cond_drop",
            self.cond_drop,
            (0.0, false),
            (1.0, false),
        )?;
        if let Some(s) = &self.scorer {
            let (want, why) = match self.scorer_space {
                ScorerSpace::Genes => (n_genes, "n_genes (scorer_space genes)"),
                ScorerSpace::Latent => (n_latent, "n_latent (scorer_space latent)"),
            };
            check_len(path, "scorer.n_input", s.n_input, want, why)?;
            check_dims(path, &[("scorer.hidden", s.hidden)])?;
        }
        check_range(
            path,
            "scorer_guidance",
            self.scorer_guidance,
            (f64::NEG_INFINITY, true),
            (f64::INFINITY, true),
        )?;
        check_vae_train(path, "latent_train", &self.latent_train)?;
        check_diffusion_train(path, "diffusion_train", &self.diffusion_train)?;
        let st = &self.scorer_train;
        check_range(
            path,
            "scorer_train.learning_rate",
            st.learning_rate,
            (0.0, true),
            (f64::INFINITY, true),
        )?;
        check_range(
            path,
            "scorer_train.validation_fraction",
            st.validation_fraction,
            (0.0, false),
            (1.0, true),
        )?;
        check_schedule(path, &self.schedule, self.alphas_cumprod_terminal)
    }
}
