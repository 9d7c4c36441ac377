//! Claims: which process trains a run, so that sweeps started at once on one database never
//! train the same run twice.
//!
//! A process claims a run in a write-locked transaction before training it: the run's row
//! gets `owner = "<host>:<pid>"` and a `heartbeat_at` that the process's tracker refreshes
//! every [`HEARTBEAT`] while it holds runs. Another process finds the run held while its
//! status is `pending` or `running` and its owner is alive: on the same host, while that pid
//! exists (a killed owner's runs are taken over at once); on another host, until its
//! heartbeat is [`LEASE_SECS`] old.

use std::time::Duration;

use anyhow::Result;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::RunRecord;

/// How often a process refreshes the heartbeat of the runs it holds.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Seconds without a heartbeat after which a claim lapses (and `runner runs` shows the run
/// as `orphaned`).
pub const LEASE_SECS: f64 = 60.0;

/// A process, as claims name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
}

impl Owner {
    pub fn this_process() -> Owner {
        Owner {
            host: super::hostname(),
            pid: std::process::id(),
        }
    }

    /// `host:pid`, as stored in `runs.owner`.
    pub fn tag(&self) -> String {
        format!("{}:{}", self.host, self.pid)
    }

    pub fn parse(tag: &str) -> Option<Owner> {
        let (host, pid) = tag.rsplit_once(':')?;
        Some(Owner {
            host: host.to_string(),
            pid: pid.parse().ok()?,
        })
    }
}

/// Whether a process of this host is running (a zombie is not). Without `/proc`, unknown.
fn local_pid_alive(pid: u32) -> Option<bool> {
    if !std::path::Path::new("/proc/self").exists() {
        return None;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Some(false);
    };
    // The state follows the parenthesised command name, which may itself hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    Some(!matches!(state, Some("Z" | "X")))
}

