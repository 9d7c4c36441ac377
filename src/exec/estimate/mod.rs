//! `runner sweep --estimate`: what a sweep would cost on this machine, before it runs. Each
//! distinct shape among the runs left to train (what a training step and an evaluation
//! compute: model, batch, D steps, loss and penalties, evaluation samples and test digits; not
//! the seed, learning rates or the run's length) is timed for a few steps on synthetic
//! digits, and for one evaluation; each run's steps and evaluations left are priced at its
//! shape's. A sweep that trains several runs at a time shares the cores among them: each
//! shape is timed again with as many copies of it training at once, and its evaluation again
//! beside copies training (an evaluation takes every core it can, and the steps beside it
//! slow down); the runs are then laid out in the sweep's order on its `--jobs` workers
//! (`layout.rs`).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};

mod layout;

use layout::{Pace, Work, kept_share, schedule};

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
    /// The same beside `jobs - 1` runs of it training (none when one run trains at a time).
    pub shared_eval_seconds: Vec<f64>,
    /// How many times as long as alone those runs' steps took meanwhile.
    pub step_beside_eval: Vec<f64>,
    /// Seconds to build the evaluators (reading the test digits) before the first evaluation.
    pub setup: f64,
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
        use crate::console::counted;
        if !self.eval_seconds.is_empty() {
            timed += &format!(
                ", {} s an evaluation{alone}",
                spread(&self.eval_seconds, 1.0)
            );
        }
        if at_a_time && !self.shared_eval_seconds.is_empty() {
            timed += &format!(
                " and {} beside {} training, whose steps then take {}x as long",
                spread(&self.shared_eval_seconds, 1.0),
                counted(self.jobs - 1, "run"),
                spread(&self.step_beside_eval, 1.0)
            );
        }
        if self.setup >= 0.05 {
            timed += &format!(", {} s to set up evaluations", significant(self.setup));
        }
        let evaluations = match self.evaluations {
            0 => String::new(),
            n => format!(", {} included", counted(n as usize, "evaluation")),
        };
        let cores = counted(rayon::current_num_threads(), "core");
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
            counted(self.left.len(), "run"),
        )
    }
}

/// Other processes' share of the CPU time above which the estimate warns that it runs long.
const BUSY_SHARE: f64 = 0.25;

/// The share of this machine's CPU time that other processes used over `window`, while this
/// one sleeps (from `/proc/stat`; none where there is none).
fn others_cpu_share(window: std::time::Duration) -> Option<f64> {
    let read = || cpu_times(&std::fs::read_to_string("/proc/stat").ok()?);
    let (busy, total) = read()?;
    std::thread::sleep(window);
    let (busy_after, total_after) = read()?;
    let total = total_after.checked_sub(total).filter(|&t| t > 0)?;
    Some(busy_after.saturating_sub(busy) as f64 / total as f64)
}

