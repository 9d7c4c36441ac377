//! What a GPU computes, checked where no GPU is: the model code a GPU runs (burn's operations
//! where the CPU build has the runner's own kernels, `backend::gpu_path_on_cpu`) trains and
//! samples as the kernels do, to float rounding, with either of its ways to convolve
//! (`backend::GpuConv`). One test in its own binary: the switches are process-wide. (`make
//! parity` checks both paths against the report's PyTorch loop too.)

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::Tensor;
use common::{fixture_dir, tiny_models, tiny_run};
use ganrunner::backend::{GpuConv, gpu_path_on_cpu, set_gpu_conv};
use ganrunner::data::{Digits, Split};
use ganrunner::model::{Conditioning, ModelConfig};
use ganrunner::spec::RunConfig;
use ganrunner::train::loss::LossKind;
use ganrunner::train::rng::Stream;
use ganrunner::train::{Trainer, eval_labels, sample_values};

const STEPS: u64 = 5;

/// The BatchNorm running statistics of a network, in order: no loss shows them, and G samples
/// with them.
#[derive(Default)]
struct RunningStatistics {
    path: Vec<String>,
    values: Vec<Vec<f32>>,
}

impl ModuleVisitor for RunningStatistics {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let last = self.path.last().map(String::as_str);
        if matches!(last, Some("running_mean" | "running_var")) {
            self.values
                .push(param.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
}

/// What one path made of a model: each step's D and G losses, the networks' running
/// statistics after the first step, and the trained G's samples (in evaluation mode: burn's
/// own convolution on the GPU path, not the im2col one training differentiates).
struct Trained {
    losses: Vec<f32>,
    statistics: Vec<Vec<f32>>,
    samples: Vec<f32>,
}

/// Trains through the CPU kernels (`gpu_path` None), or through the GPU path's model code
/// with its convolutions computed as `gpu_path` says.
fn train_and_sample(config: &RunConfig, digits: &Digits, gpu_path: Option<GpuConv>) -> Trained {
    gpu_path_on_cpu(gpu_path.is_some());
    set_gpu_conv(gpu_path.unwrap_or(GpuConv::Im2col));
    let model = &config.model;
    let mut trainer = Trainer::new(config, digits);
    let mut losses = vec![];
    let mut statistics = RunningStatistics::default();
    for step in 1..=STEPS {
        let step_losses = trainer.step(step).unwrap();
        losses.extend([step_losses.d, step_losses.g]);
        if step == 1 {
            trainer.generator().visit(&mut statistics);
            trainer.discriminator().visit(&mut statistics);
        }
    }
    let labels = eval_labels(model, 20);
    let samples = sample_values(
        trainer.generator(),
        model,
        20,
        7,
        Stream::Eval,
        labels.as_deref(),
    );
    gpu_path_on_cpu(false);
    Trained {
        losses,
        statistics: statistics.values,
        samples,
    }
}

fn furthest(a: &[f32], b: &[f32], relative: bool) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff =
        |(x, y): (&f32, &f32)| (x - y).abs() / if relative { y.abs().max(1e-3) } else { 1.0 };
    a.iter().zip(b).map(diff).fold(0.0, f32::max)
}

/// How far the GPU path may stray. Each step's losses, relative: 1e-5 (measured: 2e-7 at
/// most). The running statistics after the first step, relative to the largest of each
/// tensor: 1e-5 (measured: 2e-7; a running variance taken biased on the GPU path alone is 4e-5
/// off). Only after the first step: its forward passes all read the initial weights, while
/// Adam's first steps move every weight by about the learning rate whatever its gradient's
/// size, so a weight whose gradient is near zero moves one way or the other as rounding
/// decides, and so do the statistics of the layers it feeds (1e-3 apart after five steps with
/// spectral norm or WGAN-GP). The samples after the last step, in [-1, 1]: 1e-3 (measured:
/// 1.4e-5), which a sampling path computing something else would be far outside.
const LOSSES: f32 = 1e-5;
const STATISTICS: f32 = 1e-5;
const SAMPLES: f32 = 1e-3;

#[test]
fn the_gpu_path_trains_and_samples_as_the_cpu_kernels_do() {
    let digits = Digits::load(&fixture_dir(), Split::Train).unwrap();
    let mut configs: Vec<RunConfig> = tiny_models()
        .into_iter()
        .map(|model| tiny_run(model, STEPS))
        .collect();
    // A conditional DCGAN (label channels into D's convolutions, a class head) with spectral
    // norm, WGAN-GP and the moving average of G; the vanilla GAN with the hinge loss and R1.
    let (mut conditional, mut penalized) = (configs[1].clone(), configs[0].clone());
    if let ModelConfig::Dcgan(opts) = &mut conditional.model {
        (opts.conditional, opts.spectral_norm) = (Conditioning::Acgan, true);
    }
    (conditional.train.loss, conditional.train.g_ema) = (LossKind::WganGp, 0.9);
    (penalized.train.loss, penalized.train.r1_gamma) = (LossKind::Hinge, 1.0);
    configs.extend([conditional, penalized]);
    for config in &configs {
        let model = &config.model;
        let kernels = train_and_sample(config, &digits, None);
        // Both ways the GPU path can convolve: the im2col form and burn's own kernels.
        for conv in [GpuConv::Im2col, GpuConv::Burn] {
            let gpu = train_and_sample(config, &digits, Some(conv));
            let losses = furthest(&gpu.losses, &kernels.losses, true);
            let samples = furthest(&gpu.samples, &kernels.samples, false);
            assert_eq!(gpu.statistics.len(), kernels.statistics.len());
            let statistics = (gpu.statistics.iter().zip(&kernels.statistics))
                .map(|(a, b)| furthest(a, b, false) / b.iter().fold(1e-6, |m, v| v.abs().max(m)))
                .fold(0.0, f32::max);
            eprintln!(
                "{} ({:?}, {conv:?} convolutions): losses {losses:.1e} apart (relative), running \
                 statistics after step 1 {statistics:.1e}, samples {samples:.1e}",
                model.arch(),
                config.train.loss
            );
            assert!(
                losses < LOSSES && statistics < STATISTICS && samples < SAMPLES,
                "{config:?}, {conv:?} convolutions: the GPU path's losses are {losses:e} apart, \
                 its running statistics {statistics:e}, its samples {samples:e}:\n{:?}\n{:?}",
                gpu.losses,
                kernels.losses
            );
            // Other operations round otherwise (the vanilla GAN's only differences, burn's tanh
            // and LeakyReLU, leave its losses bitwise equal over these steps, not its samples).
            assert!(
                gpu.losses != kernels.losses || gpu.samples != kernels.samples,
                "{}: both paths gave the same bits: is the GPU path on?",
                model.arch()
            );
        }
    }
}
