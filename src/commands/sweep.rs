//! `runner sweep`: a spec's grid trained here or as Slurm tasks (or their records collected),
//! then what it found: the training time, the best run and, over seeds, the best mean.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

use super::{Interrupted, TimedOut, interrupt_flag};
use crate::exec;
use crate::spec::{Override, Spec};
use crate::time_limit::TimeLimit;
use crate::train;
use crate::{errln, out, outln};

/// What `runner sweep` was asked.
pub struct SweepRequest<'a> {
    pub spec: &'a Path,
    /// `--set` overrides of the spec's keys.
    pub overrides: &'a [Override],
    /// The device the runs train on (`--device`).
    pub device: crate::backend::DeviceChoice,
    pub jobs: Option<usize>,
    pub dry_run: bool,
    /// `--estimate`: the dry run's table with each run's training time left, timed here.
    pub estimate: bool,
    pub force: bool,
    pub db: &'a Path,
    pub results: &'a Path,
    pub data_dir: Option<&'a Path>,
    pub write_report: bool,
    /// Set for `--executor slurm`.
    pub slurm: Option<crate::exec::slurm::SlurmOptions>,
    pub collect: bool,
    /// Whether any Slurm-only flag was given (refused for the local executor).
    pub slurm_flags_given: bool,
    /// `--timeout`: stop the sweep after this long.
    pub timeout: Option<std::time::Duration>,
}

/// The experiment's training time so far, and its best run on its search's objective
/// (LeNet-FID without one) with its swept values: what a sweep was run to find.
fn result_lines(db: &Path, spec: &Spec) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    // What the experiment cost (runs train side by side: this is not the sweep's wall time).
    let trained = crate::query::training_time(db, &spec.name)?;
    if let Some((seconds, runs)) = trained {
        let runs = crate::console::counted(runs, "run");
        let time = crate::query::clock(seconds);
        lines.push(format!("training time: {time} over {runs}"));
    }
    let metric = spec.search.objective_metric();
    let higher = crate::eval::higher_is_better(metric).unwrap_or(false);
    let conn = crate::track::open_read_only(db)?;
    let Some(best) = crate::track::best_run(&conn, &spec.name, metric, higher)? else {
        // Trained without evaluations (`log.eval_samples = 0`, the fastest): say how to rank.
        if metric == "fid" && trained.is_some() {
            lines.push(format!(
                "no run has a LeNet-FID yet: `runner eval --experiment {}` scores them all",
                spec.name
            ));
        }
        return Ok(lines);
    };
    let name = if metric == "fid" { "LeNet-FID" } else { metric };
    let of = match best.scored {
        1 => String::new(),
        n => format!(" (the best of {n} scored runs)"),
    };
    lines.push(format!(
        "best: run {}, {name} {:.3} at step {}{of}",
        best.run_id, best.value, best.step
    ));
    // From the resolved config, as `runner show` lists it: the params table keeps flags as
    // SQLite integers (0), the config as the spec wrote them (false).
    let config = crate::spec::with_defaults(best.config);
    let flat: std::collections::BTreeMap<String, serde_json::Value> =
        crate::spec::flatten_params(&config).into_iter().collect();
    let values: Vec<String> = (spec.swept_keys().iter())
        .filter_map(|key| match flat.get(key)? {
            serde_json::Value::String(text) => Some(format!("{key} = {text}")),
            value => Some(format!("{key} = {value}")),
        })
        .collect();
    if !values.is_empty() {
        lines.push(format!("      {}", values.join(", ")));
    }
    if metric == "fid" && spec.swept_keys().iter().any(|k| k == "train.seed") {
        lines.extend(replicate_lines(db, &spec.name)?);
    }
    Ok(lines)
}

