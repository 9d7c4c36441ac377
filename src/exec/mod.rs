//! Executing a sweep: `runner sweep` plans a spec's grid ([`plan`]), skips what the database
//! knows as finished or pruned ([`run`]) and hands the rest to an [`Executor`].
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
//! [`prune`] stops runs early (ASHA rungs and failure detectors) under both.

pub mod local;
mod point;
pub mod prune;
pub mod slurm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::errln;
use crate::fsutil::DirLock;
use crate::spec::search::Strategy;
use crate::spec::{GridPoint, RunConfig, Spec, tpe};
use crate::track::records;
use crate::track::{self, Event, RunRecord, Tracker};
use crate::train;
pub use local::LocalExecutor;
pub use point::run_one;
use prune::Pruning;

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub force: bool,
    pub db: PathBuf,
    /// Set by Ctrl-C or SIGTERM: no further TPE batch starts.
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

/// The grid of a spec as runs, each identified by its experiment, config and the content of
/// its data (read here, once per data directory). Points with identical configs (search trials
/// that drew the same values) collapse into one run. TPE trials beyond the startup ones are
/// planned as far as the database `db` has their predecessors' results ([`propose_trials`]).
pub fn plan(
    spec: &Spec,
    results: &Path,
    data_dir: Option<&Path>,
    db: &Path,
) -> Result<Vec<PlannedRun>> {
    let grid = spec
        .grid()
        .map_err(|(key, msg)| anyhow::anyhow!("`{key}` {msg}"))?;
    let mut planner = Planner {
        spec,
        results,
        data_dir,
        fingerprints: Default::default(),
        runs: Vec::new(),
    };
    let mut trials = Vec::new();
    for point in grid {
        let values = point.swept.clone();
        trials.push((values, planner.add(point)?));
    }
    if spec.search.strategy == Strategy::Tpe {
        propose_trials(spec, &mut planner, trials, db)?;
    }
    Ok(planner.runs)
}

/// Places grid points as runs.
struct Planner<'a> {
    spec: &'a Spec,
    results: &'a Path,
    data_dir: Option<&'a Path>,
    /// Data directory -> the content hash of its training split.
    fingerprints: std::collections::HashMap<PathBuf, String>,
    runs: Vec<PlannedRun>,
}

impl Planner<'_> {
    /// Plans `point` as a run unless an identical one is planned; returns its run id.
    fn add(&mut self, mut point: GridPoint) -> Result<String> {
        if let Some(dir) = self.data_dir {
            point.config.data.dir = Some(dir.to_path_buf());
        }
        let dir = point.config.data.resolved_dir();
        let data_id = match self.fingerprints.get(&dir) {
            Some(id) => String::clone(id),
            None => {
                let id = crate::data::fingerprint(&dir)?;
                self.fingerprints.insert(dir, id.clone());
                id
            }
        };
        let id = crate::spec::run_id(&self.spec.name, &point.config, &data_id);
        if self.runs.iter().any(|run| run.id == id) {
            return Ok(id);
        }
        crate::budget::check_run(&point.config)?;
        let run_dir = self.results.join(&self.spec.name).join(&id);
        self.runs.push(PlannedRun {
            id: id.clone(),
            point,
            run_dir,
            data_id,
            pruning: None,
            promoted: None,
        });
        Ok(id)
    }
}

/// `[search] strategy = "tpe"`: after the startup `trials` (values, run id), batch after batch
/// of trials proposed from the scores of all trials before them, for as long as the database
/// `db` records every one of those as ended. The sweep plans again as batches end; the next
/// sweep goes on where this one stopped, proposing the same trials from the same results.
fn propose_trials(
    spec: &Spec,
    planner: &mut Planner,
    mut trials: Vec<(Vec<(String, toml::Value)>, String)>,
    db: &Path,
) -> Result<()> {
    let search = &spec.search;
    if !db.exists() {
        return Ok(());
    }
    let conn = track::open_read_only(db)?;
    let metric = search.objective_metric();
    let higher = crate::eval::higher_is_better(metric).unwrap_or(false);
    let mut start = trials.len() as u32;
    while start < search.trials {
        let mut observed = Vec::new();
        for (values, id) in &trials {
            // Lower is better for TPE; a trial without a score is the worst.
            let objective = match track::run_score(&conn, id, metric, higher)? {
                track::RunScore::Unended => return Ok(()),
                track::RunScore::Scored(value) if higher => -value,
                track::RunScore::Scored(value) => value,
                track::RunScore::Unscored => f64::INFINITY,
            };
            observed.push(tpe::Observed {
                values: values.clone(),
                objective,
            });
        }
        let end = start.saturating_add(search.batch_size()).min(search.trials);
        for trial in start..end {
            let values = tpe::propose(&search.space, &observed, search.seed, trial);
            let point = spec
                .point(values.clone())
                .map_err(|(key, msg)| anyhow::anyhow!("`{key}` {msg}"))?;
            trials.push((values, planner.add(point)?));
        }
        start = end;
    }
    Ok(())
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
        if let Some(dir) =
            track::run_dir(conn, &run.id)?.and_then(|recorded| track::locate(db, &recorded))
            && dir.is_dir()
            && !same_dir(&dir, &run.run_dir)
        {
            run.run_dir = dir.clone();
            elsewhere.push(dir);
        }
    }
    Ok(elsewhere)
}

/// Whether two paths name one directory (`results/x` and `./results/x`, or through a link).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
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

