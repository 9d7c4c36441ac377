//! `runner bench`: how fast a training step is, against the machine's own arithmetic peak.
//!
//! Steps run on synthetic digits (timing does not depend on pixel values) after a warm-up;
//! the figures are the median and spread of wall-clock ms per step, images per second, the
//! step's analytic FLOPs and the GFLOP/s that makes. The peak is a large f32 matrix product
//! through burn's own matmul (the same gemm the convolutions use), measured in the same process.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;

use crate::model::{ClassicOptions, DcganOptions, GanOptions, ModelConfig};
use crate::spec::RunConfig;

/// Timings of one model, in milliseconds per step unless said otherwise.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepTimes {
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    pub steps: usize,
    /// Steps between reads of the losses.
    pub read_every: usize,
    /// Whether the steps were one step captured as a device graph and replayed
    /// ([`crate::train::graph`]).
    pub graph: bool,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub images_per_s: f64,
    pub gflop_per_step: f64,
    pub gflop_per_s: f64,
    /// Share of the measured machine peak, in percent.
    pub percent_of_peak: f64,
    /// Peak resident memory of the process so far, MiB.
    pub peak_rss_mib: f64,
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

/// GFLOP/s of `n` x `n` f32 matrix products on the selected device, the best of a few timings
/// of a chain of products (each one's output is the next one's input) that ends in reading one
/// number. The chain and the final read make a GPU finish every product inside the timing:
/// reading back each product on its own let Vulkan report impossible rates.
pub fn machine_peak_gflops(n: usize) -> f64 {
    const CHAIN: usize = 2;
    let device = crate::backend::device();
    let a = Tensor::<2>::random([n, n], Distribution::Default, &device);
    // Entries averaging 1/n keep every product's values near the first's.
    let b = Tensor::<2>::random([n, n], Distribution::Default, &device) * (2.0 / n as f64);
    let chain = || {
        let product = (0..CHAIN).fold(a.clone(), |c, _| c.matmul(b.clone()));
        product.sum().into_scalar::<f32>()
    };
    chain(); // warm-up (and, on a GPU, kernel compilation and tuning)
    let best = (0..3)
        .map(|_| {
            let start = Instant::now();
            chain();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * (n as f64).powi(3) * CHAIN as f64 / best / 1e9
}

/// Peak resident set size of this process (Linux `VmHWM`), MiB; 0 where unknown.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// What `runner bench` times: `steps` steps after `warmup` untimed ones, their losses read every
/// `read_every` steps (see [`crate::train::step_times_ms`]); with `graph`, replays of the step
/// after them captured as a device graph ([`crate::train::graph`]).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: usize,
    pub steps: usize,
    pub read_every: usize,
    pub graph: bool,
}

/// Times training steps of `model` at `batch` as `timing` says.
pub fn time_steps(
    model: ModelConfig,
    batch: usize,
    timing: Timing,
    peak_gflops: f64,
) -> anyhow::Result<StepTimes> {
    let mut config = RunConfig {
        model,
        ..Default::default()
    };
    config.train.batch_size = batch;
    let Timing {
        warmup,
        steps,
        read_every,
        graph,
    } = timing;
    let ms = if graph {
        crate::train::graph::replayed_step_times_ms(&config, warmup, steps)?
    } else {
        crate::train::step_times_ms(&config, warmup, steps, read_every)?
    };
    let median = ms[ms.len() / 2];
    let gflop = config.model.step_flops(batch, config.train.d_steps) as f64 / 1e9;
    let gflop_per_s = gflop / (median / 1000.0);
    Ok(StepTimes {
        model: config.model.arch().to_string(),
        batch,
        threads: rayon::current_num_threads(),
        steps,
        read_every,
        graph,
        median_ms: median,
        min_ms: ms[0],
        max_ms: ms[ms.len() - 1],
        images_per_s: batch as f64 * 1000.0 / median,
        gflop_per_step: gflop,
        gflop_per_s,
        percent_of_peak: 100.0 * gflop_per_s / peak_gflops,
        peak_rss_mib: peak_rss_mib(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dcgan_step_is_about_45_gflop() {
        // SEED.md: one DCGAN step at batch 64 is about 45 GFLOP (analytic).
        let gflop = report_model("dcgan").unwrap().step_flops(64, 1) as f64 / 1e9;
        assert!((43.0..47.0).contains(&gflop), "{gflop}");
        let (g, d) = report_model("gan").unwrap().forward_flops(1);
        assert_eq!(g, 2 * (100 * 32 + 32 * 64 + 64 * 128 + 128 * 784));
        assert_eq!(d, 2 * (784 * 128 + 128 * 64 + 64 * 32 + 32));
        assert!(report_model("vae").is_err());
    }
}
