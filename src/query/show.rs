//! `runner show`: one run's record, config, losses, evaluations, events and files.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::sql::{find_run, has_seconds, has_tags, latest_time_sql, tags_sql};
use super::{Format, Rows, cell, clock, printable, run_sql};
use crate::track;

/// Everything `runner show` says of one run.
struct RunDetail {
    /// The `runs` row but its config, with the status as the claims see it (`orphaned`), the
    /// heartbeat as a time and the tags.
    record: Vec<(String, serde_json::Value)>,
    /// The run's directory as the database recorded it.
    run_dir: PathBuf,
    /// Where the run's directory is from here, when not where the database recorded it
    /// (`None` when it is not found).
    run_dir_here: Option<Option<PathBuf>>,
    /// The resolved config as the spec writes it (flags `false`, not the params table's 0).
    config: Vec<(String, serde_json::Value)>,
    losses: Rows,
    /// The headline evaluations, rounded, one row per step: the text's table.
    evals: Rows,
    /// Every evaluation value as stored, as (step, metric, value) rows: the JSON's.
    eval_values: Rows,
    events: Rows,
    samples: Rows,
    checkpoints: Rows,
    /// The run's best state (`best/`: its lowest-FID evaluation's), where the run has one.
    best: Option<BestState>,
}

/// What `runner show` says of a run's best state.
#[derive(serde::Serialize)]
struct BestState {
    step: u64,
    fid: Option<f64>,
    path: PathBuf,
}

impl BestState {
    fn of(run_dir: &Path) -> Option<Self> {
        let meta = crate::train::checkpoint::best_meta(run_dir)?;
        Some(BestState {
            step: meta.step,
            fid: meta.fid,
            path: crate::train::checkpoint::best_dir(run_dir),
        })
    }
}

impl RunDetail {
    fn load(db: &Path, run_id: &str) -> Result<Self> {
        let run = find_run(db, run_id)?;
        let row = &run.rows[0];
        let id = row[0].as_str().unwrap_or_default().to_string();
        let timed = has_seconds(db)?;
        // `running` whose process is gone shows as `orphaned`; the heartbeat, stored as
        // seconds since the epoch (claims compare it with the clock), shows as the other
        // times do.
        let shown = run_sql(
            db,
            &format!(
                "SELECT {}, strftime('%Y-%m-%dT%H:%M:%SZ', heartbeat_at, 'unixepoch'), {}, \
                 {} FROM runs r WHERE id = ?1",
                track::claims::status_sql("r"),
                if has_tags(db)? {
                    tags_sql("r")
                } else {
                    "NULL".into()
                },
                latest_time_sql(timed, "r", "seconds")
            ),
            &[&id],
        )?;
        let [status, heartbeat, tags, runtime]: [serde_json::Value; 4] =
            (shown.run_row(&id, db)?.to_vec())
                .try_into()
                .expect("the statement selects four columns");
        let (mut record, mut config, mut run_dir, mut run_dir_here, mut best) =
            (Vec::new(), None, PathBuf::new(), None, None);
        for (column, value) in run.columns.iter().zip(row) {
            let value = match column.as_str() {
                "config" => {
                    config = value.as_str().and_then(|v| serde_json::from_str(v).ok());
                    continue;
                }
                "status" => status.clone(),
                "heartbeat_at" => heartbeat.clone(),
                "run_dir" => {
                    // Recorded as the sweep was given it: say where it is from here.
                    run_dir = PathBuf::from(cell(value));
                    let located = track::locate(db, &run_dir);
                    best = located.as_deref().and_then(BestState::of);
                    run_dir_here = match located {
                        Some(path) if path == run_dir => None,
                        found => Some(found),
                    };
                    value.clone()
                }
                _ => value.clone(),
            };
            record.push((column.clone(), value));
            if column == "total_steps" {
                record.push(("runtime".into(), runtime.clone()));
            }
        }
        record.push(("tags".into(), tags));
        let files = |table: &str| {
            run_sql(
                db,
                &format!("SELECT step, path FROM {table} WHERE run_id = ?1 ORDER BY step"),
                &[&id],
            )
        };
        Ok(RunDetail {
            record,
            run_dir,
            run_dir_here,
            config: crate::spec::flatten_params(&crate::spec::with_defaults(
                config.unwrap_or_default(),
            )),
            losses: run_sql(
                db,
                &format!(
                    "SELECT step, max(CASE name WHEN 'd_loss' THEN value END) AS d_loss, \
                     max(CASE name WHEN 'g_loss' THEN value END) AS g_loss{seconds} \
                     FROM metrics WHERE run_id = ?1 GROUP BY step ORDER BY step",
                    seconds = if timed {
                        ", max(seconds) AS seconds"
                    } else {
                        ""
                    }
                ),
                &[&id],
            )?,
            evals: run_sql(
                db,
                &format!(
                "SELECT step, {time}max(CASE metric WHEN 'fid' THEN round(value, 3) END) AS fid,
                        max(CASE metric WHEN 'is' THEN round(value, 3) END) AS \"is\",
                        max(CASE metric WHEN 'precision' THEN round(value, 4) END) AS precision,
                        max(CASE metric WHEN 'recall' THEN round(value, 4) END) AS recall,
                        max(CASE metric WHEN 'coverage' THEN round(value, 4) END) AS coverage
                 FROM evals WHERE run_id = ?1 GROUP BY step ORDER BY step",
                    time = if timed { "max(seconds) AS time, " } else { "" }
                ),
                &[&id],
            )?,
            // (The training time as one more value of each evaluated step.)
            eval_values: run_sql(
                db,
                &format!(
                    "SELECT step, metric, value FROM evals WHERE run_id = ?1{seconds} \
                     ORDER BY step, metric",
                    seconds = if timed {
                        " UNION ALL SELECT step, 'seconds', max(seconds) FROM evals \
                         WHERE run_id = ?1 AND seconds IS NOT NULL GROUP BY step"
                    } else {
                        ""
                    }
                ),
                &[&id],
            )?,
            // Why a run stopped or changed course: rung decisions, failure detectors, damaged
            // checkpoints.
            events: run_sql(
                db,
                "SELECT step, kind, detail FROM events WHERE run_id = ?1 ORDER BY step, at",
                &[&id],
            )?,
            samples: files("samples")?,
            checkpoints: files("checkpoints")?,
            best,
        })
    }

