//! The tree-structured Parzen estimator (Bergstra et al. 2011, univariate, as Optuna samples
//! by default) behind `[search] strategy = "tpe"`.
//!
//! Given the trials that have ended, each with an objective (lower is better), the best
//! `gamma(n) = min(ceil(n / 10), 25)` of them are "good" and the rest "bad". For every key on
//! its own, a Parzen density is fitted to the good values, l(x), and one to the bad, g(x),
//! each with a broad prior component over the whole range; of [`CANDIDATES`] values drawn
//! from l, the one with the highest l(x) / g(x) is proposed. Numbers live in the space they
//! are drawn in (log space for `log_uniform`; integers widened by half a step each side and
//! rounded back); choices get smoothed frequencies.
//!
//! Trials proposed together treat the earlier ones of their batch as bad (a constant liar, see
//! [`propose`]). A proposal depends only on the search seed, the trial index, the key, the
//! observations and the batch's earlier proposals, so the same ended trials give the same next
//! trials.

use std::collections::BTreeMap;

use rand::{Rng, RngExt};
use rand_distr::{Distribution as _, StandardNormal};

use super::search::{Distribution, stream};

/// Values drawn from l(x) per key, of which the best ratio is proposed (Optuna's default).
pub const CANDIDATES: usize = 24;

/// An ended trial: its values and its objective, lower being better (infinite when it has
/// none: it failed, or was never evaluated).
#[derive(Debug, Clone)]
pub struct Observed {
    pub values: Vec<(String, toml::Value)>,
    pub objective: f64,
}

/// How many of `n` ended trials count as good.
pub fn good_count(n: usize) -> usize {
    n.div_ceil(10).clamp(1, 25)
}

/// Trial `trial`'s values, proposed from the ended trials `observed` (at least one) and the
/// values of the trials proposed before it that have not ended, `pending`.
///
/// Pending trials count as bad ones, as if they had scored worst: the "constant liar" of
/// Ginsbourger et al. 2010, which Optuna's `constant_liar` applies to running trials. Trials
/// proposed together (a batch, to train side by side) then spread out instead of crowding
/// onto the one value where l/g peaks; `good_count` stays that of the ended trials.
pub fn propose(
    space: &BTreeMap<String, Distribution>,
    observed: &[Observed],
    pending: &[Vec<(String, toml::Value)>],
    seed: u32,
    trial: u32,
) -> Vec<(String, toml::Value)> {
    let mut order: Vec<&Observed> = observed.iter().collect();
    // Stable: equal objectives keep trial order, so proposals never depend on sort details.
    order.sort_by(|a, b| a.objective.total_cmp(&b.objective));
    let (good, bad) = order.split_at(good_count(order.len()).min(order.len()));
    space
        .iter()
        .map(|(key, distribution)| {
            let mut rng = stream(seed, trial, &format!("tpe:{key}"));
            let value_of = |values: &[(String, toml::Value)]| {
                values
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            };
            let good: Vec<toml::Value> = good.iter().filter_map(|o| value_of(&o.values)).collect();
            let bad: Vec<toml::Value> = bad
                .iter()
                .map(|o| &o.values)
                .chain(pending)
                .filter_map(|values| value_of(values))
                .collect();
            (
                key.clone(),
                propose_one(distribution, &good, &bad, &mut rng),
            )
        })
        .collect()
}

