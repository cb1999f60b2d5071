//! scVAEDer's VAE and SCLD's autoencoder as [`TrainStep`]s of the one loop, and the VAE's
//! batched inference (posterior means, decoding).

use burn::prelude::*;
use burn::tensor::TensorData;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::fit::{EarlyStop, FitOptions, Regularizer, StepLoss, TrainStep, fit};
use super::plan::{InMemoryCells, TrainCells, batches, plan_epoch, shuffled_batches, split};
use super::{
    EpochRecord, MAX_VALIDATION, Observer, VaeTrainConfig, check_vae_config, map_row_chunks,
    normal_matrix, to_host, to_tensor,
};
use crate::anndata::{DenseMatrix, Matrix};
use crate::error::{Error, Result};
use crate::models::vae::{vae_count_loss_terms, vae_loss_terms};
use crate::models::{Autoencoder, AutoencoderConfig, Likelihood, Vae, VaeConfig};

/// Trains the VAE on `x` (`[n_cells, n_genes]`, the preprocessed expression, e.g.
/// log1p-normalised HVGs) and returns the model with the best validation loss (the last one if
/// there is no validation split) and the per-epoch records.
///
/// The KL weight rises linearly from 0 to `kl_weight` over `kl_warmup_epochs` (Bowman et al.
/// 2016); early stopping only starts after the warm-up.
///
/// # Errors
/// [`Error::InvalidInput`] if `x` has fewer than 2 cells or its width differs from
/// `model.n_genes`; [`Error::InvalidInput`] also if the loss becomes non-finite.
/// [`Error::Param`] for an invalid training configuration (see `validate`).
pub fn train_vae(
    x: &Matrix,
    model: &VaeConfig,
    cfg: &VaeTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(Vae, Vec<EpochRecord>)> {
    train_vae_cells(&mut InMemoryCells(x), model, cfg, device, observer)
}

/// [`train_vae`] on any [`TrainCells`] source (in memory or streamed from disk): the same
/// loop, the same random draws, so the same seed gives the same model for the same cells.
///
/// # Errors
/// As [`train_vae`], and whatever reading the source fails with.
pub fn train_vae_cells(
    x: &mut dyn TrainCells,
    model: &VaeConfig,
    cfg: &VaeTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(Vae, Vec<EpochRecord>)> {
    cfg.validate()?;
    check_vae_config(model)?;
    let (n, g) = (x.n_cells(), x.n_genes());
    if n < 2 {
        return Err(Error::InvalidInput(format!(
            "need at least 2 cells to train, got {n}"
        )));
    }
    if g != model.n_genes {
        return Err(Error::InvalidInput(format!(
            "X has {g} genes, the VAE expects {}",
            model.n_genes
        )));
    }
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    device.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (train, val) = split(
        n,
        cfg.validation_fraction,
        cfg.max_validation_cells,
        &mut rng,
    );
    let vae = model.init(&ad);
    let val = if val.is_empty() {
        None
    } else {
        let host = x.rows(&val)?;
        let mut r = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
        Some(VaeValidation {
            x: to_tensor(&host, device),
            counts: count_batch(&host, model.likelihood, device),
            eps: to_tensor(&normal_matrix(&mut r, val.len(), model.n_latent), device),
        })
    };
    let mut step = VaeStep {
        cells: x,
        train,
        val,
        cfg,
        likelihood: model.likelihood,
        n_latent: model.n_latent,
        ad,
    };
    let opts = FitOptions {
        label: "VAE".into(),
        early_stop: Some(EarlyStop {
            patience: cfg.patience,
            keep_latest_through: cfg.kl_warmup_epochs,
        }),
        lr_field: "vae_train.learning_rate".into(),
        ..FitOptions::new("vae", cfg.epochs, cfg.learning_rate)
    };
    let fitted = fit(&mut step, vae, &opts, &mut rng, observer)?;
    Ok((fitted.kept_model().valid(), fitted.records))
}

/// The held-out cells of the VAE's validation loss: `[n_val, n_genes]` on the plain device,
/// their counts and log library sizes for a count likelihood, and fixed reparameterisation
/// noise `[n_val, n_latent]` (seed ^ 0x5eed) so that epochs are comparable.
struct VaeValidation {
    x: Tensor<2>,
    counts: Option<(Tensor<2>, Tensor<2>)>,
    eps: Tensor<2>,
}

/// scVAEDer's VAE as a [`TrainStep`]: negative ELBO with a KL weight that warms up linearly
/// (Sadria & Layton 2025, Methods; Kingma & Welling 2014, Eq. 10; Bowman et al. 2016).
struct VaeStep<'a> {
    cells: &'a mut dyn TrainCells,
    train: Vec<usize>,
    val: Option<VaeValidation>,
    cfg: &'a VaeTrainConfig,
    likelihood: Likelihood,
    n_latent: usize,
    ad: Device,
}

impl VaeStep<'_> {
    /// β of epoch `epoch`: `kl_weight` times the warm-up factor min(1, epoch / warm-up).
    fn beta(&self, epoch: usize) -> f64 {
        let warm = if self.cfg.kl_warmup_epochs == 0 {
            1.0
        } else {
            (epoch as f64 / self.cfg.kl_warmup_epochs as f64).min(1.0)
        };
        self.cfg.kl_weight * warm
    }
}

