//! Parse-time checks of numeric flags: every number a user types is validated by clap before a
//! command starts (exit code 2, with the flag and the accepted range in the message), so no
//! NaN, infinity, zero batch size or absurd allocation reaches the library.
//!
//! Each function returns a clap value parser (`#[arg(value_parser = flags::count(1, MAX))]`; numeric flags also set
//! `allow_negative_numbers` so that `-5` reaches the parser instead of reading as a flag);
//! with `value_delimiter = ','` clap applies it to every element of a list.

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

/// A value parser for a whole number in `lo..=hi`.
pub fn count(
    lo: usize,
    hi: usize,
) -> impl Fn(&str) -> Result<usize, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let range = if hi == usize::MAX {
            format!("a whole number ≥ {lo}")
        } else {
            format!("a whole number from {lo} to {hi}")
        };
        let v: u128 = s
            .trim()
            .parse()
            .map_err(|_| format!("expected {range}, got `{s}`"))?;
        if v < lo as u128 || v > hi as u128 {
            return Err(format!("expected {range}, got {v}"));
        }
        Ok(v as usize)
    }
}

/// A value parser for a finite real number in the interval described by the bounds: `lo`
/// (inclusive when `lo_closed`) to `hi` (inclusive when `hi_closed`); infinite bounds are open.
pub fn real(
    lo: f64,
    lo_closed: bool,
    hi: f64,
    hi_closed: bool,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let range = match (lo.is_finite(), hi.is_finite()) {
            (false, false) => "a finite number".to_string(),
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
            .map_err(|_| format!("expected {range}, got `{s}`"))?;
        let above = if lo_closed { v >= lo } else { v > lo };
        let below = if hi_closed { v <= hi } else { v < hi };
        if !v.is_finite() || !above || !below {
            return Err(format!("expected {range}, got {s}"));
        }
        Ok(v)
    }
}

/// Any finite number (guidance weights, thresholds).
pub fn finite(s: &str) -> Result<f64, String> {
    real(f64::NEG_INFINITY, false, f64::INFINITY, false)(s)
}

/// A finite number > 0 (learning rates, perplexity, resolutions).
pub fn positive(s: &str) -> Result<f64, String> {
    real(0.0, false, f64::INFINITY, false)(s)
}

/// A finite number > 0 that fits an `f32` (`--max-value`).
pub fn positive_f32(s: &str) -> Result<f32, String> {
    let v = positive(s)?;
    if v > f32::MAX as f64 {
        return Err(format!("expected a number ≤ {:e}, got {s}", f32::MAX));
    }
    Ok(v as f32)
}

/// A finite number ≥ 0 (loss weights).
pub fn non_negative(s: &str) -> Result<f64, String> {
    real(0.0, true, f64::INFINITY, false)(s)
}

/// A rate in [0, 1): dropout, EMA decay, validation fractions.
pub fn rate(s: &str) -> Result<f64, String> {
    real(0.0, true, 1.0, false)(s)
}

/// A probability in [0, 1].
pub fn probability(s: &str) -> Result<f64, String> {
    real(0.0, true, 1.0, true)(s)
}

/// A fraction in (0, 1]: the share of cells kept.
pub fn share(s: &str) -> Result<f64, String> {
    real(0.0, false, 1.0, true)(s)
}

/// A fraction in (0, 1): held-out shares, quantiles.
pub fn open_fraction(s: &str) -> Result<f64, String> {
    real(0.0, false, 1.0, false)(s)
}

/// `--target-sum`: a finite number > 0, or `0` / `median` for the median library size.
pub fn target_sum(s: &str) -> Result<f64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("median") || t.parse::<f64>().is_ok_and(|v| v == 0.0) {
        return Ok(0.0);
    }
    positive(t).map_err(|_| {
        format!("expected a finite number > 0, or `median` (or 0) for the median library size, got `{s}`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_range_checked() {
        let p = count(1, 10);
        assert_eq!(p("3"), Ok(3));
        assert!(p("0").is_err());
        assert!(p("11").is_err());
        assert!(p("-1").is_err());
        assert!(p("18446744073709551616").is_err());
        assert!(p("x").is_err());
    }

    #[test]
    fn reals_reject_nan_infinity_and_out_of_range() {
        assert_eq!(rate("0"), Ok(0.0));
        assert!(rate("1").is_err());
        assert!(rate("nan").is_err());
        assert!(positive("inf").is_err());
        assert!(positive("0").is_err());
        assert!(finite("-inf").is_err());
        assert_eq!(finite("-1"), Ok(-1.0));
        assert_eq!(share("1"), Ok(1.0));
        assert!(share("0").is_err());
        assert_eq!(target_sum("median"), Ok(0.0));
        assert_eq!(target_sum("0"), Ok(0.0));
        assert!(target_sum("-5").is_err());
        assert!(target_sum("nan").is_err());
    }
}
