//! `records.jsonl`: each run's own copy of its database events, one flushed JSON line per
//! event, in its run directory.
//!
//! Written before the database is (by local sweeps and by Slurm tasks alike), it is what the
//! database is rebuilt from: a later sweep replays it when the database missed events (a
//! failed write, a new or deleted database), and Slurm's `--collect` replays tasks' files.
//! Replay is idempotent. A line cut short by a kill is skipped; a damaged one is reported.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Event;

/// The records file of a run directory.
pub fn path(run_dir: &Path) -> PathBuf {
    run_dir.join("records.jsonl")
}

/// One line: an event and who wrote it (`local:<host>:<pid>` or a Slurm task `<job>_<index>`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Line {
    pub task: String,
    pub event: Event,
}

/// Appends a run's events to its records file.
pub struct RecordsFile {
    pub task: String,
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl RecordsFile {
    /// Opens the records of `run_dir` for `task`: a fresh start replaces the records of earlier
    /// attempts, a resume adds to them. The directory must exist (its lock made it): a run
    /// directory that `runner rm` deleted is not made again to hold one line.
    pub fn open(run_dir: &Path, task: String, fresh: bool) -> Result<RecordsFile> {
        let path = path(run_dir);
        let mut file = if fresh {
            std::fs::File::create(&path)
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
        }
        .with_context(|| format!("opening {}", path.display()))?;
        // A line torn by a kill must not swallow the first line appended after it.
        let torn = last_byte(&path).is_some_and(|last| last != b'\n');
        if torn {
            file.write_all(b"\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(RecordsFile {
            task,
            path,
            file: Mutex::new(file),
        })
    }

    /// Appends `event` as one line (a single write, so a kill leaves whole lines behind).
    pub fn write(&self, event: Event) -> Result<(), String> {
        let line = Line {
            task: self.task.clone(),
            event,
        };
        let mut text = serde_json::to_string(&line)
            .map_err(|err| format!("recording in {}: {err}", self.path.display()))?;
        text.push('\n');
        let mut file = self.file.lock().expect("records lock");
        file.write_all(text.as_bytes())
            .map_err(|err| format!("writing {}: {err}", self.path.display()))
    }
}

/// The last byte of a file (read alone: records files grow with every step).
fn last_byte(path: &Path) -> Option<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::End(-1)).ok()?;
    let mut byte = [0u8];
    file.read_exact(&mut byte).ok()?;
    Some(byte[0])
}

/// The complete lines of `run_dir`'s records (none when it has no records file).
pub fn read(run_dir: &Path) -> Vec<Line> {
    read_checked(run_dir).lines
}

/// What a records file holds.
#[derive(Default)]
pub struct Records {
    /// Its readable lines, in order.
    pub lines: Vec<Line>,
    /// The 1-based numbers of lines that are damaged (altered, not merely cut short by a
    /// kill): their events are lost to a replay, which says so.
    pub damaged: Vec<usize>,
}

impl Records {
    /// What a replay of the records of `run_dir` misses, for the user: none when nothing.
    pub fn damage(&self, run_dir: &Path) -> Option<String> {
        let lines: Vec<String> = self.damaged.iter().map(usize::to_string).collect();
        (!lines.is_empty()).then(|| {
            format!(
                "{} has damaged lines ({}); their events are skipped",
                path(run_dir).display(),
                lines.join(", ")
            )
        })
    }
}

/// Reads `run_dir`'s records, telling lines cut short by a kill (skipped: their event was
/// never acknowledged) from damaged ones.
pub fn read_checked(run_dir: &Path) -> Records {
    parse(run_dir, |_| false)
}

/// The complete lines of `run_dir`'s records but its logged losses (`Metric` events), which
/// are passed over unparsed: they are most of a file, and what pruning decisions, which read
/// every run of a sweep at each evaluation, never look at.
pub fn read_without_losses(run_dir: &Path) -> Vec<Line> {
    // The event's name follows the task, a JSON string whose quotes inside are escaped, so
    // no other line holds the marker.
    const LOSS: &[u8] = br#","event":{"Metric":"#;
    parse(run_dir, |text| text.windows(LOSS.len()).any(|w| w == LOSS)).lines
}

