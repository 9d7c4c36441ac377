//! `runner eval`: scoring a trained generator on demand or another program's images, and
//! the calibration sets that tell what the numbers mean: real training digits (the floor) and
//! uniform noise (the ceiling).

use crate::errln;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use rand::RngExt;
use rand::seq::index;

use crate::data::{Digits, Split};
use crate::eval::{Evaluator, Metrics};
use crate::images::ImageBatch;
use crate::query::Rows;
use crate::spec::{LogConfig, RunConfig};
use crate::track::claims::Owner;
use crate::track::records::RecordsFile;
use crate::track::{Event, Tracker};
use crate::train::rng::{Stream, rng_for};

/// One scored set of images.
#[derive(Debug, Clone)]
pub struct Scored {
    pub label: String,
    /// The checkpoint's step, for a generator.
    pub step: Option<u64>,
    /// The checkpoint scored, for a generator.
    pub checkpoint: Option<PathBuf>,
    pub metrics: Metrics,
    /// Time to sample and score (not counting the classifier's one-off training).
    pub seconds: f64,
}

/// The checkpoint a user names: a checkpoint or run directory (its latest checkpoint), or a
/// run id (or a unique prefix of one) in the database, whose directory it gives.
pub fn resolve_target(target: &str, db: &Path) -> Result<PathBuf> {
    let path = Path::new(target);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if !db.is_file() {
        bail!(
            "`{target}`: no such file, and no database at {} to look a run up in",
            db.display()
        );
    }
    let run = crate::query::find_run(db, target)
        .map_err(|e| anyhow::anyhow!("`{target}`: no such file; {e:#}"))?;
    let run_dir = PathBuf::from(
        run.get(0, "run_dir")
            .and_then(|v| v.as_str())
            .unwrap_or_default(),
    );
    Ok(crate::track::locate(db, &run_dir).unwrap_or(run_dir))
}

/// Refuses a `--samples` that no checkpoint could be scored on: fewer than 2, or more than
/// memory holds.
pub fn check_samples(samples: usize) -> Result<()> {
    anyhow::ensure!(samples >= 2, "--samples must be at least 2");
    crate::budget::check_images(samples, 32, "--samples")
}

/// Scores the generator of a checkpoint (or a run directory's latest) on `samples` images drawn with the evaluation noise
/// of `seed` (default: the run's own, so the result matches the run's logged evaluation).
/// Also says why the score does not compare with the run's logged evaluations, if it does
/// not (then it must not be stored beside them).
pub fn score_checkpoint(
    target: &Path,
    samples: usize,
    seed: Option<u64>,
    data_dir: Option<&Path>,
    log: &mut dyn FnMut(&str),
) -> Result<(Scored, Option<String>)> {
    check_samples(samples)?;
    let crate::generate::Loaded {
        generator,
        config,
        step,
        dir: checkpoint,
        ..
    } = crate::generate::load_generator(target, false)?;
    let unlike_logged = unlike_logged(&config, samples, seed, data_dir);
    let data_dir = data_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| config.data.resolved_dir());
    let evaluator = Evaluator::shared(&data_dir, config.model.image_side(), log)?;
    let start = Instant::now();
    let metrics = crate::train::evaluate_generator(
        &evaluator,
        &generator,
        &config.model,
        samples,
        seed.unwrap_or(config.train.seed),
    );
    let scored = Scored {
        label: checkpoint.display().to_string(),
        step: Some(step),
        checkpoint: Some(checkpoint),
        metrics,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((scored, unlike_logged))
}

