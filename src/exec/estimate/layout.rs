//! The runs left to train laid out in the sweep's order on its workers: each run goes at its
//! own pace alone and slower beside others, as timed, its evaluations falling between its
//! steps; and the share of that work `[search.prune]` rungs would leave.

/// How much longer a run's work takes beside others, with `jobs` runs at once (in proportion
/// beside fewer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Its steps beside runs that step.
    pub step: f64,
    /// Its evaluations beside runs that step (beside each other, evaluations share the cores
    /// evenly).
    pub evaluation: f64,
    /// Its steps beside a run that evaluates, over [`Pace::step`] (an evaluation takes every
    /// core it can).
    pub step_beside_evaluation: f64,
}

impl Pace {
    /// A run that goes as fast beside others as alone.
    pub const ALONE: Pace = Pace {
        step: 1.0,
        evaluation: 1.0,
        step_beside_evaluation: 1.0,
    };
}

/// Evaluations laid out at most in this many rounds a run: finer only makes the layout longer
/// to compute.
const MAX_ROUNDS: u64 = 64;

/// A run's work left, in seconds alone: `rounds` times some steps then some evaluations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Work {
    pub steps: f64,
    pub evaluations: f64,
    rounds: u64,
    pub pace: Pace,
}

impl Work {
    /// `steps` then `evaluations` seconds alone, the latter in `count` evaluations spread
    /// over the steps (one after the last).
    pub fn new(steps: f64, evaluations: f64, count: u64, pace: Pace) -> Work {
        let rounds = count.clamp(1, MAX_ROUNDS);
        Work {
            steps,
            evaluations,
            rounds,
            pace,
        }
    }

    pub fn alone(&self) -> f64 {
        self.steps + self.evaluations
    }

    /// The same run with `share` of its work.
    pub fn scaled(self, share: f64) -> Work {
        Work {
            steps: self.steps * share,
            evaluations: self.evaluations * share,
            ..self
        }
    }

    /// The seconds alone of its `segment`: even ones are steps, odd ones evaluations.
    fn segment(&self, segment: u64) -> f64 {
        let all = if segment.is_multiple_of(2) {
            self.steps
        } else {
            self.evaluations
        };
        all / self.rounds as f64
    }
}

/// A run being trained in the layout.
struct Active {
    run: usize,
    segment: u64,
    /// Seconds alone left of its segment.
    left: f64,
    started: f64,
}

impl Active {
    fn evaluates(&self) -> bool {
        self.segment % 2 == 1
    }
}

/// `runs` in order on `jobs` workers. Returns each run's seconds from its start to its end,
/// and the seconds to the last end.
pub fn schedule(runs: &[Work], jobs: usize) -> (Vec<f64>, f64) {
    let jobs = jobs.max(1);
    let mut durations = vec![0.0; runs.len()];
    let mut active: Vec<Active> = Vec::new();
    let (mut next, mut now) = (0, 0.0);
    loop {
        while active.len() < jobs && next < runs.len() {
            let left = runs[next].segment(0);
            active.push(Active {
                run: next,
                segment: 0,
                left,
                started: now,
            });
            next += 1;
        }
        if active.is_empty() {
            return (durations, now);
        }
        // How much longer each one's segment takes beside the others, until one ends.
        let beside = (active.len() - 1) as f64 / (jobs - 1).max(1) as f64;
        let evaluating = active.iter().filter(|a| a.evaluates()).count() as f64;
        let stretches: Vec<f64> = (active.iter())
            .map(|a| {
                let pace = runs[a.run].pace;
                if a.evaluates() {
                    // Evaluations beside each other share every core evenly.
                    let stepping = (active.len() as f64 - evaluating) / (jobs - 1).max(1) as f64;
                    (1.0 + (pace.evaluation - 1.0) * stepping) * evaluating
                } else {
                    (1.0 + (pace.step - 1.0) * beside)
                        * (1.0 + (pace.step_beside_evaluation - 1.0) * evaluating)
                }
            })
            .collect();
        let (first, until) = (active.iter().zip(&stretches).enumerate())
            .map(|(at, (a, stretch))| (at, a.left * stretch))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("a run is active");
        for (a, stretch) in active.iter_mut().zip(&stretches) {
            a.left -= until / stretch;
        }
        now += until;
        let ended = &mut active[first];
        let work = &runs[ended.run];
        ended.segment += 1;
        if ended.segment == 2 * work.rounds {
            durations[ended.run] = now - ended.started;
            active.remove(first);
        } else {
            ended.left = work.segment(ended.segment);
        }
    }
}

