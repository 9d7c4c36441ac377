//! `runner rm`: deleting runs, their database rows and their files, never one that a live
//! process trains.
//!
//! One run at a time, holding its directory's lock (so no `train`, sweep or Slurm task is
//! writing there): in one write-locked transaction, the database must show no live claim on
//! it (see [`crate::track::claims`]), its directory is renamed out of the way
//! (`.<id>.deleting-<pid>` beside it) and its rows are deleted, both or neither; then the
//! renamed directory is removed. A process killed in between leaves that renamed directory
//! behind, never rows that point to half a run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rusqlite::TransactionBehavior;

use crate::query::Rows;
use crate::track::claims::{ClaimRow, Owner};

/// A run picked for deletion.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub experiment: String,
    pub status: String,
    pub steps_done: u64,
    /// Where it is now (`track::locate`), or as the database records it when it is gone.
    pub run_dir: PathBuf,
    /// Bytes its directory holds (0 when it is not there).
    pub bytes: u64,
}

/// The runs `ids` name (each an id or a unique prefix) and every run of `experiment` (of any,
/// with `tags` but no experiment) that has all of `tags`, those whose status is one of
/// `statuses` (any, when empty), each once.
pub fn select(
    db: &Path,
    ids: &[String],
    experiment: Option<&str>,
    tags: &[String],
    statuses: &[String],
) -> Result<Vec<Target>> {
    crate::track::check_statuses(statuses, &[])?;
    let mut targets: Vec<Target> = Vec::new();
    let mut add = |run: &Rows, i: usize| {
        let text = |column: &str| {
            run.get(i, column)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (id, status) = (text("id"), text("status"));
        let wanted = statuses.is_empty() || statuses.contains(&status);
        if wanted && !targets.iter().any(|t| t.id == id) {
            let recorded = PathBuf::from(text("run_dir"));
            let run_dir = crate::track::locate(db, &recorded).unwrap_or(recorded);
            targets.push(Target {
                id,
                experiment: text("experiment"),
                status,
                steps_done: run
                    .get(i, "steps_done")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
                bytes: dir_size(&run_dir),
                run_dir,
            });
        }
    };
    if experiment.is_some() || !tags.is_empty() {
        let tags_json = serde_json::json!(tags).to_string();
        let runs = crate::query::run_sql(
            db,
            &format!(
                "SELECT * FROM runs r WHERE (?1 IS NULL OR experiment = ?1) AND {} ORDER BY id",
                // (An older runner's database, read-only here, has no tags table to ask.)
                if tags.is_empty() {
                    "?2 = '[]'".into()
                } else {
                    crate::query::tagged_sql("r", "?2")
                }
            ),
            &[&experiment, &tags_json],
        )?;
        if runs.rows.is_empty() {
            let tagged = if tags.is_empty() {
                String::new()
            } else {
                format!(" tagged {}", tags.join(" and "))
            };
            match experiment {
                Some(experiment) => {
                    bail!(
                        "no runs of experiment `{experiment}`{tagged} in {}",
                        db.display()
                    )
                }
                None => bail!("no runs{tagged} in {}", db.display()),
            }
        }
        (0..runs.rows.len()).for_each(|i| add(&runs, i));
    }
    for id in ids {
        add(&crate::query::find_run(db, id)?, 0);
    }
    Ok(targets)
}

/// How deleting one run went.
#[derive(Debug, PartialEq, Eq)]
pub enum Removed {
    /// Rows and files deleted (`files: false` when its directory was already gone).
    Deleted { files: bool },
    /// Left alone: a live process (or a queued Slurm task) holds it.
    Held { by: String },
}

/// Deletes `target`'s rows from `db` and its directory, unless a live process holds it.
pub fn remove(db: &Path, target: &Target) -> Result<Removed> {
    let dir = &target.run_dir;
    // A database row names the directory; delete only what is plainly that run's.
    if dir.file_name().and_then(|n| n.to_str()) != Some(target.id.as_str()) {
        bail!(
            "run {}: its directory {} is not named after it; delete it by hand",
            target.id,
            dir.display()
        );
    }
    let kind = dir.symlink_metadata().map(|m| m.file_type());
    if kind.as_ref().is_ok_and(|k| k.is_symlink()) {
        bail!(
            "run {}: its directory {} is a symbolic link; delete it by hand",
            target.id,
            dir.display()
        );
    }
    let exists = kind.is_ok_and(|k| k.is_dir());
    let _lock = if exists {
        match crate::fsutil::try_lock_dir_patiently(dir)? {
            Some(lock) => Some(lock),
            None => {
                return Ok(Removed::Held {
                    by: "a process training in its directory".into(),
                });
            }
        }
    } else {
        None
    };
    let mut conn = crate::track::open(db)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(row) = ClaimRow::read(&tx, &target.id)?
        && let Some(by) = row.holder(&Owner::this_process().tag(), crate::track::now())
    {
        return Ok(Removed::Held { by: by.to_string() });
    }
    let trash = crate::fsutil::hidden_sibling(dir, &format!("deleting-{}", std::process::id()));
    if exists {
        std::fs::rename(dir, &trash)
            .with_context(|| format!("moving {} to {}", dir.display(), trash.display()))?;
    }
    let deleted = (|| -> rusqlite::Result<()> {
        tx.execute("DELETE FROM runs WHERE id = ?1", [&target.id])?;
        tx.execute(
            "DELETE FROM experiments WHERE name = ?1 \
             AND NOT EXISTS (SELECT 1 FROM runs WHERE experiment = ?1)",
            [&target.experiment],
        )?;
        tx.commit()
    })();
    if let Err(err) = deleted {
        if exists {
            // The rows stay, so the files do too.
            std::fs::rename(&trash, dir)
                .with_context(|| format!("moving {} back to {}", trash.display(), dir.display()))?;
        }
        return Err(err)
            .with_context(|| format!("deleting run {} from {}", target.id, db.display()));
    }
    if exists {
        std::fs::remove_dir_all(&trash).with_context(|| format!("removing {}", trash.display()))?;
        // The experiment's directory goes with its last run (and only then: remove_dir
        // refuses a directory that holds anything).
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(Removed::Deleted { files: exists })
}

/// Bytes of the files under `dir` (symlinks not followed).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
