//! The one training loop, [`fit`], hand-written in the style of Burn's
//! `examples/custom-training-loop` so that every random draw happens in a fixed order and a
//! seed gives the same bytes. Every model of celldiff trains through it (scVAEDer's VAE and
//! denoiser, SCLD's autoencoder, conditional denoiser and Scorer, DiffVAE's networks, the
//! Graph-DiffVAE and the cell-type classifier): a model brings a [`TrainStep`] (its
//! minibatches, its loss, its validation loss) and [`FitOptions`] (learning-rate schedule,
//! EMA, early stopping); the loop does the rest — Adam steps, EMA updates, the per-epoch
//! [`EpochRecord`]s, the [`Observer`] calls, the non-finite-loss check, the best checkpoint.
//!
//! Sources: early stopping as scvi-tools' `early_stopping` (patience on the validation loss,
//! best weights kept); EMA as diffusers' `EMAModel` ([`Ema`]); the cosine schedule with a floor
//! as scVAEDer's denoiser training (Sadria & Layton 2025, Methods).

use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::rngs::StdRng;

use super::{EpochRecord, Observer};
use crate::error::{Error, Result};
use crate::models::Ema;

/// What one model contributes to [`fit`]: its minibatches, the loss of a minibatch and the
/// validation loss after an epoch. `M` is the model (a Burn [`Module`] on the autodiff
/// device).
pub trait TrainStep<M: Module> {
    /// The minibatches of epoch `epoch` (1-based), in order, each a list of indices into the
    /// step's training data; shuffles are drawn from `rng`.
    ///
    /// # Errors
    /// Whatever preparing the epoch fails with (a streamed source's reader).
    fn batches(&mut self, epoch: usize, rng: &mut StdRng) -> Result<Vec<Vec<usize>>>;

    /// The loss of minibatch `batch` under `model`, with any random draws (noise, timesteps,
    /// condition drops, negative samples) taken from `rng`.
    ///
    /// # Errors
    /// Whatever reading the minibatch fails with.
    fn loss(
        &mut self,
        model: &M,
        batch: &[usize],
        epoch: usize,
        rng: &mut StdRng,
    ) -> Result<StepLoss>;

    /// The epoch's minibatches are done (a streamed source stops its reader).
    ///
    /// # Errors
    /// The background reader failed.
    fn end_epoch(&mut self) -> Result<()> {
        Ok(())
    }

    /// The validation loss after epoch `epoch`, `None` without one. `model` is the training
    /// model, or the EMA model when [`FitOptions::ema_decay`] is set; call
    /// [`Module::valid`] on it for evaluation mode.
    ///
    /// # Errors
    /// The backend failed to return data.
    fn validate(&mut self, _model: &M, _epoch: usize) -> Result<Option<f64>> {
        Ok(None)
    }
}

/// The loss of one minibatch and its terms, as [`TrainStep::loss`] returns it.
///
/// The epoch's `train_loss` sums, per minibatch, `recon + weight · regularizer` read back as
/// `f64` when `recon` is given, else the value of `loss`.
pub struct StepLoss {
    /// The scalar to minimise, `[1]`.
    pub loss: Tensor<1>,
    /// The reconstruction term, `[1]` (recorded as [`EpochRecord::recon`]).
    pub recon: Option<Tensor<1>>,
    /// The regulariser, `[1]`, with its kind and weight in `loss`.
    pub regularizer: Option<(Regularizer, Tensor<1>, f64)>,
}

impl StepLoss {
    /// A loss without separate terms (the denoisers' L_simple, a cross-entropy).
    pub fn plain(loss: Tensor<1>) -> Self {
        Self {
            loss,
            recon: None,
            regularizer: None,
        }
    }
}

/// Which regulariser a [`StepLoss`] holds: it decides the [`EpochRecord`] field it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regularizer {
    /// KL divergence from the prior ([`EpochRecord::kl`], weight in `kl_weight`).
    Kl,
    /// Maximum mean discrepancy to prior samples ([`EpochRecord::mmd`], weight in
    /// `mmd_weight`; DiffVAE, Bica et al. 2020, Eq. 3).
    Mmd,
}

