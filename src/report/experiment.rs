//! An experiment's page: its score against each swept setting, parallel coordinates, its
//! history (each run's score in start order, and the best so far), the FID and loss curves of
//! all its runs, the best runs' last samples side by side, its leaderboard, what each setting
//! explains ([`crate::importance`], also `runner runs --explain`) and its replicates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Result;
use minijinja::Value;
use minijinja::value::Serde;

use super::data::{self, Experiment, Run};
use super::plots::{self, Axis, Chart, Polyline, Series};
use super::{
    ExperimentView, Plot, Ranking, Site, compare, experiment_view, format_value, slug, swept_keys,
};

/// Up to this many distinct values, a swept setting gets one evenly spaced tick per value,
/// labelled with the digits that tell them apart (as a grid of hyperparameters reads best);
/// more get a numeric axis.
const MAX_CATEGORIES: usize = 8;

/// Where each value of a swept setting goes on the x axis: (x of each value, category names
/// for a categorical axis, log scale). Numbers sort numerically, other values as text.
pub(super) fn x_axis(values: &[&String]) -> (Vec<f64>, Option<Vec<String>>, bool) {
    let numbers: Option<Vec<f64>> = values.iter().map(|v| v.parse::<f64>().ok()).collect();
    let mut distinct: Vec<&String> = values.to_vec();
    match &numbers {
        Some(xs) => {
            distinct.sort_by(|a, b| {
                a.parse::<f64>()
                    .unwrap_or(0.0)
                    .total_cmp(&b.parse().unwrap_or(0.0))
            });
            distinct.dedup();
            if distinct.len() > MAX_CATEGORIES {
                let (lo, hi) = xs
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                        (l.min(x), h.max(x))
                    });
                return (xs.clone(), None, lo > 0.0 && hi / lo >= 10.0);
            }
        }
        None => {
            distinct.sort();
            distinct.dedup();
        }
    }
    let xs = values
        .iter()
        .map(|v| {
            distinct
                .iter()
                .position(|d| d == v)
                .expect("collected above") as f64
        })
        .collect();
    let names = match numbers {
        Some(_) => distinct_labels(&distinct),
        None => distinct.into_iter().cloned().collect(),
    };
    (xs, Some(names), false)
}

/// Labels for distinct numbers (as text), each rounded to the fewest significant digits, 3 at
/// least, that keep them apart, where that is shorter: a searched learning rate reads
/// 0.000166, not 0.00016632325697911321, and a grid's 0.0002 stays as it is.
fn distinct_labels(numbers: &[&String]) -> Vec<String> {
    let rounded = |digits: usize| -> Vec<String> {
        (numbers.iter())
            .map(|n| {
                let x: f64 = n.parse().unwrap_or(f64::NAN);
                let x: f64 = format!("{x:.*e}", digits - 1).parse().unwrap_or(x);
                let x = x.to_string();
                if x.len() < n.len() { x } else { n.to_string() }
            })
            .collect()
    };
    (3..=17)
        .map(rounded)
        .find(|labels| labels.iter().collect::<BTreeSet<_>>().len() == numbers.len())
        .unwrap_or_else(|| numbers.iter().map(|n| n.to_string()).collect())
}

/// The most values of a setting that its plot joins by a line: a grid sweeps a few.
const MAX_LINE_VALUES: usize = 12;

/// The most lines a setting's plot draws, one per value of another setting (and the most its
/// legend names).
const MAX_LINES: usize = 12;

/// The most runs whose last samples the experiment's page shows, best first.
const MAX_GALLERY: usize = 24;

/// One run's last sample grid on its experiment's page.
#[derive(serde::Serialize)]
struct GalleryEntry {
    rank: usize,
    id: String,
    /// The run's page.
    href: String,
    best: bool,
    /// The grid, relative to the experiment's page.
    src: String,
    step: i64,
    metric: String,
    /// The run's values of the swept settings, `key = value`.
    swept: Vec<String>,
}

