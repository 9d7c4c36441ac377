//! The look-ups and SQL pieces that `runs`, `show`, `rm`, `tag` and the report share: a run by
//! its id or a prefix of it, the runs' directories, their tags and their training times.

use std::path::Path;

use anyhow::{Result, bail};

use super::{Rows, run_sql};
use crate::track;

/// SQL for `expr` (of `seconds` and `step`) at run `alias`'s latest logged step with a
/// training time (NULL when it has none, or the database is an older runner's: not `timed`).
pub(crate) fn latest_time_sql(timed: bool, alias: &str, expr: &str) -> String {
    if !timed {
        return "NULL".into();
    }
    // (By the primary key (run_id, step, name) backwards: no scan of every run's rows.)
    format!(
        "(SELECT {expr} FROM metrics m WHERE m.run_id = {alias}.id AND m.seconds IS NOT NULL \
         ORDER BY m.step DESC LIMIT 1)"
    )
}

/// SQL for run `alias`'s latest logged value of the loss `name` (`d_loss`, `g_loss`), NULL
/// when it has none.
pub(crate) fn latest_loss_sql(alias: &str, name: &str) -> String {
    format!(
        "(SELECT value FROM metrics m WHERE m.run_id = {alias}.id AND m.name = '{name}' \
         ORDER BY step DESC LIMIT 1)"
    )
}

/// SQL for run `alias`'s latest evaluation of `metric` (`fid`, ...), NULL when it has none.
pub(crate) fn latest_eval_sql(alias: &str, metric: &str) -> String {
    format!(
        "(SELECT value FROM evals e WHERE e.run_id = {alias}.id AND e.metric = '{metric}' \
         ORDER BY step DESC LIMIT 1)"
    )
}

/// SQL for run `alias`'s time left while its status (`status`, SQL) is `running`: its steps
/// left at its average pace so far (NULL otherwise).
pub(crate) fn time_left_sql(timed: bool, alias: &str, status: &str) -> String {
    let left = latest_time_sql(
        timed,
        alias,
        &format!(
            "CASE WHEN step > 0 AND {alias}.total_steps > step \
             THEN round(seconds / step * ({alias}.total_steps - step), 1) END"
        ),
    );
    format!("CASE WHEN {status} = 'running' THEN {left} END")
}

/// Whether the database records training times (an older runner's does not).
pub(super) fn has_seconds(db: &Path) -> Result<bool> {
    track::has_column(&track::open_read_only(db)?, "metrics", "seconds")
}

/// Whether the database has the `tags` table (see [`track::has_table`]).
pub(super) fn has_tags(db: &Path) -> Result<bool> {
    track::has_table(&track::open_read_only(db)?, "tags")
}

/// SQL for run `alias`'s tags, space-separated in order (NULL without any).
pub(super) fn tags_sql(alias: &str) -> String {
    format!(
        "(SELECT group_concat(tag, ' ') FROM \
           (SELECT tag FROM tags t WHERE t.run_id = {alias}.id ORDER BY tag))"
    )
}

/// SQL that holds when run `alias` has every tag of the JSON array bound at `param` (any run
/// for an empty array or NULL).
pub fn tagged_sql(alias: &str, param: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM json_each({param}) j \
           WHERE j.value NOT IN (SELECT tag FROM tags t WHERE t.run_id = {alias}.id))"
    )
}

/// Every run's id and directory, resolved (symlinks followed when it exists, else made
/// absolute), for comparing with a path a user gave.
pub fn run_dirs(db: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let runs = run_sql(db, "SELECT id, run_dir FROM runs", &[])?;
    runs.rows
        .iter()
        .filter_map(|row| Some((row[0].as_str()?, row[1].as_str()?)))
        .map(|(id, dir)| Ok((id.to_string(), crate::fsutil::resolve_path(Path::new(dir))?)))
        .collect()
}

/// Refuses `name` when `db` has no experiment of that name, naming those it has: a mistyped
/// `--experiment` listed no runs, as if that experiment had none.
pub fn check_experiment(db: &Path, name: &str) -> Result<()> {
    let known = run_sql(
        db,
        "SELECT name FROM experiments UNION SELECT experiment FROM runs ORDER BY 1",
        &[],
    )?;
    let names: Vec<&str> = (known.rows.iter())
        .filter_map(|row| row[0].as_str())
        .collect();
    if names.contains(&name) {
        return Ok(());
    }
    const SHOWN: usize = 20;
    let has = match names.len() {
        0 => "it has none yet".to_string(),
        n if n > SHOWN => format!(
            "it has {}, and {} more",
            names[..SHOWN].join(", "),
            n - SHOWN
        ),
        _ => format!("it has {}", names.join(", ")),
    };
    bail!(
        "no experiment `{}` in {} ({has})",
        crate::console::clipped(name),
        db.display()
    )
}

/// The fewest characters of a run id that name it as a prefix (as git's abbreviations).
const MIN_PREFIX: usize = 4;

/// The `runs` row of the one run whose id is or starts with `run_id` (of at least
/// `MIN_PREFIX` characters), or else, when no run's id does and `run_id` names a directory, of
/// the run trained in it.
pub fn find_run(db: &Path, run_id: &str) -> Result<Rows> {
    // A shorter prefix (an empty argument: a script's unset variable) matched every run, and
    // picked the only one of a database: `runner rm --yes "$ID"` deleted it.
    let prefix = (run_id.chars().count() >= MIN_PREFIX).then_some(run_id);
    // Compared as text, not as a LIKE pattern: `_` and `%` are wildcards there, and SQLite
    // refuses a pattern of more than 50 000 bytes ("LIKE or GLOB pattern too complex").
    let run = run_sql(
        db,
        "SELECT * FROM runs WHERE id = ?1 OR lower(substr(id, 1, length(?2))) = lower(?2)",
        &[&run_id, &prefix],
    )?;
    let shown = crate::console::clipped(run_id);
    match run.rows.len() {
        1 => Ok(run),
        0 if Path::new(run_id).is_dir() => find_run_in(db, Path::new(run_id)),
        0 if prefix.is_none() => bail!(
            "`{shown}` is not a run id, and a prefix of one needs at least {MIN_PREFIX} characters"
        ),
        0 => bail!("no run `{shown}` in {}", db.display()),
        n => bail!("`{shown}` matches {n} runs; give more of the id"),
    }
}

/// The `runs` row of the run whose directory is `dir`.
fn find_run_in(db: &Path, dir: &Path) -> Result<Rows> {
    let wanted = crate::fsutil::resolve_path(dir)?;
    let Some((id, _)) = run_dirs(db)?.into_iter().find(|(_, d)| *d == wanted) else {
        if !crate::train::checkpoint::checkpoints_dir(dir).is_dir() {
            bail!(
                "{}: not a run id, nor a run directory (it has no checkpoints/)",
                dir.display()
            );
        }
        bail!(
            "{}: no run in {} was trained in this directory (`runner train --out` runs are not \
             recorded, nor were `runner train` runs of earlier releases; `generate`, `eval` and \
             `export` take the directory itself)",
            dir.display(),
            db.display()
        );
    };
    run_sql(db, "SELECT * FROM runs WHERE id = ?1", &[&id])
}
