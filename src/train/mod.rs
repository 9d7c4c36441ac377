//! Training one run: the report's step on burn, with samples, checkpoints and exact resume.
//!
//! One step is the report's: a G step (z ~ N(0,1), BCE of D(G(z)) against "real", update G),
//! then `d_steps` D steps (BCE of D(real) against "real" and of D(fake.detach()) against
//! "fake", averaged; update D). The first D step uses the G step's fake batch, as the report
//! does; further D steps draw fresh noise and a fresh real batch. `train.loss` swaps the
//! objective (see [`loss`]), `train.g_lr`/`d_lr`/`lr_decay` the learning rates; a conditional
//! model (`model.conditional`) gives G and D the real batch's labels.
//!
//! Here: [`train`], the loop around the step (resume, samples, checkpoints, evaluations, the
//! loss log, stopping), the [`Observer`] that watches it, and sampling; [`Trainer`] (`trainer.rs`)
//! is the step and the state it saves.

pub mod adam;
pub mod batches;
pub mod checkpoint;
pub mod ema;
pub mod graph;
pub mod loss;
pub mod penalty;
pub mod rng;
mod run_dir;
pub mod spectral;
mod trainer;

pub use run_dir::{
    CONFIG_FILE, refuse_foreign_dir, refuse_inside_run_dir, refuse_run_entry, users_entries,
};
pub use trainer::{DEFAULT_CLIP, StepInputs, Trainer};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use burn::module::Module;
use burn::prelude::*;
use burn::tensor::TensorData;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use crate::data::{Digits, Split};
use crate::eval::{Evaluator, Metrics};
use crate::fsutil::DirLock;
use crate::images::ImageBatch;
use crate::model::conditional::one_hot;
use crate::model::{CLASSES, Generator, ModelConfig};
use crate::spec::RunConfig;
use rng::{Stream, rng_for};

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
    /// Of `elapsed`, the evaluations' (sampling and scoring `log.eval_samples` images each).
    pub evaluating: Duration,
    pub final_sample: Option<PathBuf>,
    pub final_checkpoint: Option<PathBuf>,
}

