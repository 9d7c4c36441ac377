//! Sweeps on a Slurm cluster: the pending grid points as one `sbatch --array` job.
//!
//! Submitting writes a plan (`<results>/<experiment>/slurm/plan-<ms>.json`: the resolved grid
//! points, so tasks never re-expand the spec) and a batch script next to it, then calls
//! `sbatch`. Array task i runs `runner slurm-task <plan> i`, which trains point i through the
//! same [`run_one`] as a local sweep, but records into `records.jsonl` in the run's own
//! directory instead of the database: SQLite's locking is not safe over NFS, so no task ever
//! opens the main database. The submitting side merges finished tasks' records into it
//! ([`collect`], `--collect`, and automatically after `--wait`). Records replay idempotently,
//! so merging twice changes nothing; a task that ended without recording its end (cancelled,
//! out of time, node lost) becomes a failed run with its job id and the tail of its log.
//!
//! Task logs are `<results>/<experiment>/slurm/<job>_<index>.log`; `results/` must be on a
//! filesystem every node shares, and the `runner` binary at the same path on every node.

use crate::errln;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::{
    Executor, Pending, PlannedRun, Recorder, Summary, lock_or_leave, prepare, record_of, run_one,
};
use crate::track::records::{self, RecordsFile};
use crate::track::{self, Event, Tracker};

/// What `--executor slurm` was given.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// At most this many tasks at once (`--array=...%N`).
    pub max_parallel: Option<usize>,
    /// Passed to `sbatch` as they are (e.g. `--time=2:00:00`).
    pub sbatch_args: Vec<String>,
    /// Block until the array ends, then collect.
    pub wait: bool,
}

/// A submitted grid: what task i runs is `runs[i]`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    pub experiment: String,
    /// Slurm's job id, once submitted.
    pub job_id: Option<String>,
    pub runs: Vec<Pending>,
    /// The sweep's `[search.prune]` and the runs it compares, once for all tasks.
    #[serde(default)]
    pub pruning: Option<super::prune::Pruning>,
    /// When it was submitted (seconds since the epoch; 0 in plans written before this was).
    #[serde(default)]
    pub submitted_at: f64,
}

fn slurm_dir(results: &Path, experiment: &str) -> PathBuf {
    results.join(experiment).join("slurm")
}

fn task_id(job: &str, index: usize) -> String {
    format!("{job}_{index}")
}

/// Whether squeue's `task` (`<job>_<index>`) belongs to `job`.
fn of_job(task: &str, job: &str) -> bool {
    task.strip_prefix(job)
        .is_some_and(|rest| rest.starts_with('_'))
}

/// The largest plan read: a million grid points' configs take about a gigabyte.
const MAX_PLAN_BYTES: u64 = 1 << 30;
/// How much of a task's log [`log_tail`] reads, from its end.
const LOG_TAIL_BYTES: u64 = 64 << 10;

