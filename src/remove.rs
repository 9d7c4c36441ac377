//! `runner rm`: deleting runs, their database rows and their files, never one that a live
//! process trains.
//!
//! One run at a time, holding its directory's lock (so no `train`, sweep or Slurm task is
//! writing there): in one write-locked transaction, the database must show no live claim on
//! it (see [`crate::track::claims`]), its directory is renamed out of the way
//! (`.<id>.deleting-<pid>` beside it) and its rows are deleted, both or neither; then the
//! renamed directory is removed. A process killed in between leaves that renamed directory
//! behind, never rows that point to half a run.

use std::path::Path;

use anyhow::{Context, Result, bail};
use rusqlite::TransactionBehavior;

use crate::query::SelectedRun;
use crate::track::claims::{ClaimRow, Owner};

/// How deleting one run went.
#[derive(Debug, PartialEq, Eq)]
pub enum Removed {
    /// Rows and files deleted (`files: false` when its directory was already gone).
    Deleted { files: bool },
    /// Left alone: a live process (or a queued Slurm task) holds it.
    Held { by: String },
}

/// Deletes `target`'s rows from `db` and its directory, unless a live process holds it.
pub fn remove(db: &Path, target: &SelectedRun) -> Result<Removed> {
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

/// Bytes of the files under `dir` (symlinks not followed; 0 when it is not there).
pub fn dir_size(dir: &Path) -> u64 {
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
