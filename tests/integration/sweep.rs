//! Sweeps and the tracking database: skip, resume, force, parallel writers, SIGKILL, query.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{count, db, fake_slurm, fixture_dir, runner, stdout_of};
use predicates::prelude::*;
use rusqlite::Connection;

/// A tiny vanilla-GAN sweep of `lrs.len() x seeds.len()` runs.
fn write_spec(dir: &Path, steps: u64, lrs: &str, seeds: &str) -> PathBuf {
    let model = common::tiny_gan_model_toml();
    let spec = dir.join("tiny.toml");
    std::fs::write(
        &spec,
        format!(
            r#"name = "tiny"
description = "a <b>tiny</b> sweep"
{model}[train]
steps = {steps}
batch_size = 16
[log]
sample_every = 10
checkpoint_every = 10
metrics_every = 1
eval_samples = 0
[sweep]
"train.lr" = {lrs}
"train.seed" = {seeds}
"#
        ),
    )
    .unwrap();
    spec
}

/// Rewrites the spec at `spec` with `edit`.
fn edit_spec(spec: &Path, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(spec).unwrap();
    std::fs::write(spec, edit(text)).unwrap();
}

/// `runner runs --format csv` with `args`, run in `dir`.
fn runs_csv(dir: &Path, args: &[&str]) -> String {
    let out = runner()
        .current_dir(dir)
        .args(["runs", "--format", "csv"])
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

/// The values of `columns` (by the header's names) in each row of `csv`.
fn csv_columns(csv: &str, columns: &[&str]) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let at: Vec<usize> = (columns.iter())
        .map(|c| {
            header
                .iter()
                .position(|h| h == *c)
                .unwrap_or_else(|| panic!("no {c}: {csv}"))
        })
        .collect();
    (reader.records())
        .map(|row| {
            let row = row.unwrap();
            at.iter().map(|&i| row[i].to_string()).collect()
        })
        .collect()
}

/// `runner show <run> --format json`, run in `dir`, read back.
fn show_json(dir: &Path, run: &str) -> serde_json::Value {
    let out = runner()
        .current_dir(dir)
        .args(["show", run, "--format", "json"])
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

fn sweep(dir: &Path, spec: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    runner()
        .current_dir(dir)
        .arg("sweep")
        .arg(spec)
        .arg("--data-dir")
        .arg(fixture_dir())
        .args(extra)
        .assert()
}

/// Rewrites the `field` that run `id` of the tiny experiment recorded as `was` to `now`, in
/// every line of its records, as if another session had trained it.
fn restamp_records(dir: &Path, id: &str, field: &str, was: &str, now: &str) {
    let records = dir.join(format!("results/tiny/{id}/records.jsonl"));
    let text = std::fs::read_to_string(&records).unwrap();
    let stamp = format!("\"{field}\":\"{was}\"");
    assert!(text.contains(&stamp), "{text}");
    let restamped = text.replace(&stamp, &format!("\"{field}\":\"{now}\""));
    std::fs::write(&records, restamped).unwrap();
}

/// `runner <command> <args>`, run in `dir`.
fn command_in(dir: &Path, command: &str, args: &[&str]) -> assert_cmd::assert::Assert {
    runner().current_dir(dir).arg(command).args(args).assert()
}

#[test]
fn dry_run_prints_the_grid_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 20, "[1e-4, 2e-4]", "[0, 1, 2]");
    sweep(dir.path(), &spec, &["--dry-run"]).success().stdout(
        predicate::str::contains("train.lr").and(predicate::str::contains("6 runs: 6 new")),
    );
    assert!(!dir.path().join("results").exists());
    // Once a point has trained, the dry run says what the database has of each run.
    let one_point = [
        "--set",
        "sweep.train.lr=[1e-4]",
        "--set",
        "sweep.train.seed=[0]",
    ];
    sweep(dir.path(), &spec, &one_point).success();
    let before = count(&db(dir.path()), "SELECT count(*) FROM metrics");
    sweep(dir.path(), &spec, &["--dry-run"]).success().stdout(
        predicate::str::contains("finished 20/20")
            .and(predicate::str::contains("6 runs: 1 finished, 5 new")),
    );
    assert_eq!(count(&db(dir.path()), "SELECT count(*) FROM runs"), 1);
    assert_eq!(
        count(&db(dir.path()), "SELECT count(*) FROM metrics"),
        before
    );
}

#[test]
fn a_sweep_without_its_data_says_so_before_announcing_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 20, "[1e-4]", "[0]");
    let missing = dir.path().join("no-data");
    let out = runner()
        .current_dir(dir.path())
        .arg("sweep")
        .arg(&spec)
        .arg("--data-dir")
        .arg(&missing)
        .assert()
        .failure()
        .stderr(predicate::str::contains("runner data fetch"))
        .get_output()
        .clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("report:"), "{stdout}");
    assert!(!dir.path().join("results/report").exists());
}

#[test]
fn estimate_prices_each_runs_steps_left_at_its_timed_pace_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 20, "[1e-4, 2e-4]", "[0, 1]");
    // (run, time left in seconds or none) of each row, and the summary line.
    let estimate = |extra: &[&str]| {
        let out = sweep(dir.path(), &spec, &[&["--estimate"][..], extra].concat()).success();
        let stdout = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        let mut lines = stdout.lines();
        let header = lines.next().unwrap();
        assert!(header.contains("time left"), "{stdout}");
        let at = header.find("time left").unwrap();
        let rows: Vec<(String, Option<f64>)> = (lines.clone().skip(1))
            .take_while(|line| !line.contains(" runs: "))
            .map(|line| {
                let left = line.get(at..).unwrap_or("").split_whitespace().next();
                let seconds = left.filter(|cell| cell.contains(':')).map(|clock| {
                    (clock.split(':'))
                        .map(|part| part.parse::<f64>().unwrap())
                        .fold(0.0, |total, part| total * 60.0 + part)
                });
                (line.split_whitespace().next().unwrap().to_string(), seconds)
            })
            .collect();
        let summary = (lines.find(|line| line.starts_with("estimated training time")))
            .unwrap_or_else(|| panic!("{stdout}"))
            .to_string();
        (rows, summary)
    };
    // The figure after `before` in the summary, a number or a clock.
    let figure = |summary: &str, before: &str| -> f64 {
        let figure = (summary.split(before).nth(1))
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("no {before:?} in {summary}"));
        (figure.split(':'))
            .map(|part| part.parse::<f64>().unwrap())
            .fold(0.0, |total, part| total * 60.0 + part)
    };
    // Seeds and learning rates do not change what a step computes: one shape, timed once, and
    // every run priced at its pace; one at a time, the sweep takes their sum.
    let long = ["--set", "train.steps=200000"];
    let (rows, summary) = estimate(&[&long[..], &["--jobs", "1"]].concat());
    assert_eq!(rows.len(), 4, "{summary}");
    let priced = 200.0 * figure(&summary, "(timed here: ");
    let lefts: Vec<f64> = (rows.iter())
        .map(|(run, left)| left.unwrap_or_else(|| panic!("{run}: no time left")))
        .collect();
    for left in &lefts {
        assert!(
            (left - priced).abs() <= priced * 0.005 + 1.0,
            "{left} {summary}"
        );
    }
    assert!(summary.contains("for 4 runs"), "{summary}");
    assert!(summary.contains("one run at a time"), "{summary}");
    let wall = figure(&summary, "estimated training time: ");
    assert!((wall - lefts.iter().sum::<f64>()).abs() <= 4.0, "{summary}");
    // Two at a time, each timed beside a copy of itself: four runs are two rounds of two.
    let (rows, summary) = estimate(&[&long[..], &["--jobs", "2"]].concat());
    assert!(
        summary.contains(" ms a step alone and ") && summary.contains("2 runs at a time"),
        "{summary}"
    );
    let alone = 200.0 * figure(&summary, "(timed here: ");
    let shared = 200.0 * figure(&summary, " ms a step alone and ");
    assert!(shared >= alone, "{summary}");
    for (run, left) in &rows {
        let left = left.unwrap_or_else(|| panic!("{run}: no time left"));
        assert!(
            (left - shared).abs() <= shared * 0.005 + 1.0,
            "{left} {summary}"
        );
    }
    let wall = figure(&summary, "estimated training time: ");
    assert!(
        (wall - 2.0 * shared).abs() <= shared * 0.01 + 2.0,
        "{summary}"
    );
    assert!(!dir.path().join("results").exists());
    // Timed while other processes keep every core busy, it says that it runs long.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for _ in 0..cores {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        let estimated = sweep(dir.path(), &spec, &["--estimate"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        estimated.success().stderr(predicate::str::contains(
            "of this machine's CPU time: the timings share the cores with them",
        ));
    });
    // Two batch sizes are two shapes.
    let (rows, summary) = estimate(&["--set", "sweep.train.batch_size=[16, 32]"]);
    assert_eq!(rows.len(), 8);
    assert!(summary.contains("(2 shapes timed here: "), "{summary}");
    assert!(!summary.contains("evaluation"), "{summary}");
    // Evaluations every 10 steps and at the end: two a run, timed once and counted in.
    let evaluating = [
        "--set",
        "log.eval_samples=200",
        "--set",
        "log.eval_every=10",
    ];
    let (rows, summary) = estimate(&evaluating);
    assert_eq!(rows.len(), 4);
    assert!(
        summary.contains("8 evaluations included") && summary.contains(" s an evaluation"),
        "{summary}"
    );
    // Two at a time, an evaluation is timed again beside a run training, and that run's steps
    // meanwhile.
    let (_, summary) = estimate(&[&evaluating[..], &["--jobs", "2"]].concat());
    let before = summary.split(" s an evaluation alone and ").next().unwrap();
    let alone: f64 = before.rsplit(' ').next().unwrap().parse().unwrap();
    let beside = figure(&summary, " s an evaluation alone and ");
    assert!(
        beside >= alone && summary.contains(" beside 1 run training, whose steps then take "),
        "{summary}"
    );
    // Data without the test digits an evaluation needs is named before anything runs.
    let train_only = dir.path().join("train-only");
    std::fs::create_dir(&train_only).unwrap();
    for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
        std::fs::copy(fixture_dir().join(name), train_only.join(name)).unwrap();
    }
    runner()
        .current_dir(dir.path())
        .arg("sweep")
        .arg(&spec)
        .args(["--estimate", "--data-dir"])
        .arg(&train_only)
        .args(evaluating)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("timing an evaluation")
                .and(predicate::str::contains("t10k-images")),
        );
    assert!(!dir.path().join("results").exists());
    // A finished run has nothing left, unless --force starts it over.
    sweep(
        dir.path(),
        &spec,
        &[
            "--set",
            "sweep.train.lr=[1e-4]",
            "--set",
            "sweep.train.seed=[0]",
        ],
    )
    .success();
    let (rows, summary) = estimate(&[]);
    assert_eq!(rows.iter().filter(|(_, left)| left.is_none()).count(), 1);
    assert!(summary.contains("for 3 runs"), "{summary}");
    let (rows, summary) = estimate(&["--force"]);
    assert!(rows.iter().all(|(_, left)| left.is_some()));
    assert!(summary.contains("for 4 runs"), "{summary}");
    assert_eq!(count(&db(dir.path()), "SELECT count(*) FROM runs"), 1);
    // Claimed by another live process (pid 1, on this host) that has not started it yet: left
    // to it, as the sweep leaves it, even with --force.
    let owner = format!("{}:1", ganrunner::track::hostname());
    db(dir.path())
        .execute(
            "UPDATE runs SET status = 'pending', owner = ?1, heartbeat_at = ?2",
            rusqlite::params![owner, ganrunner::track::now()],
        )
        .unwrap();
    for force in [&[][..], &["--force"]] {
        let (rows, summary) = estimate(force);
        assert_eq!(rows.iter().filter(|(_, left)| left.is_none()).count(), 1);
        assert!(summary.contains("for 3 runs"), "{summary}");
    }
    sweep(dir.path(), &spec, &["--dry-run"]).success().stdout(
        predicate::str::contains("3 new, 1 running (").and(predicate::str::contains(
            "running ones are left to the process training them",
        )),
    );
    // Nothing left at all says so.
    let (_, summary) = estimate(&[
        "--set",
        "sweep.train.lr=[1e-4]",
        "--set",
        "sweep.train.seed=[0]",
    ]);
    assert!(summary.contains("nothing left to train"), "{summary}");
}

