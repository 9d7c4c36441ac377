//! `runner sweep`: a spec's grid, run by an [`Executor`] and recorded in the tracking database.
//!
//! Each grid point is a run whose id is the hash of its resolved config; its files live in
//! `results/<experiment>/<run-id>/`. Finished runs are skipped, others resume from their last
//! checkpoint (`--force` starts them over). A failed or diverged run is recorded with its
//! error and does not stop the others; Ctrl-C makes active runs checkpoint and stop.
//!
//! Every grid point runs through [`run_one`], whichever executor: [`LocalExecutor`] on a pool
//! of worker threads here, recording through the tracker thread, or `crate::slurm` as Slurm
//! array tasks, each recording into a file in its run directory that is merged afterwards.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::progress::ProgressObserver;
use crate::spec::{GridPoint, RunConfig, Spec};
use crate::track::{self, Event, RunRecord, Tracker};
use crate::train::{self, Losses, Observer, Status};

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub force: bool,
    pub db: PathBuf,
}

/// One grid point, placed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedRun {
    pub id: String,
    pub point: GridPoint,
    pub run_dir: PathBuf,
}

/// The grid of a spec as runs (identical configs collapse into one run).
pub fn plan(spec: &Spec, results: &Path, data_dir: Option<&Path>) -> Result<Vec<PlannedRun>> {
    let grid = spec
        .grid()
        .map_err(|(key, msg)| anyhow::anyhow!("`{key}` {msg}"))?;
    let mut seen = std::collections::HashSet::new();
    let mut runs = Vec::new();
    for mut point in grid {
        if let Some(dir) = data_dir {
            point.config.data.dir = Some(dir.to_path_buf());
        }
        let id = point.run_id();
        if seen.insert(id.clone()) {
            let run_dir = results.join(&spec.name).join(&id);
            runs.push(PlannedRun { id, point, run_dir });
        }
    }
    Ok(runs)
}

/// The expanded grid as a table: run id and the swept values.
pub fn grid_table(spec: &Spec, runs: &[PlannedRun]) -> String {
    let keys = spec.swept_keys();
    let mut rows = vec![
        std::iter::once("run".to_string())
            .chain(keys.iter().cloned())
            .collect::<Vec<_>>(),
    ];
    for run in runs {
        let values = keys.iter().map(|k| {
            run.point
                .swept
                .iter()
                .find(|(p, _)| p == k)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        });
        rows.push(std::iter::once(run.id.clone()).chain(values).collect());
    }
    let mut out = crate::query::format_table(&rows);
    out.push_str(&format!("{} runs\n", runs.len()));
    out
}

/// What a sweep did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub finished: usize,
    pub skipped: usize,
    pub failed: usize,
    pub diverged: usize,
    pub interrupted: usize,
    /// Handed to a scheduler and not ended yet.
    pub queued: usize,
}

impl Summary {
    /// Counts one run that ended with `status`.
    pub fn count(&mut self, status: &str) {
        match status {
            "finished" => self.finished += 1,
            "diverged" => self.diverged += 1,
            "interrupted" => self.interrupted += 1,
            "pending" | "running" => self.queued += 1,
            _ => self.failed += 1,
        }
    }
}

/// Where a run's records go: the tracker thread, or a Slurm task's records file.
pub trait Recorder: Sync {
    fn record(&self, event: Event);
}

impl Recorder for Sender<Event> {
    fn record(&self, event: Event) {
        // The tracker only stops on a write error, which closing it reports.
        let _ = self.send(event);
    }
}

/// A pending grid point: `fresh` when it starts over (no checkpoint to resume from).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub run: PlannedRun,
    pub fresh: bool,
}

/// Runs a sweep's pending grid points somewhere, recording them in the tracker's database.
pub trait Executor {
    fn execute(
        &self,
        experiment: &str,
        pending: Vec<Pending>,
        tracker: &Tracker,
    ) -> Result<Summary>;
}

/// Reports a run's progress to the database and to its progress bar.
struct RunObserver<'a> {
    run_id: String,
    recorder: &'a dyn Recorder,
    progress: ProgressObserver,
    metrics_every: u64,
    total: u64,
}

impl RunObserver<'_> {
    fn send(&self, event: Event) {
        self.recorder.record(event);
    }
}