/// The learning rate of each optimisation step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// The same rate every step.
    Constant,
    /// Cosine decay from the peak to `floor · peak` over `total_steps` steps:
    /// lr_k = peak · (floor + (1 − floor) · ½ (1 + cos(π k / total_steps))) at step k (0-based).
    Cosine {
        /// Steps of the whole training (epochs × steps per epoch, at least 1).
        total_steps: usize,
        /// Final fraction of the peak rate.
        floor: f64,
    },
}

impl LrSchedule {
    fn at(self, peak: f64, step: usize) -> f64 {
        match self {
            Self::Constant => peak,
            Self::Cosine { total_steps, floor } => {
                let progress = step as f64 / total_steps.max(1) as f64;
                peak * (floor
                    + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
            }
        }
    }
}

/// Early stopping on the validation loss (scvi-tools' `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyStop {
    /// Stop after this many epochs without a lower validation loss.
    pub patience: usize,
    /// Through this epoch (a KL warm-up, whose objective changes every epoch) the latest
    /// model is kept whatever its loss.
    pub keep_latest_through: usize,
}

/// The options of [`fit`].
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// The stage's name in records and observer calls (`"vae"`, `"diffusion"`, `"ae"`, …).
    pub stage: String,
    /// What the non-finite-loss error calls the model (`"VAE"`, `"diffusion"`, …).
    pub label: String,
    /// Maximum number of epochs.
    pub epochs: usize,
    /// Peak Adam learning rate.
    pub learning_rate: f64,
    /// The learning-rate schedule over the steps.
    pub schedule: LrSchedule,
    /// Adam's ε (1e-8, PyTorch's default, for all but the classifier).
    pub adam_epsilon: f32,
    /// EMA of the weights with this decay ([`Ema`]), updated after every step; validation and
    /// early stopping then use the EMA model.
    pub ema_decay: Option<f64>,
    /// Early stopping, used when the step returns validation losses.
    pub early_stop: Option<EarlyStop>,
    /// The configuration field of the learning rate (`vae_train.learning_rate`, ...), named in
    /// the non-finite-loss advice (empty when none).
    pub lr_field: String,
}

impl FitOptions {
    /// Options for stage `stage` (also the error's label): `epochs` at a constant
    /// `learning_rate`, Adam ε = 1e-8, no EMA, no early stopping.
    pub fn new(stage: &str, epochs: usize, learning_rate: f64) -> Self {
        Self {
            stage: stage.into(),
            label: stage.into(),
            epochs,
            learning_rate,
            schedule: LrSchedule::Constant,
            adam_epsilon: 1e-8,
            ema_decay: None,
            early_stop: None,
            lr_field: String::new(),
        }
    }
}

/// What [`fit`] returns.
pub struct Fitted<M> {
    /// The model after the last step (autodiff device, training mode).
    pub last: M,
    /// The model kept: under early stopping the best validation epoch's (the EMA model's with
    /// an EMA), else the final EMA model with an EMA, else `None` (then it is `last`).
    pub kept: Option<M>,
    /// One record per epoch run; the kept epoch has `kept: Some(true)` under early stopping.
    pub records: Vec<EpochRecord>,
}

impl<M: Clone> Fitted<M> {
    /// The kept model ([`Fitted::kept`], else [`Fitted::last`]).
    pub fn kept_model(&self) -> M {
        self.kept.clone().unwrap_or_else(|| self.last.clone())
    }
}