/// Whether the claim of `owner` (last heartbeat `heartbeat_at`) still holds at `now`: its
/// heartbeat is fresh and, on this host, its process exists (so a killed owner's runs are
/// free at once, and a reused pid does not hold them past the lease).
pub fn is_alive(owner: &str, heartbeat_at: Option<f64>, now: f64) -> bool {
    let me = Owner::this_process();
    let fresh = heartbeat_at.is_some_and(|t| now - t < LEASE_SECS);
    match Owner::parse(owner) {
        Some(o) if o == me => true,
        Some(o) if o.host == me.host => fresh && local_pid_alive(o.pid) != Some(false),
        _ => fresh,
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This process now holds the run; `status` is what the database said before (`None`
    /// for a run it did not know).
    Acquired { status: Option<String> },
    /// Another live process holds it.
    Held { by: String },
}

/// A run's claim as the database holds it.
pub struct ClaimRow {
    pub status: String,
    pub owner: Option<String>,
    pub heartbeat_at: Option<f64>,
    pub slurm_task: Option<String>,
}

impl ClaimRow {
    /// The claim of run `run_id`, if the database knows the run.
    pub fn read(conn: &Connection, run_id: &str) -> Result<Option<ClaimRow>> {
        Ok(conn
            .query_row(
                "SELECT status, owner, heartbeat_at, slurm_task FROM runs WHERE id = ?1",
                [run_id],
                |r| {
                    Ok(ClaimRow {
                        status: r.get(0)?,
                        owner: r.get(1)?,
                        heartbeat_at: r.get(2)?,
                        slurm_task: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Who holds the run at `now`, when it is not `me`: a live process training it, or the
    /// Slurm task it is queued as.
    pub fn holder(&self, me: &str, now: f64) -> Option<Holder> {
        if self.status != "running" && self.status != "pending" {
            return None;
        }
        let other_owner = self.owner.as_ref().filter(|owner| *owner != me);
        match (other_owner, &self.slurm_task) {
            (Some(owner), _) => {
                is_alive(owner, self.heartbeat_at, now).then(|| Holder::Process(owner.clone()))
            }
            (None, Some(task)) => Some(Holder::SlurmTask(task.clone())),
            (None, None) => None,
        }
    }
}

/// Who holds a run that another process may not train.
#[derive(Debug, Clone, PartialEq)]
pub enum Holder {
    /// A live process (`host:pid`) that trains it or has claimed it.
    Process(String),
    /// The Slurm array task it is queued as.
    SlurmTask(String),
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Holder::Process(owner) => write!(f, "{owner}"),
            Holder::SlurmTask(task) => write!(
                f,
                "Slurm task {task} (until it ends and a sweep of its spec merges it)"
            ),
        }
    }
}

/// Claims `record`'s run for `me` inside `tx` (a write-locked transaction), creating its row
/// as `pending` when the database does not know it yet.
pub fn claim(tx: &Transaction<'_>, record: &RunRecord, me: &str, now: f64) -> Result<Claim> {
    let status = match ClaimRow::read(tx, &record.id)? {
        Some(row) => {
            if let Some(by) = row.holder(me, now) {
                return Ok(Claim::Held { by: by.to_string() });
            }
            Some(row.status)
        }
        None => {
            super::writer::upsert_run(tx, record, "pending", None)?;
            None
        }
    };
    tx.execute(
        "UPDATE runs SET owner = ?2, heartbeat_at = ?3 WHERE id = ?1",
        params![record.id, me, now],
    )?;
    Ok(Claim::Acquired { status })
}

/// Refreshes the heartbeat of every run `me` holds.
pub fn heartbeat(conn: &Connection, me: &str) -> Result<()> {
    conn.execute(
        "UPDATE runs SET heartbeat_at = ?2 WHERE owner = ?1 AND status IN ('pending', 'running')",
        params![me, super::now()],
    )?;
    Ok(())
}

/// SQL for a run's status as people should read it: `running` whose owner is gone shows as
/// `orphaned` (the next sweep resumes it). A connection of [`super::open`] or
/// [`super::open_read_only`] has [`register_owner_alive`]'s function.
pub fn status_sql(alias: &str) -> String {
    format!(
        "CASE WHEN {alias}.status = 'running' AND NOT owner_alive({alias}.owner, {alias}.heartbeat_at) \
         THEN 'orphaned' ELSE {alias}.status END"
    )
}

/// Gives `conn` the SQL function `owner_alive(owner, heartbeat_at)`, [`is_alive`] now: a run
/// whose process was killed on this host shows as `orphaned` at once, not a lease later.
pub fn register_owner_alive(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function("owner_alive", 2, FunctionFlags::SQLITE_UTF8, |ctx| {
        let owner: Option<String> = ctx.get(0)?;
        let heartbeat_at: Option<f64> = ctx.get(1)?;
        Ok(owner.is_some_and(|owner| is_alive(&owner, heartbeat_at, super::now())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_round_trip_and_liveness() {
        let me = Owner::this_process();
        assert_eq!(Owner::parse(&me.tag()), Some(me.clone()));
        assert!(is_alive(&me.tag(), None, 0.0), "this process is alive");
        let dead = Owner {
            host: me.host.clone(),
            pid: u32::MAX - 1,
        };
        assert!(!is_alive(&dead.tag(), Some(1e12), 1e12), "no such pid here");
        assert!(is_alive(
            "elsewhere:1",
            Some(100.0),
            100.0 + LEASE_SECS - 1.0
        ));
        assert!(!is_alive(
            "elsewhere:1",
            Some(100.0),
            100.0 + LEASE_SECS + 1.0
        ));
        assert!(!is_alive("elsewhere:1", None, 0.0));
    }

    #[test]
    fn a_live_claim_holds_and_a_dead_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::open(&dir.path().join("db.sqlite")).unwrap();
        let record = RunRecord {
            id: "r1".into(),
            experiment: "e".into(),
            config_json: "{}".into(),
            params: vec![],
            run_dir: "results/e/r1".into(),
            total_steps: Some(1),
            host: "h".into(),
            backend: "cpu".into(),
            data_id: "d".into(),
            version: None,
            kernels: None,
        };
        conn.execute(
            "INSERT INTO experiments VALUES ('e', '', 'e.toml', 'now')",
            [],
        )
        .unwrap();
        let mut claim_as = |me: &str, now: f64| {
            let tx = conn.transaction().unwrap();
            let c = claim(&tx, &record, me, now).unwrap();
            tx.commit().unwrap();
            c
        };
        assert_eq!(
            claim_as("elsewhere:1", 100.0),
            Claim::Acquired { status: None }
        );
        assert_eq!(
            claim_as("other:2", 110.0),
            Claim::Held {
                by: "elsewhere:1".into()
            }
        );
        assert_eq!(
            claim_as("other:2", 100.0 + LEASE_SECS + 1.0),
            Claim::Acquired {
                status: Some("pending".into())
            }
        );
    }
}
