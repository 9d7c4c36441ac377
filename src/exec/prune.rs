//! `[search.prune]`: asynchronous successive halving (ASHA) over a sweep's runs, Optuna's
//! median rule ([`Pruning::below_median`]), and stopping runs on the failure detectors of
//! [`crate::detect`] or when their metric stops improving (`patience`, [`plateau`]).
//!
//! A run evaluated at a rung step is compared with every run of its sweep that has an
//! evaluation at that rung so far (itself included): it goes on when its metric is among the
//! best `max(1, floor(n * keep))` of those `n` values (ties go on), otherwise it checkpoints and
//! ends `pruned`. The first run to reach a rung always goes on, as in Optuna's and Ray Tune's
//! ASHA. A rerun of the sweep asks the same question of each pruned run against what its rung
//! holds by then: with more runs at the rung the cut-off moves down the ranking, and a run now
//! inside it is promoted and resumed from its rung checkpoint.
//!
//! Decisions read the rung evaluations from the sibling runs' `records.jsonl` files, which every
//! executor writes before anything else: threads of one sweep, several processes on one
//! database and Slurm tasks on a shared filesystem all see the same evaluations, without the
//! database. A run that failed or diverged before a rung has no value there and does not count.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::console::counted;
use crate::eval::higher_is_better;
use crate::spec::search::PruneRule;
use crate::track::Event;
use crate::track::records;

/// A rung decision: the run's rank (1 = best) among `of` runs, of which the best `kept` go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub keep: bool,
    pub rank: usize,
    pub of: usize,
    pub kept: usize,
}

impl Decision {
    /// Whether `value` goes on against the rung's `values` (which include it) under `rule`.
    pub fn judge(rule: &PruneRule, value: f64, values: &[f64]) -> Decision {
        let better_first = |v: f64| {
            let v = if v.is_nan() { f64::INFINITY } else { v };
            if higher_is_better(&rule.metric) == Some(true) {
                -v
            } else {
                v
            }
        };
        let mut ranked: Vec<f64> = values.iter().map(|&v| better_first(v)).collect();
        ranked.sort_by(f64::total_cmp);
        let kept = rule.kept_of(values.len());
        let cutoff = ranked[kept - 1];
        let mine = better_first(value);
        let rank = 1 + ranked.iter().filter(|&&v| v < mine).count();
        Decision {
            keep: mine <= cutoff,
            rank,
            of: values.len(),
            kept,
        }
    }

    pub fn describe(&self, metric: &str, value: f64, rung: u64) -> String {
        format!(
            "{metric} {value:.4} at rung {rung}: rank {} of {}, the best {} go on",
            self.rank, self.of, self.kept
        )
    }
}

/// A sweep's pruning: its rule and the run directories it compares (the sweep's runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pruning {
    pub rule: PruneRule,
    pub cohort: Vec<PathBuf>,
}

impl Pruning {
    /// The metric values recorded at `rung` by the cohort's runs (their latest evaluation at
    /// that step, from their records).
    pub fn rung_values(&self, rung: u64) -> Vec<f64> {
        self.cohort
            .iter()
            .filter_map(|dir| eval_at(&records::read_without_losses(dir), &self.rule.metric, rung))
            .collect()
    }

    /// The decision for `run_dir`'s `value` at `rung`, or `None` when `step` is not a rung.
    pub fn decide(&self, step: u64, value: f64) -> Option<Decision> {
        self.rule.rungs.contains(&step).then(|| {
            let mut values = self.rung_values(step);
            if values.is_empty() {
                // Our own evaluation is not in the records (it could not be written): alone.
                values.push(value);
            }
            Decision::judge(&self.rule, value, &values)
        })
    }

