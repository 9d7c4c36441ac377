//! What a GPU computes, checked where no GPU is: the model code a GPU runs (burn's operations
//! where the CPU build has the runner's own kernels, `backend::gpu_path_on_cpu`) trains and
//! samples as the kernels do, to float rounding. One test in its own binary: the switch is
//! process-wide. (`make parity` checks both paths against the report's PyTorch loop too.)

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::Tensor;
use common::{fixture_dir, tiny_models, tiny_run};
use ganrunner::backend::gpu_path_on_cpu;
use ganrunner::data::{Digits, Split};
use ganrunner::model::{Conditioning, ModelConfig};
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

/// What one path made of a model: each step's D and G losses, the trained networks' running
/// statistics, and G's samples (in evaluation mode: burn's own convolution on the GPU path,
/// not the im2col one training differentiates).
struct Trained {
    losses: Vec<f32>,
    statistics: Vec<Vec<f32>>,
    samples: Vec<f32>,
}

fn train_and_sample(model: &ModelConfig, digits: &Digits, gpu_path: bool) -> Trained {
    gpu_path_on_cpu(gpu_path);
    let mut trainer = Trainer::new(&tiny_run(model.clone(), STEPS), digits);
    let losses = (1..=STEPS)
        .flat_map(|step| {
            let losses = trainer.step(step).unwrap();
            [losses.d, losses.g]
        })
        .collect();
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
    let mut statistics = RunningStatistics::default();
    trainer.generator().visit(&mut statistics);
    trainer.discriminator().visit(&mut statistics);
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

#[test]
fn the_gpu_path_trains_and_samples_as_the_cpu_kernels_do() {
    let digits = Digits::load(&fixture_dir(), Split::Train).unwrap();
    let mut models = tiny_models();
    // A conditional DCGAN: label channels into D's convolutions, a class head.
    if let ModelConfig::Dcgan(opts) = &models[1] {
        let mut opts = opts.clone();
        opts.conditional = Conditioning::Acgan;
        models.push(ModelConfig::Dcgan(opts));
    }
    for model in &models {
        let (kernels, gpu) = (
            train_and_sample(model, &digits, false),
            train_and_sample(model, &digits, true),
        );
        let losses = furthest(&gpu.losses, &kernels.losses, true);
        let samples = furthest(&gpu.samples, &kernels.samples, false);
        // Each statistic relative to the largest of its tensor.
        assert_eq!(gpu.statistics.len(), kernels.statistics.len());
        let statistics = (gpu.statistics.iter().zip(&kernels.statistics))
            .map(|(a, b)| furthest(a, b, false) / b.iter().fold(1e-6, |m, v| v.abs().max(m)))
            .fold(0.0, f32::max);
        eprintln!(
            "{}: losses {losses:.1e} apart (relative), running statistics {statistics:.1e}, \
             samples {samples:.1e}",
            model.arch()
        );
        assert!(
            losses < 1e-5 && statistics < 1e-5 && samples < 1e-5,
            "{model:?}: the GPU path's losses are {losses:e} apart, its running statistics \
             {statistics:e}, its samples {samples:e}:\n{:?}\n{:?}",
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
