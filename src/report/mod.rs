//! `runner report`: a static HTML site built from the tracking database alone.
//!
//! ```text
//! <out>/index.html                   every experiment, its status counts and leaderboard
//! <out>/<experiment>/index.html      metric vs each swept key, parallel coordinates, history,
//!                                    FID and loss curves of all runs, leaderboard, replicates
//! <out>/<experiment>/compare-<run>.html  a run beside the experiment's best
//! <out>/<experiment>/<run>/index.html  config, losses, evaluations, events, samples, checkpoints
//! ```
//!
//! Plots are SVG files (plotters), pages come from minijinja templates with HTML escaping on,
//! sample grids are copied in: the site has no external resources and works from `file://`.
//! It is built in a temporary directory and swapped in whole, so a reader never sees half a
//! report and pages of deleted runs do not linger.
//!
//! Here: the site (writing, the index, what pages share); `data` reads the database,
//! `experiment` and `run` build those pages, `compare` a run beside the best, `plots` the SVGs,
//! `live` keeps the report current while a sweep runs.

mod compare;
mod data;
mod experiment;
mod live;
mod plots;
mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use minijinja::value::Serde;
use minijinja::{Environment, Value};
use serde::Serialize;

use data::{Experiment, Run};
use experiment::experiment_page;
pub use experiment::explain;
pub use live::{EVERY, Live, live};
use plots::Chart;
use run::run_page;

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

/// A metric for a table cell: four significant digits from 1 up (so a column's values line
/// up: 8.764 beside 10.01), four decimals below (precision and recall).
fn format_value(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.1}"),
        a if a >= 10.0 => format!("{v:.2}"),
        a if a >= 1.0 => format!("{v:.3}"),
        _ => format!("{v:.4}"),
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
    tags: Vec<String>,
    note: Option<String>,
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
                tags: run.tags.clone(),
                note: run.note.clone(),
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
    write_site(db, out, experiment, None)
}

/// [`write`], with pages that say they are rewritten every `reload_every` (a sweep runs) and
/// reload themselves as often.
fn write_site(
    db: &Path,
    out: &Path,
    experiment: Option<&str>,
    reload_every: Option<std::time::Duration>,
) -> Result<Written> {
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
    let mut env = templates();
    if let Some(every) = reload_every {
        env.add_global("reload_every", every.as_secs().max(1));
    }
    let site = Site {
        root: tmp.clone(),
        out: std::path::absolute(out)?,
        env,
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
    let out = crate::fsutil::resolve_path(out)?;
    for (id, dir) in crate::query::run_dirs(db)? {
        let (holds, inside) = (dir.starts_with(&out), out.starts_with(&dir));
        if holds || inside {
            let relation = if holds { "holds" } else { "lies inside" };
            bail!(
                "{}: {relation} the directory of run {id} ({}); the report would replace it. \
                 Choose another --out",
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

#[cfg(test)]
mod tests {
    use super::experiment::{importance_table, x_axis};
    use super::run::{evenly_spaced, relative_link};
    use super::*;

    #[test]
    fn metrics_show_four_significant_digits_or_more() {
        let shown: Vec<String> = [1291.64, 54.024, -12.5, 8.76401, 0.00803, 0.0]
            .into_iter()
            .map(format_value)
            .collect();
        assert_eq!(
            shown,
            ["1291.6", "54.02", "-12.50", "8.764", "0.0080", "0.0000"]
        );
    }

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
