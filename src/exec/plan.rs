//! Planning a sweep: its grid points (and search trials) as runs, each identified by its
//! experiment, config and the content of its data; for a TPE search, the trials proposed so
//! far from the scores of the ended ones ([`Planner::propose`]); and `--dry-run`'s table.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{PlannedRun, Verdict};
use crate::spec::search::Strategy;
use crate::spec::{GridPoint, Spec, tpe};
use crate::track::claims::{ClaimRow, Holder, Owner};
use crate::train::checkpoint;
use crate::{query, track};

/// A TPE trial: the values it sets and its runs (one per point of the `[sweep]` grid).
type Trial = (Vec<(String, toml::Value)>, Vec<String>);

/// A sweep's runs: those of its grid, then, for a TPE search, those proposed as earlier trials
/// end.
pub struct Planner<'a> {
    spec: &'a Spec,
    results: &'a Path,
    data_dir: Option<&'a Path>,
    /// Data directory -> the content hash of its training split.
    fingerprints: HashMap<PathBuf, String>,
    planned: HashSet<String>,
    trials: Vec<Trial>,
    pub runs: Vec<PlannedRun>,
}

impl<'a> Planner<'a> {
    /// The spec's grid as runs, reading each data directory once. Points with identical
    /// configs (search trials that drew the same values) are one run.
    pub fn new(spec: &'a Spec, results: &'a Path, data_dir: Option<&'a Path>) -> Result<Self> {
        let mut planner = Planner {
            spec,
            results,
            data_dir,
            fingerprints: HashMap::new(),
            planned: HashSet::new(),
            trials: Vec::new(),
            runs: Vec::new(),
        };
        match spec.search.strategy {
            // The grid's points, planned by trial: a trial is scored over its runs.
            Strategy::Tpe => {
                for values in spec.search.trials() {
                    planner.add_trial(values)?;
                }
            }
            _ => {
                let grid = spec
                    .grid()
                    .map_err(|(key, msg)| anyhow::anyhow!("`{key}` {msg}"))?;
                for point in grid {
                    planner.add(point)?;
                }
            }
        }
        Ok(planner)
    }

    /// Plans a TPE trial's points as runs.
    fn add_trial(&mut self, values: Vec<(String, toml::Value)>) -> Result<()> {
        let points = self
            .spec
            .trial_points(values.clone())
            .map_err(|(key, msg)| anyhow::anyhow!("`{key}` {msg}"))?;
        let ids = points
            .into_iter()
            .map(|point| self.add(point))
            .collect::<Result<_>>()?;
        self.trials.push((values, ids));
        Ok(())
    }

