//! The integration tests that share one process, linked as one test binary: each file of this
//! folder is a module (one concern each), and one binary links and starts once where ten took
//! ten links of the runner's library. `tests/gpu_path.rs` and `tests/parity.rs` stay binaries of
//! their own: they switch the process-wide GPU path on, which would change what tests running
//! beside them train.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod conditional;
mod data;
mod eval;
mod export;
mod hostile;
mod prune;
mod report;
mod sweep;
mod training;
