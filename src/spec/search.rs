//! `[search]`: random, quasi-random (Sobol) or TPE trials over per-key distributions, beside
//! (and, but for TPE, crossed with) the `[sweep]` grid.
//!
//! Trial i's values depend only on (seed, i, key): the same seed gives the same trials, and
//! raising `trials` adds new points while keeping the old ones. Random trials draw from a
//! stream per (seed, trial, key); Sobol trials take point i of an Owen-scrambled Sobol sequence
//! (one dimension per key, in sorted key order), which covers the space more evenly. TPE
//! trials start with `startup` random ones; the later ones are proposed batch by batch from
//! the results of the trials before them ([`super::tpe`], planned by `exec`), so they also
//! depend on those results.

use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::detect::Detector;
use crate::eval::higher_is_better;

/// How the points of a spec are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Only the `[sweep]` grid.
    #[default]
    Grid,
    Random,
    Sobol,
    /// Tree-structured Parzen estimator: proposals from the results of earlier trials.
    Tpe,
}

/// One key's distribution in `[search.space]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "toml::Table")]
pub enum Distribution {
    /// Uniform in log space between two positive bounds (learning rates).
    LogUniform([f64; 2]),
    Uniform([f64; 2]),
    /// An integer between two bounds, both included.
    Int([i64; 2]),
    Choice(Vec<toml::Value>),
}

/// The distributions' names, as `[search.space]` spells them.
pub const DISTRIBUTIONS: &[&str] = &["log_uniform", "uniform", "int", "choice"];

impl TryFrom<toml::Table> for Distribution {
    type Error = String;

    /// One `{ form = bounds }` table; none, two or an unknown form get a message that lists
    /// the forms (serde's own for an enum says "wanted exactly 1 element").
    fn try_from(table: toml::Table) -> Result<Self, String> {
        const FORMS: &str = "{ log_uniform = [low, high] }, { uniform = [low, high] }, \
                             { int = [low, high] } or { choice = [value, ...] }";
        let mut entries = table.into_iter();
        let (Some((form, value)), None) = (entries.next(), entries.next()) else {
            return Err(format!("needs one distribution: {FORMS}"));
        };
        let distribution = match form.as_str() {
            "log_uniform" => value.try_into().map(Distribution::LogUniform),
            "uniform" => value.try_into().map(Distribution::Uniform),
            "int" => value.try_into().map(Distribution::Int),
            "choice" => value.try_into().map(Distribution::Choice),
            _ => return Err(format!("`{form}` is no distribution: {FORMS}")),
        };
        distribution.map_err(|e| format!("{form}: {}", e.message()))
    }
}