#[test]
fn sweeps_run_in_parallel_record_everything_and_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 20, "[1e-4, 2e-4]", "[0, 1]");
    // Unevaluated runs have no best, but have cost training time.
    sweep(dir.path(), &spec, &["--jobs", "4"]).success().stdout(
        predicate::str::contains("4 finished")
            .and(predicate::str::contains("best:").not())
            .and(predicate::str::is_match(r"\ntraining time: 0:00:\d\d over 4 runs\n").unwrap())
            .trim(),
    );
    let conn = db(dir.path());
    assert_eq!(
        count(&conn, "SELECT count(*) FROM runs WHERE status = 'finished'"),
        4
    );
    // Every step's two losses for every run: no lost rows, no duplicates.
    assert_eq!(count(&conn, "SELECT count(*) FROM metrics"), 4 * 20 * 2);
    assert_eq!(
        count(
            &conn,
            "SELECT count(DISTINCT run_id || step || name) FROM metrics"
        ),
        4 * 20 * 2
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM params WHERE key = 'train.lr' AND value = 0.0002"
        ),
        2
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM samples"),
        4 * 3,
        "steps 0, 10, 20"
    );
    drop(conn);

    // Again: everything is skipped.
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("4 skipped"));
    // One more lr: only the new points run.
    let spec = write_spec(dir.path(), 20, "[1e-4, 2e-4, 4e-4]", "[0, 1]");
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("2 finished, 4 skipped"));
    // --force reruns all, without duplicating rows.
    sweep(dir.path(), &spec, &["--force", "--jobs", "2"])
        .success()
        .stdout(predicate::str::contains("6 finished"));
    let conn = db(dir.path());
    assert_eq!(count(&conn, "SELECT count(*) FROM metrics"), 6 * 20 * 2);
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 6);

    runner()
        .current_dir(dir.path())
        .args(["runs", "--experiment", "tiny"])
        .assert()
        .success()
        .stdout(predicate::str::contains(" finished ").count(6));
    // Unscored runs give --explain nothing to read: it says why rather than an empty table.
    runner()
        .current_dir(dir.path())
        .args(["runs", "--experiment", "tiny", "--explain"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "nothing to explain: --explain needs finished runs scored by LeNet-FID",
        ))
        .stderr(predicate::str::contains("`runner eval --experiment tiny`"));
    // A mistyped experiment listed no runs, as if it had none.
    for extra in [&[][..], &["--group"], &["--explain"]] {
        runner()
            .current_dir(dir.path())
            .args(["runs", "--experiment", "tiyn"])
            .args(extra)
            .assert()
            .failure()
            .stderr(predicate::str::contains(
                "no experiment `tiyn` in results/runs.sqlite (it has tiny)",
            ));
    }
    runner()
        .current_dir(dir.path())
        .args(["runs", "--experiment", "tiny", "--status", "failed"])
        .assert()
        .success()
        .stdout(predicate::str::contains(" finished ").not());
    let id: String = conn
        .query_row("SELECT id FROM runs LIMIT 1", [], |r| r.get(0))
        .unwrap();
    runner()
        .current_dir(dir.path())
        .args(["show", &id[..6]])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("train.lr")
                .and(predicate::str::contains("checkpoints (2)"))
                // Flags as the spec writes them, not as SQLite stores them.
                .and(predicate::str::is_match(r"model.spectral_norm +false\n").unwrap())
                // A time, as started_at is, not seconds since the epoch.
                .and(predicate::str::is_match(r"heartbeat_at +20\d\d-\d\d-\d\dT").unwrap()),
        );
    // The same as one JSON object, for scripts: every logged step's losses, as the database
    // has them.
    let shown = show_json(dir.path(), &id);
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["status"], "finished");
    assert_eq!(shown["config"]["model.spectral_norm"], false);
    let value = |sql: &str| -> f64 { conn.query_row(sql, [&id], |r| r.get(0)).unwrap() };
    let lr = value("SELECT value FROM params WHERE run_id = ?1 AND key = 'train.lr'");
    assert_eq!(shown["config"]["train.lr"], lr);
    let losses = shown["losses"].as_array().unwrap();
    assert_eq!(losses.len(), 20);
    let last_g =
        value("SELECT value FROM metrics WHERE run_id = ?1 AND name = 'g_loss' AND step = 20");
    assert_eq!(losses[19]["step"], 20);
    assert_eq!(losses[19]["g_loss"], last_g);
    assert_eq!(shown["checkpoints"].as_array().unwrap().len(), 2);
}

#[test]
fn a_failed_run_is_recorded_and_the_others_finish() {
    let dir = tempfile::tempdir().unwrap();
    // lr 1e30 diverges at once; the other run is unaffected.
    let spec = write_spec(dir.path(), 20, "[2e-4, 1e30]", "[0]");
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("1 finished").and(predicate::str::contains("1 diverged")));
    let conn = db(dir.path());
    let error: String = conn
        .query_row(
            "SELECT error FROM runs WHERE status = 'diverged'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(error.contains("NaN or infinite"), "{error}");
    // A rerun leaves both as they are: the diverged run would diverge again where it did.
    let diverged: String = conn
        .query_row("SELECT id FROM runs WHERE status = 'diverged'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let trained = format!("run {diverged} diverged");
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(
            predicate::str::contains("0 finished, 1 skipped")
                .and(predicate::str::contains("1 diverged")),
        )
        .stderr(predicate::str::contains(&trained).not());
    sweep(dir.path(), &spec, &["--force"])
        .success()
        .stderr(predicate::str::contains(&trained));
    // Its directory deleted, it is trained again: the dry run says so, from step 0.
    let run_dir: String = conn
        .query_row("SELECT run_dir FROM runs WHERE id = ?1", [&diverged], |r| {
            r.get(0)
        })
        .unwrap();
    std::fs::remove_dir_all(dir.path().join(&run_dir)).unwrap();
    sweep(dir.path(), &spec, &["--dry-run"])
        .success()
        .stdout(predicate::str::contains(format!(
            "{diverged}  checkpoint lost 0/20"
        )))
        .stdout(predicate::str::contains("1 checkpoint lost, 1 finished"));
    sweep(dir.path(), &spec, &[])
        .success()
        .stderr(predicate::str::contains(&trained));
    // `runs` filters by status and sorts.
    let runs = |args: &[&str]| {
        let statuses = csv_columns(&runs_csv(dir.path(), args), &["status"]);
        statuses.into_iter().flatten().collect::<Vec<_>>()
    };
    assert_eq!(runs(&["--status", "diverged"]), ["diverged"]);
    assert_eq!(
        runs(&["--status", "diverged", "--status", "finished"]).len(),
        2
    );
    assert_eq!(runs(&["--sort", "steps"]), ["finished", "diverged"]);
    runner()
        .current_dir(dir.path())
        .args(["runs", "--status", "done"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--status done: not a status"));
}

/// Starts a 2-run sweep of 1000 steps in the background and waits until both runs have
/// checkpointed and logged past step 25.
fn start_long_sweep(dir: &Path) -> (std::process::Child, PathBuf) {
    let spec = write_spec(dir, 1000, "[2e-4]", "[0, 1]");
    let child = start_sweep(dir, &spec, &["--jobs", "2"], Stdio::null(), |count| {
        count("SELECT count(*) FROM runs") == 2
            && count("SELECT count(*) FROM checkpoints") >= 2
            && count("SELECT min(steps_done) FROM runs") > 25
    });
    (child, spec)
}

/// Spawns `runner sweep spec` in `dir` with `extra` arguments, its stderr to `stderr`, and
/// hands it over once `ready` holds of its database (`ready` reads counts through the
/// function it is given).
// The child is handed to the caller, which signals it and waits for it.
#[allow(clippy::zombie_processes)]
fn start_sweep(
    dir: &Path,
    spec: &Path,
    extra: &[&str],
    stderr: Stdio,
    ready: impl Fn(&dyn Fn(&str) -> i64) -> bool,
) -> std::process::Child {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(dir)
        .arg("sweep")
        .arg(spec)
        .arg("--data-dir")
        .arg(fixture_dir())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let db_path = dir.join("results/runs.sqlite");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the sweep made no progress");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        if let Ok(conn) = Connection::open(&db_path) {
            let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap_or(0);
            if ready(&count) {
                return child;
            }
        }
    }
}

#[test]
fn ctrl_c_checkpoints_marks_runs_interrupted_and_a_rerun_finishes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, spec) = start_long_sweep(dir.path());
    // While they train, `runs` gives each its training time and the time it has left.
    let csv = runs_csv(dir.path(), &["--status", "running"]);
    assert!(
        csv.starts_with("experiment,run,status,steps,runtime,eta,"),
        "{csv}"
    );
    let running = csv_columns(&csv, &["runtime", "eta"]);
    let positive = |v: &String| v.parse::<f64>().unwrap() > 0.0;
    assert_eq!(running.len(), 2, "{csv}");
    assert!(running.iter().flatten().all(positive), "{csv}");
    // The report's run pages say so too.
    let site = dir.path().join("site");
    runner()
        .current_dir(dir.path())
        .args(["report", "--out", "site"])
        .assert()
        .success();
    for run in csv_columns(&csv, &["run"]).into_iter().flatten() {
        let page = std::fs::read_to_string(site.join("tiny").join(&run).join("index.html"));
        let page = page.unwrap_or_else(|err| panic!("{run}: {err}"));
        assert!(page.contains(" so far, about "), "{run}: no time left");
    }
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted sweep exits non-zero");
    let conn = db(dir.path());
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs WHERE status = 'interrupted'"
        ),
        2
    );
    // Each interrupted run saved a checkpoint at the step it stopped.
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs r WHERE EXISTS (SELECT 1 FROM checkpoints c WHERE c.run_id = r.id AND c.step = r.steps_done)"
        ),
        2
    );
    drop(conn);
    sweep(dir.path(), &spec, &["--jobs", "2"])
        .success()
        .stdout(predicate::str::contains("2 finished"));
    let conn = db(dir.path());
    assert_eq!(count(&conn, "SELECT count(*) FROM metrics"), 2 * 1000 * 2);
    // Each logged step has the run's training time, which goes on across the interruption
    // (from the checkpoint's) instead of starting again, and `runs` shows the last one.
    assert_eq!(
        count(&conn, "SELECT count(*) FROM metrics WHERE seconds IS NULL"),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM metrics a JOIN metrics b ON b.run_id = a.run_id \
             AND b.name = a.name AND b.step = a.step + 1 WHERE b.seconds < a.seconds"
        ),
        0
    );
    let runtimes: Vec<f64> = conn
        .prepare(
            "SELECT seconds FROM metrics WHERE step = 1000 AND name = 'd_loss' ORDER BY run_id",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let csv = runs_csv(dir.path(), &["--sort", "runtime"]);
    let mut listed = csv_columns(&csv, &["run", "runtime", "eta"]);
    let seconds = |row: &Vec<String>| row[1].parse::<f64>().unwrap();
    assert!(seconds(&listed[0]) >= seconds(&listed[1]), "longest first");
    listed.sort();
    let shown: Vec<f64> = listed.iter().map(seconds).collect();
    assert_eq!(shown, runtimes, "runs shows each run's last training time");
    assert!(
        listed.iter().all(|row| row[2].is_empty()),
        "no time left when finished"
    );
}

#[test]
fn a_second_interrupt_quits_at_once_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // One step of a million D steps: minutes, which the first Ctrl-C would wait out.
    let spec = write_spec(dir.path(), 2, "[2e-4]", "[0]");
    edit_spec(&spec, |text| {
        text.replace("batch_size = 16", "batch_size = 16\nd_steps = 1000000")
    });
    let child = start_sweep(dir.path(), &spec, &[], Stdio::piped(), |count| {
        count("SELECT count(*) FROM runs WHERE status = 'running'") == 1
    });
    let interrupt = || {
        let pid = child.id().to_string();
        let kill = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status();
        assert!(kill.unwrap().success());
    };
    interrupt();
    std::thread::sleep(std::time::Duration::from_millis(500));
    interrupt();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(
            "stopping: runs training in this process checkpoint at the end of their step"
        ) && stderr.contains("interrupted while stopping: quitting at once"),
        "{stderr}"
    );
    // It did not wait for the step: no checkpoint, the run left as a kill leaves it.
    let conn = db(dir.path());
    assert_eq!(common::texts(&conn, "PRAGMA integrity_check"), ["ok"]);
    assert_eq!(count(&conn, "SELECT count(*) FROM checkpoints"), 0);
    let csv = runs_csv(dir.path(), &[]);
    assert!(csv.contains(",orphaned,0,"), "{csv}");
}

