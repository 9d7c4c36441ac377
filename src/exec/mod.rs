//! Executing a sweep: `runner sweep` plans a spec's grid ([`Planner`]), skips what the
//! database knows as finished or pruned ([`run`], deciding by `verdict`, as `--dry-run` does)
//! and hands the rest to an [`Executor`]; a TPE
//! search proposes and runs more as its batches end ([`sweep`]).
//!
//! Each grid point is a run whose id is the hash of its experiment, resolved config and data
//! (`spec::run_id`); its files live in `results/<experiment>/<run-id>/`. Finished runs are
//! skipped, others resume from their last checkpoint (`--force` starts them over). A failed or
//! diverged run is recorded with its error and does not stop the others; Ctrl-C or SIGTERM
//! makes active runs checkpoint and stop.
//!
//! Every grid point runs through [`run_one`] (`point.rs`), whichever executor: [`local`] on a
//! pool of worker threads here, recording into each run's `records.jsonl` and the database, or
//! [`slurm`] as Slurm array tasks, recording only into `records.jsonl`, merged afterwards.
//! [`prune`] stops runs early (ASHA rungs and failure detectors) under both; `extend` starts
//! a new run from a finished shorter run of its config.

pub mod estimate;
mod extend;
pub mod local;
mod plan;
mod point;
pub mod prune;
pub mod slurm;
mod verdict;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::errln;
use crate::fsutil::DirLock;
use crate::spec::{GridPoint, RunConfig, Spec};
use crate::track::annotations;
use crate::track::claims::Holder;
use crate::track::{self, Event, RunRecord, Tracker};
use crate::train;
pub use estimate::{Estimate, estimate};
pub use extend::DECAY_RESTARTS;
pub use local::LocalExecutor;
pub use plan::{Planner, Recorded, grid_table, recorded_states};
pub use point::run_one;
use prune::Pruning;
pub use verdict::Verdict;

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub force: bool,
    pub db: PathBuf,
    /// Set by Ctrl-C, SIGTERM or `--timeout`: no further TPE batch starts, nor waits.
    pub stop: Arc<AtomicBool>,
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

/// Keeps each run in the directory the database records for it while that directory exists,
/// whatever `--results` says now: a run is one row and one directory, so a sweep pointed at
/// another results tree neither trains a finished run again nor records it elsewhere. Returns
/// the runs that stay elsewhere.
fn stay_where_recorded(
    db: &Path,
    conn: &rusqlite::Connection,
    runs: &mut [PlannedRun],
) -> Result<Vec<PathBuf>> {
    let mut elsewhere = Vec::new();
    for run in runs {
        if let Some(dir) = recorded_dir(db, conn, &run.id)?
            && !crate::fsutil::same_file(&dir, &run.run_dir)
        {
            run.run_dir = dir.clone();
            elsewhere.push(dir);
        }
    }
    Ok(elsewhere)
}

/// The directory the database records for run `id`, when it exists.
fn recorded_dir(db: &Path, conn: &rusqlite::Connection, id: &str) -> Result<Option<PathBuf>> {
    let recorded = track::run_dir(conn, id)?.and_then(|recorded| track::locate(db, &recorded));
    Ok(recorded.filter(|dir| dir.is_dir()))
}

/// The first of `planner`'s runs whose directory is still to be made where the planner puts
/// it (under the results directory): one the database `db` records no directory of.
pub fn first_new_dir(db: &Path, planner: &Planner) -> Result<Option<PathBuf>> {
    let conn = track::open_read_only(db)?;
    for run in &planner.runs {
        if recorded_dir(db, &conn, &run.id)?.is_none() {
            return Ok(Some(run.run_dir.clone()));
        }
    }
    Ok(None)
}

