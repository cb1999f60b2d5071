//! Parse-time checks of numeric flags: every number a user types is validated by clap before a
//! command starts (exit code 2, with the flag and the accepted range in the message), so no
//! NaN, infinity, zero batch size or absurd allocation reaches the library.
//!
//! Each function returns a clap value parser (`#[arg(value_parser = flags::count(1, MAX))]`; numeric flags also set
//! `allow_negative_numbers` so that `-5` reaches the parser instead of reading as a flag);
//! with `value_delimiter = ','` clap applies it to every element of a list.

use std::ffi::OsStr;
use std::sync::Arc;

use clap::builder::TypedValueParser;
use clap::error::{Error, ErrorKind};
use clap::{Arg, Command};

/// Most cells one command generates or simulates (`generate -n`, `simulate --cells`, ...).
pub const MAX_CELLS: usize = 100_000_000;
/// Widest hidden layer (`--hidden`, `--denoiser-width`, `--time-dim`, ...): with 30,000 genes a
/// 16,384-wide first layer is already 0.5 billion weights (2 GB, 8 GB with Adam's moments).
pub const MAX_WIDTH: usize = 16_384;
/// Largest latent dimension.
pub const MAX_LATENT: usize = 4_096;
/// Most epochs of any training loop.
pub const MAX_EPOCHS: usize = 1_000_000;
/// Largest minibatch.
pub const MAX_BATCH: usize = 1_000_000;
/// Most diffusion steps (`--timesteps`, `--steps`, `--t-start`).
pub const MAX_STEPS: usize = 100_000;
/// Most worker threads (`--threads`).
pub const MAX_THREADS: usize = 1_024;
/// Most genes of a simulated matrix.
pub const MAX_GENES: usize = 1_000_000;

/// A clap value parser that checks a typed value and names the flag in its error: `--dropout
/// must be a number in [0, 1), got nan (celldiff train)`.
#[derive(Clone)]
pub struct Check<T>(Arc<CheckFn<T>>);

/// The check of a [`Check`]: the value, or what is wrong with it.
type CheckFn<T> = dyn Fn(&str) -> Result<T, String> + Send + Sync;

