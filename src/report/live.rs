//! The report kept current while a sweep trains, so that it can be watched in a browser as
//! runs progress (as W&B's dashboard is): a thread rewrites it every [`EVERY`], or less often
//! when writing it takes long (at most 5% of one core), until the sweep ends. Its pages say so
//! and reload themselves as often; the sweep's last report does not.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the report is rewritten while a sweep runs.
pub const EVERY: Duration = Duration::from_secs(60);

/// A report being rewritten in the background; dropping it stops that (waiting for a write
/// under way to end, never leaving a half-written site).
pub struct Live {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Rewrites the report of `db` into `out` every `every` until the result is dropped. A write
/// that fails (the database busy, the disk full) is reported once, and tried again later:
/// the runs go on either way.
pub fn live(db: PathBuf, out: PathBuf, every: Duration) -> Live {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let mut wait = every;
        let mut warned = false;
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
            let started = Instant::now();
            match super::write_site(&db, &out, None, Some(wait)) {
                Ok(_) => warned = false,
                Err(err) if !warned => {
                    crate::errln!("warning: the report could not be rewritten: {err:#}");
                    warned = true;
                }
                Err(_) => {}
            }
            wait = every.max(started.elapsed() * 20);
        }
    });
    Live {
        stop: Some(stop),
        thread: Some(thread),
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Closing the channel wakes the thread at once.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_rewritten_until_dropped_and_dropping_stops_it_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("runs.sqlite");
        crate::track::Tracker::start(&db).unwrap().close().unwrap();
        let out = dir.path().join("report");
        let index = out.join("index.html");
        let refreshing = live(db.clone(), out.clone(), Duration::from_millis(20));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !index.exists() {
            assert!(Instant::now() < deadline, "no report after 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(refreshing);
        let page = std::fs::read_to_string(&index).unwrap();
        assert!(
            page.contains(r#"<meta http-equiv="refresh" content=""#),
            "{page}"
        );
        assert!(page.contains("A sweep is running"));
        super::super::write(&db, &out, None).unwrap();
        let page = std::fs::read_to_string(&index).unwrap();
        assert!(!page.contains("refresh") && !page.contains("A sweep is running"));
        std::fs::remove_dir_all(&out).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!out.exists(), "rewritten after it was dropped");

        let hourly = live(db, out.clone(), Duration::from_secs(3600));
        let started = Instant::now();
        drop(hourly);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the stop waited"
        );
        assert!(!out.exists(), "written before its first hour");
    }
}
