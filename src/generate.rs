//! `runner generate`: sampling a trained generator into files.

use std::path::Path;

use crate::images::ImageBatch;
use crate::model::{CLASSES, Generator};
use crate::train::checkpoint;
use crate::train::rng::{Stream, rng_for};

/// What [`load_generator`] found.
pub struct Loaded {
    pub generator: Generator,
    pub config: crate::spec::RunConfig,
    pub step: u64,
    /// Whether it is the moving average of G's weights (`train.g_ema`) rather than G itself.
    pub averaged: bool,
    /// The checkpoint it came from.
    pub dir: std::path::PathBuf,
}

/// Loads the generator of a checkpoint (or of a run directory's latest checkpoint): the
/// moving average of its weights when the run kept one, unless `raw`.
pub fn load_generator(path: &Path, raw: bool) -> anyhow::Result<Loaded> {
    // A run still training deletes its older checkpoints as it writes new ones: one deleted
    // while it was read gives way to the run's newest.
    let mut attempts = 0;
    loop {
        let dir = checkpoint::resolve(path)?;
        match load_checkpoint(&dir, raw) {
            Err(_) if dir != path && !dir.exists() && attempts < 10 => attempts += 1,
            loaded => return loaded,
        }
    }
}

fn load_checkpoint(dir: &Path, raw: bool) -> anyhow::Result<Loaded> {
    let checkpoint = checkpoint::Opened::open(dir)?;
    let config = checkpoint.meta.config.clone();
    let device = crate::backend::device();
    let (generator, _) = config
        .model
        .build(&mut rng_for(config.train.seed, Stream::Init, 0), &device);
    let (generator, averaged) = checkpoint.generator(generator, raw)?;
    Ok(Loaded {
        generator,
        config,
        step: checkpoint.meta.step,
        averaged,
        dir: dir.to_path_buf(),
    })
}

/// What `runner generate` draws.
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    pub n: usize,
    /// Seed of the latent noise.
    pub seed: u64,
    /// The raw G, not the moving average of its weights.
    pub raw: bool,
    /// The class every sample shows (conditional models only); `None` cycles through them.
    pub class: Option<u8>,
}

/// Draws samples into `out` (`.png` grid, `.npy` or IDX; the raw formats are resized back to
/// 28x28) from the average of G's weights when the run kept one, unless `draw.raw`. A
/// conditional model without `draw.class` draws the classes in turn, and a grid then has one
/// column per class. Returns the step and whether the average was loaded.
pub fn generate(checkpoint_path: &Path, draw: Draw, out: &Path) -> anyhow::Result<(u64, bool)> {
    let Draw {
        n,
        seed,
        raw,
        class,
    } = draw;
    anyhow::ensure!(n > 0, "--n must be at least 1");
    let Loaded {
        generator,
        config,
        step,
        averaged,
        ..
    } = load_generator(checkpoint_path, raw)?;
    crate::budget::check_images(n, config.model.image_side(), "--n")?;
    let conditional = config.model.conditional().is_conditional();
    if let Some(class) = class {
        anyhow::ensure!(
            conditional,
            "{}: --class {class} needs a conditional model; this run's model.conditional is \"none\"",
            checkpoint_path.display()
        );
        anyhow::ensure!(
            (class as usize) < CLASSES,
            "--class must be in 0..={}, got {class}",
            CLASSES - 1
        );
    }
    let labels: Option<Vec<u8>> = match class {
        Some(class) => Some(vec![class; n]),
        None => crate::train::eval_labels(&config.model, n),
    };
    let values = crate::train::sample_values(
        &generator,
        &config.model,
        n,
        seed,
        Stream::Samples,
        labels.as_deref(),
    );
    anyhow::ensure!(
        values.iter().all(|v| v.is_finite()),
        "{}: the generator produces NaN or infinite pixels (broken weights); nothing written",
        checkpoint_path.display()
    );
    let images = ImageBatch::from_unit(&values, config.model.image_side());
    let is_grid = out.extension().is_some_and(|e| e == "png");
    let images = if is_grid { images } else { images.resized(28) };
    let cols = if conditional && class.is_none() {
        CLASSES.min(n)
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    images.save(out, cols)?;
    Ok((step, averaged))
}
