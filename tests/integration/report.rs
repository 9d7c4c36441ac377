//! `runner report`: the site a tiny real sweep produces, checked as files and in Chromium.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use common::{fixture_dir, runner};
use predicates::prelude::*;

const UNSAFE: &str = "<script>alert('x')</script>";

/// A two-run sweep (lr 1e-4 and 2e-3), evaluated every 6 steps or not at all.
fn sweep(dir: &Path, evaluate: bool) {
    sweep_with(dir, evaluate, &[]);
}

/// The sweep of [`sweep`] with `sets` (`--set` values) applied.
fn sweep_with(dir: &Path, evaluate: bool, sets: &[&str]) {
    let model = common::tiny_gan_model_toml();
    let spec = dir.join("tiny.toml");
    std::fs::write(
        &spec,
        format!(
            r#"name = "tiny"
description = "tiny sweep {UNSAFE}"
{model}[train]
steps = 12
batch_size = 16
[log]
sample_every = 4
checkpoint_every = 6
metrics_every = 2
eval_samples = {}
eval_every = 6
[sweep]
"train.lr" = [1e-4, 2e-3]
"#,
            if evaluate { 100 } else { 0 }
        ),
    )
    .unwrap();
    runner()
        .current_dir(dir)
        .arg("sweep")
        .arg(&spec)
        .arg("--data-dir")
        .arg(fixture_dir())
        .args(sets.iter().flat_map(|set| ["--set", set]))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "report: results/report/index.html",
        ));
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run_pages(report: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(report.join("tiny"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.join("index.html"))
        .collect()
}

#[test]
fn seeds_are_replicates_not_a_setting_to_plot() {
    let dir = tempfile::tempdir().unwrap();
    let page = || read(dir.path().join("results/report/tiny/index.html"));
    sweep_with(
        dir.path(),
        true,
        &[
            "sweep.train.lr=[1e-4]",
            "sweep.train.seed=[0, 1]",
            "train.g_ema=0.9",
        ],
    );
    // With a moving average of G, the run pages plot its FID beside the raw G's.
    for run in run_pages(&dir.path().join("results/report")) {
        let fid = read(run.with_file_name("fid.svg"));
        assert!(
            fid.contains("fid_raw (G)") && fid.contains("average)"),
            "{}: the key says which line is the average's",
            run.display()
        );
    }
    let replicates = page();
    assert!(
        replicates.contains("Only the seed was swept"),
        "{replicates}"
    );
    for plot in ["sweep-0.svg", "parallel.svg", "history.svg"] {
        assert!(!replicates.contains(plot), "{plot}");
    }
    assert!(replicates.contains("fid-curves.svg"));
    // Training time: the FID against it, a column of the leaderboards, each run's total and
    // the time each evaluation was reached at.
    assert!(replicates.contains("fid-time.svg") && replicates.contains("<th>time</th>"));
    let against_time = read(dir.path().join("results/report/tiny/fid-time.svg"));
    assert!(
        against_time.contains("training time (seconds)"),
        "{against_time}"
    );
    let index = read(dir.path().join("results/report/index.html"));
    assert!(index.contains("<th>time</th><th>"), "{index}");
    assert!(index.contains("Training time 0:00:0") && index.contains(" in all."));
    let compare = read(common::compare_page(
        &dir.path().join("results/report/tiny"),
    ));
    assert!(compare.contains("<code>training time</code></td><td>0:00:0"));
    // Both runs' animations side by side, the files their pages wrote.
    let animations: Vec<&str> = compare
        .split("id=\"timelapses\"")
        .nth(1)
        .expect("the runs' animations")
        .split("<img src=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(animations.len(), 2, "{compare}");
    for gif in animations {
        let gif = gif.replace("&#x2f;", "/");
        assert!(gif.ends_with("/training.gif"), "{gif}");
        assert!(dir.path().join("results/report/tiny").join(&gif).is_file());
    }
    for run in run_pages(&dir.path().join("results/report")) {
        let page = read(run);
        assert!(page.contains("Training time 0:00:0"), "{page}");
        assert!(page.contains("<tr><th>step</th><th>time</th>"), "{page}");
    }
    sweep_with(
        dir.path(),
        true,
        &["sweep.train.seed=[0, 1]", "train.g_ema=0.9"],
    );
    let settings = page();
    assert!(settings.contains("FID vs train.lr") && !settings.contains("vs train.seed"));
    assert!(settings.contains("parallel.svg") && settings.contains("history.svg"));
    let parallel = read(dir.path().join("results/report/tiny/parallel.svg"));
    assert!(!parallel.contains("train.seed"));
    // One line per seed through its two learning rates (a grid's slice), and the legend's two
    // strokes, in the series' colours (the axes and the grid are drawn thinner).
    let by_lr = (0..3)
        .map(|i| {
            read(
                dir.path()
                    .join(format!("results/report/tiny/sweep-{i}.svg")),
            )
        })
        .find(|svg| svg.contains("FID vs train.lr"))
        .unwrap();
    let series_lines = by_lr
        .lines()
        .filter(|l| l.starts_with("<polyline") && l.contains("stroke-width=\"2\""))
        .count();
    assert_eq!(series_lines, 4, "{by_lr}");
}

#[test]
fn an_empty_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.sqlite");
    drop(ganrunner::track::open(&db).unwrap());
    runner()
        .current_dir(dir.path())
        .args(["report", "--db", "runs.sqlite", "--out", "site"])
        .assert()
        .success()
        .stdout(predicate::str::contains("0 experiments"));
    assert!(read(dir.path().join("site/index.html")).contains("no experiments yet"));
    // A directory that is not a report is never overwritten.
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    std::fs::write(dir.path().join("mine/notes.txt"), "keep").unwrap();
    runner()
        .current_dir(dir.path())
        .args(["report", "--db", "runs.sqlite", "--out", "mine"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a report directory"));
    assert_eq!(read(dir.path().join("mine/notes.txt")), "keep");
    // Nor is a file the last report did not write, saved inside it (the site is replaced
    // whole); once it is moved out, the report is written again.
    let report = || {
        runner()
            .current_dir(dir.path())
            .args(["report", "--db", "runs.sqlite", "--out", "site"])
            .assert()
    };
    for foreign in ["site/notes.txt", "site/deep/er/notes.txt"] {
        let foreign = dir.path().join(foreign);
        std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
        std::fs::write(&foreign, "keep").unwrap();
        report().failure().stderr(predicate::str::contains(format!(
            "{}: not written by `runner report`",
            Path::new("site")
                .join(foreign.strip_prefix(dir.path().join("site")).unwrap())
                .display()
        )));
        assert_eq!(read(foreign.clone()), "keep");
        std::fs::remove_file(&foreign).unwrap();
        report().success();
    }
    // A marker from before the list of files vouches for what reports write, pages, plots
    // and grids, and for nothing else.
    let old_marker = || {
        std::fs::write(
            dir.path().join("site/.ganrunner-report"),
            "generated by `runner report`; replaced on every run\n",
        )
        .unwrap()
    };
    std::fs::write(dir.path().join("site/notes.txt"), "old").unwrap();
    old_marker();
    report()
        .failure()
        .stderr(predicate::str::contains("notes.txt: not written by"));
    assert_eq!(read(dir.path().join("site/notes.txt")), "old");
    std::fs::remove_file(dir.path().join("site/notes.txt")).unwrap();
    std::fs::write(dir.path().join("site/stale.html"), "old page").unwrap();
    old_marker();
    report().success();
    assert!(!dir.path().join("site/stale.html").exists());
    runner()
        .current_dir(dir.path())
        .args(["report", "--db", "missing.sqlite"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("missing.sqlite"));
}

#[test]
fn runs_without_evaluations_get_pages_ranked_by_loss_and_strings_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    sweep(dir.path(), false);
    let report = dir.path().join("results/report");
    let index = read(report.join("index.html"));
    assert!(index.contains("&lt;script&gt;"), "escaped description");
    assert!(!index.contains(UNSAFE));
    assert!(index.contains("final G loss"));
    assert!(index.contains("train.lr"), "swept values are columns");
    let pages = run_pages(&report);
    assert_eq!(pages.len(), 2);
    for page in pages {
        let html = read(page.clone());
        assert!(html.contains("id=\"no-evals\""), "{}", page.display());
        assert!(html.contains("Training Losses"));
        assert!(page.with_file_name("losses.svg").is_file());
        assert!(page.with_file_name("step-00000012.png").is_file());
    }
    // Regenerating replaces the site whole: a page the last report wrote (listed in its
    // marker) and this one does not goes.
    std::fs::write(report.join("stale.html"), "old").unwrap();
    let mut marker = std::fs::OpenOptions::new()
        .append(true)
        .open(report.join(".ganrunner-report"))
        .unwrap();
    writeln!(marker, "stale.html").unwrap();
    runner()
        .current_dir(dir.path())
        .args(["report", "--experiment", "tiny"])
        .assert()
        .success();
    assert!(!report.join("stale.html").exists());
    // A sample grid that cannot be read (gone, or here a directory) is listed as missing; the
    // report is still written (it failed whole on one unreadable file).
    let run_dir = std::fs::read_dir(dir.path().join("results/tiny"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("samples").is_dir())
        .unwrap();
    let grid = run_dir.join("samples/step-00000012.png");
    std::fs::remove_file(&grid).unwrap();
    std::fs::create_dir(&grid).unwrap();
    runner()
        .current_dir(dir.path())
        .arg("report")
        .assert()
        .success();
    let id = run_dir.file_name().unwrap().to_string_lossy().into_owned();
    let page = read(report.join("tiny").join(&id).join("index.html"));
    assert!(page.contains("missing: "), "{page}");
    // So is one that is a link to a device that never ends, or a pipe that no one writes
    // (reading either never finished).
    std::fs::remove_dir(&grid).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &grid).unwrap();
    let fifo = run_dir.join("samples/step-00000004.png");
    std::fs::remove_file(&fifo).unwrap();
    common::make_fifo(&fifo);
    runner()
        .current_dir(dir.path())
        .arg("report")
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .success();
    let page = read(report.join("tiny").join(&id).join("index.html"));
    assert_eq!(page.matches("missing: ").count(), 2, "{page}");
    // Reports written at once (two sweeps ending together) take turns: none fails, and what
    // killed writers left beside the site goes.
    let results = dir.path().join("results");
    for leftover in [".report.tmp-999999", ".report.old.tmp-999999"] {
        std::fs::create_dir_all(results.join(leftover).join("tiny")).unwrap();
    }
    let writers: Vec<_> = (0..4)
        .map(|_| {
            Process::new(assert_cmd::cargo::cargo_bin("runner"))
                .current_dir(dir.path())
                .arg("report")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for writer in writers {
        let output = writer.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
    }
    let mut left: Vec<String> = std::fs::read_dir(&results)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".report"))
        .collect();
    left.sort();
    assert_eq!(left, [".report.lock"]);
    assert_eq!(run_pages(&report).len(), 2);
    runner()
        .current_dir(dir.path())
        .args(["report", "--experiment", "nope"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no experiment `nope`"));
}

/// Serves `root` over HTTP on a free localhost port until the process ends; returns the port.
fn serve(root: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = String::new();
            if BufReader::new(&stream).read_line(&mut request).is_err() {
                continue;
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let path = root.join(path.trim_start_matches('/').split('?').next().unwrap_or(""));
            let (status, body) = match std::fs::read(&path) {
                Ok(body) if path.is_file() => ("200 OK", body),
                _ => ("404 Not Found", b"not found".to_vec()),
            };
            let kind = match path.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            let header = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(header.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    port
}

fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    Process::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect(
            "Debian's chromium is installed (`.ci/run` installs it; `apt-get install chromium`)",
        )
}

#[test]
fn the_report_loads_in_chromium_without_broken_images_missing_pages_or_errors() {
    let dir = tempfile::tempdir().unwrap();
    sweep(dir.path(), true);
    let results = dir.path().join("results");
    let index = read(results.join("report/index.html"));
    assert!(
        index.contains("LeNet-FID"),
        "evaluated runs are ranked by FID"
    );
    assert!(index.contains("class=\"best\""));
    let experiment = read(results.join("report/tiny/index.html"));
    for part in ["parallel.svg", "history.svg", "fid-curves.svg", "vs best"] {
        assert!(
            experiment.contains(part),
            "the experiment page shows {part}"
        );
    }
    // The runs' last grids side by side, the best first, each a file of the site.
    let gallery = experiment
        .split("class=\"samples gallery\"")
        .nth(1)
        .expect("a gallery of samples");
    assert!(
        gallery
            .trim_start()
            .starts_with(">\n<figure class=\"best\">")
    );
    let grids: Vec<String> = gallery
        .split("<img src=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().replace("&#x2f;", "/"))
        .collect();
    assert_eq!(grids.len(), 2, "{gallery}");
    for grid in grids {
        assert!(grid.ends_with("/step-00000012.png"), "{grid}");
        assert!(results.join("report/tiny").join(&grid).is_file(), "{grid}");
    }
    let parallel = read(results.join("report/tiny/parallel.svg"));
    assert!(parallel.contains("train.lr") && parallel.contains("FID"));
    for page in run_pages(&results.join("report")) {
        let html = read(page.clone());
        assert!(html.contains("fid.svg") && !html.contains("no-evals"));
        assert!(html.contains("checkpoint.json"), "checkpoint links");
        assert!(html.contains("runner export "), "how to use the run");
        let id = page
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            html.contains(&format!("runner train {id} --steps 24")),
            "how to train it longer"
        );
        // Its best state (evaluated every 6 steps: it has one), linked, and how to score it.
        let best = html
            .split("<li id=\"best\">best state, step ")
            .nth(1)
            .unwrap_or_else(|| panic!("no best state in {}", page.display()));
        assert!(
            best.contains("(LeNet-FID ") && best.contains("best&#x2f;checkpoint.json"),
            "{best}"
        );
        assert!(html.contains(&format!("runner eval {id} --best --samples 50000")));
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/check.html"),
        results.join("check.html"),
    )
    .unwrap();
    let port = serve(results.clone());
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(
        &[
            "--virtual-time-budget=60000",
            "--dump-dom",
            &format!("http://127.0.0.1:{port}/check.html"),
        ],
        profile.path(),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    let result = dom
        .lines()
        .find_map(|l| l.split("RESULT ").nth(1))
        .unwrap_or_else(|| panic!("no result from the check page:\n{dom}\n{log}"));
    let result: serde_json::Value =
        serde_json::from_str(result.trim_end_matches("</pre>")).unwrap();
    assert_eq!(result["problems"], serde_json::json!([]), "{result}");
    // index, the experiment page, two run pages, the second run beside the best.
    assert_eq!(result["pages"], 5, "{result}");
    assert!(result["images"].as_u64().unwrap() > 10, "{result}");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error")))
        .collect();
    assert!(errors.is_empty(), "JavaScript errors: {errors:#?}");

    // A screenshot of the index and of the experiment page, opened from file://.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let run_page = run_pages(&results.join("report"))[0].clone();
    let run_page = run_page
        .strip_prefix(&results)
        .unwrap()
        .display()
        .to_string();
    for (name, page) in [
        ("index", "report/index.html"),
        ("experiment", "report/tiny/index.html"),
        ("run", run_page.as_str()),
    ] {
        let png = shots.join(format!("{name}.png"));
        let out = chromium(
            &[
                "--window-size=1280,1600",
                &format!("--screenshot={}", png.display()),
                &format!("file://{}", results.join(page).display()),
            ],
            profile.path(),
        );
        assert!(
            png.is_file(),
            "no screenshot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("screenshot: {}", png.display());
    }
}

#[test]
fn a_run_sampled_often_shows_forty_evenly_spaced_grids_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_gan_model_toml();
    let spec = dir.path().join("often.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"often\"\n{model}[train]\nsteps = 90\nbatch_size = 16\n[log]\n\
             sample_every = 2\ncheckpoint_every = 90\neval_samples = 0\n"
        ),
    )
    .unwrap();
    runner()
        .current_dir(dir.path())
        .arg("sweep")
        .arg(&spec)
        .arg("--data-dir")
        .arg(fixture_dir())
        .assert()
        .success();
    let page = std::fs::read_dir(dir.path().join("results/report/often"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let html = read(page.join("index.html"));
    assert_eq!(html.matches("alt=\"samples at step").count(), 40);
    assert!(
        html.contains("40 of the 46 grids logged, evenly spaced"),
        "{html}"
    );
    let copied = std::fs::read_dir(&page)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(copied, 40);
    assert!(page.join("step-00000000.png").is_file() && page.join("step-00000090.png").is_file());
    // The same grids animated, in step order: a frame per grid, each its exact pixels.
    assert!(
        html.contains("40 grids, steps 0 to 90") && html.contains("src=\"training.gif\""),
        "{html}"
    );
    let frames = gif_frames(&page.join("training.gif"));
    assert_eq!(frames.len(), 40);
    for (frame, step) in [(&frames[0], 0), (&frames[39], 90)] {
        let grid = image::open(page.join(format!("step-{step:08}.png"))).unwrap();
        assert_eq!(frame, grid.into_luma8().as_raw(), "step {step}");
    }
    assert_ne!(frames[0], frames[39], "the digits change over training");
    // The next report takes this GIF while the grids stay the same, and animates a grid
    // that changed (here the last one replaced by the first) rather than the last report's.
    runner()
        .current_dir(dir.path())
        .arg("report")
        .assert()
        .success();
    assert_eq!(gif_frames(&page.join("training.gif")), frames);
    let samples = std::fs::read_dir(dir.path().join("results/often"))
        .unwrap()
        .map(|e| e.unwrap().path().join("samples"))
        .find(|p| p.is_dir())
        .unwrap();
    std::fs::copy(
        samples.join("step-00000000.png"),
        samples.join("step-00000090.png"),
    )
    .unwrap();
    runner()
        .current_dir(dir.path())
        .arg("report")
        .assert()
        .success();
    let again = gif_frames(&page.join("training.gif"));
    assert_eq!(again[..39], frames[..39]);
    assert_eq!(again[39], frames[0]);
}

/// The frames of an animated grayscale GIF, as gray levels.
fn gif_frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options.read_info(bytes.as_slice()).unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.read_next_frame().unwrap() {
        frames.push(frame.buffer.chunks(4).map(|p| p[0]).collect());
    }
    frames
}
