//! `runner sweep --estimate`: what a sweep would cost on this machine, before it runs. Each
//! distinct shape among the runs left to train (what a training step and an evaluation
//! compute: model, batch, D steps, loss and penalties, evaluation samples and test digits; not
//! the seed, learning rates or the run's length) is timed for a few steps on synthetic
//! digits, and for one evaluation; each run's steps and evaluations left are priced at its
//! shape's. A sweep that trains several runs at a time shares the cores among them: each
//! shape is timed again with as many copies of it training at once, and the runs are laid
//! out in the sweep's order on its `--jobs` workers.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::PlannedRun;
use super::plan::{Planner, Recorded};
use crate::spec::RunConfig;

/// Untimed steps before the timed ones (the first allocates every buffer).
const WARMUP_STEPS: usize = 1;
/// Steps timed per shape at least; the median prices them.
const TIMED_STEPS: usize = 3;
/// Steps this quick are timed until about this long (at most [`MAX_TIMED_STEPS`]): a few
/// milliseconds' steps vary more than the clock's resolution.
const MIN_TIMED_SECONDS: f64 = 0.3;
const MAX_TIMED_STEPS: usize = 100;

/// A sweep's time left, run by run.
#[derive(Debug, Clone, Default)]
pub struct Estimate {
    /// Seconds from each run's start to its end (evaluations included), by run id: none for
    /// a run the sweep skips (finished, diverged, pruned, or trained by another process).
    pub left: HashMap<String, f64>,
    /// Seconds from the first run's start to the last one's end.
    pub wall: f64,
    /// The same, one run at a time (when `jobs` is more than one): whether sharing pays.
    pub one_at_a_time: Option<f64>,
    /// Under `[search.prune]` rungs: the seconds to the last end if each rung kept its share
    /// (`keep`) of the runs that reach it, and that share.
    pub if_rungs_keep: Option<(f64, f64)>,
    /// Runs trained at a time.
    pub jobs: usize,
    /// The evaluations the runs left to train will make.
    pub evaluations: u64,
    /// Each timed shape's seconds per step, training alone.
    pub step_seconds: Vec<f64>,
    /// Each timed shape's seconds per step with `jobs` runs of it training at once (none when
    /// one run trains at a time).
    pub shared_step_seconds: Vec<f64>,
    /// Each timed shape's seconds per evaluation, alone (shapes whose runs evaluate).
    pub eval_seconds: Vec<f64>,
}

impl Estimate {
    /// One line for people: the total and what it rests on.
    pub fn summary(&self) -> String {
        if self.left.is_empty() {
            return "estimated training time: nothing left to train".into();
        }
        let shapes = match self.step_seconds.len() {
            1 => String::new(),
            n => format!("{n} shapes "),
        };
        let at_a_time = self.jobs > 1 && !self.shared_step_seconds.is_empty();
        let alone = if at_a_time { " alone" } else { "" };
        let mut timed = format!(
            "{shapes}timed here: {} ms a step{alone}",
            spread(&self.step_seconds, 1000.0)
        );
        if at_a_time {
            timed += &format!(
                " and {} with {} at a time",
                spread(&self.shared_step_seconds, 1000.0),
                self.jobs
            );
        }
        if !self.eval_seconds.is_empty() {
            timed += &format!(
                ", {} s an evaluation{alone}",
                spread(&self.eval_seconds, 1.0)
            );
        }
        let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let evaluations = match self.evaluations {
            0 => String::new(),
            n => format!(", {} included", plural(n, "evaluation")),
        };
        let cores = plural(rayon::current_num_threads() as u64, "core");
        let sharing = if at_a_time {
            let mut sharing = format!("{} runs at a time on {cores}", self.jobs);
            if let Some(alone) = self.one_at_a_time {
                sharing += &format!("; {} one at a time", crate::query::clock(alone));
            }
            sharing
        } else {
            format!("one run at a time on {cores}")
        };
        let stopping = match self.if_rungs_keep {
            Some((wall, keep)) => format!(
                "about {} if each rung keeps {} of the runs that reach it (its first runs always \
                 go on)",
                crate::query::clock(wall),
                share(keep)
            ),
            None => "early stopping can cut it short".into(),
        };
        format!(
            "estimated training time: {} for {}{evaluations} ({timed}; {sharing}); {stopping}",
            crate::query::clock(self.wall),
            plural(self.left.len() as u64, "run"),
        )
    }
}

