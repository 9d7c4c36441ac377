//! `runner report`: a static HTML site built from the tracking database alone.
//!
//! ```text
//! <out>/index.html                   every experiment, its status counts and leaderboard
//! <out>/<experiment>/index.html      metric vs each swept key, parallel coordinates, FID and
//!                                    loss curves of all runs, leaderboard, replicates
//! <out>/<experiment>/compare-<run>.html  a run beside the experiment's best
//! <out>/<experiment>/<run>/index.html  config, losses, evaluations, events, samples, checkpoints
//! ```
//!
//! Plots are SVG files (plotters), pages come from minijinja templates with HTML escaping on,
//! sample grids are copied in: the site has no external resources and works from `file://`.
//! It is built in a temporary directory and swapped in whole, so a reader never sees half a
//! report and pages of deleted runs do not linger.

mod compare;
mod data;
mod plots;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use minijinja::value::Serde;
use minijinja::{Environment, Value};
use serde::Serialize;

use data::{Experiment, Run};
use plots::{Axis, Chart, Polyline, Series};

/// A file in a report directory that marks it as one, so regenerating may replace it.
const MARKER: &str = ".ganrunner-report";

/// What `write` produced.
#[derive(Debug, Clone)]
pub struct Written {
    pub index: PathBuf,
    pub experiments: usize,
    pub runs: usize,
}

/// How runs are ranked: by their best LeNet-FID when the experiment was evaluated (the state
/// `generate --best` samples), else by their last G loss (lower first in both).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ranking {
    Fid,
    GLoss,
}

impl Ranking {
    fn of(experiment: &Experiment) -> Self {
        if experiment.runs.iter().any(|r| r.best_fid().is_some()) {
            Ranking::Fid
        } else {
            Ranking::GLoss
        }
    }

    fn label(self) -> &'static str {
        match self {
            Ranking::Fid => "best LeNet-FID (of its evaluations)",
            Ranking::GLoss => "final G loss (no evaluations)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Ranking::Fid => "FID",
            Ranking::GLoss => "G loss",
        }
    }

    fn value(self, run: &Run) -> Option<f64> {
        match self {
            Ranking::Fid => run.best_fid(),
            Ranking::GLoss => run.last_metric("g_loss"),
        }
        .filter(|v| v.is_finite())
    }
}

/// A name made safe as a path component.
fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    };
    // A name too long for a file system (from a database written before names had a limit)
    // keeps a readable head and a hash of the whole, so it stays distinct.
    if s.len() > crate::spec::MAX_NAME_LEN {
        let hash = crate::data::fetch::md5_hex(name.as_bytes());
        return format!("{}_{}", &s[..crate::spec::MAX_NAME_LEN - 9], &hash[..8]);
    }
    s
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// A setting for a table cell: non-integer numbers to four significant digits (searched
/// learning rates have sixteen), anything else as it is.
fn short(value: &str) -> String {
    match value.parse::<f64>() {
        Ok(x) if x.is_finite() && x.fract() != 0.0 => {
            let text = format!("{x:.3e}");
            let (mantissa, exponent) = text.split_once('e').expect("exponent form");
            let exponent: i32 = exponent.parse().expect("an integer exponent");
            let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
            if (-3..4).contains(&exponent) {
                let decimals = (3 - exponent).max(0) as usize;
                let fixed = format!("{x:.decimals$}");
                if fixed.contains('.') {
                    fixed
                        .trim_end_matches('0')
                        .trim_end_matches('.')
                        .to_string()
                } else {
                    fixed
                }
            } else {
                format!("{mantissa}e{exponent}")
            }
        }
        _ => value.to_string(),
    }
}

/// The config keys whose values differ between the runs.
fn swept_keys<'a>(runs: impl Iterator<Item = &'a Run> + Clone) -> Vec<String> {
    let keys: BTreeSet<&String> = runs.clone().flat_map(|r| r.params.keys()).collect();
    keys.into_iter()
        .filter(|k| {
            let values: BTreeSet<Option<&String>> =
                runs.clone().map(|r| r.params.get(*k)).collect();
            values.len() > 1
        })
        .filter(|k| k.as_str() != "data.dir")
        .cloned()
        .collect()
}

