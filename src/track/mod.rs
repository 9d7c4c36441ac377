//! The tracking database: every experiment, run, hyperparameter, metric, sample and checkpoint
//! in one SQLite file (`results/runs.sqlite` by default), queried with plain SQL.
//!
//! The schema is versioned with `PRAGMA user_version` and upgraded by [`MIGRATIONS`] inside a
//! write-locked transaction, so processes opening a fresh database at once migrate it once.
//! Writes go through one [`Tracker`] thread per process ([`writer`]); a run is trained only by
//! the process holding its claim ([`claims`]); every run also appends its events to its own
//! `records.jsonl` ([`records`]), the durable copy a later sweep replays when the database
//! missed them (a failed write, a new or deleted database, a Slurm task).

pub mod annotations;
pub mod claims;
pub mod records;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use serde::{Deserialize, Serialize};

pub use writer::Tracker;

pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE experiments (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    spec_path   TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE TABLE runs (
    id          TEXT PRIMARY KEY,          -- hash of the resolved config
    experiment  TEXT NOT NULL REFERENCES experiments(name),
    config      TEXT NOT NULL,             -- resolved config, JSON
    config_hash TEXT NOT NULL,
    status      TEXT NOT NULL,             -- pending | running | finished | failed | diverged | interrupted
    started_at  TEXT,
    finished_at TEXT,
    host        TEXT,
    backend     TEXT,
    error       TEXT,
    steps_done  INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    run_dir     TEXT NOT NULL
);
CREATE TABLE params (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,                  -- dotted path, e.g. train.lr
    value,                                 -- number or text
    PRIMARY KEY (run_id, key)
);
CREATE TABLE metrics (
    run_id    TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step      INTEGER NOT NULL,
    name      TEXT NOT NULL,               -- d_loss, g_loss, ...
    value     REAL NOT NULL,
    wall_time REAL NOT NULL,               -- seconds since the Unix epoch
    PRIMARY KEY (run_id, step, name)
);
CREATE TABLE samples (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step   INTEGER NOT NULL,
    path   TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE checkpoints (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step   INTEGER NOT NULL,
    path   TEXT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE INDEX runs_by_experiment ON runs(experiment);
"#,
    r#"
CREATE TABLE evals (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step   INTEGER NOT NULL,
    metric TEXT NOT NULL,                  -- fid, is, class_kl, precision, recall, ...
    value  REAL NOT NULL,
    PRIMARY KEY (run_id, step, metric)
);
"#,
    r#"
ALTER TABLE runs ADD COLUMN slurm_task TEXT;  -- job_index of the Slurm array task, if any
"#,
    r#"
ALTER TABLE runs ADD COLUMN owner TEXT;         -- host:pid of the process that trains (trained) it
ALTER TABLE runs ADD COLUMN heartbeat_at REAL;  -- unix seconds, refreshed while it trains
ALTER TABLE runs ADD COLUMN data_id TEXT;       -- content hash of the training split
"#,
    r#"
CREATE TABLE events (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step   INTEGER NOT NULL,
    kind   TEXT NOT NULL,                  -- kept | pruned | promoted | collapse | d_wins | oscillation | corrupt_checkpoint
    detail TEXT NOT NULL,
    at     REAL NOT NULL,                  -- seconds since the Unix epoch
    PRIMARY KEY (run_id, step, kind)
);
"#,
    r#"
CREATE TABLE tags (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    tag    TEXT NOT NULL,                  -- a user's label (`runner tag`)
    PRIMARY KEY (run_id, tag)
);
ALTER TABLE runs ADD COLUMN note TEXT;     -- a user's note on the run (`runner tag --note`)
"#,
    r#"
ALTER TABLE metrics ADD COLUMN seconds REAL;  -- the run's training time at this step, over all its sessions
ALTER TABLE evals ADD COLUMN seconds REAL;    -- the same, at the evaluated step
"#,
    r#"
ALTER TABLE runs ADD COLUMN version TEXT;     -- the runner that trains (trained) it: `0.1.0 (58e9a61c2)`
"#,
    r#"
ALTER TABLE runs ADD COLUMN kernels TEXT;     -- the CPU kernels it trains (trained) with: avx512f, avx2+fma; NULL on a GPU
"#,
];

/// Whether the database has `table`: one an older runner wrote, read where it cannot be
/// upgraded (a read-only copy), lacks the newer ones.
pub fn has_table(conn: &Connection, table: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )?)
}

