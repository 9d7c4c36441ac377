//! `runner compare`: runs side by side, one column each: their progress, losses and scores, and
//! the settings that tell them apart.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use serde_json::Value;

use super::sql::{find_run, has_seconds, has_tags, latest_loss_sql, latest_time_sql, tags_sql};
use super::{Format, Rows, json_text, run_sql, varied_keys};
use crate::track;

/// What a run's record says, in the order rows show it.
const RECORD: [&str; 13] = [
    "experiment",
    "status",
    "steps",
    "total_steps",
    "runtime",
    "d_loss",
    "g_loss",
    "best_fid",
    "best_fid_step",
    "eval_step",
    "tags",
    "note",
    "error",
];

/// Record fields shown only where the runs differ in them: why two runs of one config may
/// differ (other data files, another release of the runner, another machine, device or CPU
/// kernels).
const PROVENANCE: [&str; 5] = ["data_id", "version", "host", "backend", "kernels"];

/// `runner compare`: the runs `given` names (ids, unique prefixes or run directories; at least
/// two different runs), as a table or CSV with one row per field and one column per run, or
/// as JSON with one object per run. The fields: the record (`RECORD`; those empty in every
/// run left out), every score of each run's last evaluation, the `PROVENANCE` fields where
/// the runs differ, and the settings that differ between them (every setting with
/// `every_setting`).
pub fn compare(db: &Path, given: &[String], every_setting: bool, format: Format) -> Result<String> {
    let mut runs: Vec<RunFields> = Vec::new();
    for run in given {
        let found = find_run(db, run)?;
        let id = found.get(0, "id").and_then(Value::as_str);
        if !runs.iter().any(|known| Some(known.id.as_str()) == id) {
            runs.push(fields(db, &found)?);
        }
    }
    if runs.len() < 2 {
        bail!(
            "{} all name run {}: give two or more runs to compare",
            given.join(" "),
            runs[0].id
        );
    }
    // Field names in order: the record, scores, provenance, then settings.
    let mut names: Vec<String> = RECORD.iter().map(|s| s.to_string()).collect();
    let mut scores: Vec<String> = (runs.iter())
        .flat_map(|run| run.scores.keys().cloned())
        .collect();
    scores.sort_by_key(|name| {
        let headline = crate::eval::HEADLINE.iter().position(|h| h == name);
        (headline.unwrap_or(usize::MAX), name.clone())
    });
    scores.dedup();
    // (After the last evaluation's step, before the tags.)
    let at = 1 + names.iter().position(|n| n == "eval_step").expect("listed");
    names.splice(at..at, scores);
    names.extend(
        (PROVENANCE.iter())
            .filter(|name| {
                let values: Vec<Option<&Value>> =
                    runs.iter().map(|run| run.record.get(**name)).collect();
                values.windows(2).any(|pair| pair[0] != pair[1])
            })
            .map(|name| name.to_string()),
    );
    let settings: Vec<String> = if every_setting {
        let keys: std::collections::BTreeSet<&String> =
            runs.iter().flat_map(|run| run.settings.keys()).collect();
        keys.into_iter().cloned().collect()
    } else {
        let as_text: Vec<BTreeMap<String, String>> = (runs.iter())
            .map(|run| {
                (run.settings.iter())
                    .map(|(key, value)| (key.clone(), json_text(value)))
                    .collect()
            })
            .collect();
        varied_keys(as_text.iter(), json_text)
    };
    let value_of = |run: &RunFields, name: &str| -> Value {
        run.record
            .get(name)
            .or_else(|| run.scores.get(name))
            .or_else(|| run.settings.get(name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    // A record field or score no run has (a note, an evaluation) is left out.
    names.retain(|name| runs.iter().any(|run| !value_of(run, name).is_null()));
    names.extend(settings);
    let mut by_run = Rows {
        columns: std::iter::once("run".to_string())
            .chain(names.iter().cloned())
            .collect(),
        rows: (runs.iter())
            .map(|run| {
                std::iter::once(Value::from(run.id.clone()))
                    .chain(names.iter().map(|name| value_of(run, name)))
                    .collect()
            })
            .collect(),
    };
    if format == Format::Json {
        return by_run.render(format);
    }
    if format == Format::Table {
        by_run.durations_as_clock(&["runtime"]);
    }
    // One row per field, one column per run.
    let side_by_side = Rows {
        columns: std::iter::once("run".to_string())
            .chain(runs.iter().map(|run| run.id.clone()))
            .collect(),
        rows: (names.iter().enumerate())
            .map(|(i, name)| {
                std::iter::once(Value::from(name.clone()))
                    .chain(by_run.rows.iter().map(|row| row[i + 1].clone()))
                    .collect()
            })
            .collect(),
    };
    side_by_side.render(format)
}

/// One run's fields: its record, its last evaluation's scores and its settings.
struct RunFields {
    id: String,
    record: BTreeMap<String, Value>,
    scores: BTreeMap<String, Value>,
    settings: BTreeMap<String, Value>,
}

/// The fields of the run whose `runs` row `found` holds ([`find_run`]'s look-up).
fn fields(db: &Path, found: &Rows) -> Result<RunFields> {
    let mut record: BTreeMap<String, Value> = (found.columns.iter().cloned())
        .zip(found.rows[0].iter().cloned())
        .collect();
    let id = record
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let config = record
        .remove("config")
        .and_then(|text| serde_json::from_str(text.as_str()?).ok())
        .unwrap_or_default();
    let settings = crate::spec::flatten_params(&crate::spec::with_defaults(config))
        .into_iter()
        // Where the data lies is no setting (`data_id` says whether it is the same data).
        .filter(|(key, _)| key != "data.dir")
        .collect();
    // (Older runners' databases, read-only here, lack the training times and tags.)
    let derived = run_sql(
        db,
        &format!(
            "SELECT {status} AS status, r.steps_done AS steps, {runtime} AS runtime,
                    {d_loss} AS d_loss, {g_loss} AS g_loss, {tags} AS tags,
                    (SELECT value FROM evals e WHERE e.run_id = r.id AND e.metric = 'fid'
                     ORDER BY value, step LIMIT 1) AS best_fid,
                    (SELECT step FROM evals e WHERE e.run_id = r.id AND e.metric = 'fid'
                     ORDER BY value, step LIMIT 1) AS best_fid_step,
                    (SELECT max(step) FROM evals e WHERE e.run_id = r.id) AS eval_step
             FROM runs r WHERE r.id = ?1",
            status = track::claims::status_sql("r"),
            runtime = latest_time_sql(has_seconds(db)?, "r", "seconds"),
            d_loss = latest_loss_sql("r", "d_loss"),
            g_loss = latest_loss_sql("r", "g_loss"),
            tags = if has_tags(db)? {
                tags_sql("r")
            } else {
                "NULL".into()
            },
        ),
        &[&id],
    )?;
    record.extend((derived.columns.iter().cloned()).zip(derived.run_row(&id, db)?.iter().cloned()));
    let scores = run_sql(
        db,
        "SELECT metric, value FROM evals WHERE run_id = ?1 \
         AND step = (SELECT max(step) FROM evals WHERE run_id = ?1)",
        &[&id],
    )?;
    let scores = (scores.rows.into_iter())
        .filter_map(|row| Some((row[0].as_str()?.to_string(), row[1].clone())))
        .collect();
    Ok(RunFields {
        id,
        record,
        scores,
        settings,
    })
}
