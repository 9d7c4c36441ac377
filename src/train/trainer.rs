//! The step: [`Trainer`] holds G, D (and G's moving average), their optimizers and the data,
//! takes the report's step (a G update, then `d_steps` D updates), and saves, samples,
//! evaluates and resumes its state.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, RmsPropConfig};
use burn::prelude::*;

use super::adam::StepAdam;
use super::batches::Batches;
use super::checkpoint::{self, CheckpointMeta, TrainingState};
use super::loss::{self, LossKind};
use super::rng::{Stream, rng_for};
use super::spectral::SpectralNorm;
use super::{Losses, Observer, ema, evaluate_generator, latents, sample, training_device};
use crate::data::Digits;
use crate::eval::{Evaluator, Metrics};
use crate::model::conditional::one_hot;
use crate::model::{CLASSES, Discriminator, Generator, ModelConfig};
use crate::spec::{OptimizerKind, RunConfig, TrainConfig};

/// Reads a loss off the device. The step's reads are where a GPU's failure during the step (an
/// allocation, a kernel) surfaces: an error here, where burn's `into_scalar` would panic.
fn read_loss(loss: Tensor<1>) -> anyhow::Result<f32> {
    loss.try_into_scalar::<f32>()
        .map_err(|err| anyhow::anyhow!("the {} device failed: {err}", crate::backend::name()))
}

/// A step's losses still on the device ([`Trainer::queue_step`]). Reading one waits for
/// everything queued before it: on a GPU, reading every few steps rather than every step
/// lets the next steps queue behind the running ones.
#[derive(Clone)]
pub struct QueuedLosses {
    d: Tensor<1>,
    g: Tensor<1>,
}

impl QueuedLosses {
    pub fn read(self) -> anyhow::Result<Losses> {
        Ok(Losses {
            d: read_loss(self.d)?,
            g: read_loss(self.g)?,
        })
    }
}

/// The run's optimizer. Adam on the GPU path with `GANRUNNER_GPU_ADAM=step` is [`StepAdam`],
/// one operation a parameter (burn's arithmetic and state; see [`crate::backend::step_adam`]).
fn optimizer(train: &TrainConfig) -> ModuleOptimizer {
    let (beta_1, beta_2) = (train.betas[0] as f32, train.betas[1] as f32);
    match train.optimizer {
        OptimizerKind::Adam if !crate::backend::own_kernels() && crate::backend::step_adam() => {
            ModuleOptimizer::from(StepAdam::new(beta_1, beta_2, 1e-8))
        }
        OptimizerKind::Adam => AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(1e-8)
            .init(),
        // PyTorch's RMSprop defaults: alpha 0.99, eps 1e-8, no momentum.
        OptimizerKind::Rmsprop => RmsPropConfig::new()
            .with_momentum(0.0)
            .with_epsilon(1e-8)
            .init(),
    }
}

/// `adversarial` plus the mean of [`loss::class_cross_entropy`] over the class predictions
/// (AC-GAN's auxiliary loss), when D makes them.
fn with_class_loss(
    adversarial: Tensor<1>,
    class_logits: &[Option<Tensor<2>>],
    labels: &Option<Tensor<2>>,
) -> Tensor<1> {
    let terms: Vec<_> = class_logits.iter().flatten().collect();
    match (labels, terms.is_empty()) {
        (Some(labels), false) => {
            let n = terms.len() as f64;
            terms.into_iter().fold(adversarial, |total, logits| {
                total + loss::class_cross_entropy(logits.clone(), labels.clone()).div_scalar(n)
            })
        }
        _ => adversarial,
    }
}

/// The `index`-th real batch of `batches`, with its labels one-hot when `model` is conditional.
fn real_batch(
    batches: &mut Batches,
    index: u64,
    model: &ModelConfig,
    device: &Device,
) -> (Tensor<4>, Option<Tensor<2>>) {
    let (images, labels) = batches.batch(index, device);
    let conditional = model.conditional().is_conditional();
    (images, conditional.then(|| one_hot(&labels, device)))
}

