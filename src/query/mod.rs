//! The read side of the tracking database: `runner query` (here: one statement, its rows
//! printed as a table, CSV or JSON), `runner runs` ([`runs`]), `runner show` ([`show`]) and
//! `runner compare` ([`compare`]), over the look-ups and SQL pieces they share with `rm`, `tag`,
//! `eval` and the report (`sql.rs`, `select.rs`).
//! Everything here opens the database read-only.

mod compare;
mod runs;
mod select;
mod show;
mod sql;

pub use compare::compare;
pub use runs::{RunOrder, json_text, runs, training_time, varied_keys};
pub use select::{SelectedRun, select_runs};
pub use show::{ShowFormat, show};
pub use sql::{check_experiment, find_run, run_dirs, tagged_sql};
pub(crate) use sql::{latest_eval_sql, latest_loss_sql, latest_time_sql, time_left_sql};

use std::path::Path;

use anyhow::{Context, Result, bail};
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
    let mut stmt = match conn.prepare(sql) {
        Err(err)
            if err.sqlite_error_code()
                == Some(rusqlite::ErrorCode::AuthorizationForStatementDenied) =>
        {
            bail!(
                "refused: `runner query` reads its one database: ATTACH and DETACH are not allowed"
            )
        }
        prepared => prepared.context("SQL error")?,
    };
    if !stmt.readonly() {
        bail!(
            "refused: `runner query` is read-only, and this statement would write to the database"
        );
    }
    let columns = unique_names(stmt.column_names());
    let n = columns.len();
    sink.columns(columns)?;
    let mut cursor = stmt.query(params).context("SQL error")?;
    while let Some(row) = cursor.next().context("SQL error")? {
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
                let header = self.columns.iter().map(|c| printable(c, false)).collect();
                let mut table = vec![header];
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
                // One line a row: a line break in a value would start a false row.
                (self.table).push(row.iter().map(|v| printable(&cell(v), false)).collect());
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

/// `text` for a terminal: control characters (a note's line breaks and tabs, an escape
/// sequence that would restyle the terminal) written as Rust escapes (`\n`, `\t`,
/// `\u{1b}`); with `keep_newlines`, line breaks are kept as they are.
pub(crate) fn printable(text: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && !(keep_newlines && c == '\n') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
            // Padded by hand: `format!`'s width stops at 65 535 and panics past it.
            .map(|(s, w)| format!("{s}{}", " ".repeat(w - s.chars().count())))
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

    /// The first row of a look-up of run `id` in `db`; an error when there is none: the run was
    /// deleted (`runner rm`) since it was found.
    pub(crate) fn run_row(&self, id: &str, db: &Path) -> Result<&[serde_json::Value]> {
        match self.rows.first() {
            Some(row) => Ok(row),
            None => bail!("run {id} was deleted from {} meanwhile", db.display()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_keep_one_line_a_row_and_never_pass_on_escape_sequences() {
        let note = serde_json::Value::from("sharp 7s\n\x1b[2Jgone\tnext");
        let rows = Rows {
            columns: vec!["id".into(), "odd\nname".into()],
            rows: vec![vec!["a".into(), note.clone()], vec!["b".into(), 1.into()]],
        };
        let table = rows.render(Format::Table).unwrap();
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.contains(r"sharp 7s\n\u{1b}[2Jgone\tnext"), "{table}");
        assert!(table.contains(r"odd\nname"), "{table}");
        assert!(!table.contains('\x1b'));
        // CSV and JSON give the text as it is.
        let csv = rows.render(Format::Csv).unwrap();
        assert!(csv.contains("\"sharp 7s\n\x1b[2Jgone\tnext\""), "{csv}");
        // Text that keeps its line breaks still loses the escape.
        assert_eq!(printable("a\nb\x1b", true), "a\nb\\u{1b}");
    }

    #[test]
    fn a_run_deleted_between_two_look_ups_is_an_error_not_a_panic() {
        let gone = Rows {
            columns: vec!["id".into()],
            rows: Vec::new(),
        };
        let err = gone.run_row("3f9a", Path::new("r.sqlite")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "run 3f9a was deleted from r.sqlite meanwhile"
        );
    }

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
    fn a_table_pads_cells_wider_than_formats_width_limit() {
        // `printf('%.*c', 100000, 'x')` in a query made such a cell, and padding it panicked.
        let wide = "x".repeat(70_000);
        let table = format_table(&[
            vec!["a".into(), "b".into()],
            vec![wide.clone(), "1".into()],
            vec!["é".into(), "2".into()],
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], format!("a{}  b", " ".repeat(69_999)));
        assert_eq!(lines[2], format!("{wide}  1"));
        assert_eq!(lines[3], format!("é{}  2", " ".repeat(69_999)));
    }
}
