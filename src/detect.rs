//! GAN failure detectors: what a generic sweeper cannot see in a loss curve.
//!
//! Each watches a run's losses or evaluations as they come and reports a [`Finding`] when the
//! failure starts (not again while it lasts). The sweep records findings as `events` rows and
//! `[search.prune] stop_on` can stop a run on them. Thresholds are fixed and documented here:
//! - `collapse`: the evaluator's class histogram drifts from uniform (class KL above
//!   [`COLLAPSE_KL`], about three digits of ten missing, and higher than at the previous
//!   evaluation), or coverage falls below half the best this run reached (once that was at
//!   least [`COVERAGE_FLOOR`]).
//! - `d_wins`: D's loss below [`D_WINS_LOSS`] at every step of a [`D_WINS_WINDOW`]-step window
//!   while G's loss climbs (its mean over the window's last quarter above its first quarter's);
//!   at most once per window.
//! - `oscillation`: FID alternating up and down over the last four evaluations, every swing
//!   larger than [`SWING`] of the smaller value.
//!
//! State lives in memory: after a resume the windows start empty again.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::eval::Metrics;
use crate::train::Losses;

pub const COLLAPSE_KL: f64 = 0.3;
pub const COVERAGE_FLOOR: f64 = 0.2;
pub const D_WINS_LOSS: f32 = 0.05;
pub const D_WINS_WINDOW: usize = 200;
pub const SWING: f64 = 0.15;

/// A failure a detector looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Detector {
    Collapse,
    DWins,
    Oscillation,
}

impl Detector {
    const ALL: [Detector; 3] = [Detector::Collapse, Detector::DWins, Detector::Oscillation];

    /// The name events and specs use.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Collapse => "collapse",
            Detector::DWins => "d_wins",
            Detector::Oscillation => "oscillation",
        }
    }
}

impl TryFrom<String> for Detector {
    type Error = String;

    /// A detector by name; a plateau, which users reach for here, is `patience`'s.
    fn try_from(name: String) -> Result<Self, String> {
        Detector::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| {
                let hint = if name == "plateau" {
                    "; to stop a run whose metric stopped improving, set `patience = N`"
                } else {
                    ""
                };
                format!("unknown detector `{name}`, expected `collapse`, `d_wins` or `oscillation`{hint}")
            })
    }
}

/// A detector firing: what and why, in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: Detector,
    pub detail: String,
}

/// The detectors' state for one run.
#[derive(Debug)]
pub struct Detectors {
    losses: VecDeque<Losses>,
    d_winning: bool,
    /// Steps since `d_wins` last fired (none yet: a full window).
    since_d_wins: usize,
    last_class_kl: Option<f64>,
    best_coverage: f64,
    fids: Vec<f64>,
}

impl Default for Detectors {
    fn default() -> Self {
        Detectors {
            losses: VecDeque::new(),
            d_winning: false,
            since_d_wins: D_WINS_WINDOW,
            last_class_kl: None,
            best_coverage: 0.0,
            fids: Vec::new(),
        }
    }
}

impl Detectors {
    /// After each training step.
    pub fn step(&mut self, losses: Losses) -> Option<Finding> {
        if self.losses.len() == D_WINS_WINDOW {
            self.losses.pop_front();
        }
        self.losses.push_back(losses);
        let full = self.losses.len() == D_WINS_WINDOW;
        let quarter = D_WINS_WINDOW / 4;
        let mean_g = |range: std::ops::Range<usize>| {
            range.clone().map(|i| self.losses[i].g as f64).sum::<f64>() / range.len() as f64
        };
        let winning = full
            && self.losses.iter().all(|l| l.d < D_WINS_LOSS)
            && mean_g(D_WINS_WINDOW - quarter..D_WINS_WINDOW) > mean_g(0..quarter);
        let started = winning && !self.d_winning && self.since_d_wins >= D_WINS_WINDOW;
        self.d_winning = winning;
        self.since_d_wins = if started { 0 } else { self.since_d_wins + 1 };
        started.then(|| Finding {
            kind: Detector::DWins,
            detail: format!(
                "D loss below {D_WINS_LOSS} for {D_WINS_WINDOW} steps while G loss rose from {:.3} to {:.3}",
                mean_g(0..quarter),
                mean_g(D_WINS_WINDOW - quarter..D_WINS_WINDOW)
            ),
        })
    }