/// Whether `table` has `column`: a database an older runner wrote, read where it cannot be
/// upgraded, lacks the newer ones.
pub fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )?)
}

/// `runs.<column>`, a column added by a migration (`version`, `kernels`), as a select
/// expression on the runs table named `alias`: NULL in a database of a release before it,
/// read where it cannot be upgraded (a read-only copy).
pub fn runs_column_sql(conn: &Connection, alias: &str, column: &str) -> Result<String> {
    Ok(match has_column(conn, "runs", column)? {
        true => format!("{alias}.{column}"),
        false => "NULL".into(),
    })
}

/// The database's default place.
pub fn default_db() -> PathBuf {
    PathBuf::from("results/runs.sqlite")
}

/// Refuses an experiment's directory that would take the place of the database `db` or of
/// SQLite's files beside it (`-wal`, `-shm`, `-journal`): an experiment named `runs.sqlite-wal`
/// made a directory where SQLite creates its write-ahead log, and every later command failed
/// to open the database. A file in the way (`results/runs.sqlite` itself) is refused too,
/// before any run is recorded as failed.
pub fn refuse_database_clash(experiment_dir: &Path, db: &Path) -> Result<()> {
    let resolve = crate::fsutil::resolve_path;
    let (dir, db) = (resolve(experiment_dir)?, resolve(db)?);
    let companions = ["", "-wal", "-shm", "-journal"].map(|suffix| {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    });
    anyhow::ensure!(
        !companions.contains(&dir),
        "{}: would be the experiment's directory, and is the database {} or the name SQLite \
         gives its companion files; choose another experiment name",
        experiment_dir.display(),
        db.display()
    );
    anyhow::ensure!(
        !experiment_dir.exists() || experiment_dir.is_dir(),
        "{}: is a file, not the experiment's directory; choose another experiment name",
        experiment_dir.display()
    );
    Ok(())
}

/// Seconds since the Unix epoch: events carry the time they happened, so that records merged
/// later (from Slurm tasks) keep it.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// How long a connection waits for another process's write lock before failing
/// (`GANRUNNER_DB_TIMEOUT`, seconds, at most a day; default 30). A value that is not one is
/// said once and the default used.
pub fn busy_timeout() -> Duration {
    static TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        let default = Duration::from_secs(30);
        let Ok(text) = std::env::var("GANRUNNER_DB_TIMEOUT") else {
            return default;
        };
        parse_busy_timeout(&text).unwrap_or_else(|| {
            crate::errln!(
                "warning: GANRUNNER_DB_TIMEOUT={text} is not a number of seconds from 0 to \
                 86400; waiting {} s for the database's lock",
                default.as_secs()
            );
            default
        })
    })
}

/// `GANRUNNER_DB_TIMEOUT`'s value, if it is one (SQLite counts the wait in milliseconds in
/// 32 bits: 1e300 s panicked the conversion).
fn parse_busy_timeout(text: &str) -> Option<Duration> {
    let seconds = text.trim().parse::<f64>().ok()?;
    (0.0..=86_400.0)
        .contains(&seconds)
        .then(|| Duration::from_secs_f64(seconds))
}

/// Opens (creating and migrating) the database for writing.
pub fn open(path: &Path) -> Result<Connection> {
    open_for_writing(path).map_err(|err| match unwritable(path) {
        Some(why) => err.context(format!(
            "{}: {why}; `runner runs`, `show`, `query` and `report` can still read it",
            path.display()
        )),
        None => err,
    })
}

