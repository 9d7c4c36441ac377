//! The read side of the tracking database: `runner query`, `runner runs`, `runner show`.
//! Everything here opens the database read-only.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use rusqlite::types::ValueRef;

use crate::track;

/// Output formats of `runner query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Column names and rows of a query, values as JSON.
#[derive(Clone)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

fn to_json(value: ValueRef<'_>) -> serde_json::Value {
    match value {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        // JSON has no infinity; "inf" is what Python's float() and pandas read back.
        ValueRef::Real(f) if f.is_infinite() => if f > 0.0 { "inf" } else { "-inf" }.into(),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(Into::into)
            .unwrap_or(serde_json::Value::Null),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => format!("<{} bytes>", b.len()).into(),
    }
}

/// Runs one read-only SQL statement. Statements that would write, attach or detach are refused.
pub fn run_sql(db: &Path, sql: &str, params: &[&dyn rusqlite::ToSql]) -> Result<Rows> {
    let mut rows = Rows {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    for_each_row(db, sql, params, &mut rows)?;
    Ok(rows)
}

/// Where a statement's rows go, one at a time.
trait Sink {
    fn columns(&mut self, columns: Vec<String>) -> Result<()>;
    /// Takes a row; `false` stops the statement.
    fn row(&mut self, row: Vec<serde_json::Value>) -> Result<bool>;
}

impl Sink for Rows {
    fn columns(&mut self, columns: Vec<String>) -> Result<()> {
        self.columns = columns;
        Ok(())
    }

    fn row(&mut self, row: Vec<serde_json::Value>) -> Result<bool> {
        self.rows.push(row);
        Ok(true)
    }
}

/// Runs one read-only SQL statement into `sink`.
fn for_each_row(
    db: &Path,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
    sink: &mut dyn Sink,
) -> Result<()> {
    let conn = track::open_read_only(db)?;
    let mut stmt = conn
        .prepare(sql)
        .map_err(|e| anyhow::anyhow!("SQL error: {e}"))?;
    if !stmt.readonly() {
        bail!(
            "refused: `runner query` is read-only, and this statement would write to the database"
        );
    }
    let columns = unique_names(stmt.column_names());
    let n = columns.len();
    sink.columns(columns)?;
    let mut cursor = stmt
        .query(params)
        .map_err(|e| anyhow::anyhow!("SQL error: {e}"))?;
    while let Some(row) = cursor
        .next()
        .map_err(|e| anyhow::anyhow!("SQL error: {e}"))?
    {
        let values = (0..n)
            .map(|i| row.get_ref(i).map(to_json))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if !sink.row(values)? {
            break;
        }
    }
    Ok(())
}

/// The most rows `runner query` shows as a table, which must hold every row to size its
/// columns; CSV and JSON stream any number.
pub const TABLE_ROWS: usize = 10_000;

/// `runner query`: `sql`'s rows in `format`, handed to `write` as they come, so that a result
/// of millions of rows never sits in memory, and a reader that stops reading (`gone`) stops
/// the statement. A table shows the first [`TABLE_ROWS`] rows and says when there were more.
pub fn query(
    db: &Path,
    sql: &str,
    format: Format,
    write: &mut dyn FnMut(&str) -> Result<()>,
    gone: &dyn Fn() -> bool,
) -> Result<()> {
    let mut sink = Printer::new(format, Some(TABLE_ROWS), write, gone);
    for_each_row(db, sql, &[], &mut sink)?;
    sink.finish()
}

/// Rows written out in a format as they come: CSV and JSON row by row, a table (which must
/// see its rows to size its columns) at the end.
struct Printer<'a> {
    format: Format,
    write: &'a mut dyn FnMut(&str) -> Result<()>,
    gone: &'a dyn Fn() -> bool,
    columns: Vec<String>,
    /// A table's rows so far, at most `table_limit` of them.
    table: Vec<Vec<String>>,
    table_limit: Option<usize>,
    /// Whether rows were left out of the table.
    cut: bool,
    rows: usize,
}

