//! # celldiff
//!
//! Generative models of single-cell RNA-seq: scVAEDer (Sadria & Layton, Genome Biology 2025),
//! SCLD (Wang et al., arXiv 2312.14220) and DiffVAE (Bica et al., Sci. Rep. 2020), on Burn.
//!
//! The library holds the science; the `celldiff` binary (crate `celldiff-cli`) holds the
//! command line.
//!
//! - [`anndata`], [`io`], [`pp`], [`tl`], [`metrics`], [`error`]: the data layer, re-exported
//!   from the crate `celldiff-data` (no Burn): AnnData in memory, `.h5ad`/10x io, scanpy-style
//!   preprocessing and tools (PCA, neighbours, Leiden, UMAP), realism metrics, the error type.
//! - [`models`]: Burn modules (VAE, ε-prediction denoiser, EMA), one file each.
//! - [`schedulers`]: noise schedules, DDPM and DDIM samplers and the flow-matching Euler
//!   sampler, one file each.
//! - [`observation`]: count observation model (decoded mean → sparse, discrete cells).
//! - [`counts`], [`decoded_counts`]: counts recovered from log1p data, the library-size
//!   model and NB sampling; counts out of a trained count decoder (θ re-fit, reconstruction).
//! - [`evaluation`]: real cells brought into generated cells' space for the metrics
//!   (`celldiff evaluate`, Python `celldiff.evaluate`).
//! - [`pipeline`]: the one denoising loop and DDIM inversion.
//! - [`train`]: the one hand-written training loop ([`train::fit()`] over a
//!   [`train::TrainStep`]) and the steps of the shared networks.
//! - [`methods`]: one folder per method, re-exported at the root: [`scvaeder`] (fit,
//!   generate, embed, `--stream`, the analyses), [`scld`] (conditions, guided generation,
//!   Scorer), [`diffvae`] (latent models, cell-type identification, classifier, latent shifts,
//!   Graph-DiffVAE).
//! - [`run_dir`]: the one run-directory format ([`RunFiles`]: weights + what the model was
//!   trained on, saved atomically, checked on load).
//! - [`backend`]: device selection (cargo features `flex`, `ndarray`, `cuda`) and threads.
//! - [`bench`](mod@bench): throughput benchmarks (`celldiff bench`).
//! - [`simulate`]: seeded NB count simulator written in chunks (scale tests; from
//!   `celldiff-data`).

pub mod backend;
pub mod bench;
pub mod counts;
pub mod decoded_counts;
pub mod evaluation;
pub mod methods;
pub mod models;
pub mod observation;
pub mod optim;
pub mod pipeline;
pub mod run_dir;
pub mod schedulers;
pub mod train;

pub use burn::tensor::Device;
pub use celldiff_data::{AnnData, Column, DenseMatrix, Matrix};
pub use celldiff_data::{Error, Result};
pub use celldiff_data::{anndata, error, io, metrics, pp, simulate, tl};
pub use methods::{diffvae, scld, scvaeder};
pub use run_dir::RunFiles;

/// Serialises the unit tests that draw from the backend's device RNG (one process-wide
/// generator in Burn's flex backend: `Device::seed`, dropout masks, `Tensor::random`), so a
/// test that compares two seeded trainings is not perturbed by another test's draws.
#[cfg(test)]
pub(crate) fn test_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