/// Keeps a D step's real batch and latents when `recorded` is on (see
/// [`Trainer::record_inputs`]).
fn record(recorded: &mut Option<Vec<(Tensor<4>, Tensor<2>)>>, real: &Tensor<4>, z: &Tensor<2>) {
    if let Some(recorded) = recorded {
        recorded.push((real.clone(), z.clone()));
    }
}

/// WGAN's weight clipping when `train.clip` is not set (Arjovsky et al.).
pub const DEFAULT_CLIP: f64 = 0.01;

/// Clamps every float parameter to [-c, c], keeping its autodiff state.
struct ClipWeights(f32);

impl burn::module::ModuleMapper for ClipWeights {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        let c = self.0;
        param.map(|tensor| {
            let tracked = tensor.is_require_grad();
            let clipped = Tensor::from_inner(tensor.inner().clamp(-c, c));
            if tracked {
                clipped.require_grad()
            } else {
                clipped
            }
        })
    }
}

/// What training steps took besides the networks' weights (see [`Trainer::record_inputs`]).
pub struct StepInputs {
    /// One (real batch, latents) pair per D step.
    pub batches: Vec<(Tensor<4>, Tensor<2>)>,
    /// Every dropout mask in the order drawn: G's forward pass (its layers in order), D's on
    /// G's fakes, then per D step D's on the real batch and on the fakes (and G's before
    /// those, for D steps after the first), each value 0 or `1 / (1 - p)`.
    pub dropout_masks: Vec<burn::tensor::TensorData>,
}

/// A run in progress: the models, their optimizers and the data. (`Clone` for
/// [`super::graph`], whose passes each step a copy of one state.)
#[derive(Clone)]
pub struct Trainer {
    config: RunConfig,
    device: Device,
    generator: Generator,
    /// The moving average of G (`train.g_ema`), which samples and is evaluated when kept.
    generator_ema: Option<Generator>,
    discriminator: Discriminator,
    /// `model.spectral_norm`'s power-iteration vectors.
    spectral: Option<SpectralNorm>,
    generator_optim: ModuleOptimizer,
    discriminator_optim: ModuleOptimizer,
    batches: Batches,
    /// Steps of the whole run (for learning-rate schedules).
    total_steps: u64,
    /// Each D step's real batch and latents, when asked to keep them.
    recorded: Option<Vec<(Tensor<4>, Tensor<2>)>>,
    /// The training time of the sessions before this one (the resumed checkpoint's), seconds.
    pub(super) seconds_before: f64,
}

impl Trainer {
    pub fn new(config: &RunConfig, train_images: &Digits) -> Self {
        let device = training_device();
        let model = &config.model;
        let (generator, discriminator) =
            model.build(&mut rng_for(config.train.seed, Stream::Init, 0), &device);
        let side = model.image_side();
        let total_steps = config.train.total_steps(train_images.len());
        let batches = Batches::new(
            train_images.resized(side).pixels,
            train_images.labels.clone(),
            side,
            config.train.batch_size,
            config.train.seed,
        );
        Trainer {
            config: config.clone(),
            device,
            generator_ema: (config.train.g_ema > 0.0).then(|| ema::start(&generator)),
            spectral: model.spectral_norm().then(|| {
                SpectralNorm::new(
                    &discriminator,
                    &mut rng_for(config.train.seed, Stream::Init, 1),
                )
            }),
            generator,
            discriminator,
            generator_optim: optimizer(&config.train),
            discriminator_optim: optimizer(&config.train),
            batches,
            total_steps,
            recorded: None,
            seconds_before: 0.0,
        }
    }

    /// One G step and `d_steps` D steps; `step` counts from 1. A conditional model draws
    /// its fakes with the labels of the real batch they are compared with.
    pub fn step(&mut self, step: u64) -> anyhow::Result<Losses> {
        self.queue_step(step)?.read()
    }

