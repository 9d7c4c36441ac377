//! One grid point's run, the same under every executor: [`run_one`] trains it, sending its
//! progress, losses, samples, checkpoints, evaluations and detector findings to a
//! [`Recorder`], deciding `[search.prune]` rungs as evaluations come, and records how it ended.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use indicatif::ProgressBar;

use super::prune::Pruning;
use super::{Pending, Recorder, record_of};
use crate::detect::Detectors;
use crate::fsutil::DirLock;
use crate::progress::ProgressObserver;
use crate::spec::RunConfig;
use crate::track::records;
use crate::track::{self, Event};
use crate::train::{self, Losses, Observer, Status};

/// Reports a run's progress to the database and to its progress bar.
struct RunObserver<'a> {
    run_id: String,
    recorder: &'a dyn Recorder,
    progress: ProgressObserver,
    metrics_every: u64,
    total: u64,
    /// The first record that could not be written; it stops the run.
    failure: Option<String>,
    pruning: Option<&'a Pruning>,
    /// The run's directory, whose records `patience` reads back.
    run_dir: &'a Path,
    detectors: Detectors,
    /// Why the run is to stop as pruned, once decided.
    pruned: Option<String>,
    /// The run's training time at its latest step.
    seconds: f64,
}

impl RunObserver<'_> {
    fn send(&mut self, event: Event) {
        if let Err(err) = self.recorder.record(event)
            && self.failure.is_none()
        {
            self.failure = Some(err);
        }
    }

    fn flag(&mut self, step: u64, kind: &str, detail: String) {
        self.send(Event::Flagged {
            run_id: self.run_id.clone(),
            step,
            kind: kind.into(),
            detail,
            at: track::now(),
        });
    }

    /// When the checkpoint the run resumes from at `step` was written by another runner than
    /// this one, or with other arithmetic (another backend, CPU kernels of another width: a
    /// cluster's nodes differ), says so in events: `runs.version`, `backend` and `kernels` hold
    /// only the latest session's.
    fn note_session_change(&mut self, step: u64) {
        let mut session = None;
        let mut writer = None;
        for line in records::read_without_losses(self.run_dir) {
            match line.event {
                Event::RunStarted { record, .. } => session = Some(record),
                Event::Checkpoint { step: at, .. } if at == step => writer = session.clone(),
                _ => {}
            }
        }
        let Some(writer) = writer else {
            return;
        };
        if writer.version.as_deref() != Some(crate::VERSION) {
            let detail = format!(
                "its steps to {step} were trained by {}, the rest by {}",
                track::runner_name(writer.version.as_deref()),
                crate::VERSION
            );
            self.note(step, "runner_changed", detail);
        }
        let (backend, kernels) = (crate::backend::name(), crate::backend::kernels());
        // (Records of releases before `kernels` name none: nothing to compare on one backend.)
        if writer.backend != backend
            || writer.kernels.is_some() && writer.kernels.as_deref() != kernels
        {
            let detail = format!(
                "its steps to {step} were trained on {}, the rest on {}, which round \
                 differently: its losses from here are not those of an uninterrupted run",
                track::arithmetic(&writer.backend, writer.kernels.as_deref()),
                track::arithmetic(backend, kernels),
            );
            self.note(step, "backend_changed", detail);
        }
    }

    /// An event the user is also told of as it happens.
    fn note(&mut self, step: u64, kind: &str, detail: String) {
        self.progress
            .message(&format!("run {}: {detail}", self.run_id));
        self.flag(step, kind, detail);
    }

    /// Records a detector's finding; a `stop_on` detector prunes the run.
    fn found(&mut self, step: u64, finding: crate::detect::Finding) {
        let stops = self
            .pruning
            .is_some_and(|p| p.rule.stop_on.contains(&finding.kind));
        if stops && self.pruned.is_none() {
            self.pruned = Some(format!(
                "stopped on {}: {}",
                finding.kind.name(),
                finding.detail
            ));
        }
        self.flag(step, finding.kind.name(), finding.detail);
    }
}

