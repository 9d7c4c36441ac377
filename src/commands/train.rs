//! `runner train`: one run of a spec's base config. Without `--out` it is the sweep's run of
//! that config, recorded in the tracking database (the same id, directory, records and rows),
//! so `runs`, `show`, `report` and a later sweep see it; with `--out` it trains in that
//! directory alone, unrecorded.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Interrupted, TimedOut, interrupt_flag};
use crate::console::counted;
use crate::exec;
use crate::progress::ProgressObserver;
use crate::spec::{Override, RunConfig, Spec};
use crate::time_limit::TimeLimit;
use crate::train::{self, Status};
use crate::{errln, out, outln};

/// What `runner train` was asked.
pub struct TrainRequest<'a> {
    /// A spec file, or a recorded run whose config to train again.
    pub spec: &'a Path,
    /// `--set` overrides of the spec's keys.
    pub overrides: &'a [Override],
    /// `--out`: train in this directory, unrecorded.
    pub out: Option<&'a Path>,
    pub data_dir: Option<&'a Path>,
    pub steps: Option<u64>,
    pub timeout: Option<Duration>,
    pub dry_run: bool,
    /// `--db`: the tracking database a run without `--out` is recorded in, and a run given
    /// as `spec` is looked up in (default [`crate::track::default_db`]).
    pub db: Option<&'a Path>,
}

pub fn train(req: TrainRequest) -> Result<()> {
    let db = req
        .db
        .map_or_else(crate::track::default_db, Path::to_path_buf);
    let (spec, spec_path) = match recorded_run(req.spec, &db)? {
        Some(run) => (run.spec(req.overrides)?, run.spec_path),
        None => {
            if req.out.is_some() && req.db.is_some() {
                bail!(
                    "--db with --out and a spec file: a run trained with --out is not recorded \
                     (--db names where a run given instead of a spec is looked up)"
                );
            }
            let spec = Spec::load_with(req.spec, req.overrides)?;
            note_what_only_sweeps_do(&spec, req.spec);
            (spec, req.spec.to_path_buf())
        }
    };
    // Taken over once the spec is read (a pipe no one writes blocks that read: see `sweep`).
    let stop = interrupt_flag();
    let time_limit = (req.timeout)
        .filter(|_| !req.dry_run)
        .map(|limit| TimeLimit::start(limit, &stop));
    let mut config = spec.run_config();
    if let Some(dir) = req.data_dir {
        config.data.dir = Some(dir.to_path_buf());
    }
    if let Some(steps) = req.steps {
        anyhow::ensure!(steps > 0, "--steps must be at least 1");
        (config.train.steps, config.train.epochs) = (Some(steps), None);
    }
    crate::budget::check_run(&config)?;
    match req.out {
        Some(out) => unrecorded(&spec, &config, out, req.dry_run, stop, time_limit),
        None => recorded(&spec, &spec_path, config, &db, &req, stop, time_limit),
    }
}

/// A recorded run given to `train` instead of a spec: its experiment and config.
struct RecordedRun {
    id: String,
    experiment: String,
    description: String,
    /// The spec its experiment was last swept from (shown by the report), kept as it is.
    spec_path: std::path::PathBuf,
    config: RunConfig,
}

/// The run `arg` names in `db` when it is no spec file: a run id (or a unique prefix of one),
/// a run directory or its `config.toml`. Any other path that exists as a file, or ends in
/// `.toml`, is a spec.
fn recorded_run(arg: &Path, db: &Path) -> Result<Option<RecordedRun>> {
    // A run directory's `config.toml` (which names no experiment) stands for its run.
    let arg = match arg.parent() {
        Some(dir)
            if arg.file_name() == Some(train::CONFIG_FILE.as_ref())
                && dir.join(crate::fsutil::LOCK_FILE).is_file() =>
        {
            dir
        }
        _ => arg,
    };
    if arg.is_file() || arg.extension().is_some_and(|e| e == "toml") {
        return Ok(None);
    }
    let text = arg.to_string_lossy();
    if !arg.is_dir() && !db.exists() {
        bail!(
            "`{text}`: no such spec file, nor a database at {} to find a run in",
            db.display()
        );
    }
    let run = match crate::query::find_run(db, &text) {
        Ok(run) => run,
        // (A directory's error names it, and what it lacks.)
        Err(err) if arg.is_dir() => return Err(err),
        Err(err) => return Err(err.context(format!("`{text}`: no such spec file, nor run"))),
    };
    let value = |column| {
        run.get(0, column)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    };
    let id = value("id").to_string();
    let experiment = value("experiment").to_string();
    let config = serde_json::from_str(value("config"))
        .map(crate::spec::with_defaults)
        .and_then(serde_json::from_value)
        .with_context(|| format!("run {id}: its recorded config is not one this runner reads"))?;
    let described = crate::query::run_sql(
        db,
        "SELECT description, spec_path FROM experiments WHERE name = ?1",
        &[&experiment],
    )?;
    let described = |column| {
        described
            .get(0, column)
            .and_then(|v| v.as_str())
            .map(String::from)
    };
    Ok(Some(RecordedRun {
        description: described("description").unwrap_or_default(),
        spec_path: described("spec_path")
            .unwrap_or_else(|| format!("run {id}"))
            .into(),
        id,
        experiment,
        config,
    }))
}

