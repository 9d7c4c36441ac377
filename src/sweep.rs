//! `runner sweep`: a spec's grid, run by an [`Executor`] and recorded in the tracking database.
//!
//! Each grid point is a run whose id is the hash of its experiment, resolved config and data
//! (`spec::run_id`); its files live in `results/<experiment>/<run-id>/`. Finished runs are
//! skipped, others resume from their last checkpoint (`--force` starts them over). A failed or
//! diverged run is recorded with its error and does not stop the others; Ctrl-C or SIGTERM
//! makes active runs checkpoint and stop.
//!
//! Every grid point runs through [`run_one`], whichever executor: [`LocalExecutor`] on a pool
//! of worker threads here, which claims each run in the database first (so sweeps started at
//! once on one database share the work) and records into the run's `records.jsonl` and the
//! database, or `crate::slurm` as Slurm array tasks, recording only into `records.jsonl`,
//! merged afterwards.

use crate::errln;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::detect::Detectors;
use crate::progress::ProgressObserver;
use crate::prune::Pruning;
use crate::spec::{GridPoint, RunConfig, Spec};
use crate::track::claims::{Claim, Owner};
use crate::track::records::{self, RecordsFile};
use crate::track::writer::TrackerHandle;
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
    /// The content hash of its training split (`data::fingerprint`).
    #[serde(default)]
    pub data_id: String,
    /// The sweep's pruning, shared by its runs (a Slurm plan carries it once).
    #[serde(skip)]
    pub pruning: Option<Arc<Pruning>>,
    /// Set when a rerun promotes this run, pruned at a rung: (rung, why).
    #[serde(default)]
    pub promoted: Option<(u64, String)>,
}

