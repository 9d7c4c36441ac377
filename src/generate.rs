//! `runner generate`: sampling a trained generator into files.

use std::path::Path;

use crate::images::ImageBatch;
use crate::model::Generator;
use crate::train::checkpoint;
use crate::train::rng::{Stream, rng_for};

/// What [`load_generator`] found.
pub struct Loaded {
    pub generator: Generator,
    pub config: crate::spec::RunConfig,
    pub step: u64,
    /// Whether it is the moving average of G's weights (`train.g_ema`) rather than G itself.
    pub averaged: bool,
}

/// Loads the generator of a checkpoint (or of a run directory's latest checkpoint): the
/// moving average of its weights when the run kept one, unless `raw`.
pub fn load_generator(path: &Path, raw: bool) -> anyhow::Result<Loaded> {
    let dir = checkpoint::resolve(path)?;
    let meta = checkpoint::read_meta(&dir)?;
    let device = crate::backend::device();
    let (generator, _) = meta.config.model.build(
        &mut rng_for(meta.config.train.seed, Stream::Init, 0),
        &device,
    );
    let (generator, averaged) = checkpoint::load_generator(&dir, generator, raw)?;
    Ok(Loaded {
        generator,
        config: meta.config,
        step: meta.step,
        averaged,
    })
}

/// Draws `n` samples with `seed` and writes them to `out` (`.png` grid, `.npy` or IDX; the raw
/// formats are resized back to 28x28) from the average of G's weights when the run kept one,
/// unless `raw`. Returns what was loaded, without the generator.
pub fn generate(
    checkpoint_path: &Path,
    n: usize,
    seed: u64,
    out: &Path,
    raw: bool,
) -> anyhow::Result<(u64, bool)> {
    anyhow::ensure!(n > 0, "--n must be at least 1");
    let Loaded {
        generator,
        config,
        step,
        averaged,
    } = load_generator(checkpoint_path, raw)?;
    crate::budget::check_images(n, config.model.image_side(), "--n")?;
    let values = crate::train::sample_values(&generator, &config.model, n, seed, Stream::Samples);
    anyhow::ensure!(
        values.iter().all(|v| v.is_finite()),
        "{}: the generator produces NaN or infinite pixels (broken weights); nothing written",
        checkpoint_path.display()
    );
    let images = ImageBatch::from_unit(&values, config.model.image_side());
    let is_grid = out.extension().is_some_and(|e| e == "png");
    let images = if is_grid { images } else { images.resized(28) };
    let cols = (n as f64).sqrt().ceil() as usize;
    images.save(out, cols)?;
    Ok((step, averaged))
}