impl RecordedRun {
    /// The run's config as a spec of its experiment, with `overrides` applied; `--set` errors
    /// name the run.
    fn spec(&self, overrides: &[Override]) -> Result<Spec> {
        let spec = spec_text(&self.experiment, &self.description, &self.config)?;
        Ok(Spec::parse_with(
            &spec,
            Path::new(&format!("run {}", self.id)),
            overrides,
        )?)
    }
}

/// What only a sweep does would otherwise be dropped without a word.
fn note_what_only_sweeps_do(spec: &Spec, path: &Path) {
    let swept = spec.swept_keys();
    let mut only_sweeps = Vec::new();
    if !swept.is_empty() {
        only_sweeps.push(format!("varies {}", swept.join(", ")));
    }
    if spec.search.prune.is_some() {
        only_sweeps.push("stops runs early ([search.prune])".to_string());
    }
    if !only_sweeps.is_empty() {
        errln!(
            "note: {} also {}: that is `runner sweep`'s; `train` trains the base config alone",
            path.display(),
            only_sweeps.join(" and ")
        );
    }
}

/// Trains `config` as the sweep's run of it: a grid of one point, run by the sweep's own
/// executor (claimed, locked, recorded, resumed, skipped when finished, continued from a
/// shorter run of its config), then says how it ended.
fn recorded(
    spec: &Spec,
    spec_path: &Path,
    config: RunConfig,
    db: &Path,
    req: &TrainRequest,
    stop: Arc<AtomicBool>,
    time_limit: Option<TimeLimit>,
) -> Result<()> {
    let results = Path::new("results");
    let experiment_dir = results.join(&spec.name);
    train::refuse_inside_run_dir(&experiment_dir)?;
    train::refuse_inside_run_dir(db)?;
    crate::track::refuse_database_clash(&experiment_dir, db)?;
    let base = Spec {
        data: config.data,
        model: config.model,
        train: config.train,
        log: config.log,
        sweep: Default::default(),
        search: Default::default(),
        ..spec.clone()
    };
    let planned = exec::Planner::new(&base, results, None);
    if req.dry_run {
        let place = dry_run_place(&planned, db, &experiment_dir)?;
        return print_resolved_spec(spec, &base.run_config(), &place);
    }
    let planner = planned?;
    let id = (planner.runs.first().map(|run| run.id.clone()))
        .context("a spec's base config is one run")?;
    // A database that cannot be written fails before anything trains.
    drop(crate::track::open(db)?);
    let options = exec::SweepOptions {
        force: false,
        db: db.to_path_buf(),
        stop: stop.clone(),
    };
    let executor = exec::LocalExecutor {
        jobs: 1,
        stop: stop.clone(),
    };
    let (summary, _) = exec::sweep(spec_path, planner, &options, &executor)?;
    let timed_out = time_limit.as_ref().is_some_and(TimeLimit::disarm);
    if summary.held > 0 {
        outln!("run {id} is being trained by another process; `runner runs` follows it")?;
        return Ok(());
    }
    let Some(ended) = Ended::read(db, &id)? else {
        // Stopped before the run was claimed.
        return Err(Interrupted(format!("interrupted before run {id} started")).into());
    };
    match ended.status.as_str() {
        "interrupted" => Err(stopped(ended.steps, &ended.run_dir, time_limit, timed_out)),
        "diverged" | "failed" => bail!(
            "run {id} {}: {}",
            ended.status,
            ended.error.as_deref().unwrap_or("no error recorded")
        ),
        _ => {
            let what = match summary.skipped {
                0 => format!("{} at step {}", ended.status, ended.steps),
                _ => format!(
                    "already {} at step {}: nothing to train",
                    ended.status, ended.steps
                ),
            };
            outln!("run {id} {what}; {}", ended.results())?;
            outln!("{}", ended.files())?;
            outln!(
                "recorded in {} (`runner show {id}`, `runner report`)",
                db.display()
            )?;
            Ok(())
        }
    }
}