#[test]
fn a_timeout_checkpoints_what_trains_starts_nothing_more_and_exits_124() {
    let dir = tempfile::tempdir().unwrap();
    // Runs far longer than the limit, one at a time.
    let spec = write_spec(dir.path(), 1_000_000, "[2e-4]", "[0, 1, 2]");
    let started = std::time::Instant::now();
    sweep(dir.path(), &spec, &["--jobs", "1", "--timeout", "4s"])
        .code(124)
        .stderr(predicate::str::contains(
            "time limit of 4s reached; runs checkpointed and stopped: 1, not started: 2; run the \
             same command again to resume them",
        ));
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let conn = db(dir.path());
    assert_eq!(
        common::texts(&conn, "SELECT status FROM runs"),
        ["interrupted"]
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM runs r WHERE steps_done > 0 AND EXISTS \
             (SELECT 1 FROM checkpoints c WHERE c.run_id = r.id AND c.step = r.steps_done)"
        ),
        1,
        "the run stopped on a checkpoint of the step it reached"
    );
    // `train` stops the same way, and resumes from there.
    let out = dir.path().join("one");
    let train = |timeout: &str| {
        runner()
            .current_dir(dir.path())
            .arg("train")
            .arg(&spec)
            .arg("--data-dir")
            .arg(fixture_dir())
            .arg("--out")
            .arg(&out)
            .args(["--timeout", timeout])
            .assert()
            .code(124)
    };
    train("2s").stderr(predicate::str::contains("time limit of 2s reached at step"));
    let first = ganrunner::train::checkpoint::list(&out).pop().unwrap().0;
    train("2s");
    assert!(ganrunner::train::checkpoint::list(&out).pop().unwrap().0 > first);
    // A limit Slurm's tasks would not keep is refused before anything is submitted.
    sweep(
        dir.path(),
        &spec,
        &["--executor", "slurm", "--timeout", "1h"],
    )
    .code(1)
    .stderr(predicate::str::contains("--sbatch-arg=--time="));
}

#[test]
fn a_longer_run_starts_where_the_shorter_one_of_its_config_ended() {
    let (dir, fresh) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let lengthen = |spec: &Path| edit_spec(spec, |text| text.replace("steps = 20", "steps = 40"));
    // One run of 20 steps, evaluated every 10.
    let evaluated_spec = |dir: &Path| {
        let spec = write_spec(dir, 20, "[2e-4]", "[0]");
        edit_spec(&spec, |text| {
            text.replace("eval_samples = 0", "eval_samples = 60\neval_every = 10")
        });
        spec
    };
    let spec = evaluated_spec(dir.path());
    sweep(dir.path(), &spec, &[]).success();
    let shorter: String = db(dir.path())
        .query_row("SELECT id FROM runs", [], |r| r.get(0))
        .unwrap();
    let history = |dir: &Path, run: &str| -> Vec<(String, i64, String, f64)> {
        let conn = db(dir);
        let mut stmt = conn
            .prepare(
                "SELECT 'metric', step, name, value FROM metrics WHERE run_id = ?1 \
                 UNION ALL SELECT 'eval', step, metric, value FROM evals WHERE run_id = ?1 \
                 ORDER BY 1, 2, 3",
            )
            .unwrap();
        stmt.query_map([run], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = history(dir.path(), &shorter);
    lengthen(&spec);
    sweep(dir.path(), &spec, &["--dry-run"])
        .success()
        .stdout(predicate::str::contains(format!(
            "new from {shorter} at 20"
        )));
    let out = sweep(dir.path(), &spec, &[]).success();
    let printed = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        printed.contains(&format!(
            "continues run {shorter}, the same config trained for 20 steps"
        )),
        "{printed}"
    );
    let longer: String = db(dir.path())
        .query_row("SELECT id FROM runs WHERE steps_done = 40", [], |r| {
            r.get(0)
        })
        .unwrap();
    // The same history as the same config trained from step 0 elsewhere: every loss and every
    // evaluation, the first 20 steps' included.
    let spec2 = evaluated_spec(fresh.path());
    lengthen(&spec2);
    sweep(fresh.path(), &spec2, &[])
        .success()
        .stderr(predicate::str::contains("continues").not());
    let continued = history(dir.path(), &longer);
    assert_eq!(continued.iter().filter(|r| r.0 == "metric").count(), 2 * 40);
    let evaluated: std::collections::BTreeSet<i64> = (continued.iter())
        .filter(|r| r.0 == "eval")
        .map(|r| r.1)
        .collect();
    assert_eq!(evaluated, [10, 20, 30, 40].into());
    assert_eq!(continued, history(fresh.path(), &longer));
    // Its training time goes on from the shorter run's, whose steps it took over.
    let seconds_at = |run: &str, step: i64| -> f64 {
        db(dir.path())
            .query_row(
                "SELECT seconds FROM metrics WHERE run_id = ?1 AND step = ?2 AND name = 'd_loss'",
                rusqlite::params![run, step],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(seconds_at(&longer, 20), seconds_at(&shorter, 20));
    assert!(seconds_at(&longer, 21) > seconds_at(&shorter, 20));
    // Its files are its own, and the shorter run is as it was.
    let conn = db(dir.path());
    for path in common::texts(
        &conn,
        &format!(
            "SELECT path FROM samples WHERE run_id = '{longer}' \
             UNION ALL SELECT path FROM checkpoints WHERE run_id = '{longer}'"
        ),
    ) {
        assert!(path.contains(&longer), "{path}");
        assert!(dir.path().join(&path).exists(), "{path}");
    }
    assert_eq!(history(dir.path(), &shorter), before);
    assert_eq!(
        count(
            &conn,
            &format!(
                "SELECT count(*) FROM events WHERE run_id = '{longer}' AND kind = 'continues'"
            )
        ),
        1
    );
    // `--force` starts over, from step 0.
    sweep(dir.path(), &spec, &["--force"])
        .success()
        .stderr(predicate::str::contains("continues").not());
    assert_eq!(history(dir.path(), &longer), history(fresh.path(), &longer));
    // Through Slurm: the copy is made before the task is submitted, and collected with it.
    let slurm = tempfile::tempdir().unwrap();
    let spec3 = evaluated_spec(slurm.path());
    sweep(slurm.path(), &spec3, &[]).success();
    lengthen(&spec3);
    let path = fake_slurm(slurm.path());
    common::slurm_sweep(slurm.path(), &spec3, &path, &[])
        .success()
        .stderr(predicate::str::contains("continues run"));
    let plan = common::slurm_plan(slurm.path(), "tiny");
    common::run_slurm_task(slurm.path(), &plan, 0).success();
    common::slurm_sweep(slurm.path(), &spec3, &path, &["--collect"]).success();
    assert_eq!(
        history(slurm.path(), &longer),
        history(fresh.path(), &longer)
    );
}

#[test]
fn a_longer_run_whose_learning_rate_decays_over_its_length_starts_over_and_says_why() {
    // It cannot take the shorter run's steps as its first (their learning rates differ), so
    // it trained from step 0 without a word: its user expected it to go on.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 20, "[2e-4]", "[0]");
    edit_spec(&spec, |text| {
        text.replace("batch_size = 16", "batch_size = 16\nlr_decay = \"linear\"")
    });
    sweep(dir.path(), &spec, &[]).success();
    let shorter = common::texts(&db(dir.path()), "SELECT id FROM runs").remove(0);
    edit_spec(&spec, |text| text.replace("steps = 20", "steps = 40"));
    let why = "`train.lr_decay` fits the learning rate to a run's length";
    sweep(dir.path(), &spec, &["--dry-run"])
        .success()
        .stdout(predicate::str::contains(format!(
            "1 new run trains from step 0, not from the finished shorter run of its config: {why}"
        )));
    runner()
        .current_dir(dir.path())
        .args(["train", "--dry-run", "--data-dir"])
        .arg(fixture_dir())
        .arg(&spec)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "a new run, from step 0: run {shorter} trained this config for 20 steps, but {why}"
        )));
    sweep(dir.path(), &spec, &[])
        .success()
        .stderr(predicate::str::contains(format!(
            "trains from step 0, not from run {shorter} (the same config trained for 20 steps)"
        )))
        .stderr(predicate::str::contains("continues").not());
    let conn = db(dir.path());
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM events WHERE kind = 'continues'"
        ),
        0
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM metrics WHERE name = 'd_loss'"),
        20 + 40
    );
}

#[test]
fn a_sweep_killed_mid_run_resumes_and_ends_with_each_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, spec) = start_long_sweep(dir.path());
    child.kill().unwrap();
    child.wait().unwrap();
    let conn = db(dir.path());
    assert_eq!(
        common::texts(&conn, "PRAGMA integrity_check"),
        ["ok"],
        "a killed writer leaves the database consistent"
    );
    let unfinished = count(&conn, "SELECT count(*) FROM runs WHERE status = 'running'");
    assert!(unfinished >= 1, "killed before the end");
    // Its runs show as orphaned at once (its pid is gone), not a heartbeat lease later.
    let csv = runs_csv(dir.path(), &["--status", "orphaned"]);
    assert_eq!(
        csv.lines().filter(|l| l.contains(",orphaned,")).count(),
        unfinished as usize,
        "{csv}"
    );
    runner()
        .current_dir(dir.path())
        .args(["report", "--out", "killed-report"])
        .assert()
        .success();
    let index = std::fs::read_to_string(dir.path().join("killed-report/index.html")).unwrap();
    assert!(index.contains("orphaned"), "the report says so too");
    // A crash of the machine (not of the process) can also damage the newest checkpoint.
    for run_dir in &common::texts(&conn, "SELECT run_dir FROM runs") {
        let (_, newest) = ganrunner::train::checkpoint::list(&dir.path().join(run_dir))
            .pop()
            .expect("a checkpoint");
        std::fs::write(newest.join("generator.bpk"), b"").unwrap();
    }
    drop(conn);

    sweep(dir.path(), &spec, &["--jobs", "2"])
        .success()
        .stdout(predicate::str::contains("2 finished"));
    let conn = db(dir.path());
    assert_eq!(common::texts(&conn, "PRAGMA integrity_check"), ["ok"]);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM events WHERE kind = 'corrupt_checkpoint' AND detail LIKE '%generator.bpk%'"
        ),
        2,
        "each damaged checkpoint was set aside, and recorded"
    );
    let id: String = conn
        .query_row("SELECT id FROM runs LIMIT 1", [], |r| r.get(0))
        .unwrap();
    runner()
        .current_dir(dir.path())
        .args(["show", &id])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("corrupt_checkpoint: ")
                .and(predicate::str::contains("generator.bpk")),
        );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM runs WHERE status = 'finished'"),
        2
    );
    assert_eq!(
        count(&conn, "SELECT count(*) FROM metrics"),
        2 * 1000 * 2,
        "every step once"
    );
    // The resumed runs are the uninterrupted ones: same config, same losses.
    let fresh = tempfile::tempdir().unwrap();
    let spec2 = write_spec(fresh.path(), 1000, "[2e-4]", "[0, 1]");
    sweep(fresh.path(), &spec2, &["--jobs", "2"]).success();
    let losses = |c: &Connection| -> Vec<(String, i64, f64)> {
        let mut stmt = c
            .prepare("SELECT run_id, step, value FROM metrics ORDER BY run_id, step, name")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(losses(&conn), losses(&db(fresh.path())));
}