    /// For a run whose records (`lines`) show it pruned at a rung: the decision its rung
    /// holds now (a `keep` promotes it), with the step to resume from. `None` for runs not
    /// pruned at a rung (not pruned, or stopped by a failure detector). `rungs` caches each
    /// rung's values across the runs a sweep reconsiders (it would read every run's records
    /// once per pruned run otherwise).
    pub fn reconsider(
        &self,
        lines: &[records::Line],
        rungs: &mut std::collections::BTreeMap<u64, Vec<f64>>,
    ) -> Option<(u64, f64, Decision)> {
        if records::last_status(lines).as_deref() != Some("pruned") {
            return None;
        }
        let rung = lines.iter().rev().find_map(|line| match &line.event {
            Event::RunStarted { .. } => Some(None),
            Event::Flagged { step, kind, .. } if kind == "pruned" => Some(Some(*step)),
            _ => None,
        })??;
        let value = eval_at(lines, &self.rule.metric, rung)?;
        let values = rungs.entry(rung).or_insert_with(|| self.rung_values(rung));
        Some((rung, value, Decision::judge(&self.rule, value, values)))
    }

    /// Under `median`, why the run whose records are `lines` stops after its evaluation
    /// `value` at `step`, if it does: its best value so far (NaN is none) is worse than the
    /// median of the cohort's finished runs' values at `step`, as Optuna's `MedianPruner`
    /// judges (before `warmup_steps`, or with fewer than `startup_runs` such values, it goes
    /// on). Runs still training, pruned or failed are not compared with: their values at a
    /// step say less of where a run ends.
    pub fn below_median(&self, lines: &[records::Line], step: u64, value: f64) -> Option<String> {
        let rule = &self.rule;
        if !rule.median || step < rule.warmup_steps.unwrap_or(0) {
            return None;
        }
        let mut finished: Vec<f64> = (self.cohort.iter())
            .map(|dir| records::read_without_losses(dir))
            .filter(|lines| records::last_status(lines).as_deref() == Some("finished"))
            .filter_map(|lines| eval_at(&lines, &rule.metric, step))
            .filter(|v| !v.is_nan())
            .collect();
        if finished.is_empty() || finished.len() < rule.startup_runs() {
            return None;
        }
        finished.sort_by(f64::total_cmp);
        let n = finished.len();
        let median = (finished[(n - 1) / 2] + finished[n / 2]) / 2.0;
        let metric = &rule.metric;
        let higher = higher_is_better(metric) == Some(true);
        let of = format!(
            "the median of {} at step {step}",
            crate::console::counted(n, "finished run")
        );
        match best_so_far(&evals_to(lines, metric, step, value), higher) {
            None => Some(format!(
                "{metric} has had no value, against {median:.4}, {of}"
            )),
            Some((at, best)) if beats(median, best, higher) => Some(format!(
                "{metric}'s best so far, {best:.4} at step {at}, is worse than {median:.4}, {of}"
            )),
            Some(_) => None,
        }
    }
}

/// Why a run stops under `patience`, if it does: its evaluations of `metric` to `step` (the
/// latest recorded at each step, since a resumed run may evaluate a step again, and `value`,
/// this step's own) end in `patience` or more in a row that do not beat the best before them.
pub fn plateau(
    lines: &[records::Line],
    metric: &str,
    patience: u32,
    step: u64,
    value: f64,
) -> Option<String> {
    let by_step = evals_to(lines, metric, step, value);
    let higher = higher_is_better(metric) == Some(true);
    let (mut best, mut since) = (None, 0u32);
    for (&s, &v) in &by_step {
        if v.is_finite() && best.is_none_or(|(_, b)| beats(v, b, higher)) {
            (best, since) = (Some((s, v)), 0);
        } else {
            since += 1;
        }
    }
    (since >= patience).then(|| {
        let evaluations = counted(since as usize, "evaluation");
        match best {
            Some((at, b)) => format!(
                "{metric} has not beaten its best ({b:.4} at step {at}) in {evaluations}, to \
                 step {step}"
            ),
            None => format!("{metric} has had no value in {evaluations}, to step {step}"),
        }
    })
}