/// Scores the first `samples` images of a file or folder another program made (see
/// [`ImageBatch::load`]) against the test digits in `data_dir`, as a run's evaluations score
/// its samples: one yardstick for a PyTorch GAN and the runner's. `labels` (or the folder's
/// class folders) add the conditional scores.
pub fn score_file(
    path: &Path,
    labels: Option<&Path>,
    data_dir: &Path,
    samples: usize,
    log: &mut dyn FnMut(&str),
) -> Result<Scored> {
    anyhow::ensure!(samples >= 2, "--samples must be at least 2");
    let crate::images::Loaded {
        mut images,
        labels: folder_labels,
        how,
    } = ImageBatch::load(path)?;
    log(&format!("{}: {how}", path.display()));
    anyhow::ensure!(
        labels.is_none() || folder_labels.is_none(),
        "{}: its class folders already label the images; drop --labels",
        path.display()
    );
    let mut labels = labels
        .map(|labels_path| -> Result<Vec<u8>> {
            let labels = crate::images::load_labels(labels_path)?;
            anyhow::ensure!(
                labels.len() == images.len(),
                "{}: {} labels for the {} images of {}",
                labels_path.display(),
                labels.len(),
                images.len(),
                path.display()
            );
            Ok(labels)
        })
        .transpose()?
        .or(folder_labels);
    anyhow::ensure!(
        images.len() >= 2,
        "{}: {} image(s); scoring needs at least 2",
        path.display(),
        images.len()
    );
    if images.len() < samples {
        log(&format!(
            "scoring all {} of them: FID grows as the count falls, so compare it only with \
             scores of as many images (--samples {}; runs' evaluations use log.eval_samples)",
            images.len(),
            images.len()
        ));
    }
    let kept = images.len().min(samples);
    images.pixels.truncate(kept * images.side * images.side);
    if let Some(labels) = &mut labels {
        labels.truncate(kept);
    }
    // Shared: several files of one side are scored with one evaluator.
    let evaluator = Evaluator::shared(data_dir, images.side, log)?;
    let start = Instant::now();
    Ok(Scored {
        label: path.display().to_string(),
        step: None,
        checkpoint: None,
        metrics: evaluator.evaluate(&images, labels.as_deref()),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Why an evaluation of `samples` images with noise `seed` against `data_dir` differs from
/// the logged evaluations of a run of `config`: FID and KID depend on the sample count (FID's
/// bias falls with it), every score on the noise drawn and the data scored against.
fn unlike_logged(
    config: &RunConfig,
    samples: usize,
    seed: Option<u64>,
    data_dir: Option<&Path>,
) -> Option<String> {
    let logged = match config.log.eval_samples {
        0 => LogConfig::default().eval_samples,
        n => n,
    };
    if samples != logged {
        return Some(format!(
            "--samples {samples}, where the run's evaluations use {logged}"
        ));
    }
    if let Some(seed) = seed.filter(|&s| s != config.train.seed) {
        return Some(format!(
            "--seed {seed}, where the run's evaluations use its seed {}",
            config.train.seed
        ));
    }
    let resolved = |p: &Path| crate::fsutil::resolve_path(p).unwrap_or_else(|_| p.to_path_buf());
    let run_data = config.data.resolved_dir();
    match data_dir {
        Some(dir) if resolved(dir) != resolved(&run_data) => Some(format!(
            "--data-dir {}, where the run's evaluations use {}",
            dir.display(),
            run_data.display()
        )),
        _ => None,
    }
}

/// Stores an evaluation of the checkpoint in `checkpoint_dir` with its run, when the
/// database knows the run (by its directory), and keeps the checkpoint as the run's best state
/// when it scored best.
pub fn record(db: &Path, checkpoint_dir: &Path, step: u64, metrics: &Metrics) -> Result<()> {
    if !db.is_file() {
        return Ok(());
    }
    // <run dir>/checkpoints/step-N
    let Some(run_dir) = checkpoint_dir.parent().and_then(Path::parent) else {
        return Ok(());
    };
    let Ok(run_dir) = std::fs::canonicalize(run_dir) else {
        return Ok(());
    };
    let found = crate::query::run_dirs(db)?
        .into_iter()
        .find(|(_, dir)| *dir == run_dir);
    let Some((id, _)) = found else {
        return Ok(());
    };
    let event = Event::Eval {
        run_id: id.clone(),
        step,
        metrics: metrics.named(),
        seconds: None,
    };
    // `runner rm` may delete the run while it is scored: then nothing is stored, and its
    // directory is not made again.
    let deleted = || {
        errln!("run {id} was deleted while it was scored: its evaluation is not stored");
        Ok(())
    };
    // Into the run's own records too, so a rebuilt database keeps it; a run directory that
    // cannot be written (read-only media) still gets the database row.
    let task = format!("eval:{}", Owner::this_process().tag());
    let written = RecordsFile::open(&run_dir, task, false)
        .and_then(|records| records.write(event.clone()).map_err(anyhow::Error::msg));
    if let Err(err) = written {
        if !run_dir.is_dir() {
            return deleted();
        }
        errln!("warning: the evaluation is not in the run's records.jsonl: {err:#}");
    }
    let tracker = Tracker::start(db)?;
    tracker.send(event);
    if let Err(err) = tracker.close() {
        let known = crate::query::run_dirs(db)?
            .into_iter()
            .any(|(run, _)| run == id);
        return if known { Err(err) } else { deleted() };
    }
    errln!("recorded as run {id}, step {step}, in {}", db.display());
    if let Err(err) = keep_if_best(&run_dir, checkpoint_dir, metrics.fid) {
        if !run_dir.is_dir() {
            return deleted();
        }
        errln!("warning: the run's best state is not updated: {err:#}");
    }
    Ok(())
}

/// Keeps a recorded evaluation's checkpoint as its run's best state when it scored below the
/// run's best so far (or the run has none), as training keeps its evaluations' best: so that
/// `generate --best`, `eval --best` and the report agree with the best FID `runs` shows. A
/// run in training keeps its own.
fn keep_if_best(run_dir: &Path, checkpoint_dir: &Path, fid: f64) -> Result<()> {
    use crate::train::checkpoint;
    let better = || fid.is_finite() && checkpoint::best_fid(run_dir).is_none_or(|best| fid < best);
    if !better() {
        return Ok(());
    }
    let Some(_lock) = crate::fsutil::try_lock_existing_dir_patiently(run_dir)? else {
        errln!(
            "another process holds the run (training it): its best state is left to that process"
        );
        return Ok(());
    };
    if better() {
        // What an earlier `runner eval` killed while it kept a best state left.
        checkpoint::remove_unfinished(run_dir)?;
        let best = checkpoint::keep_as_best(run_dir, checkpoint_dir, fid)?;
        errln!("kept as the run's best state: {}", best.display());
    }
    Ok(())
}

/// Real training digits and uniform noise, `samples` of each, scored at each image side of
/// `sides` (28: the MLP GAN's; 32: the DCGANs', through the same resize as their samples).
pub fn calibration(
    data_dir: &Path,
    sides: &[usize],
    samples: usize,
    seed: u64,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Scored>> {
    anyhow::ensure!(samples >= 2, "--samples must be at least 2");
    let train = Digits::load(data_dir, Split::Train)?;
    let picked = index::sample(
        &mut rng_for(seed, Stream::Eval, 0),
        train.len(),
        samples.min(train.len()),
    );
    let real = ImageBatch {
        pixels: picked
            .iter()
            .flat_map(|i| train.image(i).to_vec())
            .collect(),
        side: train.side,
    };
    let mut out = Vec::new();
    for &side in sides {
        let evaluator = Evaluator::new(data_dir, side, log)?;
        let mut noise_rng = rng_for(seed, Stream::Eval, 1);
        let noise = ImageBatch {
            pixels: (0..samples * side * side)
                .map(|_| noise_rng.random())
                .collect(),
            side,
        };
        for (label, images) in [
            (
                format!("real training images ({side}px)"),
                real.resized(side),
            ),
            (format!("uniform noise ({side}px)"), noise),
        ] {
            let start = Instant::now();
            let metrics = evaluator.evaluate(&images, None);
            out.push(Scored {
                label,
                step: None,
                checkpoint: None,
                metrics,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
    }
    Ok(out)
}

/// Scored sets as rows for `--format table|csv|json`.
pub fn rows(scored: &[Scored]) -> Rows {
    let round = |v: f64, places: i32| {
        let scale = 10f64.powi(places);
        serde_json::json!((v * scale).round() / scale)
    };
    // Scores of images drawn for given classes add how well they show them.
    let conditional = scored.iter().any(|s| s.metrics.class_acc.is_some());
    let class_columns = ["class_acc", "intra_fid"];
    let columns = ["set", "step", "samples"]
        .into_iter()
        .chain(crate::eval::HEADLINE)
        .chain(class_columns.into_iter().filter(|_| conditional))
        .chain(["seconds"]);
    Rows {
        columns: columns.map(str::to_string).collect(),
        rows: scored
            .iter()
            .map(|s| {
                let headline = s.metrics.headline().into_iter().map(|(name, v)| {
                    // FID and IS are large numbers; the rest are shares and divergences.
                    round(v, if matches!(name, "fid" | "is") { 3 } else { 4 })
                });
                [
                    s.label.clone().into(),
                    s.step.map_or(serde_json::Value::Null, Into::into),
                    s.metrics.samples.into(),
                ]
                .into_iter()
                .chain(headline)
                .chain(
                    [
                        s.metrics.class_acc.map(|a| round(a, 4)),
                        s.metrics.intra_fid.map(|f| round(f, 3)),
                    ]
                    .into_iter()
                    .filter(|_| conditional)
                    .map(|v| v.unwrap_or(serde_json::Value::Null)),
                )
                .chain([round(s.seconds, 2)])
                .collect()
            })
            .collect(),
    }
}