impl Observer for RunObserver<'_> {
    fn started(&mut self, first_step: u64, total_steps: u64) {
        self.total = total_steps;
        self.progress.started(first_step, total_steps);
        if first_step > 0 {
            self.note_session_change(first_step);
        }
    }

    fn step(&mut self, step: u64, losses: Losses, seconds: f64) {
        self.seconds = seconds;
        self.progress.step(step, losses, seconds);
        if let Some(finding) = self.detectors.step(losses) {
            self.found(step, finding);
        }
        if step.is_multiple_of(self.metrics_every) || step == 1 || step == self.total {
            for (name, value) in [("d_loss", losses.d), ("g_loss", losses.g)] {
                self.send(Event::Metric {
                    run_id: self.run_id.clone(),
                    step,
                    name: name.into(),
                    value: value as f64,
                    at: track::now(),
                    seconds: Some(seconds),
                });
            }
        }
    }

    fn sample(&mut self, step: u64, path: &Path) {
        self.send(Event::Sample {
            run_id: self.run_id.clone(),
            step,
            path: path.display().to_string(),
        });
    }

    fn checkpoint(&mut self, step: u64, path: &Path) {
        self.send(Event::Checkpoint {
            run_id: self.run_id.clone(),
            step,
            path: path.display().to_string(),
        });
    }

    fn eval(&mut self, step: u64, metrics: &crate::eval::Metrics) {
        self.progress.eval(step, metrics);
        let named = metrics.named();
        self.send(Event::Eval {
            run_id: self.run_id.clone(),
            step,
            metrics: named.clone(),
            seconds: Some(self.seconds),
        });
        for finding in self.detectors.eval(metrics) {
            self.found(step, finding);
        }
        // A run at its last step has nothing left to prune.
        let Some(pruning) = self.pruning.filter(|_| step < self.total) else {
            return;
        };
        let metric = &pruning.rule.metric;
        let value = named
            .iter()
            .find(|(m, _)| m == metric)
            .map_or(f64::NAN, |m| m.1);
        if let Some(decision) = pruning.decide(step, value) {
            let detail = decision.describe(metric, value, step);
            if decision.keep {
                self.flag(step, "kept", detail);
            } else {
                self.flag(step, "pruned", detail.clone());
                self.pruned.get_or_insert(detail);
            }
        }
        let rule = &pruning.rule;
        let lines = (rule.patience.is_some() || rule.median)
            .then(|| records::read_without_losses(self.run_dir));
        let lines = lines.as_deref().unwrap_or_default();
        if let Some(patience) = rule.patience
            && let Some(why) = super::prune::plateau(lines, metric, patience, step, value)
        {
            self.flag(step, "plateau", why.clone());
            self.pruned
                .get_or_insert(format!("stopped on plateau: {why}"));
        }
        if let Some(why) = pruning.below_median(lines, step, value) {
            self.flag(step, "median", why.clone());
            self.pruned
                .get_or_insert(format!("stopped below the median: {why}"));
        }
    }

    fn pruned(&mut self) -> Option<String> {
        self.pruned.take()
    }

    fn message(&mut self, line: &str) {
        self.progress.message(line);
    }

    fn checkpoint_removed(&mut self, step: u64) {
        self.send(Event::CheckpointRemoved {
            run_id: self.run_id.clone(),
            step,
        });
    }

    fn checkpoint_corrupt(&mut self, step: u64, aside: &Path, why: &str) {
        self.progress.checkpoint_corrupt(step, aside, why);
        self.checkpoint_removed(step);
        self.flag(
            step,
            "corrupt_checkpoint",
            format!("{why}; moved to {}", aside.display()),
        );
    }

    fn should_stop(&self) -> bool {
        self.failure.is_some() || self.progress.should_stop()
    }
}

/// Runs one grid point to its end, in its directory whose lock the caller holds (taken before
/// the recorder opened the run's records), and records how it ended; returns that status.
pub fn run_one(
    experiment: &str,
    pending: &Pending,
    recorder: &dyn Recorder,
    lock: &DirLock,
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
) -> String {
    let run = &pending.run;
    let config: &RunConfig = &run.point.config;
    let mut observer = RunObserver {
        run_id: run.id.clone(),
        recorder,
        progress: ProgressObserver::with_bar(bar, stop),
        metrics_every: config.log.metrics_every,
        total: 0,
        failure: None,
        pruning: run.pruning.as_deref(),
        run_dir: &run.run_dir,
        detectors: Detectors::default(),
        pruned: None,
        seconds: 0.0,
    };
    observer.send(Event::RunStarted {
        record: record_of(experiment, run),
        fresh: pending.fresh,
        at: track::now(),
    });
    if let Some((rung, why)) = &run.promoted {
        observer.flag(*rung, "promoted", why.clone());
    }
    // A panic inside training fails this run (`train::train` catches it), not the sweep.
    let trained = observer
        .failure
        .is_none()
        .then(|| train::train_locked(config, lock, &mut observer));
    // A record that could not be written stops the run, whatever training returned.
    let result = match (&observer.failure, trained) {
        (Some(failure), _) => Err(anyhow::anyhow!(
            "stopped because its records could not be written: {failure}. Its checkpoints and \
             {} are kept: run the sweep again to merge what the database missed and resume it",
            records::path(&run.run_dir).display()
        )),
        (None, trained) => trained.expect("trained when no record failed"),
    };
    let (status, steps, error) = match result {
        Ok(outcome) => match outcome.status {
            Status::Finished => ("finished", outcome.steps, None),
            Status::Interrupted { step } => ("interrupted", step, None),
            Status::Pruned { step, reason } => ("pruned", step, Some(reason)),
            Status::Diverged { step, losses } => (
                "diverged",
                step,
                Some(format!(
                    "a loss became NaN or infinite at step {step} (D {}, G {})",
                    losses.d, losses.g
                )),
            ),
        },
        Err(err) => ("failed", 0, Some(format!("{err:#}"))),
    };
    let steps = if status == "failed" {
        observer.progress.position()
    } else {
        steps
    };
    if let Some(error) = &error {
        observer
            .progress
            .message(&format!("run {}: {error}", run.id));
    }
    observer.send(Event::RunEnded {
        run_id: run.id.clone(),
        status: status.into(),
        steps_done: steps,
        error,
        at: track::now(),
    });
    observer.progress.finish();
    status.to_string()
}