impl<T> Check<T> {
    fn new(f: impl Fn(&str) -> Result<T, String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The value of `s`, or what is wrong with it (without the flag's name).
    pub fn check(&self, s: &str) -> Result<T, String> {
        (self.0)(s)
    }
}

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Check<T> {
    type Value = T;

    fn parse_ref(&self, cmd: &Command, arg: Option<&Arg>, value: &OsStr) -> Result<T, Error> {
        let s = value.to_string_lossy();
        self.check(&s).map_err(|msg| {
            let flag = arg.map_or_else(
                || "value".to_string(),
                |a| match (a.get_long(), a.get_short()) {
                    (Some(l), _) if l.chars().count() > 1 => format!("--{l}"),
                    (_, Some(c)) => format!("-{c}"),
                    (Some(l), None) => format!("--{l}"),
                    (None, None) => a.get_id().to_string(),
                },
            );
            Error::raw(
                ErrorKind::ValueValidation,
                match cmd.get_name() {
                    "celldiff" => format!("{flag} {msg}\n"),
                    sub => format!("{flag} {msg} (celldiff {sub})\n"),
                },
            )
            .with_cmd(cmd)
        })
    }
}

/// A whole number in `lo..=hi`.
pub fn count(lo: usize, hi: usize) -> Check<usize> {
    Check::new(move |s: &str| {
        let v: u128 = s.trim().parse().map_err(|_| {
            if hi == usize::MAX {
                format!("must be a whole number ≥ {lo}, got `{s}`")
            } else {
                format!("must be a whole number from {lo} to {hi}, got `{s}`")
            }
        })?;
        if v < lo as u128 {
            return Err(format!("must be at least {lo}, got {v}"));
        }
        if v > hi as u128 {
            return Err(format!("must be at most {hi}, got {v}"));
        }
        Ok(v as usize)
    })
}

/// A finite real number from `lo` (inclusive when `lo_closed`) to `hi` (inclusive when
/// `hi_closed`); infinite bounds are open.
pub fn real(lo: f64, lo_closed: bool, hi: f64, hi_closed: bool) -> Check<f64> {
    Check::new(move |s: &str| check_real(s, lo, lo_closed, hi, hi_closed))
}

fn check_real(s: &str, lo: f64, lo_closed: bool, hi: f64, hi_closed: bool) -> Result<f64, String> {
    let range = match (lo.is_finite(), hi.is_finite()) {
        (false, false) => "a finite number".to_string(),
        (true, false) if lo == 0.0 && !lo_closed => "positive (a finite number > 0)".to_string(),
        (true, false) => format!("a finite number {} {lo}", if lo_closed { "≥" } else { ">" }),
        (false, true) => format!("a finite number {} {hi}", if hi_closed { "≤" } else { "<" }),
        (true, true) => format!(
            "a number in {}{lo}, {hi}{}",
            if lo_closed { '[' } else { '(' },
            if hi_closed { ']' } else { ')' }
        ),
    };
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("must be {range}, got `{s}`"))?;
    let above = if lo_closed { v >= lo } else { v > lo };
    let below = if hi_closed { v <= hi } else { v < hi };
    if !v.is_finite() || !above || !below {
        return Err(format!("must be {range}, got {s}"));
    }
    Ok(v)
}

/// Any finite number (guidance weights, thresholds).
pub fn finite() -> Check<f64> {
    real(f64::NEG_INFINITY, false, f64::INFINITY, false)
}

/// A finite number > 0 (learning rates, perplexity, resolutions).
pub fn positive() -> Check<f64> {
    real(0.0, false, f64::INFINITY, false)
}

/// A finite number > 0 that fits an `f32` (`--max-value`).
pub fn positive_f32() -> Check<f32> {
    Check::new(|s: &str| {
        let v = check_real(s, 0.0, false, f64::INFINITY, false)?;
        if v > f32::MAX as f64 {
            return Err(format!("must be at most {:e}, got {s}", f32::MAX));
        }
        Ok(v as f32)
    })
}

/// A finite number ≥ 0 (loss weights).
pub fn non_negative() -> Check<f64> {
    real(0.0, true, f64::INFINITY, false)
}

/// A rate in [0, 1): dropout, EMA decay, validation fractions.
pub fn rate() -> Check<f64> {
    real(0.0, true, 1.0, false)
}

/// A probability in [0, 1].
pub fn probability() -> Check<f64> {
    real(0.0, true, 1.0, true)
}

/// A fraction in (0, 1]: the share of cells kept.
pub fn share() -> Check<f64> {
    real(0.0, false, 1.0, true)
}

/// A fraction in (0, 1): held-out shares, quantiles, β.
pub fn open_fraction() -> Check<f64> {
    real(0.0, false, 1.0, false)
}

/// `--target-sum`: a finite number > 0, or `median` (or `0`) for the median library size
/// (returned as 0).
pub fn target_sum() -> Check<f64> {
    Check::new(|s: &str| {
        let t = s.trim();
        if t.eq_ignore_ascii_case("median") || t.parse::<f64>().is_ok_and(|v| v == 0.0) {
            return Ok(0.0);
        }
        // At most 10¹²: larger targets overflow float32 expression values after scaling.
        check_real(t, 0.0, false, 1e12, true).map_err(|_| {
            format!(
                "must be a number in (0, 1e12], or `median` (or 0) for the median library \
                 size, got `{s}`"
            )
        })
    })
}

/// `--sampler` of the analyses (interpolate, perturb): `ddpm` or `ddim` only (on a flow run:
/// Euler steps, T or `--steps` of them), refused at parse time otherwise (`heun` and
/// `midpoint` are two-stage solvers for generation; the analyses start their reverse process
/// part-way down the grid, which needs one-stage steps).
pub fn analysis_sampler() -> impl TypedValueParser<Value = celldiff::pipeline::SamplerKind> {
    use celldiff::pipeline::SamplerKind;
    clap::builder::PossibleValuesParser::new(["ddpm", "ddim"]).map(|s| match s.as_str() {
        "ddpm" => SamplerKind::Ddpm,
        _ => SamplerKind::Ddim,
    })
}

/// The command-line name of a [`clap::ValueEnum`] value (`SamplerKind::Ddim` → `"ddim"`), as
/// written into messages and JSON outputs.
pub fn name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// The library names its parameters as its API and its config files do (`t_start`,
/// `vae_train.learning_rate`), never this command line's flags: `(text in a message, the
/// hint that names the flag)`.
const FLAG_HINTS: &[(&str, &str)] = &[
    (
        "vae_train.learning_rate",
        "--lr-vae sets vae_train.learning_rate",
    ),
    (
        "diffusion_train.learning_rate",
        "--lr-diffusion sets diffusion_train.learning_rate",
    ),
    ("t_start", "--t-start sets t_start"),
    ("n_steps", "--n-steps sets n_steps"),
    ("diff_step", "--diff-step sets diff_step"),
    ("window and top_k", "--window and --top-k set them"),
    (
        "library_model joint",
        "the run was trained with --library-model joint",
    ),
    (
        "library_model cluster",
        "train with --library-model cluster",
    ),
    ("library_model", "--library-model sets library_model"),
    (
        "this is a scld run",
        "the run was trained with --model scld",
    ),
    (
        "this is a scvaeder run",
        "the run was trained with --model scvaeder",
    ),
    (
        "shuffle block_cells",
        "--shuffle-block sets the shuffle block",
    ),
    ("n_top_genes", "--n-top-genes sets n_top_genes"),
    ("hidden widths", "--hidden sets the hidden widths"),
    ("gaussian likelihood", "--likelihood gaussian chooses it"),
    ("log1p setting", "--log1p / --no-log1p set it"),
    ("keep must be", "--keep sets keep"),
    (
        "trained without one",
        "the run was trained with --no-scorer",
    ),
    (
        "cargo feature `cuda`",
        "use --device cpu, or a build with --features cuda",
    ),
    (
        "replacing it needs force",
        "--force replaces an earlier celldiff output",
    ),
    ("min_genes", "--min-genes sets min_genes"),
    ("min_cells", "--min-cells sets min_cells"),
    ("scale and minmax", "--scale and --minmax set them"),
    ("max_value", "--max-value sets max_value"),
    ("log1p was requested", "leave out --log1p"),
    ("log1p = false", "--no-log1p keeps it as is"),
    (
        "request log1p",
        "--log1p requests it; --n-top-genes 0 keeps every gene",
    ),
    ("flavor seurat", "--flavor sets the HVG flavor"),
    ("not streamed", "leave out --stream"),
    ("request post-guidance", "--post-guidance on requests it"),
];

/// The hints of [`FLAG_HINTS`] whose text occurs in the error message `msg` (the whole
/// chain), printed after it.
pub fn hints(msg: &str) -> Vec<&'static str> {
    FLAG_HINTS
        .iter()
        .filter(|(needle, _)| msg.contains(needle))
        .map(|(_, hint)| *hint)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library's parameter names come back as this command line's flags, and a message
    /// without one gets no hint.
    #[test]
    fn hints_name_the_flags_of_library_parameters() {
        let msg = "VAE loss became non-finite at epoch 3 with learning rate 1e30: lower the \
                   learning rate (vae_train.learning_rate)";
        assert_eq!(hints(msg), ["--lr-vae sets vae_train.learning_rate"]);
        assert_eq!(
            hints("t_start must be in 1..=1000"),
            ["--t-start sets t_start"]
        );
        assert!(hints("cannot read X").is_empty());
        assert_eq!(name(&celldiff::pipeline::SamplerKind::Ddim), "ddim");
        assert_eq!(name(&celldiff::pp::HvgFlavor::SeuratV3), "seurat_v3");
    }