/// Why the database at `path` cannot be written, if the file system says so: SQLite's own
/// error on a read-only file or folder is a bare "unable to open database file".
fn unwritable(path: &Path) -> Option<String> {
    let read_only = |err: std::io::Error| {
        matches!(
            err.kind(),
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
        )
        .then(|| format!("cannot be written here ({err})"))
    };
    if path.is_file() {
        let opened = std::fs::OpenOptions::new().append(true).open(path);
        if let Some(why) = opened.err().and_then(read_only) {
            return Some(why);
        }
    }
    // WAL mode also creates files beside the database.
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    let probe = folder
        .unwrap_or(Path::new("."))
        .join(format!(".runs-probe-{}", std::process::id()));
    match std::fs::File::create_new(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(err) => read_only(err),
    }
}

/// Refuses a database path that holds something other than a file (a directory, a named
/// pipe, a link to a device): of those SQLite said "disk I/O error", as of a full disk, and
/// the reading commands "no such database".
fn refuse_other_kinds(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // none yet (or a dangling link): SQLite creates it, readers say so
    };
    anyhow::ensure!(
        !meta.is_dir(),
        "{}: is a directory, not a database file",
        path.display()
    );
    anyhow::ensure!(
        meta.is_file(),
        "{}: is not a regular file (a named pipe, or a link to a device), not a database \
         file; move it aside, or pick another --db",
        path.display()
    );
    Ok(())
}

fn open_for_writing(path: &Path) -> Result<Connection> {
    refuse_other_kinds(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::fsutil::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(busy_timeout())?;
    // Before anything changes the file (WAL mode persists): another program's database is
    // refused, not filled with the runner's tables. A fresh database has none; one that a
    // runner is creating right now has a version (migrations run in one transaction).
    let (version, tables) = (|| {
        // One read transaction, one snapshot: the tables with their version.
        let tx = conn.transaction()?;
        let version = tx.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?;
        Ok::<_, rusqlite::Error>((version, user_tables(&tx)?))
    })()
    .with_context(|| format!("opening {}", path.display()))?;
    anyhow::ensure!(
        version > 0 || tables.is_empty(),
        "{}: not a ganrunner database: it holds other tables ({}); pick another --db",
        path.display(),
        tables.join(", ")
    );
    set_wal(&conn).with_context(|| format!("opening {}", path.display()))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    claims::register_owner_alive(&conn)?;
    migrate(&mut conn).with_context(|| format!("migrating {}", path.display()))?;
    Ok(conn)
}

/// Switches the database to WAL mode. SQLite answers "locked" at once, without its busy
/// handler, while another connection switches a fresh database, so this retries until the
/// busy timeout.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + busy_timeout();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(err)
                if matches!(
                    err.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Upgrades the schema. The version is read inside the write-locked transaction, so two
/// processes opening a fresh database at once cannot both create its tables.
fn migrate(conn: &mut Connection) -> Result<()> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = tx.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
        anyhow::ensure!(
            version <= MIGRATIONS.len(),
            "the database has schema version {version}, newer than this runner's {} (runner {}): \
             a newer runner wrote it; use that one, or another --db",
            MIGRATIONS.len(),
            crate::VERSION
        );
        let Some(sql) = MIGRATIONS.get(version) else {
            return Ok(());
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)?;
        tx.commit()?;
    }
}

/// The names of the tables a database holds (SQLite's own aside).
fn user_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )?
    .query_map([], |r| r.get(0))?
    .collect()
}

