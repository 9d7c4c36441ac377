//! What the report shows, read from the tracking database alone (never from training code).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use rusqlite::Connection;
use rusqlite::types::Value;

/// One experiment and its runs.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: String,
    pub description: String,
    pub runs: Vec<Run>,
}

/// One run with everything logged for it.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub id: String,
    pub status: String,
    pub steps_done: i64,
    pub total_steps: Option<i64>,
    pub error: Option<String>,
    pub run_dir: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Where it trained: the machine and the backend (`cpu-flex`, `vulkan`, `cuda`).
    pub host: Option<String>,
    pub backend: Option<String>,
    /// The runner that trained it (`runs.version`, schema 8).
    pub version: Option<String>,
    /// The CPU kernels it trained with (`runs.kernels`, schema 9).
    pub kernels: Option<String>,
    /// Training time over all its sessions, in seconds, at its latest logged step.
    pub runtime: Option<f64>,
    /// While it trains, the time its steps left take at its average pace so far (as `runs`'
    /// `eta`).
    pub time_left: Option<f64>,
    /// Dotted config key -> value as text.
    pub params: BTreeMap<String, String>,
    /// Metric name (d_loss, g_loss) -> (step, value) in step order.
    pub metrics: BTreeMap<String, Vec<(f64, f64)>>,
    /// Step -> metric -> value.
    pub evals: BTreeMap<i64, BTreeMap<String, f64>>,
    /// Step -> the training time its evaluation was reached at, in seconds (`Detail::Full`).
    pub eval_seconds: BTreeMap<i64, f64>,
    pub samples: Vec<(i64, String)>,
    pub checkpoints: Vec<(i64, String)>,
    /// (step, kind, detail): rung decisions and failure detectors' findings, in order.
    pub events: Vec<(i64, String, String)>,
    /// What its user said of it (`runner tag`).
    pub tags: Vec<String>,
    pub note: Option<String>,
}

impl Run {
    /// The last value of a logged metric.
    pub fn last_metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name)?.last().map(|p| p.1)
    }

    /// Its LeNet-FID at each evaluated step, as recorded (a diverged run's included).
    pub fn fid_points(&self) -> Vec<(f64, f64)> {
        self.evals
            .iter()
            .filter_map(|(step, m)| Some((*step as f64, *m.get("fid")?)))
            .collect()
    }

    /// The lowest LeNet-FID of its evaluations (the state kept in `<run>/best/`).
    pub fn best_fid(&self) -> Option<f64> {
        self.evals
            .values()
            .filter_map(|metrics| metrics.get("fid").copied())
            .filter(|fid| fid.is_finite())
            .min_by(f64::total_cmp)
    }
}

fn text(value: Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => r.to_string(),
        Value::Text(t) => t,
        Value::Blob(b) => format!("<{} bytes>", b.len()),
    }
}

/// A setting's value as the `params` table holds it, read back as text, as the report reads
/// the table's rows.
pub(super) fn param_text(value: &serde_json::Value) -> String {
    text(crate::track::writer::param_value(value))
}

/// How much of each run [`load`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Everything the report shows.
    Full,
    /// The record, settings and evaluations, without the logged history (losses, samples,
    /// checkpoints, events, the evaluations' training times): what ranking and comparing
    /// runs need.
    Scores,
}