/// Gives the sweep's runs its `[search.prune]` rule, the cohort being the directories of
/// these runs and of those the sweep ran before them (earlier TPE batches).
fn share_pruning(spec: &Spec, runs: &mut [PlannedRun], cohort: &mut Vec<PathBuf>) {
    cohort.extend(runs.iter().map(|r| r.run_dir.clone()));
    if let Some(rule) = &spec.search.prune {
        let pruning = Arc::new(Pruning {
            rule: rule.clone(),
            cohort: cohort.clone(),
        });
        for run in runs {
            run.pruning = Some(pruning.clone());
        }
    }
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
    /// How many runs it accounts for: those not counted were never started.
    pub fn runs(&self) -> usize {
        self.finished
            + self.skipped
            + self.failed
            + self.diverged
            + self.interrupted
            + self.pruned
            + self.queued
            + self.held
    }
}

impl std::ops::AddAssign for Summary {
    fn add_assign(&mut self, other: Summary) {
        self.finished += other.finished;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.diverged += other.diverged;
        self.interrupted += other.interrupted;
        self.pruned += other.pruned;
        self.queued += other.queued;
        self.held += other.held;
    }
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

/// Locks `run`'s directory (creating it) before anything there is read or written, or says
/// that another process trains in it and answers `None`: the run is left to that process.
pub fn lock_or_leave(experiment: &str, run: &PlannedRun) -> Result<Option<DirLock>> {
    let lock = crate::fsutil::try_lock_dir_patiently(&run.run_dir)?;
    if lock.is_none() {
        errln!(
            "{experiment}: run {}: another process is training in {}; left to it",
            run.id,
            run.run_dir.display()
        );
    }
    Ok(lock)
}

/// A run about to start, in its directory whose lock the caller holds: with `force` what
/// training wrote there goes; it is `fresh` when there is no checkpoint left to resume from.
pub fn prepare(run: PlannedRun, force: bool, lock: &DirLock) -> Result<Pending> {
    if force {
        // Starting over trains the same config again: the user's tags and note stay, and so
        // does anything else the user saved there.
        let emptying = || format!("emptying {}", run.run_dir.display());
        let mut keep = train::users_entries(&run.run_dir).with_context(emptying)?;
        keep.push(annotations::FILE.to_string());
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        lock.clear(&keep).with_context(emptying)?;
    }
    let fresh = train::checkpoint::list(&run.run_dir).is_empty();
    Ok(Pending { run, fresh })
}

/// The event that replays `run_dir`'s tags and note into the database, which may have missed
/// them (a new or deleted database, one restored from a backup); a damaged file is reported
/// and left.
pub fn replay_annotations(experiment: &str, run_id: &str, run_dir: &Path) -> Option<Event> {
    match annotations::read(run_dir) {
        Ok(annotations) => annotations.map(|_| Event::Annotated {
            run_id: run_id.to_string(),
            run_dir: run_dir.to_path_buf(),
        }),
        Err(err) => {
            errln!("{experiment}: run {run_id}: {err:#}; its tags and note are not replayed");
            None
        }
    }
}

/// The runners other than this one that trained a sweep's kept results: version (none for a
/// release that did not record one) -> how many runs.
type OtherRunners = BTreeMap<Option<String>, usize>;

/// Counts run `run_id`, kept as it is, when another runner trained it.
fn count_other_runner(
    others: &mut OtherRunners,
    db: &rusqlite::Connection,
    run_id: &str,
) -> Result<()> {
    let version = track::trained_by(db, run_id)?;
    if version.as_deref() != Some(crate::VERSION) {
        *others.entry(version).or_default() += 1;
    }
    Ok(())
}

/// Says how many of the finished and diverged runs a sweep keeps another runner trained: a
/// sweep rerun after a change to the code keeps results the new code did not make, and
/// without a word the two would pass for one.
fn note_other_runners(experiment: &str, others: &OtherRunners) {
    if others.is_empty() {
        return;
    }
    // Named versions first, then the runs of releases before versions were recorded.
    let by: Vec<String> = (others.iter().filter(|(version, _)| version.is_some()))
        .chain(others.get_key_value(&None))
        .map(|(version, n)| format!("{n} by {}", track::runner_name(version.as_deref())))
        .collect();
    errln!(
        "{experiment}: {} of the runs kept as they are were trained by another runner ({}; \
         this is {}); --force trains them again",
        others.values().sum::<usize>(),
        by.join(", "),
        crate::VERSION,
    );
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
        version: Some(crate::VERSION.to_string()),
        kernels: crate::backend::kernels().map(Into::into),
    }
}