#[test]
fn tags_and_notes_survive_a_new_database_and_a_forced_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 10, "[1e-4, 2e-4]", "[0]");
    sweep(dir.path(), &spec, &["--no-report"]).success();
    let ids = common::texts(&db(dir.path()), "SELECT id FROM runs ORDER BY id");
    let (good, other) = (&ids[0], &ids[1]);
    let tag = |args: &[&str]| {
        runner()
            .current_dir(dir.path())
            .arg("tag")
            .args(args)
            .assert()
    };
    tag(&[
        &good[..6],
        "--add",
        "good",
        "-a",
        "baseline",
        "--note",
        "sharp 7s",
    ])
    .success()
    .stdout(predicate::str::contains(
        "tags: baseline, good  note: sharp 7s",
    ));
    tag(&[other, "-a", "collapsed"]).success();
    tag(&[good, "-r", "baseline"]).success();
    let file = dir
        .path()
        .join(format!("results/tiny/{good}/annotations.json"));
    let written = std::fs::read_to_string(&file).unwrap();
    assert!(
        written.contains("\"good\"") && !written.contains("baseline"),
        "{written}"
    );
    // A bad tag, or a run that is not there, changes nothing, in any run named.
    tag(&[good, "-a", "two words"])
        .failure()
        .stderr(predicate::str::contains("tag `two words`"));
    tag(&[good, "nosuchrun", "-a", "more"])
        .failure()
        .stderr(predicate::str::contains("no run `nosuchrun`"));
    tag(&[good, "-a", "more", "--db", "typo/runs.sqlite"])
        .failure()
        .stderr(predicate::str::contains("no such database"));
    assert!(!dir.path().join("typo").exists());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    let runs = |args: &[&str]| runs_csv(dir.path(), args);
    let tagged = runs(&["--tag", "good"]);
    assert!(
        tagged.contains(good.as_str()) && !tagged.contains(other.as_str()),
        "{tagged}"
    );
    assert_eq!(
        runs(&["--tag", "good", "--tag", "collapsed"])
            .lines()
            .count(),
        1
    );
    // The run's own file brings them back into a new database, and starting over keeps them,
    // and what else the user saved in the run's folder; what training wrote goes.
    std::fs::remove_file(dir.path().join("results/runs.sqlite")).unwrap();
    sweep(dir.path(), &spec, &["--no-report"]).success();
    let run_dir = dir.path().join(format!("results/tiny/{good}"));
    std::fs::create_dir(run_dir.join("my-samples")).unwrap();
    std::fs::write(run_dir.join("my-samples/000000.png"), "mine").unwrap();
    let stale_grid = run_dir.join("samples/step-99999999.png");
    std::fs::write(&stale_grid, "an older attempt's").unwrap();
    sweep(dir.path(), &spec, &["--no-report", "--force"]).success();
    assert_eq!(
        std::fs::read_to_string(run_dir.join("my-samples/000000.png")).unwrap(),
        "mine"
    );
    assert!(!stale_grid.exists(), "the run's own files go");
    let conn = db(dir.path());
    assert_eq!(
        common::texts(&conn, "SELECT run_id || ' ' || tag FROM tags ORDER BY tag"),
        [format!("{other} collapsed"), format!("{good} good")]
    );
    assert_eq!(
        common::texts(&conn, &format!("SELECT note FROM runs WHERE id = '{good}'")),
        ["sharp 7s"]
    );
    assert!(file.is_file());
    // A database restored from a backup taken before a note changed gets the new note back
    // from the run's file, though the run is finished and not trained again.
    let backup = dir.path().join("backup.sqlite");
    conn.execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
        .unwrap();
    drop(conn);
    tag(&[good, "--note", "sharp 7s and 9s"]).success();
    for suffix in ["-wal", "-shm", ""] {
        let _ = std::fs::remove_file(dir.path().join(format!("results/runs.sqlite{suffix}")));
    }
    std::fs::copy(&backup, dir.path().join("results/runs.sqlite")).unwrap();
    sweep(dir.path(), &spec, &["--no-report"])
        .success()
        .stdout(predicate::str::contains("2 skipped"));
    assert_eq!(
        common::texts(
            &db(dir.path()),
            &format!("SELECT note FROM runs WHERE id = '{good}'")
        ),
        ["sharp 7s and 9s"]
    );
    runner()
        .current_dir(dir.path())
        .arg("report")
        .assert()
        .success();
    let index = std::fs::read_to_string(dir.path().join("results/report/index.html")).unwrap();
    assert!(
        index.contains(r#"<span class="tag">good</span>"#),
        "{index}"
    );
    // The compare page of the run that is not the best shows both runs' tags and notes.
    let compare = common::compare_page(&dir.path().join("results/report/tiny"));
    let compare = std::fs::read_to_string(compare).unwrap();
    for tag in ["good", "collapsed"] {
        assert!(
            compare.contains(&format!(r#"<span class="tag">{tag}</span>"#)),
            "{compare}"
        );
    }
    assert!(compare.contains("sharp 7s"));
    // Nothing else writes over it; clearing the note and the tags removes the file.
    runner()
        .current_dir(dir.path())
        .args(["generate", "--checkpoint", good, "--n", "4", "--out"])
        .arg(&file)
        .assert()
        .failure();
    tag(&[good, "-r", "good", "--note", ""]).success();
    assert!(!file.exists());
    runner()
        .current_dir(dir.path())
        .args(["rm", "--yes", "--tag", "collapsed"])
        .assert()
        .success()
        .stdout(predicate::str::contains("deleted 1 of 1 run;"));
    let conn = db(dir.path());
    assert_eq!(count(&conn, "SELECT count(*) FROM tags"), 0);
    assert_eq!(
        common::texts(&conn, "SELECT id FROM runs"),
        std::slice::from_ref(good)
    );
}

#[test]
fn query_reads_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 3, "[2e-4]", "[0]");
    sweep(dir.path(), &spec, &[]).success();
    let query = |sql: &str, format: &str| {
        runner()
            .current_dir(dir.path())
            .args(["query", sql, "--format", format])
            .assert()
    };
    query(
        "SELECT key, value FROM params WHERE key = 'train.lr'",
        "csv",
    )
    .success()
    .stdout(predicate::str::diff("key,value\ntrain.lr,0.0002\n"));
    query("SELECT count(*) AS n FROM metrics", "json")
        .success()
        .stdout(predicate::str::contains("\"n\": 6"));
    for sql in [
        "INSERT INTO experiments VALUES ('x', '', '', '')",
        "UPDATE runs SET status = 'x'",
        "DELETE FROM metrics",
        "DROP TABLE metrics",
        "ATTACH DATABASE 'other.sqlite' AS other",
        "DETACH DATABASE main",
    ] {
        query(sql, "table")
            .failure()
            .stderr(predicate::str::contains("refused: `runner query`"));
    }
    query("SELEC nonsense", "table")
        .failure()
        .stderr(predicate::str::contains("SQL error"));
    let conn = db(dir.path());
    assert_eq!(
        count(&conn, "SELECT count(*) FROM metrics"),
        6,
        "nothing was changed"
    );
    assert!(!dir.path().join("other.sqlite").exists());

    // Results of any size stream: CSV and JSON give every row, a table the first 10 000 and
    // says so; a reader that stops reading stops a query that would never end.
    let counting = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25000) \
                    SELECT i FROM n";
    let output = |format: &str| {
        let out = query(counting, format)
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap()
    };
    let csv = output("csv");
    assert_eq!(csv.lines().count(), 25_001);
    assert_eq!(csv.lines().last(), Some("25000"));
    let json: Vec<serde_json::Value> = serde_json::from_str(&output("json")).unwrap();
    assert_eq!(
        (json.len(), &json[24_999]["i"]),
        (25_000, &serde_json::json!(25000))
    );
    let table = output("table");
    assert_eq!(table.lines().count(), 2 + 10_000 + 1);
    assert!(
        table.ends_with("use --format csv or json for every row)\n"),
        "{table}"
    );
    let mut endless = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(dir.path())
        .args(["query", "--format", "csv"])
        .arg("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT i FROM n")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(endless.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(endless.stdout.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = endless.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            endless.kill().unwrap();
            panic!("the query went on after its reader left");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
}

#[test]
fn sweeps_log_evaluations_and_eval_reproduces_them() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 20, "[2e-4]", "[0]");
    edit_spec(&spec, |text| {
        text.replace("eval_samples = 0", "eval_samples = 120\neval_every = 10")
    });
    let out = sweep(dir.path(), &spec, &[]).success();
    // The sweep's total is the run's time as `runs` shows it (one rounding, not two).
    let printed = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    let total = printed
        .lines()
        .find_map(|l| l.strip_prefix("training time: "))
        .and_then(|l| l.strip_suffix(" over 1 run"))
        .unwrap_or_else(|| panic!("{printed}"))
        .to_string();
    let table = runner()
        .current_dir(dir.path())
        .arg("runs")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8_lossy(&table);
    assert!(
        table
            .lines()
            .nth(2)
            .unwrap()
            .contains(&format!("  {total}  ")),
        "{total} in {table}"
    );
    let conn = db(dir.path());
    assert_eq!(
        count(&conn, "SELECT count(DISTINCT step) FROM evals"),
        2,
        "evaluations at steps 10 and 20"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM evals WHERE step = 20 AND metric IN ('fid', 'is', 'precision', 'recall', 'density', 'coverage', 'class_kl')"
        ),
        7
    );
    let (run, fid): (String, f64) = conn
        .query_row(
            "SELECT run_id, value FROM evals WHERE step = 20 AND metric = 'fid'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(fid.is_finite() && fid > 0.0);
    // `show --format json` gives every stored value, unrounded, by step.
    let shown = show_json(dir.path(), &run);
    let evaluations = shown["evaluations"].as_array().unwrap();
    assert_eq!(evaluations.len(), 2);
    assert_eq!(evaluations[1]["step"], 20);
    assert_eq!(evaluations[1]["fid"].as_f64(), Some(fid));
    let stored = count(&conn, "SELECT count(*) FROM evals WHERE step = 20");
    // (Beside them, its step and the training time it was reached at.)
    assert_eq!(evaluations[1].as_object().unwrap().len() as i64, stored + 2);
    assert!(evaluations[1]["seconds"].as_f64().unwrap() > 0.0);
    assert!(evaluations[1]["kid"].is_number() && evaluations[1]["class_9"].is_number());
    let out = runner()
        .current_dir(dir.path())
        .args(["eval", &run[..6], "--samples", "120", "--format", "json"])
        .arg("--data-dir")
        .arg(fixture_dir())
        .assert()
        .success()
        .stderr(predicate::str::contains("recorded as run"))
        .get_output()
        .stdout
        .clone();
    let rows: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let again = rows[0]["fid"].as_f64().unwrap();
    assert!(
        (again - fid).abs() < 1e-3,
        "runner eval gives {again}, the run logged {fid}"
    );
    assert_eq!(rows[0]["step"], 20);
    // Re-recording the same evaluation adds no rows, and keeps the training time it was
    // reached at.
    assert_eq!(
        count(&db(dir.path()), "SELECT count(DISTINCT step) FROM evals"),
        2
    );
    assert_eq!(
        count(
            &db(dir.path()),
            "SELECT count(*) FROM evals WHERE seconds IS NULL OR seconds <= 0"
        ),
        0
    );
    // Another sample count or noise is scored and shown, never stored over the logged value.
    let stored = || -> (f64, f64) {
        db(dir.path())
            .query_row(
                "SELECT (SELECT value FROM evals WHERE step = 20 AND metric = 'fid'), \
                 (SELECT value FROM evals WHERE step = 20 AND metric = 'samples')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let before = stored();
    for (args, why) in [
        (
            ["--samples", "200"].as_slice(),
            "--samples 200, where the run's evaluations use 120",
        ),
        (
            &["--samples", "120", "--seed", "5"],
            "--seed 5, where the run's evaluations use its seed 0",
        ),
    ] {
        runner()
            .current_dir(dir.path())
            .args(["eval", &run[..6]])
            .args(args)
            .arg("--data-dir")
            .arg(fixture_dir())
            .assert()
            .success()
            .stderr(predicate::str::contains(format!(
                "not recorded with its run: {why}"
            )));
    }
    assert_eq!(stored(), before);
    assert_eq!(before.1, 120.0);
    // Unknown runs are named.
    runner()
        .current_dir(dir.path())
        .args(["eval", "ffffffff"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("`ffffffff`"));
}

#[test]
fn eval_scores_many_runs_with_one_evaluator_and_keeps_each_ones_best_state() {
    let dir = tempfile::tempdir().unwrap();
    // Trained without evaluations (eval_samples = 0); lr 1e30 diverges at its first step.
    let spec = write_spec(dir.path(), 20, "[1e-4, 2e-4, 3e-4, 1e30]", "[0]");
    let hint = "no run has a LeNet-FID yet: `runner eval --experiment tiny` scores them all";
    sweep(dir.path(), &spec, &["--no-report"])
        .success()
        .stdout(predicate::str::contains(hint));
    let conn = db(dir.path());
    assert_eq!(count(&conn, "SELECT count(*) FROM evals"), 0);
    let runs = common::texts(
        &conn,
        "SELECT id FROM runs WHERE status = 'finished' ORDER BY id",
    );
    let diverged = common::texts(&conn, "SELECT id FROM runs WHERE status = 'diverged'");
    assert_eq!((runs.len(), diverged.len()), (3, 1));
    let run_dir = |id: &str| dir.path().join("results/tiny").join(id);
    // One run's checkpoint damaged after training: the others are still scored.
    let damaged = ganrunner::train::checkpoint::list(&run_dir(&runs[2]))
        .pop()
        .unwrap()
        .1
        .join("generator.bpk");
    std::fs::write(&damaged, b"not a generator").unwrap();
    // What a `runner eval` killed while it kept a best state left.
    let half_kept = run_dir(&runs[0]).join(".best.tmp-1");
    std::fs::create_dir(&half_kept).unwrap();

    let out = command_in(
        dir.path(),
        "eval",
        &["--experiment", "tiny", "--format", "json"],
    )
    .failure()
    .stderr(
        predicate::str::contains("generator.bpk")
            .and(predicate::str::contains(
                "1 of 3 checkpoints could not be scored",
            ))
            .and(predicate::str::contains(format!(
                "run {} (diverged): passed over",
                diverged[0]
            ))),
    );
    let scored: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let scored = scored.as_array().unwrap();
    assert_eq!(scored.len(), 2, "{scored:?}");
    for (row, id) in scored.iter().zip(&runs) {
        assert!(row["set"].as_str().unwrap().contains(id.as_str()), "{row}");
        assert_eq!(row["step"], 20);
        // Recorded with its run, as its own evaluation (the default sample count).
        let stored: f64 = conn
            .query_row(
                "SELECT value FROM evals WHERE run_id = ?1 AND step = 20 AND metric = 'fid'",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert!((stored - row["fid"].as_f64().unwrap()).abs() < 1e-3);
        // ...and its state kept as the run's best, which `--best` now finds.
        let best = ganrunner::train::checkpoint::best_fid(&run_dir(id));
        assert_eq!(best, Some(stored), "run {id}");
        command_in(
            dir.path(),
            "generate",
            &[id, "--best", "-n", "4", "--out", "best.png"],
        )
        .success();
        // ...and `show` names it.
        let shown = show_json(dir.path(), id);
        assert_eq!(shown["best"]["step"], 20);
        assert_eq!(shown["best"]["fid"].as_f64(), Some(stored));
        let text = stdout_of(command_in(dir.path(), "show", &[id]));
        assert!(text.contains("best state (step 20, LeNet-FID "), "{text}");
    }
    assert!(show_json(dir.path(), &runs[2])["best"].is_null());
    assert_eq!(
        count(&conn, "SELECT count(DISTINCT run_id) FROM evals"),
        2,
        "the damaged run has no evaluation"
    );
    assert!(!half_kept.exists());
    // The sweep now ranks them.
    sweep(dir.path(), &spec, &["--no-report"])
        .success()
        .stdout(predicate::str::contains("best: run ").and(predicate::str::contains(hint).not()));

    // Scored again: the same values, nothing new kept; runs named twice are scored once.
    let (first, second) = (runs[0].as_str(), &runs[1][..6]);
    let again = command_in(
        dir.path(),
        "eval",
        &[first, second, first, "--format", "json"],
    )
    .success()
    .stderr(predicate::str::contains("kept as the run's best").not());
    let again: serde_json::Value = serde_json::from_slice(&again.get_output().stdout).unwrap();
    assert_eq!(again.as_array().unwrap().len(), 2);
    assert_eq!(again[0]["fid"], scored[0]["fid"]);
    // The best states, scored as a final figure: not stored beside the logged scores.
    command_in(
        dir.path(),
        "eval",
        &[
            "--experiment",
            "tiny",
            "--status",
            "finished",
            "--best",
            "--samples",
            "500",
        ],
    )
    .success()
    .stderr(
        predicate::str::contains(format!("run {} (finished): passed over", runs[2]))
            .and(predicate::str::contains("no best checkpoint"))
            .and(predicate::str::contains(
                "not recorded with its run: --samples 500",
            )),
    );
    let best = command_in(
        dir.path(),
        "eval",
        &[
            "--experiment",
            "tiny",
            "--best",
            "--samples",
            "500",
            "--format",
            "csv",
        ],
    );
    let best = stdout_of(best);
    assert_eq!(best.lines().count(), 3, "a header and two rows: {best}");
    assert!(
        best.contains(&format!("{}/best,20,500,", runs[0])),
        "{best}"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM evals WHERE metric = 'samples' AND value = 500"
        ),
        0
    );

    // A run in training keeps its own best state.
    let training = ganrunner::fsutil::lock_dir(&run_dir(&runs[0])).unwrap();
    std::fs::remove_dir_all(run_dir(&runs[0]).join("best")).unwrap();
    command_in(dir.path(), "eval", &[first])
        .success()
        .stderr(predicate::str::contains(
            "another process holds the run (training it): its best state is left to that process",
        ));
    assert!(!run_dir(&runs[0]).join("best").exists());
    drop(training);

    // What a selection leaves nothing of, and --status alone, are refused.
    command_in(
        dir.path(),
        "eval",
        &["--experiment", "tiny", "--status", "failed"],
    )
    .failure()
    .stderr(predicate::str::contains("none of the 0 runs selected"));
    command_in(dir.path(), "eval", &["--status", "finished"])
        .failure()
        .stderr(predicate::str::contains(
            "--status picks among the runs of --experiment",
        ));
    command_in(
        dir.path(),
        "eval",
        &["--experiment", "tiny", "--samples", "1"],
    )
    .failure()
    .stderr(
        predicate::str::contains("--samples must be at least 2")
            .and(predicate::str::contains("[1/").not()),
    );
    command_in(dir.path(), "eval", &["--experiment", "tinny"])
        .failure()
        .stderr(predicate::str::contains("no experiment `tinny`"));
}

#[test]
fn slurm_sweeps_plan_submit_run_tasks_and_collect_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 20, "[1e-4, 2e-4]", "[0]");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("eval_samples = 0", "eval_samples = 50")).unwrap();
    let path = fake_slurm(dir.path());
    let slurm = |extra: &[&str]| common::slurm_sweep(dir.path(), &spec, &path, extra);
    slurm(&[
        "--max-parallel",
        "1",
        "--partition",
        "cpu",
        "--sbatch-arg=--time=1:00:00",
    ])
    .success()
    .stderr(
        predicate::str::contains("submitted Slurm job 42: 2 tasks")
            // The classifier is ready before any task needs it.
            .and(predicate::str::contains("classifier:")),
    )
    .stdout(predicate::str::contains("2 queued"));
    let args = std::fs::read_to_string(dir.path().join("sbatch-args")).unwrap();
    assert!(
        args.contains("--parsable") && args.contains("--time=1:00:00"),
        "{args}"
    );
    let slurm_dir = dir.path().join("results/tiny/slurm");
    let plan = common::slurm_plan(dir.path(), "tiny");
    let script = std::fs::read_to_string(plan.with_extension("sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-1%1")
            && script.contains("--partition=cpu")
            && script.contains("export GANRUNNER_DEVICE=cpu\n")
            && script.contains("export GANRUNNER_GPU_CONV=im2col\n")
            && script.contains("export GANRUNNER_GPU_ADAM=burn\n")
            && script.contains("export GANRUNNER_READ_EVERY=1\n"),
        "{script}"
    );
    assert_eq!(
        count(
            &db(dir.path()),
            "SELECT count(*) FROM runs WHERE status = 'pending' AND slurm_task LIKE '42\\_%' ESCAPE '\\'"
        ),
        2
    );
    // Until their tasks start them, a dry run shows the runs left to Slurm and prices nothing,
    // as a sweep (of either executor) leaves them.
    let queued = || {
        predicate::str::contains("2 runs: 2 queued (")
            .and(predicate::str::contains(
                "queued ones are left to their Slurm tasks",
            ))
            .and(predicate::str::contains("nothing left to train"))
    };
    slurm(&["--estimate"]).success().stdout(queued());
    sweep(dir.path(), &spec, &["--estimate"])
        .success()
        .stdout(queued());

    // Task 0 runs to the end; task 1 "is killed" after it started: only its first record.
    common::run_slurm_task(dir.path(), &plan, 0).success();
    let plan_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    assert_eq!(plan_json["job_id"], "42");
    let killed_dir = dir
        .path()
        .join(plan_json["runs"][1]["run"]["run_dir"].as_str().unwrap());
    std::fs::create_dir_all(&killed_dir).unwrap();
    let first = std::fs::read_to_string(
        dir.path()
            .join(plan_json["runs"][0]["run"]["run_dir"].as_str().unwrap())
            .join("records.jsonl"),
    )
    .unwrap();
    assert_eq!(
        count(&db(dir.path()), "SELECT count(*) FROM metrics"),
        0,
        "a task never writes the main database"
    );
    let killed_id = plan_json["runs"][1]["run"]["id"].as_str().unwrap();
    let mut started: serde_json::Value =
        serde_json::from_str(first.lines().next().unwrap()).unwrap();
    started["task"] = "42_1".into();
    started["event"]["RunStarted"]["record"]["id"] = killed_id.into();
    started["event"]["RunStarted"]["record"]["run_dir"] =
        plan_json["runs"][1]["run"]["run_dir"].clone();
    // The kill cut its second line short.
    std::fs::write(
        killed_dir.join("records.jsonl"),
        format!("{started}\n{{\"task\": \"42_1\", \"ev"),
    )
    .unwrap();
    std::fs::write(
        slurm_dir.join("42_1.log"),
        "step 3\nslurmstepd: *** JOB 42 CANCELLED ***\n",
    )
    .unwrap();

    // A dry run writes nothing, so it does not collect.
    for dry in ["--dry-run", "--estimate"] {
        slurm(&["--collect", dry])
            .failure()
            .stderr(predicate::str::contains("a dry run"));
    }
    // While task 1 is still queued, collecting merges only task 0.
    std::fs::write(dir.path().join("queue.txt"), "42_1\n").unwrap();
    slurm(&["--collect"]).success().stdout(
        predicate::str::contains("collected 1 finished")
            .and(predicate::str::contains("1 still queued")),
    );
    std::fs::remove_file(dir.path().join("queue.txt")).unwrap();
    // A collected failure makes the command fail (exit 1), like a sweep with a failed run.
    slurm(&["--collect"])
        .code(1)
        .stdout(predicate::str::contains(
            "collected 1 finished, 0 pruned, 1 failed",
        ));
    let conn = db(dir.path());
    let error: String = conn
        .query_row("SELECT error FROM runs WHERE id = ?1", [killed_id], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        error.contains("Slurm task 42_1 ended without finishing") && error.contains("CANCELLED"),
        "{error}"
    );
    let rows =
        count(&conn, "SELECT count(*) FROM metrics") + count(&conn, "SELECT count(*) FROM samples");
    assert!(rows > 0);
    slurm(&["--collect"]).code(1);
    assert_eq!(
        count(&db(dir.path()), "SELECT count(*) FROM metrics")
            + count(&db(dir.path()), "SELECT count(*) FROM samples"),
        rows,
        "collecting twice adds nothing"
    );
    // A rerun submits only the failed point.
    slurm(&[])
        .success()
        .stderr(predicate::str::contains("submitted Slurm job 42: 1 task;"))
        .stdout(predicate::str::contains("1 skipped"));
    // Slurm-only flags need the Slurm executor.
    sweep(dir.path(), &spec, &["--wait"])
        .failure()
        .stderr(predicate::str::contains("need --executor slurm"));
    // And --jobs, which Slurm's tasks ignored, is the local executor's.
    slurm(&["--jobs", "2"])
        .failure()
        .stderr(predicate::str::contains("--max-parallel"));
}