    /// The spec it plans.
    pub fn spec(&self) -> &'a Spec {
        self.spec
    }

    /// How many TPE trials it planned (none for other strategies); identical ones are one run.
    pub fn trials_planned(&self) -> usize {
        self.trials.len()
    }

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
        if !self.planned.insert(id.clone()) {
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

    /// `[search] strategy = "tpe"`: plans batch after batch of trials proposed from the scores
    /// of all trials before them, for as long as the database `db` records every one of those
    /// as ended; returns how many runs it added (none for other strategies). The same results
    /// propose the same trials, so a later sweep goes on where this one stopped.
    pub fn propose(&mut self, db: &Path) -> Result<usize> {
        let (spec, before) = (self.spec, self.runs.len());
        let search = &spec.search;
        if search.strategy != Strategy::Tpe || !db.exists() {
            return Ok(0);
        }
        let conn = track::open_read_only(db)?;
        let metric = search.objective_metric();
        let higher = crate::eval::higher_is_better(metric).unwrap_or(false);
        // Each run's score, read once (the database does not change under this call).
        let mut scores: HashMap<String, track::RunScore> = HashMap::new();
        while (self.trials.len() as u32) < search.trial_count() {
            let mut observed = Vec::new();
            for (values, ids) in &self.trials {
                // A trial's score is the mean over its runs (its seeds, say); lower is better
                // for TPE, and a trial with a run without a score is the worst.
                let mut total = 0.0;
                for id in ids {
                    if !scores.contains_key(id) {
                        let score = track::run_score(&conn, id, metric, higher)?;
                        scores.insert(id.clone(), score);
                    }
                    total += match scores[id] {
                        track::RunScore::Unended => return Ok(self.runs.len() - before),
                        track::RunScore::Scored(value) if higher => -value,
                        track::RunScore::Scored(value) => value,
                        track::RunScore::Unscored => f64::INFINITY,
                    };
                }
                observed.push(tpe::Observed {
                    values: values.clone(),
                    objective: total / ids.len() as f64,
                });
            }
            let start = self.trials.len() as u32;
            let end = start
                .saturating_add(search.batch_size())
                .min(search.trial_count());
            // The batch's earlier proposals, for a constant liar.
            let mut pending: Vec<Vec<(String, toml::Value)>> = Vec::new();
            for trial in start..end {
                let values = tpe::propose(
                    &search.space,
                    &observed,
                    &pending,
                    search.draw_seed(),
                    trial,
                );
                if search.constant_liar == Some(true) {
                    pending.push(values.clone());
                }
                self.add_trial(values)?;
            }
        }
        Ok(self.runs.len() - before)
    }

    /// For a TPE search with trials left to propose: the planned runs that have not ended, on
    /// which [`Planner::propose`] waits, each with the live process or Slurm task holding it
    /// (none: nothing does, its process died or was stopped). Empty when `propose` can go on,
    /// or has nothing to propose.
    pub fn awaited(&self, db: &Path) -> Result<Vec<(PlannedRun, Option<Holder>)>> {
        let search = &self.spec.search;
        if search.strategy != Strategy::Tpe
            || self.trials.len() as u32 >= search.trial_count()
            || !db.exists()
        {
            return Ok(Vec::new());
        }
        let conn = track::open_read_only(db)?;
        let metric = search.objective_metric();
        let higher = crate::eval::higher_is_better(metric).unwrap_or(false);
        let (me, now) = (Owner::this_process().tag(), track::now());
        let mut awaited = Vec::new();
        for run in &self.runs {
            if track::run_score(&conn, &run.id, metric, higher)? == track::RunScore::Unended {
                let holder = ClaimRow::read(&conn, &run.id)?.and_then(|row| row.holder(&me, now));
                awaited.push((run.clone(), holder));
            }
        }
        Ok(awaited)
    }
}

/// The status of a finished run whose final checkpoint is damaged or gone (or a diverged run
/// whose directory is gone): the next sweep trains it again from its newest whole checkpoint
/// (the steps it shows; 0 when there is none).
const CHECKPOINT_LOST: &str = "checkpoint lost";

/// What the database records of a planned run, for `--dry-run`, and what the sweep would do
/// with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Its status as people read it (`orphaned` for a `running` run whose process is gone),
    /// or what the sweep will do with it where that differs (`checkpoint lost`, `promoted`,
    /// `queued` for a run left to the Slurm task it is queued as); `new` for a run that is not
    /// recorded but continues a shorter one.
    pub status: String,
    /// Steps done, and planned when known.
    pub steps: Option<(u64, Option<u64>)>,
    /// A new run's finished shorter run of its config: its id and the step it continues from.
    pub from: Option<(String, u64)>,
    /// A new run's finished shorter run of its config that it cannot continue, its learning
    /// rate fitted to its length (`lr_decay`): its id and steps.
    pub not_from: Option<(String, u64)>,
    /// The step the sweep would train it from; none when it leaves the run as it is.
    pub trains_from: Option<u64>,
    /// Trained by another runner than this one (`runs.version`), or by one that did not
    /// record its version.
    pub by_other_runner: bool,
}

impl std::fmt::Display for Recorded {
    /// "interrupted 400/800", "finished 800", "new from 8d0c51e2a7f3 at 400".
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        match (&self.steps, &self.from) {
            (_, Some((id, step))) => write!(f, " from {id} at {step}"),
            (Some((done, Some(total))), None) => write!(f, " {done}/{total}"),
            (Some((done, None)), None) => write!(f, " {done}"),
            (None, None) => Ok(()),
        }
    }
}

