//! Replicates: finished runs of one experiment whose configs differ only in `train.seed` form a
//! group. `runner runs --group` shows each group's size and seeds, the mean and 95% interval of
//! its final and its best LeNet-FID, ranked by the mean final FID, and flags the groups whose
//! interval overlaps the leader's (a difference the seeds cannot tell apart).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::query::{Rows, run_sql};

/// Student's t quantile 0.975 for 1..=30 degrees of freedom (beyond: the normal's 1.96).
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// Mean and half-width of the 95% t interval of `values` (no interval for fewer than two).
pub fn mean_ci95(values: &[f64]) -> Option<(f64, Option<f64>)> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Some((mean, None));
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = T_975.get(n - 2).copied().unwrap_or(1.96);
    Some((mean, Some(t * (variance / n as f64).sqrt())))
}

/// One finished run: its experiment, config (JSON), seed, last and best FID.
struct Run {
    experiment: String,
    config: serde_json::Value,
    seed: i64,
    fid: Option<f64>,
    best_fid: Option<f64>,
}

/// The config without what does not make a group (the seed, and where the data lies), as
/// dotted keys and their values.
fn group_key(config: &serde_json::Value) -> BTreeMap<String, String> {
    let mut config = crate::spec::with_defaults(config.clone());
    if let Some(train) = config.get_mut("train").and_then(|t| t.as_object_mut()) {
        train.remove("seed");
    }
    if let Some(data) = config.get_mut("data").and_then(|d| d.as_object_mut()) {
        data.remove("dir");
    }
    crate::spec::flatten_params(&config)
        .into_iter()
        .map(|(k, v)| (k, crate::query::json_text(&v)))
        .collect()
}

/// `runner runs --group`: one row per group of replicates, best mean final FID first within
/// each experiment.
pub fn groups(db: &Path, experiment: Option<&str>) -> Result<Rows> {
    let found = run_sql(
        db,
        &format!(
            "SELECT r.experiment, r.config, {},
                (SELECT min(value) FROM evals e WHERE e.run_id = r.id AND e.metric = 'fid')
             FROM runs r WHERE r.status = 'finished' AND (?1 IS NULL OR r.experiment = ?1)",
            crate::query::latest_eval_sql("r", "fid")
        ),
        &[&experiment],
    )?;
    let runs: Vec<Run> = found
        .rows
        .iter()
        .filter_map(|row| {
            let config: serde_json::Value = serde_json::from_str(row[1].as_str()?).ok()?;
            Some(Run {
                experiment: row[0].as_str()?.to_string(),
                seed: config["train"]["seed"].as_i64().unwrap_or(0),
                config,
                fid: row[2].as_f64(),
                best_fid: row[3].as_f64(),
            })
        })
        .collect();
    // experiment -> group key -> runs; within an experiment only the keys that differ are shown.
    let mut per_experiment: BTreeMap<&str, BTreeMap<BTreeMap<String, String>, Vec<&Run>>> =
        BTreeMap::new();
    for run in &runs {
        per_experiment
            .entry(&run.experiment)
            .or_default()
            .entry(group_key(&run.config))
            .or_default()
            .push(run);
    }
    let columns = [
        "experiment",
        "config",
        "n",
        "seeds",
        "fid_mean",
        "fid_ci95",
        "best_mean",
        "best_ci95",
        "vs_leader",
    ];
    let mut rows = Vec::new();
    for (experiment, groups) in per_experiment {
        let varied = crate::query::varied_keys(groups.keys(), crate::query::json_text);
        let mut scored: Vec<_> = groups
            .into_iter()
            .map(|(key, members)| {
                let differing: Vec<String> = (varied.iter())
                    .filter_map(|k| Some(format!("{k}={}", key.get(k)?)))
                    .collect();
                let finals: Vec<f64> = members.iter().filter_map(|r| r.fid).collect();
                let bests: Vec<f64> = members.iter().filter_map(|r| r.best_fid).collect();
                let mut seeds: Vec<i64> = members.iter().map(|r| r.seed).collect();
                seeds.sort();
                (
                    differing.join(" "),
                    seeds,
                    mean_ci95(&finals),
                    mean_ci95(&bests),
                )
            })
            .collect();
        scored.sort_by(|a, b| {
            let mean = |s: &Option<(f64, Option<f64>)>| s.map_or(f64::INFINITY, |(m, _)| m);
            mean(&a.2).total_cmp(&mean(&b.2))
        });
        let interval = |s: &Option<(f64, Option<f64>)>| {
            s.map(|(m, h)| (m - h.unwrap_or(0.0), m + h.unwrap_or(0.0)))
        };
        let leader = interval(&scored[0].2);
        for (i, (config, seeds, fin, best)) in scored.iter().enumerate() {
            let vs_leader = match (i, leader, interval(fin)) {
                (0, _, Some(_)) => "leader",
                (_, Some((lo, hi)), Some((a, b))) if a <= hi && lo <= b => "overlaps",
                (_, Some(_), Some(_)) => "worse",
                _ => "",
            };
            let num = |v: Option<f64>| {
                v.map_or(serde_json::Value::Null, |v| {
                    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into)
                })
            };
            rows.push(vec![
                experiment.into(),
                config.clone().into(),
                seeds.len().into(),
                seed_ranges(seeds).into(),
                num(fin.map(|(m, _)| m)),
                num(fin.and_then(|(_, h)| h)),
                num(best.map(|(m, _)| m)),
                num(best.and_then(|(_, h)| h)),
                vs_leader.into(),
            ]);
        }
    }
    Ok(Rows {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    })
}