/// A local sweep merges what ended Slurm tasks recorded before it plans: it skips what they
/// finished and trains what they did not. Where Slurm does not answer (the results copied to a
/// machine without it), a task's own records say whether it ended.
#[test]
fn local_sweeps_merge_ended_slurm_tasks_even_where_slurm_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 20, "[1e-4, 2e-4]", "[0]");
    let path = fake_slurm(dir.path());
    common::slurm_sweep(dir.path(), &spec, &path, &[])
        .success()
        .stdout(predicate::str::contains("2 queued"));
    let plan = common::slurm_plan(dir.path(), "tiny");
    let plan_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let never_ran = plan_json["runs"][1]["run"]["id"].as_str().unwrap();
    // Task 0 runs to its end; task 1 never starts.
    common::run_slurm_task(dir.path(), &plan, 0).success();
    let local = || {
        runner()
            .current_dir(dir.path())
            .env("PATH", &path)
            .arg("sweep")
            .arg(&spec)
            .arg("--data-dir")
            .arg(fixture_dir())
            .arg("--no-report")
            .assert()
    };
    // A damaged plan beside it is left out with a warning, stopping nothing.
    let damaged = plan.with_file_name("plan-1.json");
    std::fs::write(&damaged, "{\"experiment\": ").unwrap();
    let squeue = dir.path().join("fake-bin/squeue");
    std::fs::write(
        &squeue,
        "#!/bin/sh\necho 'squeue: error: no controller' >&2\nexit 1\n",
    )
    .unwrap();
    local()
        .success()
        .stdout(
            predicate::str::contains("1 skipped (already finished)").and(predicate::str::contains(
                "1 left to another process or Slurm task",
            )),
        )
        .stderr(
            predicate::str::contains("Slurm does not answer here")
                .and(predicate::str::contains("no controller"))
                .and(predicate::str::contains(format!(
                    "run {never_ran} is being trained by Slurm task 42_1"
                )))
                .and(predicate::str::contains(
                    "warning: results/tiny/slurm/plan-1.json: not a plan",
                )),
        );
    // Slurm answers again, without task 1: it ended unstarted (failed), and is trained here.
    fake_slurm(dir.path());
    local()
        .success()
        .stdout(predicate::str::contains("1 finished, 1 skipped"));
    assert_eq!(
        count(
            &db(dir.path()),
            "SELECT count(*) FROM runs WHERE status = 'finished'"
        ),
        2
    );
}

