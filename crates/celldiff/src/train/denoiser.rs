//! The latent denoisers as [`TrainStep`]s of the one loop: scVAEDer's ε- (or velocity-)
//! prediction network and SCLD's conditional one with classifier-free guidance training, and
//! the forward-process tables (`Noising`) they share.

use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::fit::{EarlyStop, FitOptions, LrSchedule, StepLoss, TrainStep, fit};
use super::plan::{shuffled_batches, split};
use super::{
    DIFFUSION_VAL_DRAWS, DiffusionTrainConfig, EpochRecord, MAX_VALIDATION, Objective, Observer,
    to_tensor,
};
use crate::anndata::DenseMatrix;
use crate::error::{Error, Result};
use crate::models::denoiser::timestep_embedding;
use crate::models::{CondDenoiser, CondDenoiserConfig, Denoiser, DenoiserConfig};
use crate::schedulers::NoiseSchedule;

/// Forward-process tables shared by the denoiser training loops: timestep embeddings for all
/// T timesteps and the path's coefficients, z_t = a_t z₀ + b_t ε: √ᾱ_t and √(1 − ᾱ_t) for
/// [`Objective::Epsilon`] (target ε), 1 − s_t and s_t = (t+1)/T for [`Objective::Velocity`]
/// (target ε − z₀).
pub(crate) struct Noising {
    emb_table: Vec<f32>,
    time_dim: usize,
    sqrt_ab: Vec<f32>,
    sqrt_1m: Vec<f32>,
    velocity: bool,
}

impl Noising {
    pub(crate) fn new(schedule: &NoiseSchedule, time_dim: usize, objective: Objective) -> Self {
        let big_t = schedule.len();
        if objective == Objective::Velocity {
            let s: Vec<f32> = (0..big_t)
                .map(|k| ((k + 1) as f64 / big_t as f64) as f32)
                .collect();
            return Self {
                emb_table: timestep_embedding(&(0..big_t).collect::<Vec<_>>(), time_dim),
                time_dim,
                sqrt_ab: s.iter().map(|v| 1.0 - v).collect(),
                sqrt_1m: s,
                velocity: true,
            };
        }
        Self {
            emb_table: timestep_embedding(&(0..big_t).collect::<Vec<_>>(), time_dim),
            time_dim,
            velocity: false,
            sqrt_ab: schedule
                .alphas_cumprod
                .iter()
                .map(|a| a.sqrt() as f32)
                .collect(),
            sqrt_1m: schedule
                .alphas_cumprod
                .iter()
                .map(|a| (1.0 - a).sqrt() as f32)
                .collect(),
        }
    }

    /// `(z_t, emb(t), target)` for rows `b` of `z0`, t ~ U{0..T−1} and ε ~ N(0, I) drawn
    /// from `r`; the target is ε, or ε − z₀ for the velocity objective.
    pub(crate) fn batch(
        &self,
        z0: &DenseMatrix,
        b: &[usize],
        r: &mut StdRng,
        dev: &Device,
    ) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
        let d = z0.n_cols;
        let td = self.time_dim;
        let mut zt = Vec::with_capacity(b.len() * d);
        let mut eps = Vec::with_capacity(b.len() * d);
        let mut emb = Vec::with_capacity(b.len() * td);
        for &i in b {
            let t = r.random_range(0..self.sqrt_ab.len());
            emb.extend_from_slice(&self.emb_table[t * td..(t + 1) * td]);
            for &v in z0.row(i) {
                let e: f32 = r.sample(StandardNormal);
                eps.push(if self.velocity { e - v } else { e });
                zt.push(self.sqrt_ab[t] * v + self.sqrt_1m[t] * e);
            }
        }
        let m = b.len();
        let [zt, emb, eps] = super::upload(
            [
                TensorData::new(zt, [m, d]),
                TensorData::new(emb, [m, td]),
                TensorData::new(eps, [m, d]),
            ],
            dev,
        );
        (zt, emb, eps)
    }
}

