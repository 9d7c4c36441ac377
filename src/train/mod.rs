//! Training one run: the report's step on burn, with samples, checkpoints and exact resume.
//!
//! One step is the report's: a G step (z ~ N(0,1), BCE of D(G(z)) against "real", update G),
//! then `d_steps` D steps (BCE of D(real) against "real" and of D(fake.detach()) against
//! "fake", averaged; update D). The first D step uses the G step's fake batch, as the report
//! does; further D steps draw fresh noise and a fresh real batch. `train.loss` swaps the
//! objective (see [`loss`]), `train.g_lr`/`d_lr`/`lr_decay` the learning rates; a conditional
//! model (`model.conditional`) gives G and D the real batch's labels.

pub mod batches;
pub mod checkpoint;
pub mod ema;
pub mod loss;
pub mod penalty;
pub mod rng;
pub mod spectral;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, RmsPropConfig};
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::data::{Digits, Split};
use crate::eval::{Evaluator, Metrics};
use crate::images::ImageBatch;
use crate::model::conditional::one_hot;
use crate::model::{CLASSES, Discriminator, Generator, ModelConfig};
use crate::spec::{OptimizerKind, RunConfig, TrainConfig};
use batches::Batches;
use checkpoint::{CheckpointMeta, TrainingState};
use loss::LossKind;
use rng::{Stream, rng_for};
use spectral::SpectralNorm;

/// The D and G losses of one step (D's of its last D step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Losses {
    pub d: f32,
    pub g: f32,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Finished,
    /// A loss became NaN or infinite at `step`; training stopped there.
    Diverged {
        step: u64,
        losses: Losses,
    },
    /// The observer asked to stop; the last checkpoint is at `step`.
    Interrupted {
        step: u64,
    },
    /// The observer pruned the run (see `crate::exec::prune`); checkpointed at `step`.
    Pruned {
        step: u64,
        reason: String,
    },
}

/// The result of [`train`].
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    /// Steps done in total (including those before a resume).
    pub steps: u64,
    pub resumed_from: Option<u64>,
    pub last_losses: Option<Losses>,
    /// Time spent in this call.
    pub elapsed: Duration,
    pub final_sample: Option<PathBuf>,
    pub final_checkpoint: Option<PathBuf>,
}

/// Receives a run's progress; every method has a do-nothing default.
pub trait Observer {
    fn started(&mut self, _first_step: u64, _total_steps: u64) {}
    fn step(&mut self, _step: u64, _losses: Losses) {}
    fn sample(&mut self, _step: u64, _path: &Path) {}
    fn checkpoint(&mut self, _step: u64, _path: &Path) {}
    /// A periodic checkpoint was deleted (see `keep_checkpoints`).
    fn checkpoint_removed(&mut self, _step: u64) {}
    /// The checkpoint of `step` was found damaged (`why`) when resuming and moved to `aside`.
    fn checkpoint_corrupt(&mut self, step: u64, aside: &Path, why: &str) {
        self.message(&format!(
            "checkpoint of step {step} is corrupt ({why}); moved to {}, resuming from an earlier \
             one (or from the start when none is left)",
            aside.display()
        ));
    }
    /// The generator was evaluated at `step`.
    fn eval(&mut self, _step: u64, _metrics: &Metrics) {}
    /// A line for the user (e.g. the evaluator's classifier training on first use).
    fn message(&mut self, _line: &str) {}
    /// Polled after each step: `true` checkpoints and stops the run.
    fn should_stop(&self) -> bool {
        false
    }
    /// Polled after each step and its evaluation: a reason checkpoints the run and ends it
    /// as pruned.
    fn pruned(&mut self) -> Option<String> {
        None
    }
}

impl Observer for () {}

/// Reads a loss off the device. The step's reads are where a GPU's failure during the step (an
/// allocation, a kernel) surfaces: an error here, where burn's `into_scalar` would panic.
fn read_loss(loss: Tensor<1>) -> anyhow::Result<f32> {
    loss.try_into_scalar::<f32>()
        .map_err(|err| anyhow::anyhow!("the {} device failed: {err}", crate::backend::name()))
}

/// The device training runs on (the selected one), with autodiff.
pub fn training_device() -> Device {
    crate::backend::device().autodiff()
}

fn optimizer(train: &TrainConfig) -> ModuleOptimizer {
    match train.optimizer {
        OptimizerKind::Adam => AdamConfig::new()
            .with_beta_1(train.betas[0] as f32)
            .with_beta_2(train.betas[1] as f32)
            .with_epsilon(1e-8)
            .init(),
        // PyTorch's RMSprop defaults: alpha 0.99, eps 1e-8, no momentum.
        OptimizerKind::Rmsprop => RmsPropConfig::new()
            .with_momentum(0.0)
            .with_epsilon(1e-8)
            .init(),
    }
}

