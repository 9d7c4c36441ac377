//! `[search.prune]`: asynchronous successive halving (ASHA) over a sweep's runs, and stopping
//! runs on the failure detectors of [`crate::detect`].
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

use crate::detect::Detector;
use crate::track::Event;
use crate::track::records;

/// The `[search.prune]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRule {
    /// An evaluation metric (`fid`, `kid`, `is`, `class_kl`, `precision`, `recall`,
    /// `density`, `coverage`); its direction is known.
    #[serde(default = "default_metric")]
    pub metric: String,
    /// Steps at which runs are compared (each an evaluation step).
    #[serde(default)]
    pub rungs: Vec<u64>,
    /// The fraction of runs at a rung that go on: a number in (0, 1) or a fraction "1/3".
    #[serde(default = "default_keep", with = "fraction")]
    pub keep: f64,
    /// Failure detectors that stop a run as pruned when they fire.
    #[serde(default)]
    pub stop_on: Vec<Detector>,
}

fn default_metric() -> String {
    "fid".into()
}

fn default_keep() -> f64 {
    1.0 / 3.0
}

/// `keep` as a number or as a string "a/b" (TOML has no fractions).
mod fraction {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        match Raw::deserialize(deserializer)? {
            Raw::Number(x) => Ok(x),
            Raw::Text(text) => text
                .split_once('/')
                .and_then(|(a, b)| {
                    Some(a.trim().parse::<f64>().ok()? / b.trim().parse::<f64>().ok()?)
                })
                .ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "expected a number or a fraction like \"1/3\", got {text:?}"
                    ))
                }),
        }
    }

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(*value)
    }
}

impl PruneRule {
    /// Impossible settings as (key under `search.prune`, message), given the runs' evaluation
    /// schedule.
    pub fn problem(&self, eval_every: u64, eval_samples: usize) -> Option<(String, String)> {
        let fail = |key: &str, message: String| Some((key.to_string(), message));
        if higher_is_better(&self.metric).is_none() {
            return fail(
                "metric",
                format!(
                    "must be one of {}, got {:?}",
                    crate::eval::HEADLINE.join(", "),
                    self.metric
                ),
            );
        }
        if !(self.keep.is_finite() && 0.0 < self.keep && self.keep < 1.0) {
            return fail("keep", format!("must be in (0, 1), got {}", self.keep));
        }
        if self.rungs.is_empty() && self.stop_on.is_empty() {
            return fail(
                "rungs",
                "needs at least one step (or a `stop_on` rule)".into(),
            );
        }
        if !self.rungs.windows(2).all(|w| w[0] < w[1]) || self.rungs.first() == Some(&0) {
            return fail(
                "rungs",
                format!("must be increasing steps above 0, got {:?}", self.rungs),
            );
        }
        if !self.rungs.is_empty() && (eval_samples == 0 || eval_every == 0) {
            return fail(
                "rungs",
                "need evaluations: set `log.eval_every` and `log.eval_samples` > 0".into(),
            );
        }
        if let Some(rung) = self
            .rungs
            .iter()
            .find(|r| !r.is_multiple_of(eval_every.max(1)))
        {
            return fail(
                "rungs",
                format!("{rung} is not an evaluation step (`log.eval_every` = {eval_every})"),
            );
        }
        None
    }

    /// How many of `n` runs at a rung go on.
    pub fn kept_of(&self, n: usize) -> usize {
        ((n as f64 * self.keep).floor() as usize).max(1)
    }

    /// Whether `value` goes on against the rung's `values` (which include it).
    pub fn decide(&self, value: f64, values: &[f64]) -> Decision {
        let better_first = |v: f64| {
            let v = if v.is_nan() { f64::INFINITY } else { v };
            if higher_is_better(&self.metric) == Some(true) {
                -v
            } else {
                v
            }
        };
        let mut ranked: Vec<f64> = values.iter().map(|&v| better_first(v)).collect();
        ranked.sort_by(f64::total_cmp);
        let kept = self.kept_of(values.len());
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
}

/// A rung decision: the run's rank (1 = best) among `of` runs, of which the best `kept` go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub keep: bool,
    pub rank: usize,
    pub of: usize,
    pub kept: usize,
}