/// Every experiment (or only `only`) with its runs, in name order.
pub fn load(db: &Path, only: Option<&str>, detail: Detail) -> Result<Vec<Experiment>> {
    let conn = crate::track::open_read_only(db)?;
    let mut experiments: Vec<Experiment> = conn
        .prepare(
            "SELECT name, description FROM experiments WHERE ?1 IS NULL OR name = ?1 ORDER BY name",
        )?
        .query_map([only], |r| {
            Ok(Experiment {
                name: r.get(0)?,
                description: r.get(1)?,
                runs: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    if let Some(name) = only {
        anyhow::ensure!(
            !experiments.is_empty(),
            "no experiment `{name}` in {}",
            db.display()
        );
    }
    let mut runs = load_runs(&conn, detail)?;
    for experiment in &mut experiments {
        experiment.runs = runs.remove(&experiment.name).unwrap_or_default();
    }
    Ok(experiments)
}

/// Runs grouped by experiment, in start order.
fn load_runs(conn: &Connection, detail: Detail) -> Result<BTreeMap<String, Vec<Run>>> {
    let mut by_id: BTreeMap<String, (String, Run)> = BTreeMap::new();
    let mut configs: BTreeMap<String, String> = BTreeMap::new();
    let mut order = Vec::new();
    // Training times are recorded since schema 7 (an older runner's database read as it is
    // has none).
    let timed = crate::track::has_column(conn, "metrics", "seconds")?;
    // A run whose process is gone shows as `orphaned`, as `runner runs` shows it.
    let status = crate::track::claims::status_sql("runs");
    let mut stmt = conn.prepare(&format!(
        "SELECT id, experiment, {status}, steps_done, total_steps, error, run_dir, started_at,
                finished_at, host, backend, config, {}, {}, {}, {}
         FROM runs ORDER BY started_at, id",
        crate::query::latest_time_sql(timed, "runs", "seconds"),
        crate::query::time_left_sql(timed, "runs", &status),
        crate::track::runs_column_sql(conn, "runs", "version")?,
        crate::track::runs_column_sql(conn, "runs", "kernels")?,
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(1)?,
            Run {
                id: r.get(0)?,
                status: r.get(2)?,
                steps_done: r.get(3)?,
                total_steps: r.get(4)?,
                error: r.get(5)?,
                run_dir: r.get(6)?,
                started_at: r.get(7)?,
                finished_at: r.get(8)?,
                host: r.get(9)?,
                backend: r.get(10)?,
                runtime: r.get(12)?,
                time_left: r.get(13)?,
                version: r.get(14)?,
                kernels: r.get(15)?,
                ..Default::default()
            },
            r.get::<_, String>(11)?,
        ))
    })?;
    for row in rows {
        let (experiment, run, config) = row?;
        configs.insert(run.id.clone(), config);
        order.push(run.id.clone());
        by_id.insert(run.id.clone(), (experiment, run));
    }
    let mut each = |sql: &str,
                    f: &mut dyn FnMut(&mut Run, &rusqlite::Row<'_>) -> rusqlite::Result<()>|
     -> Result<()> {
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            if let Some((_, run)) = by_id.get_mut(&id) {
                f(run, row)?;
            }
        }
        Ok(())
    };
    each("SELECT run_id, key, value FROM params", &mut |run, r| {
        run.params.insert(r.get(1)?, text(r.get(2)?));
        Ok(())
    })?;
    if crate::track::has_table(conn, "tags")? {
        each(
            "SELECT run_id, tag FROM tags ORDER BY run_id, tag",
            &mut |run, r| {
                run.tags.push(r.get(1)?);
                Ok(())
            },
        )?;
        each("SELECT id, note FROM runs", &mut |run, r| {
            run.note = r.get(1)?;
            Ok(())
        })?;
    }
    each(
        "SELECT run_id, step, metric, value FROM evals",
        &mut |run, r| {
            run.evals
                .entry(r.get(1)?)
                .or_default()
                .insert(r.get(2)?, r.get(3)?);
            Ok(())
        },
    )?;
    if detail == Detail::Full {
        if timed {
            each(
                "SELECT run_id, step, max(seconds) FROM evals WHERE seconds IS NOT NULL \
                 GROUP BY run_id, step",
                &mut |run, r| {
                    run.eval_seconds.insert(r.get(1)?, r.get(2)?);
                    Ok(())
                },
            )?;
        }
        each(
            "SELECT run_id, name, step, value FROM metrics ORDER BY run_id, name, step",
            &mut |run, r| {
                let (step, value): (i64, f64) = (r.get(2)?, r.get(3)?);
                run.metrics
                    .entry(r.get(1)?)
                    .or_default()
                    .push((step as f64, value));
                Ok(())
            },
        )?;
        each(
            "SELECT run_id, step, path FROM samples ORDER BY run_id, step",
            &mut |run, r| {
                run.samples.push((r.get(1)?, r.get(2)?));
                Ok(())
            },
        )?;
        each(
            "SELECT run_id, step, path FROM checkpoints ORDER BY run_id, step",
            &mut |run, r| {
                run.checkpoints.push((r.get(1)?, r.get(2)?));
                Ok(())
            },
        )?;
        if crate::track::has_table(conn, "events")? {
            each(
                "SELECT run_id, step, kind, detail FROM events ORDER BY run_id, step, at",
                &mut |run, r| {
                    run.events.push((r.get(1)?, r.get(2)?, r.get(3)?));
                    Ok(())
                },
            )?;
        }
    }
    // Runs recorded before a config key existed have no row for it: show its default, so that
    // it does not look swept.
    for (id, (_, run)) in by_id.iter_mut() {
        let Some(config) = configs.get(id).and_then(|c| serde_json::from_str(c).ok()) else {
            continue;
        };
        for (key, value) in crate::spec::flatten_params(&crate::spec::with_defaults(config)) {
            run.params.entry(key).or_insert_with(|| param_text(&value));
        }
    }
    let mut out: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for id in order {
        let (experiment, run) = by_id.remove(&id).expect("loaded above");
        out.entry(experiment).or_default().push(run);
    }
    Ok(out)
}