/// A tiny TPE search over lr and `more_space` in batches of 2, with `sweep` (a `[sweep]`
/// table) crossing each trial.
fn tpe_spec(name: &str, trials: u32, startup: u32, sweep: &str, more_space: &str) -> String {
    let model = common::tiny_gan_model_toml();
    format!(
        r#"name = "{name}"
{model}[train]
steps = 10
batch_size = 16
[log]
sample_every = 10
checkpoint_every = 10
eval_samples = 50
{sweep}[search]
strategy = "tpe"
trials = {trials}
startup = {startup}
batch = 2
[search.space]
"train.lr" = {{ log_uniform = [1e-5, 1e-1] }}
{more_space}"#
    )
}

/// A TPE search trains its startup trials, then proposes batch after batch from their scores;
/// the same spec, data and seed propose the same trials, and a rerun proposes nothing new.
#[test]
fn tpe_searches_propose_trials_from_the_scores_of_the_ended_ones() {
    let text = tpe_spec("tpe", 7, 3, "", "\"train.d_steps\" = { int = [1, 3] }\n");
    let ids = |dir: &Path| {
        common::texts(
            &db(dir),
            "SELECT id FROM runs WHERE status = 'finished' ORDER BY id",
        )
    };
    let mut trained = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("tpe.toml");
        std::fs::write(&spec, &text).unwrap();
        sweep(dir.path(), &spec, &["--dry-run"])
            .success()
            .stdout(predicate::str::contains("TPE: 3 of 7 trials planned"));
        sweep(dir.path(), &spec, &["--estimate"]).success().stdout(
            predicate::str::contains("for 3 runs").and(predicate::str::contains(
                "(the estimate counts the planned ones; at their pace, all 7 left would take \
                 about ",
            )),
        );
        sweep(dir.path(), &spec, &["--no-report"])
            .success()
            .stdout(predicate::str::contains("7 runs: 7 finished"))
            .stderr(
                predicate::str::contains("TPE proposed 2 more trials from the results of 3")
                    .and(predicate::str::contains("from the results of 5"))
                    .and(
                        predicate::str::contains(
                            "TPE proposed 1 more trials from the results of 7",
                        )
                        .not(),
                    )
                    .and(predicate::str::contains("(7 of 7 planned)")),
            );
        assert_eq!(ids(dir.path()).len(), 7);
        assert_eq!(
            count(
                &db(dir.path()),
                "SELECT count(DISTINCT run_id) FROM evals WHERE metric = 'fid'"
            ),
            7,
            "every trial is scored"
        );
        sweep(dir.path(), &spec, &["--no-report"])
            .success()
            .stdout(predicate::str::contains("7 runs: 0 finished, 7 skipped"));
        // A constant liar keeps each batch's first proposal and moves its second, so the plan
        // stops at that untrained trial.
        sweep(
            dir.path(),
            &spec,
            &["--dry-run", "--set", "search.constant_liar=true"],
        )
        .success()
        .stdout(
            predicate::str::contains("TPE: 5 of 7 trials planned")
                .and(predicate::str::contains("5 runs: 4 finished, 1 new")),
        );
        trained.push(ids(dir.path()));
    }
    assert_eq!(
        trained[0], trained[1],
        "the same proposals from the same results"
    );
}

/// A TPE search crossed with seeds: each trial is a run per seed, scored by their mean.
#[test]
fn tpe_trials_crossed_with_seeds_are_scored_over_their_runs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tpe.toml");
    let seeds = "[sweep]\n\"train.seed\" = [0, 1]\n";
    std::fs::write(&spec, tpe_spec("tpe-seeds", 4, 2, seeds, "")).unwrap();
    sweep(dir.path(), &spec, &["--dry-run"]).success().stdout(
        predicate::str::contains("4 runs: 4 new")
            .and(predicate::str::contains("TPE: 2 of 4 trials planned")),
    );
    sweep(dir.path(), &spec, &["--no-report"])
        .success()
        .stdout(predicate::str::contains("8 runs: 8 finished"))
        .stderr(predicate::str::contains(
            "TPE proposed 2 more trials from the results of 2 (4 of 4 planned)",
        ));
    let conn = db(dir.path());
    assert_eq!(
        count(
            &conn,
            "SELECT count(DISTINCT value) FROM params WHERE key = 'train.lr'"
        ),
        4,
        "each trial's lr is shared by its two seeds"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM (SELECT value FROM params WHERE key = 'train.lr' GROUP BY value HAVING count(*) = 2)"
        ),
        4
    );
}

/// Two sweeps of one TPE search share it, as Optuna's workers share a study: one that finds
/// a batch trained by the other waits for it and goes on proposing, and resumes the trials of
/// one that is killed.
#[test]
fn sweeps_of_one_tpe_search_wait_for_each_others_trials_and_resume_a_killed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tpe.toml");
    // Runs long enough (seconds) for the second sweep to start while they train.
    let text = tpe_spec("tpe-shared", 4, 2, "", "")
        .replace("steps = 10", "steps = 5000")
        .replace("checkpoint_every = 10", "checkpoint_every = 100")
        .replace("sample_every = 10", "sample_every = 1000");
    std::fs::write(&spec, text).unwrap();
    // Two runs in training, each past its first checkpoint.
    let started = |count: &dyn Fn(&str) -> i64| {
        count(
            "SELECT count(DISTINCT r.id) FROM runs r JOIN checkpoints c ON c.run_id = r.id \
             WHERE r.status = 'running'",
        ) == 2
    };
    let waiting_sweep = |log: &Path| {
        let sweep = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
            .current_dir(dir.path())
            .args([
                "sweep",
                "tpe.toml",
                "--no-report",
                "--jobs",
                "1",
                "--data-dir",
            ])
            .arg(fixture_dir())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !std::fs::read_to_string(log)
            .unwrap()
            .contains("waiting for 2 of its trials' runs that other processes train (")
        {
            assert!(std::time::Instant::now() < deadline, "it never waited");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        sweep
    };

    // The startup trials train in the first sweep, which is killed while the second waits.
    let mut first = start_sweep(
        dir.path(),
        &spec,
        &["--jobs", "2", "--no-report"],
        Stdio::null(),
        started,
    );
    let log = dir.path().join("second.log");
    let second = waiting_sweep(&log);
    first.kill().unwrap();
    first.wait().unwrap();
    let out = second.wait_with_output().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 of its trials' runs stopped before they ended, their process gone"),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 runs: 4 finished, 0 skipped"),
        "the killed sweep's trials resumed and counted here: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Two more trials: the first sweep trains them, the second waits, then both propose the
    // last batch from the same results and share it.
    edit_spec(&spec, |text| text.replace("trials = 4", "trials = 8"));
    let first = start_sweep(
        dir.path(),
        &spec,
        &["--jobs", "2", "--no-report"],
        Stdio::piped(),
        started,
    );
    let second = waiting_sweep(&log);
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = second.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("8 runs: "),
        "{stdout}"
    );
    let conn = db(dir.path());
    assert_eq!(
        count(&conn, "SELECT count(*) FROM runs WHERE status = 'finished'"),
        8
    );
    // Each trained by one process but the two the killed sweep started, which the other one
    // resumed: the processes that wrote each run's records.
    let mut writers: Vec<usize> = std::fs::read_dir(dir.path().join("results/tpe-shared"))
        .unwrap()
        .map(|entry| {
            let records = entry.unwrap().path().join("records.jsonl");
            let text = std::fs::read_to_string(records).unwrap();
            let tasks: std::collections::HashSet<&str> = text
                .lines()
                .filter_map(|line| line.split("\"task\":\"").nth(1)?.split('"').next())
                .collect();
            tasks.len()
        })
        .collect();
    writers.sort();
    assert_eq!(writers, [1, 1, 1, 1, 1, 1, 2, 2]);
}

#[test]
fn the_best_evaluation_keeps_its_checkpoint_for_generate_best() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 30, "[2e-4]", "[0]");
    edit_spec(&spec, |text| {
        text.replace(
            "eval_samples = 0",
            "eval_samples = 60\neval_every = 5\nkeep_checkpoints = 1",
        )
    });
    sweep(dir.path(), &spec, &[]).success();
    let conn = db(dir.path());
    let (run_dir, best_step, best_fid): (String, i64, f64) = conn
        .query_row(
            "SELECT r.run_dir, e.step, e.value FROM evals e JOIN runs r ON r.id = e.run_id
             WHERE e.metric = 'fid' ORDER BY e.value, e.step LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        count(&conn, "SELECT count(*) FROM evals WHERE metric = 'fid'"),
        6
    );
    let run_dir = dir.path().join(run_dir);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("best/checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(
        meta["step"], best_step,
        "the best checkpoint is the lowest FID's step"
    );
    assert!((meta["fid"].as_f64().unwrap() - best_fid).abs() < 1e-9);
    // Pruning (keep_checkpoints = 1) keeps the periodic ones apart from it.
    assert!(run_dir.join("checkpoints/step-00000030").is_dir());
    runner()
        .current_dir(dir.path())
        .args([
            "generate",
            "--best",
            "--n",
            "4",
            "--out",
            "best.png",
            "--checkpoint",
        ])
        .arg(&run_dir)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "step-{best_step} generator"
        )));
    assert!(runs_csv(dir.path(), &[]).contains("best_fid"));
}

