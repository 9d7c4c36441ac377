//! Longer runs start where shorter ones ended. A new run whose config an experiment already
//! trained for fewer steps (the same config, on the same data, but a smaller `train.steps`)
//! starts from that run's last checkpoint instead of step 0. With a learning rate that does
//! not depend on the length of training (`lr_decay = "none"`), each step depends only on the
//! config, the data and (seed, step), so its first steps are the shorter run's, bitwise; the
//! shorter run's history (losses, grids, evaluations, checkpoints, best state, and what it
//! logged at its end) is copied in as the new run's own, and the shorter run is left as it
//! was. Its rung decisions stay behind: they compared it with its own sweep's runs.
//!
//! The copy is made under the new run's directory lock, files first and its `records.jsonl`
//! last: a copy cut short (a kill, a full disk) leaves checkpoints without records, which the
//! next sweep moves aside and trains afresh, never a history that is half someone else's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rusqlite::Connection;

use super::PlannedRun;
use crate::spec::{LrDecay, RunConfig};
use crate::track::{self, Event, RunRecord, records};
use crate::train::checkpoint;

/// Why a longer run with `lr_decay` trains from step 0 rather than going on from the shorter
/// run of its config (`Finished::passed_over_for_decay`).
pub const DECAY_RESTARTS: &str = "`train.lr_decay` fits the learning rate to a run's length, so \
                                  their first steps differ";

/// A finished run that a planned run can continue.
pub struct Shorter {
    pub id: String,
    config: RunConfig,
    data_id: String,
    /// Its directory as the database records it (the prefix of the paths in its records).
    recorded_dir: PathBuf,
    pub steps: u64,
    /// The runner that trained it (none: a release that did not record it).
    pub version: Option<String>,
}

/// An experiment's finished runs, read once for all the runs a sweep plans.
pub struct Finished(Vec<Shorter>);

impl Finished {
    pub fn of(conn: &Connection, experiment: &str) -> Result<Finished> {
        let mut statement = conn.prepare(&format!(
            "SELECT id, config, data_id, run_dir, steps_done, {} FROM runs \
             WHERE experiment = ?1 AND status = 'finished' AND steps_done > 0 \
             ORDER BY steps_done DESC, id",
            // (`--dry-run` may read an older runner's database where it cannot upgrade it.)
            track::runs_column_sql(conn, "runs", "version")?
        ))?;
        let rows = statement.query_map([experiment], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Option<String>>(5)?,
            ))
        })?;
        let mut runs = Vec::new();
        for row in rows {
            let (id, config, data_id, recorded_dir, steps, version) = row?;
            // (Keys added since it was recorded take their defaults.)
            if let Ok(config) = serde_json::from_str::<RunConfig>(&config) {
                runs.push(Shorter {
                    id,
                    config,
                    data_id: data_id.unwrap_or_default(),
                    recorded_dir: PathBuf::from(recorded_dir),
                    steps: steps as u64,
                    version,
                });
            }
        }
        Ok(Finished(runs))
    }

    /// The run `run`, new (no directory yet), can continue: the same training but for the
    /// length, on the same data, shorter, with its last checkpoint whole where it lies now
    /// (found from `db`); the longest such run. `None` when there is none, or when the
    /// learning rate depends on the length (`lr_decay`), or the run is set in epochs.
    pub fn shorter_run(&self, db: &Path, run: &PlannedRun) -> Option<(&Shorter, PathBuf)> {
        if run.point.config.train.lr_decay != LrDecay::None {
            return None;
        }
        self.same_but_shorter(run)?.find_map(|shorter| {
            let dir = track::locate(db, &shorter.recorded_dir)?;
            let last = checkpoint::list(&dir).pop().map(|(step, _)| step);
            (last == Some(shorter.steps) && checkpoint::newest_is_intact(&dir))
                .then_some((shorter, dir))
        })
    }

    /// The longest finished shorter run of `run`'s config that `run`, new, cannot continue
    /// because its learning rate decays over its length (`lr_decay`): their first steps
    /// differ, so `run` trains from step 0, which its user would not otherwise guess.
    pub fn passed_over_for_decay(&self, run: &PlannedRun) -> Option<&Shorter> {
        if run.point.config.train.lr_decay == LrDecay::None {
            return None;
        }
        self.same_but_shorter(run)?.next()
    }

    /// The finished runs of `run`'s config on its data, but shorter, longest first; none when
    /// `run` has a directory already (it is not new) or is set in epochs.
    fn same_but_shorter<'a>(
        &'a self,
        run: &PlannedRun,
    ) -> Option<impl Iterator<Item = &'a Shorter>> {
        let config = &run.point.config;
        let steps = config.train.steps?;
        if run.run_dir.exists() {
            return None;
        }
        Some(self.0.iter().filter(move |shorter| {
            shorter.steps < steps
                && shorter.id != run.id
                && shorter.data_id == run.data_id
                && checkpoint::same_training(&shorter.config, config)
        }))
    }
}