/// The error of a run stopped at `step` by Ctrl-C or SIGTERM, or by `time_limit` when it
/// `timed_out`, with its checkpoint in `run_dir`.
fn stopped(
    step: impl std::fmt::Display,
    run_dir: impl std::fmt::Display,
    time_limit: Option<TimeLimit>,
    timed_out: bool,
) -> anyhow::Error {
    let resume = format!("checkpoint saved in {run_dir}, run the same command again to resume");
    match time_limit {
        Some(limit) if timed_out => TimedOut(format!(
            "time limit of {} reached at step {step}; {resume}",
            limit.limit()
        ))
        .into(),
        _ => Interrupted(format!("interrupted at step {step}; {resume}")).into(),
    }
}

/// Where `train --dry-run` would train the planned run, and what the database `db` has of it
/// (as the sweep's `--dry-run` reads it). Its id hashes its data: without the data the config
/// still prints.
fn dry_run_place(
    planned: &Result<exec::Planner>,
    db: &Path,
    experiment_dir: &Path,
) -> Result<String> {
    let planner = match planned {
        Ok(planner) => planner,
        Err(err) => {
            return Ok(format!(
                "{} (its run id hashes its data, which cannot be read yet: {err:#})",
                experiment_dir.join("<run id>").display()
            ));
        }
    };
    let run = &planner.runs[0];
    let recorded = exec::recorded_states(db, planner, false)?;
    let start = match recorded.get(&run.id) {
        None => "a new run".to_string(),
        Some(exec::Recorded {
            not_from: Some((shorter, steps)),
            ..
        }) => format!(
            "a new run, from step 0: run {shorter} trained this config for {steps} steps, but {}",
            exec::DECAY_RESTARTS
        ),
        Some(state) => match (state.trains_from, &state.from) {
            (Some(step), Some((shorter, _))) => {
                format!("a new run, going on from run {shorter} at step {step}")
            }
            (Some(step), None) => format!("{state}; it goes on from step {step}"),
            (None, _) => format!("{state}; nothing to train"),
        },
    };
    Ok(format!(
        "{} (run {} in {}): {start}",
        run.run_dir.display(),
        run.id,
        db.display()
    ))
}

/// What the database holds of a run `train` trained, for its closing lines.
struct Ended {
    status: String,
    steps: i64,
    error: Option<String>,
    run_dir: String,
    seconds: Option<f64>,
    losses: Option<(f64, f64)>,
    fid: Option<f64>,
    sample: Option<String>,
    checkpoint: Option<String>,
}

impl Ended {
    /// None when the database has no such run.
    fn read(db: &Path, id: &str) -> Result<Option<Ended>> {
        use crate::query::{latest_eval_sql, latest_loss_sql, latest_time_sql};
        let sql = format!(
            "SELECT r.status, r.steps_done, r.error, r.run_dir, {} AS seconds, {} AS d_loss, \
             {} AS g_loss, {} AS fid, \
             (SELECT path FROM samples WHERE run_id = r.id ORDER BY step DESC LIMIT 1) AS sample, \
             (SELECT path FROM checkpoints WHERE run_id = r.id ORDER BY step DESC LIMIT 1) \
              AS checkpoint \
             FROM runs r WHERE r.id = ?1",
            // (`track::open` brought the database to this release's schema: it has times.)
            latest_time_sql(true, "r", "seconds"),
            latest_loss_sql("r", "d_loss"),
            latest_loss_sql("r", "g_loss"),
            latest_eval_sql("r", "fid"),
        );
        let rows = crate::query::run_sql(db, &sql, &[&id])?;
        let text = |column| rows.get(0, column)?.as_str().map(String::from);
        let number = |column| rows.get(0, column)?.as_f64();
        let Some(status) = text("status") else {
            return Ok(None);
        };
        Ok(Some(Ended {
            status,
            steps: rows
                .get(0, "steps_done")
                .and_then(|v| v.as_i64())
                .unwrap_or(0),
            error: text("error"),
            run_dir: text("run_dir").unwrap_or_default(),
            seconds: number("seconds"),
            losses: number("d_loss").zip(number("g_loss")),
            fid: number("fid"),
            sample: text("sample"),
            checkpoint: text("checkpoint"),
        }))
    }