fn propose_one(
    distribution: &Distribution,
    good: &[toml::Value],
    bad: &[toml::Value],
    rng: &mut impl Rng,
) -> toml::Value {
    if let Distribution::Choice(items) = distribution {
        let frequencies = |values: &[toml::Value]| -> Vec<f64> {
            // One prior observation spread over the choices keeps every choice possible.
            let prior = 1.0 / items.len() as f64;
            let counts: Vec<f64> = items
                .iter()
                .map(|item| prior + values.iter().filter(|v| *v == item).count() as f64)
                .collect();
            let total: f64 = counts.iter().sum();
            counts.into_iter().map(|c| c / total).collect()
        };
        let (l, g) = (frequencies(good), frequencies(bad));
        let candidates = (0..CANDIDATES).map(|_| {
            let mut u = rng.random::<f64>();
            l.iter().position(|p| {
                u -= p;
                u < 0.0
            })
        });
        let best = candidates
            .map(|c| c.unwrap_or(items.len() - 1))
            .max_by(|&a, &b| (l[a].ln() - g[a].ln()).total_cmp(&(l[b].ln() - g[b].ln())))
            .expect("candidates");
        return items[best].clone();
    }
    let (lo, hi) = bounds(distribution);
    let inner = |values: &[toml::Value]| -> Vec<f64> {
        values
            .iter()
            .filter_map(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
            .map(|v| match distribution {
                Distribution::LogUniform(_) => v.ln(),
                _ => v,
            })
            .map(|x| x.clamp(lo, hi))
            .collect()
    };
    let (l, g) = (
        Parzen::new(&inner(good), lo, hi),
        Parzen::new(&inner(bad), lo, hi),
    );
    let x = (0..CANDIDATES)
        .map(|_| l.sample(rng))
        .max_by(|&a, &b| (l.log_pdf(a) - g.log_pdf(a)).total_cmp(&(l.log_pdf(b) - g.log_pdf(b))))
        .expect("candidates");
    match distribution {
        Distribution::LogUniform([a, b]) => x.exp().clamp(*a, *b).into(),
        Distribution::Uniform([a, b]) => x.clamp(*a, *b).into(),
        Distribution::Int([a, b]) => (x.round() as i64).clamp(*a, *b).into(),
        Distribution::Choice(_) => unreachable!("handled above"),
    }
}

/// The range a numeric key is modelled on.
fn bounds(distribution: &Distribution) -> (f64, f64) {
    match distribution {
        Distribution::LogUniform([a, b]) => (a.ln(), b.ln()),
        Distribution::Uniform([a, b]) => (*a, *b),
        Distribution::Int([a, b]) => (*a as f64 - 0.5, *b as f64 + 0.5),
        Distribution::Choice(_) => (0.0, 1.0),
    }
}

/// An equal-weight mixture of normals truncated to [lo, hi]: one at each observation and a
/// prior one at the centre, as wide as the range. An observation's width is the distance to
/// its farther neighbour among them (for the outermost, to its inner neighbour), no less than
/// the range over the number of components (Optuna's defaults, with equal weights).
#[derive(Debug)]
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    fn new(points: &[f64], lo: f64, hi: f64) -> Parzen {
        let range = hi - lo;
        let mut mus = points.to_vec();
        mus.push((lo + hi) / 2.0);
        let n = mus.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| mus[a].total_cmp(&mus[b]));
        // The sorted centres between the two bounds.
        let ends: Vec<f64> = std::iter::once(lo)
            .chain(order.iter().map(|&i| mus[i]))
            .chain(std::iter::once(hi))
            .collect();
        let min_sigma = range / (n as f64 + 1.0).min(100.0);
        let mut sigmas = vec![range; n];
        for (rank, &i) in order.iter().enumerate() {
            let (left, right) = (ends[rank + 1] - ends[rank], ends[rank + 2] - ends[rank + 1]);
            let width = match rank {
                0 if n > 1 => right,
                r if r + 1 == n && n > 1 => left,
                _ => left.max(right),
            };
            sigmas[i] = width.clamp(min_sigma, range);
        }
        sigmas[n - 1] = range;
        Parzen {
            mus,
            sigmas,
            lo,
            hi,
        }
    }

    fn sample(&self, rng: &mut impl Rng) -> f64 {
        let k = rng.random_range(0..self.mus.len());
        let (mu, sigma) = (self.mus[k], self.sigmas[k]);
        for _ in 0..100 {
            let z: f64 = StandardNormal.sample(rng);
            let x = mu + sigma * z;
            if (self.lo..=self.hi).contains(&x) {
                return x;
            }
        }
        mu.clamp(self.lo, self.hi)
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let logs: Vec<f64> = self
            .mus
            .iter()
            .zip(&self.sigmas)
            .map(|(mu, sigma)| {
                let mass = normal_cdf((self.hi - mu) / sigma) - normal_cdf((self.lo - mu) / sigma);
                let z = (x - mu) / sigma;
                -0.5 * z * z - (sigma * mass.max(1e-300) * (2.0 * std::f64::consts::PI).sqrt()).ln()
            })
            .collect();
        let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        top + (logs.iter().map(|l| (l - top).exp()).sum::<f64>() / logs.len() as f64).ln()
    }
}

fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lr_space() -> BTreeMap<String, Distribution> {
        BTreeMap::from([(
            "train.lr".to_string(),
            Distribution::LogUniform([1e-5, 1e-1]),
        )])
    }

    type Objective = dyn Fn(&[(String, toml::Value)]) -> f64;

    /// The best objective after `trials` trials of `strategy` on `f` over `space`: the first
    /// 10 random, the rest random or proposed by TPE in batches of four, as sweeps do.
    fn best_after(
        space: &BTreeMap<String, Distribution>,
        f: &Objective,
        tpe: bool,
        seed: u32,
        trials: u32,
    ) -> f64 {
        let search = super::super::search::Search {
            strategy: super::super::search::Strategy::Random,
            trials: Some(trials),
            seed: Some(seed),
            space: space.clone(),
            ..Default::default()
        };
        let mut observed: Vec<Observed> = Vec::new();
        let mut batch: Vec<Vec<(String, toml::Value)>> = Vec::new();
        for i in 0..trials {
            if i < 10 || !tpe {
                let values = search.trial(i);
                observed.push(Observed {
                    objective: f(&values),
                    values,
                });
                continue;
            }
            batch.push(propose(space, &observed, &batch, seed, i));
            if batch.len() == 4 || i + 1 == trials {
                for values in batch.drain(..) {
                    observed.push(Observed {
                        objective: f(&values),
                        values,
                    });
                }
            }
        }
        observed
            .iter()
            .map(|o| o.objective)
            .fold(f64::INFINITY, f64::min)
    }

    fn lr_of(values: &[(String, toml::Value)]) -> f64 {
        values[0].1.as_float().unwrap()
    }

    #[test]
    fn tpe_finds_a_narrow_optimum_sooner_than_random_draws() {
        // A learning rate whose score has a narrow valley at 3e-3 (in log space).
        let f = |v: &[(String, toml::Value)]| (lr_of(v).ln() - 3e-3f64.ln()).powi(2);
        let space = lr_space();
        let (mut tpe_wins, mut tpe_total, mut random_total) = (0, 0.0, 0.0);
        for seed in 0..20 {
            let tpe = best_after(&space, &f, true, seed, 30);
            let random = best_after(&space, &f, false, seed, 30);
            // (Equal when a startup trial stayed the best.)
            tpe_wins += usize::from(tpe <= random);
            tpe_total += tpe;
            random_total += random;
        }
        assert!(tpe_wins >= 15, "TPE as good in only {tpe_wins} of 20 seeds");
        assert!(
            tpe_total < random_total / 4.0,
            "mean best {} (TPE) against {} (random)",
            tpe_total / 20.0,
            random_total / 20.0
        );
    }

    #[test]
    fn proposals_stay_in_bounds_and_favour_the_good_choices() {
        let space = BTreeMap::from([
            (
                "model.d_dropout".to_string(),
                Distribution::Uniform([0.0, 0.9]),
            ),
            ("train.d_steps".to_string(), Distribution::Int([1, 3])),
            (
                "train.loss".to_string(),
                Distribution::Choice(vec!["bce".into(), "hinge".into(), "lsgan".into()]),
            ),
        ]);
        // Hinge is good, the others bad; the numbers do not matter.
        let observed: Vec<Observed> = (0..30)
            .map(|i| {
                let loss = ["bce", "hinge", "lsgan"][i % 3];
                Observed {
                    values: vec![
                        ("model.d_dropout".into(), (i as f64 * 0.03).into()),
                        ("train.d_steps".into(), ((i % 3 + 1) as i64).into()),
                        ("train.loss".into(), loss.into()),
                    ],
                    objective: if loss == "hinge" {
                        i as f64
                    } else {
                        100.0 + i as f64
                    },
                }
            })
            .collect();
        let proposals: Vec<_> = (30..60)
            .map(|i| propose(&space, &observed, &[], 1, i))
            .collect();
        let hinge = proposals
            .iter()
            .filter(|p| p[2].1.as_str() == Some("hinge"))
            .count();
        assert!(hinge >= 27, "{hinge} of 30 proposals pick the good choice");
        for p in &proposals {
            assert!((0.0..=0.9).contains(&p[0].1.as_float().unwrap()), "{p:?}");
            assert!((1..=3).contains(&p[1].1.as_integer().unwrap()), "{p:?}");
        }
        assert_eq!(
            proposals[0],
            propose(&space, &observed, &[], 1, 30),
            "the same observations give the same proposal"
        );
        assert_ne!(
            proposals[0],
            propose(&space, &observed, &[], 2, 30),
            "the seed matters"
        );
    }

    #[test]
    fn a_batch_spreads_out_where_its_earlier_proposals_count_as_bad() {
        // Ten ended trials over the range, scored by their distance from 3e-3 in log space.
        let observed: Vec<Observed> = (0..10)
            .map(|i| {
                let lr = 10f64.powf(-5.0 + 4.0 * f64::from(i) / 9.0);
                Observed {
                    values: vec![("train.lr".into(), lr.into())],
                    objective: (lr.ln() - 3e-3f64.ln()).abs(),
                }
            })
            .collect();
        // The smallest gap between two of a batch of four proposals, in log space.
        let closest_pair = |liar: bool, seed: u32| -> f64 {
            let mut batch: Vec<Vec<(String, toml::Value)>> = Vec::new();
            for trial in 10..14 {
                let pending: &[_] = if liar { &batch } else { &[] };
                let values = propose(&lr_space(), &observed, pending, seed, trial);
                batch.push(values);
            }
            let mut xs: Vec<f64> = batch.iter().map(|v| lr_of(v).ln()).collect();
            xs.sort_by(f64::total_cmp);
            xs.windows(2)
                .map(|w| w[1] - w[0])
                .fold(f64::INFINITY, f64::min)
        };
        let (mut wider, mut liar_total, mut plain_total) = (0, 0.0, 0.0);
        for seed in 0..20 {
            let (liar, plain) = (closest_pair(true, seed), closest_pair(false, seed));
            wider += usize::from(liar >= plain);
            liar_total += liar;
            plain_total += plain;
        }
        // (Measured: at least as wide for every seed, 9 times as wide on average.)
        assert!(
            wider >= 18,
            "the batch spread wider in only {wider} of 20 seeds"
        );
        assert!(
            liar_total > 4.0 * plain_total,
            "{liar_total} against {plain_total}"
        );
    }

    #[test]
    fn good_trials_are_a_tenth_at_most_twenty_five() {
        assert_eq!(good_count(1), 1);
        assert_eq!(good_count(10), 1);
        assert_eq!(good_count(11), 2);
        assert_eq!(good_count(1000), 25);
    }

    #[test]
    fn densities_are_normalized_on_their_range() {
        let parzen = Parzen::new(&[0.1, 0.15, 0.8], 0.0, 1.0);
        let n = 10_000;
        let integral: f64 = (0..n)
            .map(|i| parzen.log_pdf((i as f64 + 0.5) / n as f64).exp() / n as f64)
            .sum();
        assert!((integral - 1.0).abs() < 1e-3, "{integral}");
    }
}