impl<'a> Printer<'a> {
    fn new(
        format: Format,
        table_limit: Option<usize>,
        write: &'a mut dyn FnMut(&str) -> Result<()>,
        gone: &'a dyn Fn() -> bool,
    ) -> Self {
        Printer {
            format,
            write,
            gone,
            columns: Vec::new(),
            table: Vec::new(),
            table_limit,
            cut: false,
            rows: 0,
        }
    }

    /// Writes one CSV record.
    fn csv_record<T: AsRef<[u8]>>(&mut self, fields: impl IntoIterator<Item = T>) -> Result<()> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.write_record(fields)?;
        (self.write)(&String::from_utf8(writer.into_inner()?)?)
    }

    /// Writes the end: a table, the closing bracket of JSON.
    fn finish(mut self) -> Result<()> {
        match self.format {
            Format::Table => {
                let mut table = vec![std::mem::take(&mut self.columns)];
                table.append(&mut self.table);
                (self.write)(&format_table(&table))?;
                if self.cut {
                    let limit = self.table_limit.unwrap_or_default();
                    (self.write)(&format!(
                        "(the first {limit} rows; add a LIMIT, or use --format csv or json for \
                         every row)\n"
                    ))?;
                }
            }
            Format::Csv => {}
            Format::Json if self.rows == 0 => (self.write)("[]\n")?,
            Format::Json => (self.write)("\n]\n")?,
        }
        Ok(())
    }
}

impl Sink for Printer<'_> {
    fn columns(&mut self, columns: Vec<String>) -> Result<()> {
        if self.format == Format::Csv {
            self.csv_record(&columns)?;
        }
        self.columns = columns;
        Ok(())
    }

    fn row(&mut self, row: Vec<serde_json::Value>) -> Result<bool> {
        match self.format {
            Format::Table => {
                if self
                    .table_limit
                    .is_some_and(|limit| self.table.len() == limit)
                {
                    self.cut = true;
                    return Ok(false);
                }
                self.table.push(row.iter().map(cell).collect());
            }
            Format::Csv => {
                // Every digit, for programs that read it back.
                self.csv_record(row.iter().map(|value| match value {
                    serde_json::Value::Number(n) => n.to_string(),
                    other => cell(other),
                }))?;
            }
            Format::Json => {
                let object =
                    serde_json::Value::Object(self.columns.iter().cloned().zip(row).collect());
                // As serde_json pretty-prints an array of objects, one object at a time.
                let pretty = serde_json::to_string_pretty(&object)?.replace('\n', "\n  ");
                let lead = if self.rows == 0 { "[\n  " } else { ",\n  " };
                (self.write)(&format!("{lead}{pretty}"))?;
            }
        }
        self.rows += 1;
        Ok(!(self.gone)())
    }
}
/// Column names made unique, so no format drops a column: a repeated name gets `_2`, `_3`...
/// (`step`, `step_2` for a join of two tables that both have `step`).
fn unique_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let names: Vec<&str> = names.into_iter().collect();
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in &names {
        let mut candidate = name.to_string();
        let mut k = 1;
        while out.contains(&candidate) || (k > 1 && names.contains(&candidate.as_str())) {
            k += 1;
            candidate = format!("{name}_{k}");
        }
        out.push(candidate);
    }
    out
}

fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => {
                let trim = |s: &str| s.trim_end_matches('0').trim_end_matches('.').to_string();
                // Learning rates like 1e-7 would read as 0 in fixed notation.
                if f != 0.0 && !(1e-3..1e12).contains(&f.abs()) {
                    let text = format!("{f:.5e}");
                    let (mantissa, exponent) = text.split_once('e').expect("exponent form");
                    format!("{}e{exponent}", trim(mantissa))
                } else {
                    trim(&format!("{f:.6}"))
                }
            }
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A plain text table: the first row is the header.
pub fn format_table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows.first().map_or(0, Vec::len))
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(
                &widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  "),
            );
            out.push('\n');
        }
    }
    out
}

/// A duration as hours, minutes and seconds: `0:02:05`, `27:00:00`.
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

impl Rows {
    /// Shows the seconds in `columns` as [`clock`] times (for people; scripts keep seconds).
    pub fn durations_as_clock(&mut self, columns: &[&str]) {
        for column in columns {
            let Some(i) = self.columns.iter().position(|c| c == column) else {
                continue;
            };
            for row in &mut self.rows {
                if let Some(seconds) = row[i].as_f64() {
                    row[i] = clock(seconds).into();
                }
            }
        }
    }