/// Opens the database read-only, refusing any statement that would write or attach. A
/// database on a read-only filesystem (where SQLite cannot create its shared-memory file) is
/// opened as immutable.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    refuse_other_kinds(path)?;
    anyhow::ensure!(
        path.is_file(),
        "{}: no such database (run a sweep first)",
        path.display()
    );
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let readable =
        |conn: &Connection| conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()));
    let mut conn = Connection::open_with_flags(path, flags)
        .and_then(|conn| {
            conn.busy_timeout(busy_timeout())?;
            readable(&conn).map(|_| conn)
        })
        .or_else(|first| {
            let uri = immutable_uri(&std::path::absolute(path).unwrap_or(path.to_path_buf()));
            Connection::open_with_flags(&uri, flags | OpenFlags::SQLITE_OPEN_URI)
                .and_then(|conn| readable(&conn).map(|_| conn))
                .map_err(|_| first)
        })
        .with_context(|| format!("opening {}", path.display()))?;
    anyhow::ensure!(
        user_tables(&conn)?.iter().any(|t| t == "runs"),
        "{}: not a ganrunner database (it has no `runs` table)",
        path.display()
    );
    // A database an older runner wrote is upgraded first, as the next sweep would do, so that
    // queries see today's schema (they failed on its missing columns).
    // One that cannot be upgraded (a read-only copy) is read as it is.
    let version = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?;
    if (version as usize) < MIGRATIONS.len() {
        match open(path) {
            Ok(upgraded) => {
                drop((conn, upgraded));
                return open_read_only(path);
            }
            Err(err) => crate::errln!(
                "warning: {} was written by an older runner (schema {version}; this one reads \
                 {}) and could not be upgraded ({err:#}); queries of newer columns will fail",
                path.display(),
                MIGRATIONS.len()
            ),
        }
    }
    conn.authorizer(Some(|ctx: AuthContext<'_>| match ctx.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        _ => Authorization::Allow,
    }))?;
    claims::register_owner_alive(&conn)?;
    Ok(conn)
}

/// A `file:` URI opening `path` as immutable (no locks, no shared memory), percent-escaping
/// the characters URIs reserve.
fn immutable_uri(path: &Path) -> String {
    let mut escaped = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' => escaped.push_str(&format!("%{:02X}", c as u32)),
            _ => escaped.push(c),
        }
    }
    format!("file:{escaped}?immutable=1")
}

/// What a run looks like to the database when it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub experiment: String,
    pub config_json: String,
    pub params: Vec<(String, serde_json::Value)>,
    pub run_dir: PathBuf,
    pub total_steps: Option<u64>,
    /// The machine and backend it runs on.
    pub host: String,
    pub backend: String,
    /// Content hash of the training split (see `data::fingerprint`).
    #[serde(default)]
    pub data_id: String,
    /// The runner that trains it ([`crate::VERSION`]; none in records of older releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The CPU kernels it trains with ([`crate::backend::kernels`]: `avx512f`, `avx2+fma`);
    /// none on a GPU and in records of older releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
}

/// A write for the tracker thread; also a line of a run's records file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event {
    Experiment {
        name: String,
        description: String,
        spec_path: String,
    },
    /// Inserts or resets the run; with `fresh`, deletes its earlier metrics, samples,
    /// checkpoints and evaluations.
    RunStarted {
        record: RunRecord,
        fresh: bool,
        at: f64,
    },
    /// A run handed to a scheduler: `pending` until its task starts it.
    RunQueued {
        record: RunRecord,
        slurm_task: String,
    },
    Metric {
        run_id: String,
        step: u64,
        name: String,
        value: f64,
        at: f64,
        /// The run's training time at `step` (none in records of older releases).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<f64>,
    },
    Sample {
        run_id: String,
        step: u64,
        path: String,
    },
    Checkpoint {
        run_id: String,
        step: u64,
        path: String,
    },
    /// One evaluation's metrics.
    Eval {
        run_id: String,
        step: u64,
        metrics: Vec<(String, f64)>,
        /// The run's training time at `step`: none from `runner eval`, which keeps the
        /// recorded one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<f64>,
    },
    /// Something that happened to a run at a step: a rung decision (`kept`, `pruned`,
    /// `promoted`), a failure detector's finding (`collapse`, `d_wins`, `oscillation`), or a
    /// damaged checkpoint set aside when resuming (`corrupt_checkpoint`).
    Flagged {
        run_id: String,
        step: u64,
        kind: String,
        detail: String,
        at: f64,
    },
    /// Drops the rows of checkpoints deleted from disk.
    CheckpointRemoved { run_id: String, step: u64 },
    RunEnded {
        run_id: String,
        status: String,
        steps_done: u64,
        error: Option<String>,
        at: f64,
    },
    /// Replays a run's tags and note from `run_dir`'s `annotations.json`, read as it is under
    /// the database's write lock, so that a `runner tag` at the same moment is never undone
    /// (never in `records.jsonl`).
    Annotated { run_id: String, run_dir: PathBuf },
}