/// Starts `run`, new, from the finished shorter run of its config among `finished` when
/// there is one ([`extend`]); when that fails it trains from step 0, as without one.
fn continue_shorter_run(
    finished: &extend::Finished,
    db: &Path,
    experiment: &str,
    run: &PlannedRun,
) {
    let Some((shorter, dir)) = finished.shorter_run(db, run) else {
        if let Some(shorter) = finished.passed_over_for_decay(run) {
            errln!(
                "{experiment}: run {} trains from step 0, not from run {} (the same config \
                 trained for {} steps): {}",
                run.id,
                shorter.id,
                shorter.steps,
                extend::DECAY_RESTARTS
            );
        }
        return;
    };
    match extend::continue_from(experiment, run, shorter, &dir) {
        Ok(()) => errln!(
            "{experiment}: run {} continues run {}, the same config trained for {} steps{}: \
             those steps are its first",
            run.id,
            shorter.id,
            shorter.steps,
            match shorter.version.as_deref() {
                Some(crate::VERSION) => String::new(),
                Some(version) => format!(" by another runner ({version})"),
                None => format!(" by {}", track::runner_name(None)),
            }
        ),
        Err(err) => errln!(
            "{experiment}: run {} could not start from a shorter run ({err:#}); it trains from \
             step 0",
            run.id
        ),
    }
}

/// A spec's sweep: runs what `planner` planned, and for a TPE search, each batch it proposes
/// as the ones before end. Returns what it did and how many runs it planned.
pub fn sweep(
    spec_path: &Path,
    mut planner: Planner,
    options: &SweepOptions,
    executor: &dyn Executor,
) -> Result<(Summary, usize)> {
    let spec = planner.spec();
    let mut runs = planner.runs.clone();
    let mut cohort = Vec::new();
    let mut summary = Summary::default();
    let mut resumed = HashSet::new();
    loop {
        summary += run(spec, spec_path, runs, &mut cohort, options, executor)?;
        match next_trials(&mut planner, options, &mut summary, &mut resumed)? {
            Some(next) => runs = next,
            None => break,
        }
    }
    Ok((summary, planner.runs.len()))
}

/// How often a TPE search waiting on other processes' trials looks again.
const TRIALS_POLL: Duration = Duration::from_secs(1);