    /// After each evaluation.
    pub fn eval(&mut self, metrics: &Metrics) -> Vec<Finding> {
        let mut found = Vec::new();
        let kl = metrics.class_kl;
        let rising = self.last_class_kl.is_some_and(|last| kl > last);
        if kl > COLLAPSE_KL && rising {
            found.push(Finding {
                kind: Detector::Collapse,
                detail: format!(
                    "class KL {kl:.3} (above {COLLAPSE_KL} and rising); class histogram {}",
                    histogram(&metrics.class_histogram)
                ),
            });
        } else if self.best_coverage >= COVERAGE_FLOOR
            && metrics.coverage < 0.5 * self.best_coverage
        {
            found.push(Finding {
                kind: Detector::Collapse,
                detail: format!(
                    "coverage {:.3}, under half its best {:.3}",
                    metrics.coverage, self.best_coverage
                ),
            });
        }
        self.last_class_kl = Some(kl);
        self.best_coverage = self.best_coverage.max(metrics.coverage);
        self.fids.push(metrics.fid);
        if let [a, b, c, d] = self.fids[self.fids.len().saturating_sub(4)..] {
            let swings = [b - a, c - b, d - c];
            let alternating = swings[0].signum() != swings[1].signum()
                && swings[1].signum() != swings[2].signum();
            let pairs = [(a, b), (b, c), (c, d)];
            let large = pairs
                .iter()
                .all(|&(x, y)| (x - y).abs() > SWING * x.min(y).abs());
            if alternating && large {
                found.push(Finding {
                    kind: Detector::Oscillation,
                    detail: format!(
                        "FID over the last four evaluations: {a:.2}, {b:.2}, {c:.2}, {d:.2}"
                    ),
                });
            }
        }
        found
    }
}

fn histogram(classes: &[f64; 10]) -> String {
    classes
        .iter()
        .map(|p| format!("{:.0}%", p * 100.0))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(fid: f64, class_kl: f64, coverage: f64) -> Metrics {
        Metrics {
            samples: 100,
            fid,
            inception_score: 1.0,
            class_kl,
            class_histogram: [0.1; 10],
            precision: 0.5,
            recall: 0.5,
            density: 0.5,
            coverage,
            kid: 0.0,
            kid_std: 0.0,
            fid_raw: None,
            class_acc: None,
            intra_fid: None,
        }
    }

    #[test]
    fn d_wins_fires_once_when_d_stays_near_zero_while_g_climbs() {
        let mut detectors = Detectors::default();
        let mut fired = Vec::new();
        for step in 0..600 {
            let d = if step < 100 { 0.6 } else { 0.01 };
            let g = 1.0 + step as f32 * 0.01;
            if let Some(f) = detectors.step(Losses { d, g }) {
                fired.push((step, f.kind));
            }
        }
        assert_eq!(
            fired,
            [(299, Detector::DWins)],
            "fires when the window fills, once"
        );
        // D stays near 0 while G's loss wobbles up and down (the climb test flips often):
        // at most once per window.
        let mut wobbly = Detectors::default();
        let fired: Vec<usize> = (0..2000)
            .filter(|&step| {
                let g = (step as f32 / 37.0).sin() * 5.0 + step as f32 * 0.001;
                wobbly.step(Losses { d: 0.01, g }).is_some()
            })
            .collect();
        assert!(fired.len() >= 2, "{fired:?}");
        assert!(
            fired.windows(2).all(|w| w[1] - w[0] >= D_WINS_WINDOW),
            "{fired:?}"
        );
        // D near 0 with G flat is a converged-looking run, not D winning.
        let mut flat = Detectors::default();
        assert!((0..400).all(|_| flat.step(Losses { d: 0.01, g: 3.0 }).is_none()));
    }

    #[test]
    fn collapse_needs_a_high_and_rising_kl_or_a_coverage_drop() {
        let mut detectors = Detectors::default();
        assert!(
            detectors.eval(&metrics(50.0, 0.5, 0.6)).is_empty(),
            "no trend yet"
        );
        let found = detectors.eval(&metrics(50.0, 0.9, 0.6));
        assert_eq!(found[0].kind, Detector::Collapse);
        assert!(
            detectors.eval(&metrics(50.0, 0.4, 0.6)).is_empty(),
            "falling"
        );
        let found = detectors.eval(&metrics(50.0, 0.1, 0.2));
        assert!(found[0].detail.contains("coverage"), "{found:?}");
    }

    #[test]
    fn oscillation_needs_three_large_alternating_swings() {
        let mut detectors = Detectors::default();
        let kinds = |d: &mut Detectors, fid| {
            d.eval(&metrics(fid, 0.0, 0.5))
                .into_iter()
                .map(|f| f.kind)
                .collect::<Vec<_>>()
        };
        for fid in [100.0, 60.0, 90.0] {
            assert!(kinds(&mut detectors, fid).is_empty());
        }
        assert_eq!(kinds(&mut detectors, 50.0), [Detector::Oscillation]);
        let mut steady = Detectors::default();
        for fid in [100.0, 95.0, 97.0, 93.0] {
            assert!(kinds(&mut steady, fid).is_empty(), "small swings");
        }
    }
}