/// Trains the ε-prediction denoiser on standardised latents `z0` (`[n_cells, n_latent]`) with
/// L_simple = ‖ε − ε_θ(√ᾱ_t z₀ + √(1−ᾱ_t) ε, t)‖² (Ho et al. 2020, Eq. 14), t ~ U{0..T−1}.
/// Returns `(denoiser, ema_denoiser, records)`; the EMA weights are the ones to sample with.
///
/// # Errors
/// [`Error::InvalidInput`] for fewer than 2 latents or a width mismatch; [`Error::InvalidInput`] also
/// if the loss becomes non-finite.
/// [`Error::Param`] for an invalid training configuration (see `validate`).
pub fn train_diffusion(
    z0: &DenseMatrix,
    model: &DenoiserConfig,
    schedule: &NoiseSchedule,
    cfg: &DiffusionTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(Denoiser, Denoiser, Vec<EpochRecord>)> {
    cfg.validate()?;
    let (n, d) = (z0.n_rows, z0.n_cols);
    if n < 2 {
        return Err(Error::InvalidInput(format!(
            "need at least 2 latents to train, got {n}"
        )));
    }
    if d != model.n_latent {
        return Err(Error::InvalidInput(format!(
            "latent width {d}, denoiser expects {}",
            model.n_latent
        )));
    }
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (train, val) = split(n, cfg.validation_fraction, MAX_VALIDATION, &mut rng);
    let tables = Noising::new(schedule, model.time_dim, cfg.objective);
    let val = (!val.is_empty()).then(|| {
        let mut r = StdRng::seed_from_u64(cfg.seed ^ 0x7a1);
        let rep: Vec<usize> = (0..DIFFUSION_VAL_DRAWS)
            .flat_map(|_| val.iter().copied())
            .collect();
        tables.batch(z0, &rep, &mut r, device)
    });
    let patience = cfg.patience.unwrap_or((cfg.epochs / 5).max(20));
    let net = model.init(&ad);
    let opts = denoiser_options(cfg, train.len(), (patience > 0).then_some(patience));
    let mut step = DenoiserStep {
        z0,
        tables,
        train,
        val,
        batch_size: cfg.batch_size,
        ad,
    };
    let fitted = fit(&mut step, net, &opts, &mut rng, observer)?;
    let ema = fitted.kept_model();
    Ok((fitted.last.valid(), ema, fitted.records))
}

/// The [`fit`] options of a latent denoiser: stage `"diffusion"`, cosine decay of the
/// learning rate to 10 % over all steps (`n_train` latents per epoch), EMA, and early stopping
/// on the EMA weights with `patience` (none when `None`).
fn denoiser_options(
    cfg: &DiffusionTrainConfig,
    n_train: usize,
    patience: Option<usize>,
) -> FitOptions {
    let steps_per_epoch = n_train.div_ceil(cfg.batch_size.max(1)).max(1);
    FitOptions {
        schedule: LrSchedule::Cosine {
            total_steps: (steps_per_epoch * cfg.epochs).max(1),
            floor: 0.1,
        },
        ema_decay: Some(cfg.ema_decay),
        early_stop: patience.map(|patience| EarlyStop {
            patience,
            keep_latest_through: 0,
        }),
        lr_field: "diffusion_train.learning_rate".into(),
        ..FitOptions::new("diffusion", cfg.epochs, cfg.learning_rate)
    }
}

/// scVAEDer's denoiser as a [`TrainStep`]: L_simple on fresh (t, ε) draws per minibatch; the
/// validation loss at the fixed draws `val` (`(z_t, emb(t), target)` of the held-out latents).
struct DenoiserStep<'a> {
    z0: &'a DenseMatrix,
    tables: Noising,
    train: Vec<usize>,
    val: Option<(Tensor<2>, Tensor<2>, Tensor<2>)>,
    batch_size: usize,
    ad: Device,
}