impl Observer for RunObserver<'_> {
    fn started(&mut self, first_step: u64, total_steps: u64) {
        self.total = total_steps;
        self.progress.started(first_step, total_steps);
    }

    fn step(&mut self, step: u64, losses: Losses) {
        self.progress.step(step, losses);
        if step.is_multiple_of(self.metrics_every) || step == 1 || step == self.total {
            for (name, value) in [("d_loss", losses.d), ("g_loss", losses.g)] {
                self.send(Event::Metric {
                    run_id: self.run_id.clone(),
                    step,
                    name: name.into(),
                    value: value as f64,
                    at: track::now(),
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
        self.send(Event::Eval {
            run_id: self.run_id.clone(),
            step,
            metrics: metrics.named(),
        });
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

    fn should_stop(&self) -> bool {
        self.progress.should_stop()
    }
}

/// The database record of a planned run.
pub fn record_of(experiment: &str, run: &PlannedRun) -> RunRecord {
    let config: &RunConfig = &run.point.config;
    let config_value = serde_json::to_value(config).expect("configs serialize");
    RunRecord {
        id: run.id.clone(),
        experiment: experiment.to_string(),
        config_json: config_value.to_string(),
        params: track::flatten_params(&config_value),
        run_dir: run.run_dir.clone(),
        total_steps: config.train.steps,
        host: track::hostname(),
        backend: crate::backend::name().to_string(),
    }
}

/// Runs one grid point to its end and records how it ended; returns that status.
pub fn run_one(
    experiment: &str,
    pending: &Pending,
    recorder: &dyn Recorder,
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
) -> String {
    let run = &pending.run;
    let config: &RunConfig = &run.point.config;
    recorder.record(Event::RunStarted {
        record: record_of(experiment, run),
        fresh: pending.fresh,
        at: track::now(),
    });
    let mut observer = RunObserver {
        run_id: run.id.clone(),
        recorder,
        progress: ProgressObserver::with_bar(bar, stop),
        metrics_every: config.log.metrics_every,
        total: 0,
    };
    let result = train::train(config, &run.run_dir, &mut observer);
    let (status, steps, error) = match result {
        Ok(outcome) => match outcome.status {
            Status::Finished => ("finished", outcome.steps, None),
            Status::Interrupted { step } => ("interrupted", step, None),
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
    recorder.record(Event::RunEnded {
        run_id: run.id.clone(),
        status: status.into(),
        steps_done: steps,
        error,
        at: track::now(),
    });
    observer.progress.finish();
    status.to_string()
}

/// Records the experiment, skips finished runs, and hands the rest to `executor`.
pub fn run(
    spec: &Spec,
    spec_path: &Path,
    runs: Vec<PlannedRun>,
    options: &SweepOptions,
    executor: &dyn Executor,
) -> Result<Summary> {
    let tracker = Tracker::start(&options.db)?;
    tracker.send(Event::Experiment {
        name: spec.name.clone(),
        description: spec.description.clone(),
        spec_path: spec_path.display().to_string(),
    });
    tracker.flush();
    let reader = track::open(&options.db)?;
    let mut skipped = 0;
    let mut pending = Vec::new();
    for run in runs {
        let has_checkpoint = !train::checkpoint::list(&run.run_dir).is_empty();
        let finished = track::run_status(&reader, &run.id)?.as_deref() == Some("finished");
        if finished && has_checkpoint && !options.force {
            skipped += 1;
            continue;
        }
        if options.force && run.run_dir.exists() {
            std::fs::remove_dir_all(&run.run_dir)
                .with_context(|| format!("removing {}", run.run_dir.display()))?;
        }
        // Without a checkpoint to resume from, the run starts over: its old rows go.
        let fresh = options.force || !has_checkpoint;
        pending.push(Pending { run, fresh });
    }
    drop(reader);
    let summary = executor.execute(&spec.name, pending, &tracker);
    tracker.close()?;
    Ok(Summary {
        skipped,
        ..summary?
    })
}

/// Runs grid points here, `jobs` at a time, with a progress bar each.
pub struct LocalExecutor {
    pub jobs: usize,
    pub stop: Arc<AtomicBool>,
}

impl Executor for LocalExecutor {
    fn execute(
        &self,
        experiment: &str,
        pending: Vec<Pending>,
        tracker: &Tracker,
    ) -> Result<Summary> {
        let multi = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let overall = multi.add(ProgressBar::new(pending.len() as u64));
        overall.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs, {elapsed}")
                .expect("template")
                .progress_chars("=> "),
        );
        overall.set_prefix(experiment.to_string());
        let queue = Mutex::new(VecDeque::from(pending));
        let summary = Mutex::new(Summary::default());
        let quiet_log = !std::io::stderr().is_terminal();
        std::thread::scope(|scope| {
            for _ in 0..self.jobs.max(1) {
                scope.spawn(|| {
                    let recorder = tracker.sender();
                    loop {
                        if self.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Some(next) = queue.lock().expect("queue lock").pop_front() else {
                            break;
                        };
                        let bar = multi.add(ProgressBar::new(0));
                        bar.set_prefix(format!("  {}", next.run.id));
                        if quiet_log {
                            eprintln!("{experiment}: run {} started", next.run.id);
                        }
                        let status = run_one(experiment, &next, &recorder, bar, self.stop.clone());
                        if quiet_log {
                            eprintln!("{experiment}: run {} {status}", next.run.id);
                        }
                        overall.inc(1);
                        summary.lock().expect("summary lock").count(&status);
                    }
                });
            }
        });
        overall.finish_and_clear();
        Ok(summary.into_inner().expect("summary lock"))
    }
}