/// A run's evaluations of `metric` by step, to `step`: the latest recorded at each step
/// before it (a resumed run may evaluate a step again; what an attempt recorded past `step`
/// did not reach a checkpoint), and `value`, this step's own.
fn evals_to(
    lines: &[records::Line],
    metric: &str,
    step: u64,
    value: f64,
) -> std::collections::BTreeMap<u64, f64> {
    let mut by_step = std::collections::BTreeMap::new();
    for line in lines {
        if let Event::Eval {
            step: s, metrics, ..
        } = &line.event
            && *s < step
            && let Some((_, v)) = metrics.iter().find(|(m, _)| m == metric)
        {
            by_step.insert(*s, *v);
        }
    }
    by_step.insert(step, value);
    by_step
}

/// Whether `v` beats `best` in the metric's direction.
fn beats(v: f64, best: f64, higher: bool) -> bool {
    if higher { v > best } else { v < best }
}

/// The best finite value of `by_step`, with its step (the first, on ties).
fn best_so_far(by_step: &std::collections::BTreeMap<u64, f64>, higher: bool) -> Option<(u64, f64)> {
    let finite = by_step.iter().filter(|(_, v)| v.is_finite());
    finite.fold(None, |best, (&s, &v)| match best {
        Some((_, b)) if !beats(v, b, higher) => best,
        _ => Some((s, v)),
    })
}

