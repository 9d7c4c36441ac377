//! The local executor: a sweep's runs on a pool of worker threads here, each claimed in the
//! database first (so sweeps started at once on one database share the work) and recorded
//! into its `records.jsonl` and the database.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{
    Executor, Pending, PlannedRun, Recorder, Summary, lock_or_leave, prepare, record_of, run_one,
};
use crate::errln;
use crate::track::claims::{Claim, Owner};
use crate::track::records::{self, RecordsFile};
use crate::track::writer::TrackerHandle;
use crate::track::{self, Event, Tracker};
use crate::train;

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
    // The database's claim keeps other sweeps away; the directory's lock, anything else that
    // trains there (a Slurm task, `runner train --out`).
    let lock = match lock_or_leave(experiment, run) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            bar.finish_and_clear();
            return Ok("held".into());
        }
        Err(err) => return record_failure(experiment, run, tracker, bar, err),
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
    // The run's own file is the durable copy of its tags and note: a database restored from
    // a backup gets back the ones given since.
    if let Some(event) = super::replay_annotations(experiment, &run.id, &run.run_dir) {
        tracker.record(event)?;
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
            lock.move_contents(&aside, &[track::annotations::FILE])
                .with_context(|| format!("moving {} aside", run.run_dir.display()))?;
            errln!(
                "{experiment}: {} had checkpoints but no records; moved to {} and started over",
                run.run_dir.display(),
                aside.display()
            );
        }
        let pending = prepare(run.clone(), force, &lock)?;
        let task = format!("local:{}", Owner::this_process().tag());
        let recorder = LocalRecorder {
            records: RecordsFile::open(&run.run_dir, task, pending.fresh)?,
            tracker: tracker.clone(),
        };
        Ok((recorder, pending))
    })();
    match started {
        Ok((recorder, pending)) => Ok(run_one(experiment, &pending, &recorder, &lock, bar, stop)),
        Err(err) => record_failure(experiment, run, tracker, bar, err),
    }
}

/// Records `run` as failed with `err` before it started (its directory could not be made
/// ready); the error is the database's.
fn record_failure(
    experiment: &str,
    run: &PlannedRun,
    tracker: &TrackerHandle,
    bar: ProgressBar,
    err: anyhow::Error,
) -> Result<String, String> {
    bar.finish_and_clear();
    tracker.record(Event::RunEnded {
        run_id: run.id.clone(),
        status: "failed".into(),
        steps_done: 0,
        error: Some(format!("{err:#}")),
        at: track::now(),
    })?;
    errln!("{experiment}: run {} failed: {err:#}", run.id);
    Ok("failed".into())
}

/// How many of `runs` train at a time given `--jobs`: no more than there are runs (a hostile
/// `--jobs 1000000` must not spawn a million threads), nor than fit in memory together (an
/// out-of-memory kill stops every run at once), which it says.
pub fn workers<'a>(
    experiment: &str,
    jobs: usize,
    runs: impl ExactSizeIterator<Item = &'a PlannedRun>,
) -> usize {
    let jobs = jobs.clamp(1, runs.len().max(1));
    let (fit, each) = crate::budget::runs_at_once(jobs, runs.map(|run| &run.point.config));
    if let Some(each) = each {
        errln!(
            "{experiment}: {jobs} runs at a time would need about {} of memory ({} each at \
             most); {fit} at a time fit in the {} available",
            crate::budget::human(each * jobs as f64),
            crate::budget::human(each),
            crate::budget::human(crate::budget::available_bytes().unwrap_or(0.0)),
        );
    }
    fit
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
        // One run (`runner train`, a sweep of one) has its own bar; a count of one says nothing.
        let overall = match runs.len() {
            1 => ProgressBar::hidden(),
            n => multi.add(ProgressBar::new(n as u64)),
        };
        overall.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} runs, {elapsed}")
                .expect("template")
                .progress_chars("=> "),
        );
        overall.set_prefix(experiment.to_string());
        let workers = workers(experiment, self.jobs, runs.iter());
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