/// The share of a run's work from step `from` to `total` that is left when each of `rungs`
/// after `from` keeps `keep` of the runs that reach it: its steps to the first rung, `keep`
/// of those to the next, and so on (each run alike, as if every rung ranked at random).
pub fn kept_share(rungs: &[u64], keep: f64, from: u64, total: u64) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(seconds: f64, slowdown: f64) -> Work {
        let pace = Pace {
            step: slowdown,
            ..Pace::ALONE
        };
        Work::new(seconds, 0.0, 0, pace)
    }

    #[test]
    fn runs_are_laid_out_in_order_on_the_sweeps_workers() {
        // One at a time: one after the other.
        let (durations, wall) = schedule(&[steps(10.0, 1.5), steps(20.0, 1.5)], 1);
        assert_eq!((durations, wall), (vec![10.0, 20.0], 30.0));
        // Two at a time, each 1.5x slower beside the other: the first ends at 15 s with 10
        // s of the second's work done; the rest of it (10 s alone) runs alone.
        let (durations, wall) = schedule(&[steps(10.0, 1.5), steps(20.0, 1.5)], 2);
        assert_eq!((durations, wall), (vec![15.0, 25.0], 25.0));
        // The third run starts on the worker the first one freed.
        let runs = [steps(10.0, 2.0), steps(30.0, 2.0), steps(10.0, 2.0)];
        let (durations, wall) = schedule(&runs, 2);
        // 0-20: runs 1 and 2 (10 s of 2's work done); 20-40: runs 2 and 3 (3 ends, 2 has
        // 10 s left); 40-50: run 2 alone.
        assert_eq!((durations, wall), (vec![20.0, 50.0, 20.0], 50.0));
        // More workers than runs, and no runs.
        assert_eq!(schedule(&[steps(4.0, 1.0)], 8), (vec![4.0], 4.0));
        assert_eq!(schedule(&[], 2), (vec![], 0.0));
    }

    #[test]
    fn an_evaluation_slows_the_steps_beside_it() {
        // Steps as fast beside steps as alone; an evaluation 1.5x as long beside steps, and
        // steps 1.5x as long beside an evaluation.
        let pace = Pace {
            step: 1.0,
            evaluation: 1.5,
            step_beside_evaluation: 1.5,
        };
        // 10 s of steps, then a 2 s evaluation.
        let run = Work::new(10.0, 2.0, 1, pace);
        // Alone: its work as it is.
        assert_eq!(schedule(&[run], 2), (vec![12.0], 12.0));
        // Two alike side by side evaluate at once, sharing the cores: 10 s of steps, then
        // both evaluations at twice their time.
        assert_eq!(schedule(&[run, run], 2), (vec![14.0, 14.0], 14.0));
        // Out of step: 0-6 both step; 6-9 the short run evaluates (1.5x) and the other
        // steps at 1.5x (2 s of its 4 left done); 9-11 it steps alone, 11-13 evaluates.
        let short = Work::new(6.0, 2.0, 1, pace);
        assert_eq!(schedule(&[short, run], 2), (vec![9.0, 13.0], 13.0));
        // Its evaluations fall between its steps, in rounds.
        let evaluating = Work::new(10.0, 4.0, 2, pace);
        assert_eq!(schedule(&[evaluating], 1), (vec![14.0], 14.0));
        assert_eq!(run.scaled(0.5).alone(), 6.0);
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
    }
}
