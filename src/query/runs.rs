//! `runner runs`: every run with its status, progress, training time, losses, scores, the
//! settings that tell it apart and its tags.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};

use super::sql::{
    has_seconds, has_tags, latest_eval_sql, latest_loss_sql, latest_time_sql, tagged_sql, tags_sql,
    time_left_sql,
};
use super::{Rows, run_sql};
use crate::track;

/// How `runner runs` orders its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunOrder {
    /// By experiment, then start time (the default).
    Started,
    /// Lowest best LeNet-FID first (runs without one last).
    #[value(name = "best_fid", alias = "best-fid")]
    BestFid,
    /// Lowest last LeNet-FID first.
    Fid,
    /// Most steps done first.
    Steps,
    /// Longest training time first (runs without one last).
    Runtime,
}

/// `runner runs`: every run (of `experiment`; with one of `statuses`, as shown, `orphaned`
/// included; with every one of `tags`) with its status, progress, training time (and time
/// left), latest losses, its last and best LeNet-FID, and its tags.
pub fn runs(
    db: &Path,
    experiment: Option<&str>,
    statuses: &[String],
    tags: &[String],
    order: RunOrder,
) -> Result<Rows> {
    track::check_statuses(statuses, &["orphaned"])?;
    let tags = (!tags.is_empty()).then(|| serde_json::json!(tags).to_string());
    let order = match order {
        RunOrder::Started => "r.experiment, r.started_at, r.id",
        RunOrder::BestFid => "best_fid IS NULL, best_fid, r.id",
        RunOrder::Fid => "fid IS NULL, fid, r.id",
        RunOrder::Steps => "steps DESC, r.id",
        RunOrder::Runtime => "runtime IS NULL, runtime DESC, r.id",
    };
    let statuses = (!statuses.is_empty()).then(|| serde_json::json!(statuses).to_string());
    let status = track::claims::status_sql("r");
    let (tags_of, tagged) = if has_tags(db)? {
        (tags_sql("r"), tagged_sql("r", "?3"))
    } else if tags.is_some() {
        bail!(
            "{}: an older runner's database, read-only here: it has no tags",
            db.display()
        )
    } else {
        ("NULL".into(), "?3 IS NULL".into())
    };
    let timed = has_seconds(db)?;
    // (Unrounded: the table's h:mm:ss rounds it once, as every other place that shows it.)
    let runtime = latest_time_sql(timed, "r", "seconds");
    let eta = time_left_sql(timed, "r", &status);
    let (d_loss, g_loss) = (
        latest_loss_sql("r", "d_loss"),
        latest_loss_sql("r", "g_loss"),
    );
    let fid = latest_eval_sql("r", "fid");
    let mut listed = run_sql(
        db,
        &format!("SELECT r.experiment, r.id AS run, {status} AS status, r.steps_done AS steps,
                {runtime} AS runtime,
                {eta} AS eta,
                {d_loss} AS d_loss,
                {g_loss} AS g_loss,
                round({fid}, 3) AS fid,
                (SELECT round(min(value), 3) FROM evals e WHERE e.run_id = r.id AND e.metric = 'fid') AS best_fid,
                {tags_of} AS tags,
                r.finished_at, r.error
         FROM runs r
         WHERE (?1 IS NULL OR r.experiment = ?1)
           AND (?2 IS NULL OR {status} IN (SELECT value FROM json_each(?2)))
           AND {tagged}
         ORDER BY {order}"
        ),
        &[&experiment, &statuses, &tags],
    )?;
    // What tells an experiment's runs apart, beside their scores.
    let settings = varied_settings(db, experiment)?;
    let at = 1 + listed
        .columns
        .iter()
        .position(|c| c == "best_fid")
        .expect("selected");
    listed.columns.insert(at, "config".into());
    for row in &mut listed.rows {
        let id = row[1].as_str().unwrap_or_default();
        let config = settings.get(id).cloned().unwrap_or_default();
        row.insert(at, config.into());
    }
    Ok(listed)
}