impl TrainStep<Vae> for VaeStep<'_> {
    fn batches(&mut self, _epoch: usize, rng: &mut StdRng) -> Result<Vec<Vec<usize>>> {
        let plan = plan_epoch(&mut self.train, self.cfg.shuffle, rng);
        self.cells.start_epoch(&plan)?;
        Ok(batches(&plan.order, self.cfg.batch_size)
            .map(<[usize]>::to_vec)
            .collect())
    }

    fn loss(&mut self, vae: &Vae, b: &[usize], epoch: usize, rng: &mut StdRng) -> Result<StepLoss> {
        let beta = self.beta(epoch);
        let host = self.cells.next_batch(b)?;
        let counts = count_batch(&host, self.likelihood, &self.ad);
        let xb = to_tensor(&host, &self.ad);
        let eps = to_tensor(&normal_matrix(rng, b.len(), self.n_latent), &self.ad);
        let out = vae.forward(xb.clone(), eps);
        let (recon, kl) = match counts {
            Some((c, l)) => vae_count_loss_terms(vae, c, l, &out),
            None => vae_loss_terms(xb, &out),
        };
        Ok(StepLoss {
            loss: recon.clone().add(kl.clone().mul_scalar(beta)),
            recon: Some(recon),
            regularizer: Some((Regularizer::Kl, kl, beta)),
        })
    }

    fn end_epoch(&mut self) -> Result<()> {
        self.cells.end_epoch()
    }

    fn validate(&mut self, vae: &Vae, epoch: usize) -> Result<Option<f64>> {
        let beta = self.beta(epoch);
        Ok(self.val.as_ref().map(|v| {
            let m = vae.valid();
            let out = m.forward(v.x.clone(), v.eps.clone());
            let (r, k) = match &v.counts {
                Some((c, l)) => vae_count_loss_terms(&m, c.clone(), l.clone(), &out),
                None => vae_loss_terms(v.x.clone(), &out),
            };
            r.into_scalar::<f32>() as f64 + beta * k.into_scalar::<f32>() as f64
        }))
    }
}

/// For a count-likelihood decoder, the counts of a batch of log1p-normalised cells and ln of their
/// library sizes (at least 1), recovered from each cell's lattice ([`crate::counts`]);
/// `None` for a Gaussian VAE.
///
/// # Shapes
/// `host`: `[batch, n_genes]` → `([batch, n_genes], [batch, 1])`
fn count_batch(
    host: &DenseMatrix,
    likelihood: Likelihood,
    device: &Device,
) -> Option<(Tensor<2>, Tensor<2>)> {
    if !likelihood.is_count() {
        return None;
    }
    let rows = crate::counts::recover_counts(host);
    let log_l: Vec<f32> = rows
        .library
        .iter()
        .map(|&l| l.max(1.0).ln() as f32)
        .collect();
    let n = log_l.len();
    Some((
        to_tensor(&rows.counts, device),
        Tensor::from_data(TensorData::new(log_l, [n, 1]), device),
    ))
}

/// Posterior means μ of all rows of `x` (`[n_cells, n_genes]` → `[n_cells, n_latent]`),
/// computed in evaluation mode (BatchNorm running statistics, no dropout) in chunks of 1024.
///
/// # Errors
/// [`Error::Internal`] if the backend fails to return data.
pub fn encode_mean(vae: &Vae, x: &Matrix, device: &Device) -> Result<DenseMatrix> {
    encode_mean_cells(vae, &mut InMemoryCells(x), device)
}