/// A fraction for people: "1/3" when it is one over a whole number, else "25%".
fn share(fraction: f64) -> String {
    let over = 1.0 / fraction;
    if (over - over.round()).abs() < 1e-9 {
        format!("1/{}", over.round())
    } else {
        format!("{:.0}%", fraction * 100.0)
    }
}

/// Values (in seconds) shown in `unit`s per second, to three significant digits: one value, or
/// the lowest and highest.
fn spread(seconds: &[f64], unit: f64) -> String {
    let lowest = seconds.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = seconds.iter().copied().fold(0.0, f64::max);
    let [lowest, highest] = [lowest, highest].map(|s| significant(s * unit));
    if lowest == highest {
        lowest
    } else {
        format!("{lowest} to {highest}")
    }
}

/// `value` to three significant digits: 412, 12.3, 0.510.
fn significant(value: f64) -> String {
    let decimals = (2 - value.abs().max(1e-3).log10().floor() as i32).clamp(0, 5) as usize;
    format!("{value:.decimals$}")
}

/// A run a sweep would train, and what is left of it.
struct RunLeft<'a> {
    run: &'a PlannedRun,
    /// Its shape's key (see [`shape`]).
    shape: String,
    steps: u64,
    evaluations: u64,
    /// The share of its work that `[search.prune]` rungs would leave ([`kept_share`]).
    kept: f64,
}

/// Times the shapes of `planner`'s runs that a sweep would train, given what the database
/// records of them and what the sweep would do with them ([`super::recorded_states`]), and prices their steps and evaluations left,
/// `jobs` runs at a time. `timing(i, n, evaluates)` is told before each of the `n` shapes is
/// timed (and whether an evaluation is); an error from it (Ctrl-C) stops the estimate.
pub fn estimate(
    planner: &Planner,
    recorded: &HashMap<String, Recorded>,
    jobs: usize,
    mut timing: impl FnMut(usize, usize, bool) -> Result<()>,
) -> Result<Estimate> {
    let mut train_lens: HashMap<PathBuf, usize> = HashMap::new();
    // The runs left to train, in the sweep's order; each shape's key, config and whether any
    // of its runs evaluates.
    let mut to_train: Vec<RunLeft> = Vec::new();
    let asha = planner.spec().search.prune.as_ref();
    let asha = asha.filter(|rule| !rule.rungs.is_empty());
    let mut shapes: Vec<(String, RunConfig, bool)> = Vec::new();
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
        let steps = steps_left(total, recorded.get(&run.id));
        if steps == 0 {
            continue;
        }
        let evaluations = evaluations_left(config, total - steps, total);
        let shape = shape(config);
        let key = serde_json::to_string(&shape).expect("configs serialize");
        match shapes.iter_mut().find(|(k, ..)| *k == key) {
            Some((_, _, evaluates)) => *evaluates |= evaluations > 0,
            None => shapes.push((key.clone(), shape, evaluations > 0)),
        }
        let kept = asha.map_or(1.0, |rule| {
            kept_share(&rule.rungs, rule.keep, total - steps, total)
        });
        to_train.push(RunLeft {
            run,
            shape: key,
            steps,
            evaluations,
            kept,
        });
    }
    // As many workers as the local executor would use.
    let runs_left = to_train.iter().map(|left| left.run);
    let jobs = super::local::workers(&planner.spec().name, jobs, runs_left);
    // Shape key -> (seconds a step alone, an evaluation alone, how much slower beside others).
    let mut prices: HashMap<&str, (f64, f64, f64)> = HashMap::new();
    let mut estimate = Estimate {
        jobs,
        ..Estimate::default()
    };
    for (i, (key, shape, evaluates)) in shapes.iter().enumerate() {
        timing(i, shapes.len(), *evaluates)?;
        let time_steps = |copies, steps| {
            median_step_seconds(shape, copies, steps)
                .with_context(|| format!("timing a step of batch {}", shape.train.batch_size))
        };
        let mut steps = TIMED_STEPS;
        let mut step = time_steps(1, steps)?;
        if step * (steps as f64) < MIN_TIMED_SECONDS {
            steps = ((MIN_TIMED_SECONDS / step.max(1e-6)).ceil() as usize).min(MAX_TIMED_STEPS);
            step = time_steps(1, steps)?;
        }
        estimate.step_seconds.push(step);
        // (Never faster beside others: a shared step timed quicker is the clock's noise.)
        let slowdown = if jobs > 1 {
            let shared = time_steps(jobs, steps)?.max(step);
            estimate.shared_step_seconds.push(shared);
            shared / step
        } else {
            1.0
        };
        let evaluation = if *evaluates {
            let seconds = crate::train::evaluation_seconds(shape).with_context(|| {
                format!(
                    "timing an evaluation ({} samples against the test digits)",
                    shape.log.eval_samples
                )
            })?;
            estimate.eval_seconds.push(seconds);
            seconds
        } else {
            0.0
        };
        prices.insert(key, (step, evaluation, slowdown));
    }
    // An evaluation computes in large batches on every core: beside others it gets its share
    // of them (the vanilla GAN sweep's took about twice as long with 2 jobs on 2 cores, where
    // its small steps took 1.1-1.3x as long).
    let eval_slowdown = jobs as f64;
    let work: Vec<(f64, f64)> = (to_train.iter())
        .map(|left| {
            let (step, evaluation, step_slowdown) = prices[left.shape.as_str()];
            let training = left.steps as f64 * step;
            let evaluating = left.evaluations as f64 * evaluation;
            let alone = training + evaluating;
            let shared = training * step_slowdown + evaluating * eval_slowdown;
            (alone, if alone > 0.0 { shared / alone } else { 1.0 })
        })
        .collect();
    let (durations, wall) = schedule(&work, jobs);
    estimate.wall = wall;
    if jobs > 1 {
        estimate.one_at_a_time = Some(work.iter().map(|(alone, _)| alone).sum());
    }
    if let Some(rule) = asha {
        let pruned: Vec<(f64, f64)> = (work.iter().zip(&to_train))
            .map(|(&(alone, slowdown), left)| (alone * left.kept, slowdown))
            .collect();
        estimate.if_rungs_keep = Some((schedule(&pruned, jobs).1, rule.keep));
    }
    for (left, seconds) in to_train.iter().zip(durations) {
        estimate.left.insert(left.run.id.clone(), seconds);
        estimate.evaluations += left.evaluations;
    }
    Ok(estimate)
}

