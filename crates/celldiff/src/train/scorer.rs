//! SCLD's post-guidance Scorer (arXiv 2312.14220, Sec. 3.2.3), trained through the one loop.

use burn::prelude::*;
use burn::tensor::TensorData;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::fit::{FitOptions, ShuffledMinibatches, fit};
use super::plan::split;
use super::{MAX_VALIDATION, ScorerTrainConfig, Silent, to_host, to_tensor};
use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};
use crate::models::{Scorer, ScorerConfig};

/// Trains SCLD's post-guidance [`Scorer`] (arXiv 2312.14220, Sec. 3.2.3) with cross-entropy on
/// `real` (label 0) vs `generated` (label 1) standardised latents, both `[n, n_latent]`.
/// Returns the Scorer and its accuracy on the held-out fraction (None without a split).
///
/// # Errors
/// [`Error::InvalidInput`] for empty sets or a width mismatch; [`Error::InvalidInput`] also if the loss
/// becomes non-finite.
/// [`Error::Param`] for an invalid training configuration (see `validate`).
pub fn train_scorer(
    real: &DenseMatrix,
    generated: &DenseMatrix,
    model: &ScorerConfig,
    cfg: &ScorerTrainConfig,
    device: &Device,
) -> Result<(Scorer, Option<f64>)> {
    if real.n_rows < 2
        || generated.n_rows < 2
        || real.n_cols != model.n_input
        || generated.n_cols != model.n_input
    {
        return Err(Error::InvalidInput(format!(
            "scorer: {}×{} real and {}×{} generated latents, expected ≥ 2 rows of width {}",
            real.n_rows, real.n_cols, generated.n_rows, generated.n_cols, model.n_input
        )));
    }
    let n = real.n_rows + generated.n_rows;
    let mut all = real.clone();
    all.data.extend_from_slice(&generated.data);
    all.n_rows = n;
    let label = |i: usize| usize::from(i >= real.n_rows);
    let one_hot = |b: &[usize], dev: &Device| {
        let v: Vec<f32> = b
            .iter()
            .flat_map(|&i| {
                if label(i) == 1 {
                    [0.0, 1.0]
                } else {
                    [1.0, 0.0]
                }
            })
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [b.len(), 2]), dev)
    };
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (train, val) = split(n, cfg.validation_fraction, MAX_VALIDATION, &mut rng);
    let net = model.init(&ad);
    let mut step = ShuffledMinibatches {
        train,
        batch_size: cfg.batch_size,
        drop_single: true,
        loss: |net: &Scorer, b: &[usize]| {
            net.loss(to_tensor(&all.select_rows(b), &ad), one_hot(b, &ad))
        },
    };
    let opts = FitOptions::new("scorer", cfg.epochs, cfg.learning_rate);
    let fitted = fit(&mut step, net, &opts, &mut rng, &mut Silent)?;
    let net = fitted.last.valid();
    let acc = if val.is_empty() {
        None
    } else {
        let lp = to_host(
            net.log_prob_real(to_tensor(&all.select_rows(&val), device))
                .reshape([val.len(), 1]),
        )?;
        let correct = val
            .iter()
            .zip(&lp.data)
            .filter(|&(&i, &l)| (l.exp() < 0.5) == (label(i) == 1))
            .count();
        Some(correct as f64 / val.len() as f64)
    };
    Ok((net, acc))
}