impl TrainStep<Denoiser> for DenoiserStep<'_> {
    fn batches(&mut self, _epoch: usize, rng: &mut StdRng) -> Result<Vec<Vec<usize>>> {
        Ok(shuffled_batches(
            &mut self.train,
            rng,
            self.batch_size,
            false,
        ))
    }

    fn loss(
        &mut self,
        net: &Denoiser,
        b: &[usize],
        _epoch: usize,
        rng: &mut StdRng,
    ) -> Result<StepLoss> {
        let (zt, emb, eps) = self.tables.batch(self.z0, b, rng, &self.ad);
        let pred = net.forward(zt, emb);
        Ok(StepLoss::plain(pred.sub(eps).square().mean()))
    }

    fn validate(&mut self, ema: &Denoiser, _epoch: usize) -> Result<Option<f64>> {
        Ok(self.val.as_ref().map(|(zt, emb, eps)| {
            let pred = ema.forward(zt.clone(), emb.clone());
            pred.sub(eps.clone()).square().mean().into_scalar::<f32>() as f64
        }))
    }
}

/// Conditions of the SCLD denoiser's training cells (arXiv 2312.14220, Sec. 3.2.1–3.2.2).
#[derive(Debug, Clone)]
pub struct ConditionBatchSource<'a> {
    /// Condition vectors `[K + 1, n_cond]`: clusters 0..K, then the holistic condition.
    pub table: &'a DenseMatrix,
    /// Cluster of each training latent (`0..K`), `[n_cells]`.
    pub cluster: &'a [usize],
    /// Probability p of replacing a cell's cluster condition by the holistic one (classifier-
    /// free guidance training, Ho & Salimans 2022).
    pub drop_prob: f64,
}

/// Trains SCLD's conditional denoiser with classifier-free guidance: each minibatch cell gets
/// its cluster's condition, replaced by the holistic condition c_{K+1} with probability
/// `cond.drop_prob`; loss L_simple (Ho et al. 2020, Eq. 14) as [`train_diffusion`]. The K + 1
/// condition vectors are embedded once per step (`[K + 1, width]`) and the rows gathered per
/// cell, so `Embed` costs K + 1 rows per step instead of a batch of rows.
/// Returns `(denoiser, ema_denoiser, records)` (stage `"diffusion"`).
///
/// # Errors
/// [`Error::InvalidInput`] for fewer than 2 latents, a width mismatch or a cluster index out
/// of range; [`Error::InvalidInput`] also if the loss becomes non-finite.
/// [`Error::Param`] for an invalid training configuration (see `validate`).
pub fn train_cond_diffusion(
    z0: &DenseMatrix,
    cond: &ConditionBatchSource<'_>,
    model: &CondDenoiserConfig,
    schedule: &NoiseSchedule,
    cfg: &DiffusionTrainConfig,
    device: &Device,
    observer: &mut dyn Observer,
) -> Result<(CondDenoiser, CondDenoiser, Vec<EpochRecord>)> {
    cfg.validate()?;
    let (n, d) = (z0.n_rows, z0.n_cols);
    let k_hol = cond.table.n_rows.saturating_sub(1);
    if n < 2 || d != model.n_latent || cond.cluster.len() != n {
        return Err(Error::InvalidInput(format!(
            "conditional denoiser: {n} latents of width {d} with {} cluster labels; expected \
             ≥ 2 latents of width {} and one label each",
            cond.cluster.len(),
            model.n_latent
        )));
    }
    if cond.table.n_cols != model.n_cond || cond.cluster.iter().any(|&c| c >= k_hol) {
        return Err(Error::InvalidInput(format!(
            "condition table {}×{} does not match {} clusters of width {}",
            cond.table.n_rows, cond.table.n_cols, k_hol, model.n_cond
        )));
    }
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (train, val) = split(n, cfg.validation_fraction, MAX_VALIDATION, &mut rng);
    let tables = Noising::new(schedule, model.time_dim, cfg.objective);
    let mut step = CondDenoiserStep {
        z0,
        cond,
        k_hol,
        tables,
        train,
        val: None,
        table_ad: to_tensor(cond.table, &ad),
        table_plain: to_tensor(cond.table, device),
        batch_size: cfg.batch_size,
        ad: ad.clone(),
    };
    step.val = (!val.is_empty()).then(|| {
        let mut r = StdRng::seed_from_u64(cfg.seed ^ 0x7a1);
        let (zt, emb, eps) = step.tables.batch(z0, &val, &mut r, device);
        (zt, emb, eps, step.condition_ids(&val, None, device))
    });
    let net = model.init(&ad);
    let opts = denoiser_options(cfg, step.train.len(), None);
    let fitted = fit(&mut step, net, &opts, &mut rng, observer)?;
    let ema = fitted.kept_model();
    Ok((fitted.last.valid(), ema, fitted.records))
}