/// For each run of `experiment` (of every experiment without one): the settings its
/// experiment varies ([`varied_keys`]), as `key=value` items in key order, as `runs --group`
/// shows them.
fn varied_settings(
    db: &Path,
    experiment: Option<&str>,
) -> Result<std::collections::HashMap<String, String>> {
    let recorded = run_sql(
        db,
        "SELECT experiment, id, config FROM runs WHERE ?1 IS NULL OR experiment = ?1",
        &[&experiment],
    )?;
    // experiment -> run -> key -> value
    type Settings = BTreeMap<String, String>;
    let mut experiments: BTreeMap<&str, Vec<(&str, Settings)>> = BTreeMap::new();
    for row in &recorded.rows {
        let (Some(name), Some(id)) = (row[0].as_str(), row[1].as_str()) else {
            continue;
        };
        let config = row[2]
            .as_str()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let settings = crate::spec::flatten_params(&crate::spec::with_defaults(config))
            .into_iter()
            .map(|(key, value)| (key, value.to_string()))
            .collect();
        experiments.entry(name).or_default().push((id, settings));
    }
    let mut out = std::collections::HashMap::new();
    for runs in experiments.values() {
        let varied = varied_keys(runs.iter().map(|(_, settings)| settings), json_text);
        for (id, settings) in runs {
            let items: Vec<String> = (varied.iter())
                .filter_map(|key| Some(format!("{key}={}", settings.get(key)?)))
                .collect();
            out.insert(id.to_string(), items.join(" "));
        }
    }
    Ok(out)
}

/// A setting's value as JSON text, as `runs`, `compare` and `runs --group` show it.
pub fn json_text(value: &serde_json::Value) -> String {
    value.to_string()
}

/// The config keys whose values differ between runs (each a dotted key -> value map, its
/// values written by `render`), in key order; `data.dir` aside: where the data lies is no
/// setting. A model family's option (`model.*` but `model.arch`) at that family's default
/// reads as unset: between families the defaults differ, and a sweep over `model.arch` varies
/// the architecture, not the vanilla GAN's `g_hidden` beside the DCGAN's `bn_eps`, while an
/// option set away from its family's default (`bn_eps = 1e-5` in one family's runs) still
/// counts.
pub fn varied_keys<'a>(
    runs: impl Iterator<Item = &'a BTreeMap<String, String>> + Clone,
    render: fn(&serde_json::Value) -> String,
) -> Vec<String> {
    use std::collections::BTreeSet;
    // arch -> option -> default, written as the runs' values are.
    let defaults: BTreeMap<String, BTreeMap<String, String>> =
        (crate::model::ModelConfig::families().iter())
            .map(|family| {
                let options: BTreeMap<String, String> =
                    crate::spec::flatten_params(&serde_json::json!({ "model": family }))
                        .into_iter()
                        .map(|(key, value)| (key, render(&value)))
                        .collect();
                (options["model.arch"].clone(), options)
            })
            .collect();
    let setting = |run: &'a BTreeMap<String, String>, key: &str| -> Option<&'a String> {
        let value = run.get(key)?;
        let family_default = (key.starts_with("model.") && key != "model.arch")
            .then(|| defaults.get(run.get("model.arch")?)?.get(key))
            .flatten();
        (family_default != Some(value)).then_some(value)
    };
    let keys: BTreeSet<&String> = runs.clone().flat_map(|r| r.keys()).collect();
    keys.into_iter()
        .filter(|key| key.as_str() != "data.dir")
        .filter(|key| {
            let values: BTreeSet<Option<&String>> =
                runs.clone().map(|run| setting(run, key)).collect();
            values.len() > 1
        })
        .cloned()
        .collect()
}

/// The training time of `experiment`'s runs, in seconds, and how many runs have one (none
/// before any).
pub fn training_time(db: &Path, experiment: &str) -> Result<Option<(f64, usize)>> {
    let rows = run_sql(
        db,
        &format!(
            "SELECT sum(seconds), count(seconds) FROM (SELECT {} AS seconds FROM runs r \
             WHERE r.experiment = ?1)",
            latest_time_sql(has_seconds(db)?, "r", "seconds")
        ),
        &[&experiment],
    )?;
    let (seconds, runs) = (rows.get(0, "sum(seconds)"), rows.get(0, "count(seconds)"));
    Ok(seconds
        .and_then(serde_json::Value::as_f64)
        .zip(runs.and_then(serde_json::Value::as_u64))
        .map(|(seconds, runs)| (seconds, runs as usize)))
}
