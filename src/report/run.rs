//! A run's page: its config, losses, evaluations, events, sample grids (copied into the
//! site) and checkpoints (linked where they are).

use std::path::Path;

use anyhow::Result;
use minijinja::Value;
use minijinja::value::Serde;
use serde::Serialize;

use super::data::{Experiment, Run};
use super::plots::{Chart, Series};
use super::{Plot, Site, format_value, slug, timelapse};
use crate::fsutil::read_regular_file;

/// The most sample grids a run page shows (and the site copies): a long run sampled often
/// would otherwise make a page of thousands of images.
const MAX_GRIDS: usize = 40;

/// The largest sample grid (or last report's animation) a page takes: far beyond any grid
/// the runner writes (a 16x16 grid of 32-pixel digits is 0.3 MB).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// The file name of a run's animated grids in its folder of the site.
pub(super) const TIMELAPSE: &str = "training.gif";

/// At most `at_most` of the indices `0..n`, evenly spaced, the first and the last among them.
pub(super) fn evenly_spaced(n: usize, at_most: usize) -> Vec<usize> {
    if n <= at_most {
        return (0..n).collect();
    }
    let mut picked: Vec<usize> = (0..at_most)
        .map(|i| (i * (n - 1) + (at_most - 1) / 2) / (at_most - 1))
        .collect();
    picked.dedup();
    picked
}

/// A relative link from directory `from` to `to` (both made absolute).
pub(super) fn relative_link(from: &Path, to: &Path) -> Option<String> {
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

/// Writes a run's page; returns its last sample grid that the site holds (its step, and its
/// file name in the run's folder), which the experiment's page shows too.
pub(super) fn run_page(
    site: &Site,
    experiment: &Experiment,
    run: &Run,
) -> Result<Option<(i64, String)>> {
    let dir = format!("{}/{}", slug(&experiment.name), slug(&run.id));
    let plots = plots(site, &dir, run)?;
    let evaluations = Evaluations::of(run);
    let (samples, timelapse) = samples(site, &dir, run)?;
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
    // The lowest-FID state (`generate --best`), kept apart from the periodic checkpoints.
    let best = site.locate(&run.run_dir).and_then(|dir| {
        let meta = crate::train::checkpoint::best_meta(&dir)?;
        let best = crate::train::checkpoint::best_dir(&dir);
        Some(minijinja::context! {
            step => meta.step,
            fid => meta.fid.map(|fid| format!("{fid:.1}")),
            href => relative_link(&page_dir, &best.join("checkpoint.json")),
            path => format!("{}/best", run.run_dir),
        })
    });
    let final_sample = (samples.iter().rev()).find_map(|s| Some((s.step, s.href.clone()?)));
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
                kernels => run.kernels.clone(),
                version => run.version.clone(),
                runtime => run.runtime.map(crate::query::clock),
                left => run.time_left.map(crate::query::clock),
                tags => run.tags.clone(),
                note => run.note.clone(),
            },
            params => Value::from(Serde(&run.params)),
            events => Value::from(Serde(&run.events)),
            plots => Value::from(Serde(&plots)),
            timed => evaluations.timed,
            eval_columns => Value::from(Serde(&evaluations.columns)),
            eval_rows => Value::from(Serde(&evaluations.rows)),
            final_sample => final_sample.as_ref().map(|(step, href)| minijinja::context! { step, href }),
            conditional => run.params.get("model.conditional").is_some_and(|c| c != "none"),
            samples => Value::from(Serde(&samples)),
            timelapse => timelapse,
            samples_logged => run.samples.len(),
            checkpoints => Value::from(Serde(&checkpoints)),
            best => best,
        },
    )?;
    Ok(final_sample)
}