    /// The value of `column` in row `row`.
    pub fn get(&self, row: usize, column: &str) -> Option<&serde_json::Value> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows.get(row)?.get(i)
    }

    /// The rows as JSON objects, column to value.
    pub fn objects(&self) -> Vec<serde_json::Value> {
        (self.rows.iter())
            .map(|row| (self.columns.iter().cloned().zip(row.iter().cloned())).collect())
            .collect()
    }

    pub fn render(&self, format: Format) -> Result<String> {
        let mut text = String::new();
        let mut write = |part: &str| {
            text.push_str(part);
            Ok(())
        };
        let mut printer = Printer::new(format, None, &mut write, &|| false);
        printer.columns(self.columns.clone())?;
        for row in &self.rows {
            printer.row(row.clone())?;
        }
        printer.finish()?;
        Ok(text)
    }
}

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
    // The steps left at the run's average pace so far.
    let left = latest_time_sql(
        timed,
        "r",
        "CASE WHEN step > 0 AND r.total_steps > step \
         THEN round(seconds / step * (r.total_steps - step), 1) END",
    );
    let mut listed = run_sql(
        db,
        &format!("SELECT r.experiment, r.id AS run, {status} AS status, r.steps_done AS steps,
                {runtime} AS runtime,
                CASE WHEN {status} = 'running' THEN {left} END AS eta,
                (SELECT value FROM metrics m WHERE m.run_id = r.id AND m.name = 'd_loss' ORDER BY step DESC LIMIT 1) AS d_loss,
                (SELECT value FROM metrics m WHERE m.run_id = r.id AND m.name = 'g_loss' ORDER BY step DESC LIMIT 1) AS g_loss,
                (SELECT round(value, 3) FROM evals e WHERE e.run_id = r.id AND e.metric = 'fid' ORDER BY step DESC LIMIT 1) AS fid,
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
    use std::collections::BTreeMap;
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
        let varied = varied_keys(runs.iter().map(|(_, settings)| settings));
        for (id, settings) in runs {
            let items: Vec<String> = (varied.iter())
                .filter_map(|key| Some(format!("{key}={}", settings.get(key)?)))
                .collect();
            out.insert(id.to_string(), items.join(" "));
        }
    }
    Ok(out)
}

