//! indicatif progress bars for the library's training and sampling loops.

use std::time::Duration;

use celldiff::train::{EpochRecord, Observer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws one bar per training stage, with the running losses as its message.
pub struct Bars {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl Bars {
    /// Bars on stderr unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self { quiet, bar: None }
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
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }
}

impl Observer for Bars {
    fn stage_start(&mut self, stage: &str, epochs: usize) {
        self.bar = Some(self.bar(epochs as u64, stage));
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
            b.set_message(msg);
            b.inc(1);
        }
    }

    fn stage_end(&mut self, stage: &str, reason: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            let pos = b.position();
            self.println(format!(
                "{stage}: {pos} epochs in {:.1}s ({reason})",
                b.elapsed().as_secs_f64()
            ));
        }
    }
}
