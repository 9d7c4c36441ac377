//! Which swept settings a sweep's results depend on.
//!
//! For each setting that differs between an experiment's finished runs: eta squared, the share
//! of the variance of their score (the LeNet-FID) that lies between the groups of runs sharing
//! a value of that setting (a one-way analysis of variance), beside what a grouping with as
//! many values would explain by chance alone, (k - 1) / (n - 1) for k values over n runs, and
//! a permutation test's p-value (the share of random regroupings that explain as much); and
//! for a setting with three or more numeric values, the Spearman rank correlation of value
//! and score (its sign says which way to move it). In a full grid the shares are main effects;
//! what they leave is interactions and seed noise. `train.seed` is listed like any setting:
//! its share is the yardstick of pure chance.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;

/// Random regroupings of the scores that a share is compared with.
const PERMUTATIONS: usize = 9999;

/// What one setting explains.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Importance {
    pub key: String,
    /// How many values it took.
    pub levels: usize,
    /// Share of the score's variance between its value groups, 0..=1; none when every run
    /// has a value of its own (a searched continuous setting), which would make it 1.
    pub eta_squared: Option<f64>,
    /// The share a random grouping into as many groups explains on average.
    pub by_chance: f64,
    /// The chance that a random regrouping of the scores into groups of the same sizes
    /// explains as much (a permutation test of the share; none without a share).
    pub p_value: Option<f64>,
    /// Rank correlation of a numeric setting (three or more values) with the score.
    pub spearman: Option<f64>,
}

/// The importance of each of `keys` over `runs` (each run's settings and score), largest
/// share first. Needs three runs or more; keys with one value are left out.
pub fn importance(runs: &[(&BTreeMap<String, String>, f64)], keys: &[String]) -> Vec<Importance> {
    let n = runs.len();
    if n < 3 {
        return Vec::new();
    }
    let scores: Vec<f64> = runs.iter().map(|r| r.1).collect();
    let mean = scores.iter().sum::<f64>() / n as f64;
    let total: f64 = scores.iter().map(|s| (s - mean).powi(2)).sum();
    let mut found: Vec<Importance> = keys
        .iter()
        .filter_map(|key| {
            let value = |run: &(&BTreeMap<String, String>, f64)| run.0.get(key).cloned();
            let mut values: Vec<Option<String>> = runs.iter().map(value).collect();
            let labels: Vec<Option<String>> = values.clone();
            values.sort();
            values.dedup();
            let levels = values.len();
            if levels < 2 {
                return None;
            }
            let group: Vec<usize> = labels
                .iter()
                .map(|l| values.binary_search(l).expect("a value of the runs"))
                .collect();
            let between = |scores: &[f64]| between_groups(&group, levels, scores, mean);
            let observed = between(&scores);
            let eta_squared =
                (levels < n).then(|| if total > 0.0 { observed / total } else { 0.0 });
            let p_value = eta_squared.filter(|_| total > 0.0).map(|_| {
                let mut rng = rand::rngs::StdRng::seed_from_u64(PERMUTATIONS as u64);
                let mut shuffled = scores.clone();
                let as_large = (0..PERMUTATIONS)
                    .filter(|_| {
                        shuffled.shuffle(&mut rng);
                        between(&shuffled) >= observed * (1.0 - 1e-12)
                    })
                    .count();
                (as_large + 1) as f64 / (PERMUTATIONS + 1) as f64
            });
            let numbers: Option<Vec<f64>> = runs
                .iter()
                .map(|run| value(run)?.parse::<f64>().ok())
                .collect();
            Some(Importance {
                key: key.clone(),
                levels,
                eta_squared,
                by_chance: (levels - 1) as f64 / (n - 1) as f64,
                p_value,
                spearman: numbers
                    .filter(|_| levels >= 3)
                    .and_then(|x| pearson(&ranks(&x), &ranks(&scores))),
            })
        })
        .collect();
    // Largest share first; settings without one by the strength of their correlation.
    let strength = |i: &Importance| {
        (
            i.eta_squared.unwrap_or(-1.0),
            i.spearman.map_or(0.0, f64::abs),
        )
    };
    found.sort_by(|a, b| {
        let (a, b) = (strength(a), strength(b));
        b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1))
    });
    found
}