/// `n` latent vectors from N(0, 1).
pub fn latents(rng: &mut StdRng, n: usize, latent_dim: usize, device: &Device) -> Tensor<2> {
    let values: Vec<f32> = (0..n * latent_dim)
        .map(|_| StandardNormal.sample(rng))
        .collect();
    Tensor::from_data(TensorData::new(values, [n, latent_dim]), device)
}

/// The labels an evaluation draws `n` samples with: every class in turn for a conditional
/// model (as balanced as the test set), none for an unconditional one.
pub fn eval_labels(model: &ModelConfig, n: usize) -> Option<Vec<u8>> {
    (model.conditional().is_conditional()).then(|| (0..n).map(|i| (i % CLASSES) as u8).collect())
}

/// Scores `n` samples of `generator` drawn with `seed`'s evaluation noise (and, for a
/// conditional model, the classes in turn): what every evaluation of a run does, so that
/// `runner eval` reproduces the values training logged.
pub fn evaluate_generator(
    evaluator: &Evaluator,
    generator: &Generator,
    model: &ModelConfig,
    n: usize,
    seed: u64,
) -> Metrics {
    let labels = eval_labels(model, n);
    let images = sample(generator, model, n, seed, Stream::Eval, labels.as_deref());
    evaluator.evaluate(&images, labels.as_deref())
}

/// Images per generator forward pass when sampling many (bounds memory).
const SAMPLE_CHUNK: usize = 500;

/// Samples `n` images from a generator in evaluation mode (BatchNorm on running statistics);
/// G's dropout stays on when the model samples that way (see `sample_dropout`). The noise
/// comes from `stream` of `seed`: [`Stream::Samples`] for the fixed-noise grids. A
/// conditional model needs one label per image; an unconditional one takes none.
pub fn sample(
    generator: &Generator,
    model: &ModelConfig,
    n: usize,
    seed: u64,
    stream: Stream,
    labels: Option<&[u8]>,
) -> ImageBatch {
    ImageBatch::from_unit(
        &sample_values(generator, model, n, seed, stream, labels),
        model.image_side(),
    )
}