/// The config keys whose values differ between runs (each a dotted key -> value map), in key
/// order; `data.dir` aside: where the data lies is no setting.
pub fn varied_keys<'a>(
    runs: impl Iterator<Item = &'a std::collections::BTreeMap<String, String>> + Clone,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = runs.clone().flat_map(|r| r.keys()).collect();
    keys.into_iter()
        .filter(|key| key.as_str() != "data.dir")
        .filter(|key| {
            let values: std::collections::BTreeSet<Option<&String>> =
                runs.clone().map(|r| r.get(*key)).collect();
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

/// Whether the database records training times (an older runner's does not).
fn has_seconds(db: &Path) -> Result<bool> {
    track::has_column(&track::open_read_only(db)?, "metrics", "seconds")
}

/// Whether the database has the `tags` table (see [`track::has_table`]).
fn has_tags(db: &Path) -> Result<bool> {
    track::has_table(&track::open_read_only(db)?, "tags")
}

/// SQL for run `alias`'s tags, space-separated in order (NULL without any).
fn tags_sql(alias: &str) -> String {
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

/// A LIKE pattern matching strings that start with `prefix` literally.
fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::new();
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern + "%"
}

/// The fewest characters of a run id that name it as a prefix (as git's abbreviations).
const MIN_PREFIX: usize = 4;

/// The `runs` row of the one run whose id is or starts with `run_id` (of at least
/// `MIN_PREFIX` characters).
pub fn find_run(db: &Path, run_id: &str) -> Result<Rows> {
    // A shorter prefix (an empty argument: a script's unset variable) matched every run, and
    // picked the only one of a database: `runner rm --yes "$ID"` deleted it.
    let prefix = (run_id.chars().count() >= MIN_PREFIX).then(|| like_prefix(run_id));
    let run = run_sql(
        db,
        "SELECT * FROM runs WHERE id = ?1 OR id LIKE ?2 ESCAPE '\\'",
        &[&run_id, &prefix],
    )?;
    match run.rows.len() {
        0 if prefix.is_none() => bail!(
            "`{run_id}` is not a run id, and a prefix of one needs at least {MIN_PREFIX} characters"
        ),
        0 => bail!("no run `{run_id}` in {}", db.display()),
        1 => Ok(run),
        n => bail!("`{run_id}` matches {n} runs; give more of the id"),
    }
}

/// Everything `runner show` says of one run.
struct RunDetail {
    /// The `runs` row but its config, with the status as the claims see it (`orphaned`), the
    /// heartbeat as a time and the tags.
    record: Vec<(String, serde_json::Value)>,
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
        let [status, heartbeat, tags, runtime]: [serde_json::Value; 4] = (shown.rows[0].clone())
            .try_into()
            .expect("the statement selects four columns");
        let (mut record, mut config, mut run_dir_here) = (Vec::new(), None, None);
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
                    let recorded = cell(value);
                    run_dir_here = match track::locate(db, Path::new(&recorded)) {
                        Some(path) if path == Path::new(&recorded) => None,
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
        })
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
                _ => cell(value),
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
                    cell(&r[2])
                ));
            }
        }
        for (label, files) in [
            ("samples", &self.samples),
            ("checkpoints", &self.checkpoints),
        ] {
            out.push_str(&format!("\n{label} ({}):\n", files.rows.len()));
            for r in &files.rows {
                out.push_str(&format!("  {:>8}  {}\n", cell(&r[0]), cell(&r[1])));
            }
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
    /// headline ones), and the `events`, `samples` and `checkpoints` as lists.
    fn json(&self) -> Result<String> {
        let mut object: serde_json::Map<String, serde_json::Value> =
            self.record.iter().cloned().collect();
        if let Some(here) = &self.run_dir_here {
            let here = here.as_ref().map(|p| p.display().to_string());
            object.insert("run_dir_here".into(), here.into());
        }
        object.insert("config".into(), self.config.iter().cloned().collect());
        object.insert("evaluations".into(), self.evaluations().into());
        for (key, rows) in [
            ("losses", &self.losses),
            ("events", &self.events),
            ("samples", &self.samples),
            ("checkpoints", &self.checkpoints),
        ] {
            object.insert(key.into(), rows.objects().into());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_column_names_get_suffixes() {
        assert_eq!(
            unique_names(["step", "value", "step", "step_2", "step"]),
            ["step", "value", "step_3", "step_2", "step_4"]
        );
    }

    #[test]
    fn small_and_large_numbers_keep_their_digits() {
        let cell_of = |f: f64| cell(&serde_json::json!(f));
        assert_eq!(cell_of(1e-7), "1e-7");
        assert_eq!(cell_of(1.25e-5), "1.25e-5");
        assert_eq!(cell_of(0.0002), "2e-4");
        assert_eq!(cell_of(0.003), "0.003");
        assert_eq!(cell_of(241.174213), "241.174213");
        assert_eq!(cell_of(0.0), "0");
        assert_eq!(cell_of(3e15), "3e15");
    }

    #[test]
    fn infinities_are_shown_not_dropped() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let values: Vec<serde_json::Value> = conn
            .query_row("SELECT 1e308 * 10, -1e308 * 10, 0.5", [], |row| {
                Ok((0..3).map(|i| to_json(row.get_ref(i).unwrap())).collect())
            })
            .unwrap();
        assert_eq!(
            values,
            [serde_json::json!("inf"), "-inf".into(), 0.5.into()]
        );
    }

    #[test]
    fn like_prefixes_match_wildcards_literally() {
        assert_eq!(like_prefix("a%_\\"), "a\\%\\_\\\\%");
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let matches = |id: &str, prefix: &str| -> bool {
            conn.query_row(
                "SELECT ?1 LIKE ?2 ESCAPE '\\'",
                [id, &like_prefix(prefix)],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert!(matches("ab12", "ab"));
        assert!(!matches("ab12", "%"));
        assert!(!matches("ab12", "a_"));
        assert!(matches("a_12", "a_"));
    }
}