/// Copies `shorter`'s state and history (from `shorter_dir`, where it lies now) into `run`'s
/// new directory, as `run`'s own (under `experiment`), so that the run resumes at
/// `shorter.steps`. On an error the directory is left empty, for the run to train from step 0.
pub fn continue_from(
    experiment: &str,
    run: &PlannedRun,
    shorter: &Shorter,
    shorter_dir: &Path,
) -> Result<()> {
    let lock = crate::fsutil::lock_dir(&run.run_dir)?;
    // Another sweep of the same spec may have made the copy since this one planned the run.
    if records::path(&run.run_dir).exists() {
        return Ok(());
    }
    let copied = copy_history(experiment, run, shorter, shorter_dir);
    if copied.is_err() {
        lock.clear(&[])?;
    }
    copied
}

fn copy_history(
    experiment: &str,
    run: &PlannedRun,
    shorter: &Shorter,
    shorter_dir: &Path,
) -> Result<()> {
    let to = &run.run_dir;
    for (_, dir) in checkpoint::list(shorter_dir) {
        let name = dir.file_name().expect("a checkpoint's name");
        copy_dir(&dir, &checkpoint::checkpoints_dir(to).join(name))?;
    }
    for dir in ["samples", "best"] {
        if shorter_dir.join(dir).is_dir() {
            copy_dir(&shorter_dir.join(dir), &to.join(dir))?;
        }
    }
    let losses = shorter_dir.join("losses.csv");
    if losses.is_file() {
        std::fs::copy(&losses, to.join("losses.csv"))
            .with_context(|| format!("copying {}", losses.display()))?;
    }
    // Its events, as this run's: its id, its files, and the record of its own config.
    let record = super::record_of(experiment, run);
    let moved = |path: &str| -> Result<String> {
        let rest = Path::new(path)
            .strip_prefix(&shorter.recorded_dir)
            .with_context(|| format!("{path} is not in {}", shorter.recorded_dir.display()))?;
        Ok(to.join(rest).display().to_string())
    };
    let records = records::read_checked(shorter_dir);
    if let Some(damage) = records.damage(shorter_dir) {
        bail!("{damage}");
    }
    let mut lines = Vec::new();
    for mut line in records.lines {
        match &mut line.event {
            // (Its sessions keep the runner and the arithmetic that trained them.)
            Event::RunStarted {
                record: started, ..
            } => {
                *started = RunRecord {
                    version: started.version.take(),
                    backend: std::mem::take(&mut started.backend),
                    kernels: started.kernels.take(),
                    ..record.clone()
                }
            }
            Event::Metric { run_id, .. }
            | Event::Eval { run_id, .. }
            | Event::CheckpointRemoved { run_id, .. } => *run_id = run.id.clone(),
            Event::Sample { run_id, path, .. } | Event::Checkpoint { run_id, path, .. } => {
                *run_id = run.id.clone();
                *path = moved(path)?;
            }
            // Rung decisions compared it with its own sweep's runs.
            Event::Flagged { kind, .. } if ["kept", "pruned", "promoted"].contains(&&**kind) => {
                continue;
            }
            Event::Flagged { run_id, .. } => *run_id = run.id.clone(),
            // Its end, its queueing and its tags are its own.
            Event::RunEnded { .. }
            | Event::RunQueued { .. }
            | Event::Annotated { .. }
            | Event::Experiment { .. } => continue,
        }
        lines.push(line);
    }
    if !lines
        .iter()
        .any(|line| matches!(line.event, Event::RunStarted { .. }))
    {
        bail!("{}: no start in its records", shorter_dir.display());
    }
    lines.push(records::Line {
        task: format!("continued:{}", shorter.id),
        event: Event::Flagged {
            run_id: run.id.clone(),
            step: shorter.steps,
            kind: "continues".into(),
            detail: format!(
                "run {} (the same config, trained for {} steps): its steps are this run's first",
                shorter.id, shorter.steps
            ),
            at: track::now(),
        },
    });
    let mut text = String::new();
    for line in &lines {
        text.push_str(&serde_json::to_string(line)?);
        text.push('\n');
    }
    crate::fsutil::write_atomic(&records::path(to), text.as_bytes())
        .with_context(|| format!("writing {}", records::path(to).display()))
}

/// Copies `from` and everything in it into the new directory `to`.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    crate::fsutil::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let path = entry?.path();
        let target = to.join(path.file_name().expect("an entry's name"));
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target)
                .with_context(|| format!("copying {} to {}", path.display(), target.display()))?;
        }
    }
    Ok(())
}
