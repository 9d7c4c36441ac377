//! The compare page: a run beside its experiment's best, reached from the leaderboard.
//! Settings that differ, both runs' FID and loss curves overlaid, their last sample grids and
//! their animations side by side, and their events.

use anyhow::Result;
use minijinja::Value;
use minijinja::value::Serde;

use super::data::{Experiment, Run};
use super::plots::{Chart, Series};
use super::{Plot, Site, format_value, slug};

/// The file name of the page comparing `run` with the best run, in the experiment's directory.
pub fn page_name(run: &str) -> String {
    format!("compare-{}.html", slug(run))
}

/// The page comparing `run` with `leader`.
pub fn page(site: &Site, experiment: &Experiment, leader: &Run, run: &Run) -> Result<()> {
    let dir = slug(&experiment.name);
    let name = page_name(&run.id);
    let label = |r: &Run, best: bool| {
        let short: String = r.id.chars().take(8).collect();
        if best {
            format!("{short} (best)")
        } else {
            short
        }
    };
    let runs = [(leader, label(leader, true)), (run, label(run, false))];
    let plots = plots(
        site,
        &format!("{dir}/{}", name.trim_end_matches(".html")),
        &runs,
    )?;
    let sides: Vec<_> = runs
        .iter()
        .map(|(r, label)| side(site, &dir, r, label))
        .collect();
    site.page(
        &format!("{dir}/{name}"),
        "compare.html",
        minijinja::context! {
            root => "../",
            experiment => experiment.name.clone(),
            labels => vec![runs[0].1.clone(), runs[1].1.clone()],
            rows => Value::from(Serde(&rows(leader, run))),
            plots => Value::from(Serde(&plots)),
            sides => sides,
        },
    )
}

/// Both runs' FID curves (when either has one) and losses overlaid, as `{stem}-*.svg`.
fn plots(site: &Site, stem: &str, runs: &[(&Run, String)]) -> Result<Vec<Plot>> {
    let mut plots = Vec::new();
    let fid_series: Vec<Series> = runs
        .iter()
        .map(|(r, l)| Series {
            name: l.clone(),
            points: r.fid_points(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !fid_series.is_empty() {
        let src = site.plot(
            &format!("{stem}-fid.svg"),
            &Chart {
                title: "LeNet-FID over training",
                x_label: "step",
                y_label: "FID",
                series: fid_series,
                markers: true,
                legend: true,
                log_y_when_wide: true,
                ..Default::default()
            },
        )?;
        plots.push(Plot {
            title: "LeNet-FID over training".into(),
            src,
        });
    }
    let loss_series = runs
        .iter()
        .flat_map(|(r, l)| {
            [("d_loss", "D"), ("g_loss", "G")]
                .into_iter()
                .filter_map(move |(metric, which)| {
                    Some(Series {
                        name: format!("{which} {l}"),
                        points: r.metrics.get(metric)?.clone(),
                    })
                })
        })
        .collect();
    let src = site.plot(
        &format!("{stem}-losses.svg"),
        &Chart {
            title: "Training losses",
            x_label: "step",
            y_label: "loss",
            series: loss_series,
            legend: true,
            smooth: true,
            ..Default::default()
        },
    )?;
    plots.push(Plot {
        title: "Training losses".into(),
        src,
    });
    Ok(plots)
}

/// The table's rows, `[what, leader's, run's]`: the settings that differ, the runner and the
/// arithmetic when they differ, then the outcomes.
fn rows(leader: &Run, run: &Run) -> Vec<[String; 3]> {
    let keys: std::collections::BTreeSet<&String> =
        leader.params.keys().chain(run.params.keys()).collect();
    let mut rows: Vec<[String; 3]> = keys
        .into_iter()
        .filter(|k| leader.params.get(*k) != run.params.get(*k) && k.as_str() != "data.dir")
        .map(|k| {
            let get = |r: &Run| r.params.get(k).cloned().unwrap_or_else(|| "-".into());
            [k.clone(), get(leader), get(run)]
        })
        .collect();
    // Different code, or arithmetic that rounds otherwise, explains a difference as a setting
    // does.
    let arithmetic =
        |r: &Run| (r.backend.as_deref()).map(|b| crate::track::arithmetic(b, r.kernels.as_deref()));
    for (name, a, b) in [
        ("runner", leader.version.clone(), run.version.clone()),
        ("backend", arithmetic(leader), arithmetic(run)),
    ] {
        if a != b {
            let shown = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            rows.push([name.into(), shown(a), shown(b)]);
        }
    }
    let outcome = |r: &Run| {
        [
            r.status.clone(),
            r.steps_done.to_string(),
            r.best_fid().map(format_value).unwrap_or_else(|| "-".into()),
            r.fid_points()
                .last()
                .map(|p| format_value(p.1))
                .unwrap_or_else(|| "-".into()),
            r.runtime
                .map(crate::query::clock)
                .unwrap_or_else(|| "-".into()),
        ]
    };
    let (a, b) = (outcome(leader), outcome(run));
    for (i, what) in [
        "status",
        "steps done",
        "best FID",
        "last FID",
        "training time",
    ]
    .iter()
    .enumerate()
    {
        rows.push([what.to_string(), a[i].clone(), b[i].clone()]);
    }
    rows
}

/// One run's column below the table: its last sample grid, animation, events, tags and note.
fn side(site: &Site, dir: &str, run: &Run, label: &str) -> Value {
    let grid = run.samples.iter().rev().find_map(|(step, logged)| {
        site.locate(logged)
            .map(|_| (format!("{}/step-{step:08}.png", slug(&run.id)), *step))
    });
    minijinja::context! {
        label => label.to_string(),
        href => format!("{}/index.html", slug(&run.id)),
        grid => grid.as_ref().map(|g| g.0.clone()),
        grid_step => grid.as_ref().map(|g| g.1),
        // Written by the run's page, built before this one.
        timelapse => site
            .root
            .join(format!("{dir}/{}/{}", slug(&run.id), super::run::TIMELAPSE))
            .is_file()
            .then(|| format!("{}/{}", slug(&run.id), super::run::TIMELAPSE)),
        events => Value::from(Serde(&run.events)),
        tags => run.tags.clone(),
        note => run.note.clone(),
    }
}
