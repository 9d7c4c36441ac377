//! A run directory: what training writes into it ([`CONFIG_FILE`], losses, records, samples,
//! checkpoints, its best state, and its `.lock`), and the places other commands' outputs must
//! not go, since they would replace what a run wrote or go with it on `runner rm`.

use std::path::{Path, PathBuf};

use super::checkpoint;

/// The run directory's copy of its config, written before its first step.
pub const CONFIG_FILE: &str = "config.toml";

/// Refuses a run directory a user names (`train --out`) that holds files but none of a run's
/// (its `.lock`, taken by every attempt before it writes anything, or `checkpoints/`):
/// training writes `config.toml`, `losses.csv` and `best/` there, and would replace the
/// user's own. (Sweeps name their own directories, `<results>/<experiment>/<run id>`.)
pub fn refuse_foreign_dir(run_dir: &Path) -> anyhow::Result<()> {
    if let Some(file) = crate::fsutil::file_in_the_way(run_dir) {
        anyhow::bail!(
            "{}: is a file, not a directory; training needs a new or empty directory there",
            file.display()
        );
    }
    let Ok(mut entries) = std::fs::read_dir(run_dir) else {
        return Ok(()); // Absent: created next.
    };
    let ours = run_dir.join(crate::fsutil::LOCK_FILE).exists()
        || checkpoint::checkpoints_dir(run_dir).is_dir();
    anyhow::ensure!(
        ours || entries.next().is_none(),
        "{}: holds files and is not a run directory (no .lock or checkpoints/); training writes \
         config.toml, losses.csv and best/ into its directory, so give a new or empty one",
        run_dir.display()
    );
    Ok(())
}

/// What training (and, `records.jsonl`, its executor; `annotations.json`, `runner tag`)
/// writes into a run directory, besides hidden entries (its lock, temporaries).
const RUN_ENTRIES: [&str; 7] = [
    CONFIG_FILE,
    "losses.csv",
    "records.jsonl",
    "annotations.json",
    "samples",
    "checkpoints",
    "best",
];

/// Whether an entry of a run directory, by name, is the run's own: one of [`RUN_ENTRIES`] or
/// hidden.
fn is_runs_own(name: &str) -> bool {
    name.starts_with('.') || RUN_ENTRIES.contains(&name)
}

/// The entries of `run_dir` that training did not write: what a user saved there
/// (`generate --out` into it, notes), which starting the run over keeps. Hidden entries are
/// the run's (its lock, temporaries).
pub fn users_entries(run_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(run_dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !is_runs_own(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// The run directory `path` lies in, if any, and `path` relative to it (symlinks and `..`
/// followed).
fn enclosing_run_dir(path: &Path) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
    let resolved = crate::fsutil::resolve_path(path)?;
    // A run directory has its lock file and its config (written before its first step).
    let is_run_dir = |dir: &Path| {
        dir.join(crate::fsutil::LOCK_FILE).is_file() && dir.join(CONFIG_FILE).is_file()
    };
    Ok(resolved
        .ancestors()
        .skip(1)
        .find(|dir| is_run_dir(dir))
        .map(|dir| {
            let inner = resolved
                .strip_prefix(dir)
                .unwrap_or(&resolved)
                .to_path_buf();
            (dir.to_path_buf(), inner)
        }))
}

/// Refuses `path` (a new run directory, a results directory or a database) inside a run
/// directory: `runner rm` deletes a run's directory whole, with whatever it holds.
pub fn refuse_inside_run_dir(path: &Path) -> anyhow::Result<()> {
    if let Some((run_dir, _)) = enclosing_run_dir(path)? {
        anyhow::bail!(
            "{}: lies inside the run directory {}, which `runner rm` deletes whole; choose a \
             place outside it",
            path.display(),
            run_dir.display()
        );
    }
    Ok(())
}

/// Refuses an output file (`generate --out`, `export --out`) among what training writes into a
/// run directory (its config, losses, records, samples, checkpoints, best state and hidden
/// files): `generate --out <run>/samples/step-00000000.png` replaced the run's grid. Beside
/// them (`<run>/grid.png`) is the user's.
pub fn refuse_run_entry(path: &Path) -> anyhow::Result<()> {
    let Some((run_dir, inner)) = enclosing_run_dir(path)? else {
        return Ok(());
    };
    let first = inner
        .iter()
        .next()
        .and_then(|name| name.to_str())
        .unwrap_or("");
    anyhow::ensure!(
        !is_runs_own(first),
        "{}: is the run's own `{first}` in {} (what its training writes); write it elsewhere",
        path.display(),
        run_dir.display()
    );
    Ok(())
}