fn read_plan(path: &Path) -> Result<Plan> {
    // Not a regular file (a FIFO named like a plan would block every `--collect`) is refused.
    let text = crate::fsutil::read_regular_file(path, MAX_PLAN_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{}: not a plan", path.display()))
}

impl Recorder for RecordsFile {
    fn record(&self, event: Event) -> Result<(), String> {
        self.write(event)
    }
}

/// Submits the pending points as one job array.
pub struct SlurmExecutor {
    pub options: SlurmOptions,
    pub results: PathBuf,
    pub stop: Arc<AtomicBool>,
    /// Passed to the tasks as GANRUNNER_DEVICE.
    pub device: crate::backend::DeviceChoice,
}

fn run_checked(command: &mut Command) -> Result<String> {
    let name = command.get_program().to_string_lossy().into_owned();
    let output = command
        .output()
        .with_context(|| format!("running `{name}` (is Slurm installed on this machine?)"))?;
    if !output.status.success() {
        bail!(
            "`{name}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `path` as one word of a POSIX shell command line: single-quoted, its own single quotes
/// closed, escaped and reopened (a project under `/home/o'brien/my runs` is a path like any).
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

impl Executor for SlurmExecutor {
    fn execute(
        &self,
        experiment: &str,
        runs: Vec<PlannedRun>,
        force: bool,
        tracker: &Tracker,
    ) -> Result<Summary> {
        if runs.is_empty() {
            return Ok(Summary::default());
        }
        let pruning = runs.first().and_then(|r| r.pruning.as_deref().cloned());
        let mut summary = Summary::default();
        let mut pending = Vec::new();
        for run in runs {
            // A process training in the directory right now keeps it (its lock is held only
            // while the directory is made ready: each task takes it again).
            let Some(lock) = lock_or_leave(experiment, &run)? else {
                summary.held += 1;
                continue;
            };
            pending.push(prepare(run, force, &lock)?);
        }
        if pending.is_empty() {
            return Ok(summary);
        }
        // Train (or check) the evaluator's classifier here, once, rather than in every task.
        let data_dirs: BTreeSet<PathBuf> = pending
            .iter()
            .map(|p| &p.run.point.config)
            .filter(|c| c.log.eval_samples > 0)
            .map(|c| c.data.resolved_dir())
            .collect();
        for dir in data_dirs {
            crate::eval::classifier::Classifier::load_or_train(&dir, &mut |l| errln!("{l}"))?;
        }
        let dir = std::path::absolute(slurm_dir(&self.results, experiment))?;
        crate::fsutil::create_dir_all(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let plan_path = dir.join(format!("plan-{stamp}.json"));
        let mut plan = Plan {
            experiment: experiment.to_string(),
            job_id: None,
            runs: pending,
            pruning,
            submitted_at: track::now(),
        };
        let write_plan = |plan: &Plan| -> Result<()> {
            crate::fsutil::write_atomic(&plan_path, &serde_json::to_vec_pretty(plan)?)
                .with_context(|| format!("writing {}", plan_path.display()))
        };
        write_plan(&plan)?;
        let script = dir.join(format!("plan-{stamp}.sbatch"));
        let exe = std::env::current_exe().context("locating the runner binary")?;
        let cwd = std::env::current_dir()?;
        let throttle = self
            .options
            .max_parallel
            .map(|n| format!("%{n}"))
            .unwrap_or_default();
        let mut lines = vec![
            "#!/bin/sh".to_string(),
            format!("#SBATCH --job-name=ganrunner-{experiment}"),
            format!("#SBATCH --array=0-{}{throttle}", plan.runs.len() - 1),
        ];
        if let Some(partition) = &self.options.partition {
            lines.push(format!("#SBATCH --partition={partition}"));
        }
        lines.push(format!("export GANRUNNER_DEVICE={}", self.device.flag()));
        // The tasks convolve, step Adam and read their losses as this sweep does, whatever
        // the nodes' environment says.
        let conv = crate::backend::gpu_conv();
        lines.push(format!("export GANRUNNER_GPU_CONV={}", conv.value()));
        let adam = crate::backend::gpu_adam_value();
        lines.push(format!("export GANRUNNER_GPU_ADAM={adam}"));
        let read_every = crate::backend::read_every();
        lines.push(format!("export GANRUNNER_READ_EVERY={read_every}"));
        lines.push(format!(
            "exec {} slurm-task {} \"$SLURM_ARRAY_TASK_ID\"",
            sh_quote(&exe),
            sh_quote(&plan_path)
        ));
        crate::fsutil::write_atomic(&script, (lines.join("\n") + "\n").as_bytes())?;
        // The paths go to sbatch as arguments rather than `#SBATCH` lines, whose own parser
        // splits at spaces; the user's `--sbatch-arg`s come after, so they win.
        let submitted = run_checked(
            Command::new("sbatch")
                .arg("--parsable")
                .arg(format!("--output={}/%A_%a.log", dir.display()))
                .arg(format!("--chdir={}", cwd.display()))
                .args(&self.options.sbatch_args)
                .arg(&script),
        )
        .and_then(|out| {
            let job = out.trim().split(';').next().unwrap_or_default().to_string();
            anyhow::ensure!(!job.is_empty(), "sbatch printed no job id");
            Ok(job)
        });
        // A refused submission leaves no plan behind to be mistaken for a submitted one.
        let job = submitted.inspect_err(|_| {
            let _ = std::fs::remove_file(&plan_path);
            let _ = std::fs::remove_file(&script);
        })?;
        plan.job_id = Some(job.clone());
        write_plan(&plan)?;
        for (i, p) in plan.runs.iter().enumerate() {
            tracker.send(Event::RunQueued {
                record: record_of(experiment, &p.run),
                slurm_task: task_id(&job, i),
            });
        }
        tracker.flush();
        errln!(
            "submitted Slurm job {job}: {}; logs in {}",
            crate::console::counted(plan.runs.len(), "task"),
            dir.display()
        );
        if !self.options.wait {
            summary.queued = plan.runs.len();
            return Ok(summary);
        }
        wait(&[job], &self.stop)?;
        let statuses = collect(&self.results, experiment, tracker)?;
        for p in &plan.runs {
            summary.count(statuses.get(&p.run.id).map_or("pending", String::as_str));
        }
        Ok(summary)
    }
}

/// The array tasks Slurm still has, pending or running (`<job>_<index>`).
fn queued_tasks() -> Result<BTreeSet<String>> {
    let out = run_checked(Command::new("squeue").args(["-h", "-r", "-o", "%i"]))?;
    Ok(out.lines().map(|l| l.trim().to_string()).collect())
}

/// Blocks until no task of `jobs` is queued, showing how many have ended.
pub fn wait(jobs: &[String], stop: &AtomicBool) -> Result<()> {
    let of_jobs = |queued: &BTreeSet<String>| {
        queued
            .iter()
            .filter(|t| jobs.iter().any(|j| of_job(t, j)))
            .count()
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("template"));
    loop {
        let left = of_jobs(&queued_tasks()?);
        if left == 0 {
            bar.finish_and_clear();
            return Ok(());
        }
        bar.set_message(format!(
            "Slurm job {}: {} queued or running",
            jobs.join(", "),
            crate::console::counted(left, "task")
        ));
        if stop.load(Ordering::Relaxed) {
            bar.finish_and_clear();
            bail!(
                "stopped waiting; the tasks keep running: merge them later with `runner sweep <spec> --executor slurm --collect`"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
        bar.tick();
    }
}

/// The experiment's submitted plans, oldest first. One that cannot be read is left out with a
/// warning (its tasks stay unmerged), so it stops no sweep.
fn plans(results: &Path, experiment: &str) -> Result<Vec<Plan>> {
    let dir = slurm_dir(results, experiment);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    Ok(paths
        .iter()
        .filter_map(|p| {
            read_plan(p)
                .inspect_err(|err| {
                    errln!("warning: {err:#}; its Slurm tasks are not merged (repair or remove it)")
                })
                .ok()
        })
        .collect())
}

/// The job ids of an experiment's plans with tasks still queued.
pub fn outstanding_jobs(results: &Path, experiment: &str) -> Result<Vec<String>> {
    let queued = queued_tasks()?;
    Ok(plans(results, experiment)?
        .into_iter()
        .filter_map(|p| p.job_id)
        .filter(|j| queued.iter().any(|t| of_job(t, j)))
        .collect())
}

/// The last `lines` lines of a task's log, read from its last [`LOG_TAIL_BYTES`] only (a long
/// run's log may be large); empty when it is missing or not a regular file.
fn log_tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let read = || -> std::io::Result<String> {
        let (mut file, len) = crate::fsutil::open_regular_file(path)?;
        let start = len.saturating_sub(LOG_TAIL_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // A read from the middle of the file starts inside a line: drop that part.
        Ok(match text.split_once('\n') {
            Some((_, rest)) if start > 0 => rest.to_string(),
            _ => text,
        })
    };
    let text = read().unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Merges the records of every ended task of the experiment's plans into the database; a run
/// planned more than once is taken from its latest plan. Returns each run's status
/// (`pending` for tasks still queued or running). Asks Slurm only when the experiment has
/// submitted plans.
///
/// Where Slurm does not answer (the results copied to a machine without it), a task counts as
/// ended when its records say so; the others stay queued, with a warning.
pub fn collect(
    results: &Path,
    experiment: &str,
    tracker: &Tracker,
) -> Result<BTreeMap<String, String>> {
    let dir = slurm_dir(results, experiment);
    let mut latest: BTreeMap<String, (String, &Pending, f64)> = BTreeMap::new();
    let plans = plans(results, experiment)?;
    for plan in &plans {
        let Some(job) = &plan.job_id else { continue };
        for (i, pending) in plan.runs.iter().enumerate() {
            let queued = (task_id(job, i), pending, plan.submitted_at);
            latest.insert(pending.run.id.clone(), queued);
        }
    }
    let mut statuses = BTreeMap::new();
    if latest.is_empty() {
        return Ok(statuses);
    }
    let queued = queued_tasks();
    let mut unanswered = 0;
    for (run_id, (task, pending, submitted_at)) in latest {
        if queued.as_ref().is_ok_and(|queued| queued.contains(&task)) {
            statuses.insert(run_id, "pending".to_string());
            continue;
        }
        let records = records::read_checked(&pending.run.run_dir);
        let ended = |line: &records::Line| {
            line.task == task && matches!(line.event, Event::RunEnded { .. })
        };
        if queued.is_err() && !records.lines.iter().any(ended) {
            unanswered += 1;
            statuses.insert(run_id, "pending".to_string());
            continue;
        }
        let log = dir.join(format!("{task}.log"));
        if let Some(damage) = records.damage(&pending.run.run_dir) {
            errln!("run {run_id}: {damage}");
        }
        let lines = records.lines;
        // Another process that worked on the run since this job was submitted (a local sweep
        // that had it then, or trained it again with --force), or trains it now, supersedes
        // the task: that process records the run, and the task's silence says nothing (it found
        // the directory locked, or started nothing).
        let worked_since = lines.iter().any(|line| {
            let at = match line.event {
                Event::RunStarted { at, .. }
                | Event::RunEnded { at, .. }
                | Event::Metric { at, .. } => at,
                _ => return false,
            };
            line.task != task && submitted_at > 0.0 && at > submitted_at
        });
        let task_started = lines.iter().any(|line| line.task == task);
        // (Without creating a directory that is gone: a run deleted since stays deleted.)
        let run_dir = &pending.run.run_dir;
        let training_now =
            || run_dir.is_dir() && crate::fsutil::try_lock_dir(run_dir).is_ok_and(|l| l.is_none());
        if worked_since || (!task_started && training_now()) {
            let status = records::last_status(&lines).unwrap_or_else(|| "running".into());
            statuses.insert(run_id, status);
            continue;
        }
        let mut status = None;
        let mut last_step = 0;
        for line in lines {
            let mut event = line.event;
            if line.task == task {
                match &mut event {
                    Event::Metric { step, .. } => last_step = last_step.max(*step),
                    Event::RunEnded {
                        status: ended,
                        error,
                        ..
                    } => {
                        if let Some(error) = error {
                            *error = format!(
                                "Slurm task {task}: {error}\n--- log tail ---\n{}",
                                log_tail(&log, 15)
                            );
                        }
                        status = Some(ended.clone());
                    }
                    _ => {}
                }
            }
            tracker.send(event);
        }
        if let Some(event) = super::replay_annotations(experiment, &run_id, run_dir) {
            tracker.send(event);
        }
        let status = status.unwrap_or_else(|| {
            // When the task's log last changed (not now), so collecting again changes nothing.
            let ended_at = std::fs::metadata(&log)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or_else(track::now, |d| d.as_secs_f64());
            tracker.send(Event::RunEnded {
                run_id: run_id.clone(),
                status: "failed".into(),
                steps_done: last_step,
                error: Some(format!(
                    "Slurm task {task} ended without finishing (cancelled, out of time, or its node was lost)\n--- log tail ({}) ---\n{}",
                    log.display(),
                    log_tail(&log, 15)
                )),
                at: ended_at,
            });
            "failed".into()
        });
        statuses.insert(run_id, status);
    }
    tracker.flush();
    if let Err(err) = queued
        && unanswered > 0
    {
        errln!(
            "{experiment}: Slurm does not answer here ({err:#}): {} queued as Slurm tasks that \
             recorded no end are left to them; merge them where Slurm answers \
             (runner sweep <spec> --executor slurm --collect)",
            crate::console::counted(unanswered, "run")
        );
    }
    Ok(statuses)
}

/// `runner slurm-task <plan> <index>`: trains one grid point inside a Slurm array task.
pub fn run_task(plan_path: &Path, index: usize) -> Result<()> {
    let plan = read_plan(plan_path)?;
    let Some(pending) = plan.runs.get(index) else {
        bail!(
            "{}: no task {index} (the plan has {})",
            plan_path.display(),
            plan.runs.len()
        );
    };
    let job = std::env::var("SLURM_ARRAY_JOB_ID")
        .ok()
        .or(plan.job_id.clone())
        .unwrap_or_else(|| "local".into());
    // Before anything is written: a process training there (a local sweep started after this
    // job was queued) keeps the run, and its records stay as they are.
    let Some(lock) = lock_or_leave(&plan.experiment, &pending.run)? else {
        return Ok(());
    };
    let mut run = pending.run.clone();
    run.pruning = plan.pruning.clone().map(std::sync::Arc::new);
    // Whether it is fresh is decided now, not at submission: a requeued task resumes from its
    // own checkpoints.
    let pending = &prepare(run, false, &lock)?;
    let recorder = RecordsFile::open(&pending.run.run_dir, task_id(&job, index), pending.fresh)?;
    errln!(
        "{}: run {} (task {}) on {}",
        plan.experiment,
        pending.run.id,
        recorder.task,
        track::hostname()
    );
    let bar = ProgressBar::hidden();
    let status = run_one(
        &plan.experiment,
        pending,
        &recorder,
        &lock,
        bar,
        Arc::new(AtomicBool::new(false)),
    );
    errln!("{}: run {} {status}", plan.experiment, pending.run.id);
    if !matches!(status.as_str(), "finished" | "pruned") {
        bail!("run {} {status}", pending.run.id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell_whatever_they_hold() {
        let path = Path::new("/home/o'brien/my runs/$HOME `x` \"q\"/plan.json");
        let printed = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote(path)))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(printed.stdout).unwrap(),
            path.to_str().unwrap()
        );
    }

    #[test]
    fn a_log_tail_reads_the_end_of_a_large_log_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("1_0.log");
        let text: String = (0..200_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        assert_eq!(log_tail(&log, 2), "line 199998\nline 199999");
        std::fs::write(&log, "only\n").unwrap();
        assert_eq!(log_tail(&log, 15), "only");
        assert_eq!(log_tail(&dir.path().join("gone.log"), 15), "");
        // A FIFO in a log's or a plan's place: nothing read, nothing waited for.
        let fifo = dir.path().join("fifo");
        crate::fsutil::make_fifo(&fifo);
        assert_eq!(log_tail(&fifo, 15), "");
        let err = read_plan(&fifo).unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
    }
}