/// The raw output values of [`sample`] (in [-1, 1] for a sound generator), image after image.
pub fn sample_values(
    generator: &Generator,
    model: &ModelConfig,
    n: usize,
    seed: u64,
    stream: Stream,
    labels: Option<&[u8]>,
) -> Vec<f32> {
    assert_eq!(
        labels.map(<[u8]>::len),
        model.conditional().is_conditional().then_some(n),
        "one label per sample exactly when the model is conditional"
    );
    let generator = generator.valid();
    let device = crate::backend::device();
    let mut latent_rng = rng_for(seed, stream, 0);
    let mut dropout_rng = rng_for(seed, stream, 1);
    let mut values = Vec::with_capacity(n * model.image_side() * model.image_side());
    for start in (0..n).step_by(SAMPLE_CHUNK) {
        let end = (start + SAMPLE_CHUNK).min(n);
        let z = latents(&mut latent_rng, end - start, model.latent_dim(), &device);
        let chunk_labels = labels.map(|l| one_hot(&l[start..end], &device));
        let images = generator.forward(
            z,
            chunk_labels.as_ref(),
            model.sample_dropout().then_some(&mut dropout_rng),
        );
        values.extend(
            images
                .into_data()
                .try_to_vec::<f32>()
                .expect("generator output is f32"),
        );
    }
    values
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

/// A run in progress: the models, their optimizers and the data.
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
            train_images.resized(side).to_unit_range(),
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
        }
    }

    /// One G step and `d_steps` D steps; `step` counts from 1. A conditional model draws
    /// its fakes with the labels of the real batch they are compared with.
    pub fn step(&mut self, step: u64) -> anyhow::Result<Losses> {
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
        let fake = self.generator.forward(z, labels.as_ref(), Some(&mut rng));
        // G's loss needs D's input gradient only: with D's weights as constants the backward
        // pass skips D's weight gradients (PyTorch's loop computes them and throws them away).
        // D's BatchNorm statistics are shared with this copy and still updated.
        let verdict = self.critic().into_owned().no_grad().forward(
            fake.clone(),
            labels.as_ref(),
            Some(&mut rng),
        );
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
            self.generator_ema = Some(ema::update(average, &self.generator, train.g_ema));
        }

        let mut d_loss = None;
        let (mut real, mut labels, mut fake) = (real, labels, fake.detach());
        for k in 0..d_steps {
            if k > 0 {
                (real, labels) =
                    real_batch(&mut self.batches, first_batch + k, model, &self.device);
                let z = latents(&mut rng, real.dims()[0], latent_dim, &self.device);
                fake = self
                    .generator
                    .forward(z, labels.as_ref(), Some(&mut rng))
                    .detach();
            }
            let critic = self.critic();
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
            let logged = if penalties.is_empty() {
                None
            } else {
                let values = penalties.iter().map(|p| p.value as f32).sum::<f32>();
                Some(read_loss(step_loss.clone())? + values)
            };
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
            d_loss = Some(match logged {
                Some(value) => value,
                None => read_loss(step_loss)?,
            });
        }
        Ok(Losses {
            d: d_loss.expect("d_steps >= 1"),
            g: read_loss(g_loss)?,
        })
    }

    /// D as the losses see it: with its weights spectrally normalized when the model says so.
    fn critic(&self) -> std::borrow::Cow<'_, Discriminator> {
        match &self.spectral {
            Some(norm) => std::borrow::Cow::Owned(norm.apply(&self.discriminator)),
            None => std::borrow::Cow::Borrowed(&self.discriminator),
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

    fn save_checkpoint(&self, run_dir: &Path, step: u64) -> anyhow::Result<PathBuf> {
        checkpoint::save(run_dir, &self.meta(step, None), self.state())
    }

    /// Keeps the state of `step`, whose evaluation scored `fid`, as the run's best.
    fn save_best(&self, run_dir: &Path, step: u64, fid: f64) -> anyhow::Result<PathBuf> {
        checkpoint::save_best(run_dir, &self.meta(step, Some(fid)), self.state())
    }

    fn meta(&self, step: u64, fid: Option<f64>) -> CheckpointMeta {
        CheckpointMeta {
            step,
            config: self.config.clone(),
            fid,
            files: Default::default(),
        }
    }

    /// The fixed-noise grid: `log.grid` x `log.grid` images, or for a conditional model one
    /// row of `log.grid` images per class.
    fn save_sample(&self, run_dir: &Path, step: u64) -> anyhow::Result<PathBuf> {
        let grid = self.config.log.grid;
        let labels = self.config.model.conditional().is_conditional().then(|| {
            (0..CLASSES * grid)
                .map(|i| (i / grid) as u8)
                .collect::<Vec<_>>()
        });
        let images = sample(
            self.sampler(),
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

    /// The generator that samples: the moving average when the run keeps one.
    fn sampler(&self) -> &Generator {
        self.generator_ema.as_ref().unwrap_or(&self.generator)
    }

    /// Scores `eval_samples` fresh samples (the same noise at every step) with `evaluator`;
    /// with a moving average, the average, and the raw G's FID beside it.
    fn evaluate(&self, evaluator: &Evaluator) -> Metrics {
        let (model, n) = (&self.config.model, self.config.log.eval_samples);
        let draw = |generator: &Generator| {
            evaluate_generator(evaluator, generator, model, n, self.config.train.seed)
        };
        let mut metrics = draw(self.sampler());
        if self.generator_ema.is_some() {
            metrics.fid_raw = Some(draw(&self.generator).fid);
        }
        metrics
    }

    /// Loads the latest usable checkpoint of `run_dir`, if any; returns its step. A corrupt
    /// one is set aside (and reported to `observer`) for the one before it: resuming from an
    /// earlier step gives the same run, exactly.
    fn resume(
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
        let (g, d, go, dop) = checkpoint.training(
            self.generator.clone(),
            self.discriminator.clone(),
            optimizer(&self.config.train),
            optimizer(&self.config.train),
        )?;
        let spectral = match &self.spectral {
            Some(_) => Some(checkpoint.spectral(&d)?),
            None => None,
        };
        let generator_ema = match &self.generator_ema {
            // Detached, as a fresh average is.
            Some(_) => Some(ema::start(&checkpoint.generator_ema(g.clone())?)),
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
        Ok(())
    }
}

/// Refuses a run directory a user names (`train --out`) that holds files but none of a run's
/// (its `.lock`, taken by every attempt before it writes anything, or `checkpoints/`):
/// training writes `config.toml`, `losses.csv` and `best/` there, and would replace the
/// user's own. (Sweeps name their own directories, `<results>/<experiment>/<run id>`.)
pub fn refuse_foreign_dir(run_dir: &Path) -> anyhow::Result<()> {
    let Ok(mut entries) = std::fs::read_dir(run_dir) else {
        return Ok(()); // Absent: created next (a file in the way is refused there).
    };
    let ours = run_dir.join(crate::fsutil::LOCK_FILE).exists()
        || checkpoint::checkpoints_dir(run_dir).is_dir();
    anyhow::ensure!(
        ours || entries.next().is_none(),
        "{}: holds files and is not a run directory (no .lock or checkpoints/); training writes \
         config.toml, losses.csv and best/ into its directory, so give a new or empty one",
        run_dir.display()
    );
    Ok(())
}

/// The newest sample grid of a run directory.
fn latest_sample(run_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(run_dir.join("samples"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .max()
}

/// The per-step loss log `losses.csv` of a run directory.
struct LossLog {
    path: PathBuf,
    writer: std::io::BufWriter<std::fs::File>,
    /// The losses of the last row kept when it was opened.
    last: Option<Losses>,
}

impl LossLog {
    /// Opens the log, keeping only the rows up to `keep_through` (the step resumed from).
    fn open(run_dir: &Path, keep_through: u64) -> anyhow::Result<Self> {
        let path = run_dir.join("losses.csv");
        let kept: String = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter(|l| {
                l.split(',')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|s| s <= keep_through)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        crate::fsutil::write_atomic(&path, format!("step,d_loss,g_loss\n{kept}").as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        let last = kept.lines().last().and_then(|row| {
            let mut cells = row.split(',').skip(1).map(|c| c.parse::<f32>().ok());
            Some(Losses {
                d: cells.next()??,
                g: cells.next()??,
            })
        });
        Ok(LossLog {
            writer: std::io::BufWriter::new(file),
            path,
            last,
        })
    }

    fn push(&mut self, step: u64, losses: Losses) -> anyhow::Result<()> {
        writeln!(self.writer, "{step},{},{}", losses.d, losses.g)
            .with_context(|| self.path.display().to_string())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.writer
            .flush()
            .with_context(|| self.path.display().to_string())
    }
}

/// Trains (or resumes) the run of `config` in `run_dir`, reporting to `observer`. A panic
/// inside training is this run's error, not the end of the process: burn reports a GPU that
/// fails (an allocation, a kernel) by panicking, and a bug anywhere must not take a sweep down.
pub fn train(
    config: &RunConfig,
    run_dir: &Path,
    observer: &mut dyn Observer,
) -> anyhow::Result<Outcome> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train_unguarded(config, run_dir, observer)
    }))
    .unwrap_or_else(|panic| {
        let what = crate::backend::panic_message(panic.as_ref());
        Err(anyhow::anyhow!("training panicked: {what}"))
    })
}

fn train_unguarded(
    config: &RunConfig,
    run_dir: &Path,
    observer: &mut dyn Observer,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let data_dir = config.data.resolved_dir();
    let train_images = Digits::load(&data_dir, Split::Train)?;
    anyhow::ensure!(
        !train_images.is_empty(),
        "{}: the training split has no images",
        data_dir.display()
    );
    anyhow::ensure!(
        config.train.batch_size <= train_images.len(),
        "`train.batch_size` = {} is larger than the training split ({} images in {})",
        config.train.batch_size,
        train_images.len(),
        data_dir.display()
    );
    let total = config.train.total_steps(train_images.len());
    let mut trainer = Trainer::new(config, &train_images);
    drop(train_images);
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let _lock = crate::fsutil::lock_dir(run_dir)?;
    checkpoint::remove_unfinished(run_dir)?;
    // Resume (or refuse an incompatible checkpoint) before writing anything into the run.
    let resumed_from = trainer.resume(run_dir, observer)?;
    crate::fsutil::write_atomic(
        &run_dir.join("config.toml"),
        toml::to_string_pretty(config)?.as_bytes(),
    )?;
    let first = resumed_from.unwrap_or(0);
    let mut log = LossLog::open(run_dir, first)?;
    let mut outcome = Outcome {
        status: Status::Finished,
        steps: first,
        resumed_from,
        last_losses: None,
        elapsed: Duration::ZERO,
        final_sample: None,
        final_checkpoint: None,
    };
    if resumed_from.is_none() {
        let path = trainer.save_sample(run_dir, 0)?;
        observer.sample(0, &path);
    }
    if first >= total {
        // Resumed at or past the end: what there is to show is what is on disk.
        outcome.final_checkpoint = checkpoint::list(run_dir).pop().map(|(_, dir)| dir);
        outcome.final_sample = latest_sample(run_dir);
        outcome.last_losses = log.last;
    }
    observer.started(first, total);
    let logc = config.log.clone();
    let mut evaluator = None;
    // The best evaluation so far: a resumed run's own, a fresh run's none (a best checkpoint
    // left by an earlier attempt goes).
    let mut best_fid = resumed_from.and_then(|_| checkpoint::best_fid(run_dir));
    if resumed_from.is_none() && checkpoint::best_dir(run_dir).exists() {
        std::fs::remove_dir_all(checkpoint::best_dir(run_dir))?;
    }
    for step in first + 1..=total {
        let losses = trainer.step(step).with_context(|| format!("step {step}"))?;
        outcome.steps = step;
        outcome.last_losses = Some(losses);
        if !(losses.d.is_finite() && losses.g.is_finite()) {
            outcome.status = Status::Diverged { step, losses };
            break;
        }
        log.push(step, losses)?;
        observer.step(step, losses);
        let stop = observer.should_stop();
        if step.is_multiple_of(logc.sample_every) || step == total {
            let path = trainer.save_sample(run_dir, step)?;
            observer.sample(step, &path);
            outcome.final_sample = Some(path);
        }
        let eval_due =
            (logc.eval_every > 0 && step.is_multiple_of(logc.eval_every)) || step == total;
        if logc.eval_samples > 0 && eval_due {
            if evaluator.is_none() {
                let mut message = |line: &str| observer.message(line);
                evaluator = Some(Evaluator::new(
                    &config.data.resolved_dir(),
                    config.model.image_side(),
                    &mut message,
                )?);
            }
            let metrics = trainer.evaluate(evaluator.as_ref().expect("created above"));
            observer.eval(step, &metrics);
            if metrics.fid.is_finite() && best_fid.is_none_or(|best| metrics.fid < best) {
                trainer.save_best(run_dir, step, metrics.fid)?;
                best_fid = Some(metrics.fid);
            }
        }
        let pruned = observer.pruned().filter(|_| step < total);
        if step.is_multiple_of(logc.checkpoint_every) || step == total || stop || pruned.is_some() {
            log.flush()?;
            let path = trainer.save_checkpoint(run_dir, step)?;
            observer.checkpoint(step, &path);
            for removed in checkpoint::prune(run_dir, logc.keep_checkpoints, total)? {
                observer.checkpoint_removed(removed);
            }
            outcome.final_checkpoint = Some(path);
        }
        if let Some(reason) = pruned {
            outcome.status = Status::Pruned { step, reason };
            break;
        }
        if stop && step < total {
            outcome.status = Status::Interrupted { step };
            break;
        }
    }
    log.flush()?;
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// Helpers for tests that differentiate modules by hand.
#[cfg(test)]
pub(crate) mod testing {
    use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
    use burn::prelude::*;
    use burn::tensor::{Gradients, TensorData};

    /// Adds `h` to the first entry of float parameter number `which` (in visiting order).
    pub struct Nudge {
        pub which: usize,
        pub h: f32,
        seen: usize,
    }

    impl Nudge {
        pub fn new(which: usize, h: f32) -> Self {
            Nudge { which, h, seen: 0 }
        }
    }

    impl ModuleMapper for Nudge {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            self.seen += 1;
            if self.seen - 1 != self.which {
                return param;
            }
            let h = self.h;
            param.map(|t| {
                let shape = t.shape();
                let mut values: Vec<f32> = t.clone().into_data().try_to_vec().unwrap();
                values[0] += h;
                Tensor::<D>::from_data(TensorData::new(values, shape), &t.device()).require_grad()
            })
        }
    }

    /// A module's float parameters (given gradients: their gradients), in visiting order.
    pub fn param_values<M: Module>(module: &M, grads: Option<&Gradients>) -> Vec<Vec<f32>> {
        struct Values<'a> {
            grads: Option<&'a Gradients>,
            out: Vec<Vec<f32>>,
        }
        impl ModuleVisitor for Values<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let tensor = match self.grads {
                    Some(grads) => param.val().grad(grads).expect("a gradient").into_data(),
                    None => param.val().into_data(),
                };
                self.out.push(tensor.try_to_vec().unwrap());
            }
        }
        let mut values = Values {
            grads,
            out: Vec::new(),
        };
        module.visit(&mut values);
        values.out
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
        for model in [
            crate::model::ModelConfig::default(),
            crate::model::ModelConfig::DcganClassic(Default::default()),
            crate::model::ModelConfig::Gan(Default::default()),
        ] {
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
}
