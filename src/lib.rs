//! ganrunner: a config-driven GAN experiment runner for MNIST-style digits.
//!
//! Data flows one way: [`spec`] (what to run) -> [`train`] (runs it on burn, writing samples,
//! losses and checkpoints) -> files people look at ([`images`]). [`data`] loads and fetches the
//! digits, [`model`] builds the networks, [`backend`] picks the device.

pub mod backend;
pub mod bench;
pub mod commands;
pub mod data;
pub mod eval;
pub mod fsutil;
pub mod generate;
pub mod images;
pub mod model;
pub mod progress;
pub mod query;
pub mod report;
pub mod score;
pub mod slurm;
pub mod spec;
pub mod sweep;
pub mod track;
pub mod train;