/// What one swept setting's plot draws: each run's score against its value of the setting, one
/// line per value of another swept setting (a seed's line shows how one replicate responds).
struct SettingPoints {
    series: Vec<Series>,
    /// Runs drawn as dots alone, where one line per value of the other setting would be a
    /// tangle (300 seeds): with the mean of the runs at each value as the one line.
    dots: Vec<(f64, f64)>,
    /// The series' points as markers only: a search's runs, whose order along x says nothing.
    scatter: bool,
    legend: bool,
    highlight: Option<(f64, f64)>,
    categories: Option<Vec<String>>,
    log_x: bool,
}

impl SettingPoints {
    fn of(
        experiment: &Experiment,
        ranking: Ranking,
        swept: &[String],
        key: &str,
        best: Option<&str>,
    ) -> Self {
        let group_key = swept.iter().find(|k| *k != key);
        let runs: Vec<&Run> = experiment
            .runs
            .iter()
            .filter(|r| ranking.value(r).is_some() && r.params.contains_key(key))
            .collect();
        let values: Vec<&String> = runs.iter().map(|r| &r.params[key]).collect();
        let (xs, categories, log_x) = x_axis(&values);
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut highlight = None;
        for (run, x) in runs.iter().zip(&xs) {
            let y = ranking.value(run).expect("filtered above");
            // A setting of other runs only (`train.clip` beside a `[[sweep]]` entry of WGAN).
            let group = group_key
                .map(|g| format!("{g} = {}", run.params.get(g).map_or("unset", |v| v)))
                .unwrap_or_else(|| "runs".into());
            groups.entry(group).or_default().push((*x, y));
            if best == Some(run.id.as_str()) {
                highlight = Some((*x, y));
            }
        }
        let by_x = |mut points: Vec<(f64, f64)>| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points
        };
        if groups.len() > MAX_LINES {
            let dots = by_x(groups.into_values().flatten().collect());
            let means: Vec<(f64, f64)> = (dots.chunk_by(|a, b| a.0 == b.0))
                .map(|runs| {
                    let sum: f64 = runs.iter().map(|p| p.1).sum();
                    (runs[0].0, sum / runs.len() as f64)
                })
                .collect();
            // A search's runs each have a value of their own: there is no mean to draw.
            let series: Vec<Series> = (means.len() < dots.len())
                .then(|| Series {
                    name: "mean of the runs at each value".into(),
                    points: means,
                })
                .into_iter()
                .collect();
            return SettingPoints {
                legend: !series.is_empty(),
                series,
                dots,
                scatter: false,
                highlight,
                categories,
                log_x,
            };
        }
        let series: Vec<Series> = groups
            .into_iter()
            .map(|(name, points)| Series {
                name,
                points: by_x(points),
            })
            .collect();
        // A line reads as "the score as the setting moves, the rest held": true of a grid's
        // slice (one run per value, few values), not of a search's runs, which are points.
        let grid_slice = series.iter().all(|s| {
            let distinct = s.points.chunk_by(|a, b| a.0 == b.0).count();
            distinct == s.points.len() && distinct <= MAX_LINE_VALUES
        });
        SettingPoints {
            legend: group_key.is_some(),
            series,
            dots: Vec::new(),
            scatter: !grid_slice,
            highlight,
            categories,
            log_x,
        }
    }
}

/// `final_samples`: each run's last grid in the site (its step, and its name in the run's
/// folder), as its run page copied it.
pub(super) fn experiment_page(
    site: &Site,
    experiment: &Experiment,
    final_samples: &BTreeMap<&str, (i64, String)>,
) -> Result<()> {
    let dir = slug(&experiment.name);
    let view = experiment_view(experiment, "");
    let ranking = Ranking::of(experiment);
    // The view has ranked the runs already.
    let best = view
        .leaderboard
        .iter()
        .find(|r| r.best)
        .map(|r| r.id.clone());
    let plot_refs = sweep_plots(
        site,
        &dir,
        experiment,
        ranking,
        &view.swept_keys,
        best.as_deref(),
    )?;
    // Replicates have no history to read: their order says nothing.
    let has_settings = view.swept_keys.iter().any(|k| k != "train.seed");
    let history_plot = match has_settings
        .then(|| History::of(experiment, ranking, best.as_deref()))
        .flatten()
    {
        Some(history) => Some(history_plot(site, &dir, ranking, history)?),
        None => None,
    };
    let curve_plots = curve_plots(site, &dir, experiment)?;
    if let Some(leader) = best
        .as_ref()
        .and_then(|b| experiment.runs.iter().find(|r| r.id == *b))
    {
        for run in experiment.runs.iter().filter(|r| r.id != leader.id) {
            compare::page(site, experiment, leader, run)?;
        }
    }
    let gallery = gallery(&view, final_samples);
    site.page(
        &format!("{dir}/index.html"),
        "experiment.html",
        minijinja::context! {
            root => "../",
            experiment => Value::from(Serde(&view)),
            gallery => Value::from(Serde(&gallery)),
            gallery_of => final_samples.len(),
            sweep_plots => Value::from(Serde(&plot_refs)),
            history_plot => Value::from(Serde(&history_plot)),
            curve_plots => Value::from(Serde(&curve_plots)),
            replicates => Value::from(Serde(&replicate_table(&site.db, &experiment.name)?)),
            importance => Value::from(Serde(&importance_table(experiment))),
        },
    )
}

