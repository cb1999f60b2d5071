//! Training: the one hand-written loop ([`fit()`], Burn `examples/custom-training-loop` style)
//! and what each model brings to it.
//!
//! - [`fit`](mod@fit): the loop over a [`TrainStep`] — Adam, learning-rate schedule, EMA, early
//!   stopping with the best checkpoint, records, the non-finite check;
//! - [`plan`]: the validation split and each epoch's order of the training cells (in memory or
//!   streamed, [`TrainCells`]);
//! - [`record`]: [`EpochRecord`] (a line of `metrics.jsonl`) and the [`Observer`];
//! - [`config`]: the training configurations and their range checks;
//! - [`vae`]: scVAEDer's VAE and SCLD's autoencoder (steps, encode, decode);
//! - [`denoiser`]: the latent denoisers (scVAEDer's, SCLD's conditional one);
//! - [`scorer`]: SCLD's post-guidance Scorer;
//! - [`latent`]: the standardisation of the latent ([`LatentStats`]).
//!
//! Two-stage training as in scVAEDer (Sadria & Layton 2025, Methods): the VAE is trained
//! first; the diffusion model is trained on the VAE's posterior means μ, standardised per
//! latent dimension ([`LatentStats`]) — the paper's "batch normalisation on the latent layer",
//! done here as a fixed, stored, invertible map (the published code instead used the layer
//! before μ, one global scalar, and never undid it before decoding).

use burn::prelude::*;
use burn::tensor::TensorData;
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::StandardNormal;

use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};

pub mod config;
pub mod denoiser;
pub mod fit;
pub mod latent;
pub mod plan;
pub mod record;
pub mod scorer;
pub mod vae;

pub use config::*;
pub(crate) use denoiser::Noising;
pub use denoiser::{ConditionBatchSource, train_cond_diffusion, train_diffusion};
pub use fit::{
    EarlyStop, FitOptions, Fitted, LrSchedule, Regularizer, ShuffledMinibatches, StepLoss,
    TrainStep, fit,
};
pub use latent::LatentStats;
pub use plan::{EpochPlan, InMemoryCells, PlanGroup, Shuffle, TrainCells, plan_epoch};
pub use record::{EpochRecord, Observer, Silent};
pub use scorer::train_scorer;
pub use vae::{
    decode, encode_mean, encode_mean_cells, train_autoencoder, train_vae, train_vae_cells,
};

/// Moves a host matrix to `device` as a `[n_rows, n_cols]` tensor (through pinned memory on a
/// GPU, see [`upload`]).
pub fn to_tensor(m: &DenseMatrix, device: &Device) -> Tensor<2> {
    let [t] = upload(
        [TensorData::new(m.data.clone(), [m.n_rows, m.n_cols])],
        device,
    );
    t
}

/// Moves host tensors (a minibatch's parts) to `device`. On an accelerator the bytes are first
/// staged in pinned (page-locked) host memory with Burn's `Device::staging`, which CubeCL's
/// CUDA runtime allocates with `cuMemAllocHost`, so that the copy to the GPU is a DMA transfer
/// (PyTorch's `pin_memory=True` in a `DataLoader` does the same); all parts are staged in one
/// request. On the CPU backend the data is moved, not copied. Setting the environment variable
/// `CELLDIFF_NO_PINNED=1` skips the staging (to measure what it gains, `bench/gpu_check.sh`).
pub fn upload<const N: usize, const D: usize>(
    mut parts: [TensorData; N],
    device: &Device,
) -> [Tensor<D>; N] {
    if !crate::backend::is_cpu(device) && !no_pinned() {
        device.staging(parts.iter_mut());
    }
    parts.map(|data| Tensor::from_data(data, device))
}

/// Whether `CELLDIFF_NO_PINNED` switches the pinned staging of [`upload`] off (read once).
fn no_pinned() -> bool {
    static NO_PINNED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NO_PINNED.get_or_init(|| std::env::var_os("CELLDIFF_NO_PINNED").is_some_and(|v| v == "1"))
}

/// Reads a `[n, d]` tensor back to the host.
///
/// # Errors
/// [`Error::Internal`] if the backend cannot read the data.
pub fn to_host(t: Tensor<2>) -> Result<DenseMatrix> {
    let [n, d] = t.dims();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Internal(format!("reading tensor: {e:?}")))?;
    DenseMatrix::from_vec(n, d, data)
}

pub(crate) fn normal_matrix(rng: &mut StdRng, n: usize, d: usize) -> DenseMatrix {
    let data = (0..n * d)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    DenseMatrix {
        n_rows: n,
        n_cols: d,
        data,
    }
}

/// Applies `f` to the rows `0..n` in chunks of `chunk` (row indices in order) and stacks the
/// `[chunk_len, d]` results into `[n, d]`: the batched inference loop of the encoders and
/// classifiers, which bounds host and device memory for any number of cells.
///
/// # Errors
/// [`Error::InvalidInput`] for `n = 0` (nothing to `what`); whatever `f` returns.
pub(crate) fn map_row_chunks(
    n: usize,
    chunk: usize,
    what: &str,
    mut f: impl FnMut(&[usize]) -> Result<DenseMatrix>,
) -> Result<DenseMatrix> {
    let mut out: Option<DenseMatrix> = None;
    for start in (0..n).step_by(chunk.max(1)) {
        let idx: Vec<usize> = (start..(start + chunk.max(1)).min(n)).collect();
        let part = f(&idx)?;
        match &mut out {
            None => out = Some(part),
            Some(o) => {
                o.data.extend_from_slice(&part.data);
                o.n_rows += part.n_rows;
            }
        }
    }
    out.ok_or_else(|| Error::InvalidInput(format!("no cells to {what}")))
}
