//! Range and length checks of loaded run files, each naming the file and the field.

use std::path::Path;

use super::GENES_JSON;
use crate::error::{Error, Result};
use crate::pp::FittedPreprocess;
use crate::schedulers::{NoiseSchedule, ScheduleConfig};
use crate::train::{DiffusionTrainConfig, VaeTrainConfig};

/// Fails with [`Error::Format`] naming `field` of `path` unless `ok`.
pub(crate) fn check_field(
    path: &Path,
    field: impl Into<String>,
    ok: bool,
    msg: impl FnOnce() -> String,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::format(path, field, msg()))
    }
}

/// Checks `v` is finite and within `lo..=hi` (`lo_open`: strictly above `lo`; `hi_open`:
/// strictly below `hi`).
pub(crate) fn check_range(
    path: &Path,
    field: &str,
    v: f64,
    (lo, lo_open): (f64, bool),
    (hi, hi_open): (f64, bool),
) -> Result<()> {
    let ok = v.is_finite()
        && if lo_open { v > lo } else { v >= lo }
        && if hi_open { v < hi } else { v <= hi };
    check_field(path, field, ok, || {
        let l = if lo_open { "(" } else { "[" };
        let h = if hi_open { ")" } else { "]" };
        let hi = if hi.is_infinite() {
            "∞".to_string()
        } else {
            hi.to_string()
        };
        format!("{v} is out of range: expected a number in {l}{lo}, {hi}{h}")
    })
}

/// Checks every value of `v` is finite (`what` names the field).
pub(crate) fn check_all_finite<T: Copy + Into<f64>>(
    path: &Path,
    what: &str,
    v: &[T],
) -> Result<()> {
    match v.iter().position(|&x| !x.into().is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::format(
            path,
            format!("{what}[{i}]"),
            format!("{} is not a finite number", v[i].into()),
        )),
    }
}

/// Checks a length against the one the rest of the run implies.
pub(crate) fn check_len(path: &Path, what: &str, got: usize, want: usize, why: &str) -> Result<()> {
    check_field(path, what, got == want, || {
        format!("{got} values, expected {want} ({why})")
    })
}

/// Checks that every width in `dims` (named `fields`) is at least 1.
pub(crate) fn check_dims(path: &Path, dims: &[(&str, usize)]) -> Result<()> {
    for &(field, d) in dims {
        check_field(path, field, d >= 1, || "0, expected ≥ 1".into())?;
    }
    Ok(())
}

/// Checks the training parameters of a latent model (`prefix` is its key in config.json).
pub(crate) fn check_vae_train(path: &Path, prefix: &str, c: &VaeTrainConfig) -> Result<()> {
    let f = |k: &str| format!("{prefix}.{k}");
    check_range(
        path,
        &f("learning_rate"),
        c.learning_rate,
        (0.0, true),
        (f64::INFINITY, true),
    )?;
    check_range(
        path,
        &f("kl_weight"),
        c.kl_weight,
        (0.0, false),
        (f64::INFINITY, true),
    )?;
    check_range(
        path,
        &f("validation_fraction"),
        c.validation_fraction,
        (0.0, false),
        (1.0, true),
    )?;
    check_field(path, f("batch_size"), c.batch_size > 0, || {
        "0, expected ≥ 1".into()
    })
}

/// Checks the training parameters of a denoiser (`prefix` is its key in config.json).
pub(crate) fn check_diffusion_train(
    path: &Path,
    prefix: &str,
    c: &DiffusionTrainConfig,
) -> Result<()> {
    let f = |k: &str| format!("{prefix}.{k}");
    check_range(
        path,
        &f("learning_rate"),
        c.learning_rate,
        (0.0, true),
        (f64::INFINITY, true),
    )?;
    check_range(
        path,
        &f("ema_decay"),
        c.ema_decay,
        (0.0, false),
        (1.0, false),
    )?;
    check_range(
        path,
        &f("validation_fraction"),
        c.validation_fraction,
        (0.0, false),
        (1.0, true),
    )?;
    check_field(path, f("batch_size"), c.batch_size > 0, || {
        "0, expected ≥ 1".into()
    })
}