    /// The analyses' `--sampler` takes the diffusion samplers only.
    #[test]
    fn analysis_sampler_refuses_the_two_stage_solvers() {
        use celldiff::pipeline::SamplerKind;
        let cmd = Command::new("t").arg(Arg::new("s").long("sampler"));
        let arg = Arg::new("s");
        let p = analysis_sampler();
        let parse = |v: &str| p.parse_ref(&cmd, Some(&arg), OsStr::new(v));
        assert_eq!(parse("ddpm").unwrap(), SamplerKind::Ddpm);
        assert_eq!(parse("ddim").unwrap(), SamplerKind::Ddim);
        for bad in ["heun", "midpoint", "euler"] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn counts_are_range_checked() {
        let p = count(1, 10);
        assert_eq!(p.check("3"), Ok(3));
        assert!(p.check("0").unwrap_err().contains("at least 1"));
        assert!(p.check("11").unwrap_err().contains("at most 10"));
        assert!(p.check("-1").is_err());
        assert!(p.check("18446744073709551616").is_err());
        assert!(p.check("x").is_err());
    }

    #[test]
    fn reals_reject_nan_infinity_and_out_of_range() {
        assert_eq!(rate().check("0"), Ok(0.0));
        assert!(rate().check("1").is_err());
        assert!(rate().check("nan").is_err());
        assert!(positive().check("inf").is_err());
        assert!(positive().check("0").unwrap_err().contains("positive"));
        assert!(finite().check("-inf").is_err());
        assert_eq!(finite().check("-1"), Ok(-1.0));
        assert_eq!(share().check("1"), Ok(1.0));
        assert!(share().check("0").is_err());
        assert_eq!(target_sum().check("median"), Ok(0.0));
        assert_eq!(target_sum().check("0"), Ok(0.0));
        assert!(target_sum().check("-5").is_err());
        assert!(target_sum().check("nan").is_err());
        assert!(positive_f32().check("1e39").is_err());
    }
}