/// For a sweep over seeds: the configuration with the best mean final LeNet-FID over its
/// seeds, and whether the runner-up's seeds can tell the two apart. One run's best score
/// picks the luckiest seed (a vanilla GAN config scored 216 to 272 over three).
fn replicate_lines(db: &Path, experiment: &str) -> Result<Vec<String>> {
    let groups = crate::replicates::groups(db, Some(experiment))?;
    let number = |i, column| groups.get(i, column).and_then(serde_json::Value::as_f64);
    let group = |i: usize| -> Option<String> {
        let (n, mean) = (number(i, "n")?, number(i, "fid_mean")?);
        let config = groups.get(i, "config")?.as_str()?;
        let config = if config.is_empty() {
            String::new()
        } else {
            format!("{config}, ")
        };
        let interval =
            number(i, "fid_ci95").map_or(String::new(), |h| format!(" ± {h:.3} (95% interval)"));
        Some(format!(
            "{config}final LeNet-FID {mean:.3}{interval} over {n} seeds"
        ))
    };
    // A mean needs seeds to average.
    let Some(leader) = group(0).filter(|_| number(0, "n") >= Some(2.0)) else {
        return Ok(Vec::new());
    };
    let mut lines = vec![format!("best mean over seeds: {leader}")];
    if let Some(second) = group(1) {
        let verdict = match groups
            .get(1, "vs_leader")
            .and_then(serde_json::Value::as_str)
        {
            Some("overlaps") => "its seeds cannot tell it from the best",
            _ => "worse",
        };
        lines.push(format!(
            "      next: {second} ({verdict}; `runner runs --group`)"
        ));
    }
    Ok(lines)
}

/// Runs at a time on this machine: `--jobs`, or one at a time on a GPU and one per core on
/// the CPU (measured on 2 cores: four 150-step DCGAN runs took 2:33 with 2 jobs, 2:47 with
/// 1; `--estimate` tells for a sweep's own runs).
fn local_jobs(req: &SweepRequest) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    req.jobs.unwrap_or(match req.device {
        crate::backend::DeviceChoice::Cpu => cores,
        _ => 1,
    })
}

/// `--dry-run`: the planned grid and what the database has of each run; with `--estimate`,
/// each run's training time left, timed here (Ctrl-C, `stop`, ends the timing).
fn dry_run(req: &SweepRequest, mut planner: exec::Planner, stop: &AtomicBool) -> Result<()> {
    planner.propose(req.db)?;
    let recorded = exec::recorded_states(req.db, &planner, req.force)?;
    let estimate = if req.estimate {
        let timing = |i: usize, n: usize, evaluates: bool| {
            if stop.load(Ordering::Relaxed) {
                return Err(Interrupted("interrupted: no estimate".into()).into());
            }
            let evaluation = if evaluates { " and an evaluation" } else { "" };
            errln!(
                "timing shape {} of {n}: training steps{evaluation}...",
                i + 1
            );
            Ok(())
        };
        // Each Slurm task trains one run where Slurm puts it: priced as alone here.
        let jobs = if req.slurm.is_some() {
            1
        } else {
            local_jobs(req)
        };
        Some(exec::estimate(&planner, &recorded, jobs, timing)?)
    } else {
        None
    };
    out!(
        "{}",
        exec::grid_table(&planner, &recorded, estimate.as_ref())
    )?;
    Ok(())
}

/// `sweep --collect`: merges what the experiment's ended Slurm tasks recorded (after waiting
/// for them with `--wait`), and says what it found.
fn collect(req: &SweepRequest, experiment: &str, stop: &AtomicBool) -> Result<exec::Summary> {
    let tracker = crate::track::Tracker::start(req.db)?;
    let jobs = crate::exec::slurm::outstanding_jobs(req.results, experiment)?;
    if req.slurm.as_ref().is_some_and(|s| s.wait) && !jobs.is_empty() {
        crate::exec::slurm::wait(&jobs, stop)?;
    }
    let mut summary = exec::Summary::default();
    for status in crate::exec::slurm::collect(req.results, experiment, &tracker)?.values() {
        summary.count(status);
    }
    tracker.close()?;
    outln!(
        "{}: collected {} finished, {} pruned, {} failed, {} diverged, {} interrupted; {} still queued or running",
        experiment,
        summary.finished,
        summary.pruned,
        summary.failed,
        summary.diverged,
        summary.interrupted,
        summary.queued
    )?;
    Ok(summary)
}