    /// [`Self::step`], its losses left on the device.
    pub fn queue_step(&mut self, step: u64) -> anyhow::Result<QueuedLosses> {
        if let Some(norm) = &mut self.spectral {
            norm.iterate(&self.discriminator);
        }
        let train = &self.config.train;
        let (g_lr, d_lr) = train.learning_rates(step, self.total_steps);
        let loss = train.loss;
        let d_steps = train.d_steps as u64;
        let latent_dim = self.config.model.latent_dim();
        let mut rng = rng_for(train.seed, Stream::Step, step);
        let first_batch = (step - 1) * d_steps;

        let model = &self.config.model;
        let (real, labels) = real_batch(&mut self.batches, first_batch, model, &self.device);
        let n = real.dims()[0];
        let z = latents(&mut rng, n, latent_dim, &self.device);
        record(&mut self.recorded, &real, &z);
        let fake = self.generator.forward(z, labels.as_ref(), Some(&mut rng));
        // G's loss needs D's input gradient only: with D's weights as constants the backward
        // pass skips D's weight gradients (PyTorch's loop computes them and throws them away).
        // D's BatchNorm statistics are shared with this copy and still updated. Its weights
        // become constants before they are normalized: normalizing tracked weights would leave
        // a graph that no backward pass walks.
        let constant = Cow::Owned(self.discriminator.clone().no_grad());
        let verdict = self
            .critic(constant)
            .forward(fake.clone(), labels.as_ref(), Some(&mut rng));
        let g_loss = with_class_loss(
            loss.g_loss(verdict.logits),
            &[verdict.class_logits],
            &labels,
        );
        let mut grads = g_loss.backward();
        let grads = GradientsParams::from_module(&mut grads, &self.generator);
        self.generator = self
            .generator_optim
            .step(g_lr, self.generator.clone(), grads);
        if let Some(average) = self.generator_ema.take() {
            let decay = ema::decay(train.g_ema, train.g_ema_warmup, step);
            self.generator_ema = Some(ema::update(average, &self.generator, decay));
        }

        let mut d_loss = None;
        let (mut real, mut labels, mut fake) = (real, labels, fake.detach());
        for k in 0..d_steps {
            if k > 0 {
                (real, labels) =
                    real_batch(&mut self.batches, first_batch + k, model, &self.device);
                let z = latents(&mut rng, real.dims()[0], latent_dim, &self.device);
                record(&mut self.recorded, &real, &z);
                // Without autodiff: a tracked forward's graph hangs on G's parameters until
                // the next G step, and each D step's backward walks all of them again.
                fake = (self.generator.clone().no_grad())
                    .forward(z, labels.as_ref(), Some(&mut rng))
                    .detach();
            }
            let critic = self.critic(Cow::Borrowed(&self.discriminator));
            let on_real = critic.forward(real.clone(), labels.as_ref(), Some(&mut rng));
            let on_fake = critic.forward(fake.clone(), labels.as_ref(), Some(&mut rng));
            let step_loss = with_class_loss(
                loss.d_loss(on_real.logits, on_fake.logits, train.real_label),
                &[on_real.class_logits, on_fake.class_logits],
                &labels,
            );
            let penalties: Vec<_> = (train.penalties().into_iter())
                .map(|p| p.apply(&critic, &real, &fake, labels.as_ref(), &mut rng))
                .collect();
            drop(critic);
            // The logged D loss includes the penalties' values (not their surrogates').
            let logged =
                (penalties.iter()).fold(step_loss.clone().detach(), |l, p| l + p.value.clone());
            let step_loss = (penalties.into_iter()).fold(step_loss, |l, p| l + p.surrogate);
            let mut grads = step_loss.backward();
            let grads = GradientsParams::from_module(&mut grads, &self.discriminator);
            self.discriminator =
                self.discriminator_optim
                    .step(d_lr, self.discriminator.clone(), grads);
            if loss == LossKind::Wgan {
                let clip = train.clip.unwrap_or(DEFAULT_CLIP) as f32;
                self.discriminator = self.discriminator.clone().map(&mut ClipWeights(clip));
            }
            d_loss = Some(logged);
        }
        Ok(QueuedLosses {
            d: d_loss.expect("d_steps >= 1"),
            g: g_loss.detach(),
        })
    }

    /// From now on, keeps each D step's real batch and latents (the G step's are the first D
    /// step's) and every dropout mask, for another implementation of the step to take the same
    /// inputs. The masks are kept per thread: record one trainer per thread.
    pub fn record_inputs(&mut self) {
        self.recorded = Some(Vec::new());
        crate::model::init::record_dropout_masks();
    }