/// [`encode_mean`] of every cell of a [`TrainCells`] source, read in order in chunks of 1024
/// (`[n_cells, n_latent]`).
///
/// # Errors
/// Reading the source failed; [`Error::Internal`] if the backend fails to return data.
pub fn encode_mean_cells(
    vae: &Vae,
    x: &mut dyn TrainCells,
    device: &Device,
) -> Result<DenseMatrix> {
    let vae = vae.valid();
    map_row_chunks(x.n_cells(), 1024, "encode", |idx| {
        to_host(vae.encode(to_tensor(&x.rows(idx)?, device)).0)
    })
}

/// Decodes latents (`[n, n_latent]`, unstandardised) to expression `[n, n_genes]` in chunks.
///
/// # Errors
/// [`Error::Internal`] if the backend fails to return data.
pub fn decode(vae: &Vae, z: Tensor<2>) -> Result<DenseMatrix> {
    let vae = vae.valid();
    let [n, _] = z.dims();
    let mut parts = Vec::new();
    for start in (0..n).step_by(4096) {
        let end = (start + 4096).min(n);
        parts.push(vae.decode(z.clone().narrow(0, start, end - start)));
    }
    to_host(Tensor::cat(parts, 0))
}

/// Trains the SCLD [`Autoencoder`] (arXiv 2312.14220, Eq. 3–6: MSE reconstruction) on `x`
/// (`[n_cells, n_genes]`, preprocessed expression) with Adam, early stopping on a validation
/// split (`cfg.validation_fraction`, `cfg.patience`); `cfg.kl_weight` and the warm-up are
/// unused. Returns the model with the best validation loss and the per-epoch records
/// (stage `"ae"`).
///
/// # Errors
/// [`Error::InvalidInput`] for fewer than 2 cells or a width mismatch; [`Error::InvalidInput`] also if
/// the loss becomes non-finite.
/// [`Error::Param`] for an invalid training configuration (see `validate`).
pub fn train_autoencoder(
    x: &Matrix,
    model: &AutoencoderConfig,
    cfg: &VaeTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(Autoencoder, Vec<EpochRecord>)> {
    cfg.validate()?;
    let (n, g) = x.shape();
    if n < 2 {
        return Err(Error::InvalidInput(format!(
            "need at least 2 cells to train, got {n}"
        )));
    }
    if g != model.n_genes {
        return Err(Error::InvalidInput(format!(
            "X has {g} genes, the autoencoder expects {}",
            model.n_genes
        )));
    }
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (train, val) = split(n, cfg.validation_fraction, MAX_VALIDATION, &mut rng);
    let net = model.init(&ad);
    let val = (!val.is_empty()).then(|| {
        let host = x.rows_dense(&val);
        (
            to_tensor(&host, device),
            count_batch(&host, model.likelihood, device),
        )
    });
    let mut step = AeStep {
        x,
        train,
        val,
        batch_size: cfg.batch_size,
        likelihood: model.likelihood,
        ad,
    };
    let opts = FitOptions {
        label: "autoencoder".into(),
        early_stop: Some(EarlyStop {
            patience: cfg.patience,
            keep_latest_through: 0,
        }),
        lr_field: "vae_train.learning_rate".into(),
        ..FitOptions::new("ae", cfg.epochs, cfg.learning_rate)
    };
    let fitted = fit(&mut step, net, &opts, &mut rng, observer)?;
    Ok((fitted.kept_model().valid(), fitted.records))
}

/// SCLD's autoencoder as a [`TrainStep`]: SCLD Eq. 5–6 (MSE), or the count likelihood's
/// negative log-likelihood.
struct AeStep<'a> {
    x: &'a Matrix,
    train: Vec<usize>,
    val: Option<(Tensor<2>, Option<(Tensor<2>, Tensor<2>)>)>,
    batch_size: usize,
    likelihood: Likelihood,
    ad: Device,
}

fn ae_loss(net: &Autoencoder, xb: Tensor<2>, counts: Option<(Tensor<2>, Tensor<2>)>) -> Tensor<1> {
    match counts {
        Some((c, l)) => net.count_loss(xb, c, l),
        None => net.loss(xb),
    }
}