/// The share of a run's work from step `from` to `total` that is left when each of `rungs`
/// after `from` keeps `keep` of the runs that reach it: its steps to the first rung, `keep`
/// of those to the next, and so on (each run alike, as if every rung ranked at random).
fn kept_share(rungs: &[u64], keep: f64, from: u64, total: u64) -> f64 {
    if total <= from {
        return 1.0;
    }
    let mut ahead: Vec<u64> = (rungs.iter().copied())
        .filter(|&rung| rung > from && rung < total)
        .collect();
    ahead.sort_unstable();
    ahead.dedup();
    let (mut expected, mut start, mut reaching) = (0.0, from, 1.0);
    for end in ahead.into_iter().chain([total]) {
        expected += reaching * (end - start) as f64;
        (start, reaching) = (end, reaching * keep);
    }
    expected / (total - from) as f64
}

/// The median seconds of `steps` training steps of `config`, with `copies` runs of it
/// training at once (each on its own thread, sharing the cores as a sweep's runs do).
fn median_step_seconds(config: &RunConfig, copies: usize, steps: usize) -> Result<f64> {
    let times = std::thread::scope(|scope| {
        let copies: Vec<_> = (0..copies)
            .map(|_| scope.spawn(|| crate::train::step_times_ms(config, WARMUP_STEPS, steps)))
            .collect();
        let mut all = Vec::new();
        for copy in copies {
            let times = copy
                .join()
                .map_err(|_| anyhow::anyhow!("a timing thread stopped"))?;
            all.extend(times?);
        }
        anyhow::Ok(all)
    });
    let mut ms = times?;
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2] / 1000.0)
}

