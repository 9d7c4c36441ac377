//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use rusqlite::Connection;

use ganrunner::model::{ClassicOptions, DcganOptions, GanOptions, ModelConfig};
use ganrunner::spec::{DataConfig, RunConfig};

/// The small real-MNIST fixture: 600 training and 200 test digits as gzipped IDX.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mnist-mini")
}

/// Tiny versions of the three model families, fast enough for tests.
pub fn tiny_models() -> Vec<ModelConfig> {
    vec![
        ModelConfig::Gan(GanOptions {
            latent_dim: 8,
            g_hidden: vec![8, 16],
            d_hidden: vec![16, 8],
            ..Default::default()
        }),
        ModelConfig::Dcgan(DcganOptions {
            latent_dim: 8,
            g_channels: [8, 4],
            d_channels: vec![4, 4, 8, 8],
            ..Default::default()
        }),
        ModelConfig::DcganClassic(ClassicOptions {
            latent_dim: 8,
            g_channels: [16, 8, 4],
            d_channels: [4, 8, 16],
        }),
    ]
}

/// The `[model]` table of the tiny vanilla GAN of [`tiny_models`], for spec files.
pub fn tiny_gan_model_toml() -> String {
    format!("[model]\n{}", toml::to_string(&tiny_models()[0]).unwrap())
}

/// A short run of `model` on the fixture.
pub fn tiny_run(model: ModelConfig, steps: u64) -> RunConfig {
    let mut config = RunConfig {
        data: DataConfig {
            dir: Some(fixture_dir()),
            ..Default::default()
        },
        model,
        ..Default::default()
    };
    config.train.steps = Some(steps);
    config.train.batch_size = 16;
    config.log.sample_every = 5;
    config.log.checkpoint_every = 5;
    config.log.eval_samples = 0;
    config
}

/// The `runner` binary.
pub fn runner() -> Command {
    Command::cargo_bin("runner").unwrap()
}

/// The tracking database of a test's working directory.
pub fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("results/runs.sqlite")).unwrap()
}

/// The single integer a query returns.
pub fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}