/// What the database `db` records of each of `planner`'s runs that it knows, by run id: its
/// status and steps, and what a sweep (with `force`) would do with it, as the sweep decides
/// ([`super::Verdict`]); a new run that will continue a finished shorter run of its config,
/// which one. Nothing when there is no database yet.
pub fn recorded_states(
    db: &Path,
    planner: &Planner,
    force: bool,
) -> Result<HashMap<String, Recorded>> {
    if !db.exists() {
        return Ok(Default::default());
    }
    let conn = track::open_read_only(db)?;
    let mut states = states_of_runs(&conn)?;
    let finished = super::extend::Finished::of(&conn, &planner.spec.name)?;
    // Where each run trains: the directory the database records for it, else the planned one.
    let dirs = (planner.runs.iter())
        .map(|run| Ok(super::recorded_dir(db, &conn, &run.id)?.unwrap_or(run.run_dir.clone())))
        .collect::<Result<Vec<PathBuf>>>()?;
    // The sweep's pruning, whose rungs may now keep runs they pruned (the sweep promotes them).
    let pruning = (planner.spec.search.prune.as_ref()).map(|rule| super::prune::Pruning {
        rule: rule.clone(),
        cohort: dirs.clone(),
    });
    let mut judge = super::verdict::Judge::new(force);
    for (run, dir) in planner.runs.iter().zip(&dirs) {
        if let Some(state) = states.get_mut(&run.id) {
            let row = ClaimRow::read(&conn, &run.id)?;
            let verdict = judge.verdict(row.as_ref(), dir, pruning.as_ref());
            let done = state.steps.map_or(0, |(done, _)| done);
            state.trains_from = verdict.trains().then_some(if force { 0 } else { done });
            match verdict {
                Verdict::CheckpointLost => {
                    state.status = CHECKPOINT_LOST.into();
                    let total = state.steps.and_then(|(_, total)| total);
                    let step = checkpoint::resumable_step(dir).unwrap_or(0);
                    state.steps = Some((step, total));
                    state.trains_from = Some(step);
                }
                Verdict::Promoted { .. } => state.status = "promoted".into(),
                // (A live process's claim shows as running even in the moment before it
                // starts the run.)
                Verdict::Held { queued, .. } => {
                    state.status = if queued { "queued" } else { "running" }.into();
                }
                _ => {}
            }
        } else if !force && let Some((shorter, _)) = finished.shorter_run(db, run) {
            let from = Recorded {
                status: "new".into(),
                steps: None,
                from: Some((shorter.id.clone(), shorter.steps)),
                not_from: None,
                trains_from: Some(shorter.steps),
                by_other_runner: false,
            };
            states.insert(run.id.clone(), from);
        } else if !force && let Some(shorter) = finished.passed_over_for_decay(run) {
            let anew = Recorded {
                status: "new".into(),
                steps: None,
                from: None,
                not_from: Some((shorter.id.clone(), shorter.steps)),
                trains_from: Some(0),
                by_other_runner: false,
            };
            states.insert(run.id.clone(), anew);
        }
    }
    Ok(states)
}

