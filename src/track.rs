//! The tracking database: every experiment, run, hyperparameter, metric, sample and checkpoint
//! in one SQLite file (`results/runs.sqlite` by default), queried with plain SQL.
//!
//! The schema is versioned with `PRAGMA user_version` and upgraded by [`MIGRATIONS`]. The
//! database runs in WAL mode with a busy timeout; all writes of a process go through one
//! [`Tracker`] thread fed by a channel, in short transactions, so parallel runs never contend
//! for the lock. Metric rows are keyed by (run, step, name): a resumed run that logs a step
//! again replaces the row, so reruns never duplicate.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};

/// Schema migrations; entry i upgrades `user_version` i to i + 1.
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
];

/// The database's default place.
pub fn default_db() -> PathBuf {
    PathBuf::from("results/runs.sqlite")
}

/// Seconds since the Unix epoch: events carry the time they happened, so that records merged
/// later (from Slurm tasks) keep it.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Opens (creating and migrating) the database for writing.
pub fn open(path: &Path) -> Result<Connection> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&conn).with_context(|| format!("migrating {}", path.display()))?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<()> {
    let version = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    anyhow::ensure!(
        version <= MIGRATIONS.len(),
        "the database has schema version {version}, newer than this runner's {}",
        MIGRATIONS.len()
    );
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Opens the database read-only, refusing any statement that would write or attach.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    anyhow::ensure!(
        path.is_file(),
        "{}: no such database (run a sweep first)",
        path.display()
    );
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.authorizer(Some(|ctx: AuthContext<'_>| match ctx.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        _ => Authorization::Allow,
    }))?;
    Ok(conn)
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
}

/// A write for the tracker thread; also a line of a Slurm task's records file.
#[derive(Debug, Serialize, Deserialize)]
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
    /// Replies once everything sent before it is committed.
    #[serde(skip)]
    Flush(Sender<()>),
}

/// The one writer of a process: a thread that owns the connection and commits what it is
/// sent in short transactions.
pub struct Tracker {
    sender: Sender<Event>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Tracker {
    pub fn start(path: &Path) -> Result<Tracker> {
        let conn = open(path)?;
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tracker".into())
            .spawn(move || write_loop(conn, receiver))?;
        Ok(Tracker {
            sender,
            thread: Some(thread),
        })
    }

    /// A handle for other threads to send events with.
    pub fn sender(&self) -> Sender<Event> {
        self.sender.clone()
    }

    pub fn send(&self, event: Event) {
        // The thread only stops on a write error, which `close` reports.
        let _ = self.sender.send(event);
    }

    /// Waits until everything sent so far is committed.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Event::Flush(tx));
        let _ = rx.recv();
    }