/// What the database `db` records of each run, for `--dry-run`: run id -> its status and
/// steps ("interrupted 400/800"). Nothing when there is no database yet.
pub fn recorded_states(db: &Path) -> Result<std::collections::HashMap<String, String>> {
    if !db.exists() {
        return Ok(Default::default());
    }
    let conn = track::open_read_only(db)?;
    let sql = format!(
        "SELECT r.id, {}, r.steps_done, r.total_steps FROM runs r",
        track::claims::status_sql("r")
    );
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map([], |r| {
        let (id, status): (String, String) = (r.get(0)?, r.get(1)?);
        let (done, total): (Option<i64>, Option<i64>) = (r.get(2)?, r.get(3)?);
        let steps = match (done, total) {
            (Some(done), Some(total)) => format!(" {done}/{total}"),
            (Some(done), None) => format!(" {done}"),
            _ => String::new(),
        };
        Ok((id, format!("{status}{steps}")))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The expanded grid as a table: run id, what the database records of it (`recorded`, from
/// [`recorded_states`]; `new` when nothing) and the swept values, then the count of each.
pub fn grid_table(
    spec: &Spec,
    runs: &[PlannedRun],
    recorded: &std::collections::HashMap<String, String>,
) -> String {
    let keys = spec.swept_keys();
    let mut rows = vec![
        ["run", "recorded"]
            .map(String::from)
            .into_iter()
            .chain(keys.iter().cloned())
            .collect::<Vec<_>>(),
    ];
    let mut counts: Vec<(String, usize)> = Vec::new();
    for run in runs {
        let state = recorded.get(&run.id).map_or("new", String::as_str);
        let status = state.split(' ').next().unwrap_or(state).to_string();
        match counts.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => counts.push((status, 1)),
        }
        let values = keys.iter().map(|k| {
            run.point
                .swept
                .iter()
                .find(|(p, _)| p == k)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        });
        rows.push(
            [run.id.clone(), state.to_string()]
                .into_iter()
                .chain(values)
                .collect(),
        );
    }
    let mut out = crate::query::format_table(&rows);
    counts.sort();
    let counted: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    out.push_str(&format!("{} runs: {}", runs.len(), counted.join(", ")));
    if counts.iter().any(|(status, _)| status != "new") {
        let pruned = if counts.iter().any(|(status, _)| status == "pruned") {
            ", pruned ones unless their rung now keeps them"
        } else {
            ""
        };
        out.push_str(&format!(
            " (finished runs are skipped{pruned}; the others resume; --force starts all over)"
        ));
    }
    out.push('\n');
    let trials = spec.search.trials as usize;
    if spec.search.strategy == Strategy::Tpe && runs.len() < trials {
        out.push_str(&format!(
            "TPE: {} of {trials} trials planned; the others are proposed from the scores of \
             these as they end\n",
            runs.len()
        ));
    }
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
    let lock = crate::fsutil::try_lock_dir(&run.run_dir)?;
    if lock.is_none() {
        errln!(
            "{experiment}: run {}: another process is training in {}; left to it",
            run.id,
            run.run_dir.display()
        );
    }
    Ok(lock)
}

/// A run about to start, in its directory whose lock the caller holds: with `force` the
/// directory is emptied; it is `fresh` when there is no checkpoint left to resume from.
pub fn prepare(run: PlannedRun, force: bool, lock: &DirLock) -> Result<Pending> {
    if force {
        lock.clear()
            .with_context(|| format!("emptying {}", run.run_dir.display()))?;
    }
    let fresh = train::checkpoint::list(&run.run_dir).is_empty();
    Ok(Pending { run, fresh })
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

/// A spec's sweep: runs its planned `runs` ([`plan`]), and for a TPE search plans and runs
/// again while the ended trials let it propose more. Returns what it did and how many runs
/// it planned.
pub fn sweep(
    spec: &Spec,
    spec_path: &Path,
    mut runs: Vec<PlannedRun>,
    results: &Path,
    data_dir: Option<&Path>,
    options: &SweepOptions,
    executor: &dyn Executor,
) -> Result<(Summary, usize)> {
    let mut planned: std::collections::HashSet<String> =
        runs.iter().map(|r| r.id.clone()).collect();
    let mut cohort = Vec::new();
    let mut summary = Summary::default();
    loop {
        summary += run(spec, spec_path, runs, &mut cohort, options, executor)?;
        let stopped = summary.interrupted > 0 || options.stop.load(Ordering::Relaxed);
        if spec.search.strategy != Strategy::Tpe || stopped {
            break;
        }
        runs = plan(spec, results, data_dir, &options.db)?
            .into_iter()
            .filter(|r| planned.insert(r.id.clone()))
            .collect();
        if runs.is_empty() {
            break;
        }
        errln!(
            "{}: TPE proposed {} more trials from the results of {} ({} of {} planned)",
            spec.name,
            runs.len(),
            planned.len() - runs.len(),
            planned.len(),
            spec.search.trials
        );
    }
    Ok((summary, planned.len()))
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
    let mut held = 0;
    let me = track::claims::Owner::this_process().tag();
    // Each rung's evaluations, read once for all the pruned runs reconsidered here.
    let mut rung_values = std::collections::BTreeMap::new();
    let mut todo = Vec::new();
    for mut run in runs {
        let row = track::claims::ClaimRow::read(&reader, &run.id)?;
        // Finished, with its final checkpoint on disk, whole.
        if !options.force
            && row.as_ref().is_some_and(|row| row.status == "finished")
            && train::checkpoint::newest_is_intact(&run.run_dir)
        {
            skipped += 1;
            continue;
        }
        // Left to a live process that trains it, or to the Slurm task it is queued as (an
        // executor's own claim closes the race; this keeps a Slurm sweep from queuing it).
        if let Some(by) = row.and_then(|row| row.holder(&me, track::now())) {
            errln!(
                "{}: run {} is being trained by {by}; left to it",
                spec.name,
                run.id
            );
            held += 1;
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
        held: held + summary.held,
        ..summary
    })
}