/// The `[search]` table.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Search {
    pub strategy: Strategy,
    /// How many trials (for random, Sobol and TPE; absent under the grid).
    pub trials: Option<u32>,
    /// The seed of the trials' draws (default 0; absent under the grid).
    pub seed: Option<u32>,
    /// Dotted config path -> distribution.
    pub space: std::collections::BTreeMap<String, Distribution>,
    /// Early stopping of the sweep's runs (ASHA and failure detectors).
    pub prune: Option<PruneRule>,
    /// TPE: the random trials before the first proposal (default: 10, at most `trials`).
    pub startup: Option<u32>,
    /// TPE: trials proposed at once, from the same results, to train side by side (default 4).
    pub batch: Option<u32>,
    /// TPE: the trials proposed before one in its batch count as bad ones, spreading the batch
    /// out (off by default, as in Optuna, so that results keep proposing what they proposed).
    pub constant_liar: Option<bool>,
    /// TPE: the evaluation metric whose best value over a run is the trial's score (default:
    /// `[search.prune]`'s metric, else `fid`); its direction is known.
    pub metric: Option<String>,
}

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
    /// Stop a run as pruned once `metric` has gone this many evaluations in a row without
    /// beating its best (Keras' and Lightning's `EarlyStopping(patience)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<u32>,
    /// Optuna's `MedianPruner`: from `warmup_steps` on, stop a run at an evaluation when its
    /// best `metric` so far is worse than the median of the finished runs' values at that
    /// step, once `startup_runs` finished runs have one there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub median: bool,
    /// `median`: finished runs with a value at a step before it judges there (Optuna's
    /// `n_startup_trials`; default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_runs: Option<u32>,
    /// `median`: the step from which it judges (Optuna's `n_warmup_steps`; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
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
        if self.rungs.is_empty()
            && self.stop_on.is_empty()
            && self.patience.is_none()
            && !self.median
        {
            return fail(
                "rungs",
                "needs at least one step (or a `stop_on` rule, `patience` or `median = true`)"
                    .into(),
            );
        }
        if self.patience == Some(0) {
            return fail("patience", "must be at least 1 evaluation, got 0".into());
        }
        let no_evaluations = eval_samples == 0 || eval_every == 0;
        for (key, set) in [
            ("patience", self.patience.is_some()),
            ("median", self.median),
        ] {
            if set && no_evaluations {
                return fail(
                    key,
                    "needs evaluations: set `log.eval_every` and `log.eval_samples` > 0".into(),
                );
            }
        }
        if self.median && !self.rungs.is_empty() {
            return fail(
                "median",
                "and `rungs` are two pruners (against finished runs at every evaluation, or \
                 successive halving at the rungs): keep one"
                    .into(),
            );
        }
        for (key, set) in [
            ("startup_runs", self.startup_runs.is_some()),
            ("warmup_steps", self.warmup_steps.is_some()),
        ] {
            if set && !self.median {
                return fail(key, "only applies with `median = true`".into());
            }
        }
        if self.startup_runs == Some(0) {
            return fail(
                "startup_runs",
                "must be at least 1 finished run, got 0".into(),
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

    /// `median`'s finished runs needed at a step before it judges there.
    pub fn startup_runs(&self) -> usize {
        self.startup_runs.unwrap_or(5) as usize
    }

    /// How many of `n` runs at a rung go on.
    pub fn kept_of(&self, n: usize) -> usize {
        ((n as f64 * self.keep).floor() as usize).max(1)
    }
}

impl Distribution {
    /// Impossible bounds, as a message.
    pub fn problem(&self) -> Option<String> {
        match self {
            Distribution::LogUniform([a, b])
                if !(a.is_finite() && b.is_finite() && 0.0 < *a && a < b) =>
            {
                Some(format!("log_uniform needs 0 < low < high, got [{a}, {b}]"))
            }
            Distribution::Uniform([a, b]) if !(a.is_finite() && b.is_finite() && a < b) => {
                Some(format!("uniform needs low < high, got [{a}, {b}]"))
            }
            Distribution::Int([a, b]) if a > b => {
                Some(format!("int needs low <= high, got [{a}, {b}]"))
            }
            Distribution::Choice(items) if items.is_empty() => Some("choice needs values".into()),
            _ => None,
        }
    }

    /// The value at `u` in [0, 1).
    fn at(&self, u: f64) -> toml::Value {
        match self {
            Distribution::LogUniform([a, b]) => (a.ln() + u * (b.ln() - a.ln())).exp().into(),
            Distribution::Uniform([a, b]) => (a + u * (b - a)).into(),
            Distribution::Int([a, b]) => {
                let span = (b - a + 1) as f64;
                (a + ((u * span) as i64).min(b - a)).into()
            }
            Distribution::Choice(items) => {
                items[((u * items.len() as f64) as usize).min(items.len() - 1)].clone()
            }
        }
    }
}

/// The random stream of (seed, trial, key): adding a key moves no other value.
pub(super) fn stream(seed: u32, trial: u32, key: &str) -> rand::rngs::StdRng {
    let digest = crate::data::fetch::md5_hex(format!("{seed}:{trial}:{key}").as_bytes());
    rand::rngs::StdRng::seed_from_u64(u64::from_str_radix(&digest[..16], 16).expect("hex digits"))
}

impl Search {
    /// The (dotted key, value) pairs of trial `i` (for TPE, of a startup trial).
    pub fn trial(&self, i: u32) -> Vec<(String, toml::Value)> {
        self.space
            .iter()
            .enumerate()
            .map(|(dim, (key, distribution))| {
                let u = match self.strategy {
                    Strategy::Sobol => {
                        f64::from(sobol_burley::sample(i, dim as u32, self.draw_seed()))
                    }
                    _ => stream(self.draw_seed(), i, key).random::<f64>(),
                };
                (key.clone(), distribution.at(u))
            })
            .collect()
    }

    /// The trials known before any result: every one, in order, or TPE's startup trials (none
    /// for the grid strategy).
    pub fn trials(&self) -> Vec<Vec<(String, toml::Value)>> {
        let known = match self.strategy {
            Strategy::Grid => 0,
            Strategy::Tpe => self.startup_trials(),
            _ => self.trial_count(),
        };
        (0..known).map(|i| self.trial(i)).collect()
    }

    /// TPE's random trials before the first proposal.
    pub fn startup_trials(&self) -> u32 {
        self.startup.unwrap_or(10).min(self.trial_count())
    }

    /// How many trials the search runs (0 under the grid).
    pub fn trial_count(&self) -> u32 {
        self.trials.unwrap_or(0)
    }

    /// The seed of the trials' draws.
    pub fn draw_seed(&self) -> u32 {
        self.seed.unwrap_or(0)
    }

    /// TPE's trials proposed at once.
    pub fn batch_size(&self) -> u32 {
        self.batch.unwrap_or(4)
    }

    /// TPE's objective: the metric whose best value scores a trial.
    pub fn objective_metric(&self) -> &str {
        match (&self.metric, &self.prune) {
            (Some(metric), _) => metric,
            (None, Some(rule)) => &rule.metric,
            (None, None) => "fid",
        }
    }
}

/// A rule on `metric` with rungs at steps 100 and 200, for tests.
#[cfg(test)]
pub(crate) fn test_rule(metric: &str, keep: f64) -> PruneRule {
    PruneRule {
        metric: metric.into(),
        rungs: vec![100, 200],
        keep,
        stop_on: vec![],
        patience: None,
        median: false,
        startup_runs: None,
        warmup_steps: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(strategy: Strategy, trials: u32, seed: u32) -> Search {
        let mut space = std::collections::BTreeMap::new();
        space.insert("train.lr".into(), Distribution::LogUniform([1e-5, 1e-2]));
        space.insert("train.d_steps".into(), Distribution::Int([1, 3]));
        space.insert("model.d_dropout".into(), Distribution::Uniform([0.0, 0.9]));
        space.insert(
            "model.bn_eps".into(),
            Distribution::Choice(vec![0.8.into(), 1e-5.into()]),
        );
        Search {
            strategy,
            trials: Some(trials),
            seed: Some(seed),
            space,
            ..Default::default()
        }
    }

    #[test]
    fn trials_are_reproducible_extensible_and_seeded() {
        for strategy in [Strategy::Random, Strategy::Sobol] {
            let small = search(strategy, 4, 7).trials();
            let large = search(strategy, 12, 7).trials();
            assert_eq!(small, search(strategy, 4, 7).trials());
            assert_eq!(small[..], large[..4], "more trials keep the old ones");
            assert_ne!(small, search(strategy, 4, 8).trials(), "the seed matters");
            let distinct: std::collections::HashSet<String> =
                large.iter().map(|t| format!("{t:?}")).collect();
            assert_eq!(distinct.len(), 12);
        }
        assert!(search(Strategy::Grid, 4, 7).trials().is_empty());
    }

    #[test]
    fn values_stay_in_bounds_and_log_scale_is_log() {
        for strategy in [Strategy::Random, Strategy::Sobol] {
            let trials = search(strategy, 512, 3).trials();
            let get = |t: &Vec<(String, toml::Value)>, k: &str| {
                t.iter().find(|(key, _)| key == k).unwrap().1.clone()
            };
            let lrs: Vec<f64> = trials
                .iter()
                .map(|t| get(t, "train.lr").as_float().unwrap())
                .collect();
            assert!(lrs.iter().all(|lr| (1e-5..1e-2).contains(lr)));
            // Log-uniform: a third of the values per decade, so the median is near 3.2e-4.
            let below_1e4 = lrs.iter().filter(|lr| **lr < 1e-4).count() as f64 / 512.0;
            assert!((below_1e4 - 1.0 / 3.0).abs() < 0.08, "{below_1e4}");
            let ints: std::collections::BTreeSet<i64> = trials
                .iter()
                .map(|t| get(t, "train.d_steps").as_integer().unwrap())
                .collect();
            assert_eq!(
                ints.into_iter().collect::<Vec<_>>(),
                [1, 2, 3],
                "both ends reachable"
            );
            let choices: std::collections::BTreeSet<String> = trials
                .iter()
                .map(|t| get(t, "model.bn_eps").to_string())
                .collect();
            assert_eq!(choices.len(), 2);
        }
        assert!(Distribution::LogUniform([0.0, 1.0]).problem().is_some());
        assert!(Distribution::Uniform([2.0, 1.0]).problem().is_some());
        assert!(Distribution::Int([3, 1]).problem().is_some());
        assert!(Distribution::Choice(vec![]).problem().is_some());
        assert!(Distribution::Int([1, 1]).problem().is_none());
    }

    #[test]
    fn a_distribution_is_one_form_and_a_wrong_one_lists_the_forms() {
        let parse = |text: &str| toml::from_str::<Distribution>(text).map_err(|e| e.to_string());
        assert_eq!(parse("int = [1, 3]"), Ok(Distribution::Int([1, 3])));
        assert_eq!(
            parse("uniform = [0, 1]"),
            Ok(Distribution::Uniform([0.0, 1.0]))
        );
        for (text, words) in [
            ("", "needs one distribution: { log_uniform"),
            (
                "uniform = [0.1, 0.2]\nint = [1, 2]",
                "needs one distribution",
            ),
            (
                "normal = [0, 1]",
                "`normal` is no distribution: { log_uniform",
            ),
            ("uniform = [0.1]", "uniform: invalid length 1"),
            ("int = [1.5, 2]", "int: invalid type: floating point"),
            ("choice = 3", "choice: invalid type: integer"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(words), "{text:?}: {error}");
        }
    }

    #[test]
    fn impossible_rules_are_refused() {
        let ok = test_rule("fid", 0.5);
        assert_eq!(ok.problem(100, 1000), None);
        let key = |r: PruneRule, every: u64| r.problem(every, 1000).map(|(k, _)| k);
        assert_eq!(key(test_rule("loss", 0.5), 100).as_deref(), Some("metric"));
        assert_eq!(key(test_rule("fid", 1.0), 100).as_deref(), Some("keep"));
        assert_eq!(key(test_rule("fid", 0.0), 100).as_deref(), Some("keep"));
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