/// The statuses a run can have (`runs.status`); `runner runs` also shows `orphaned`, a
/// `running` run whose process is gone.
pub const STATUSES: &[&str] = &[
    "pending",
    "running",
    "finished",
    "failed",
    "diverged",
    "interrupted",
    "pruned",
];

/// Refuses a `--status` that is not one of [`STATUSES`] or `extra` (what a view adds).
pub fn check_statuses(statuses: &[String], extra: &[&str]) -> Result<()> {
    let known: Vec<&str> = STATUSES.iter().chain(extra).copied().collect();
    if let Some(bad) = statuses.iter().find(|s| !known.contains(&s.as_str())) {
        anyhow::bail!("--status {bad}: not a status; one of {}", known.join(", "));
    }
    Ok(())
}

/// The runner that trained run `run_id`, as recorded (none: a release before runs recorded
/// it, or a run the database does not know).
pub fn trained_by(conn: &Connection, run_id: &str) -> Result<Option<String>> {
    let version = conn.query_row("SELECT version FROM runs WHERE id = ?1", [run_id], |r| {
        r.get(0)
    });
    match version {
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        version => Ok(version?),
    }
}

/// A recorded runner version as messages name it: the version, or for none (records, rows
/// and checkpoints of releases before versions were kept) what that means.
pub fn runner_name(version: Option<&str>) -> &str {
    version.unwrap_or("a release that did not record its version")
}

/// A run's arithmetic as people read it: the backend, and the CPU kernels when known
/// (`cpu-flex with avx512f kernels`).
pub fn arithmetic(backend: &str, kernels: Option<&str>) -> String {
    match kernels {
        Some(kernels) => format!("{backend} with {kernels} kernels"),
        None => backend.to_string(),
    }
}

/// This machine's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Where a path the database `db` records (a run directory, a sample, a checkpoint) is now.
/// Paths are recorded as the sweep was given them, usually relative to the directory it ran
/// in. One that is not there as given is looked for
/// - relative to the project holding the database (`<project>/results/runs.sqlite`), for
///   commands run from elsewhere (`--db ../results/runs.sqlite`);
/// - under the database's folder, by its trailing components (`<experiment>/<run-id>/...`), for
///   a results tree that moved (copied back from a cluster's scratch space, whose absolute
///   paths the database recorded).
///
/// `None` when it is in none of those places.
pub fn locate(db: &Path, recorded: &Path) -> Option<PathBuf> {
    if recorded.exists() {
        return Some(recorded.to_path_buf());
    }
    let beside = db.parent()?;
    if recorded.is_relative()
        && let Some(candidate) = beside.parent().map(|project| project.join(recorded))
        && candidate.exists()
    {
        return Some(candidate);
    }
    let parts: Vec<_> = recorded
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .collect();
    // Two components at least: `<experiment>/<run-id>`, never a bare file name.
    (0..parts.len().saturating_sub(1))
        .map(|start| beside.join(parts[start..].iter().collect::<PathBuf>()))
        .find(|candidate| candidate.exists())
}

/// The directory the database records for `run_id`, if it knows the run.
pub fn run_dir(conn: &Connection, run_id: &str) -> Result<Option<PathBuf>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row("SELECT run_dir FROM runs WHERE id = ?1", [run_id], |r| {
            r.get::<_, String>(0)
        })
        .optional()?
        .map(PathBuf::from))
}

/// How a run did on one metric, for a search that learns from its runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunScore {
    /// New, queued, training or interrupted: it may still change.
    Unended,
    /// Finished or pruned: its best value over its evaluations.
    Scored(f64),
    /// Failed, diverged, or ended without an evaluation of the metric.
    Unscored,
}