    /// A file recorded in the run's directory as it is found from here, when the directory
    /// moved (a results tree copied home from a cluster).
    fn path_here(&self, recorded: &serde_json::Value) -> Option<PathBuf> {
        let Some(Some(here)) = &self.run_dir_here else {
            return None;
        };
        let inside = Path::new(recorded.as_str()?)
            .strip_prefix(&self.run_dir)
            .ok()?;
        Some(here.join(inside))
    }

    fn text(&self) -> Result<String> {
        let mut out = String::new();
        for (column, value) in &self.record {
            let here = match (column.as_str(), &self.run_dir_here) {
                ("run_dir", Some(Some(path))) => format!(" (here: {})", path.display()),
                ("run_dir", Some(None)) => " (not found)".into(),
                _ => String::new(),
            };
            let value = match (column.as_str(), value.as_f64()) {
                ("runtime", Some(seconds)) => clock(seconds),
                _ => printable(&cell(value), true),
            };
            out.push_str(&format!("{column:<12} {value}{here}\n"));
        }
        out.push_str("\nconfig:\n");
        for (key, value) in &self.config {
            out.push_str(&format!("  {key:<24} {}\n", cell(value)));
        }
        if let (Some(first), Some(last)) = (self.losses.rows.first(), self.losses.rows.last()) {
            out.push_str(&format!(
                "\nlosses ({} logged steps): step {} D {} G {} ... step {} D {} G {}\n",
                self.losses.rows.len(),
                cell(&first[0]),
                cell(&first[1]),
                cell(&first[2]),
                cell(&last[0]),
                cell(&last[1]),
                cell(&last[2])
            ));
        }
        if !self.evals.rows.is_empty() {
            out.push_str(&format!("\nevaluations ({}):\n", self.evals.rows.len()));
            let mut evals = self.evals.clone();
            evals.durations_as_clock(&["time"]);
            out.push_str(&evals.render(Format::Table)?);
        }
        if !self.events.rows.is_empty() {
            out.push_str(&format!("\nevents ({}):\n", self.events.rows.len()));
            for r in &self.events.rows {
                out.push_str(&format!(
                    "  {:>8}  {}: {}\n",
                    cell(&r[0]),
                    cell(&r[1]),
                    printable(&cell(&r[2]), true)
                ));
            }
        }
        for (label, files) in [
            ("samples", &self.samples),
            ("checkpoints", &self.checkpoints),
        ] {
            out.push_str(&format!("\n{label} ({}):\n", files.rows.len()));
            for r in &files.rows {
                let path = (self.path_here(&r[1]))
                    .map_or_else(|| cell(&r[1]), |p| p.display().to_string());
                out.push_str(&format!("  {:>8}  {path}\n", cell(&r[0])));
            }
        }
        if let Some(best) = &self.best {
            let fid = best
                .fid
                .map_or(String::new(), |f| format!(", LeNet-FID {f:.3}"));
            out.push_str(&format!(
                "\nbest state (step {}{fid}): {}\n",
                best.step,
                best.path.display()
            ));
        }
        Ok(out)
    }