/// A run's latest recorded value of `metric` at `step`.
fn eval_at(lines: &[records::Line], metric: &str, step: u64) -> Option<f64> {
    lines.iter().rev().find_map(|line| match &line.event {
        Event::Eval {
            step: s, metrics, ..
        } if *s == step => metrics.iter().find(|(m, _)| m == metric).map(|(_, v)| *v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::search::test_rule;

    #[test]
    fn the_best_fraction_goes_on_ties_included_first_always() {
        let fid = test_rule("fid", 1.0 / 3.0);
        assert!(
            Decision::judge(&fid, 50.0, &[50.0]).keep,
            "the first at a rung goes on"
        );
        assert!(!Decision::judge(&fid, 60.0, &[50.0, 60.0]).keep);
        assert!(Decision::judge(&fid, 40.0, &[50.0, 40.0]).keep);
        // Six runs: the best two go on; a tie with the second goes on too.
        let six = [10.0, 20.0, 30.0, 40.0, 50.0, 20.0];
        let d = Decision::judge(&fid, 20.0, &six);
        assert_eq!((d.keep, d.rank, d.of, d.kept), (true, 2, 6, 2));
        assert!(!Decision::judge(&fid, 30.0, &six).keep);
        // Higher is better for precision; NaN is the worst of anything.
        let precision = test_rule("precision", 0.5);
        assert!(Decision::judge(&precision, 0.9, &[0.9, 0.1, 0.5, 0.2]).keep);
        assert!(!Decision::judge(&precision, 0.2, &[0.9, 0.1, 0.5, 0.2]).keep);
        assert!(!Decision::judge(&fid, f64::NAN, &[f64::NAN, 5.0, 6.0]).keep);
        assert!(Decision::judge(&fid, 5.0, &[f64::NAN, 5.0, 6.0]).keep);
        assert_eq!(test_rule("fid", 0.5).kept_of(7), 3);
        assert_eq!(test_rule("fid", 0.1).kept_of(3), 1);
    }

    /// A run directory whose records hold `events`.
    fn run_with(root: &std::path::Path, name: &str, events: Vec<Event>) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap();
        let file = records::RecordsFile::open(&dir, "local:h:1".into(), true).unwrap();
        for event in events {
            file.write(event).unwrap();
        }
        dir
    }

    fn eval(step: u64, fid: f64) -> Event {
        Event::Eval {
            run_id: "r".into(),
            step,
            metrics: vec![("fid".into(), fid), ("is".into(), 1.0)],
            seconds: None,
        }
    }

    fn ended(status: &str, step: u64) -> Event {
        Event::RunEnded {
            run_id: "r".into(),
            status: status.into(),
            steps_done: step,
            error: None,
            at: 0.0,
        }
    }

    #[test]
    fn patience_counts_evaluations_since_the_best_in_the_metrics_direction() {
        let lines = |events: Vec<Event>| -> Vec<records::Line> {
            let line = |event| records::Line {
                task: "local:h:1".into(),
                event,
            };
            events.into_iter().map(line).collect()
        };
        // FID 10, 8, 9, 8 (a tie is no improvement), then this step's 8.5: three since 8.
        let history = lines(vec![
            eval(100, 10.0),
            eval(200, 8.0),
            eval(300, 9.0),
            eval(400, 8.0),
        ]);
        let why = plateau(&history, "fid", 3, 500, 8.5).unwrap();
        assert_eq!(
            why,
            "fid has not beaten its best (8.0000 at step 200) in 3 evaluations, to step 500"
        );
        assert_eq!(plateau(&history, "fid", 4, 500, 8.5), None);
        assert_eq!(plateau(&history, "fid", 1, 500, 7.9), None, "a new best");
        // IS is better higher: 1.0 at every step never beats the first.
        assert!(plateau(&history, "is", 4, 500, 1.0).is_some());
        assert_eq!(plateau(&history, "is", 4, 500, 1.5), None);
        // A resumed run evaluated step 300 again (the later value counts); evaluations at and
        // past this step, from an attempt that did not reach its checkpoint, do not count.
        let resumed = lines(vec![
            eval(100, 10.0),
            eval(200, 8.0),
            eval(300, 9.0),
            eval(400, 9.5),
            eval(500, 1.0),
            eval(300, 7.0),
        ]);
        let why = plateau(&resumed, "fid", 1, 400, 7.5).unwrap();
        assert!(why.starts_with("fid has not beaten its best (7.0000 at step 300) in 1"));
        assert_eq!(plateau(&resumed, "fid", 2, 400, 7.5), None);
        // No value (NaN, a diverged evaluation) is never an improvement.
        assert_eq!(
            plateau(&[], "fid", 2, 200, f64::NAN),
            None,
            "one evaluation"
        );
        let nan = lines(vec![eval(100, f64::NAN)]);
        assert_eq!(
            plateau(&nan, "fid", 2, 200, f64::NAN).unwrap(),
            "fid has had no value in 2 evaluations, to step 200"
        );
    }

    #[test]
    fn rungs_read_the_cohorts_records_and_pruned_runs_are_promoted_when_the_rung_fills() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let pruned_flag = Event::Flagged {
            run_id: "r".into(),
            step: 100,
            kind: "pruned".into(),
            detail: String::new(),
            at: 0.0,
        };
        let a = run_with(root, "a", vec![eval(100, 10.0), eval(200, 9.0)]);
        let b = run_with(root, "b", vec![eval(100, 20.0), ended("pruned", 100)]);
        // Failed before the rung: no value there, not counted.
        let c = run_with(root, "c", vec![ended("failed", 40)]);
        let d = run_with(
            root,
            "d",
            vec![eval(100, 15.0), pruned_flag.clone(), ended("pruned", 100)],
        );
        let mut pruning = Pruning {
            rule: test_rule("fid", 0.5),
            cohort: vec![a.clone(), b, c, d.clone(), root.join("never-started")],
        };
        let mut values = pruning.rung_values(100);
        values.sort_by(f64::total_cmp);
        assert_eq!(values, [10.0, 15.0, 20.0]);
        assert_eq!(pruning.decide(150, 1.0), None, "not a rung");
        assert!(pruning.decide(200, 9.0).unwrap().keep);
        // Three at the rung keep one: d (second) stays pruned.
        let (rung, value, decision) = pruning
            .reconsider(&records::read(&d), &mut Default::default())
            .unwrap();
        assert_eq!(
            (rung, value, decision.keep, decision.rank),
            (100, 15.0, false, 2)
        );
        assert_eq!(
            pruning.reconsider(&records::read(&a), &mut Default::default()),
            None,
            "not pruned"
        );
        // A fourth, worse run at the rung: two go on, so d is promoted.
        let e = run_with(root, "e", vec![eval(100, 30.0)]);
        pruning.cohort.push(e);
        assert!(
            pruning
                .reconsider(&records::read(&d), &mut Default::default())
                .unwrap()
                .2
                .keep
        );
        // Pruned without a rung decision (a detector's stop): never promoted.
        let f = run_with(root, "f", vec![eval(100, 1.0), ended("pruned", 100)]);
        assert_eq!(
            pruning.reconsider(&records::read(&f), &mut Default::default()),
            None
        );
        // A pruned run that was resumed (started again) and pruned again later is judged at
        // its latest rung only.
        let started = Event::RunStarted {
            record: crate::exec::record_of(
                "x",
                &crate::exec::PlannedRun {
                    id: "r".into(),
                    point: crate::spec::GridPoint {
                        config: Default::default(),
                        swept: vec![],
                    },
                    run_dir: d.clone(),
                    data_id: String::new(),
                    pruning: None,
                    promoted: None,
                },
            ),
            fresh: false,
            at: 0.0,
        };
        let g = run_with(
            root,
            "g",
            vec![eval(100, 1.0), pruned_flag, started, ended("pruned", 150)],
        );
        assert_eq!(
            pruning.reconsider(&records::read(&g), &mut Default::default()),
            None
        );
    }

    #[test]
    fn median_stops_a_run_whose_best_is_worse_than_the_finished_runs_median() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let finished = |name: &str, fid: f64| {
            run_with(
                root,
                name,
                vec![eval(100, fid), eval(200, fid), ended("finished", 200)],
            )
        };
        let mut rule = test_rule("fid", 0.5);
        (rule.rungs, rule.median, rule.startup_runs) = (vec![], true, Some(3));
        let mut pruning = Pruning {
            rule,
            cohort: vec![finished("a", 10.0), finished("b", 20.0)],
        };
        // Still training, pruned or failed: not compared with, however good.
        for (name, status) in [("c", None), ("d", Some("pruned")), ("e", Some("failed"))] {
            let mut events = vec![eval(100, 1.0)];
            events.extend(status.map(|s| ended(s, 100)));
            pruning.cohort.push(run_with(root, name, events));
        }
        assert_eq!(
            pruning.below_median(&[], 100, 99.0),
            None,
            "two finished of three"
        );
        pruning.cohort.push(finished("f", 40.0));
        // 10, 20, 40: the median is 20; a tie goes on.
        let why = pruning.below_median(&[], 100, 25.0).unwrap();
        assert_eq!(
            why,
            "fid's best so far, 25.0000 at step 100, is worse than 20.0000, the median of 3 \
             finished runs at step 100"
        );
        assert_eq!(pruning.below_median(&[], 100, 20.0), None);
        // The run's best so far counts, not this evaluation alone.
        let own = [records::Line {
            task: "local:h:1".into(),
            event: eval(100, 15.0),
        }];
        assert_eq!(pruning.below_median(&own, 200, 30.0), None);
        assert!(pruning.below_median(&own, 200, f64::NAN).is_none());
        // An even count takes the mean of the middle two: 10, 20, 40, 50 give 30.
        pruning.cohort.push(finished("g", 50.0));
        assert!(
            pruning
                .below_median(&[], 100, 31.0)
                .unwrap()
                .contains("30.0000, the median of 4")
        );
        assert_eq!(pruning.below_median(&[], 100, 29.0), None);
        // No value at all is worse than any median; no finished value at a step, no judgement.
        assert!(
            pruning
                .below_median(&[], 100, f64::NAN)
                .unwrap()
                .contains("no value")
        );
        assert_eq!(
            pruning.below_median(&[], 150, 1e9),
            None,
            "no finished run evaluated 150"
        );
        // Before the warm-up ends, and with the rule off, every run goes on.
        pruning.rule.warmup_steps = Some(150);
        assert_eq!(pruning.below_median(&[], 100, 1e9), None);
        assert!(pruning.below_median(&[], 200, 1e9).is_some());
        pruning.rule.median = false;
        assert_eq!(pruning.below_median(&[], 200, 1e9), None);
        // Higher is better for IS (every run here scored 1.0 at every step).
        let mut is = pruning.clone();
        (is.rule.metric, is.rule.median) = ("is".into(), true);
        assert!(is.below_median(&[], 200, 0.5).is_some());
        assert_eq!(is.below_median(&[], 200, 1.5), None);
    }
}