/// Run `run_id`'s [`RunScore`] on `metric`: its best value is the highest when `higher`, else
/// the lowest.
pub fn run_score(conn: &Connection, run_id: &str, metric: &str, higher: bool) -> Result<RunScore> {
    use rusqlite::OptionalExtension;
    let best = if higher {
        "max(e.value)"
    } else {
        "min(e.value)"
    };
    let row: Option<(String, Option<f64>)> = conn
        .query_row(
            &format!(
                "SELECT r.status, (SELECT {best} FROM evals e WHERE e.run_id = r.id AND e.metric = ?2) \
                 FROM runs r WHERE r.id = ?1"
            ),
            [run_id, metric],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((status, Some(value))) if status == "finished" || status == "pruned" => {
            RunScore::Scored(value)
        }
        Some((status, _))
            if ["finished", "pruned", "failed", "diverged"].contains(&status.as_str()) =>
        {
            RunScore::Unscored
        }
        _ => RunScore::Unended,
    })
}

/// An experiment's best run on one metric: see [`best_run`].
#[derive(Debug, Clone, PartialEq)]
pub struct BestRun {
    pub run_id: String,
    /// Its best value of the metric, and the step it was evaluated at.
    pub value: f64,
    pub step: u64,
    /// How many of the experiment's runs were scored on the metric.
    pub scored: usize,
    /// Its resolved config as recorded (JSON; null if it does not parse).
    pub config: serde_json::Value,
}