/// Receives a run's progress; every method has a do-nothing default.
pub trait Observer {
    fn started(&mut self, _first_step: u64, _total_steps: u64) {}
    /// Step `step` trained; `seconds` is the run's training time so far, over all its
    /// sessions (evaluations and checkpoints included, the set-up of each session not).
    fn step(&mut self, _step: u64, _losses: Losses, _seconds: f64) {}
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

/// The device training runs on (the selected one), with autodiff.
pub fn training_device() -> Device {
    crate::backend::device().autodiff()
}

/// Milliseconds per training step of `config` (its model, batch, D steps, loss and
/// penalties) on synthetic digits: `steps` of them (at least one), sorted, after `warmup`
/// untimed ones. The losses are read every `read_every` steps (at least 1), and a block of
/// steps between reads counts as that many steps of its mean time: on a GPU the steps of a
/// block queue behind each other, where a read waits for everything queued.
pub fn step_times_ms(
    config: &RunConfig,
    warmup: usize,
    steps: usize,
    read_every: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut trainer = warmed_up_trainer(config, warmup)?;
    let (steps, read_every) = (steps.max(1), read_every.max(1));
    let mut ms = Vec::new();
    let mut step = warmup as u64;
    while ms.len() < steps {
        let block = read_every.min(steps - ms.len());
        let start = Instant::now();
        let queued = (0..block)
            .map(|_| {
                step += 1;
                trainer.queue_step(step)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for losses in queued {
            losses.read()?;
        }
        let each = start.elapsed().as_secs_f64() * 1000.0 / block as f64;
        ms.extend(std::iter::repeat_n(each, block));
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// A trainer of `config` on synthetic digits that has trained `warmup` steps (the first
/// allocates every buffer), for timing the steps after.
fn warmed_up_trainer(config: &RunConfig, warmup: usize) -> anyhow::Result<Trainer> {
    let mut trainer = Trainer::new(config, &Digits::synthetic(config.train.batch_size * 4));
    for step in 1..=warmup as u64 {
        trainer.step(step)?;
    }
    Ok(trainer)
}

/// An evaluation of a run of `config` timed: its `log.eval_samples` samples drawn and scored
/// against the test digits in its data directory, with an untrained generator (the work does
/// not depend on what it draws).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvaluationTimes {
    /// Seconds to build the evaluator (reading the test digits and their features): once per
    /// process and data, 0 when this process had built it.
    pub setup: f64,
    /// Seconds of one evaluation alone.
    pub alone: f64,
    /// With runs of `config` training beside it: seconds of one evaluation, and the median
    /// seconds of their steps meanwhile.
    pub beside_steps: Option<(f64, f64)>,
}

/// Times an evaluation of `config` alone and, when `beside` is more than 0, again while
/// `beside` runs of it train (each on its own thread, as a sweep's workers).
pub fn time_evaluation(config: &RunConfig, beside: usize) -> anyhow::Result<EvaluationTimes> {
    let side = config.model.image_side();
    let start = Instant::now();
    let evaluator = Evaluator::shared(&config.data.resolved_dir(), side, &mut |_| {})?;
    let setup = start.elapsed().as_secs_f64();
    let trainer = Trainer::new(config, &Digits::synthetic(config.train.batch_size));
    let evaluate = || {
        let start = Instant::now();
        trainer.evaluate(&trainer.sampler(), &evaluator);
        start.elapsed().as_secs_f64()
    };
    let alone = evaluate();
    if beside == 0 {
        return Ok(EvaluationTimes {
            setup,
            alone,
            beside_steps: None,
        });
    }
    let (ready, done) = (std::sync::Barrier::new(beside + 1), AtomicBool::new(false));
    let (seconds, steps) = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..beside)
            .map(|_| {
                scope.spawn(|| {
                    // At the barrier whatever happens before it: the evaluation waits there.
                    let warmed_up = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        warmed_up_trainer(config, 1)
                    }));
                    ready.wait();
                    let Ok(trainer) = warmed_up else {
                        anyhow::bail!("a run timed beside the evaluation panicked while starting");
                    };
                    let mut trainer = trainer?;
                    let mut seconds = Vec::new();
                    for step in 2.. {
                        let start = Instant::now();
                        trainer.step(step)?;
                        seconds.push(start.elapsed().as_secs_f64());
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    anyhow::Ok(seconds)
                })
            })
            .collect();
        ready.wait();
        // (Set even if the evaluation panics: the runs beside it would step forever.)
        let stop_them = StoreOnDrop(&done);
        let seconds = evaluate();
        drop(stop_them);
        anyhow::Ok((seconds, joined_sorted(runs)?))
    })?;
    Ok(EvaluationTimes {
        setup,
        alone,
        beside_steps: Some((seconds, steps[steps.len() / 2])),
    })
}

/// What timing threads measured, together and sorted.
pub fn joined_sorted(
    threads: Vec<std::thread::ScopedJoinHandle<'_, anyhow::Result<Vec<f64>>>>,
) -> anyhow::Result<Vec<f64>> {
    let mut all = Vec::new();
    for thread in threads {
        let times = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a timing thread stopped"))?;
        all.extend(times?);
    }
    all.sort_by(f64::total_cmp);
    Ok(all)
}

/// Sets its flag when dropped.
struct StoreOnDrop<'a>(&'a AtomicBool);

impl Drop for StoreOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `n` latent vectors from N(0, 1).
pub fn latents(rng: &mut StdRng, n: usize, latent_dim: usize, device: &Device) -> Tensor<2> {
    crate::model::uploads::upload(
        TensorData::new(normal_values(rng, n * latent_dim), [n, latent_dim]),
        device,
    )
}