/// Checks a dropout probability (in `[0, 1)`).
pub(crate) fn check_dropout(path: &Path, field: &str, p: f64) -> Result<()> {
    check_range(path, field, p, (0.0, false), (1.0, true))
}

/// Checks a stored noise schedule: valid parameters, and ᾱ_T recomputed from them equal to
/// the `alphas_cumprod_terminal` recorded at training (an edited `num_train_timesteps` or β
/// range changes it; the denoiser was trained for the recorded schedule).
pub(crate) fn check_schedule(path: &Path, s: &ScheduleConfig, terminal: f64) -> Result<()> {
    check_field(
        path,
        "schedule.num_train_timesteps",
        s.num_train_timesteps > 0,
        || "0, expected ≥ 1".into(),
    )?;
    let sched =
        NoiseSchedule::new(s).map_err(|e| Error::format(path, "schedule", e.to_string()))?;
    let got = sched.terminal_alpha_cumprod();
    check_field(
        path,
        "alphas_cumprod_terminal",
        (got - terminal).abs() <= 1e-9 * terminal.abs() + 1e-12,
        || {
            format!(
                "{terminal} recorded, but the schedule (T = {}, β {} .. {}) gives ᾱ_T = {got}: \
                 the schedule was changed after training, and the denoiser only works with the \
                 one it was trained on",
                s.num_train_timesteps, s.beta_start, s.beta_end
            )
        },
    )
}

/// Checks a fitted preprocessing against the model's genes `genes` (`path`: preprocess.json):
/// the same output genes, positive finite targets, per-gene statistics of the right length.
pub(crate) fn check_preprocess(path: &Path, p: &FittedPreprocess, genes: &[String]) -> Result<()> {
    check_field(path, "genes", p.genes == genes, || {
        format!(
            "{} output genes, which differ from the model's {} genes in {GENES_JSON}",
            p.genes.len(),
            genes.len()
        )
    })?;
    let n = genes.len();
    if let Some(t) = p.target_sum {
        check_range(path, "target_sum", t, (0.0, true), (f64::INFINITY, true))?;
    }
    for (i, s) in p.steps.iter().enumerate() {
        if let crate::pp::Step::NormalizeTotal { target_sum } = s {
            check_range(
                path,
                &format!("steps[{i}].target_sum"),
                *target_sum,
                (0.0, true),
                (f64::INFINITY, true),
            )?;
        }
    }
    if let Some(h) = &p.highly_variable {
        check_len(path, "highly_variable", h.len(), n, "one per gene")?;
    }
    if let Some(s) = &p.scale {
        check_len(path, "scale.mean", s.mean.len(), n, "one per gene")?;
        check_len(path, "scale.std", s.std.len(), n, "one per gene")?;
        check_all_finite(path, "scale.mean", &s.mean)?;
        if let Some(i) = s.std.iter().position(|&v| !(v.is_finite() && v > 0.0)) {
            return Err(Error::format(
                path,
                format!("scale.std[{i}]"),
                format!("{}, expected a finite number > 0", s.std[i]),
            ));
        }
    }
    if let Some(m) = &p.minmax {
        check_len(path, "minmax.min", m.min.len(), n, "one per gene")?;
        check_len(path, "minmax.max", m.max.len(), n, "one per gene")?;
        check_all_finite(path, "minmax.min", &m.min)?;
        check_all_finite(path, "minmax.max", &m.max)?;
        if let Some(i) = (0..n).find(|&i| m.min[i] > m.max[i]) {
            return Err(Error::format(
                path,
                format!("minmax.min[{i}]"),
                format!("{} is above the maximum {}", m.min[i], m.max[i]),
            ));
        }
    }
    Ok(())
}