impl TrainStep<Autoencoder> for AeStep<'_> {
    fn batches(&mut self, _epoch: usize, rng: &mut StdRng) -> Result<Vec<Vec<usize>>> {
        Ok(shuffled_batches(
            &mut self.train,
            rng,
            self.batch_size,
            true,
        ))
    }

    fn loss(
        &mut self,
        net: &Autoencoder,
        b: &[usize],
        _epoch: usize,
        _rng: &mut StdRng,
    ) -> Result<StepLoss> {
        let host = self.x.rows_dense(b);
        let counts = count_batch(&host, self.likelihood, &self.ad);
        let loss = ae_loss(net, to_tensor(&host, &self.ad), counts);
        Ok(StepLoss {
            recon: Some(loss.clone()),
            ..StepLoss::plain(loss)
        })
    }

    fn validate(&mut self, net: &Autoencoder, _epoch: usize) -> Result<Option<f64>> {
        Ok(self.val.as_ref().map(|(vx, vc)| {
            ae_loss(&net.valid(), vx.clone(), vc.clone()).into_scalar::<f32>() as f64
        }))
    }
}

#[cfg(test)]
mod count_likelihood_tests {
    use burn::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Gamma, Poisson};

    use crate::anndata::{DenseMatrix, Matrix};
    use crate::models::{Likelihood, VaeConfig};
    use crate::train::{Silent, VaeTrainConfig, train_vae};

    /// NB counts of two cell types (different gene proportions) with θ = 2 for every gene and
    /// library sizes 500–3000, stored log1p(normalize_total(1e4)) as the training loop sees
    /// them; the NB VAE's validation loss falls and it learns θ near 2 from the counts it
    /// recovers from the lattice.
    #[test]
    fn nb_vae_loss_falls_and_it_learns_the_dispersion() {
        let _rng = crate::test_rng_lock();
        let (n, g, theta) = (600, 40, 2.0f64);
        let mut rng = StdRng::seed_from_u64(9);
        let mut x = Vec::with_capacity(n * g);
        for i in 0..n {
            let t = i % 2;
            let w: Vec<f64> = (0..g)
                .map(|j| if (j < g / 2) == (t == 0) { 3.0 } else { 1.0 })
                .collect();
            let sum: f64 = w.iter().sum();
            let lib = rng.random_range(500.0..3000.0);
            let y: Vec<f64> = w
                .iter()
                .map(|wj| {
                    let mu = lib * wj / sum;
                    let lam = Gamma::new(theta, mu / theta).unwrap().sample(&mut rng);
                    if lam > 0.0 {
                        Poisson::new(lam).unwrap().sample(&mut rng)
                    } else {
                        0.0
                    }
                })
                .collect();
            // Non-model genes hold another 30 % of the counts (normalize_total over all genes).
            let total: f64 = y.iter().sum::<f64>() / 0.7;
            let s = 1e4 / total.max(1.0);
            x.extend(y.iter().map(|&k| (k * s).ln_1p() as f32));
        }
        let x = Matrix::Dense(DenseMatrix::from_vec(n, g, x).unwrap());
        let cfg = VaeConfig::new(g)
            .with_hidden(vec![32])
            .with_n_latent(4)
            .with_likelihood(Likelihood::Nb);
        let train = VaeTrainConfig {
            epochs: 40,
            batch_size: 64,
            patience: 40,
            ..VaeTrainConfig::default()
        };
        let device = Device::default();
        let (vae, records) = train_vae(&x, &cfg, &train, &device, &mut Silent).unwrap();
        let val: Vec<f64> = records.iter().filter_map(|r| r.val_loss).collect();
        // The NB loss holds large θ-free terms (lgamma(x + 1), …): it falls by nats, not %.
        assert!(
            *val.last().unwrap() < val[0] - 5.0,
            "validation loss did not fall: {val:?}"
        );
        let mut th: Vec<f64> = vae
            .log_theta()
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(|v| (v as f64).exp())
            .collect();
        th.sort_by(|a, b| a.total_cmp(b));
        let median = th[g / 2];
        assert!(
            (1.0..4.0).contains(&median),
            "median θ {median}, truth {theta}"
        );
        // The decoder mean is log1p(c·ρ) in the model's space: finite and non-negative.
        let z = Tensor::<2>::zeros([3, 4], &device);
        let m = super::decode(&vae, z).unwrap();
        assert!(m.data.iter().all(|v| v.is_finite() && *v >= 0.0));
    }
}