/// Reads `run_dir`'s records, but the lines `skip` passes over.
fn parse(run_dir: &Path, skip: impl Fn(&[u8]) -> bool) -> Records {
    // Not a regular file (a link to a device) holds no records, rather than being read forever.
    let Ok(bytes) = crate::fsutil::read_regular_file(&path(run_dir), u64::MAX) else {
        return Records::default();
    };
    let mut records = Records::default();
    for (i, text) in bytes.split(|&b| b == b'\n').enumerate() {
        if text.iter().all(u8::is_ascii_whitespace) || skip(text) {
            continue;
        }
        match serde_json::from_slice(text) {
            Ok(line) => records.lines.push(line),
            Err(err) if err.is_eof() => {}
            Err(_) => records.damaged.push(i + 1),
        }
    }
    records
}

/// How the recorded history of a run ends: the status of its last `RunEnded` after its last
/// `RunStarted` (`running` when it never ended), or `None` without records.
pub fn last_status(lines: &[Line]) -> Option<String> {
    let mut status = None;
    for line in lines {
        match &line.event {
            Event::RunStarted { .. } => status = Some("running".to_string()),
            Event::RunEnded { status: s, .. } => status = Some(s.clone()),
            _ => {}
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(status: &str) -> Event {
        Event::RunEnded {
            run_id: "r".into(),
            status: status.into(),
            steps_done: 3,
            error: None,
            at: 0.0,
        }
    }

    #[test]
    fn a_deleted_run_directory_is_not_made_again_for_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let err = RecordsFile::open(&run, "eval:h:1".into(), false)
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("run/records.jsonl"), "{err:#}");
        assert!(!run.exists());
    }

    #[test]
    fn reading_without_losses_passes_over_the_loss_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        // A task that spells the marker (JSON escapes its quotes) is not taken for a loss.
        let task = r#"x","event":{"Metric":"#;
        let records = RecordsFile::open(dir.path(), task.into(), true).unwrap();
        let metric = |name: &str| Event::Metric {
            run_id: "r".into(),
            step: 1,
            name: name.into(),
            value: 0.5,
            at: 0.0,
            seconds: Some(1.0),
        };
        let eval = Event::Eval {
            run_id: "r".into(),
            step: 1,
            metrics: vec![("fid".into(), 3.0)],
            seconds: Some(1.0),
        };
        for event in [metric("d_loss"), eval, metric("g_loss"), ended("finished")] {
            records.write(event).unwrap();
        }
        let json = |lines: Vec<Line>| -> Vec<String> {
            (lines.iter())
                .map(|line| serde_json::to_string(line).unwrap())
                .collect()
        };
        let all = json(read(dir.path()));
        assert_eq!(all.len(), 4);
        let others: Vec<String> = (all.iter())
            .filter(|line| !line.contains("d_loss") && !line.contains("g_loss"))
            .cloned()
            .collect();
        assert_eq!(others.len(), 2);
        assert_eq!(json(read_without_losses(dir.path())), others);
    }

    #[test]
    fn lines_round_trip_a_torn_line_is_skipped_damage_is_told_and_fresh_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let records = RecordsFile::open(dir.path(), "local:h:1".into(), true).unwrap();
        records.write(ended("interrupted")).unwrap();
        drop(records);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .unwrap();
        file.write_all(b"{\"task\":\"x\",\"eve").unwrap();
        let lines = read(dir.path());
        assert_eq!(lines.len(), 1);
        assert_eq!(last_status(&lines).as_deref(), Some("interrupted"));
        let again = RecordsFile::open(dir.path(), "local:h:2".into(), false).unwrap();
        again.write(ended("finished")).unwrap();
        assert_eq!(last_status(&read(dir.path())).as_deref(), Some("finished"));
        assert!(
            read_checked(dir.path()).damaged.is_empty(),
            "a torn line is not damage"
        );
        // Altered lines (a flipped byte, bytes that are not text) are told apart, and the
        // lines after them still read.
        drop(again);
        let mut text = std::fs::read(path(dir.path())).unwrap();
        let first_colon = text.iter().position(|&b| b == b':').unwrap();
        text[first_colon] = b'!';
        text.extend_from_slice(b"\xff\xfe not text\n");
        text.extend_from_slice(&std::fs::read(path(dir.path())).unwrap());
        std::fs::write(path(dir.path()), &text).unwrap();
        let checked = read_checked(dir.path());
        assert_eq!(checked.damaged, [1, 4]);
        assert_eq!(checked.lines.len(), 3);
        drop(RecordsFile::open(dir.path(), "local:h:3".into(), true).unwrap());
        assert!(read(dir.path()).is_empty());
        assert_eq!(last_status(&[]), None);
    }
}