    /// Each evaluated step's metrics, all of them as stored: `{"step": 400, "fid": ..., "kid":
    /// ..., "class_0": ...}`.
    fn evaluations(&self) -> Vec<serde_json::Value> {
        let mut steps: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
        for row in &self.eval_values.rows {
            let [step, metric, value] = &row[..] else {
                unreachable!("the query selects three columns")
            };
            if steps.last().is_none_or(|last| last["step"] != *step) {
                steps.push([("step".to_string(), step.clone())].into_iter().collect());
            }
            let last = steps.last_mut().expect("pushed above");
            last.insert(metric.as_str().unwrap_or_default().into(), value.clone());
        }
        steps.into_iter().map(serde_json::Value::Object).collect()
    }

    /// One JSON object: the record's columns, then `config` (dotted keys), every logged step's
    /// `losses`, every evaluated step's metrics (all of them, unrounded: the text shows the
    /// headline ones), the `events`, `samples` and `checkpoints` as lists, and the `best`
    /// state (`null` when the run has none).
    fn json(&self) -> Result<String> {
        let mut object: serde_json::Map<String, serde_json::Value> =
            self.record.iter().cloned().collect();
        if let Some(here) = &self.run_dir_here {
            let here = here.as_ref().map(|p| p.display().to_string());
            object.insert("run_dir_here".into(), here.into());
        }
        object.insert("config".into(), self.config.iter().cloned().collect());
        object.insert("evaluations".into(), self.evaluations().into());
        for (key, rows) in [("losses", &self.losses), ("events", &self.events)] {
            object.insert(key.into(), rows.objects().into());
        }
        // Files as recorded (`path`), and where they are from here (`path_here`) when the
        // run's directory moved, as `run_dir` and `run_dir_here`.
        for (key, rows) in [
            ("samples", &self.samples),
            ("checkpoints", &self.checkpoints),
        ] {
            let mut files = rows.objects();
            for (file, row) in files.iter_mut().zip(&rows.rows) {
                if let (Some(here), Some(file)) = (self.path_here(&row[1]), file.as_object_mut()) {
                    file.insert("path_here".into(), here.display().to_string().into());
                }
            }
            object.insert(key.into(), files.into());
        }
        object.insert("best".into(), serde_json::to_value(&self.best)?);
        Ok(serde_json::to_string_pretty(&object)? + "\n")
    }
}

/// `runner show`: one run's record, resolved config, losses, evaluations, events and files,
/// as text or (`ShowFormat::Json`) one JSON object.
pub fn show(db: &Path, run_id: &str, format: ShowFormat) -> Result<String> {
    let detail = RunDetail::load(db, run_id)?;
    match format {
        ShowFormat::Text => detail.text(),
        ShowFormat::Json => detail.json(),
    }
}

/// Output formats of `runner show`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    Text,
    Json,
}