/// The ranking metric against each swept setting (a seed aside), one plot each, and all of
/// them in one parallel-coordinates plot.
fn sweep_plots(
    site: &Site,
    dir: &str,
    experiment: &Experiment,
    ranking: Ranking,
    swept: &[String],
    best: Option<&str>,
) -> Result<Vec<Plot>> {
    let mut plot_refs = Vec::new();
    // A seed is a replicate, not a setting: the score against it is noise (the replicates'
    // table summarises it), though it still tells the lines of a setting's plot apart.
    let settings: Vec<&String> = swept.iter().filter(|k| *k != "train.seed").collect();
    for (i, key) in settings.iter().copied().enumerate() {
        let points = SettingPoints::of(experiment, ranking, swept, key, best);
        let title = format!("{} vs {key}", ranking.short());
        let src = site.plot(
            &format!("{dir}/sweep-{i}.svg"),
            &Chart {
                title: &title,
                x_label: key,
                y_label: ranking.short(),
                legend: points.legend,
                series: points.series,
                dots: points.dots,
                markers: true,
                scatter: points.scatter,
                highlight: points.highlight,
                x_categories: points.categories,
                log_x: points.log_x,
                ..Default::default()
            },
        )?;
        plot_refs.push(Plot { title, src });
    }
    if !settings.is_empty() {
        let title = format!("Settings and {} of every run", ranking.short());
        let (axes, lines) = parallel_coordinates(experiment, &settings, ranking);
        let svg = plots::parallel_svg(&title, &axes, &lines).map_err(anyhow::Error::msg)?;
        site.file(&format!("{dir}/parallel.svg"), svg.as_bytes())?;
        plot_refs.push(Plot {
            title,
            src: "parallel.svg".into(),
        });
    }
    Ok(plot_refs)
}

/// The search's history as a plot: each run's score in start order under the best so far.
fn history_plot(site: &Site, dir: &str, ranking: Ranking, history: History) -> Result<Plot> {
    let title = format!(
        "{} of each run in the order the runs started (x: pruned), and the best so far",
        ranking.short()
    );
    let src = site.plot(
        &format!("{dir}/history.svg"),
        &Chart {
            title: &title,
            x_label: "run (in start order)",
            integer_x: true,
            y_label: ranking.short(),
            series: vec![Series {
                name: "best so far".into(),
                points: history.best_so_far,
            }],
            dots: history.scores,
            crosses: history.pruned,
            highlight: history.best,
            ..Default::default()
        },
    )?;
    Ok(Plot { title, src })
}