/// (busy, all) clock ticks of every CPU together, from `/proc/stat`'s `cpu` line: user, nice,
/// system, idle, iowait, irq, softirq, steal; idle and iowait are not busy.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = (line.split_whitespace().skip(1).take(8))
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    Some((total - idle, total))
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
/// records of them and what the sweep would do with them ([`super::recorded_states`]), and
/// prices their steps and evaluations left, `jobs` runs at a time. `timing(i, n, evaluates)` is told before each of the `n` shapes is
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
    // Shape key -> seconds a step alone, an evaluation alone, and its pace beside others.
    let mut prices: HashMap<&str, (f64, f64, Pace)> = HashMap::new();
    let mut estimate = Estimate {
        jobs,
        ..Estimate::default()
    };
    // Timed beside other work, every figure runs long.
    if !shapes.is_empty()
        && let Some(busy) = others_cpu_share(std::time::Duration::from_millis(250))
        && busy > BUSY_SHARE
    {
        crate::errln!(
            "warning: other processes are using {:.0}% of this machine's CPU time: the timings \
             share the cores with them, so this estimate runs long (estimate on an idle machine)",
            busy * 100.0
        );
    }
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
        let mut pace = Pace::ALONE;
        // (Never faster beside others: a shared time timed quicker is the clock's noise.)
        let shared = if jobs > 1 {
            let shared = time_steps(jobs, steps)?.max(step);
            estimate.shared_step_seconds.push(shared);
            pace.step = shared / step;
            shared
        } else {
            step
        };
        let mut evaluation = 0.0;
        if *evaluates {
            let times = crate::train::time_evaluation(shape, jobs.saturating_sub(1)).with_context(
                || {
                    format!(
                        "timing an evaluation ({} samples against the test digits)",
                        shape.log.eval_samples
                    )
                },
            )?;
            estimate.setup += times.setup;
            evaluation = times.alone;
            estimate.eval_seconds.push(evaluation);
            if let Some((seconds, step_meanwhile)) = times.beside_steps {
                let seconds = seconds.max(evaluation);
                estimate.shared_eval_seconds.push(seconds);
                pace.evaluation = seconds / evaluation;
                pace.step_beside_evaluation = (step_meanwhile / shared).max(1.0);
                estimate
                    .step_beside_eval
                    .push(pace.step * pace.step_beside_evaluation);
            }
        }
        prices.insert(key, (step, evaluation, pace));
    }
    let work: Vec<Work> = (to_train.iter())
        .map(|left| {
            let (step, evaluation, pace) = prices[left.shape.as_str()];
            let steps = left.steps as f64 * step;
            let evaluations = left.evaluations as f64 * evaluation;
            Work::new(steps, evaluations, left.evaluations, pace)
        })
        .collect();
    // A sweep builds each evaluator once, as its first runs start (the others wait for it):
    // that set-up comes before everything.
    let (durations, wall) = schedule(&work, jobs);
    estimate.wall = estimate.setup + wall;
    if jobs > 1 {
        let alone: f64 = work.iter().map(Work::alone).sum();
        estimate.one_at_a_time = Some(estimate.setup + alone);
    }
    if let Some(rule) = asha {
        let pruned: Vec<Work> = (work.iter().zip(&to_train))
            .map(|(work, left)| work.scaled(left.kept))
            .collect();
        let wall = estimate.setup + schedule(&pruned, jobs).1;
        estimate.if_rungs_keep = Some((wall, rule.keep));
    }
    for (left, seconds) in to_train.iter().zip(durations) {
        estimate.left.insert(left.run.id.clone(), seconds);
        estimate.evaluations += left.evaluations;
    }
    Ok(estimate)
}

/// The median seconds of `steps` training steps of `config`, with `copies` runs of it
/// training at once (each on its own thread, sharing the cores as a sweep's runs do), each
/// step's losses read as training reads them.
fn median_step_seconds(config: &RunConfig, copies: usize, steps: usize) -> Result<f64> {
    let ms = std::thread::scope(|scope| {
        let copies: Vec<_> = (0..copies)
            .map(|_| scope.spawn(|| crate::train::step_times_ms(config, WARMUP_STEPS, steps, 1)))
            .collect();
        crate::train::joined_sorted(copies)
    })?;
    Ok(ms[ms.len() / 2] / 1000.0)
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
            not_from: None,
            trains_from,
            by_other_runner: false,
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
        let beside = Estimate {
            shared_eval_seconds: vec![3.5],
            step_beside_eval: vec![1.4, 1.1],
            setup: 2.0,
            ..shared.clone()
        };
        let summary = beside.summary();
        assert!(
            summary.contains(
                "2.00 s an evaluation alone and 3.50 beside 1 run training, whose steps then \
                 take 1.10 to 1.40x as long, 2.00 s to set up evaluations; 2 runs at a time"
            ),
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
    fn cpu_time_is_read_from_proc_stat() {
        let stat = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(cpu_times(stat), Some((160, 1000)));
        assert_eq!(cpu_times("intr 1 2 3\n"), None);
        assert_eq!(cpu_times("cpu  1 2 x\n"), None);
        // Short lines (old kernels) count what they have.
        assert_eq!(cpu_times("cpu  10 0 10 80\n"), Some((20, 100)));
    }

    #[test]
    fn shares_read_as_fractions() {
        assert_eq!(share(1.0 / 3.0), "1/3");
        assert_eq!(share(0.25), "1/4");
        assert_eq!(share(0.4), "40%");
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
