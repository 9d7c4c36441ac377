//! Picking runs by id, experiment, tag and status: what `runner rm` deletes and `runner eval`
//! scores.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::{Rows, find_run, run_sql, tagged_sql};

/// A run picked by [`select_runs`].
#[derive(Debug, Clone)]
pub struct SelectedRun {
    pub id: String,
    pub experiment: String,
    pub status: String,
    pub steps_done: u64,
    /// Where it is now (`track::locate`), or as the database records it when it is gone.
    pub run_dir: PathBuf,
}

/// The runs `ids` name (each an id or a unique prefix) and every run of `experiment` (of any,
/// with `tags` but no experiment) that has all of `tags`, those whose status is one of
/// `statuses` (any, when empty), each once, in that order.
pub fn select_runs(
    db: &Path,
    ids: &[String],
    experiment: Option<&str>,
    tags: &[String],
    statuses: &[String],
) -> Result<Vec<SelectedRun>> {
    crate::track::check_statuses(statuses, &[])?;
    let mut selected: Vec<SelectedRun> = Vec::new();
    let mut add = |run: &Rows, i: usize| {
        let text = |column: &str| {
            run.get(i, column)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (id, status) = (text("id"), text("status"));
        let wanted = statuses.is_empty() || statuses.contains(&status);
        if wanted && !selected.iter().any(|t| t.id == id) {
            let recorded = PathBuf::from(text("run_dir"));
            selected.push(SelectedRun {
                id,
                experiment: text("experiment"),
                status,
                steps_done: run
                    .get(i, "steps_done")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0),
                run_dir: crate::track::locate(db, &recorded).unwrap_or(recorded),
            });
        }
    };
    if experiment.is_some() || !tags.is_empty() {
        let tags_json = serde_json::json!(tags).to_string();
        let runs = run_sql(
            db,
            &format!(
                "SELECT * FROM runs r WHERE (?1 IS NULL OR experiment = ?1) AND {} ORDER BY id",
                // (An older runner's database, read-only here, has no tags table to ask.)
                if tags.is_empty() {
                    "?2 = '[]'".into()
                } else {
                    tagged_sql("r", "?2")
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
        add(&find_run(db, id)?, 0);
    }
    Ok(selected)
}