/// Every run's LeNet-FID over steps and against training time, and its D and G losses.
fn curve_plots(site: &Site, dir: &str, experiment: &Experiment) -> Result<Vec<Plot>> {
    let mut curve_plots = Vec::new();
    let fid_curves: Vec<(&Run, Vec<(f64, f64)>)> = experiment
        .runs
        .iter()
        .map(|r| {
            let points: Vec<_> = (r.fid_points().into_iter())
                .filter(|p| p.1.is_finite())
                .collect();
            (r, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect();
    // The same curves against training time, which compares runs whose steps cost
    // differently (batch sizes, D steps, models), in the unit that suits the longest run.
    let timed = timed_curves(&fid_curves);
    let longest = (timed.iter().flat_map(|(_, p)| p)).fold(0.0_f64, |m, p| m.max(p.0));
    let (unit, per) = match longest {
        t if t > 3.0 * 3600.0 => ("hours", 3600.0),
        t if t > 180.0 => ("minutes", 60.0),
        _ => ("seconds", 1.0),
    };
    let timed: Vec<_> = (timed.into_iter())
        .map(|(r, points)| (r, points.into_iter().map(|(t, f)| (t / per, f)).collect()))
        .collect();
    let time_label = format!("training time ({unit})");
    for (file, title, x_label, curves) in [
        (
            "fid-curves.svg",
            "LeNet-FID over training (x: where a pruned run stopped)",
            "step",
            fid_curves,
        ),
        (
            "fid-time.svg",
            "LeNet-FID against training time (x: where a pruned run stopped)",
            time_label.as_str(),
            timed,
        ),
    ] {
        if curves.is_empty() {
            continue;
        }
        let src = site.plot(
            &format!("{dir}/{file}"),
            &Chart {
                title,
                x_label,
                y_label: "FID",
                legend: curves.len() <= 10,
                crosses: curves
                    .iter()
                    .filter(|(r, _)| r.status == "pruned")
                    .filter_map(|(_, points)| points.last().copied())
                    .collect(),
                series: curves
                    .into_iter()
                    .map(|(r, points)| Series {
                        name: r.id.chars().take(8).collect(),
                        points,
                    })
                    .collect(),
                markers: false,
                log_y_when_wide: true,
                ..Default::default()
            },
        )?;
        curve_plots.push(Plot {
            title: title.into(),
            src,
        });
    }
    for (name, label) in [("d_loss", "D loss"), ("g_loss", "G loss")] {
        let series: Vec<Series> = experiment
            .runs
            .iter()
            .filter_map(|r| {
                Some(Series {
                    name: r.id.chars().take(8).collect(),
                    points: r.metrics.get(name)?.clone(),
                })
            })
            .collect();
        let title = format!("{label} of every run");
        let src = site.plot(
            &format!("{dir}/{name}.svg"),
            &Chart {
                title: &title,
                x_label: "step",
                y_label: label,
                legend: series.len() <= 10,
                series,
                smooth: true,
                ..Default::default()
            },
        )?;
        curve_plots.push(Plot { title, src });
    }
    Ok(curve_plots)
}

/// What the report's authors judged by eye, side by side: the runs' last grids, best first.
fn gallery(
    view: &ExperimentView,
    final_samples: &BTreeMap<&str, (i64, String)>,
) -> Vec<GalleryEntry> {
    let swept = &view.swept_keys;
    (view.leaderboard.iter())
        .filter_map(|row| {
            let (step, name) = final_samples.get(row.id.as_str())?;
            Some(GalleryEntry {
                rank: row.rank,
                id: row.id.clone(),
                href: row.href.clone(),
                best: row.best,
                src: format!("{}/{name}", slug(&row.id)),
                step: *step,
                metric: row.metric.clone(),
                swept: (swept.iter().zip(&row.swept))
                    .filter(|(_, value)| !value.is_empty())
                    .map(|(key, value)| format!("{key} = {value}"))
                    .collect(),
            })
        })
        .take(MAX_GALLERY)
        .collect()
}

/// An experiment's search history, as Optuna's dashboard draws it: each run's score at its
/// place in start order (runs number from 1; one that started without a score, failed or
/// still training, leaves a gap), and the best score so far as a step line, which shows
/// whether a search still finds better settings or has settled.
#[derive(Debug, PartialEq)]
struct History {
    /// Scores of runs that were not pruned.
    scores: Vec<(f64, f64)>,
    /// Scores of pruned runs (from the rung where they stopped).
    pruned: Vec<(f64, f64)>,
    best_so_far: Vec<(f64, f64)>,
    /// The best run's point.
    best: Option<(f64, f64)>,
}

impl History {
    /// None for fewer than two scored runs, where there is no history to draw.
    fn of(experiment: &Experiment, ranking: Ranking, best: Option<&str>) -> Option<History> {
        let mut history = History {
            scores: Vec::new(),
            pruned: Vec::new(),
            best_so_far: Vec::new(),
            best: None,
        };
        let started = experiment.runs.iter().filter(|r| r.started_at.is_some());
        let mut lowest = f64::INFINITY;
        for (x, run) in (1..).map(f64::from).zip(started) {
            let Some(y) = ranking.value(run) else {
                continue;
            };
            if run.status == "pruned" {
                history.pruned.push((x, y));
            } else {
                history.scores.push((x, y));
            }
            if best == Some(run.id.as_str()) {
                history.best = Some((x, y));
            }
            // Lower is better for both rankings. The line runs flat to this run, then drops
            // to its score where that is a new best.
            if lowest.is_finite() {
                history.best_so_far.push((x, lowest));
            }
            if y < lowest {
                lowest = y;
                history.best_so_far.push((x, y));
            }
        }
        (history.scores.len() + history.pruned.len() >= 2).then_some(history)
    }
}

/// Each run's (step, value) points with the step replaced by the run's training time at it,
/// in seconds; steps without a recorded time (runs of older releases) are left out.
fn timed_curves<'a>(curves: &[(&'a Run, Vec<(f64, f64)>)]) -> Vec<(&'a Run, Vec<(f64, f64)>)> {
    (curves.iter())
        .filter_map(|(run, points)| {
            let timed: Vec<(f64, f64)> = (points.iter())
                .filter_map(|&(step, value)| Some((*run.eval_seconds.get(&(step as i64))?, value)))
                .collect();
            (!timed.is_empty()).then_some((*run, timed))
        })
        .collect()
}