/// Flag combinations a sweep refuses before it reads anything.
fn refuse_conflicting_flags(req: &SweepRequest) -> Result<()> {
    if req.slurm.is_none() && req.slurm_flags_given {
        bail!(
            "--partition, --max-parallel, --sbatch-arg, --wait and --collect need --executor slurm"
        );
    }
    if req.slurm.is_some() && req.jobs.is_some() {
        bail!(
            "--jobs sets how many runs train at once on this machine; Slurm trains each run as \
             a task of its own: limit how many run at once with --max-parallel"
        );
    }
    if req.collect && req.dry_run {
        bail!(
            "--collect merges ended Slurm tasks' records into the database, which a dry run \
             (--dry-run, --estimate) must not write; drop one of them"
        );
    }
    if req.slurm.is_some() && req.timeout.is_some() {
        bail!(
            "--timeout limits a sweep on this machine; give Slurm's tasks their time with \
             --sbatch-arg=--time=HH:MM:SS (a task stopped at its limit checkpoints, and the next \
             sweep resumes it)"
        );
    }
    Ok(())
}

/// Trains the planned grid, here or as Slurm tasks, and prints how its runs ended; with the
/// message to exit with when `--timeout` stopped it.
fn train_grid(
    req: &SweepRequest,
    spec: &Spec,
    mut planner: exec::Planner,
    stop: &Arc<AtomicBool>,
    time_limit: Option<&TimeLimit>,
) -> Result<(exec::Summary, Option<String>)> {
    let executor: Box<dyn exec::Executor> = match &req.slurm {
        Some(options) => Box::new(crate::exec::slurm::SlurmExecutor {
            options: options.clone(),
            results: req.results.to_path_buf(),
            stop: stop.clone(),
            device: req.device,
        }),
        None => Box::new(exec::LocalExecutor {
            jobs: local_jobs(req),
            stop: stop.clone(),
        }),
    };
    // Merge what earlier Slurm jobs' ended tasks recorded first, whichever executor, so runs
    // queued as tasks that ended are known as such: skipped when they finished, run again when
    // they did not.
    let tracker = crate::track::Tracker::start(req.db)?;
    crate::exec::slurm::collect(req.results, &spec.name, &tracker)?;
    tracker.close()?;
    let options = exec::SweepOptions {
        force: req.force,
        db: req.db.to_path_buf(),
        stop: stop.clone(),
    };
    // TPE trials are proposed after merging, from every result there is.
    planner.propose(req.db)?;
    // A file where the results directory must be (`--results notes.txt`) failed each new run,
    // recorded as failed; runs the database keeps elsewhere can still run.
    if let Some(file) = crate::fsutil::file_in_the_way(&req.results.join(&spec.name))
        && let Some(dir) = exec::first_new_dir(req.db, &planner)?
    {
        bail!(
            "{}: is a file, so the sweep's new runs cannot have their directories there ({}); \
             choose another --results directory",
            file.display(),
            dir.display()
        );
    }
    let (summary, total) = exec::sweep(req.spec, planner, &options, executor.as_ref())?;
    let timed_out = time_limit.filter(|limit| limit.disarm()).map(|limit| {
        format!(
            "time limit of {} reached; runs checkpointed and stopped: {}, not started: {}; \
             run the same command again to resume them",
            limit.limit(),
            summary.interrupted,
            total.saturating_sub(summary.runs())
        )
    });
    let held = if summary.held > 0 {
        format!(
            ", {} left to another process or Slurm task that has them",
            summary.held
        )
    } else {
        String::new()
    };
    outln!(
        "{}: {}: {} finished, {} skipped (already finished), {} pruned, {} failed, {} diverged, {} interrupted, {} queued{held}\ndatabase: {}",
        spec.name,
        crate::console::counted(total, "run"),
        summary.finished,
        summary.skipped,
        summary.pruned,
        summary.failed,
        summary.diverged,
        summary.interrupted,
        summary.queued,
        req.db.display()
    )?;
    Ok((summary, timed_out))
}