/// Among `experiment`'s finished and pruned runs (those [`run_score`] scores), the one with
/// the best value of `metric` over its evaluations (the highest when `higher`), the earliest
/// step on a tie.
pub fn best_run(
    conn: &Connection,
    experiment: &str,
    metric: &str,
    higher: bool,
) -> Result<Option<BestRun>> {
    use rusqlite::OptionalExtension;
    let scored = "FROM evals e JOIN runs r ON r.id = e.run_id \
                  WHERE r.experiment = ?1 AND e.metric = ?2 AND r.status IN ('finished', 'pruned')";
    let order = if higher { "DESC" } else { "ASC" };
    let best: Option<(String, f64, i64, String)> = conn
        .query_row(
            &format!(
                "SELECT e.run_id, e.value, e.step, r.config {scored} AND e.value = e.value \
                 ORDER BY e.value {order}, e.step, e.run_id LIMIT 1"
            ),
            [experiment, metric],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((run_id, value, step, config)) = best else {
        return Ok(None);
    };
    let scored: i64 = conn.query_row(
        &format!("SELECT count(DISTINCT e.run_id) {scored}"),
        [experiment, metric],
        |r| r.get(0),
    )?;
    Ok(Some(BestRun {
        run_id,
        value,
        step: step as u64,
        scored: scored as usize,
        config: serde_json::from_str(&config).unwrap_or_default(),
    }))
}

/// An error and its causes on one line, leaving out a cause whose text the line already has
/// (an I/O error both wrapped and shown by its wrapper would otherwise appear twice), and
/// saying what SQLite's bare "disk I/O error" usually means and what to do with a damaged
/// database.
pub fn error_message(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut io_failure = None;
    let mut damaged = false;
    for cause in err.chain() {
        // SQLite's own error only repeats its wrapper's text behind a number.
        if let Some(sqlite) = cause.downcast_ref::<rusqlite::ffi::Error>() {
            match sqlite.code {
                rusqlite::ErrorCode::SystemIoFailure => io_failure = Some(sqlite.extended_code),
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt => {
                    damaged = true
                }
                _ => {}
            }
            continue;
        }
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    if let Some(code) = io_failure {
        out.push_str(&format!(
            " (SQLite code {code}: is the disk full, or its file system read-only or gone?)"
        ));
    }
    if damaged {
        // Every run keeps its own records, from which a sweep rebuilds the rows it misses.
        out.push_str(
            " (the database file is damaged, or not a database: move it aside with any -wal \
             and -shm file beside it, then sweep each spec again: its runs' rows, tags and \
             notes are rebuilt from each run's records.jsonl without training anything again)",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_leave_out_repeated_causes_and_explain_sqlite_io_failures() {
        let io = std::io::Error::other("No space left on device");
        let err = anyhow::Error::new(io).context("writing x: No space left on device");
        assert_eq!(error_message(&err), "writing x: No space left on device");

        // What opening a database on a full tmpfs gave (SQLITE_IOERR_SHMSIZE).
        let sqlite = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(4874),
            Some("disk I/O error".into()),
        );
        let err = anyhow::Error::new(sqlite).context("opening results/runs.sqlite");
        assert_eq!(
            error_message(&err),
            "opening results/runs.sqlite: disk I/O error (SQLite code 4874: is the disk full, \
             or its file system read-only or gone?)"
        );
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(5), None);
        let text = error_message(&anyhow::Error::new(busy));
        assert!(
            text.contains("database is locked") && !text.contains("disk full"),
            "no hint for other SQLite errors: {text}"
        );
    }

    #[test]
    fn recorded_paths_are_found_from_elsewhere_and_in_a_moved_tree() {
        let root = tempfile::tempdir().unwrap();
        let results = root.path().join("copy/results");
        let run = results.join("exp/0123456789ab");
        std::fs::create_dir_all(run.join("samples")).unwrap();
        std::fs::write(run.join("samples/step-1.png"), "png").unwrap();
        let db = results.join("runs.sqlite");
        std::fs::write(&db, "").unwrap();
        // Recorded relative to the project (the sweep ran in `copy/`).
        let relative = Path::new("results/exp/0123456789ab/samples/step-1.png");
        assert_eq!(locate(&db, relative), Some(run.join("samples/step-1.png")));
        // Recorded absolute on another machine; the tree was copied here.
        let absolute = Path::new("/scratch/me/results/exp/0123456789ab");
        assert_eq!(locate(&db, absolute), Some(run.clone()));
        assert_eq!(locate(&db, &run), Some(run.clone()), "as given");
        assert_eq!(
            locate(&db, Path::new("/scratch/me/results/exp/ffffffffffff")),
            None
        );
        assert_eq!(
            locate(&db, Path::new("/elsewhere/runs.sqlite")),
            None,
            "not a bare name"
        );
    }

    #[test]
    fn a_lock_timeout_is_a_number_of_seconds_up_to_a_day() {
        assert_eq!(parse_busy_timeout("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_busy_timeout(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_busy_timeout("86400"),
            Some(Duration::from_secs(86_400))
        );
        for bad in ["-1", "1e300", "NaN", "inf", "30s", ""] {
            assert_eq!(parse_busy_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn migrations_are_idempotent_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(open(&path).unwrap());
        let conn = open(&path).unwrap();
        let version = conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .unwrap() as usize;
        assert_eq!(version, MIGRATIONS.len());
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = format!("{:#}", open(&path).unwrap_err());
        assert!(
            err.contains("migrating")
                && err.contains(&format!(
                    "schema version 99, newer than this runner's {} (runner {}): a newer runner",
                    MIGRATIONS.len(),
                    crate::VERSION
                )),
            "{err}"
        );
    }

    #[test]
    fn reading_a_database_an_older_runner_wrote_upgrades_it_first() {
        // `runner runs` on it failed: "no such column: r.heartbeat_at".
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        let conn = Connection::open(&path).unwrap();
        for migration in &MIGRATIONS[..2] {
            conn.execute_batch(migration).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        drop(conn);
        let conn = open_read_only(&path).unwrap();
        assert_eq!(schema_version(&conn), MIGRATIONS.len());
        conn.query_row("SELECT count(heartbeat_at) FROM runs", [], |_| Ok(()))
            .unwrap();
    }

    #[test]
    fn connections_opening_a_fresh_database_at_once_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    barrier.wait();
                    open(&path).unwrap();
                });
            }
        });
        assert_eq!(schema_version(&open(&path).unwrap()), MIGRATIONS.len());
    }

    fn schema_version(conn: &Connection) -> usize {
        conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .unwrap() as usize
    }

    #[test]
    fn an_immutable_uri_opens_paths_with_reserved_characters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd?dir #1%").join("db.sqlite");
        drop(open(&path).unwrap());
        let conn = Connection::open_with_flags(
            immutable_uri(&path),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        assert_eq!(schema_version(&conn), MIGRATIONS.len());
    }
}