/// Runs in the sweep's order on `jobs` workers, each taking `(alone, slowdown)`: `alone`
/// seconds by itself, `slowdown` times as long beside `jobs - 1` others (and in proportion
/// beside fewer). Returns each run's seconds from its start to its end, and the seconds to
/// the last end.
fn schedule(runs: &[(f64, f64)], jobs: usize) -> (Vec<f64>, f64) {
    let jobs = jobs.max(1);
    let mut durations = vec![0.0; runs.len()];
    // (run, its work left in seconds alone, when it started)
    let mut active: Vec<(usize, f64, f64)> = Vec::new();
    let (mut next, mut now) = (0, 0.0);
    loop {
        while active.len() < jobs && next < runs.len() {
            active.push((next, runs[next].0, now));
            next += 1;
        }
        if active.is_empty() {
            return (durations, now);
        }
        let beside = (active.len() - 1) as f64 / (jobs - 1).max(1) as f64;
        let stretch = |run: usize| 1.0 + (runs[run].1 - 1.0) * beside;
        let (first, until) = (active.iter().enumerate())
            .map(|(at, &(run, left, _))| (at, left * stretch(run)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("a run is active");
        for (run, left, _) in active.iter_mut() {
            *left -= until / stretch(*run);
        }
        now += until;
        let (run, _, started) = active.remove(first);
        durations[run] = now - started;
    }
}

/// The steps a sweep would train of a run with `total` steps, given what is recorded of it:
/// all of a new run's, and of the others those from the step it would train from (a resumed
/// run's last recorded step: it resumes from its checkpoint at or before it); none of one the
/// sweep leaves as it is.
fn steps_left(total: u64, recorded: Option<&Recorded>) -> u64 {
    match recorded {
        None => total,
        Some(recorded) => recorded
            .trains_from
            .map_or(0, |from| total.saturating_sub(from)),
    }
}

/// The evaluations a run of `config` makes after step `from` up to `total`: at every
/// `log.eval_every` steps and at its last step.
fn evaluations_left(config: &RunConfig, from: u64, total: u64) -> u64 {
    let log = &config.log;
    if log.eval_samples == 0 || from >= total {
        return 0;
    }
    match log.eval_every {
        0 => 1,
        every => total / every - from / every + u64::from(!total.is_multiple_of(every)),
    }
}

/// What a training step and an evaluation of `config` compute, without what changes only the
/// values they compute with (seed, learning rates and their schedule, the real label's
/// target, penalty and averaging weights) or the run's length and files (steps, epochs, `[log]`
/// but the evaluations' samples, where the data lies).
fn shape(config: &RunConfig) -> RunConfig {
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
    let eval_samples = shape.log.eval_samples;
    shape.log = defaults.log;
    shape.log.eval_samples = eval_samples;
    shape.data.dir = Some(shape.data.resolved_dir());
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_priced_by_the_steps_a_sweep_would_train() {
        let recorded = |trains_from| Recorded {
            status: "interrupted".into(),
            steps: Some((600, Some(800))),
            from: None,
            trains_from,
        };
        assert_eq!(steps_left(800, None), 800);
        assert_eq!(steps_left(800, Some(&recorded(Some(600)))), 200);
        assert_eq!(steps_left(800, Some(&recorded(Some(0)))), 800);
        assert_eq!(steps_left(800, Some(&recorded(None))), 0);
        // A run whose config now trains fewer steps than it has done.
        assert_eq!(steps_left(500, Some(&recorded(Some(600)))), 0);
    }

    #[test]
    fn evaluations_come_every_eval_every_steps_and_at_the_end() {
        let mut config = RunConfig::default();
        config.log.eval_every = 400;
        assert_eq!(evaluations_left(&config, 0, 800), 2);
        assert_eq!(evaluations_left(&config, 0, 1000), 3);
        assert_eq!(evaluations_left(&config, 400, 800), 1);
        assert_eq!(evaluations_left(&config, 399, 800), 2);
        assert_eq!(evaluations_left(&config, 800, 800), 0);
        config.log.eval_every = 0;
        assert_eq!(evaluations_left(&config, 0, 800), 1);
        config.log.eval_samples = 0;
        assert_eq!(evaluations_left(&config, 0, 800), 0);
    }

    #[test]
    fn figures_keep_three_significant_digits() {
        assert_eq!(significant(412.34), "412");
        assert_eq!(significant(12.34), "12.3");
        assert_eq!(significant(0.51), "0.510");
        assert_eq!(significant(2500.0), "2500");
        assert_eq!(spread(&[0.0123, 0.0123], 1000.0), "12.3");
        assert_eq!(spread(&[0.0123, 0.4], 1000.0), "12.3 to 400");
        let one = Estimate {
            left: HashMap::from([("a".into(), 100.0)]),
            wall: 100.0,
            jobs: 1,
            step_seconds: vec![0.1234],
            ..Estimate::default()
        };
        assert!(
            one.summary()
                .contains("0:01:40 for 1 run (timed here: 123 ms a step;")
        );
        let two = Estimate {
            left: HashMap::from([("a".into(), 100.0), ("b".into(), 3600.0)]),
            wall: 3700.0,
            jobs: 1,
            evaluations: 4,
            step_seconds: vec![0.1234, 0.01],
            eval_seconds: vec![2.0],
            ..Estimate::default()
        };
        let summary = two.summary();
        assert!(
            summary.contains(
                "1:01:40 for 2 runs, 4 evaluations included (2 shapes timed here: 10.0 to 123 ms \
                 a step, 2.00 s an evaluation; one run at a time on "
            ),
            "{summary}"
        );
        let shared = Estimate {
            wall: 3600.0,
            one_at_a_time: Some(3700.0),
            jobs: 2,
            shared_step_seconds: vec![0.2, 0.015],
            ..two
        };
        let summary = shared.summary();
        assert!(
            summary.contains(
                "1:00:00 for 2 runs, 4 evaluations included (2 shapes timed here: 10.0 to 123 ms \
                 a step alone and 15.0 to 200 with 2 at a time, 2.00 s an evaluation alone; 2 \
                 runs at a time on "
            ) && summary.contains("; 1:01:40 one at a time); early stopping"),
            "{summary}"
        );
        let pruning = Estimate {
            if_rungs_keep: Some((1200.0, 1.0 / 3.0)),
            ..shared
        };
        assert!(
            pruning.summary().ends_with(
                "one at a time); about 0:20:00 if each rung keeps 1/3 of the runs that reach it \
                 (its first runs always go on)"
            ),
            "{}",
            pruning.summary()
        );
    }

    #[test]
    fn rungs_leave_their_kept_share_of_the_work() {
        let third = 1.0 / 3.0;
        let rungs = [500, 1000, 2000];
        // gan-asha: 500 + 500/3 + 1000/9 + 1000/27 of 3000 steps (27%; the sweep trained 26%).
        let expected = (500.0 + 500.0 / 3.0 + 1000.0 / 9.0 + 1000.0 / 27.0) / 3000.0;
        assert!((kept_share(&rungs, third, 0, 3000) - expected).abs() < 1e-12);
        // A run resuming past a rung has been kept there.
        let from_1000 = (1000.0 + 1000.0 / 3.0) / 2000.0;
        assert!((kept_share(&rungs, third, 1000, 3000) - from_1000).abs() < 1e-12);
        // Rungs at or past the end, or none: all of it.
        assert_eq!(kept_share(&[3000, 4000], third, 0, 3000), 1.0);
        assert_eq!(kept_share(&[], third, 0, 3000), 1.0);
        assert_eq!(kept_share(&rungs, third, 3000, 3000), 1.0);
        assert_eq!(share(third), "1/3");
        assert_eq!(share(0.25), "1/4");
        assert_eq!(share(0.4), "40%");
    }

    #[test]
    fn runs_are_laid_out_in_order_on_the_sweeps_workers() {
        // One at a time: one after the other.
        let (durations, wall) = schedule(&[(10.0, 1.5), (20.0, 1.5)], 1);
        assert_eq!((durations, wall), (vec![10.0, 20.0], 30.0));
        // Two at a time, each 1.5x slower beside the other: the first ends at 15 s with 10
        // s of the second's work done; the rest of it (10 s alone) runs alone.
        let (durations, wall) = schedule(&[(10.0, 1.5), (20.0, 1.5)], 2);
        assert_eq!((durations, wall), (vec![15.0, 25.0], 25.0));
        // The third run starts on the worker the first one freed.
        let (durations, wall) = schedule(&[(10.0, 2.0), (30.0, 2.0), (10.0, 2.0)], 2);
        // 0-20: runs 1 and 2 (10 s of 2's work done); 20-40: runs 2 and 3 (3 ends, 2 has
        // 10 s left); 40-50: run 2 alone.
        assert_eq!((durations, wall), (vec![20.0, 50.0, 20.0], 50.0));
        // More workers than runs, and no runs.
        assert_eq!(schedule(&[(4.0, 1.0)], 8), (vec![4.0], 4.0));
        assert_eq!(schedule(&[], 2), (vec![], 0.0));
    }

    #[test]
    fn a_shape_is_what_a_step_and_an_evaluation_compute() {
        let base = RunConfig::default();
        let mut same = base.clone();
        (same.train.seed, same.train.lr, same.train.steps) = (7, 1e-3, Some(5000));
        (same.train.r1_gamma, same.log.eval_every) = (10.0, 500);
        let mut other_gamma = base.clone();
        other_gamma.train.r1_gamma = 0.1;
        assert_eq!(shape(&same), shape(&other_gamma));
        let mut bigger = same.clone();
        bigger.train.batch_size = 128;
        let mut more_d = same.clone();
        more_d.train.d_steps = 2;
        let mut fewer_samples = same.clone();
        fewer_samples.log.eval_samples = 1000;
        for costlier in [bigger, more_d, fewer_samples, base.clone()] {
            assert_ne!(shape(&same), shape(&costlier));
        }
    }
}
