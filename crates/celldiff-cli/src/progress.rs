//! indicatif progress bars for the library's training and sampling loops.

use std::time::Duration;

use celldiff::train::{EpochRecord, Observer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws one bar per training stage, with the running losses as its message, and a spinner
/// for steps without epochs (encoding, the count observation model fit).
pub struct Bars {
    quiet: bool,
    bar: Option<ProgressBar>,
    /// The spinner of the current step without epochs, if any.
    spinner: Option<(ProgressBar, String)>,
}

impl Bars {
    /// Bars on stderr unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bar: None,
            spinner: None,
        }
    }

    /// A spinner with `msg` and the elapsed time, hidden when quiet.
    pub fn spinner(&self, msg: &str) -> ProgressBar {
        let pb = if self.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed_precise}")
                .expect("valid template"),
        );
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }

    /// Ends the current step's spinner (if any) and reports how long the step took when it
    /// lasted over a second.
    pub fn finish_step(&mut self) {
        if let Some((pb, what)) = self.spinner.take() {
            pb.finish_and_clear();
            let secs = pb.elapsed().as_secs_f64();
            if secs >= 1.0 {
                self.println(format!("{what}: {secs:.1}s"));
            }
        }
    }

    /// A bar of `len` steps with a prefix, hidden when quiet.
    pub fn bar(&self, len: u64, prefix: &str) -> ProgressBar {
        let pb = if self.quiet {
            ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(len)
        };
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:>10.bold} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_prefix(prefix.to_string());
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }

    /// Prints a line above the bars unless quiet.
    pub fn println(&self, msg: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        // `suspend` (not `ProgressBar::println`, which prints nothing when stderr is not a
        // terminal) clears the bar, prints, and redraws it.
        let print = || eprintln!("{}", msg.as_ref());
        match (&self.bar, &self.spinner) {
            (Some(b), _) => b.suspend(print),
            (None, Some((s, _))) => s.suspend(print),
            _ => print(),
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        if let Some((pb, _)) = self.spinner.take() {
            pb.finish_and_clear();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Observer for Bars {
    fn stage_start(&mut self, stage: &str, epochs: usize) {
        self.finish_step();
        self.bar = Some(self.bar(epochs as u64, stage));
    }

    fn message(&mut self, msg: &str) {
        self.println(msg);
    }

    fn step_start(&mut self, what: &str) {
        self.finish_step();
        self.spinner = Some((self.spinner(what), what.to_string()));
    }

    fn epoch_end(&mut self, r: &EpochRecord) {
        if let Some(b) = &self.bar {
            let mut msg = format!("loss {:.4}", r.train_loss);
            if let Some(v) = r.val_loss {
                msg.push_str(&format!(" val {v:.4}"));
            }
            if let (Some(rc), Some(kl)) = (r.recon, r.kl) {
                msg.push_str(&format!(" (recon {rc:.2}, kl {kl:.2})"));
            }
            if let (Some(rc), Some(mmd)) = (r.recon, r.mmd) {
                msg.push_str(&format!(" (recon {rc:.2}, mmd {mmd:.4})"));
            }
            b.set_message(msg);
            b.inc(1);
        }
    }

    fn stage_end(&mut self, stage: &str, reason: &str) {
        if let Some(b) = self.bar.take() {
            // The epochs actually run: `finish_and_clear` moves the position to the length.
            let pos = b.position();
            b.finish_and_clear();
            self.println(format!(
                "{stage}: {pos} epochs in {:.1}s ({reason})",
                b.elapsed().as_secs_f64()
            ));
        }
    }
}