    /// `training time 0:01:09; last losses D 0.3470, G 1.1971; LeNet-FID 55.832`.
    fn results(&self) -> String {
        let mut parts = Vec::new();
        if let Some(seconds) = self.seconds {
            parts.push(format!("training time {}", crate::query::clock(seconds)));
        }
        if let Some((d, g)) = self.losses {
            parts.push(format!("last losses D {d:.4}, G {g:.4}"));
        }
        if let Some(fid) = self.fid {
            parts.push(format!("LeNet-FID {fid:.3}"));
        }
        parts.join("; ")
    }

    fn files(&self) -> String {
        format!(
            "run directory: {}\nsamples: {}\ncheckpoint: {}",
            self.run_dir,
            self.sample.as_deref().unwrap_or("-"),
            self.checkpoint.as_deref().unwrap_or("-")
        )
    }
}

/// Trains `config` in `run_dir` with no database: `--out`.
fn unrecorded(
    spec: &Spec,
    config: &RunConfig,
    run_dir: &Path,
    dry_run: bool,
    stop: Arc<AtomicBool>,
    time_limit: Option<TimeLimit>,
) -> Result<()> {
    train::refuse_foreign_dir(run_dir)?;
    train::refuse_inside_run_dir(run_dir)?;
    if dry_run {
        let start = match train::checkpoint::resumable_step(run_dir) {
            Some(step) => format!("it goes on from its checkpoint at step {step}"),
            None => "a new run".into(),
        };
        let place = format!("{} (not recorded: --out): {start}", run_dir.display());
        return print_resolved_spec(spec, config, &place);
    }
    let mut progress = ProgressObserver::new(&spec.name, stop);
    let outcome = train::train(config, run_dir, &mut progress);
    progress.finish();
    let timed_out = time_limit.as_ref().is_some_and(TimeLimit::disarm);
    let outcome = outcome.with_context(|| format!("run {}", run_dir.display()))?;
    let secs = outcome.elapsed.as_secs_f64();
    let done = outcome.steps - outcome.resumed_from.unwrap_or(0);
    let losses = outcome
        .last_losses
        .map(|l| format!("D {:.4}, G {:.4}", l.d, l.g))
        .unwrap_or_default();
    let resumed = outcome
        .resumed_from
        .map(|s| format!(" (resumed at step {s})"))
        .unwrap_or_default();
    let files = format!(
        "samples: {}\ncheckpoint: {}",
        outcome
            .final_sample
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        outcome
            .final_checkpoint
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    match outcome.status {
        Status::Finished if done == 0 => outln!(
            "already at step {}: nothing to train; last losses {losses}\n{files}",
            outcome.steps
        )?,
        Status::Finished => {
            // A step's time without the evaluations, which can take longer than a short
            // run's steps (10 000 images sampled and scored each).
            let evaluating = outcome.evaluating.as_secs_f64();
            let of_it = if evaluating > 0.0 {
                format!("; {evaluating:.1} s of it evaluating")
            } else {
                String::new()
            };
            outln!(
                "finished {}{resumed} in {secs:.1} s ({:.1} ms/step{of_it}); last losses \
                 {losses}\n{files}",
                counted(outcome.steps as usize, "step"),
                1000.0 * (secs - evaluating) / done as f64,
            )?
        }
        Status::Interrupted { step } => {
            return Err(stopped(step, run_dir.display(), time_limit, timed_out));
        }
        Status::Diverged { step, .. } => {
            bail!("run diverged at step {step}: a loss became NaN or infinite ({losses})")
        }
        // `train` has no sweep to compare with; only a sweep's observer prunes.
        Status::Pruned { step, reason } => outln!("pruned at step {step}: {reason}\n{files}")?,
    }
    Ok(())
}

/// `train --dry-run`: the config `train` would run, as a spec (every key, defaults included:
/// saved as a file, it trains the same run, as Hydra's `--cfg job` prints a job's config),
/// after a comment saying where it would train and from which step (`place`).
fn print_resolved_spec(spec: &Spec, config: &RunConfig, place: &str) -> Result<()> {
    outln!("# `runner train` would train this config in {place}")?;
    out!("{}", spec_text(&spec.name, &spec.description, config)?)
}

/// A spec of experiment `name` whose base config is `config`, every key written.
fn spec_text(name: &str, description: &str, config: &RunConfig) -> Result<String> {
    let text = |s: &str| toml::Value::String(s.into()).to_string();
    Ok(format!(
        "name = {}\ndescription = {}\n\n{}",
        text(name),
        text(description),
        toml::to_string(config)?
    ))
}