#[derive(Serialize)]
struct LeaderRow {
    rank: usize,
    id: String,
    href: String,
    status: String,
    steps: String,
    swept: Vec<String>,
    metric: String,
    best: bool,
    /// The page comparing it with the best run (none for the best itself).
    compare_href: Option<String>,
}

#[derive(Serialize)]
struct ExperimentView {
    name: String,
    description: String,
    href: String,
    runs: usize,
    statuses: String,
    ranking: &'static str,
    metric: &'static str,
    swept_keys: Vec<String>,
    leaderboard: Vec<LeaderRow>,
}

/// An experiment's runs ranked, best first (unranked runs last, in start order).
fn ranked(experiment: &Experiment, ranking: Ranking) -> Vec<&Run> {
    let mut runs: Vec<&Run> = experiment.runs.iter().collect();
    runs.sort_by(|a, b| match (ranking.value(a), ranking.value(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    runs
}

fn experiment_view(experiment: &Experiment, href_prefix: &str) -> ExperimentView {
    let ranking = Ranking::of(experiment);
    let swept = swept_keys(experiment.runs.iter());
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for run in &experiment.runs {
        *counts.entry(run.status.as_str()).or_default() += 1;
    }
    let runs = ranked(experiment, ranking);
    let best = runs
        .first()
        .filter(|r| ranking.value(r).is_some())
        .map(|r| r.id.clone());
    ExperimentView {
        name: experiment.name.clone(),
        description: experiment.description.clone(),
        href: format!("{href_prefix}index.html"),
        runs: experiment.runs.len(),
        statuses: counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        ranking: ranking.label(),
        metric: ranking.short(),
        leaderboard: runs
            .iter()
            .enumerate()
            .map(|(i, run)| LeaderRow {
                rank: i + 1,
                id: run.id.clone(),
                href: format!("{href_prefix}{}/index.html", slug(&run.id)),
                status: run.status.clone(),
                steps: match run.total_steps {
                    Some(t) => format!("{}/{t}", run.steps_done),
                    None => run.steps_done.to_string(),
                },
                swept: swept
                    .iter()
                    .map(|k| run.params.get(k).map(|v| short(v)).unwrap_or_default())
                    .collect(),
                metric: ranking
                    .value(run)
                    .map(format_value)
                    .unwrap_or_else(|| "-".into()),
                best: best.as_deref() == Some(run.id.as_str()),
                compare_href: best
                    .as_ref()
                    .filter(|b| **b != run.id)
                    .map(|_| format!("{href_prefix}{}", compare::page_name(&run.id))),
            })
            .collect(),
        swept_keys: swept,
    }
}

/// Templates, compiled once; names end in `.html`, which turns escaping on.
fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("index.html", include_str!("templates/index.html")),
        ("experiment.html", include_str!("templates/experiment.html")),
        ("run.html", include_str!("templates/run.html")),
        ("compare.html", include_str!("templates/compare.html")),
    ] {
        env.add_template(name, source)
            .expect("the built-in templates parse");
    }
    env
}

/// Builds a site while keeping track of its files.
struct Site {
    /// Where the site is being built.
    root: PathBuf,
    /// Where it will be once built (links out of the site are relative to this).
    out: PathBuf,
    env: Environment<'static>,
    db: PathBuf,
}

impl Site {
    fn page(&self, rel: &str, template: &str, ctx: Value) -> Result<()> {
        let html = self
            .env
            .get_template(template)?
            .render(ctx)
            .with_context(|| format!("rendering {rel}"))?;
        self.file(rel, html.as_bytes())
    }

    fn file(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Draws `chart` into `rel` (an .svg path); returns `rel` for the page.
    fn plot(&self, rel: &str, chart: &Chart) -> Result<String> {
        let svg = plots::svg(chart).map_err(anyhow::Error::msg)?;
        self.file(rel, svg.as_bytes())?;
        Ok(rel.rsplit('/').next().unwrap_or(rel).to_string())
    }

    /// A file the database names, where it is now (`track::locate`).
    fn locate(&self, logged: &str) -> Option<PathBuf> {
        crate::track::locate(&self.db, Path::new(logged))
    }
}

#[derive(Serialize)]
struct Plot {
    title: String,
    src: String,
}

/// Writes the report of `db` (all experiments, or only `experiment`) into `out`.
pub fn write(db: &Path, out: &Path, experiment: Option<&str>) -> Result<Written> {
    let experiments = data::load(db, experiment, data::Detail::Full)?;
    // A symlinked --out is written where it points, and the link stays.
    let out = &if out.is_symlink() {
        std::fs::canonicalize(out)
            .with_context(|| format!("{}: a link to nowhere", out.display()))?
    } else {
        out.to_path_buf()
    };
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Two reports of one --out at once (two sweeps ending together) take turns: each
    // replaces the site whole, and the second one written is the newer.
    let _lock = crate::fsutil::lock_beside(out, || {
        crate::errln!(
            "waiting for another report to finish writing {}",
            out.display()
        )
    })?;
    refuse_run_dirs_inside(db, out)?;
    let occupied = || -> Result<bool> {
        Ok(out
            .read_dir()
            .with_context(|| format!("{}: not a directory", out.display()))?
            .next()
            .is_some())
    };
    if out.exists() && !out.join(MARKER).exists() && occupied()? {
        bail!(
            "{}: exists and is not a report directory; choose another --out",
            out.display()
        );
    }
    // What writers killed mid-way left beside it (none live: the lock is held).
    if let Some(name) = out.file_name() {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::fsutil::remove_temp_dirs(parent, &format!("{}.", name.to_string_lossy()))?;
    }
    let tmp = crate::fsutil::temp_sibling(out);
    let site = Site {
        root: tmp.clone(),
        out: std::path::absolute(out)?,
        env: templates(),
        db: std::path::absolute(db)?,
    };
    let built = build(&site, &experiments, db);
    if let Err(err) = built {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(err);
    }
    crate::fsutil::replace_dir(&tmp, out)
        .with_context(|| format!("moving the report to {}", out.display()))?;
    Ok(Written {
        index: out.join("index.html"),
        experiments: experiments.len(),
        runs: experiments.iter().map(|e| e.runs.len()).sum(),
    })
}

/// The site replaces `out` whole: refuse when a run directory the database knows lies inside
/// it (or it inside one), whatever the experiment's name or `--results`.
fn refuse_run_dirs_inside(db: &Path, out: &Path) -> Result<()> {
    let out = crate::query::resolve_path(out)?;
    for (id, dir) in crate::query::run_dirs(db)? {
        if dir.starts_with(&out) || out.starts_with(&dir) {
            bail!(
                "{}: holds the directory of run {id} ({}); the report would replace it. Choose \
                 another --out",
                out.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn build(site: &Site, experiments: &[Experiment], db: &Path) -> Result<()> {
    site.file(
        MARKER,
        b"generated by `runner report`; replaced on every run\n",
    )?;
    let views: Vec<ExperimentView> = experiments
        .iter()
        .map(|e| experiment_view(e, &format!("{}/", slug(&e.name))))
        .collect();
    site.page(
        "index.html",
        "index.html",
        minijinja::context! { root => "", db => db.display().to_string(), experiments => Value::from(Serde(&views)) },
    )?;
    for experiment in experiments {
        experiment_page(site, experiment)?;
        for run in &experiment.runs {
            run_page(site, experiment, run)?;
        }
    }
    Ok(())
}

/// Up to this many distinct values, a swept setting gets one evenly spaced, exactly labelled
/// tick per value (as a grid of hyperparameters reads best); more get a numeric axis.
const MAX_CATEGORIES: usize = 8;

/// The most sample grids a run page shows (and the site copies): a long run sampled often
/// would otherwise make a page of thousands of images.
const MAX_GRIDS: usize = 40;

/// At most `at_most` of the indices `0..n`, evenly spaced, the first and the last among them.
fn evenly_spaced(n: usize, at_most: usize) -> Vec<usize> {
    if n <= at_most {
        return (0..n).collect();
    }
    let mut picked: Vec<usize> = (0..at_most)
        .map(|i| (i * (n - 1) + (at_most - 1) / 2) / (at_most - 1))
        .collect();
    picked.dedup();
    picked
}

/// Where each value of a swept setting goes on the x axis: (x of each value, category names
/// for a categorical axis, log scale). Numbers sort numerically, other values as text.
fn x_axis(values: &[&String]) -> (Vec<f64>, Option<Vec<String>>, bool) {
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
    (xs, Some(distinct.into_iter().cloned().collect()), false)
}

fn experiment_page(site: &Site, experiment: &Experiment) -> Result<()> {
    let dir = slug(&experiment.name);
    let view = experiment_view(experiment, "");
    let ranking = Ranking::of(experiment);
    // The view has ranked the runs already.
    let best = view
        .leaderboard
        .iter()
        .find(|r| r.best)
        .map(|r| r.id.clone());
    let mut plot_refs = Vec::new();
    let swept = &view.swept_keys;
    for (i, key) in swept.iter().enumerate() {
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
            let group = group_key
                .map(|g| format!("{g} = {}", run.params.get(g).cloned().unwrap_or_default()))
                .unwrap_or_else(|| "runs".into());
            groups.entry(group).or_default().push((*x, y));
            if best.as_deref() == Some(run.id.as_str()) {
                highlight = Some((*x, y));
            }
        }
        let series: Vec<Series> = groups
            .into_iter()
            .map(|(name, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series { name, points }
            })
            .collect();
        let title = format!("{} vs {key}", ranking.short());
        let src = site.plot(
            &format!("{dir}/sweep-{i}.svg"),
            &Chart {
                title: &title,
                x_label: key,
                y_label: ranking.short(),
                legend: group_key.is_some() && series.len() <= 12,
                series,
                markers: true,
                highlight,
                x_categories: categories,
                log_x,
                crosses: Vec::new(),
            },
        )?;
        plot_refs.push(Plot { title, src });
    }
    if !swept.is_empty() {
        let title = format!("Settings and {} of every run", ranking.short());
        let (axes, lines) = parallel_coordinates(experiment, swept, ranking);
        let svg = plots::parallel_svg(&title, &axes, &lines).map_err(anyhow::Error::msg)?;
        site.file(&format!("{dir}/parallel.svg"), svg.as_bytes())?;
        plot_refs.push(Plot {
            title,
            src: "parallel.svg".into(),
        });
    }
    let mut curve_plots = Vec::new();
    let fid_curves: Vec<(&Run, Vec<(f64, f64)>)> = experiment
        .runs
        .iter()
        .map(|r| {
            let points = r
                .evals
                .iter()
                .filter_map(|(step, m)| Some((*step as f64, *m.get("fid")?)))
                .filter(|p| p.1.is_finite())
                .collect::<Vec<_>>();
            (r, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect();
    if !fid_curves.is_empty() {
        let title = "LeNet-FID over training (x: where a pruned run stopped)".to_string();
        let src = site.plot(
            &format!("{dir}/fid-curves.svg"),
            &Chart {
                title: &title,
                x_label: "step",
                y_label: "FID",
                legend: fid_curves.len() <= 10,
                crosses: fid_curves
                    .iter()
                    .filter(|(r, _)| r.status == "pruned")
                    .filter_map(|(_, points)| points.last().copied())
                    .collect(),
                series: fid_curves
                    .into_iter()
                    .map(|(r, points)| Series {
                        name: r.id.chars().take(8).collect(),
                        points,
                    })
                    .collect(),
                markers: false,
                ..Default::default()
            },
        )?;
        curve_plots.push(Plot { title, src });
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
                markers: false,
                highlight: None,
                x_categories: None,
                log_x: false,
                crosses: Vec::new(),
            },
        )?;
        curve_plots.push(Plot { title, src });
    }
    if let Some(leader) = best
        .as_ref()
        .and_then(|b| experiment.runs.iter().find(|r| r.id == *b))
    {
        for run in experiment.runs.iter().filter(|r| r.id != leader.id) {
            compare::page(site, experiment, leader, run)?;
        }
    }
    site.page(
        &format!("{dir}/index.html"),
        "experiment.html",
        minijinja::context! {
            root => "../",
            experiment => Value::from(Serde(&view)),
            sweep_plots => Value::from(Serde(&plot_refs)),
            curve_plots => Value::from(Serde(&curve_plots)),
            replicates => Value::from(Serde(&replicate_table(&site.db, &experiment.name)?)),
            importance => Value::from(Serde(&importance_table(experiment))),
        },
    )
}

/// What each setting that differs between an experiment's finished runs explains of their
/// best FID (see [`crate::importance`]); nothing without FIDs or with fewer than three runs.
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
    crate::importance::importance(&scored, &swept_keys(finished))
}

/// [`importance_of`] as the experiment page's table: text cells, header first.
fn importance_table(experiment: &Experiment) -> Vec<Vec<String>> {
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
    swept: &[String],
    ranking: Ranking,
) -> (Vec<Axis>, Vec<Polyline>) {
    let runs = &experiment.runs;
    let mut axes = Vec::new();
    let mut columns: Vec<Vec<f64>> = Vec::new();
    for key in swept {
        let missing = String::new();
        let values: Vec<&String> = runs
            .iter()
            .map(|r| r.params.get(key).unwrap_or(&missing))
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
            name: key.clone(),
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

/// A relative link from directory `from` to `to` (both made absolute).
fn relative_link(from: &Path, to: &Path) -> Option<String> {
    let (from, to) = (
        std::path::absolute(from).ok()?,
        std::path::absolute(to).ok()?,
    );
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let ups = from.components().count() - common;
    let rest: Vec<String> = to
        .components()
        .skip(common)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(
        std::iter::repeat_n("..".to_string(), ups)
            .chain(rest)
            .collect::<Vec<_>>()
            .join("/"),
    )
}

#[derive(Serialize)]
struct FileRef {
    step: i64,
    href: Option<String>,
    path: String,
}

fn run_page(site: &Site, experiment: &Experiment, run: &Run) -> Result<()> {
    let dir = format!("{}/{}", slug(&experiment.name), slug(&run.id));
    let losses: Vec<Series> = [("d_loss", "D"), ("g_loss", "G")]
        .iter()
        .filter_map(|(name, label)| {
            Some(Series {
                name: (*label).into(),
                points: run.metrics.get(*name)?.clone(),
            })
        })
        .collect();
    let mut plots = vec![Plot {
        title: "Training Losses".into(),
        src: site.plot(
            &format!("{dir}/losses.svg"),
            &Chart {
                title: "Training Losses",
                x_label: "step",
                y_label: "loss",
                series: losses,
                markers: false,
                highlight: None,
                x_categories: None,
                log_x: false,
                legend: true,
                crosses: Vec::new(),
            },
        )?,
    }];
    let eval_series = |names: &[&str]| -> Vec<Series> {
        names
            .iter()
            .map(|name| Series {
                name: (*name).into(),
                points: run
                    .evals
                    .iter()
                    .filter_map(|(step, m)| Some((*step as f64, *m.get(*name)?)))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    if !run.evals.is_empty() {
        for (file, title, names) in [
            ("fid.svg", "LeNet-FID over training", &["fid"][..]),
            (
                "fidelity.svg",
                "Precision, recall, density, coverage",
                &["precision", "recall", "density", "coverage"][..],
            ),
        ] {
            let src = site.plot(
                &format!("{dir}/{file}"),
                &Chart {
                    title,
                    x_label: "step",
                    y_label: if file == "fid.svg" { "FID" } else { "value" },
                    series: eval_series(names),
                    markers: true,
                    highlight: None,
                    x_categories: None,
                    log_x: false,
                    legend: names.len() > 1,
                    crosses: Vec::new(),
                },
            )?;
            plots.push(Plot {
                title: title.into(),
                src,
            });
        }
    }
    // Beside the FID, the scores only some runs have: the raw G's (with a moving average of
    // G) and the conditional ones.
    let has = |name: &str| run.evals.values().any(|m| m.contains_key(name));
    let eval_columns: Vec<&str> = std::iter::once("fid")
        .chain(
            ["fid_raw", "intra_fid", "class_acc"]
                .into_iter()
                .filter(|c| has(c)),
        )
        .chain(crate::eval::HEADLINE[1..].iter().copied())
        .collect();
    let eval_rows: Vec<Vec<String>> = run
        .evals
        .iter()
        .map(|(step, m)| {
            std::iter::once(step.to_string())
                .chain(
                    eval_columns
                        .iter()
                        .map(|c| m.get(*c).map(|v| format_value(*v)).unwrap_or_default()),
                )
                .collect()
        })
        .collect();
    let mut samples = Vec::new();
    let shown = evenly_spaced(run.samples.len(), MAX_GRIDS);
    for (step, logged) in shown.iter().map(|&i| &run.samples[i]) {
        let href = match site.locate(logged) {
            Some(source) => {
                let name = format!("step-{step:08}.png");
                let bytes = std::fs::read(&source)
                    .with_context(|| format!("reading {}", source.display()))?;
                site.file(&format!("{dir}/{name}"), &bytes)?;
                Some(name)
            }
            None => None,
        };
        samples.push(FileRef {
            step: *step,
            href,
            path: logged.clone(),
        });
    }
    let page_dir = site.out.join(&dir);
    let checkpoints: Vec<FileRef> = run
        .checkpoints
        .iter()
        .map(|(step, logged)| FileRef {
            step: *step,
            href: site
                .locate(logged)
                .and_then(|p| relative_link(&page_dir, &p.join("checkpoint.json"))),
            path: logged.clone(),
        })
        .collect();
    site.page(
        &format!("{dir}/index.html"),
        "run.html",
        minijinja::context! {
            root => "../../",
            experiment => experiment.name.clone(),
            experiment_href => "../index.html",
            run => minijinja::context! {
                id => run.id.clone(),
                status => run.status.clone(),
                steps_done => run.steps_done,
                total_steps => run.total_steps,
                error => run.error.clone(),
                run_dir => run.run_dir.clone(),
                started_at => run.started_at.clone(),
                finished_at => run.finished_at.clone(),
                host => run.host.clone(),
                backend => run.backend.clone(),
            },
            params => Value::from(Serde(&run.params)),
            events => Value::from(Serde(&run.events)),
            plots => Value::from(Serde(&plots)),
            eval_columns => Value::from(Serde(&eval_columns)),
            eval_rows => Value::from(Serde(&eval_rows)),
            final_sample => samples.iter().rev().find_map(|s| s.href.clone()),
            conditional => run.params.get("model.conditional").is_some_and(|c| c != "none"),
            samples => Value::from(Serde(&samples)),
            samples_logged => run.samples.len(),
            checkpoints => Value::from(Serde(&checkpoints)),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_importance_table_ranks_settings_by_their_share_of_finished_runs_fid() {
        let run = |lr: &str, seed: &str, fid: f64, status: &str| Run {
            id: format!("{lr}-{seed}"),
            status: status.into(),
            params: [("train.lr", lr), ("train.seed", seed), ("data.dir", seed)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            evals: BTreeMap::from([(10, BTreeMap::from([("fid".to_string(), fid)]))]),
            ..Default::default()
        };
        let mut experiment = Experiment {
            name: "e".into(),
            description: String::new(),
            runs: vec![
                run("1e-4", "0", 300.0, "finished"),
                run("1e-4", "1", 310.0, "finished"),
                run("1e-3", "0", 100.0, "finished"),
                run("1e-3", "1", 90.0, "finished"),
                // A pruned run's FID is from an earlier step: not compared.
                run("1e-2", "0", 900.0, "pruned"),
            ],
        };
        let table = importance_table(&experiment);
        assert_eq!(table[0][0], "setting");
        let keys: Vec<&str> = table[1..].iter().map(|r| r[0].as_str()).collect();
        assert_eq!(keys, ["train.lr", "train.seed"], "data.dir is no setting");
        assert_eq!(table[1][1], "2", "the pruned run's value is left out");
        assert_eq!(table[1][2], "100%");
        experiment.runs.truncate(2);
        assert!(importance_table(&experiment).is_empty());
    }

    #[test]
    fn long_galleries_show_evenly_spaced_grids_first_and_last_included() {
        assert_eq!(evenly_spaced(3, 40), [0, 1, 2]);
        let picked = evenly_spaced(2001, 40);
        assert_eq!(picked.len(), 40);
        assert_eq!((picked[0], picked[39]), (0, 2000));
        let gaps: Vec<usize> = picked.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (51..=52).contains(g)), "{gaps:?}");
        assert_eq!(evenly_spaced(41, 40).len(), 40);
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn few_swept_numbers_get_one_tick_each_in_numeric_order() {
        let values = strings(&["0.0004", "1e-4", "0.0002", "1e-4"]);
        let refs: Vec<&String> = values.iter().collect();
        let (xs, names, log) = x_axis(&refs);
        assert_eq!(xs, [2.0, 0.0, 1.0, 0.0]);
        assert_eq!(names.unwrap(), ["1e-4", "0.0002", "0.0004"]);
        assert!(!log);
        let many: Vec<String> = (1..=20).map(|i| format!("{}", i as f64 * 1e-4)).collect();
        let refs: Vec<&String> = many.iter().collect();
        let (xs, names, log) = x_axis(&refs);
        assert!(
            names.is_none() && log,
            "20 values over a decade: numeric, log scale"
        );
        assert_eq!(xs[0], 1e-4);
        let text = strings(&["[0.9, 0.999]", "[0.5, 0.999]"]);
        let refs: Vec<&String> = text.iter().collect();
        assert_eq!(x_axis(&refs).1.unwrap(), ["[0.5, 0.999]", "[0.9, 0.999]"]);
    }

    #[test]
    fn table_cells_keep_four_significant_digits() {
        assert_eq!(short("0.006593127651247273"), "0.006593");
        assert_eq!(short("0.00001717"), "1.717e-5");
        assert_eq!(short("0.0002"), "2e-4");
        assert_eq!(short("123.456789"), "123.5");
        assert_eq!(short("1230.4"), "1230");
        assert_eq!(short("3"), "3");
        assert_eq!(short("[0.5,0.999]"), "[0.5,0.999]");
        assert_eq!(short("bce"), "bce");
    }

    #[test]
    fn only_keys_that_differ_are_swept() {
        let run = |lr: &str, dir: &str| Run {
            params: [("train.lr", lr), ("train.seed", "0"), ("data.dir", dir)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            swept_keys([run("1e-4", "a"), run("2e-4", "b")].iter()),
            ["train.lr"]
        );
    }

    #[test]
    fn names_become_safe_path_components_and_links_relative() {
        assert_eq!(slug("dcgan lr/betas"), "dcgan_lr_betas");
        assert_eq!(slug("..").chars().next(), Some('_'));
        let (long, longer) = ("a".repeat(300), "a".repeat(301));
        assert_eq!(slug(&long).len(), crate::spec::MAX_NAME_LEN);
        assert_ne!(slug(&long), slug(&longer));
        assert_eq!(
            relative_link(
                Path::new("/p/results/report/x/run"),
                Path::new("/p/results/x/run/checkpoints/step-1/checkpoint.json")
            )
            .unwrap(),
            "../../../x/run/checkpoints/step-1/checkpoint.json"
        );
    }
}