/// Trains `model` with Adam for at most `opts.epochs` epochs of `step`'s minibatches, drawing
/// every random number of the epoch order and the losses from `rng`, and reports each epoch
/// to `observer` (stage start, epoch records, stage end with the reason).
///
/// Per step k: lr = `opts.schedule` at k; loss → gradients → Adam; EMA update. Per epoch:
/// `train_loss` (see [`StepLoss`]), the non-finite check, the validation loss, the record,
/// early stopping.
///
/// # Errors
/// [`Error::InvalidInput`] when an epoch's training loss is not finite (naming the stage, the
/// epoch and the learning rate, with the advice to lower it); whatever `step` returns.
pub fn fit<M: Module, S: TrainStep<M> + ?Sized>(
    step: &mut S,
    model: M,
    opts: &FitOptions,
    rng: &mut StdRng,
    observer: &mut dyn Observer,
) -> Result<Fitted<M>> {
    let mut net = model;
    let mut ema = opts.ema_decay.map(|d| Ema::new(&net, d));
    let mut optim = crate::optim::adam(opts.adam_epsilon);
    let mut stopper = opts.early_stop.map(|e| EarlyStopping::new(e.patience));
    let mut records = Vec::new();
    let mut k = 0usize;
    observer.stage_start(&opts.stage, opts.epochs);
    for epoch in 1..=opts.epochs {
        let start = Instant::now();
        let plan = step.batches(epoch, rng)?;
        let mut lr = opts.learning_rate;
        let (mut sum, mut sum_r, mut sum_g, mut nb) = (0f64, 0f64, 0f64, 0usize);
        let mut recon_seen = false;
        let mut reg_seen: Option<(Regularizer, f64)> = None;
        for b in &plan {
            lr = opts.schedule.at(opts.learning_rate, k);
            let out = step.loss(&net, b, epoch, rng)?;
            let grads = GradientsParams::from_grads(out.loss.backward(), &net);
            net = optim.step(lr, net, grads);
            if let Some(e) = ema.as_mut() {
                e.update(&net);
            }
            match out.recon {
                Some(r) => {
                    let r = r.into_scalar::<f32>() as f64;
                    let (g, w) = match out.regularizer {
                        Some((kind, g, w)) => {
                            reg_seen = Some((kind, w));
                            (g.into_scalar::<f32>() as f64, w)
                        }
                        None => (0.0, 0.0),
                    };
                    recon_seen = true;
                    sum_r += r;
                    sum_g += g;
                    sum += r + w * g;
                }
                None => sum += out.loss.into_scalar::<f32>() as f64,
            }
            nb += 1;
            k += 1;
            if observer.cancelled() {
                step.end_epoch()?;
                return Err(Error::Interrupted(format!(
                    "{} stopped in epoch {epoch} after {k} minibatches",
                    opts.label
                )));
            }
        }
        step.end_epoch()?;
        let nbf = nb.max(1) as f64;
        let train_loss = sum / nbf;
        if !train_loss.is_finite() {
            return Err(non_finite_loss(
                &opts.label,
                epoch,
                opts.learning_rate,
                &opts.lr_field,
            ));
        }
        let val_loss = match &ema {
            Some(e) => step.validate(e.model(), epoch)?,
            None => step.validate(&net, epoch)?,
        };
        let reg = |want: Regularizer| reg_seen.filter(|(kind, _)| *kind == want);
        let rec = EpochRecord {
            stage: opts.stage.clone(),
            epoch,
            train_loss,
            val_loss,
            recon: recon_seen.then_some(sum_r / nbf),
            kl: reg(Regularizer::Kl).map(|_| sum_g / nbf),
            kl_weight: reg(Regularizer::Kl).map(|(_, w)| w),
            mmd: reg(Regularizer::Mmd).map(|_| sum_g / nbf),
            mmd_weight: reg(Regularizer::Mmd).map(|(_, w)| w),
            learning_rate: lr,
            seconds: start.elapsed().as_secs_f64(),
            kept: None,
        };
        observer.epoch_end(&rec);
        records.push(rec);
        if let (Some(s), Some(v), Some(e)) = (stopper.as_mut(), val_loss, opts.early_stop) {
            let latest = epoch <= e.keep_latest_through;
            let eval_model = || match &ema {
                Some(m) => m.model().clone(),
                None => net.clone(),
            };
            if s.stop(epoch, v, latest, eval_model) {
                break;
            }
        }
    }
    let best = stopper.and_then(|s| {
        let reason = match (&ema, &s.best) {
            (Some(_), Some((b, _))) => format!(
                "{}; kept the EMA weights of the best validation loss ({b:.4})",
                s.reason
            ),
            _ => s.reason.clone(),
        };
        let kept_epoch = s.best_epoch;
        s.best.map(|(_, m)| (m, reason, kept_epoch))
    });
    let kept = match best {
        Some((m, reason, kept_epoch)) => {
            if let Some(r) = records.iter_mut().find(|r| r.epoch == kept_epoch) {
                r.kept = Some(true);
            }
            observer.stage_end(&opts.stage, &reason);
            Some(m)
        }
        None => {
            let reason = if ema.is_some() {
                "done (last EMA weights)"
            } else {
                "reached the maximum number of epochs"
            };
            observer.stage_end(&opts.stage, reason);
            ema.map(Ema::into_model)
        }
    };
    Ok(Fitted {
        last: net,
        kept,
        records,
    })
}

