//! The count observation model of decoded cells ([`CountObservation`], from celldiff-data:
//! size factors, one dispersion φ, counts drawn from the decoded mean) and its fit on a
//! trained decoder (`fit_observation`, here because it decodes latents with a Burn model).

use burn::prelude::*;

pub use celldiff_data::observation::*;

use crate::anndata::{DenseMatrix, Matrix};
use crate::train::TrainCells;

/// Fits the [`CountObservation`] model when the model's space is log1p-normalised counts
/// (no `scale`/min-max): size factors of the training cells, then φ matched on up to 2000
/// training cells' reconstructions (`decode` of their latent codes `mu`, unstandardised).
/// Shared by scVAEDer and SCLD.
pub(crate) fn fit_observation(
    fitted: &crate::pp::FittedPreprocess,
    x: &mut dyn TrainCells,
    mu: &DenseMatrix,
    decode: &dyn Fn(Tensor<2>) -> crate::Result<DenseMatrix>,
    seed: u64,
    device: &Device,
) -> crate::Result<Option<CountObservation>> {
    if !fitted.output_nonnegative() || fitted.minmax.is_some() {
        return Ok(None);
    }
    // Size factors chunk by chunk (rows are independent), so streamed data need no matrix.
    let mut sf = Vec::with_capacity(x.n_cells());
    for start in (0..x.n_cells()).step_by(1024) {
        let idx: Vec<usize> = (start..(start + 1024).min(x.n_cells())).collect();
        sf.extend(size_factors(&Matrix::Dense(x.rows(&idx)?)));
    }
    let Some(mut obs) = CountObservation::from_size_factors(sf) else {
        return Ok(None);
    };
    let n = x.n_cells().min(2000);
    let idx: Vec<usize> = (0..n).collect();
    let real = x.rows(&idx)?;
    let z = crate::train::to_tensor(&mu.select_rows(&idx), device);
    let mut recon = decode(z)?;
    for v in &mut recon.data {
        *v = v.max(0.0);
    }
    obs.fit_dispersion(&real, &recon, seed ^ 0x0b5e);
    Ok(Some(obs))
}