/// The grid of a spec as runs, each identified by its experiment, config and the content of
/// its data (read here, once per data directory). Points with identical configs (search trials
/// that drew the same values) collapse into one run.
pub fn plan(spec: &Spec, results: &Path, data_dir: Option<&Path>) -> Result<Vec<PlannedRun>> {
    let grid = spec
        .grid()
        .map_err(|(key, msg)| anyhow::anyhow!("`{key}` {msg}"))?;
    let mut fingerprints = std::collections::HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut runs = Vec::new();
    for mut point in grid {
        if let Some(dir) = data_dir {
            point.config.data.dir = Some(dir.to_path_buf());
        }
        let dir = point.config.data.resolved_dir();
        let data_id = match fingerprints.get(&dir) {
            Some(id) => String::clone(id),
            None => {
                let id = crate::data::fingerprint(&dir)?;
                fingerprints.insert(dir, id.clone());
                id
            }
        };
        let id = crate::spec::run_id(&spec.name, &point.config, &data_id);
        if !seen.insert(id.clone()) {
            continue;
        }
        crate::budget::check_run(&point.config)?;
        let run_dir = results.join(&spec.name).join(&id);
        runs.push(PlannedRun {
            id,
            point,
            run_dir,
            data_id,
            pruning: None,
            promoted: None,
        });
    }
    if let Some(rule) = &spec.search.prune {
        let pruning = Arc::new(Pruning {
            rule: rule.clone(),
            cohort: runs.iter().map(|r| r.run_dir.clone()).collect(),
        });
        for run in &mut runs {
            run.pruning = Some(pruning.clone());
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
    /// Stopped early by `[search.prune]` (and not promoted).
    pub pruned: usize,
    /// Handed to a scheduler and not ended yet.
    pub queued: usize,
    /// Being trained by another process (left to it).
    pub held: usize,
}

impl Summary {
    /// Counts one run that ended with `status`.
    pub fn count(&mut self, status: &str) {
        match status {
            "finished" => self.finished += 1,
            "diverged" => self.diverged += 1,
            "interrupted" => self.interrupted += 1,
            "pruned" => self.pruned += 1,
            "pending" | "running" => self.queued += 1,
            "skipped" => self.skipped += 1,
            "held" => self.held += 1,
            _ => self.failed += 1,
        }
    }
}

/// Where a run's records go. An error stops the run (checkpointed, resumable).
pub trait Recorder: Sync {
    fn record(&self, event: Event) -> Result<(), String>;
}

/// A local run's recorder: its records file first (the durable copy), then the database.
struct LocalRecorder {
    records: RecordsFile,
    tracker: TrackerHandle,
}

impl Recorder for LocalRecorder {
    fn record(&self, event: Event) -> Result<(), String> {
        self.records.write(event.clone())?;
        self.tracker.record(event)
    }
}

/// A pending grid point: `fresh` when it starts over (no checkpoint to resume from).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub run: PlannedRun,
    pub fresh: bool,
}

/// Runs a sweep's grid points that are not known to be finished somewhere, recording them in
/// the tracker's database; `force` starts them over.
pub trait Executor {
    fn execute(
        &self,
        experiment: &str,
        runs: Vec<PlannedRun>,
        force: bool,
        tracker: &Tracker,
    ) -> Result<Summary>;
}

/// A run about to start: with `force` its directory goes; it is `fresh` when there is no
/// checkpoint left to resume from.
pub fn prepare(run: PlannedRun, force: bool) -> Result<Pending> {
    if force && run.run_dir.exists() {
        std::fs::remove_dir_all(&run.run_dir)
            .with_context(|| format!("removing {}", run.run_dir.display()))?;
    }
    let fresh = train::checkpoint::list(&run.run_dir).is_empty();
    Ok(Pending { run, fresh })
}

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
    detectors: Detectors,
    /// Why the run is to stop as pruned, once decided.
    pruned: Option<String>,
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
    }

    fn step(&mut self, step: u64, losses: Losses) {
        self.progress.step(step, losses);
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

/// The database record of a planned run.
pub fn record_of(experiment: &str, run: &PlannedRun) -> RunRecord {
    let config: &RunConfig = &run.point.config;
    let config_value = serde_json::to_value(config).expect("configs serialize");
    RunRecord {
        id: run.id.clone(),
        experiment: experiment.to_string(),
        config_json: config_value.to_string(),
        params: crate::spec::flatten_params(&config_value),
        run_dir: run.run_dir.clone(),
        total_steps: config.train.steps,
        host: track::hostname(),
        backend: crate::backend::name().to_string(),
        data_id: run.data_id.clone(),
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
    let mut observer = RunObserver {
        run_id: run.id.clone(),
        recorder,
        progress: ProgressObserver::with_bar(bar, stop),
        metrics_every: config.log.metrics_every,
        total: 0,
        failure: None,
        pruning: run.pruning.as_deref(),
        detectors: Detectors::default(),
        pruned: None,
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
        .then(|| train::train(config, &run.run_dir, &mut observer));
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

/// Records the experiment, skips runs the database knows as finished, and hands the rest to
/// `executor`. A database that fails mid-sweep fails the sweep, after the runs have stopped.
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
    let mut pruned = 0;
    // Each rung's evaluations, read once for all the pruned runs reconsidered here.
    let mut rung_values = std::collections::BTreeMap::new();
    let mut todo = Vec::new();
    for mut run in runs {
        if !options.force && is_done(&reader, &run)? {
            skipped += 1;
            continue;
        }
        // A pruned run stays pruned unless its rung now keeps it (a sweep whose spec no longer
        // prunes resumes it like any unfinished run).
        if let Some(pruning) = run.pruning.as_ref().filter(|_| !options.force) {
            let lines = records::read(&run.run_dir);
            if records::last_status(&lines).as_deref() == Some("pruned") {
                match pruning.reconsider(&lines, &mut rung_values) {
                    Some((rung, value, decision)) if decision.keep => {
                        let why = decision.describe(&pruning.rule.metric, value, rung);
                        errln!("{}: run {} promoted ({why})", spec.name, run.id);
                        run.promoted = Some((rung, why));
                    }
                    // Outside its rung's best still, or stopped by a failure detector.
                    _ => {
                        pruned += 1;
                        continue;
                    }
                }
            }
        }
        todo.push(run);
    }
    drop(reader);
    let summary = executor.execute(&spec.name, todo, options.force, &tracker);
    tracker.close().with_context(|| {
        "the sweep stopped: its runs keep their checkpoints and records (records.jsonl in each \
         run directory); once the database can be written, run the same command again to merge \
         the records and resume"
    })?;
    let summary = summary?;
    Ok(Summary {
        skipped: skipped + summary.skipped,
        pruned: pruned + summary.pruned,
        ..summary
    })
}

/// Whether the database knows `run` as finished and its final checkpoint is on disk, whole.
fn is_done(conn: &rusqlite::Connection, run: &PlannedRun) -> Result<bool> {
    Ok(
        track::run_status(conn, &run.id)?.as_deref() == Some("finished")
            && train::checkpoint::newest_is_intact(&run.run_dir),
    )
}

/// Claims `run` for this process and trains it; returns how it ended (`held` when another
/// process has it, `skipped` when it turned out finished). The error is the database's, which
/// ends the sweep.
fn claim_and_run(
    experiment: &str,
    run: &PlannedRun,
    force: bool,
    tracker: &TrackerHandle,
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
) -> Result<String, String> {
    let status = match tracker.claim(record_of(experiment, run))? {
        Claim::Held { by } => {
            bar.finish_and_clear();
            errln!(
                "{experiment}: run {} is being trained by {by}; left to it",
                run.id
            );
            return Ok("held".into());
        }
        Claim::Acquired { status } => status,
    };
    let records = records::read_checked(&run.run_dir);
    let lines = &records.lines;
    let mut status = status;
    if !force && status.as_deref() != Some("finished") && !lines.is_empty() {
        // The database missed some of this run's history (a failed write, a new database):
        // rebuild it from the run's own records before deciding anything.
        if let Some(damage) = records.damage(&run.run_dir) {
            errln!("{experiment}: run {}: {damage}", run.id);
        }
        status = records::last_status(lines);
        for line in lines.iter() {
            tracker.record(line.event.clone())?;
        }
        tracker.flush()?;
    }
    let has_checkpoint = !train::checkpoint::list(&run.run_dir).is_empty();
    if !force
        && status.as_deref() == Some("finished")
        && train::checkpoint::newest_is_intact(&run.run_dir)
    {
        bar.finish_and_clear();
        return Ok("skipped".into());
    }
    if !force
        && status.as_deref() == Some("pruned")
        && run.pruning.is_some()
        && run.promoted.is_none()
    {
        // Pruned by another process since this sweep planned it.
        bar.finish_and_clear();
        return Ok("pruned".into());
    }
    let started = (|| -> Result<(LocalRecorder, Pending)> {
        if !force && has_checkpoint && status.is_none() && lines.is_empty() {
            // Checkpoints without any history to go with them: keep them aside and start over,
            // rather than record a run whose metrics are missing.
            let aside = run
                .run_dir
                .with_extension(format!("unrecorded-{}", track::now() as u64));
            std::fs::rename(&run.run_dir, &aside)
                .with_context(|| format!("moving {} aside", run.run_dir.display()))?;
            errln!(
                "{experiment}: {} had checkpoints but no records; moved to {} and started over",
                run.run_dir.display(),
                aside.display()
            );
        }
        let pending = prepare(run.clone(), force)?;
        let task = format!("local:{}", Owner::this_process().tag());
        let recorder = LocalRecorder {
            records: RecordsFile::open(&run.run_dir, task, pending.fresh)?,
            tracker: tracker.clone(),
        };
        Ok((recorder, pending))
    })();
    let (recorder, pending) = match started {
        Ok(started) => started,
        Err(err) => {
            bar.finish_and_clear();
            tracker.record(Event::RunEnded {
                run_id: run.id.clone(),
                status: "failed".into(),
                steps_done: 0,
                error: Some(format!("{err:#}")),
                at: track::now(),
            })?;
            errln!("{experiment}: run {} failed: {err:#}", run.id);
            return Ok("failed".into());
        }
    };
    Ok(run_one(experiment, &pending, &recorder, bar, stop))
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
        runs: Vec<PlannedRun>,
        force: bool,
        tracker: &Tracker,
    ) -> Result<Summary> {
        let multi = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let overall = multi.add(ProgressBar::new(runs.len() as u64));
        overall.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs, {elapsed}")
                .expect("template")
                .progress_chars("=> "),
        );
        overall.set_prefix(experiment.to_string());
        // No more workers than runs (a hostile `--jobs 1000000` must not spawn a million threads).
        let workers = self.jobs.clamp(1, runs.len().max(1));
        let queue = Mutex::new(VecDeque::from(runs));
        let summary = Mutex::new(Summary::default());
        let db_error = Mutex::new(None::<String>);
        let quiet_log = !std::io::stderr().is_terminal();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    let handle = tracker.handle();
                    loop {
                        if self.stop.load(Ordering::Relaxed)
                            || db_error.lock().expect("error lock").is_some()
                        {
                            break;
                        }
                        let Some(next) = queue.lock().expect("queue lock").pop_front() else {
                            break;
                        };
                        let bar = multi.add(ProgressBar::new(0));
                        bar.set_prefix(format!("  {}", next.id));
                        let outcome = claim_and_run(
                            experiment,
                            &next,
                            force,
                            &handle,
                            bar,
                            self.stop.clone(),
                        );
                        let status = match outcome {
                            Ok(status) => status,
                            Err(err) => {
                                db_error.lock().expect("error lock").get_or_insert(err);
                                break;
                            }
                        };
                        // (A held run has said so already.)
                        if quiet_log && status != "held" {
                            errln!("{experiment}: run {} {status}", next.id);
                        }
                        overall.inc(1);
                        summary.lock().expect("summary lock").count(&status);
                    }
                });
            }
        });
        overall.finish_and_clear();
        if let Some(err) = db_error.into_inner().expect("error lock") {
            anyhow::bail!("{err}");
        }
        Ok(summary.into_inner().expect("summary lock"))
    }
}