/// The [`TrainStep`] of a model whose loss needs nothing but the minibatch's indices (a
/// classifier, SCLD's Scorer): each epoch shuffles `train` and cuts it into minibatches of
/// `batch_size` (dropping a final single cell when `drop_single`, for BatchNorm); `loss`
/// gives the minibatch's loss `[1]`.
pub struct ShuffledMinibatches<F> {
    /// Indices of the training rows.
    pub train: Vec<usize>,
    /// Minibatch size.
    pub batch_size: usize,
    /// Drop a final minibatch of one row.
    pub drop_single: bool,
    /// The loss of a minibatch under the model.
    pub loss: F,
}

impl<M: Module, F: FnMut(&M, &[usize]) -> Tensor<1>> TrainStep<M> for ShuffledMinibatches<F> {
    fn batches(&mut self, _epoch: usize, rng: &mut StdRng) -> Result<Vec<Vec<usize>>> {
        Ok(super::plan::shuffled_batches(
            &mut self.train,
            rng,
            self.batch_size,
            self.drop_single,
        ))
    }

    fn loss(
        &mut self,
        model: &M,
        b: &[usize],
        _epoch: usize,
        _rng: &mut StdRng,
    ) -> Result<StepLoss> {
        Ok(StepLoss::plain((self.loss)(model, b)))
    }
}

/// The error of a training loop whose loss became NaN or infinite: bad input to the run (a
/// learning rate too high for the data, or extreme input values), so [`Error::InvalidInput`]
/// (the CLI exits 2), naming the stage, the epoch (1-based) and the advice. `field` is the
/// configuration field of the learning rate (empty when there is none).
pub(crate) fn non_finite_loss(stage: &str, epoch: usize, learning_rate: f64, field: &str) -> Error {
    let flag = if field.is_empty() {
        String::new()
    } else {
        format!(" ({field})")
    };
    Error::InvalidInput(format!(
        "{stage} loss became non-finite (NaN or infinite) at epoch {epoch} with learning rate \
         {learning_rate:e}: lower the learning rate{flag} (e.g. 10 times), and check the input \
         for extreme values (counts read as log data: see the preprocessing's log1p setting)"
    ))
}

/// Early stopping on the validation loss (as scvi-tools' `early_stopping`): keeps the model of
/// the best epoch and stops after `patience` epochs without a lower validation loss.
struct EarlyStopping<M> {
    /// Validation loss and model of the best epoch so far.
    best: Option<(f64, M)>,
    /// The epoch of `best`.
    best_epoch: usize,
    since_best: usize,
    patience: usize,
    /// Why training ended, for [`Observer::stage_end`].
    reason: String,
}