impl Decision {
    pub fn describe(&self, metric: &str, value: f64, rung: u64) -> String {
        format!(
            "{metric} {value:.4} at rung {rung}: rank {} of {}, the best {} go on",
            self.rank, self.of, self.kept
        )
    }
}

/// Whether a larger value of evaluation metric `name` is better; `None` for unknown names.
pub fn higher_is_better(name: &str) -> Option<bool> {
    match name {
        "fid" | "kid" | "class_kl" => Some(false),
        "is" | "precision" | "recall" | "density" | "coverage" => Some(true),
        _ => None,
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
            .filter_map(|dir| eval_at(&records::read(dir), &self.rule.metric, rung))
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
            self.rule.decide(value, &values)
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
        Some((rung, value, self.rule.decide(value, values)))
    }
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

    fn rule(metric: &str, keep: f64) -> PruneRule {
        PruneRule {
            metric: metric.into(),
            rungs: vec![100, 200],
            keep,
            stop_on: vec![],
        }
    }

    #[test]
    fn the_best_fraction_goes_on_ties_included_first_always() {
        let fid = rule("fid", 1.0 / 3.0);
        assert!(
            fid.decide(50.0, &[50.0]).keep,
            "the first at a rung goes on"
        );
        assert!(!fid.decide(60.0, &[50.0, 60.0]).keep);
        assert!(fid.decide(40.0, &[50.0, 40.0]).keep);
        // Six runs: the best two go on; a tie with the second goes on too.
        let six = [10.0, 20.0, 30.0, 40.0, 50.0, 20.0];
        let d = fid.decide(20.0, &six);
        assert_eq!((d.keep, d.rank, d.of, d.kept), (true, 2, 6, 2));
        assert!(!fid.decide(30.0, &six).keep);
        // Higher is better for precision; NaN is the worst of anything.
        let precision = rule("precision", 0.5);
        assert!(precision.decide(0.9, &[0.9, 0.1, 0.5, 0.2]).keep);
        assert!(!precision.decide(0.2, &[0.9, 0.1, 0.5, 0.2]).keep);
        assert!(!fid.decide(f64::NAN, &[f64::NAN, 5.0, 6.0]).keep);
        assert!(fid.decide(5.0, &[f64::NAN, 5.0, 6.0]).keep);
        assert_eq!(rule("fid", 0.5).kept_of(7), 3);
        assert_eq!(rule("fid", 0.1).kept_of(3), 1);
    }

    /// A run directory whose records hold `events`.
    fn run_with(root: &std::path::Path, name: &str, events: Vec<Event>) -> PathBuf {
        let dir = root.join(name);
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
            rule: rule("fid", 0.5),
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
            record: crate::sweep::record_of(
                "x",
                &crate::sweep::PlannedRun {
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
    fn impossible_rules_are_refused() {
        let ok = rule("fid", 0.5);
        assert_eq!(ok.problem(100, 1000), None);
        let key = |r: PruneRule, every: u64| r.problem(every, 1000).map(|(k, _)| k);
        assert_eq!(key(rule("loss", 0.5), 100).as_deref(), Some("metric"));
        assert_eq!(key(rule("fid", 1.0), 100).as_deref(), Some("keep"));
        assert_eq!(key(rule("fid", 0.0), 100).as_deref(), Some("keep"));
        assert_eq!(key(ok.clone(), 0).as_deref(), Some("rungs"));
        assert_eq!(key(ok.clone(), 30).as_deref(), Some("rungs"));
        let mut backwards = ok.clone();
        backwards.rungs = vec![200, 100];
        assert_eq!(key(backwards, 100).as_deref(), Some("rungs"));
        assert_eq!(ok.problem(100, 0).map(|(k, _)| k).as_deref(), Some("rungs"));
    }

    #[test]
    fn keep_reads_numbers_and_fractions() {
        let parse = |text: &str| toml::from_str::<PruneRule>(text);
        assert!((parse("keep = \"1/3\"").unwrap().keep - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(parse("keep = 0.25").unwrap().keep, 0.25);
        assert!(parse("keep = \"a third\"").is_err());
        assert!(parse("kept = 0.5").is_err());
    }
}