/// Sorted seeds with their runs of consecutive values written as ranges, as Slurm writes job
/// arrays: `0-2,5,7-9` (a thousand seeds stay one short cell).
fn seed_ranges(seeds: &[i64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seeds.len() {
        let mut j = i;
        while j + 1 < seeds.len() && seeds[j + 1] == seeds[j] + 1 {
            j += 1;
        }
        parts.push(match j - i {
            0 => seeds[i].to_string(),
            1 => format!("{},{}", seeds[i], seeds[j]),
            _ => format!("{}-{}", seeds[i], seeds[j]),
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_seeds_are_written_as_ranges() {
        assert_eq!(seed_ranges(&[]), "");
        assert_eq!(seed_ranges(&[4]), "4");
        assert_eq!(seed_ranges(&[0, 1]), "0,1");
        assert_eq!(
            seed_ranges(&[0, 1, 2, 5, 7, 8, 9, 11, 12]),
            "0-2,5,7-9,11,12"
        );
        let thousand: Vec<i64> = (0..1000).collect();
        assert_eq!(seed_ranges(&thousand), "0-999");
    }

    #[test]
    fn configs_recorded_before_a_key_existed_group_with_its_default() {
        let now = serde_json::to_value(crate::spec::RunConfig::default()).unwrap();
        let mut before = now.clone();
        for key in ["loss", "g_ema", "r1_gamma"] {
            before["train"].as_object_mut().unwrap().remove(key);
        }
        assert_eq!(group_key(&before), group_key(&now));
        let mut hinge = now.clone();
        hinge["train"]["loss"] = "hinge".into();
        assert_ne!(group_key(&hinge), group_key(&now));
    }

    #[test]
    fn intervals_match_a_hand_computation() {
        // mean 2, sample sd 1, n 3: half-width t(0.975, 2) * 1 / sqrt(3) = 4.303 / 1.732.
        let (mean, half) = mean_ci95(&[1.0, 2.0, 3.0]).unwrap();
        assert!((mean - 2.0).abs() < 1e-12);
        assert!((half.unwrap() - 4.303 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(mean_ci95(&[5.0]), Some((5.0, None)));
        assert_eq!(mean_ci95(&[]), None);
        let many: Vec<f64> = (0..100).map(f64::from).collect();
        let (_, half) = mean_ci95(&many).unwrap();
        let sd = (many.iter().map(|v| (v - 49.5).powi(2)).sum::<f64>() / 99.0).sqrt();
        assert!((half.unwrap() - 1.96 * sd / 10.0).abs() < 1e-9);
    }
}