/// What a TPE search runs next (none: nothing more): the batch it proposes once every trial
/// before it has ended. Trials that other live processes train (two sweeps of one search share
/// it, as Optuna's workers share a study) are waited for, so that both go on proposing; those
/// whose process died or was stopped are resumed here, once (`resumed`); those queued as Slurm
/// tasks are left to them, as the sweep ends.
fn next_trials(
    planner: &mut Planner,
    options: &SweepOptions,
    summary: &mut Summary,
    resumed: &mut HashSet<String>,
) -> Result<Option<Vec<PlannedRun>>> {
    let name = &planner.spec().name;
    let mut waiting = false;
    loop {
        if summary.interrupted > 0 || options.stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // With no trial left unended, the next batch can be proposed (none: the search is
        // complete, or no TPE search); a wait reads only what it waits on.
        let awaited = planner.awaited(&options.db)?;
        if awaited.is_empty() {
            let (before, trials) = (planner.runs.len(), planner.trials_planned());
            if planner.propose(&options.db)? == 0 {
                return Ok(None);
            }
            errln!(
                "{name}: TPE proposed {} more trials from the results of {trials} ({} of {} \
                 planned)",
                planner.trials_planned() - trials,
                planner.trials_planned(),
                planner.spec().search.trial_count()
            );
            return Ok(Some(planner.runs[before..].to_vec()));
        }
        if (awaited.iter()).any(|(_, holder)| matches!(holder, Some(Holder::SlurmTask(_)))) {
            return Ok(None);
        }
        let orphans: Vec<PlannedRun> = awaited
            .iter()
            .filter(|(_, holder)| holder.is_none())
            .map(|(run, _)| run.clone())
            .collect();
        if !orphans.is_empty() {
            // Once each: one that is still neither ended nor held after this sweep ran it
            // (its directory locked by a process the database does not know) is left.
            if orphans.iter().any(|run| resumed.contains(&run.id)) {
                return Ok(None);
            }
            resumed.extend(orphans.iter().map(|run| run.id.clone()));
            // They were counted as left to their process; this sweep trains them now.
            summary.held = summary.held.saturating_sub(orphans.len());
            errln!(
                "{name}: {} of its trials' runs stopped before they ended, their process gone \
                 ({}); resuming them here",
                orphans.len(),
                orphans
                    .iter()
                    .map(|run| run.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(Some(orphans));
        }
        if !waiting {
            waiting = true;
            let holders: BTreeSet<String> = awaited
                .iter()
                .filter_map(|(_, holder)| holder.as_ref().map(Holder::to_string))
                .collect();
            errln!(
                "{name}: waiting for {} of its trials' runs that other processes train ({}) \
                 before TPE proposes more",
                awaited.len(),
                holders.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        let until = Instant::now() + TRIALS_POLL;
        while Instant::now() < until && !options.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Records the experiment, skips runs the database knows as finished (or pruned), and hands
/// the rest to `executor`. `cohort` holds the directories of the runs the sweep ran before
/// these, and gets theirs. A database that fails mid-sweep fails the sweep, after the runs
/// have stopped.
pub fn run(
    spec: &Spec,
    spec_path: &Path,
    runs: Vec<PlannedRun>,
    cohort: &mut Vec<PathBuf>,
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
    let mut runs = runs;
    let elsewhere = stay_where_recorded(&options.db, &reader, &mut runs)?;
    if let Some(first) = elsewhere.first() {
        errln!(
            "{}: {} of its runs stay in the directories the database records for them, outside \
             this results directory (such as {})",
            spec.name,
            elsewhere.len(),
            first.display()
        );
    }
    share_pruning(spec, &mut runs, cohort);
    let mut skipped = 0;
    let mut pruned = 0;
    let mut diverged = 0;
    let mut held = 0;
    let mut judge = verdict::Judge::new(options.force);
    let mut todo = Vec::new();
    // The experiment's finished runs, that longer new runs may continue (read when needed).
    let mut finished = None;
    // The runners other than this one that trained the results kept, and how many each.
    let mut other_runners = OtherRunners::new();
    for mut run in runs {
        let row = track::claims::ClaimRow::read(&reader, &run.id)?;
        if !options.force && row.is_none() {
            let finished = match &finished {
                Some(finished) => finished,
                None => finished.insert(extend::Finished::of(&reader, &spec.name)?),
            };
            continue_shorter_run(finished, &options.db, &spec.name, &run);
        }
        match judge.verdict(row.as_ref(), &run.run_dir, run.pruning.as_deref()) {
            Verdict::Finished => {
                // Its own file is the durable copy of its tags and note: a database restored
                // from a backup gets back the ones given since.
                if let Some(event) = replay_annotations(&spec.name, &run.id, &run.run_dir) {
                    tracker.send(event);
                }
                count_other_runner(&mut other_runners, &reader, &run.id)?;
                skipped += 1;
            }
            Verdict::Diverged => {
                count_other_runner(&mut other_runners, &reader, &run.id)?;
                diverged += 1;
            }
            Verdict::Held { by, .. } => {
                errln!(
                    "{}: run {} is being trained by {by}; left to it",
                    spec.name,
                    run.id
                );
                held += 1;
            }
            Verdict::Pruned => pruned += 1,
            Verdict::Promoted { rung, why } => {
                errln!("{}: run {} promoted ({why})", spec.name, run.id);
                run.promoted = Some((rung, why));
                todo.push(run);
            }
            Verdict::CheckpointLost | Verdict::Train => todo.push(run),
        }
    }
    drop(reader);
    note_other_runners(&spec.name, &other_runners);
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
        diverged: diverged + summary.diverged,
        held: held + summary.held,
        ..summary
    })
}