/// What each setting that differs between an experiment's finished runs explains of their
/// best FID (see [`crate::importance`]); nothing without FIDs, with fewer than three runs, or
/// when only the seed differs (what it explains is chance: the runs are replicates).
fn importance_of(experiment: &Experiment) -> Vec<crate::importance::Importance> {
    let ranking = Ranking::of(experiment);
    if ranking != Ranking::Fid {
        return Vec::new();
    }
    let finished = experiment.runs.iter().filter(|r| r.status == "finished");
    let scored: Vec<_> = finished
        .clone()
        .filter_map(|r| Some((&r.params, ranking.value(r)?)))
        .collect();
    let found = crate::importance::importance(&scored, &swept_keys(finished));
    if found.iter().all(|i| i.key == "train.seed") {
        return Vec::new();
    }
    found
}

/// [`importance_of`] as the experiment page's table: text cells, header first.
pub(super) fn importance_table(experiment: &Experiment) -> Vec<Vec<String>> {
    let found = importance_of(experiment);
    if found.is_empty() {
        return Vec::new();
    }
    let percent = |share: f64| format!("{:.0}%", 100.0 * share);
    let header = [
        "setting",
        "values",
        "explains",
        "by chance",
        "p",
        "Spearman ρ",
    ];
    std::iter::once(header.map(String::from).to_vec())
        .chain(found.iter().map(|i| {
            vec![
                i.key.clone(),
                i.levels.to_string(),
                i.eta_squared.map_or_else(|| "-".into(), percent),
                percent(i.by_chance),
                i.p_value.map_or_else(String::new, format_p),
                i.spearman.map_or_else(String::new, |r| format!("{r:+.2}")),
            ]
        }))
        .collect()
}

