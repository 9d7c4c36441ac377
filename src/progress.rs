//! A terminal progress bar for one training run.

use crate::errln;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use crate::train::{Losses, Observer};

/// Shows step, D/G loss, steps/s and ETA; stops the run when `stop` becomes true.
pub struct ProgressObserver {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
}

impl ProgressObserver {
    /// A bar labelled `label` (drawn only on a terminal).
    pub fn new(label: &str, stop: Arc<AtomicBool>) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_prefix(label.to_string());
        Self::with_bar(bar, stop)
    }

    /// Drives an existing bar, e.g. one of a `MultiProgress`.
    pub fn with_bar(bar: ProgressBar, stop: Arc<AtomicBool>) -> Self {
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} {rate} ETA {eta}")
                .expect("valid template")
                // indicatif's `{per_sec}` prints four decimals ("51.4043/s").
                .with_key(
                    "rate",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.1} steps/s", state.per_sec());
                    },
                )
                .progress_chars("=> "),
        );
        ProgressObserver { bar, stop }
    }

    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for ProgressObserver {
    fn started(&mut self, first_step: u64, total_steps: u64) {
        self.bar.set_length(total_steps);
        self.bar.set_position(first_step);
        self.bar.reset_eta();
    }

    fn step(&mut self, step: u64, losses: Losses, _seconds: f64) {
        self.bar.set_position(step);
        self.bar
            .set_message(format!("D {:.4} G {:.4}", losses.d, losses.g));
    }

    fn checkpoint(&mut self, step: u64, path: &Path) {
        self.bar
            .println(format!("step {step}: checkpoint {}", path.display()));
    }

    fn eval(&mut self, step: u64, metrics: &crate::eval::Metrics) {
        self.message(&format!("step {step}: {}", metrics.summary()));
    }

    fn message(&mut self, line: &str) {
        let line = format!("{} {line}", self.bar.prefix().trim());
        if self.bar.is_hidden() {
            errln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}
