//! `runner eval`: scoring runs (one, several, or those an experiment, tag and status select,
//! with one evaluator), other programs' images, or the calibration sets.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::latest_or_best;
use crate::console::counted;
use crate::data::{self, DatasetName};
use crate::{errln, out, outln};

/// What `runner eval` was asked.
pub struct EvalRequest<'a> {
    /// Runs (ids, prefixes, directories) or checkpoints.
    pub targets: &'a [String],
    /// Every run of this experiment, or with these tags, and of these statuses, too.
    pub experiment: Option<&'a str>,
    pub tags: &'a [String],
    pub statuses: &'a [String],
    /// Each run's best state rather than its latest checkpoint.
    pub best: bool,
    /// Images another program made (files or folders), to score instead of a run.
    pub images: &'a [PathBuf],
    /// The class of each of `images`, for a conditional GAN's.
    pub labels: Option<&'a Path>,
    pub real: bool,
    pub train_classifier: bool,
    pub samples: usize,
    pub seed: Option<u64>,
    pub dataset: DatasetName,
    pub data_dir: Option<&'a Path>,
    pub format: crate::query::Format,
    pub db: &'a Path,
}

pub fn eval(req: EvalRequest) -> Result<()> {
    // Runs scored one after another share the evaluator, which says once what it uses.
    let mut said = std::collections::HashSet::new();
    let mut log = |line: &str| {
        if said.insert(line.to_string()) {
            errln!("{line}");
        }
    };
    if req.train_classifier {
        let dir = data::dataset_dir(Path::new("data"), req.dataset, req.data_dir);
        let classifier = crate::eval::classifier::Classifier::load(&dir, true, &mut log)?;
        outln!(
            "{}: classifier {} (test accuracy {:.2}%)",
            dir.display(),
            classifier.path.display(),
            100.0 * classifier.test_accuracy
        )?;
        return Ok(());
    }
    let scored = if req.real {
        let dir = data::dataset_dir(Path::new("data"), req.dataset, req.data_dir);
        crate::score::calibration(
            &dir,
            &[28, 32],
            req.samples,
            req.seed.unwrap_or(0),
            &mut log,
        )?
    } else if !req.images.is_empty() {
        anyhow::ensure!(
            req.labels.is_none() || req.images.len() == 1,
            "--labels goes with one --images, not {}",
            req.images.len()
        );
        let dir = data::dataset_dir(Path::new("data"), req.dataset, req.data_dir);
        (req.images.iter())
            .map(|path| crate::score::score_file(path, req.labels, &dir, req.samples, &mut log))
            .collect::<Result<_>>()?
    } else {
        return score_runs(&req, &mut log);
    };
    out!("{}", crate::score::rows(&scored).render(req.format)?)?;
    Ok(())
}

/// Scores the checkpoints of the runs `req` names or selects, one after another, printing a
/// row each: one that cannot be scored (a damaged file) is named and leaves the others to be
/// scored, and fails the command at the end.
fn score_runs(req: &EvalRequest, log: &mut dyn FnMut(&str)) -> Result<()> {
    // Refused once, not once for each run.
    crate::score::check_samples(req.samples)?;
    let checkpoints = checkpoints_to_score(req)?;
    let (mut scored, mut failed) = (Vec::new(), 0);
    for (i, checkpoint) in checkpoints.iter().enumerate() {
        if checkpoints.len() > 1 {
            errln!("[{}/{}] {}", i + 1, checkpoints.len(), checkpoint.display());
        }
        match score_and_record(checkpoint, req, log) {
            Ok(one) => scored.push(one),
            Err(err) if checkpoints.len() == 1 => return Err(err),
            Err(err) => {
                errln!("error: {err:#}");
                failed += 1;
            }
        }
    }
    if !scored.is_empty() {
        out!("{}", crate::score::rows(&scored).render(req.format)?)?;
    }
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} could not be scored (see above)",
        counted(checkpoints.len(), "checkpoint")
    );
    Ok(())
}

/// What `runner eval` scores of runs: the checkpoints (or run directories: their latest, when
/// scored) its targets name, in their order, then those of the runs it selects by experiment,
/// tag and status, each once. A selected run with nothing to score (one that failed before
/// its first checkpoint; with `--best`, one never evaluated) is passed over, saying so.
fn checkpoints_to_score(req: &EvalRequest) -> Result<Vec<PathBuf>> {
    let selecting = req.experiment.is_some() || !req.tags.is_empty();
    anyhow::ensure!(
        selecting || req.statuses.is_empty(),
        "--status picks among the runs of --experiment or --tag; give one of them"
    );
    anyhow::ensure!(
        selecting || !req.targets.is_empty(),
        "name a run or a checkpoint (or --experiment NAME, --tag TAG), or pass --images PATH \
         or --real"
    );
    let mut checkpoints = Vec::new();
    for target in req.targets {
        let path = crate::score::resolve_target(target, req.db)?;
        checkpoints.push(latest_or_best(&path, req.best)?);
    }
    if selecting {
        if let Some(experiment) = req.experiment {
            crate::query::check_experiment(req.db, experiment)?;
        }
        let runs = crate::query::select_runs(req.db, &[], req.experiment, req.tags, req.statuses)?;
        let before = checkpoints.len();
        for run in &runs {
            let found = latest_or_best(&run.run_dir, req.best).and_then(|path| {
                crate::train::checkpoint::resolve(&path)?;
                Ok(path)
            });
            match found {
                Ok(path) => checkpoints.push(path),
                Err(err) => errln!("run {} ({}): passed over: {err:#}", run.id, run.status),
            }
        }
        anyhow::ensure!(
            checkpoints.len() > before || !req.targets.is_empty(),
            "none of the {} selected has a checkpoint to score",
            counted(runs.len(), "run")
        );
    }
    let mut seen = std::collections::HashSet::new();
    checkpoints
        .retain(|path| seen.insert(crate::fsutil::resolve_path(path).unwrap_or(path.clone())));
    Ok(checkpoints)
}

/// Scores `checkpoint` for `runner eval` and stores the score with its run when it is one of
/// the run's own evaluations (the same sample count, noise and data as its logged ones).
fn score_and_record(
    checkpoint: &Path,
    req: &EvalRequest,
    log: &mut dyn FnMut(&str),
) -> Result<crate::score::Scored> {
    let (scored, unlike_logged) =
        crate::score::score_checkpoint(checkpoint, req.samples, req.seed, req.data_dir, log)?;
    let step = scored.step.expect("a checkpoint has a step");
    let dir = scored
        .checkpoint
        .as_deref()
        .expect("a checkpoint was scored");
    // Stored with the run only when it compares with the run's logged evaluations (then
    // at a logged step it is the same value): never replacing one by another kind.
    if let Some(why) = unlike_logged {
        errln!("not recorded with its run: {why}");
    } else if req.best {
        errln!("not recorded again: a run's best state is its evaluation at step {step}");
    } else {
        crate::score::record(req.db, dir, step, &scored.metrics)?;
    }
    Ok(scored)
}
