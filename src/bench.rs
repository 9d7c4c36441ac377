//! `runner bench`: how long one training step takes, measured on synthetic digits.

use std::time::Instant;

use crate::data::Digits;
use crate::model::{ClassicOptions, DcganOptions, GanOptions, ModelConfig};
use crate::spec::RunConfig;
use crate::train::Trainer;

/// Timings of a benchmark, in milliseconds per step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepTimes {
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    pub steps: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub images_per_s: f64,
}

/// The report's model of an architecture, by name.
pub fn report_model(arch: &str) -> anyhow::Result<ModelConfig> {
    Ok(match arch {
        "gan" => ModelConfig::Gan(GanOptions::default()),
        "dcgan" => ModelConfig::Dcgan(DcganOptions::default()),
        "dcgan-classic" => ModelConfig::DcganClassic(ClassicOptions::default()),
        other => anyhow::bail!("unknown model `{other}`: use gan, dcgan or dcgan-classic"),
    })
}

/// Times `steps` training steps of `model` at `batch` after `warmup` untimed ones.
pub fn time_steps(model: ModelConfig, batch: usize, warmup: usize, steps: usize) -> StepTimes {
    let mut config = RunConfig {
        model,
        ..Default::default()
    };
    config.train.batch_size = batch;
    // Synthetic digits: timing does not depend on pixel values.
    let n = batch * 4;
    let digits = Digits {
        pixels: (0..n * 784).map(|i| (i * 7 % 256) as u8).collect(),
        labels: vec![0; n],
        side: 28,
    };
    let mut trainer = Trainer::new(&config, &digits);
    for step in 1..=warmup as u64 {
        trainer.step(step);
    }
    let mut ms: Vec<f64> = (0..steps as u64)
        .map(|i| {
            let start = Instant::now();
            trainer.step(warmup as u64 + 1 + i);
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    StepTimes {
        model: config.model.arch().to_string(),
        batch,
        threads: rayon::current_num_threads(),
        steps,
        median_ms: median,
        min_ms: ms[0],
        max_ms: ms[ms.len() - 1],
        images_per_s: batch as f64 * 1000.0 / median,
    }
}
