//! `runner sweep --estimate`: what a sweep would cost on this machine, before it runs. Each
//! distinct step shape among the runs left to train (what a training step computes: model,
//! batch, D steps, loss and penalties; not the seed, learning rates or the run's length) is
//! timed for a few steps on synthetic digits, and each run's steps left are priced at its
//! shape's median.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::PlannedRun;
use super::plan::{Planner, Recorded};
use crate::spec::RunConfig;

/// Untimed steps before the timed ones (the first allocates every buffer).
const WARMUP_STEPS: usize = 1;
/// Steps timed per shape; the median prices them.
pub const TIMED_STEPS: usize = 3;

/// A sweep's training time left, run by run.
#[derive(Debug, Clone, Default)]
pub struct Estimate {
    /// Seconds of training each planned run has left, by run id: none for a run the sweep
    /// skips (finished, diverged, pruned, or trained by another process).
    pub left: HashMap<String, f64>,
    /// The seconds per step of each shape timed.
    pub step_seconds: Vec<f64>,
}

impl Estimate {
    /// The runs left to train and their training time in all.
    pub fn total(&self) -> (usize, f64) {
        (self.left.len(), self.left.values().sum())
    }

    /// One line for people: the total and what it rests on.
    pub fn summary(&self) -> String {
        let (runs, seconds) = self.total();
        if runs == 0 {
            return "estimated training time: nothing left to train".into();
        }
        let (fastest, slowest) = self
            .step_seconds
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &s| {
                (lo.min(s), hi.max(s))
            });
        let pace = if self.step_seconds.len() == 1 {
            format!("{TIMED_STEPS} steps timed here: {} ms a step", ms(fastest))
        } else {
            format!(
                "{TIMED_STEPS} steps of each of {} step shapes timed here: {} to {} ms a step",
                self.step_seconds.len(),
                ms(fastest),
                ms(slowest)
            )
        };
        let cores = rayon::current_num_threads();
        format!(
            "estimated training time: {} for {runs} run{} ({pace}, one run at a time on {cores} \
             core{}); evaluations are not counted, and early stopping can cut it short",
            crate::query::clock(seconds),
            if runs == 1 { "" } else { "s" },
            if cores == 1 { "" } else { "s" },
        )
    }
}

/// `seconds` as milliseconds to three significant digits (0.0123 -> "12.3").
fn ms(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    let decimals = (2 - ms.abs().max(1e-3).log10().floor() as i32).clamp(0, 5) as usize;
    format!("{ms:.decimals$}")
}

/// Times the step shapes of `planner`'s runs that a sweep would train (all of them with
/// `force`), given what the database records of them, and prices their steps left.
/// `timing(i, n)` is told before each of the `n` shapes is timed; an error from it (Ctrl-C)
/// stops the estimate.
pub fn estimate(
    planner: &Planner,
    recorded: &HashMap<String, Recorded>,
    force: bool,
    mut timing: impl FnMut(usize, usize) -> Result<()>,
) -> Result<Estimate> {
    let mut train_lens: HashMap<PathBuf, usize> = HashMap::new();
    let mut to_train: Vec<(&PlannedRun, u64)> = Vec::new();
    for run in &planner.runs {
        let config = &run.point.config;
        // Only a run whose length is given in epochs needs its data's size.
        let train_len = if config.train.steps.is_some() {
            0
        } else {
            let dir = config.data.resolved_dir();
            match train_lens.get(&dir) {
                Some(&len) => len,
                None => {
                    let digits = crate::data::Digits::load(&dir, crate::data::Split::Train)?;
                    train_lens.insert(dir, digits.len());
                    digits.len()
                }
            }
        };
        let total = config.train.total_steps(train_len);
        let left = steps_left(total, recorded.get(&run.id), force);
        if left > 0 {
            to_train.push((run, left));
        }
    }
    let mut shapes: Vec<(String, RunConfig)> = Vec::new();
    for (run, _) in &to_train {
        let shape = step_shape(&run.point.config);
        let key = serde_json::to_string(&shape).expect("configs serialize");
        if !shapes.iter().any(|(k, _)| *k == key) {
            shapes.push((key, shape));
        }
    }
    let mut step_seconds: HashMap<String, f64> = HashMap::new();
    for (i, (key, shape)) in shapes.iter().enumerate() {
        timing(i, shapes.len())?;
        let ms = crate::train::step_times_ms(shape, WARMUP_STEPS, TIMED_STEPS)
            .with_context(|| format!("timing a step of batch {}", shape.train.batch_size))?;
        step_seconds.insert(key.clone(), ms[ms.len() / 2] / 1000.0);
    }
    let left = to_train
        .iter()
        .map(|(run, steps)| {
            let key = serde_json::to_string(&step_shape(&run.point.config)).expect("serializes");
            (run.id.clone(), *steps as f64 * step_seconds[&key])
        })
        .collect();
    Ok(Estimate {
        left,
        step_seconds: shapes.iter().map(|(key, _)| step_seconds[key]).collect(),
    })
}

