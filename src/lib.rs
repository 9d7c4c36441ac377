//! ganrunner: a config-driven GAN experiment runner for MNIST-style digits.
//!
//! Data flows one way: [`spec`] (what to run) -> [`train`] (runs it on burn, writing samples,
//! losses, checkpoints and [`eval`] scores) -> [`track`] (the SQLite database, fed by [`sweep`]
//! locally or by [`slurm`] tasks' records) -> [`query`] and [`report`] (which read only the
//! database). [`data`] loads and fetches the digits, [`model`] builds the networks, [`backend`]
//! picks the device, [`images`] writes what people look at, [`score`] is `runner eval`,
//! [`remove`] is `runner rm`; [`replicates`] and [`importance`] are the statistics of sweeps.

pub mod backend;
pub mod bench;
pub mod budget;
pub mod commands;
pub mod console;
pub mod data;
pub mod detect;
pub mod eval;
pub mod fsutil;
pub mod generate;
pub mod images;
pub mod importance;
pub mod model;
pub mod progress;
pub mod prune;
pub mod query;
pub mod remove;
pub mod replicates;
pub mod report;
pub mod score;
pub mod search;
pub mod slurm;
pub mod spec;
pub mod sweep;
pub mod track;
pub mod train;
