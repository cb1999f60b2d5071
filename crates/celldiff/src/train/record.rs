//! What the training loop reports: one [`EpochRecord`] per epoch (a line of
//! `metrics.jsonl`) and the [`Observer`] that receives progress (the CLI's progress bars).

use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`: the losses of one epoch of one stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The stage: `"vae"`, `"diffusion"` (scVAEDer, SCLD), `"ae"` (SCLD), `"diffvae"`/`"vae"`/`"ae"`
    /// (DiffVAE), `"graph_vae"`, `"scorer"`, `"classifier"`.
    pub stage: String,
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's minibatches.
    pub train_loss: f64,
    /// Validation loss (VAE: recon + β·KL at the epoch's KL weight with μ-decoding noise
    /// drawn from a fixed seed; diffusion: L_simple at fixed seeded (t, ε) draws, EMA weights).
    pub val_loss: Option<f64>,
    /// VAE: mean reconstruction term (squared error summed over genes).
    pub recon: Option<f64>,
    /// VAE: mean KL term.
    pub kl: Option<f64>,
    /// VAE: KL weight used this epoch (β times the warm-up factor).
    pub kl_weight: Option<f64>,
    /// DiffVAE: mean MMD term (Bica et al. 2020, Eq. 3); absent for other models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmd: Option<f64>,
    /// DiffVAE: the MMD term's weight λ; absent for other models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mmd_weight: Option<f64>,
    /// Learning rate at the end of the epoch.
    pub learning_rate: f64,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
    /// `true` on the epoch whose weights the run kept (the best validation loss under early
    /// stopping: VAE weights, or the denoiser's EMA weights); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<bool>,
}

/// Receives progress from the training loops (the CLI draws progress bars with it).
pub trait Observer {
    /// A stage (`"vae"`, `"diffusion"`) starts with at most `epochs` epochs.
    fn stage_start(&mut self, _stage: &str, _epochs: usize) {}
    /// An epoch ended.
    fn epoch_end(&mut self, _record: &EpochRecord) {}
    /// The stage ended (possibly early); `reason` says why.
    fn stage_end(&mut self, _stage: &str, _reason: &str) {}
    /// An informational line (e.g. what preprocessing detected), sent when it happens so the
    /// user reads the messages in the order of the work.
    fn message(&mut self, _msg: &str) {}
    /// A step without epochs starts (e.g. `"count observation model"`); it lasts until the next
    /// stage or step starts, or the work ends. The CLI shows a spinner.
    fn step_start(&mut self, _what: &str) {}
    /// Whether the caller wants the work stopped; [`fit`](super::fit()) asks after every
    /// minibatch and returns [`Error::Interrupted`](crate::Error::Interrupted) when it says
    /// yes (the Python bindings turn Ctrl-C into it). Default: never.
    fn cancelled(&mut self) -> bool {
        false
    }
}

/// An [`Observer`] that ignores everything.
pub struct Silent;
impl Observer for Silent {}