/// A permutation p-value as people read it: three decimals, or below the test's resolution.
fn format_p(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

/// `runner runs --explain`: `importance_of` each experiment (or only `experiment`), one row
/// per experiment and setting, largest share first.
pub fn explain(db: &Path, experiment: Option<&str>) -> Result<crate::query::Rows> {
    let round = |v: f64| serde_json::json!((v * 1000.0).round() / 1000.0);
    let mut rows = Vec::new();
    for experiment in data::load(db, experiment, data::Detail::Scores)? {
        for i in importance_of(&experiment) {
            rows.push(vec![
                experiment.name.clone().into(),
                i.key.into(),
                i.levels.into(),
                i.eta_squared.map_or(serde_json::Value::Null, round),
                round(i.by_chance),
                // Its resolution is 1 / 10 000.
                i.p_value.map_or(serde_json::Value::Null, |p| {
                    serde_json::json!((p * 1e4).round() / 1e4)
                }),
                i.spearman.map_or(serde_json::Value::Null, round),
            ]);
        }
    }
    let columns = [
        "experiment",
        "setting",
        "values",
        "explains",
        "by_chance",
        "p",
        "spearman",
    ];
    Ok(crate::query::Rows {
        columns: columns.map(String::from).to_vec(),
        rows,
    })
}

/// The parallel-coordinates plot of an experiment: an axis per swept key (numbers on a linear
/// or, over a decade and more, log scale; other values as evenly spaced categories) and the
/// ranking metric last, best at the top.
fn parallel_coordinates(
    experiment: &Experiment,
    swept: &[&String],
    ranking: Ranking,
) -> (Vec<Axis>, Vec<Polyline>) {
    let runs = &experiment.runs;
    let mut axes = Vec::new();
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for key in swept {
        let missing = String::new();
        let values: Vec<&String> = runs
            .iter()
            .map(|r| r.params.get(*key).unwrap_or(&missing))
            .collect();
        let (xs, categories, log) = x_axis(&values);
        let (positions, ticks) = match categories {
            Some(names) => {
                let span = (names.len().max(2) - 1) as f64;
                let at = |i: f64| if names.len() == 1 { 0.5 } else { i / span };
                (
                    xs.iter().map(|&i| at(i)).collect(),
                    names
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (at(i as f64), n.clone()))
                        .collect(),
                )
            }
            None => {
                let map = |x: f64| if log { x.ln() } else { x };
                let (lo, hi) = xs
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                        (l.min(x), h.max(x))
                    });
                let at = |x: f64| (map(x) - map(lo)) / (map(hi) - map(lo)).max(f64::MIN_POSITIVE);
                let mid = if log {
                    (lo * hi).sqrt()
                } else {
                    (lo + hi) / 2.0
                };
                (
                    xs.iter().map(|&x| at(x)).collect(),
                    [lo, mid, hi]
                        .iter()
                        .map(|&x| (at(x), plots::format_number(x)))
                        .collect(),
                )
            }
        };
        axes.push(Axis {
            name: key.to_string(),
            ticks,
        });
        columns.push(positions);
    }
    let scores: Vec<Option<f64>> = runs.iter().map(|r| ranking.value(r)).collect();
    let (lo, hi) = scores
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    // 0 for the best (lowest), 1 for the worst.
    let badness = |v: f64| if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
    axes.push(Axis {
        name: ranking.short().into(),
        ticks: if lo.is_finite() {
            vec![(1.0, format_value(lo)), (0.0, format_value(hi))]
        } else {
            Vec::new()
        },
    });
    let lines = runs
        .iter()
        .enumerate()
        .map(|(i, run)| Polyline {
            positions: columns
                .iter()
                .map(|c| c[i])
                .chain([scores[i].map_or(f64::NAN, |v| 1.0 - badness(v))])
                .collect(),
            score: scores[i].map_or(1.0, badness),
            dashed: run.status != "finished",
        })
        .collect();
    (axes, lines)
}

