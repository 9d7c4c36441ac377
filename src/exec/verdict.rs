//! What a sweep does with each of its runs, given what the database records of it and what
//! its directory holds: one decision, made by the sweep ([`super::run`]) and asked by
//! `--dry-run` and `--estimate` ([`super::recorded_states`]), so that they show what the sweep
//! then does.

use std::collections::BTreeMap;
use std::path::Path;

use super::prune::Pruning;
use crate::track::claims::{ClaimRow, Holder, Owner};
use crate::track::records;
use crate::train::checkpoint;

/// What a sweep does with one run.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Finished, its final checkpoint whole: skipped.
    Finished,
    /// Diverged, its directory kept: a result too, and training is deterministic (resumed, it
    /// would diverge again at the same step). Skipped; `--force` trains it again.
    Diverged,
    /// Being trained by another live process, or queued as a Slurm task: left to it.
    Held { by: String, queued: bool },
    /// Pruned, and its rung still does not keep it (or a failure detector stopped it).
    Pruned,
    /// Pruned at `rung`, which now keeps it: resumed from there.
    Promoted { rung: u64, why: String },
    /// Recorded as finished (or diverged) but its final checkpoint (or directory) is damaged
    /// or gone: trained again from its newest whole checkpoint.
    CheckpointLost,
    /// Trained: new, resumed from its newest checkpoint, or with `force` started over.
    Train,
}

impl Verdict {
    /// Whether the sweep trains the run.
    pub fn trains(&self) -> bool {
        matches!(
            self,
            Verdict::Promoted { .. } | Verdict::CheckpointLost | Verdict::Train
        )
    }
}

/// Decides, for a sweep run by this process (`force`: start every run over, but those other
/// processes hold).
pub struct Judge {
    force: bool,
    me: String,
    /// Each rung's evaluations, read once for all the pruned runs reconsidered.
    rung_values: BTreeMap<u64, Vec<f64>>,
}

impl Judge {
    pub fn new(force: bool) -> Judge {
        Judge {
            force,
            me: Owner::this_process().tag(),
            rung_values: BTreeMap::new(),
        }
    }

    /// The verdict on a run whose claim is `row` (none: the database does not know it) and
    /// whose files are in `dir`, under the sweep's `pruning`.
    pub fn verdict(
        &mut self,
        row: Option<&ClaimRow>,
        dir: &Path,
        pruning: Option<&Pruning>,
    ) -> Verdict {
        let status = row.map(|row| row.status.as_str());
        if !self.force {
            match status {
                Some("finished") if checkpoint::newest_is_intact(dir) => return Verdict::Finished,
                Some("diverged") if dir.is_dir() => return Verdict::Diverged,
                Some("finished" | "diverged") => return Verdict::CheckpointLost,
                _ => {}
            }
        }
        // (An executor's own claim closes the race with a process starting it now; this keeps
        // a Slurm sweep from queuing it.)
        if let Some(holder) = row.and_then(|row| row.holder(&self.me, crate::track::now())) {
            let queued = matches!(holder, Holder::SlurmTask(_));
            let by = holder.to_string();
            return Verdict::Held { by, queued };
        }
        // A pruned run stays pruned unless its rung now keeps it (a sweep whose spec no longer
        // prunes resumes it like any unfinished run).
        if let Some(pruning) = pruning.filter(|_| !self.force) {
            let lines = records::read_without_losses(dir);
            if records::last_status(&lines).as_deref() == Some("pruned") {
                return match pruning.reconsider(&lines, &mut self.rung_values) {
                    Some((rung, value, decision)) if decision.keep => Verdict::Promoted {
                        rung,
                        why: decision.describe(&pruning.rule.metric, value, rung),
                    },
                    _ => Verdict::Pruned,
                };
            }
        }
        Verdict::Train
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, owner: Option<&str>, slurm_task: Option<&str>) -> ClaimRow {
        ClaimRow {
            status: status.into(),
            owner: owner.map(Into::into),
            heartbeat_at: Some(crate::track::now()),
            slurm_task: slurm_task.map(Into::into),
        }
    }

    #[test]
    fn a_sweep_skips_what_is_done_or_held_and_trains_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let (there, gone) = (tmp.path(), tmp.path().join("gone"));
        let verdict = |force, row: Option<ClaimRow>, dir: &Path| {
            Judge::new(force).verdict(row.as_ref(), dir, None)
        };
        assert_eq!(verdict(false, None, &gone), Verdict::Train);
        // A finished run's final checkpoint, and a diverged run's directory, keep it a result.
        let finished = || Some(row("finished", None, None));
        assert_eq!(verdict(false, finished(), there), Verdict::CheckpointLost);
        let diverged = || Some(row("diverged", None, None));
        assert_eq!(verdict(false, diverged(), there), Verdict::Diverged);
        assert_eq!(verdict(false, diverged(), &gone), Verdict::CheckpointLost);
        assert_eq!(verdict(true, diverged(), there), Verdict::Train);
        for status in ["interrupted", "failed", "pending"] {
            let row = Some(row(status, None, None));
            assert_eq!(verdict(false, row, there), Verdict::Train, "{status}");
        }
        // Another live process (pid 1 is alive on this host), with or without --force.
        let host = crate::track::hostname();
        let live = || Some(row("running", Some(&format!("{host}:1")), None));
        for force in [false, true] {
            let held = verdict(force, live(), there);
            assert!(
                matches!(held, Verdict::Held { queued: false, .. }),
                "{held:?}"
            );
        }
        // Its process gone: orphaned, resumed.
        let dead = Some(row("running", Some(&format!("{host}:{}", u32::MAX)), None));
        assert_eq!(verdict(false, dead, there), Verdict::Train);
        // Queued as a Slurm task that has not started it.
        let queued = Some(row("pending", None, Some("4242_0")));
        let held = verdict(false, queued, there);
        assert!(
            matches!(held, Verdict::Held { queued: true, .. }),
            "{held:?}"
        );
        assert!(!held.trains() && Verdict::CheckpointLost.trains());
    }
}