/// `count` values from N(0, 1).
pub fn normal_values(rng: &mut StdRng, count: usize) -> Vec<f32> {
    (0..count).map(|_| StandardNormal.sample(rng)).collect()
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
    let z = normal_values(&mut rng_for(seed, stream, 0), n * model.latent_dim());
    sample_latents(generator, model, &z, labels, &mut rng_for(seed, stream, 1))
}

/// What [`sample_values`] gives for latents of one's own choosing (`model.latent_dim()`
/// values per image, image after image), e.g. the points of a walk through the latent space.
/// Dropout masks, for a model that samples with them, come from `dropout_rng`.
pub fn sample_latents(
    generator: &Generator,
    model: &ModelConfig,
    z: &[f32],
    labels: Option<&[u8]>,
    dropout_rng: &mut StdRng,
) -> Vec<f32> {
    let latent_dim = model.latent_dim();
    let n = z.len() / latent_dim;
    assert_eq!(n * latent_dim, z.len(), "whole latent vectors");
    assert_eq!(
        labels.map(<[u8]>::len),
        model.conditional().is_conditional().then_some(n),
        "one label per sample exactly when the model is conditional"
    );
    let generator = generator.valid();
    let device = crate::backend::device();
    let mut values = Vec::with_capacity(n * model.image_side() * model.image_side());
    for start in (0..n).step_by(SAMPLE_CHUNK) {
        let end = (start + SAMPLE_CHUNK).min(n);
        let chunk = z[start * latent_dim..end * latent_dim].to_vec();
        let z = Tensor::from_data(TensorData::new(chunk, [end - start, latent_dim]), &device);
        let chunk_labels = labels.map(|l| one_hot(&l[start..end], &device));
        let images = generator.forward(
            z,
            chunk_labels.as_ref(),
            model.sample_dropout().then_some(&mut *dropout_rng),
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
        // Rewritten whole from what reads as text; a link to a device is not read.
        let text = crate::fsutil::read_regular_file(&path, u64::MAX).unwrap_or_default();
        let kept: String = String::from_utf8_lossy(&text)
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
        let file =
            crate::fsutil::write_atomic(&path, format!("step,d_loss,g_loss\n{kept}").as_bytes())
                .and_then(|()| std::fs::OpenOptions::new().append(true).open(&path))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
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

/// Trains (or resumes) the run of `config` in `run_dir`, reporting to `observer`; fails when
/// another process trains there. A panic inside training is this run's error, not the end of
/// the process: burn reports a GPU that fails (an allocation, a kernel) by panicking, and a bug
/// anywhere must not take a sweep down.
pub fn train(
    config: &RunConfig,
    run_dir: &Path,
    observer: &mut dyn Observer,
) -> anyhow::Result<Outcome> {
    // What existed before: a run that fails before writing anything (a batch larger than its
    // data, say) removes the directories it made, instead of leaving one holding only a lock.
    let existing = (run_dir.ancestors())
        .find(|dir| dir.as_os_str().is_empty() || dir.exists())
        .map(Path::to_path_buf);
    let lock = crate::fsutil::lock_dir(run_dir)?;
    let outcome = train_locked(config, &lock, observer);
    if let (Err(_), Some(existing)) = (&outcome, existing)
        && existing != run_dir
    {
        lock.remove_if_unused(&existing);
    }
    outcome
}

/// [`train`] in the run directory whose lock the caller holds (a sweep takes it before it
/// writes the run's records).
pub fn train_locked(
    config: &RunConfig,
    lock: &DirLock,
    observer: &mut dyn Observer,
) -> anyhow::Result<Outcome> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train_unguarded(config, lock.dir(), observer)
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
    checkpoint::remove_unfinished(run_dir)?;
    // Resume (or refuse an incompatible checkpoint) before writing anything into the run.
    let resumed_from = trainer.resume(run_dir, observer)?;
    let first = resumed_from.unwrap_or(0);
    // Built before the first step, so that data the evaluator cannot read (no test split,
    // digits of another size) fails the run now, not after training to its first evaluation.
    let evaluator = if config.log.eval_samples > 0 && first < total {
        let mut message = |line: &str| observer.message(line);
        Some(Evaluator::shared(
            &data_dir,
            config.model.image_side(),
            &mut message,
        )?)
    } else {
        None
    };
    crate::fsutil::write_atomic(
        &run_dir.join(CONFIG_FILE),
        toml::to_string_pretty(config)?.as_bytes(),
    )?;
    let mut log = LossLog::open(run_dir, first)?;
    let mut outcome = Outcome {
        status: Status::Finished,
        steps: first,
        resumed_from,
        last_losses: None,
        elapsed: Duration::ZERO,
        evaluating: Duration::ZERO,
        final_sample: None,
        final_checkpoint: None,
    };
    if resumed_from.is_none() {
        let path = trainer.save_sample(&trainer.sampler(), run_dir, 0)?;
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
    // The best evaluation so far: a resumed run's own, a fresh run's none (a best checkpoint
    // left by an earlier attempt goes).
    let mut best_fid = resumed_from.and_then(|_| checkpoint::best_fid(run_dir));
    if resumed_from.is_none() && checkpoint::best_dir(run_dir).exists() {
        std::fs::remove_dir_all(checkpoint::best_dir(run_dir))?;
    }
    // The run's training time: its earlier sessions' and this one's from its first step on.
    let (before, session) = (trainer.seconds_before, Instant::now());
    let seconds = || before + session.elapsed().as_secs_f64();
    // Steps whose losses are still on the device, read every `read_every` steps and before
    // anything else looks at the run: its samples, evaluations, checkpoints and stop.
    let read_every = crate::backend::read_every();
    let mut unread = Vec::with_capacity(read_every);
    'steps: for step in first + 1..=total {
        let queued = trainer.queue_step(step);
        unread.push((step, queued.with_context(|| format!("step {step}"))?));
        let sample_due = step.is_multiple_of(logc.sample_every) || step == total;
        let eval_due = logc.eval_samples > 0
            && ((logc.eval_every > 0 && step.is_multiple_of(logc.eval_every)) || step == total);
        let checkpoint_due = step.is_multiple_of(logc.checkpoint_every) || step == total;
        if unread.len() < read_every
            && !(sample_due || eval_due || checkpoint_due || observer.should_stop())
        {
            continue;
        }
        for (at, queued) in unread.drain(..) {
            let losses = queued.read().with_context(|| format!("step {at}"))?;
            outcome.steps = at;
            outcome.last_losses = Some(losses);
            if !(losses.d.is_finite() && losses.g.is_finite()) {
                outcome.status = Status::Diverged { step: at, losses };
                break 'steps;
            }
            log.push(at, losses)?;
            observer.step(at, losses, seconds());
        }
        let stop = observer.should_stop();
        let sampler = (sample_due || eval_due).then(|| trainer.sampler());
        if let Some(sampler) = sampler.as_deref().filter(|_| sample_due) {
            let path = trainer.save_sample(sampler, run_dir, step)?;
            observer.sample(step, &path);
            outcome.final_sample = Some(path);
        }
        if let (Some(sampler), Some(evaluator)) =
            (sampler.as_deref().filter(|_| eval_due), &evaluator)
        {
            let began = Instant::now();
            let metrics = trainer.evaluate(sampler, evaluator);
            outcome.evaluating += began.elapsed();
            observer.eval(step, &metrics);
            if metrics.fid.is_finite() && best_fid.is_none_or(|best| metrics.fid < best) {
                trainer.save_best(run_dir, step, metrics.fid, seconds())?;
                best_fid = Some(metrics.fid);
            }
        }
        let pruned = observer.pruned().filter(|_| step < total);
        if checkpoint_due || stop || pruned.is_some() {
            log.flush()?;
            let path = trainer.save_checkpoint(run_dir, step, seconds())?;
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
