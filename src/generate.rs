//! `runner generate`: sampling a trained generator into files, as samples, as walks through
//! its latent space, or beside the training digits nearest to them.

use std::path::Path;

use rand::rngs::StdRng;

use crate::data::Split;
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
    /// The runner that wrote the checkpoint (none: a release that did not record it).
    pub runner: Option<String>,
}

/// Loads the generator of a checkpoint (or of a run directory's latest checkpoint): the
/// moving average of its weights when the run kept one, unless `raw`.
pub fn load_generator(path: &Path, raw: bool) -> anyhow::Result<Loaded> {
    load_latest(path, |dir| load_checkpoint(dir, raw))
}

/// `load` applied to the checkpoint `path` names (a run directory: its latest). A run still
/// training deletes its older checkpoints as it writes new ones: one deleted while it was
/// read gives way to the run's newest.
pub fn load_latest<T>(path: &Path, load: impl Fn(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut attempts = 0;
    loop {
        let dir = checkpoint::resolve(path)?;
        match load(&dir) {
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
    let (mut generator, averaged) = checkpoint.generator(generator, raw)?;
    if averaged {
        // As training sampled and scored it.
        generator = crate::train::ema::settle(&generator, &config.model, config.train.seed);
    }
    Ok(Loaded {
        generator,
        config,
        step: checkpoint.meta.step,
        averaged,
        dir: dir.to_path_buf(),
        runner: checkpoint.meta.runner.clone(),
    })
}

/// What `runner generate` draws.
#[derive(Debug, Clone, Copy)]
pub struct Draw<'a> {
    /// Images; walks with [`Arrangement::Walks`].
    pub n: usize,
    /// Seed of the latent noise.
    pub seed: u64,
    /// The raw G, not the moving average of its weights.
    pub raw: bool,
    /// The class every sample shows (conditional models only); `None` cycles through them.
    pub class: Option<u8>,
    pub arrangement: Arrangement<'a>,
}

/// How `runner generate` lays out what it draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrangement<'a> {
    /// `n` samples.
    Samples,
    /// `n` walks through the latent space of `steps` images each, evenly spaced along the
    /// sphere from one random latent to another, one grid row each.
    Walks { steps: usize },
    /// `n` samples, each followed in its grid row by the `k` training digits nearest to it in
    /// the evaluator's feature space (PNG only), from `data` (default: the run's data).
    Nearest { k: usize, data: Option<&'a Path> },
}

/// What [`generate`] drew from.
#[derive(Debug, Clone)]
pub struct Generated {
    pub step: u64,
    /// Whether the moving average of G's weights drew (not G itself).
    pub averaged: bool,
    /// With [`Arrangement::Nearest`]: how close the samples came to the training digits.
    pub nearness: Option<Nearness>,
}

/// Median distances to the nearest training digit in the evaluator's feature space, of the
/// samples and of held-out test digits: samples much nearer than real digits G never saw
/// would be copies of training digits.
#[derive(Debug, Clone)]
pub struct Nearness {
    pub samples: f64,
    pub test: f64,
    pub test_count: usize,
}

/// Refuses to write generated digits over a data set's own file (`train-images-idx3-ubyte`
/// and the like): runs trained on it would then train on samples.
fn refuse_data_set_file(out: &Path) -> anyhow::Result<()> {
    let name = out.file_name().unwrap_or_default();
    let is_standard = (Split::ALL.iter())
        .flat_map(|split| split.file_names())
        .any(|file| name == file.as_str());
    anyhow::ensure!(
        !(is_standard && out.exists()),
        "{}: is a data set's file; generated digits would replace it (name the output otherwise)",
        out.display()
    );
    Ok(())
}

/// Draws samples into `out` (`.png` grid, `.npy`, IDX or a folder of PNG files; the arrays
/// are resized back to 28x28 for MNIST tools, the PNG files keep G's size) from the average
/// of G's weights when the run kept one, unless `draw.raw`. A conditional model without
/// `draw.class` draws the classes in turn (one grid column, or one row per walk or per
/// sample beside its neighbours).
pub fn generate(checkpoint_path: &Path, draw: Draw<'_>, out: &Path) -> anyhow::Result<Generated> {
    let Draw {
        n,
        seed,
        raw,
        class,
        arrangement,
    } = draw;
    anyhow::ensure!(n > 0, "--n must be at least 1");
    crate::train::refuse_run_entry(out)?;
    refuse_data_set_file(out)?;
    let to_folder = crate::images::names_folder(out);
    let is_grid = !to_folder && out.extension().is_some_and(|e| e == "png");
    let per_row = match arrangement {
        Arrangement::Samples => 1,
        Arrangement::Walks { steps } => {
            anyhow::ensure!(
                steps >= 2,
                "--interpolate must be at least 2 (a walk's two ends), got {steps}"
            );
            steps
        }
        Arrangement::Nearest { k, .. } => {
            anyhow::ensure!(k >= 1, "--nearest must be at least 1");
            anyhow::ensure!(
                is_grid,
                "{}: --nearest draws a grid; name a .png",
                out.display()
            );
            1
        }
    };
    let images_wanted = n.saturating_mul(per_row);
    let Loaded {
        generator,
        config,
        step,
        averaged,
        ..
    } = load_generator(checkpoint_path, raw)?;
    let model = &config.model;
    let flag = match arrangement {
        Arrangement::Walks { .. } => "--n x --interpolate",
        _ => "--n",
    };
    crate::budget::check_images(images_wanted, model.image_side(), flag)?;
    let conditional = model.conditional().is_conditional();
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
    // Samples: image i shows class i % 10; walks: every image of walk r shows class r % 10.
    let labels: Option<Vec<u8>> = conditional.then(|| {
        (0..images_wanted)
            .map(|i| class.unwrap_or(((i / per_row) % CLASSES) as u8))
            .collect()
    });
    let mut noise = rng_for(seed, Stream::Samples, 0);
    let z = match arrangement {
        Arrangement::Walks { steps } => walks(&mut noise, n, model.latent_dim(), steps),
        _ => crate::train::normal_values(&mut noise, n * model.latent_dim()),
    };
    let values = match arrangement {
        // One dropout mask per walk, drawn again for each of its images, so that a model that
        // samples with dropout on walks smoothly instead of flickering from mask to mask.
        Arrangement::Walks { steps } if model.sample_dropout() => {
            let latent_dim = model.latent_dim();
            (0..images_wanted)
                .flat_map(|i| {
                    crate::train::sample_latents(
                        &generator,
                        model,
                        &z[i * latent_dim..(i + 1) * latent_dim],
                        labels.as_ref().map(|l| &l[i..i + 1]),
                        &mut rng_for(seed, Stream::Samples, 2 + (i / steps) as u64),
                    )
                })
                .collect()
        }
        _ => crate::train::sample_latents(
            &generator,
            model,
            &z,
            labels.as_deref(),
            &mut rng_for(seed, Stream::Samples, 1),
        ),
    };
    anyhow::ensure!(
        values.iter().all(|v| v.is_finite()),
        "{}: the generator produces NaN or infinite pixels (broken weights); nothing written",
        checkpoint_path.display()
    );
    let images = ImageBatch::from_unit(&values, model.image_side());
    let images = if is_grid || to_folder {
        images
    } else {
        images.resized(28)
    };
    let mut nearness = None;
    let (images, cols) = match arrangement {
        Arrangement::Walks { steps } => (images, steps),
        Arrangement::Nearest { k, data } => {
            let data = data.map_or_else(|| config.data.resolved_dir(), Path::to_path_buf);
            let (rows, found) = beside_nearest(&images, k, &data)?;
            nearness = Some(found);
            (rows, 1 + k)
        }
        Arrangement::Samples if conditional && class.is_none() => (images, CLASSES.min(n)),
        Arrangement::Samples => (images, (n as f64).sqrt().ceil() as usize),
    };
    if to_folder {
        crate::images::write_folder(&images, labels.as_deref(), out)?;
    } else {
        images.save(out, cols)?;
    }
    Ok(Generated {
        step,
        averaged,
        nearness,
    })
}

/// Test digits scored for [`Nearness`] at least (or as many as the samples).
const NEARNESS_TEST_DIGITS: usize = 1000;

/// Each of `samples` (at 28x28) followed by its `k` nearest training digits in `data_dir`,
/// by distance in the evaluator's feature space, and how near they came.
fn beside_nearest(
    samples: &ImageBatch,
    k: usize,
    data_dir: &Path,
) -> anyhow::Result<(ImageBatch, Nearness)> {
    use crate::data::{Digits, Split};
    use crate::eval::classifier::{Classifier, FEATURES, SIDE};
    use crate::eval::metrics::FeatureSet;
    let digits = |split| {
        Digits::load(data_dir, split).map_err(|e| {
            anyhow::anyhow!("--nearest compares the samples with training digits: {e}")
        })
    };
    let (train, test) = (digits(Split::Train)?, digits(Split::Test)?);
    anyhow::ensure!(
        train.len() >= k,
        "--nearest {k}: the data has only {} training digits",
        train.len()
    );
    let classifier = Classifier::load_or_train(data_dir, &mut |line| crate::errln!("{line}"))?;
    let features = |pixels: &[u8]| FeatureSet::new(&classifier.outputs(pixels).features, FEATURES);
    let samples = samples.resized(SIDE);
    let train_set = features(&train.pixels);
    let found = features(&samples.pixels).nearest(&train_set, k);
    let test_count = test.len().min(samples.len().max(NEARNESS_TEST_DIGITS));
    let test_found = features(&test.pixels[..test_count * SIDE * SIDE]).nearest(&train_set, 1);
    let median = |rows: &[Vec<(usize, f32)>]| {
        let mut d: Vec<f64> = rows.iter().map(|r| r[0].1 as f64).collect();
        d.sort_by(f64::total_cmp);
        d[d.len() / 2]
    };
    let pixels = found
        .iter()
        .enumerate()
        .flat_map(|(i, row)| {
            let neighbours = row.iter().map(|&(j, _)| train.image(j));
            std::iter::once(samples.image(i)).chain(neighbours)
        })
        .flatten()
        .copied()
        .collect();
    let nearness = Nearness {
        samples: median(&found),
        test: median(&test_found),
        test_count,
    };
    Ok((ImageBatch { pixels, side: SIDE }, nearness))
}

/// The latents of `n` walks of `steps` points each, walk after walk. Walk r starts at the
/// latent of image r of a plain draw from the same noise (so its first image is that sample)
/// and ends at a latent drawn after all `n` of those.
fn walks(noise: &mut StdRng, n: usize, latent_dim: usize, steps: usize) -> Vec<f32> {
    let ends = crate::train::normal_values(noise, 2 * n * latent_dim);
    let (from, to) = ends.split_at(n * latent_dim);
    from.chunks(latent_dim)
        .zip(to.chunks(latent_dim))
        .flat_map(|(a, b)| (0..steps).flat_map(move |s| slerp(a, b, s as f64 / (steps - 1) as f64)))
        .collect()
}

/// The point a fraction `t` of the way from `a` to `b` along the great circle between them
/// (White, "Sampling Generative Networks", 2016). A straight line would pass near the origin,
/// where a Gaussian's samples almost never lie and G has seen no latents; this path keeps about
/// the length of its ends. `t` = 0 and 1 give `a` and `b` exactly.
pub fn slerp(a: &[f32], b: &[f32], t: f64) -> Vec<f32> {
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let omega = (dot / (norm(a) * norm(b))).clamp(-1.0, 1.0).acos();
    let (wa, wb) = if omega.sin().abs() < 1e-6 {
        (1.0 - t, t) // (anti)parallel ends: no unique great circle, so a straight line
    } else {
        (
            ((1.0 - t) * omega).sin() / omega.sin(),
            (t * omega).sin() / omega.sin(),
        )
    };
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (wa * x as f64 + wb * y as f64) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(v: &[f32]) -> f64 {
        v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
    }

    #[test]
    fn slerp_ends_exactly_at_its_ends_and_keeps_their_length_between() {
        let mut rng = rng_for(3, Stream::Samples, 0);
        let a = crate::train::normal_values(&mut rng, 100);
        let b = crate::train::normal_values(&mut rng, 100);
        assert_eq!(slerp(&a, &b, 0.0), a);
        assert_eq!(slerp(&a, &b, 1.0), b);
        let mid = slerp(&a, &b, 0.5);
        let lerp_mid: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect();
        // Two random 100-d Gaussians are nearly orthogonal: the straight line's middle is
        // about 1/sqrt(2) as long as its ends, the great circle's as long.
        let ends = (norm(&a) + norm(&b)) / 2.0;
        assert!(
            (norm(&mid) / ends - 1.0).abs() < 0.1,
            "{} vs {ends}",
            norm(&mid)
        );
        assert!(norm(&lerp_mid) / ends < 0.8);
        // Between ends of one length, evenly spaced: each step turns by the same angle.
        let scale = (norm(&a) / norm(&b)) as f32;
        let b: Vec<f32> = b.iter().map(|x| x * scale).collect();
        let angle = |u: &[f32], v: &[f32]| {
            let dot: f64 = u.iter().zip(v).map(|(&x, &y)| x as f64 * y as f64).sum();
            (dot / (norm(u) * norm(v))).acos()
        };
        let points: Vec<Vec<f32>> = (0..5).map(|s| slerp(&a, &b, s as f64 / 4.0)).collect();
        let first = angle(&points[0], &points[1]);
        for pair in points.windows(2) {
            assert!((angle(&pair[0], &pair[1]) - first).abs() < 1e-3);
        }
    }

    #[test]
    fn slerp_of_parallel_ends_is_the_straight_line() {
        let a = [1.0, 2.0];
        let b = [2.0, 4.0];
        assert_eq!(slerp(&a, &b, 0.5), vec![1.5, 3.0]);
        assert!(
            slerp(&a, &a, 0.3)
                .iter()
                .zip(&a)
                .all(|(x, y)| (x - y).abs() < 1e-6)
        );
    }

    #[test]
    fn walk_r_starts_at_sample_r_of_the_same_noise_and_ends_elsewhere() {
        let (n, dim, steps) = (3, 4, 5);
        let plain = crate::train::normal_values(&mut rng_for(7, Stream::Samples, 0), n * dim);
        let z = walks(&mut rng_for(7, Stream::Samples, 0), n, dim, steps);
        assert_eq!(z.len(), n * steps * dim);
        for r in 0..n {
            let walk = &z[r * steps * dim..(r + 1) * steps * dim];
            assert_eq!(&walk[..dim], &plain[r * dim..(r + 1) * dim]);
            assert_ne!(&walk[(steps - 1) * dim..], &walk[..dim]);
        }
    }
}
