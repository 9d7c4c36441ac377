//! The one writer of a process: a thread that owns the connection and commits what it is
//! sent in short write-locked transactions. Metric rows are keyed by (run, step, name): a
//! resumed run that logs a step again replaces the row, so replays and reruns never duplicate.
//!
//! A write that fails (disk full, read-only file, a lock held past the timeout) stops the
//! thread; from then on every [`TrackerHandle::record`] answers with that error at once, so
//! runs stop promptly instead of training on without a record.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Result, anyhow};
use rusqlite::{Connection, TransactionBehavior, params};

use super::claims::{self, Claim};
use super::{Event, RunRecord};

/// What the writer thread is sent.
enum Message {
    Event(Event),
    /// Replies once everything sent before it is committed.
    Flush(Sender<()>),
    /// Claims a run for this process (see [`claims::claim`]).
    Claim {
        record: RunRecord,
        reply: Sender<Result<Claim, String>>,
    },
}

/// The first write error of the thread, shared with every handle.
type Failure = Arc<Mutex<Option<String>>>;

/// The writer thread of a process.
pub struct Tracker {
    handle: TrackerHandle,
    thread: Option<JoinHandle<Result<()>>>,
}

/// A way for any thread to send the writer events and claims.
#[derive(Clone)]
pub struct TrackerHandle {
    sender: Sender<Message>,
    failure: Failure,
}

impl TrackerHandle {
    fn error(&self) -> String {
        self.failure
            .lock()
            .map(|f| f.clone())
            .ok()
            .flatten()
            .unwrap_or_else(|| "the database writer has stopped".into())
    }

    /// Queues `event`; fails at once when the writer has stopped on an error.
    pub fn record(&self, event: Event) -> Result<(), String> {
        self.sender
            .send(Message::Event(event))
            .map_err(|_| self.error())
    }

    /// Waits until everything sent so far is committed.
    pub fn flush(&self) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.sender
            .send(Message::Flush(tx))
            .map_err(|_| self.error())?;
        rx.recv().map_err(|_| self.error())
    }

    /// Claims `record`'s run for this process (creating its row when new).
    pub fn claim(&self, record: RunRecord) -> Result<Claim, String> {
        let (reply, rx) = mpsc::channel();
        self.sender
            .send(Message::Claim { record, reply })
            .map_err(|_| self.error())?;
        rx.recv().map_err(|_| self.error())?
    }
}

impl Tracker {
    pub fn start(path: &Path) -> Result<Tracker> {
        let conn = super::open(path)?;
        let (sender, receiver) = mpsc::channel();
        let failure = Failure::default();
        let thread_failure = failure.clone();
        let label = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("tracker".into())
            .spawn(move || {
                let mut flushes = Vec::new();
                let result = write_loop(conn, &receiver, &mut flushes);
                if let Err(err) = &result {
                    let message = format!(
                        "writing to the database {label}: {}",
                        super::error_message(err)
                    );
                    *thread_failure.lock().expect("failure lock") = Some(message);
                }
                // Senders and flushers see the thread gone only now, with its failure set.
                drop((receiver, flushes));
                result
            })?;
        Ok(Tracker {
            handle: TrackerHandle { sender, failure },
            thread: Some(thread),
        })
    }

    /// A handle for other threads.
    pub fn handle(&self) -> TrackerHandle {
        self.handle.clone()
    }

    /// Queues `event`; a failed write is reported by [`Tracker::close`].
    pub fn send(&self, event: Event) {
        let _ = self.handle.record(event);
    }