/// The sum of squares between the groups (`group[i]` is run i's, of `levels`) of `scores`.
fn between_groups(group: &[usize], levels: usize, scores: &[f64], mean: f64) -> f64 {
    let mut sums = vec![(0.0, 0usize); levels];
    for (&g, &score) in group.iter().zip(scores) {
        sums[g].0 += score;
        sums[g].1 += 1;
    }
    sums.iter()
        .map(|&(sum, count)| count as f64 * (sum / count as f64 - mean).powi(2))
        .sum()
}

/// Ranks from 1, ties sharing their mean rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let shared = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = shared;
        }
        start = end;
    }
    ranks
}

/// Pearson's correlation; none when either side is constant.
fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_setting_that_decides_the_score_explains_it_and_the_seed_does_not() {
        // FID = 100 x lr-index + a small seed effect: lr explains nearly all of it.
        let mut runs = Vec::new();
        for (i, lr) in ["1e-4", "2e-4", "4e-4"].iter().enumerate() {
            for (seed, noise) in [("0", 1.0), ("1", -1.0)] {
                runs.push((
                    settings(&[("train.lr", lr), ("train.seed", seed)]),
                    100.0 * i as f64 + noise,
                ));
            }
        }
        let runs: Vec<_> = runs.iter().map(|(s, v)| (s, *v)).collect();
        let keys = ["train.seed".to_string(), "train.lr".to_string()];
        let found = importance(&runs, &keys);
        assert_eq!(found[0].key, "train.lr");
        assert!(found[0].eta_squared > Some(0.99), "{found:?}");
        assert_eq!(found[0].levels, 3);
        assert!((found[0].by_chance - 2.0 / 5.0).abs() < 1e-12);
        // FID rises with lr; the ties within each lr keep it just under 1.
        assert!(found[0].spearman.is_some_and(|r| r > 0.95), "{found:?}");
        let seed = &found[1];
        assert!(
            seed.eta_squared < Some(0.01) && seed.spearman.is_none(),
            "{seed:?}"
        );
        // Shares of a balanced grid add up to the whole when nothing else varies.
        let sum = found[0].eta_squared.unwrap() + seed.eta_squared.unwrap();
        assert!((sum - 1.0).abs() < 1e-9);
        // Six runs: the best of the 15 ways to split them into three pairs is all a
        // permutation test can say of lr; the seed's split is unremarkable.
        assert!(found[0].p_value < Some(0.1), "{found:?}");
        assert!(seed.p_value > Some(0.5), "{seed:?}");
    }

    #[test]
    fn the_permutation_test_tells_an_effect_from_noise_given_runs_enough() {
        // 30 runs: a setting that shifts the score by 3 noise widths, and one that does not.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let runs: Vec<(BTreeMap<String, String>, f64)> = (0..30)
            .map(|i| {
                let noise: f64 = rand::RngExt::random(&mut rng);
                let (loss, seed) = (i % 3, i / 3);
                let run = settings(&[
                    ("train.loss", &loss.to_string()),
                    ("train.seed", &seed.to_string()),
                ]);
                (run, 3.0 * loss as f64 + noise)
            })
            .collect();
        let runs: Vec<_> = runs.iter().map(|(s, v)| (s, *v)).collect();
        let found = importance(&runs, &["train.seed".into(), "train.loss".into()]);
        assert_eq!(found[0].key, "train.loss");
        assert!(found[0].p_value <= Some(0.001), "{found:?}");
        assert!(found[1].p_value > Some(0.05), "{found:?}");
        assert_eq!(
            importance(&runs, &["train.loss".into()])[0].p_value,
            found[0].p_value,
            "reproducible"
        );
    }

    #[test]
    fn ties_share_ranks_and_small_or_flat_inputs_give_nothing() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
        let one = settings(&[("train.lr", "1")]);
        let two = vec![(&one, 1.0), (&one, 2.0)];
        assert!(importance(&two, &["train.lr".into()]).is_empty());
        let flat = vec![(&one, 1.0), (&one, 2.0), (&one, 3.0)];
        assert!(
            importance(&flat, &["train.lr".into()]).is_empty(),
            "one value"
        );
        // A value per run (random search): no share, only the correlation.
        let searched: Vec<BTreeMap<String, String>> = ["0.1", "0.2", "0.3"]
            .iter()
            .map(|lr| settings(&[("train.lr", lr)]))
            .collect();
        let runs: Vec<_> = searched.iter().zip([3.0, 2.0, 1.0]).collect();
        let found = importance(&runs, &["train.lr".into()]);
        assert_eq!(found[0].eta_squared, None);
        assert_eq!(found[0].spearman, Some(-1.0));
    }
}