/// The steps a sweep would train of a run with `total` steps, given what is recorded of it:
/// all of a new run's (but those of the shorter run it continues), the rest of an unfinished
/// one's (from its last recorded step: it resumes from its checkpoint at or before it), none
/// of one the sweep skips. `force` starts every run over.
fn steps_left(total: u64, recorded: Option<&Recorded>, force: bool) -> u64 {
    let Some(recorded) = recorded.filter(|_| !force) else {
        return total;
    };
    match (recorded.status.as_str(), &recorded.from) {
        (_, Some((_, from))) => total.saturating_sub(*from),
        // (`running`: another process trains it; `pruned`: kept out unless its rung now
        // keeps it.)
        ("finished" | "diverged" | "pruned" | "running", _) => 0,
        _ => total.saturating_sub(recorded.steps.map_or(0, |(done, _)| done)),
    }
}

/// What a training step of `config` computes, without what changes only the values it
/// computes with (seed, learning rates and their schedule, the real label's target, penalty
/// and averaging weights) or the run's length and files (steps, epochs, `[log]`, `[data]`).
fn step_shape(config: &RunConfig) -> RunConfig {
    let (mut shape, defaults) = (config.clone(), RunConfig::default());
    let train = &mut shape.train;
    (train.steps, train.epochs, train.seed) = (Some(1), None, 0);
    (train.lr, train.g_lr, train.d_lr) = (defaults.train.lr, None, None);
    (train.betas, train.lr_decay) = (defaults.train.betas, defaults.train.lr_decay);
    train.real_label = defaults.train.real_label;
    train.gp_weight = None;
    // Present or not is what costs; their size does not.
    train.clip = train.clip.map(|_| 0.01);
    train.r1_gamma = if train.r1_gamma > 0.0 { 1.0 } else { 0.0 };
    train.g_ema = if train.g_ema > 0.0 { 0.999 } else { 0.0 };
    (shape.log, shape.data) = (defaults.log, defaults.data);
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(status: &str, done: Option<u64>, from: Option<u64>) -> Recorded {
        Recorded {
            status: status.into(),
            steps: done.map(|done| (done, Some(800))),
            from: from.map(|step| ("8d0c51e2a7f3".into(), step)),
        }
    }

    #[test]
    fn runs_are_priced_by_the_steps_a_sweep_would_train() {
        assert_eq!(steps_left(800, None, false), 800);
        assert_eq!(
            steps_left(800, Some(&recorded("new", None, Some(300))), false),
            500
        );
        assert_eq!(
            steps_left(800, Some(&recorded("interrupted", Some(600), None)), false),
            200
        );
        assert_eq!(
            steps_left(800, Some(&recorded("orphaned", Some(100), None)), false),
            700
        );
        assert_eq!(
            steps_left(800, Some(&recorded("failed", Some(0), None)), false),
            800
        );
        for skipped in ["finished", "diverged", "pruned", "running"] {
            let run = recorded(skipped, Some(400), None);
            assert_eq!(steps_left(800, Some(&run), false), 0, "{skipped}");
            assert_eq!(
                steps_left(800, Some(&run), true),
                800,
                "{skipped} with --force"
            );
        }
    }

    #[test]
    fn paces_keep_three_significant_digits() {
        assert_eq!(ms(0.41234), "412");
        assert_eq!(ms(0.0123), "12.3");
        assert_eq!(ms(0.00051), "0.510");
        assert_eq!(ms(2.5), "2500");
    }

    #[test]
    fn a_step_shape_is_what_a_step_computes() {
        let base = RunConfig::default();
        let mut same = base.clone();
        (same.train.seed, same.train.lr, same.train.steps) = (7, 1e-3, Some(5000));
        same.train.r1_gamma = 10.0;
        let mut other_gamma = base.clone();
        other_gamma.train.r1_gamma = 0.1;
        assert_eq!(step_shape(&same), step_shape(&other_gamma));
        let mut bigger = base.clone();
        bigger.train.batch_size = 128;
        let mut more_d = base.clone();
        more_d.train.d_steps = 2;
        for costlier in [bigger, more_d, base.clone()] {
            assert_ne!(step_shape(&same), step_shape(&costlier));
        }
    }
}