/// The experiment's groups of replicates (`runner runs --group`) as text cells, header first;
/// empty unless some configuration ran with more than one seed.
fn replicate_table(db: &Path, experiment: &str) -> Result<Vec<Vec<String>>> {
    let groups = crate::replicates::groups(db, Some(experiment))?;
    if !groups
        .rows
        .iter()
        .any(|r| r[2].as_u64().is_some_and(|n| n > 1))
    {
        return Ok(Vec::new());
    }
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            format!("{:.1}", n.as_f64().unwrap_or(f64::NAN))
        }
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let header = groups.columns.iter().skip(1).cloned().collect();
    Ok(std::iter::once(header)
        .chain(
            groups
                .rows
                .iter()
                .map(|r| r.iter().skip(1).map(cell).collect()),
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, status: &str, fid: Option<f64>, started: bool) -> Run {
        Run {
            id: id.into(),
            status: status.into(),
            started_at: started.then(|| "2026-11-30T12:00:00Z".into()),
            evals: fid
                .map(|f| BTreeMap::from([(500, BTreeMap::from([("fid".to_string(), f)]))]))
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Runs of a grid of `lrs` by `seeds`, each scored `lr * 1e6 + seed`.
    fn grid(lrs: &[f64], seeds: usize) -> Experiment {
        let runs = (lrs.iter())
            .flat_map(|&lr| (0..seeds).map(move |seed| (lr, seed)))
            .map(|(lr, seed)| Run {
                params: BTreeMap::from([
                    ("train.lr".to_string(), lr.to_string()),
                    ("train.seed".to_string(), seed.to_string()),
                ]),
                ..run(
                    &format!("{lr}-{seed}"),
                    "finished",
                    Some(lr * 1e6 + seed as f64),
                    true,
                )
            })
            .collect();
        Experiment {
            name: "e".into(),
            description: String::new(),
            runs,
        }
    }

    #[test]
    fn a_setting_is_drawn_with_a_line_per_seed_or_with_the_mean_of_many() {
        let swept = ["train.lr".to_string(), "train.seed".to_string()];
        let few = SettingPoints::of(
            &grid(&[1e-4, 2e-4], 3),
            Ranking::Fid,
            &swept,
            "train.lr",
            None,
        );
        assert_eq!(few.series.len(), 3);
        assert_eq!(few.series[1].name, "train.seed = 1");
        assert_eq!(few.series[1].points, [(0.0, 101.0), (1.0, 201.0)]);
        assert!(few.dots.is_empty() && few.legend && !few.scatter);
        // 300 seeds made 300 lines: one dot a run and the mean at each value instead.
        let many = SettingPoints::of(
            &grid(&[1e-4, 2e-4], 20),
            Ranking::Fid,
            &swept,
            "train.lr",
            Some("0.0002-0"),
        );
        assert_eq!(many.dots.len(), 40);
        assert_eq!(many.series.len(), 1);
        assert_eq!(many.series[0].points, [(0.0, 109.5), (1.0, 209.5)]);
        assert_eq!(many.highlight, Some((1.0, 200.0)));
        assert!(many.legend);
        // A search's runs each have values of their own: dots, with no mean to draw.
        let mut search = grid(&[0.0], 20);
        for (i, run) in search.runs.iter_mut().enumerate() {
            run.params
                .insert("train.lr".into(), format!("0.000{}", i + 10));
        }
        let points = SettingPoints::of(&search, Ranking::Fid, &swept, "train.lr", None);
        assert_eq!((points.dots.len(), points.series.len()), (20, 0));
        assert!(!points.legend);
    }

    #[test]
    fn replicates_alone_have_no_settings_to_explain() {
        let keys = |e: &Experiment| -> Vec<String> {
            importance_of(e).into_iter().map(|i| i.key).collect()
        };
        assert_eq!(keys(&grid(&[1e-4, 2e-4], 3)), ["train.lr", "train.seed"]);
        assert!(keys(&grid(&[1e-4], 3)).is_empty());
    }

    #[test]
    fn the_history_steps_down_at_each_new_best_and_keeps_gaps_for_runs_without_a_score() {
        let experiment = Experiment {
            name: "e".into(),
            description: String::new(),
            runs: vec![
                run("a", "finished", Some(300.0), true),
                run("b", "pruned", Some(400.0), true),
                run("c", "failed", None, true),
                run("d", "finished", Some(200.0), true),
                run("e", "finished", Some(250.0), true),
                run("f", "pending", None, false),
            ],
        };
        let history = History::of(&experiment, Ranking::Fid, Some("d")).unwrap();
        assert_eq!(history.scores, [(1.0, 300.0), (4.0, 200.0), (5.0, 250.0)]);
        assert_eq!(history.pruned, [(2.0, 400.0)]);
        assert_eq!(history.best, Some((4.0, 200.0)));
        assert_eq!(
            history.best_so_far,
            [
                (1.0, 300.0),
                (2.0, 300.0),
                (4.0, 300.0),
                (4.0, 200.0),
                (5.0, 200.0)
            ]
        );
        let one = Experiment {
            runs: experiment.runs[..3]
                .iter()
                .filter(|r| r.id != "b")
                .cloned()
                .collect(),
            ..experiment
        };
        assert_eq!(
            History::of(&one, Ranking::Fid, None),
            None,
            "one score is no history"
        );
    }
}