/// The run's plots, written into its folder `dir` of the site: its losses, and with
/// evaluations its LeNet-FID and fidelity scores over training.
fn plots(site: &Site, dir: &str, run: &Run) -> Result<Vec<Plot>> {
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
                legend: true,
                smooth: true,
                ..Default::default()
            },
        )?,
    }];
    if run.evals.is_empty() {
        return Ok(plots);
    }
    let has_raw = run.evals.values().any(|m| m.contains_key("fid_raw"));
    let eval_series = |names: &[&str]| -> Vec<Series> {
        names
            .iter()
            .map(|name| Series {
                // Beside `fid_raw`, `fid` is the average's: the key says whose is which.
                name: match *name {
                    "fid" if has_raw => "fid (G's average)".into(),
                    "fid_raw" => "fid_raw (G)".into(),
                    other => other.into(),
                },
                points: run
                    .evals
                    .iter()
                    .filter_map(|(step, m)| Some((*step as f64, *m.get(*name)?)))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    for (file, title, names) in [
        // With a moving average of G, its FID beside the raw G's.
        (
            "fid.svg",
            "LeNet-FID over training",
            &["fid", "fid_raw"][..],
        ),
        (
            "fidelity.svg",
            "Precision, recall, density, coverage",
            &["precision", "recall", "density", "coverage"][..],
        ),
    ] {
        let series = eval_series(names);
        let src = site.plot(
            &format!("{dir}/{file}"),
            &Chart {
                title,
                x_label: "step",
                y_label: if file == "fid.svg" { "FID" } else { "value" },
                legend: series.len() > 1,
                series,
                markers: true,
                log_y_when_wide: file == "fid.svg",
                ..Default::default()
            },
        )?;
        plots.push(Plot {
            title: title.into(),
            src,
        });
    }
    Ok(plots)
}

/// The run's evaluations as a table: a row per evaluation, its step, the training time it was
/// reached at (`timed`: runs of older releases have none) and its scores.
struct Evaluations {
    timed: bool,
    columns: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Evaluations {
    fn of(run: &Run) -> Evaluations {
        let has = |name: &str| run.evals.values().any(|m| m.contains_key(name));
        // Beside the FID, the scores only some runs have: the raw G's (with a moving average
        // of G) and the conditional ones.
        let columns: Vec<&str> = std::iter::once("fid")
            .chain(
                ["fid_raw", "intra_fid", "class_acc"]
                    .into_iter()
                    .filter(|c| has(c)),
            )
            .chain(crate::eval::HEADLINE[1..].iter().copied())
            .collect();
        let seconds = &run.eval_seconds;
        let timed = !seconds.is_empty();
        let rows = run
            .evals
            .iter()
            .map(|(step, m)| {
                std::iter::once(step.to_string())
                    .chain(timed.then(|| {
                        (seconds.get(step).copied())
                            .map(crate::query::clock)
                            .unwrap_or_default()
                    }))
                    .chain(
                        columns
                            .iter()
                            .map(|c| m.get(*c).map(|v| format_value(*v)).unwrap_or_default()),
                    )
                    .collect()
            })
            .collect();
        Evaluations {
            timed,
            columns,
            rows,
        }
    }
}

/// Up to [`MAX_GRIDS`] of the run's sample grids, evenly spaced, copied into its folder `dir`
/// of the site, and the same grids animated (none when they cannot be: a damaged grid, the
/// strip then shows what there is).
fn samples(site: &Site, dir: &str, run: &Run) -> Result<(Vec<FileRef>, Option<minijinja::Value>)> {
    let mut samples = Vec::new();
    let mut frames = Vec::new();
    let shown = evenly_spaced(run.samples.len(), MAX_GRIDS);
    for (step, logged) in shown.iter().map(|&i| &run.samples[i]) {
        // A grid that is gone or unreadable (its run deleted meanwhile by `runner rm`) is
        // listed without its image rather than failing the whole report.
        let bytes = site
            .locate(logged)
            .and_then(|source| read_regular_file(&source, MAX_FILE_BYTES).ok());
        let href = match bytes {
            Some(bytes) => {
                let name = format!("step-{step:08}.png");
                site.file(&format!("{dir}/{name}"), &bytes)?;
                frames.push((*step, bytes));
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
    let [(first, _), .., (last, _)] = frames.as_slice() else {
        return Ok((samples, None));
    };
    let grids: Vec<&[u8]> = frames.iter().map(|(_, png)| png.as_slice()).collect();
    let last_report = read_regular_file(&site.out.join(dir).join(TIMELAPSE), MAX_FILE_BYTES)
        .ok()
        .filter(|gif| timelapse::animates(gif, &grids));
    let Ok(gif) = last_report.map_or_else(|| timelapse::encode(&grids), Ok) else {
        return Ok((samples, None));
    };
    site.file(&format!("{dir}/{TIMELAPSE}"), &gif)?;
    let timelapse = minijinja::context! {
        href => TIMELAPSE,
        frames => frames.len(),
        first => first,
        last => last,
    };
    Ok((samples, Some(timelapse)))
}