/// SCLD's conditional denoiser as a [`TrainStep`]: L_simple with each cell's cluster
/// condition, dropped to the holistic one with probability `cond.drop_prob` (drawn after the
/// cell's (t, ε)); validation at fixed draws without drops.
struct CondDenoiserStep<'a, 'c> {
    z0: &'a DenseMatrix,
    cond: &'a ConditionBatchSource<'c>,
    /// Index of the holistic condition (K).
    k_hol: usize,
    tables: Noising,
    train: Vec<usize>,
    val: Option<(Tensor<2>, Tensor<2>, Tensor<2>, Tensor<1, Int>)>,
    /// The condition table `[K + 1, n_cond]` on the autodiff and the plain device.
    table_ad: Tensor<2>,
    table_plain: Tensor<2>,
    batch_size: usize,
    ad: Device,
}

impl CondDenoiserStep<'_, '_> {
    /// The condition index of each cell of `b`, `[b.len()]`: its cluster, or K (holistic)
    /// with probability `drop_prob` when `r` is given.
    fn condition_ids(
        &self,
        b: &[usize],
        mut r: Option<&mut StdRng>,
        dev: &Device,
    ) -> Tensor<1, Int> {
        let v: Vec<i64> = b
            .iter()
            .map(|&i| {
                let dropped = r
                    .as_deref_mut()
                    .is_some_and(|r| r.random::<f64>() < self.cond.drop_prob);
                (if dropped {
                    self.k_hol
                } else {
                    self.cond.cluster[i]
                }) as i64
            })
            .collect();
        Tensor::<1, Int>::from_data(TensorData::new(v, [b.len()]), dev)
    }
}

impl TrainStep<CondDenoiser> for CondDenoiserStep<'_, '_> {
    fn batches(&mut self, _epoch: usize, rng: &mut StdRng) -> Result<Vec<Vec<usize>>> {
        Ok(shuffled_batches(
            &mut self.train,
            rng,
            self.batch_size,
            false,
        ))
    }

    fn loss(
        &mut self,
        net: &CondDenoiser,
        b: &[usize],
        _epoch: usize,
        rng: &mut StdRng,
    ) -> Result<StepLoss> {
        let (zt, emb, eps) = self.tables.batch(self.z0, b, rng, &self.ad);
        let idx = self.condition_ids(b, Some(rng), &self.ad);
        let c_emb = net.embed_conditions(self.table_ad.clone()).select(0, idx);
        Ok(StepLoss::plain(
            net.forward(zt, emb, c_emb).sub(eps).square().mean(),
        ))
    }

    fn validate(&mut self, ema: &CondDenoiser, _epoch: usize) -> Result<Option<f64>> {
        Ok(self.val.as_ref().map(|(zt, emb, eps, idx)| {
            let c = ema
                .embed_conditions(self.table_plain.clone())
                .select(0, idx.clone());
            ema.forward(zt.clone(), emb.clone(), c)
                .sub(eps.clone())
                .square()
                .mean()
                .into_scalar::<f32>() as f64
        }))
    }
}