#[test]
fn the_best_run_shows_its_swept_values_as_the_spec_wrote_them() {
    // The params table keeps flags as integers; the best line reads the config, as `show` does.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 4, "[2e-4]", "[0]");
    edit_spec(&spec, |text| {
        text.replace("eval_samples = 0", "eval_samples = 50")
            .replace(
                "[sweep]\n",
                "[sweep]\n\"model.spectral_norm\" = [false, true]\n",
            )
    });
    let out = sweep(dir.path(), &spec, &["--no-report"]).success();
    let printed = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let flag: bool = db(dir.path())
        .query_row(
            "SELECT p.value FROM evals e JOIN params p ON p.run_id = e.run_id \
             AND p.key = 'model.spectral_norm' WHERE e.metric = 'fid' ORDER BY e.value LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let line = format!("      model.spectral_norm = {flag}, train.lr = 0.0002, train.seed = 0\n");
    assert!(printed.contains(&line), "{line} in:\n{printed}");
}

#[test]
fn replicates_group_by_everything_but_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 10, "[1e-4, 4e-4]", "[0, 1, 2]");
    edit_spec(&spec, |text| {
        text.replace("eval_samples = 0", "eval_samples = 60")
    });
    let out = sweep(dir.path(), &spec, &["--jobs", "2"]).success();
    let printed = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    // The sweep ends naming its best run and that run's swept values.
    let (best, fid, lr, seed): (String, f64, f64, i64) = db(dir.path())
        .query_row(
            "SELECT e.run_id, e.value, lr.value, seed.value FROM evals e \
             JOIN params lr ON lr.run_id = e.run_id AND lr.key = 'train.lr' \
             JOIN params seed ON seed.run_id = e.run_id AND seed.key = 'train.seed' \
             WHERE e.metric = 'fid' ORDER BY e.value LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let line =
        format!("best: run {best}, LeNet-FID {fid:.3} at step 10 (the best of 6 scored runs)");
    assert!(printed.contains(&line), "{line} in:\n{printed}");
    assert!(
        printed.contains(&format!("      train.lr = {lr}, train.seed = {seed}\n")),
        "{printed}"
    );
    // `runner runs <flag> --format json`, read back.
    let runs_json = |flag: &str| -> Vec<serde_json::Value> {
        let out = runner()
            .current_dir(dir.path())
            .args(["runs", flag, "--format", "json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap()
    };
    // Each run's row names what the sweep varied, and the run's values of it.
    let listed = runs_json("--status=finished");
    assert_eq!(listed.len(), 6);
    let conn = db(dir.path());
    for row in &listed {
        let (lr, seed): (f64, i64) = conn
            .query_row(
                "SELECT (SELECT value FROM params WHERE run_id = ?1 AND key = 'train.lr'), \
                 (SELECT value FROM params WHERE run_id = ?1 AND key = 'train.seed')",
                [row["run"].as_str().unwrap()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            row["config"],
            format!("train.lr={} train.seed={seed}", serde_json::json!(lr))
        );
    }
    drop(conn);
    let groups = runs_json("--group");
    assert_eq!(groups.len(), 2, "{groups:#?}");
    let conn = db(dir.path());
    for group in &groups {
        assert_eq!(group["n"], 3);
        assert_eq!(group["seeds"], "0-2");
        let lr = if group["config"].as_str().unwrap().contains("0.0001") {
            1e-4
        } else {
            4e-4
        };
        let mut stmt = conn
            .prepare(
                "SELECT e.value FROM evals e JOIN params p ON p.run_id = e.run_id AND p.key = 'train.lr'
                 WHERE e.metric = 'fid' AND e.step = 10 AND abs(p.value - ?1) < 1e-12",
            )
            .unwrap();
        let fids: Vec<f64> = stmt
            .query_map([lr], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let (mean, half) = ganrunner::replicates::mean_ci95(&fids).unwrap();
        assert!((group["fid_mean"].as_f64().unwrap() - mean).abs() < 1e-9);
        assert!((group["fid_ci95"].as_f64().unwrap() - half.unwrap()).abs() < 1e-9);
    }
    // The sweep also named the best configuration by its mean over the seeds, and whether
    // the runner-up's seeds tell it apart.
    let mean_line = |group: &serde_json::Value| {
        format!(
            "{}, final LeNet-FID {:.3} ± {:.3} (95% interval) over 3 seeds",
            group["config"].as_str().unwrap(),
            group["fid_mean"].as_f64().unwrap(),
            group["fid_ci95"].as_f64().unwrap()
        )
    };
    let leader = format!("best mean over seeds: {}\n", mean_line(&groups[0]));
    assert!(printed.contains(&leader), "{leader} in:\n{printed}");
    let verdict = match groups[1]["vs_leader"].as_str().unwrap() {
        "overlaps" => "its seeds cannot tell it from the best",
        _ => "worse",
    };
    let next = format!("      next: {} ({verdict}; ", mean_line(&groups[1]));
    assert!(printed.contains(&next), "{next} in:\n{printed}");
    assert_eq!(groups[0]["vs_leader"], "leader");
    assert!(groups[0]["fid_mean"].as_f64() <= groups[1]["fid_mean"].as_f64());
    assert!(["overlaps", "worse"].contains(&groups[1]["vs_leader"].as_str().unwrap()));
    // The experiment's report page shows the same groups.
    runner()
        .current_dir(dir.path())
        .args(["report"])
        .assert()
        .success();
    let page = std::fs::read_to_string(dir.path().join("results/report/tiny/index.html")).unwrap();
    assert!(
        page.contains("Replicates") && page.contains("<td>0-2</td>"),
        "{page}"
    );
    // What the two settings explain, from the same FIDs (best = last here: one evaluation).
    let explained = runs_json("--explain");
    let keys: std::collections::BTreeSet<&str> = explained
        .iter()
        .map(|row| row["setting"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["train.lr", "train.seed"].into());
    let fids: Vec<(String, f64)> = conn
        .prepare(
            "SELECT p.value, e.value FROM evals e JOIN params p ON p.run_id = e.run_id AND p.key = 'train.lr'
             WHERE e.metric = 'fid'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, f64>(0)?.to_string(), r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let all: Vec<f64> = fids.iter().map(|f| f.1).collect();
    let total: f64 = all.iter().map(|f| (f - mean(&all)).powi(2)).sum();
    let between: f64 = ["0.0001", "0.0004"]
        .iter()
        .map(|lr| {
            let group: Vec<f64> = fids.iter().filter(|f| f.0 == *lr).map(|f| f.1).collect();
            group.len() as f64 * (mean(&group) - mean(&all)).powi(2)
        })
        .sum();
    let lr = explained
        .iter()
        .find(|r| r["setting"] == "train.lr")
        .unwrap();
    assert!(
        (lr["explains"].as_f64().unwrap() - between / total).abs() < 1e-3,
        "{lr}"
    );
    assert!((lr["by_chance"].as_f64().unwrap() - 0.2).abs() < 1e-9);
    assert!(page.contains("What the settings explain"));
}

#[test]
fn random_search_dry_runs_list_trials_and_more_trials_keep_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 5, "[2e-4]", "[0]");
    let search = |trials: u32| {
        let text = std::fs::read_to_string(&spec).unwrap();
        let text = text.split("[sweep]").next().unwrap();
        let text = text.split("[search]").next().unwrap().to_string();
        std::fs::write(
            &spec,
            format!(
                "{text}[search]\nstrategy = \"sobol\"\ntrials = {trials}\nseed = 3\n[search.space]\n\"train.lr\" = {{ log_uniform = [1e-5, 1e-2] }}\n"
            ),
        )
        .unwrap();
        let out = sweep(dir.path(), &spec, &["--dry-run"])
            .success()
            .stdout(predicate::str::contains(format!("{trials} runs")))
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|id| id.len() == 12)
            .collect::<Vec<_>>()
    };
    let few = search(3);
    let more = search(7);
    assert_eq!(few.len(), 3);
    assert_eq!(more.len(), 7);
    assert_eq!(
        few[..],
        more[..3],
        "raising trials keeps the earlier trials' runs"
    );
    assert!(
        !dir.path().join("results").exists(),
        "a dry run writes nothing"
    );
}

#[test]
fn search_trials_that_draw_the_same_config_are_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 5, "[2e-4]", "[0]");
    let text = std::fs::read_to_string(&spec).unwrap();
    let text = text.split("[sweep]").next().unwrap();
    std::fs::write(
        &spec,
        format!(
            "{text}[search]\nstrategy = \"random\"\ntrials = 6\n[search.space]\n\"train.d_steps\" = {{ int = [1, 2] }}\n"
        ),
    )
    .unwrap();
    // Six trials over two values: two runs, each listed (and trained) once.
    sweep(dir.path(), &spec, &["--dry-run"])
        .success()
        .stdout(predicate::str::contains("2 runs: 2 new\n"));
}

#[test]
fn sweep_entries_train_settings_that_apply_to_some_values_only() {
    // `train.clip` is WGAN's alone: crossed with the other losses it would be refused.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 2, "[2e-4]", "[0]");
    edit_spec(&spec, |text| {
        let base = &text[..text.find("[sweep]").unwrap()];
        format!(
            "{base}[[sweep]]\n\"train.loss\" = [\"bce\", \"hinge\"]\n\
             [[sweep]]\n\"train.loss\" = [\"wgan\"]\n\"train.clip\" = [0.01, 0.05]\n"
        )
    });
    let dry = sweep(dir.path(), &spec, &["--dry-run"]).success();
    let table = String::from_utf8(dry.get_output().stdout.clone()).unwrap();
    assert!(
        table.contains("train.clip") && table.contains("4 runs: 4 new"),
        "{table}"
    );
    sweep(dir.path(), &spec, &[]).success();
    let rows = csv_columns(&runs_csv(dir.path(), &[]), &["status"]);
    assert_eq!(rows, vec![vec!["finished".to_string()]; 4]);
    let clips = common::texts(
        &db(dir.path()),
        "SELECT json_extract(config, '$.train.loss') || ' ' || \
         coalesce(json_extract(config, '$.train.clip'), '-') FROM runs ORDER BY 1",
    );
    assert_eq!(clips, ["bce -", "hinge -", "wgan 0.01", "wgan 0.05"]);
    // The report says which runs have no clip at all, rather than an empty value.
    runner()
        .current_dir(dir.path())
        .arg("report")
        .assert()
        .success();
    let pages = dir.path().join("results/report/tiny");
    let page = std::fs::read_to_string(pages.join("index.html")).unwrap();
    assert!(!page.contains("train.clip = <"), "{page}");
    let legends: String = (std::fs::read_dir(&pages).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "svg"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    assert!(legends.contains("train.clip = unset"), "{legends}");
    assert!(!legends.contains("train.clip = <"), "{legends}");
}

#[test]
fn runs_record_the_runner_that_trained_them_and_a_rerun_names_other_runners() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 10, "[1e-4, 2e-4]", "[0]");
    let out = runner().arg("--version").assert().success();
    let version = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    let version = version.trim().strip_prefix("runner ").unwrap().to_string();
    assert!(version.starts_with(env!("CARGO_PKG_VERSION")), "{version}");
    let versions = || {
        common::texts(
            &db(dir.path()),
            "SELECT coalesce(version, 'NULL') FROM runs ORDER BY id",
        )
    };
    sweep(dir.path(), &spec, &[])
        .success()
        .stderr(predicate::str::contains("another runner").not());
    assert_eq!(versions(), [version.clone(), version.clone()]);
    let ids = common::texts(&db(dir.path()), "SELECT id FROM runs ORDER BY id");
    assert_eq!(show_json(dir.path(), &ids[0])["version"], version.as_str());
    let page = dir
        .path()
        .join(format!("results/report/tiny/{}/index.html", ids[0]));
    let page = std::fs::read_to_string(page).unwrap();
    assert!(page.contains(&format!("by runner {version}")), "{page}");
    assert!(
        page.contains(&format!("Written by runner {version}.")),
        "{page}"
    );

    // As if an older runner had trained them: one that recorded its version, and one from
    // before runs recorded it. The rerun keeps both and says so.
    let conn = Connection::open(dir.path().join("results/runs.sqlite")).unwrap();
    conn.execute(
        "UPDATE runs SET version = '0.0.9 (abc)' WHERE id = ?1",
        [&ids[0]],
    )
    .unwrap();
    conn.execute("UPDATE runs SET version = NULL WHERE id = ?1", [&ids[1]])
        .unwrap();
    sweep(dir.path(), &spec, &["--no-report"])
        .success()
        .stderr(predicate::str::contains(format!(
            "tiny: 2 of the runs kept as they are were trained by another runner (1 by 0.0.9 \
             (abc), 1 by a release that did not record its version; this is {version}); \
             --force trains them again"
        )))
        .stdout(predicate::str::contains("2 skipped"));
    assert_eq!(versions(), ["0.0.9 (abc)", "NULL"]);
    sweep(dir.path(), &spec, &["--dry-run"])
        .success()
        .stdout(predicate::str::contains(
            "--force starts all over; 2 of the runs skipped were trained by another runner)",
        ));
    // The compare page of the two names the runners beside the settings that differ.
    runner()
        .current_dir(dir.path())
        .arg("report")
        .assert()
        .success();
    let compares: Vec<String> = std::fs::read_dir(dir.path().join("results/report/tiny"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("compare") && p.extension().unwrap() == "html")
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        compares
            .iter()
            .any(|page| page.contains("runner") && page.contains("0.0.9 (abc)")),
        "no compare page names the runners"
    );
    // Trained again by this runner, they record it, and a rerun has nothing to say.
    sweep(dir.path(), &spec, &["--no-report", "--force"]).success();
    assert_eq!(versions(), [version.clone(), version.clone()]);
    sweep(dir.path(), &spec, &["--no-report"])
        .success()
        .stderr(predicate::str::contains("another runner").not());
    // A longer run that continues a shorter one says when another runner trained those steps,
    // and records it as an event at the step it goes on from.
    conn.execute(
        "UPDATE runs SET version = '0.0.9 (abc)' WHERE id = ?1",
        [&ids[0]],
    )
    .unwrap();
    restamp_records(dir.path(), &ids[0], "version", &version, "0.0.9 (abc)");
    edit_spec(&spec, |s| s.replace("steps = 10", "steps = 20"));
    let out = sweep(dir.path(), &spec, &["--no-report"]).success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    let continues: Vec<&str> = (stderr.lines())
        .filter(|l| l.contains(" continues run "))
        .collect();
    assert_eq!(continues.len(), 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            ": its steps to 10 were trained by 0.0.9 (abc), the rest by {version}"
        )),
        "{stderr}"
    );
    for line in continues {
        let by_other = line.contains("10 steps by another runner (0.0.9 (abc)): those steps");
        assert_eq!(
            by_other,
            line.contains(&format!("continues run {},", ids[0])),
            "{line}"
        );
        assert!(by_other || !line.contains("another runner"), "{line}");
    }
    let changes = common::texts(
        &db(dir.path()),
        "SELECT c.detail || ' / ' || e.step || ': ' || e.detail FROM events e \
         JOIN events c ON c.run_id = e.run_id AND c.kind = 'continues' \
         WHERE e.kind = 'runner_changed'",
    );
    assert_eq!(
        changes,
        [format!(
            "run {} (the same config, trained for 10 steps): its steps are this run's first / \
             10: its steps to 10 were trained by 0.0.9 (abc), the rest by {version}",
            ids[0]
        )]
    );
}

