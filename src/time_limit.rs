//! `--timeout`: a limit on a command's wall time, as Optuna's `timeout` and Lightning's
//! `max_time` set one. When it passes it sets the command's stop flag, the one Ctrl-C sets, so
//! runs in training checkpoint and stop and queued ones do not start: the same command resumes
//! them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

const ARMED: u8 = 0;
const FIRED: u8 = 1;
const DISARMED: u8 = 2;

/// A timer that stops a command once its time is up, unless disarmed first.
pub struct TimeLimit {
    limit: Duration,
    state: Arc<AtomicU8>,
}

impl TimeLimit {
    /// Starts the clock: after `limit`, `stop` is set.
    pub fn start(limit: Duration, stop: &Arc<AtomicBool>) -> TimeLimit {
        let state = Arc::new(AtomicU8::new(ARMED));
        let (timer_state, stop) = (Arc::clone(&state), Arc::clone(stop));
        // A sleeping thread the process leaves behind when it ends first; disarmed, it does
        // nothing when it wakes.
        std::thread::Builder::new()
            .name("timeout".into())
            .spawn(move || {
                std::thread::sleep(limit);
                if timer_state
                    .compare_exchange(ARMED, FIRED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    stop.store(true, Ordering::SeqCst);
                }
            })
            .expect("spawning the timeout thread");
        TimeLimit { limit, state }
    }

    /// Stops the clock once the work is over; whether the limit had stopped it first.
    pub fn disarm(&self) -> bool {
        let disarmed =
            self.state
                .compare_exchange(ARMED, DISARMED, Ordering::SeqCst, Ordering::SeqCst);
        disarmed == Err(FIRED)
    }

    /// The limit as it was given, for messages: `1h 30m`.
    pub fn limit(&self) -> String {
        humantime::format_duration(self.limit).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_that_passes_sets_the_stop_flag_and_one_disarmed_in_time_does_not() {
        let stop = Arc::new(AtomicBool::new(false));
        let limit = TimeLimit::start(Duration::from_millis(20), &stop);
        std::thread::sleep(Duration::from_millis(500));
        assert!(stop.load(Ordering::SeqCst));
        assert!(limit.disarm(), "it fired");
        assert_eq!(limit.limit(), "20ms");

        let stop = Arc::new(AtomicBool::new(false));
        let limit = TimeLimit::start(Duration::from_millis(200), &stop);
        assert!(!limit.disarm());
        std::thread::sleep(Duration::from_millis(500));
        assert!(!stop.load(Ordering::SeqCst), "disarmed before its time");
    }
}
