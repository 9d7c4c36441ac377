//! ganrunner: a config-driven GAN experiment runner for MNIST-style digits.
//!
//! Data flows one way: [`spec`] (what to run: the TOML spec, its grid and search trials) ->
//! [`exec`] (runs the points: here or on Slurm, pruning as they go) -> [`train`] (one run on
//! burn, writing samples, losses, checkpoints and [`eval`] scores) -> [`track`] (the SQLite
//! database and each run's records) -> [`query`] and [`report`] (which read only the
//! database). [`data`] loads and fetches the digits, [`model`] builds the networks, [`backend`]
//! picks the device, [`budget`] refuses absurd sizes, [`detect`] spots failing GANs, [`images`]
//! writes what people look at, [`score`] is `runner eval`, [`generate`] is `runner generate`,
//! [`export`] is `runner export`, [`remove`] is `runner rm`, [`time_limit`] is `--timeout`; [`replicates`] and [`importance`] are the statistics of sweeps.
//! [`commands`] is the CLI's glue, one function per command.

pub mod backend;
pub mod bench;
pub mod budget;
pub mod commands;
pub mod console;
pub mod data;
pub mod detect;
pub mod eval;
pub mod exec;
pub mod export;
pub mod fsutil;
pub mod generate;
pub mod images;
pub mod importance;
pub mod model;
pub mod progress;
pub mod query;
pub mod remove;
pub mod replicates;
pub mod report;
pub mod score;
pub mod spec;
pub mod time_limit;
pub mod track;
pub mod train;

/// The runner's version as runs record it (`runs.version`) and `runner --version` prints: the
/// crate's, with the commit it was built from in its git checkout and a hash of how the sources
/// differ from it: `0.1.0 (58e9a61c2)`, `0.1.0 (58e9a61c2+modified.7211301)` (see `build.rs`).
pub const VERSION: &str = env!("GANRUNNER_VERSION");