#[test]
fn runs_record_their_cpu_kernels_and_a_run_going_on_with_other_ones_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 10, "[1e-4]", "[0, 1]");
    sweep(dir.path(), &spec, &["--no-report"]).success();
    let conn = db(dir.path());
    let kernels = common::texts(&conn, "SELECT coalesce(kernels, 'NULL') FROM runs");
    let ours = kernels[0].clone();
    assert!(
        ["avx512f", "avx2+fma", "sse2", "native"].contains(&ours.as_str()),
        "{kernels:?}"
    );
    assert_eq!(kernels, [ours.clone(), ours.clone()]);
    // As if the first had trained on a node whose kernels are narrower (a cluster's nodes
    // differ): in its records and in the database.
    let ids = common::texts(&conn, "SELECT id FROM runs ORDER BY id");
    restamp_records(dir.path(), &ids[0], "kernels", &ours, "sse9");
    conn.execute("UPDATE runs SET kernels = 'sse9' WHERE id = ?1", [&ids[0]])
        .unwrap();
    // `compare` shows the kernels where the runs differ in them.
    let table = stdout_of(command_in(dir.path(), "compare", &[&ids[0], &ids[1]]));
    let row = (table.lines())
        .find(|line| line.starts_with("kernels"))
        .unwrap_or_else(|| panic!("no kernels row: {table}"));
    assert!(row.contains("sse9") && row.contains(&ours), "{row}");
    // So do the report's run page and its page comparing the two.
    command_in(dir.path(), "report", &[]).success();
    let pages = dir.path().join("results/report/tiny");
    let run_page = std::fs::read_to_string(pages.join(&ids[0]).join("index.html")).unwrap();
    assert!(
        run_page.contains("on <code>cpu-flex</code> with <code>sse9</code> kernels"),
        "{run_page}"
    );
    let compare = std::fs::read_to_string(common::compare_page(&pages)).unwrap();
    assert!(
        compare.contains("cpu-flex with sse9 kernels")
            && compare.contains(&format!("cpu-flex with {ours} kernels")),
        "{compare}"
    );
    // Longer runs continue them: the one whose steps were trained with other kernels says so
    // and records it at the step it goes on from; the other has nothing to say.
    edit_spec(&spec, |s| s.replace("steps = 10", "steps = 20"));
    let out = sweep(dir.path(), &spec, &["--no-report"]).success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    let said = format!(
        "its steps to 10 were trained on cpu-flex with sse9 kernels, the rest on cpu-flex \
         with {ours} kernels, which round differently: its losses from here are not those of \
         an uninterrupted run"
    );
    assert_eq!(stderr.matches(&said).count(), 1, "{stderr}");
    let changes = common::texts(
        &db(dir.path()),
        "SELECT e.step || ': ' || e.detail FROM events e WHERE e.kind = 'backend_changed'",
    );
    assert_eq!(changes, [format!("10: {said}")]);
    // The continued runs train with this CPU's kernels, and record that.
    let kernels = common::texts(
        &db(dir.path()),
        "SELECT kernels FROM runs WHERE total_steps = 20",
    );
    assert_eq!(kernels, [ours.clone(), ours.clone()]);
}

#[test]
fn compare_puts_runs_side_by_side_with_the_settings_that_differ() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 6, "[1e-4, 4e-4]", "[0]");
    edit_spec(&spec, |text| {
        text.replace("eval_samples = 0", "eval_samples = 50")
    });
    sweep(dir.path(), &spec, &["--no-report"]).success();
    let conn = db(dir.path());
    let ids = common::texts(&conn, "SELECT id FROM runs ORDER BY id");
    let compare = |args: &[&str]| command_in(dir.path(), "compare", args);
    // One column per run, in the order given (a prefix and a directory name runs too).
    let run_dir: String = conn
        .query_row("SELECT run_dir FROM runs WHERE id = ?1", [&ids[0]], |r| {
            r.get(0)
        })
        .unwrap();
    let csv = stdout_of(compare(&[&ids[1][..6], &run_dir, "--format", "csv"]));
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["run", ids[1].as_str(), ids[0].as_str()]
    );
    let fields: std::collections::HashMap<String, Vec<String>> = (reader.records())
        .map(|row| {
            let row = row.unwrap();
            (
                row[0].to_string(),
                vec![row[1].to_string(), row[2].to_string()],
            )
        })
        .collect();
    // The setting that differs, as the params table records it; not those that do not.
    for (i, id) in [&ids[1], &ids[0]].into_iter().enumerate() {
        let lr: f64 = conn
            .query_row(
                "SELECT value FROM params WHERE run_id = ?1 AND key = 'train.lr'",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(fields["train.lr"][i].parse::<f64>().unwrap(), lr, "{csv}");
        // Each score is the run's last evaluation's.
        let fid: f64 = conn
            .query_row(
                "SELECT value FROM evals WHERE run_id = ?1 AND metric = 'fid' \
                 ORDER BY step DESC LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(fields["fid"][i].parse::<f64>().unwrap(), fid, "{csv}");
        assert_eq!(fields["steps"][i], "6");
        assert_eq!(fields["eval_step"][i], "6");
    }
    for same in [
        "train.seed",
        "train.batch_size",
        "data.dir",
        "note",
        "version",
    ] {
        assert!(!fields.contains_key(same), "{same} in:\n{csv}");
    }
    assert!(fields.contains_key("best_fid") && fields.contains_key("kid"));
    // A note's line break and tab stay inside its cell (`tag` refuses other control
    // characters).
    command_in(dir.path(), "tag", &[&ids[0], "--note", "blurry\n\tred"]).success();
    let table = stdout_of(compare(&[&ids[0], &ids[1]]));
    let note = table.lines().find(|l| l.starts_with("note ")).unwrap();
    assert!(note.contains(r"blurry\n\tred"), "{table}");
    // --all: every setting (where the data lies is none).
    let all = stdout_of(compare(&[&ids[0], &ids[1], "--all"]));
    assert!(all.lines().any(|l| l.starts_with("train.seed ")), "{all}");
    assert!(!all.contains("data.dir"), "{all}");
    // JSON: one object per run.
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&stdout_of(compare(&[&ids[0], &ids[1], "--format", "json"]))).unwrap();
    assert_eq!(json.len(), 2);
    assert_eq!(json[1]["run"], ids[1].as_str());
    assert!(json[1]["train.lr"].is_number() && json[1]["fid"].is_number());
    // One run named twice compares nothing; an unknown id is named.
    compare(&[&ids[0], &ids[0][..8]])
        .code(1)
        .stderr(predicate::str::contains("give two or more runs to compare"));
    compare(&[&ids[0], "ffffffff"])
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("no run `ffffffff`"));
}

#[test]
fn train_takes_a_recorded_run_in_place_of_its_spec() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), 6, "[2e-4]", "[0]");
    sweep(dir.path(), &spec, &["--no-report"]).success();
    let conn = db(dir.path());
    let (first, run_dir): (String, String) = conn
        .query_row("SELECT id, run_dir FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let train = |args: &[&str]| command_in(dir.path(), "train", args);
    // As it is: the run itself, finished.
    let again = stdout_of(train(&[&first[..6]]));
    assert!(
        again.contains(&format!("run {first} already finished at step 6")),
        "{again}"
    );
    // Its config printed as a spec trains the same run.
    let printed = stdout_of(train(&[&run_dir, "--dry-run"]));
    std::fs::write(dir.path().join("saved.toml"), &printed).unwrap();
    let saved = stdout_of(train(&["saved.toml", "--dry-run"]));
    assert!(saved.contains(&format!("(run {first} in ")), "{saved}");
    // The run directory's config.toml (which names no experiment) stands for the run.
    let own = stdout_of(train(&[&format!("{run_dir}/config.toml"), "--dry-run"]));
    assert_eq!(own, printed);
    // Longer: a new run that goes on from it, its first steps bitwise the run's.
    train(&[&first, "--steps", "12"]).success();
    let longer: String = conn
        .query_row(
            "SELECT id FROM runs WHERE steps_done = 12 AND experiment = 'tiny'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let losses = |id: &str| -> Vec<(i64, f64)> {
        let mut statement = conn
            .prepare("SELECT step, value FROM metrics WHERE run_id = ?1 AND step <= 6 ORDER BY step, name")
            .unwrap();
        statement
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(losses(&longer).len(), 12);
    assert_eq!(losses(&longer), losses(&first));
    // Changed: a new run of its experiment with the value set.
    train(&[&first, "--set", "train.lr=1e-3"]).success();
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM params p JOIN runs r ON r.id = p.run_id \
             WHERE r.experiment = 'tiny' AND p.key = 'train.lr' AND p.value = 1e-3"
        ),
        1
    );
    // Elsewhere, unrecorded: the same losses (the run reproduces).
    train(&[&first, "--out", "again"]).success();
    let csv = std::fs::read_to_string(dir.path().join("again/losses.csv")).unwrap();
    let last: Vec<f32> = csv
        .lines()
        .last()
        .unwrap()
        .split(',')
        .skip(1)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    let recorded: Vec<f32> = losses(&first)[10..]
        .iter()
        .map(|(_, v)| *v as f32)
        .collect();
    assert_eq!(last, recorded, "{csv}");
    assert_eq!(count(&conn, "SELECT count(*) FROM runs"), 3);
    // Neither a spec nor a run; --db beside --out means nothing with a spec file.
    train(&["nothere"]).code(1).stderr(predicate::str::contains(
        "`nothere`: no such spec file, nor run",
    ));
    train(&["tiny.toml", "--out", "run", "--db", "other.sqlite"])
        .code(1)
        .stderr(predicate::str::contains(
            "a run trained with --out is not recorded",
        ));
    // A recorded config this runner cannot read (a key of another release) is named as such.
    conn.execute(
        "UPDATE runs SET config = json_set(config, '$.train.warp', 9) WHERE id = ?1",
        [&first],
    )
    .unwrap();
    train(&[&first])
        .code(1)
        .stderr(predicate::str::contains(format!(
            "run {first}: its recorded config is not one this runner reads"
        )))
        .stderr(predicate::str::contains("warp"));
}