impl<M> EarlyStopping<M> {
    fn new(patience: usize) -> Self {
        Self {
            best: None,
            best_epoch: 0,
            since_best: 0,
            patience,
            reason: "reached the maximum number of epochs".into(),
        }
    }

    /// Records epoch `epoch`'s validation loss `v`; `model` is called only when this epoch
    /// becomes the best one (always when `keep_latest`, e.g. during a KL warm-up whose
    /// objective changes every epoch). Returns `true` when training should stop.
    fn stop(&mut self, epoch: usize, v: f64, keep_latest: bool, model: impl FnOnce() -> M) -> bool {
        if keep_latest || self.best.as_ref().is_none_or(|(b, _)| v < *b) {
            self.best = Some((v, model()));
            self.best_epoch = epoch;
            self.since_best = 0;
            return false;
        }
        self.since_best += 1;
        if self.since_best < self.patience {
            return false;
        }
        self.reason = format!(
            "early stop at epoch {epoch}: no better validation loss in {} epochs",
            self.patience
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;
    use rand::SeedableRng;

    use super::*;
    use crate::models::layers::{Activation, Dense, DenseConfig};
    use crate::train::Silent;

    /// A regression y = 2x over 64 points as a [`TrainStep`] of a linear layer: minibatches of
    /// 16 in a fresh order each epoch, squared error; the validation losses are scripted so
    /// that early stopping can be checked (the last value repeats), or computed from the model.
    struct Line {
        x: Vec<f32>,
        scripted: Vec<f64>,
        nan_at: Option<usize>,
        ad: Device,
    }

    impl TrainStep<Dense> for Line {
        fn batches(&mut self, _epoch: usize, rng: &mut StdRng) -> Result<Vec<Vec<usize>>> {
            let mut order: Vec<usize> = (0..self.x.len()).collect();
            Ok(crate::train::plan::shuffled_batches(
                &mut order, rng, 16, false,
            ))
        }

        fn loss(
            &mut self,
            m: &Dense,
            b: &[usize],
            epoch: usize,
            _r: &mut StdRng,
        ) -> Result<StepLoss> {
            let xs: Vec<f32> = b.iter().map(|&i| self.x[i]).collect();
            let ys: Vec<f32> = if self.nan_at == Some(epoch) {
                vec![f32::NAN; b.len()]
            } else {
                xs.iter().map(|v| 2.0 * v).collect()
            };
            let x = Tensor::<2>::from_data(TensorData::new(xs, [b.len(), 1]), &self.ad);
            let y = Tensor::<2>::from_data(TensorData::new(ys, [b.len(), 1]), &self.ad);
            let err = m.forward(x, Activation::None).sub(y).square().mean();
            Ok(StepLoss {
                recon: Some(err.clone()),
                ..StepLoss::plain(err)
            })
        }

        fn validate(&mut self, _m: &Dense, epoch: usize) -> Result<Option<f64>> {
            Ok(self
                .scripted
                .get(epoch - 1)
                .or(self.scripted.last())
                .copied())
        }
    }

    fn line(scripted: Vec<f64>, nan_at: Option<usize>) -> (Line, Dense) {
        let ad = Device::default().autodiff();
        ad.seed(1);
        let model = DenseConfig::new(1, 1).init(&ad);
        let x = (0..64).map(|i| i as f32 / 32.0 - 1.0).collect();
        let step = Line {
            x,
            scripted,
            nan_at,
            ad,
        };
        (step, model)
    }

    /// The loss falls, one record per epoch with the learning rate of the schedule's last
    /// step, and the same seed gives the same weights.
    #[test]
    fn fit_trains_and_is_reproducible() {
        let _rng = crate::test_rng_lock();
        let run = || {
            let (mut step, model) = line(Vec::new(), None);
            let opts = FitOptions {
                schedule: LrSchedule::Cosine {
                    total_steps: 160,
                    floor: 0.1,
                },
                ..FitOptions::new("line", 40, 0.1)
            };
            let mut rng = StdRng::seed_from_u64(3);
            fit(&mut step, model, &opts, &mut rng, &mut Silent).unwrap()
        };
        let a = run();
        assert_eq!(a.records.len(), 40);
        let (first, last) = (&a.records[0], &a.records[39]);
        assert!(
            last.train_loss < 0.1 * first.train_loss,
            "{first:?} → {last:?}"
        );
        assert_eq!(last.recon, Some(last.train_loss));
        // Step 159 of 160: 0.1 · (0.1 + 0.9 · ½ (1 + cos(159π/160))).
        let want = 0.1 * (0.1 + 0.9 * 0.5 * (1.0 + (159.0 * std::f64::consts::PI / 160.0).cos()));
        assert!((last.learning_rate - want).abs() < 1e-15);
        assert!(a.kept.is_none() && a.records.iter().all(|r| r.kept.is_none()));
        let w = |d: &Dense| {
            d.linear
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(w(&a.last), w(&run().last));
    }

    /// Early stopping keeps the best epoch's model, marks its record and stops after
    /// `patience` epochs without a lower loss; with an EMA the kept model is the EMA's.
    #[test]
    fn fit_stops_early_and_keeps_the_best_epoch() {
        let _rng = crate::test_rng_lock();
        let (mut step, model) = line(vec![3.0, 2.0, 2.5, 2.6, 2.7], None);
        let opts = FitOptions {
            early_stop: Some(EarlyStop {
                patience: 2,
                keep_latest_through: 0,
            }),
            ema_decay: Some(0.9),
            ..FitOptions::new("line", 50, 0.01)
        };
        let mut rng = StdRng::seed_from_u64(0);
        let f = fit(&mut step, model, &opts, &mut rng, &mut Silent).unwrap();
        assert_eq!(f.records.len(), 4);
        let kept: Vec<usize> = f
            .records
            .iter()
            .filter(|r| r.kept == Some(true))
            .map(|r| r.epoch)
            .collect();
        assert_eq!(kept, [2]);
        assert!(f.kept.is_some());
    }

    /// A non-finite loss is the user's error (exit 2), naming the stage and the epoch.
    #[test]
    fn fit_refuses_a_non_finite_loss() {
        let _rng = crate::test_rng_lock();
        let (mut step, model) = line(Vec::new(), Some(3));
        let opts = FitOptions {
            label: "Line".into(),
            ..FitOptions::new("line", 5, 0.01)
        };
        let mut rng = StdRng::seed_from_u64(0);
        let e = fit(&mut step, model, &opts, &mut rng, &mut Silent)
            .err()
            .unwrap();
        assert!(e.is_bad_input(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("Line loss") && msg.contains("epoch 3"),
            "{msg}"
        );
    }

    /// Keeps the best epoch's model, stops after `patience` epochs without a lower loss, and
    /// during a warm-up (`keep_latest`) keeps the latest model whatever its loss.
    #[test]
    fn early_stopping_keeps_the_best_model_and_stops_after_patience() {
        let _rng = crate::test_rng_lock();
        let mut s = EarlyStopping::new(2);
        assert!(!s.stop(1, 5.0, true, || 1));
        assert!(!s.stop(2, 9.0, true, || 2)); // warm-up: kept although worse
        assert_eq!(s.best, Some((9.0, 2)));
        assert!(!s.stop(3, 4.0, false, || 3));
        assert!(!s.stop(4, 4.5, false, || panic!("not the best epoch")));
        assert!(s.stop(5, 4.0, false, || panic!("not the best epoch"))); // equal is not better
        assert_eq!(s.best, Some((4.0, 3)));
        assert_eq!(
            s.reason,
            "early stop at epoch 5: no better validation loss in 2 epochs"
        );
        let mut never = EarlyStopping::new(3);
        for (e, v) in [3.0, 2.0, 1.0].into_iter().enumerate() {
            assert!(!never.stop(e + 1, v, false, || e));
        }
        assert_eq!(never.reason, "reached the maximum number of epochs");
    }
}