/// Each recorded run's status and steps.
fn states_of_runs(conn: &rusqlite::Connection) -> Result<HashMap<String, Recorded>> {
    let sql = format!(
        "SELECT r.id, {}, r.steps_done, r.total_steps, {} FROM runs r",
        track::claims::status_sql("r"),
        track::runs_column_sql(conn, "r", "version")?
    );
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map([], |r| {
        let (id, status): (String, String) = (r.get(0)?, r.get(1)?);
        // (Counts as stored; a hand-edited negative one reads as 0.)
        let (done, total): (Option<i64>, Option<i64>) = (r.get(2)?, r.get(3)?);
        let count = |n: i64| n.max(0) as u64;
        let steps = done.map(|done| (count(done), total.map(count)));
        let version: Option<String> = r.get(4)?;
        Ok((
            id,
            Recorded {
                status,
                steps,
                from: None,
                not_from: None,
                trains_from: None,
                by_other_runner: version.as_deref() != Some(crate::VERSION),
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The planned runs as a table: run id, what the database records of it (`recorded`, from
/// [`recorded_states`]; `new` when nothing), with an `estimate` its training time left, and
/// the swept values; then the count of each status (and the estimate's total).
pub fn grid_table(
    planner: &Planner,
    recorded: &HashMap<String, Recorded>,
    estimate: Option<&super::Estimate>,
) -> String {
    let (spec, runs) = (planner.spec, &planner.runs);
    let keys = spec.swept_keys();
    let mut header = vec!["run".to_string(), "recorded".to_string()];
    header.extend(estimate.map(|_| "time left".to_string()));
    let mut rows = vec![header.into_iter().chain(keys.iter().cloned()).collect()];
    let mut counts: Vec<(String, usize)> = Vec::new();
    // Results kept as they are that another runner made (the sweep says so too).
    let mut by_others = 0;
    for run in runs {
        let (state, status) = match recorded.get(&run.id) {
            Some(recorded) => {
                let kept = ["finished", "diverged"].contains(&recorded.status.as_str())
                    && recorded.trains_from.is_none();
                by_others += usize::from(kept && recorded.by_other_runner);
                (recorded.to_string(), recorded.status.clone())
            }
            None => ("new".to_string(), "new".to_string()),
        };
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
        let left = estimate.map(|e| {
            e.left
                .get(&run.id)
                .map_or(String::new(), |s| query::clock(*s))
        });
        rows.push(
            [run.id.clone(), state]
                .into_iter()
                .chain(left)
                .chain(values)
                .collect(),
        );
    }
    let mut out = query::format_table(&rows);
    counts.sort();
    let counted: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let total = crate::console::counted(runs.len(), "run");
    out.push_str(&format!("{total}: {}", counted.join(", ")));
    if counts.iter().any(|(status, _)| status != "new") {
        let has = |wanted: &str| counts.iter().any(|(status, _)| status == wanted);
        let diverged = if has("diverged") { " and diverged" } else { "" };
        let pruned = if has("pruned") {
            ", pruned ones unless their rung now keeps them"
        } else {
            ""
        };
        let held = match (has("running"), has("queued")) {
            (false, false) => "",
            (true, false) => "; running ones are left to the process training them",
            (false, true) => "; queued ones are left to their Slurm tasks",
            (true, true) => "; running and queued ones are left to their process or Slurm task",
        };
        let others = match by_others {
            0 => String::new(),
            n => format!(
                "; {n} of the runs skipped {} trained by another runner",
                if n == 1 { "was" } else { "were" }
            ),
        };
        out.push_str(&format!(
            " (finished{diverged} runs are skipped{pruned}{held}; the others resume; --force \
             starts all over{others})"
        ));
    }
    out.push('\n');
    let restart = (runs.iter())
        .filter(|run| recorded.get(&run.id).is_some_and(|r| r.not_from.is_some()))
        .count();
    if restart > 0 {
        let (trains, configs) = match restart {
            1 => ("1 new run trains".to_string(), "its config"),
            n => (format!("{n} new runs train"), "their configs"),
        };
        out.push_str(&format!(
            "{trains} from step 0, not from the finished shorter run of {configs}: {}\n",
            super::DECAY_RESTARTS
        ));
    }
    if let Some(estimate) = estimate {
        out.push_str(&estimate.summary());
        out.push('\n');
    }
    let trials = spec.search.trial_count() as usize;
    if spec.search.strategy == Strategy::Tpe && planner.trials_planned() < trials {
        let unplanned = trials - planner.trials_planned();
        let estimated = match estimate {
            // The trials still to come, at the pace of those planned and left to train.
            Some(estimate) if !estimate.left.is_empty() => {
                let left = estimate.left.len();
                let all = estimate.wall * (left + unplanned) as f64 / left as f64;
                format!(
                    " (the estimate counts the planned ones; at their pace, all {} left would \
                     take about {})",
                    left + unplanned,
                    query::clock(all)
                )
            }
            Some(_) => " (the estimate counts the planned ones)".to_string(),
            None => String::new(),
        };
        out.push_str(&format!(
            "TPE: {} of {trials} trials planned; the others are proposed from the scores of \
             these as they end{estimated}\n",
            planner.trials_planned()
        ));
    }
    out
}