    /// Commits what is left and stops the thread, returning its first error.
    pub fn close(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let (dead_sender, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.sender, dead_sender));
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the tracker thread panicked"))?
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn write_loop(mut conn: Connection, receiver: Receiver<Event>) -> Result<()> {
    // Block for one event, then take whatever else is queued into the same transaction.
    while let Ok(first) = receiver.recv() {
        let mut replies = Vec::new();
        let tx = conn.transaction()?;
        let mut next = Some(first);
        while let Some(event) = next {
            match event {
                Event::Flush(reply) => replies.push(reply),
                other => apply(&tx, other)?,
            }
            next = receiver.try_recv().ok();
        }
        tx.commit()?;
        for reply in replies {
            let _ = reply.send(());
        }
    }
    Ok(())
}

fn apply(tx: &rusqlite::Transaction<'_>, event: Event) -> Result<()> {
    match event {
        Event::Experiment {
            name,
            description,
            spec_path,
        } => {
            tx.execute(
                "INSERT INTO experiments (name, description, spec_path, updated_at) VALUES (?1, ?2, ?3, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
                 ON CONFLICT(name) DO UPDATE SET description = ?2, spec_path = ?3, updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
                params![name, description, spec_path],
            )?;
        }
        Event::RunStarted { record, fresh, at } => {
            if fresh {
                for table in ["metrics", "samples", "checkpoints", "evals"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE run_id = ?1"),
                        [&record.id],
                    )?;
                }
            }
            upsert_run(tx, &record, "running", Some(at))?;
        }
        Event::RunQueued { record, slurm_task } => {
            upsert_run(tx, &record, "pending", None)?;
            tx.execute(
                "UPDATE runs SET slurm_task = ?2 WHERE id = ?1",
                params![record.id, slurm_task],
            )?;
        }
        Event::Metric {
            run_id,
            step,
            name,
            value,
            at,
        } => {
            tx.execute(
                "INSERT OR REPLACE INTO metrics (run_id, step, name, value, wall_time) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, step as i64, name, value, at],
            )?;
            tx.execute(
                "UPDATE runs SET steps_done = max(steps_done, ?2) WHERE id = ?1",
                params![run_id, step as i64],
            )?;
        }
        Event::Sample { run_id, step, path } => {
            tx.execute(
                "INSERT OR REPLACE INTO samples (run_id, step, path) VALUES (?1, ?2, ?3)",
                params![run_id, step as i64, path],
            )?;
        }
        Event::Checkpoint { run_id, step, path } => {
            tx.execute(
                "INSERT OR REPLACE INTO checkpoints (run_id, step, path) VALUES (?1, ?2, ?3)",
                params![run_id, step as i64, path],
            )?;
        }
        Event::Eval {
            run_id,
            step,
            metrics,
        } => {
            for (metric, value) in metrics {
                tx.execute(
                    "INSERT OR REPLACE INTO evals (run_id, step, metric, value) VALUES (?1, ?2, ?3, ?4)",
                    params![run_id, step as i64, metric, value],
                )?;
            }
        }
        Event::CheckpointRemoved { run_id, step } => {
            tx.execute(
                "DELETE FROM checkpoints WHERE run_id = ?1 AND step = ?2",
                params![run_id, step as i64],
            )?;
        }
        Event::RunEnded {
            run_id,
            status,
            steps_done,
            error,
            at,
        } => {
            tx.execute(
                "UPDATE runs SET status = ?2, finished_at = strftime('%Y-%m-%dT%H:%M:%SZ', ?5, 'unixepoch'), steps_done = ?3, error = ?4 WHERE id = ?1",
                params![run_id, status, steps_done as i64, error, at],
            )?;
        }
        Event::Flush(_) => unreachable!("handled by the loop"),
    }
    Ok(())
}

/// Inserts a run or resets its record to `status` (started at `started_at`, or not yet).
fn upsert_run(
    tx: &rusqlite::Transaction<'_>,
    record: &RunRecord,
    status: &str,
    started_at: Option<f64>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO runs (id, experiment, config, config_hash, status, started_at, host, backend, run_dir, total_steps)
         VALUES (?1, ?2, ?3, ?1, ?8, strftime('%Y-%m-%dT%H:%M:%SZ', ?9, 'unixepoch'), ?4, ?5, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET experiment = ?2, config = ?3, status = ?8,
            started_at = strftime('%Y-%m-%dT%H:%M:%SZ', ?9, 'unixepoch'), finished_at = NULL, host = ?4,
            backend = ?5, error = NULL, run_dir = ?6, total_steps = ?7",
        params![
            record.id,
            record.experiment,
            record.config_json,
            record.host,
            record.backend,
            record.run_dir.display().to_string(),
            record.total_steps.map(|s| s as i64),
            status,
            started_at,
        ],
    )?;
    for (key, value) in &record.params {
        let value: rusqlite::types::Value = match value {
            serde_json::Value::Number(n) if n.is_i64() => n.as_i64().expect("checked").into(),
            serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN).into(),
            serde_json::Value::Bool(b) => i64::from(*b).into(),
            serde_json::Value::String(s) => s.clone().into(),
            other => other.to_string().into(),
        };
        tx.execute(
            "INSERT INTO params (run_id, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT(run_id, key) DO UPDATE SET value = ?3",
            params![record.id, key, value],
        )?;
    }
    Ok(())
}

/// This machine's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// The status of a run, if the database knows it.
pub fn run_status(conn: &Connection, run_id: &str) -> Result<Option<String>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row("SELECT status FROM runs WHERE id = ?1", [run_id], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Every (dotted key, value) leaf of a resolved config, for the `params` table.
pub fn flatten_params(config: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::Null => {}
            leaf => out.push((prefix.to_string(), leaf.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", config, &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(open(&path).unwrap_err().to_string().contains("migrating"));
    }

    #[test]
    fn params_flatten_to_dotted_keys() {
        let value = serde_json::json!({"train": {"lr": 0.1, "betas": [0.5, 0.9], "steps": null}, "model": {"arch": "gan"}});
        let flat = flatten_params(&value);
        assert_eq!(
            flat.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["model.arch", "train.betas", "train.lr"]
        );
    }
}