/// What the sweep found, its report, and how it exits: timed out, interrupted or with failed
/// runs, after everything it recorded has been reported.
fn finish(
    req: &SweepRequest,
    spec: &Spec,
    summary: &exec::Summary,
    timed_out: Option<String>,
    stop: &AtomicBool,
) -> Result<()> {
    // The runs are recorded; failing to read the best back must not fail the sweep.
    match result_lines(req.db, spec) {
        Ok(lines) => {
            for line in lines {
                outln!("{line}")?;
            }
        }
        Err(err) => errln!("warning: the results could not be read back: {err:#}"),
    }
    if req.write_report {
        match crate::report::write(req.db, &req.results.join("report"), None) {
            Ok(written) => outln!("report: {}", written.index.display())?,
            // The runs are recorded; a report failure must not fail the sweep.
            Err(err) => errln!("warning: the report could not be written: {err:#}"),
        }
    }
    if summary.diverged > 0 {
        outln!(
            "see `runner runs --experiment {}` for the diverged runs",
            spec.name
        )?;
    }
    if let Some(message) = timed_out {
        return Err(TimedOut(message).into());
    }
    if summary.interrupted > 0 || stop.load(Ordering::Relaxed) {
        return Err(Interrupted("interrupted; run the same command again to resume".into()).into());
    }
    if summary.failed > 0 {
        bail!(
            "{} of the runs failed (see `runner runs --experiment {}`)",
            summary.failed,
            spec.name
        );
    }
    Ok(())
}

pub fn sweep(req: SweepRequest) -> Result<()> {
    refuse_conflicting_flags(&req)?;
    // Read before Ctrl-C is taken over: a spec that is a pipe no one writes blocks the read,
    // and the signal's default action, ending the process, is then the one that helps.
    let spec = Spec::load_with(req.spec, req.overrides)?;
    let stop = interrupt_flag();
    let time_limit = (req.timeout)
        .filter(|_| !req.dry_run)
        .map(|limit| TimeLimit::start(limit, &stop));
    // Its runs' directories and its database, nested in another run's, would go with it.
    let experiment_dir = req.results.join(&spec.name);
    train::refuse_inside_run_dir(&experiment_dir)?;
    train::refuse_inside_run_dir(req.db)?;
    crate::track::refuse_database_clash(&experiment_dir, req.db)?;
    if !req.dry_run {
        // A database that cannot be written fails the sweep before it announces a report.
        drop(crate::track::open(req.db)?);
    }
    // Planned before the report is announced: data that cannot be read fails the sweep here.
    let planner = if req.collect {
        None
    } else {
        Some(exec::Planner::new(&spec, req.results, req.data_dir)?)
    };
    if req.dry_run
        && let Some(planner) = planner
    {
        return dry_run(&req, planner, &stop);
    }
    let live_report = if req.write_report {
        let report_dir = req.results.join("report");
        outln!(
            "report: {} (rewritten every {} s while the sweep runs)",
            report_dir.join("index.html").display(),
            crate::report::EVERY.as_secs()
        )?;
        Some(crate::report::live(
            req.db.to_path_buf(),
            report_dir,
            crate::report::EVERY,
        ))
    } else {
        None
    };
    let (summary, timed_out) = match planner {
        None => (collect(&req, &spec.name, &stop)?, None),
        Some(planner) => train_grid(&req, &spec, planner, &stop, time_limit.as_ref())?,
    };
    // The live report stops before the final one is written.
    drop(live_report);
    finish(&req, &spec, &summary, timed_out, &stop)
}