    /// Waits until everything sent so far is committed (or the writer has failed).
    pub fn flush(&self) {
        let _ = self.handle.flush();
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
        drop(std::mem::replace(&mut self.handle.sender, dead_sender));
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(anyhow!(self.handle.error())),
            Err(_) => Err(anyhow!("the tracker thread panicked")),
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Commits what `receiver` brings until every sender is gone; `flushes` holds the flushes
/// waiting for the current transaction.
fn write_loop(
    mut conn: Connection,
    receiver: &Receiver<Message>,
    flushes: &mut Vec<Sender<()>>,
) -> Result<()> {
    let me = claims::Owner::this_process().tag();
    let mut last_beat = Instant::now();
    loop {
        // Block for one message (beating the heart of this process's claims meanwhile), then
        // take whatever else is queued into the same transaction.
        let first = match receiver.recv_timeout(claims::HEARTBEAT) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => {
                claims::heartbeat(&conn, &me)?;
                last_beat = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Event(event) => apply(&tx, event)?,
                Message::Flush(reply) => flushes.push(reply),
                Message::Claim { record, reply } => {
                    let claimed = claims::claim(&tx, &record, &me, super::now());
                    let failed = claimed.as_ref().err().map(|e| format!("{e:#}"));
                    let _ = reply.send(claimed.map_err(|e| format!("{e:#}")));
                    if let Some(err) = failed {
                        return Err(anyhow!(err));
                    }
                }
            }
            next = receiver.try_recv().ok();
        }
        tx.commit()?;
        for reply in flushes.drain(..) {
            let _ = reply.send(());
        }
        if last_beat.elapsed() >= claims::HEARTBEAT {
            claims::heartbeat(&conn, &me)?;
            last_beat = Instant::now();
        }
    }
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
                for table in ["metrics", "samples", "checkpoints", "evals", "events"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE run_id = ?1"),
                        [&record.id],
                    )?;
                }
            }
            upsert_run(tx, &record, "running", Some(at))?;
        }
        Event::RunQueued { record, slurm_task } => {
            // A run that a live process took since the sweep planned it stays that process's
            // (its task will find the directory locked and leave it).
            let me = claims::Owner::this_process().tag();
            let taken = claims::ClaimRow::read(tx, &record.id)?
                .filter(|row| row.owner.is_some())
                .and_then(|row| row.holder(&me, super::now()));
            if taken.is_some() {
                return Ok(());
            }
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
            seconds,
        } => {
            tx.execute(
                "INSERT OR REPLACE INTO metrics (run_id, step, name, value, wall_time, seconds) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run_id, step as i64, name, value, at, seconds],
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
            seconds,
        } => {
            for (metric, value) in metrics {
                tx.execute(
                    "INSERT INTO evals (run_id, step, metric, value, seconds) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (run_id, step, metric) DO UPDATE
                     SET value = excluded.value, seconds = coalesce(excluded.seconds, seconds)",
                    params![run_id, step as i64, metric, value, seconds],
                )?;
            }
        }
        Event::Flagged {
            run_id,
            step,
            kind,
            detail,
            at,
        } => {
            tx.execute(
                "INSERT OR REPLACE INTO events (run_id, step, kind, detail, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run_id, step as i64, kind, detail, at],
            )?;
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
        Event::Annotated { run_id, run_dir } => {
            // A missing or damaged file replays nothing (the sender reported the damage), and
            // a run the database does not know keeps its file with nothing stored.
            if let Ok(Some(annotations)) = super::annotations::read(&run_dir) {
                super::annotations::store(tx, &run_id, &annotations)?;
            }
        }
    }
    Ok(())
}

/// Inserts a run or resets its record to `status` (started at `started_at`, or not yet).
pub(super) fn upsert_run(
    tx: &rusqlite::Transaction<'_>,
    record: &RunRecord,
    status: &str,
    started_at: Option<f64>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO runs (id, experiment, config, config_hash, status, started_at, host, backend, run_dir, total_steps, data_id, version, kernels)
         VALUES (?1, ?2, ?3, ?1, ?8, strftime('%Y-%m-%dT%H:%M:%SZ', ?9, 'unixepoch'), ?4, ?5, ?6, ?7, ?10, ?11, ?12)
         ON CONFLICT(id) DO UPDATE SET experiment = ?2, config = ?3, status = ?8,
            started_at = strftime('%Y-%m-%dT%H:%M:%SZ', ?9, 'unixepoch'), finished_at = NULL, host = ?4,
            backend = ?5, error = NULL, run_dir = ?6, total_steps = ?7, data_id = ?10, version = ?11,
            kernels = ?12",
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
            record.data_id,
            record.version,
            record.kernels,
        ],
    )?;
    for (key, value) in &record.params {
        let value = param_value(value);
        tx.execute(
            "INSERT INTO params (run_id, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT(run_id, key) DO UPDATE SET value = ?3",
            params![record.id, key, value],
        )?;
    }
    Ok(())
}

/// A setting as the `params` table holds it: integers and floats as numbers, booleans as 0
/// and 1, text bare, lists as JSON text.
pub fn param_value(value: &serde_json::Value) -> rusqlite::types::Value {
    match value {
        serde_json::Value::Number(n) if n.is_i64() => n.as_i64().expect("checked").into(),
        serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN).into(),
        serde_json::Value::Bool(b) => i64::from(*b).into(),
        serde_json::Value::String(s) => s.clone().into(),
        other => other.to_string().into(),
    }
}