    /// What the steps since the last call took (see [`Trainer::record_inputs`]).
    pub fn take_inputs(&mut self) -> StepInputs {
        StepInputs {
            batches: (self.recorded.as_mut())
                .map(std::mem::take)
                .unwrap_or_default(),
            dropout_masks: crate::model::init::take_dropout_masks(),
        }
    }

    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    pub fn discriminator(&self) -> &Discriminator {
        &self.discriminator
    }

    /// `d` (D, or a copy of it) as the losses see it: with its weights spectrally normalized
    /// when the model says so.
    fn critic<'a>(&self, d: Cow<'a, Discriminator>) -> Cow<'a, Discriminator> {
        match &self.spectral {
            Some(norm) => Cow::Owned(norm.apply(&d)),
            None => d,
        }
    }

    fn state(&self) -> TrainingState<'_> {
        TrainingState {
            generator: &self.generator,
            generator_ema: self.generator_ema.as_ref(),
            discriminator: &self.discriminator,
            spectral: self.spectral.as_ref(),
            generator_optim: &self.generator_optim,
            discriminator_optim: &self.discriminator_optim,
        }
    }

    pub(super) fn save_checkpoint(
        &self,
        run_dir: &Path,
        step: u64,
        seconds: f64,
    ) -> anyhow::Result<PathBuf> {
        checkpoint::save(run_dir, &self.meta(step, None, seconds), self.state())
    }

    /// Keeps the state of `step`, whose evaluation scored `fid`, as the run's best.
    pub(super) fn save_best(
        &self,
        run_dir: &Path,
        step: u64,
        fid: f64,
        seconds: f64,
    ) -> anyhow::Result<PathBuf> {
        checkpoint::save_best(run_dir, &self.meta(step, Some(fid), seconds), self.state())
    }

    fn meta(&self, step: u64, fid: Option<f64>, seconds: f64) -> CheckpointMeta {
        CheckpointMeta {
            step,
            config: self.config.clone(),
            fid,
            seconds: Some(seconds),
            runner: Some(crate::VERSION.into()),
            checksums: Default::default(),
            files: Default::default(),
        }
    }

    /// The fixed-noise grid of `sampler` (see [`Trainer::sampler`]): `log.grid` x `log.grid`
    /// images, or for a conditional model one row of `log.grid` images per class.
    pub(super) fn save_sample(
        &self,
        sampler: &Generator,
        run_dir: &Path,
        step: u64,
    ) -> anyhow::Result<PathBuf> {
        let grid = self.config.log.grid;
        let labels = self.config.model.conditional().is_conditional().then(|| {
            (0..CLASSES * grid)
                .map(|i| (i / grid) as u8)
                .collect::<Vec<_>>()
        });
        let images = sample(
            sampler,
            &self.config.model,
            labels.as_ref().map_or(grid * grid, Vec::len),
            self.config.train.seed,
            Stream::Samples,
            labels.as_deref(),
        );
        let path = run_dir.join("samples").join(format!("step-{step:08}.png"));
        images.save(&path, grid)?;
        Ok(path)
    }

    /// The generator that samples: the moving average, settled, when the run keeps one.
    /// Settling takes a few forward passes, so a step that draws a grid and evaluates asks
    /// once.
    pub(super) fn sampler(&self) -> Cow<'_, Generator> {
        match &self.generator_ema {
            Some(average) => Cow::Owned(ema::settle(
                average,
                &self.config.model,
                self.config.train.seed,
            )),
            None => Cow::Borrowed(&self.generator),
        }
    }

    /// Scores `eval_samples` fresh samples of `sampler` (the same noise at every step) with
    /// `evaluator`; with a moving average, the raw G's FID beside it.
    pub(super) fn evaluate(&self, sampler: &Generator, evaluator: &Evaluator) -> Metrics {
        let (model, n) = (&self.config.model, self.config.log.eval_samples);
        let draw = |generator: &Generator| {
            evaluate_generator(evaluator, generator, model, n, self.config.train.seed)
        };
        let mut metrics = draw(sampler);
        if self.generator_ema.is_some() {
            metrics.fid_raw = Some(draw(&self.generator).fid);
        }
        metrics
    }

    /// Loads the latest usable checkpoint of `run_dir`, if any; returns its step. A corrupt
    /// one is set aside (and reported to `observer`) for the one before it: resuming from an
    /// earlier step gives the same run, exactly.
    pub(super) fn resume(
        &mut self,
        run_dir: &Path,
        observer: &mut dyn Observer,
    ) -> anyhow::Result<Option<u64>> {
        for (step, dir) in checkpoint::list(run_dir).into_iter().rev() {
            match self.load(&dir) {
                Ok(()) => return Ok(Some(step)),
                Err(err) if checkpoint::is_corrupt(&err) => {
                    let aside = checkpoint::set_aside(&dir)?;
                    observer.checkpoint_corrupt(step, &aside, &err.to_string());
                }
                Err(err) => return Err(err),
            }
        }
        Ok(None)
    }

    /// Loads the training state of the checkpoint in `dir`.
    fn load(&mut self, dir: &Path) -> anyhow::Result<()> {
        let checkpoint = checkpoint::Opened::open(dir)?;
        checkpoint::check_compatible(&checkpoint.meta, &self.config, dir)?;
        // Templates of their own (`valid().train()`): a clone shares the running statistics
        // of the networks it was cloned from, which a load would write over before the last
        // file is read.
        let (g, d, go, dop) = checkpoint.training(
            self.generator.valid().train(),
            self.discriminator.valid().train(),
            optimizer(&self.config.train),
            optimizer(&self.config.train),
        )?;
        let spectral = match &self.spectral {
            Some(_) => Some(checkpoint.spectral(&d)?),
            None => None,
        };
        let generator_ema = match &self.generator_ema {
            // (Into a clone of `g`, it would write the average's statistics over G's.)
            Some(average) => Some(ema::start(
                &checkpoint.generator_ema(average.valid().train())?,
            )),
            None => None,
        };
        // Nothing changes until everything loaded: a corrupt file leaves the fresh state.
        (
            self.generator,
            self.discriminator,
            self.generator_optim,
            self.discriminator_optim,
            self.spectral,
            self.generator_ema,
        ) = (g, d, go, dop, spectral, generator_ema);
        // (A hand-edited value that is no duration counts as none.)
        let seconds = checkpoint
            .meta
            .seconds
            .filter(|s| s.is_finite() && *s >= 0.0);
        self.seconds_before = seconds.unwrap_or(0.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleVisitor, Param};

    /// The largest absolute value over a module's float parameters.
    struct MaxAbs(f32);

    impl ModuleVisitor for MaxAbs {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let max: f32 = param.val().abs().max().into_scalar();
            self.0 = self.0.max(max);
        }
    }

    #[test]
    fn weight_clipping_bounds_every_parameter_and_keeps_them_trainable() {
        let device = training_device();
        for model in [
            crate::model::ModelConfig::default(),
            crate::model::ModelConfig::Gan(Default::default()),
        ] {
            let (_, discriminator) = model.build(&mut rng_for(0, Stream::Init, 0), &device);
            let mut before = MaxAbs(0.0);
            discriminator.visit(&mut before);
            assert!(before.0 > 0.05, "initial weights exceed the clip");
            let clipped = discriminator.map(&mut ClipWeights(0.01));
            let mut after = MaxAbs(0.0);
            clipped.visit(&mut after);
            assert!(after.0 <= 0.01 && after.0 > 0.0, "{}", after.0);
        }
    }

    /// Every float parameter of a module, in visiting order, with whether it is trained (burn
    /// visits BatchNorm's running statistics too, as untracked tensors).
    struct Values(Vec<(bool, Vec<f32>)>);

    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            (self.0).push((
                value.is_require_grad(),
                value.into_data().try_to_vec::<f32>().unwrap(),
            ));
        }
    }

    /// One model of each arch, at the report's sizes.
    fn every_arch() -> [crate::model::ModelConfig; 3] {
        [
            crate::model::ModelConfig::default(),
            crate::model::ModelConfig::DcganClassic(Default::default()),
            crate::model::ModelConfig::Gan(Default::default()),
        ]
    }

    fn values<M: Module>(module: &M) -> Vec<(bool, Vec<f32>)> {
        let mut values = Values(Vec::new());
        module.visit(&mut values);
        values.0
    }

    /// The G step reads D through a `no_grad()` copy (D's weight gradients are not needed
    /// there); every trained parameter of D, BatchNorm's beta among them, must still be
    /// trained by the D step, and all of G's by the G step. (With burn's lazily initialized
    /// beta, the copy's `no_grad` froze the original's.) The trainer's networks are compared
    /// with a second build from the same seed, so that nothing touches them before the step.
    #[test]
    fn a_step_trains_every_parameter_of_both_networks() {
        let digits = Digits::synthetic(64);
        for model in every_arch() {
            let mut config = RunConfig {
                model,
                ..Default::default()
            };
            config.train.batch_size = 16;
            let mut trainer = Trainer::new(&config, &digits);
            trainer.step(1).unwrap();
            let init = &mut rng_for(config.train.seed, Stream::Init, 0);
            let (g, d) = config.model.build(init, &training_device());
            let before = [values(&g), values(&d)];
            let after = [values(&trainer.generator), values(&trainer.discriminator)];
            for (net, (before, after)) in ["G", "D"].iter().zip(before.iter().zip(&after)) {
                let trained = before.iter().filter(|(trained, _)| *trained).count();
                assert!(trained >= 2, "{:?}: {net}", config.model);
                for (i, (b, a)) in before.iter().zip(after).enumerate() {
                    let case = format!("{:?}: {net}'s parameter {i}", config.model);
                    assert_eq!(b.0, a.0, "{case}: trained before the step, not after");
                    if b.0 {
                        assert_ne!(b.1, a.1, "{case} did not change");
                    }
                }
            }
        }
    }

    /// Losses left on the device for several steps ([`Trainer::queue_step`], as `runner bench
    /// --read-every` reads them) are the losses each step reads at once: with the plain loss,
    /// and with WGAN-GP over two D steps (D's logged loss then has the penalty's value added).
    #[test]
    fn losses_read_after_later_steps_are_each_steps_own() {
        let digits = Digits::synthetic(64);
        for penalized in [false, true] {
            let mut config = RunConfig {
                model: crate::model::ModelConfig::Gan(Default::default()),
                ..Default::default()
            };
            config.train.batch_size = 16;
            if penalized {
                (config.train.loss, config.train.d_steps) = (LossKind::WganGp, 2);
            }
            let mut at_once = Trainer::new(&config, &digits);
            let read: Vec<_> = (1..=4).map(|s| at_once.step(s).unwrap()).collect();
            let mut queued = Trainer::new(&config, &digits);
            let waiting: Vec<_> = (1..=4).map(|s| queued.queue_step(s).unwrap()).collect();
            let later: Vec<_> = waiting.into_iter().map(|l| l.read().unwrap()).collect();
            assert_eq!(read, later, "penalized: {penalized}");
            assert!(read.windows(2).all(|w| w[0] != w[1]), "{read:?}");
        }
    }

    /// The fakes of D steps after the first come from a `no_grad()` copy of G (a tracked
    /// forward's graph would hang on G's parameters until the next G step, each D step's
    /// backward walking all of them again): in training mode all the same, so the same images
    /// (BatchNorm with the batch's statistics, not its running ones; dropout drawn) and the
    /// same running statistics after it, as a tracked forward gives.
    #[test]
    fn an_untracked_copy_of_g_draws_what_the_tracked_g_draws() {
        let device = training_device();
        for model in every_arch() {
            let draw = |untracked: bool| {
                let (g, _) = model.build(&mut rng_for(0, Stream::Init, 0), &device);
                let g = if untracked { g.no_grad() } else { g };
                let mut rng = rng_for(0, Stream::Step, 1);
                let z = latents(&mut rng, 16, model.latent_dim(), &device);
                let images = g.forward(z, None, Some(&mut rng)).detach();
                let images: Vec<f32> = images.into_data().try_to_vec().unwrap();
                let statistics: Vec<_> = values(&g).into_iter().map(|(_, v)| v).collect();
                (images, statistics)
            };
            let (tracked, untracked) = (draw(false), draw(true));
            assert!(tracked.0 == untracked.0, "{model:?}: other images");
            assert!(
                tracked.1 == untracked.1,
                "{model:?}: other running statistics"
            );
        }
    }
}
