//! What a hostile (or unlucky) user does, and what must survive it: run identity across
//! experiments and data, concurrent sweeps on one database, a database that stops accepting
//! writes, a full disk, a deleted database, absurd sizes, signals, and the smaller traps.

use crate::common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{count, db, fixture_dir, runner};
use predicates::prelude::*;
use rusqlite::Connection;

/// A tiny vanilla-GAN spec named `name` over `seeds`, `steps` steps, one metric row per step.
fn write_spec(dir: &Path, name: &str, steps: u64, seeds: &str) -> PathBuf {
    let model = common::tiny_gan_model_toml();
    let spec = dir.join(format!("{name}.toml"));
    std::fs::write(
        &spec,
        format!(
            "name = \"{name}\"\n{model}[train]\nsteps = {steps}\nbatch_size = 16\n[log]\n\
             sample_every = 10\ncheckpoint_every = 10\nmetrics_every = 1\neval_samples = 0\n\
             [sweep]\n\"train.seed\" = {seeds}\n"
        ),
    )
    .unwrap();
    spec
}

fn sweep_in(dir: &Path, spec: &Path, data: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    runner()
        .current_dir(dir)
        .arg("sweep")
        .arg(spec)
        .arg("--data-dir")
        .arg(data)
        .arg("--no-report")
        .args(extra)
        .assert()
}

fn sweep(dir: &Path, spec: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    sweep_in(dir, spec, &fixture_dir(), extra)
}

/// `runner train <spec> --data-dir <data>` in `dir`.
fn train(dir: &Path, spec: &Path, data: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    runner()
        .current_dir(dir)
        .arg("train")
        .arg(spec)
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .assert()
}

fn spawn_sweep(dir: &Path, spec: &Path, extra: &[&str]) -> Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(dir)
        .arg("sweep")
        .arg(spec)
        .arg("--data-dir")
        .arg(fixture_dir())
        .arg("--no-report")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every row of the tables that hold results, as text, in a stable order.
fn dump(conn: &Connection) -> Vec<String> {
    let mut out = Vec::new();
    for (table, columns) in [
        (
            "runs",
            "id, experiment, config, status, started_at, finished_at, error, steps_done, total_steps, run_dir, data_id, version",
        ),
        ("params", "*"),
        ("metrics", "*"),
        ("samples", "*"),
        ("checkpoints", "*"),
        ("evals", "*"),
    ] {
        let mut stmt = conn
            .prepare(&format!("SELECT {columns} FROM {table} ORDER BY 1, 2, 3"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        out.extend(rows.map(|r| format!("{table}: {}", r.unwrap())));
    }
    out
}

fn signal(child: &Child, name: &str) {
    assert!(
        std::process::Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits until `sql` (a count) on the database reaches `at_least`.
fn wait_for(dir: &Path, sql: &str, at_least: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "timed out waiting for `{sql}`");
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(conn) = Connection::open(dir.join("results/runs.sqlite"))
            && conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .is_ok_and(|n| n >= at_least)
        {
            return;
        }
    }
}

#[test]
fn the_report_never_replaces_run_directories() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "report", 3, "[0]");
    sweep(dir.path(), &spec, &[])
        .failure()
        .stderr(predicate::str::contains("`name`").and(predicate::str::contains("reserved")));
    let spec = write_spec(dir.path(), "tiny", 3, "[0]");
    sweep(dir.path(), &spec, &[]).success();
    for out in ["results/tiny", "results"] {
        runner()
            .current_dir(dir.path())
            .args(["report", "--out", out])
            .assert()
            .failure()
            .stderr(predicate::str::contains("holds the directory of run"));
    }
    let conn = db(dir.path());
    let run_dir: String = conn
        .query_row("SELECT run_dir FROM runs", [], |r| r.get(0))
        .unwrap();
    runner()
        .current_dir(dir.path())
        .args(["report", "--out", &format!("{run_dir}/samples")])
        .assert()
        .failure()
        .stderr(predicate::str::contains("lies inside the directory of run"));
    assert!(dir.path().join(run_dir).join("checkpoints").is_dir());
    // A symlinked --out is written through, and stays a link.
    let target = dir.path().join("site");
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
    runner()
        .current_dir(dir.path())
        .args(["report", "--out", "link"])
        .assert()
        .success();
    assert!(dir.path().join("link").is_symlink());
    assert!(target.join("index.html").is_file());
}

#[test]
fn runs_belong_to_their_experiment_and_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_spec(dir.path(), "first", 3, "[0]");
    let second = write_spec(dir.path(), "second", 3, "[0]");
    sweep(dir.path(), &first, &[]).success();
    sweep(dir.path(), &second, &[])
        .success()
        .stdout(predicate::str::contains("1 finished"));
    let conn = db(dir.path());
    assert_eq!(
        count(
            &conn,
            "SELECT count(DISTINCT id) FROM runs WHERE status = 'finished'"
        ),
        2
    );
    for name in ["first", "second"] {
        runner()
            .current_dir(dir.path())
            .args(["runs", "--experiment", name, "--format", "csv"])
            .assert()
            .success()
            .stdout(predicate::str::contains("finished"));
    }
    // The same data elsewhere is the same run; other data is another run.
    let moved = dir.path().join("moved-data");
    std::fs::create_dir(&moved).unwrap();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), moved.join(entry.file_name())).unwrap();
        }
    }
    sweep_in(dir.path(), &first, &moved, &[])
        .success()
        .stdout(predicate::str::contains("1 skipped"));
    let other = dir.path().join("other-data");
    std::fs::create_dir(&other).unwrap();
    let images =
        ganrunner::data::idx::read(&fixture_dir().join("train-images-idx3-ubyte.gz")).unwrap();
    let mut changed = images.clone();
    changed.data[1000] ^= 0xff;
    std::fs::write(
        other.join("train-images-idx3-ubyte"),
        ganrunner::data::idx::encode(&changed),
    )
    .unwrap();
    std::fs::copy(
        fixture_dir().join("train-labels-idx1-ubyte.gz"),
        other.join("train-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    sweep_in(dir.path(), &first, &other, &[])
        .success()
        .stdout(predicate::str::contains("1 finished"));
    assert_eq!(
        count(&db(dir.path()), "SELECT count(DISTINCT data_id) FROM runs"),
        2
    );
}

#[test]
fn concurrent_sweeps_train_each_run_once_and_lose_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny", 40, "[0, 1, 2, 3, 4, 5]");
    let children: Vec<Child> = (0..3)
        .map(|_| spawn_sweep(dir.path(), &spec, &["--jobs", "2"]))
        .collect();
    let mut trained = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let finished: usize = stdout
            .split(" finished")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{stdout}"));
        trained += finished;
    }
    assert_eq!(trained, 6, "each run trained by exactly one process");
    let conn = db(dir.path());
    assert_eq!(
        count(&conn, "SELECT count(*) FROM runs WHERE status = 'finished'"),
        6
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM metrics"), 6 * 40 * 2);
    // Each run's records were written by one process only.
    for entry in std::fs::read_dir(dir.path().join("results/tiny")).unwrap() {
        let records = std::fs::read_to_string(entry.unwrap().path().join("records.jsonl")).unwrap();
        let starts = records.matches("\"RunStarted\"").count();
        assert_eq!(starts, 1, "{records}");
    }
}

#[test]
fn a_database_that_stops_taking_writes_stops_the_runs_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny", 3000, "[0, 1]");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(dir.path())
        .args(["sweep"])
        .arg(&spec)
        .arg("--data-dir")
        .arg(fixture_dir())
        .args(["--no-report", "--jobs", "2"])
        .env("GANRUNNER_DB_TIMEOUT", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(dir.path(), "SELECT min(steps_done) FROM runs", 50);
    // Another program holds the write lock past the runner's timeout.
    let mut blocker = db(dir.path());
    let tx = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let held_at = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            held_at.elapsed() < Duration::from_secs(60),
            "the runs did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(tx);
    drop(blocker);
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("database is locked"), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    let conn = db(dir.path());
    assert_eq!(
        count(&conn, "SELECT count(*) FROM runs WHERE status = 'finished'"),
        0,
        "nothing is called finished"
    );
    let before: i64 = count(&conn, "SELECT count(*) FROM metrics");
    assert!(before < 2 * 3000 * 2);
    drop(conn);
    // The rerun merges what the database missed and resumes: every step's row, once.
    sweep(dir.path(), &spec, &["--jobs", "2"])
        .success()
        .stdout(predicate::str::contains("2 finished"));
    assert_eq!(
        count(&db(dir.path()), "SELECT count(*) FROM metrics"),
        2 * 3000 * 2
    );
}

#[test]
fn a_deleted_database_is_rebuilt_from_the_runs_records() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny", 12, "[0, 1]");
    sweep(dir.path(), &spec, &[]).success();
    let first = dump(&db(dir.path()));
    // A damaged database (its pages overwritten, or all of it) is left as it is, and every
    // command says how to get its rows back.
    let path = dir.path().join("results/runs.sqlite");
    let good = std::fs::read(&path).unwrap();
    let mut pages_damaged = good.clone();
    for byte in pages_damaged.iter_mut().skip(4096).step_by(7) {
        *byte ^= 0x55;
    }
    for damaged in [pages_damaged, vec![0x5a; good.len()]] {
        std::fs::write(&path, &damaged).unwrap();
        let advice = "move it aside with any -wal and -shm file beside it, then sweep each spec";
        sweep(dir.path(), &spec, &[])
            .failure()
            .stderr(predicate::str::contains(advice));
        for command in [
            &["runs"][..],
            &["query", "SELECT * FROM metrics"],
            &["report"],
        ] {
            runner()
                .current_dir(dir.path())
                .args(command)
                .assert()
                .failure()
                .stderr(predicate::str::contains(advice));
        }
        assert!(std::fs::read(&path).unwrap() == damaged, "left as it was");
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("results/runs.sqlite{suffix}")));
    }
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("2 skipped"));
    let rebuilt = dump(&db(dir.path()));
    let missing: Vec<_> = first
        .iter()
        .filter(|r| !rebuilt.contains(r))
        .take(3)
        .collect();
    let extra: Vec<_> = rebuilt
        .iter()
        .filter(|r| !first.contains(r))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );
    assert_eq!(first.len(), rebuilt.len());
    // A damaged line (a flipped byte) costs its own event, said so, and no other.
    let run_dir = std::fs::read_dir(dir.path().join("results/tiny"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(run_dir.join("records.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let metric = lines.iter().position(|l| l.contains("Metric")).unwrap();
    lines[metric].replace_range(0..1, "!");
    std::fs::write(run_dir.join("records.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::remove_file(dir.path().join("results/runs.sqlite")).unwrap();
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("2 skipped"))
        .stderr(predicate::str::contains(format!(
            "records.jsonl has damaged lines ({}); their events are skipped",
            metric + 1
        )));
    assert_eq!(dump(&db(dir.path())).len(), first.len() - 1);
    // Checkpoints without records or database rows are kept aside, not recorded as empty runs.
    for entry in std::fs::read_dir(dir.path().join("results/tiny")).unwrap() {
        std::fs::remove_file(entry.unwrap().path().join("records.jsonl")).unwrap();
    }
    std::fs::remove_file(dir.path().join("results/runs.sqlite")).unwrap();
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("2 finished"));
    assert_eq!(
        count(&db(dir.path()), "SELECT count(*) FROM metrics"),
        2 * 12 * 2
    );
    let aside = std::fs::read_dir(dir.path().join("results/tiny"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("unrecorded")
        })
        .count();
    assert_eq!(aside, 2);
}

#[test]
fn query_keeps_columns_that_share_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny", 10, "[0]");
    sweep(dir.path(), &spec, &[]).success();
    let sql = "SELECT m.step, s.step FROM metrics m JOIN samples s ON s.run_id = m.run_id AND s.step = 10 WHERE m.step = 3 LIMIT 1";
    for (format, expected) in [("json", "\"step_2\": 10"), ("csv", "step,step_2\n3,10")] {
        runner()
            .current_dir(dir.path())
            .args(["query", sql, "--format", format])
            .assert()
            .success()
            .stdout(predicate::str::contains(expected));
    }
}

#[test]
fn absurd_values_are_refused_with_the_key_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = |name: &str, body: &str, expected: &str| {
        let spec = dir.path().join(format!("{name}.toml"));
        std::fs::write(&spec, format!("name = \"{name}\"\n{body}")).unwrap();
        train(dir.path(), &spec, &fixture_dir(), &["--out", "scratch"])
            .code(1)
            .stderr(
                predicate::str::contains(expected).and(predicate::str::contains("panicked").not()),
            );
    };
    bad("seed", "[train]\nseed = 9223372036854775808\n", "seed");
    bad(
        "betas",
        "[train]\nbetas = [0.5, 0.9, 0.99]\n",
        "exactly 2 values, got 3",
    );
    bad(
        "latent",
        "[model]\narch = \"dcgan\"\nlatent_dim = 100000000\n",
        "`model.latent_dim` = 100000000",
    );
    bad(
        "batch",
        "[train]\nsteps = 2\nbatch_size = 601\n",
        "`train.batch_size` = 601 is larger than the training split (600 images",
    );
    // Those runs failed before writing anything, and left no directory behind.
    assert!(!dir.path().join("scratch").exists());
    // Recorded, the run that got as far as its data is a failed run, as in a sweep.
    train(
        dir.path(),
        &dir.path().join("batch.toml"),
        &fixture_dir(),
        &[],
    )
    .code(1)
    .stderr(predicate::str::contains(
        "failed: `train.batch_size` = 601 is larger",
    ));
    assert_eq!(
        common::texts(&db(dir.path()), "SELECT status FROM runs"),
        ["failed"]
    );
    runner()
        .args(["bench", "--batch", "100000000", "--steps", "1"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--batch"));
    // Absurd step counts: an error naming the flag, not an allocation that aborts.
    runner()
        .args(["bench", "--model", "gan", "--steps", "100000000000000"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "--steps and --warmup must be at most 1000000",
        ));
    // Refused before the sweep announces a report or touches the database.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let spec = write_spec(&fresh, "jobs", 2, "[0]");
    sweep(&fresh, &spec, &["--jobs", "0"])
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(predicate::str::contains("--jobs"));
    assert!(!fresh.join("results").exists());
    // An empty training split.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let none = ganrunner::data::idx::IdxArray {
        dims: vec![0, 28, 28],
        data: vec![],
    };
    std::fs::write(
        empty.join("train-images-idx3-ubyte"),
        ganrunner::data::idx::encode(&none),
    )
    .unwrap();
    let no_labels = ganrunner::data::idx::IdxArray {
        dims: vec![0],
        data: vec![],
    };
    std::fs::write(
        empty.join("train-labels-idx1-ubyte"),
        ganrunner::data::idx::encode(&no_labels),
    )
    .unwrap();
    let spec = dir.path().join("empty.toml");
    std::fs::write(&spec, "name = \"empty\"\n[train]\nepochs = 1\n").unwrap();
    train(dir.path(), &spec, &empty, &[])
        .code(1)
        .stderr(predicate::str::contains("the training split has no images"));
}

#[test]
fn a_signal_ends_a_command_still_waiting_to_read_its_spec_from_a_pipe() {
    // `runner sweep <(make-spec)` reads its spec from a pipe, and one that no one writes
    // blocks the read. Ctrl-C or SIGTERM there ended nothing: the runner had already taken
    // them over (said it would stop runs at the end of their step, and waited on). Now they
    // end the command as they end `cat`, before anything is written. (SIGTERM here: a test
    // run from a background job, as CI may be, inherits SIGINT ignored.)
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("spec.toml");
    common::make_fifo(&fifo);
    for command in ["sweep", "train"] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
            .current_dir(dir.path())
            .args([command, "spec.toml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // (Long enough to be blocked in the read.)
        std::thread::sleep(Duration::from_millis(500));
        signal(&child, "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("`runner {command}` on a pipe went on after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(15)
        );
        assert!(!dir.path().join("results").exists());
    }
}

#[test]
fn sweeps_exit_non_zero_when_runs_fail_and_sigterm_is_an_interrupt() {
    let dir = tempfile::tempdir().unwrap();
    // Every run fails (the batch is larger than the 600-image fixture).
    let spec = write_spec(dir.path(), "failing", 3, "[0, 1]");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("batch_size = 16", "batch_size = 700")).unwrap();
    sweep(dir.path(), &spec, &[])
        .code(1)
        .stderr(predicate::str::contains("2 of the runs failed"));
    // SIGTERM (a scheduler's stop) checkpoints and records `interrupted`, exit 130.
    let spec = write_spec(dir.path(), "long", 100_000, "[0]");
    let child = spawn_sweep(dir.path(), &spec, &[]);
    wait_for(
        dir.path(),
        "SELECT min(steps_done) FROM runs WHERE experiment = 'long'",
        20,
    );
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let status: String = db(dir.path())
        .query_row(
            "SELECT status FROM runs WHERE experiment = 'long'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "interrupted");
    // `train` too: the spec's base config is that run, which it resumes.
    let steps = "SELECT min(steps_done) FROM runs WHERE experiment = 'long'";
    let stopped_at: i64 = db(dir.path()).query_row(steps, [], |r| r.get(0)).unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(dir.path())
        .arg("train")
        .arg(&spec)
        .arg("--data-dir")
        .arg(fixture_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(dir.path(), steps, stopped_at + 10);
    signal(&child, "TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted at step"));
    let resumed_to: i64 = db(dir.path()).query_row(steps, [], |r| r.get(0)).unwrap();
    assert!(
        resumed_to >= stopped_at + 10,
        "{stopped_at} -> {resumed_to}"
    );
}

#[test]
fn smaller_traps() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny", 20, "[0]");
    sweep(dir.path(), &spec, &[]).success();
    // LIKE wildcards in an id prefix are literal.
    runner()
        .current_dir(dir.path())
        .args(["show", "%___"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no run `%___`"));
    // A huge argument is not echoed whole.
    let huge = "a".repeat(100_000);
    let said = runner()
        .current_dir(dir.path())
        .args(["show", &huge])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let said = String::from_utf8(said).unwrap();
    assert!(
        said.contains(&format!("no run `{}…`", "a".repeat(80))),
        "{said}"
    );
    assert!(said.len() < 300, "{} bytes", said.len());
    // A path that is not UTF-8 cannot be recorded as text: refused before anything is written
    // (the runs failed with a panic midway, left `pending`).
    let odd = std::ffi::OsStr::from_bytes(b"res\xff");
    runner()
        .current_dir(dir.path())
        .arg("sweep")
        .arg(&spec)
        .arg("--results")
        .arg(odd)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("(res\u{fffd}) is not valid UTF-8"));
    assert!(!dir.path().join(odd).exists());
    // A file given as the results directory: refused before the sweep starts, where each new
    // run was recorded as failed ("rf is a file, not a directory").
    std::fs::write(dir.path().join("rf"), "notes").unwrap();
    let db = dir.path().join("results/runs.sqlite");
    let stored = dump(&Connection::open(&db).unwrap());
    sweep(
        dir.path(),
        &spec,
        &["--results", "rf", "--set", "train.steps=30"],
    )
    .code(1)
    .stderr(predicate::str::contains(
        "rf: is a file, so the sweep's new runs cannot have their directories there (rf/tiny/",
    ));
    assert_eq!(dump(&Connection::open(&db).unwrap()), stored);
    assert_eq!(std::fs::read(dir.path().join("rf")).unwrap(), b"notes");
    // A directory is not a database.
    runner()
        .current_dir(dir.path())
        .args(["runs", "--db", "results"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("is a directory"));
    // Nor is a named pipe or a link to a device, which SQLite took for a failing disk and the
    // readers for no database at all: both are named as what they are, and left there.
    let pipe = dir.path().join("pipe.sqlite");
    common::make_fifo(&pipe);
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.sqlite")).unwrap();
    for db in ["pipe.sqlite", "zero.sqlite"] {
        let refused = format!("{db}: is not a regular file (a named pipe, or a link to a device)");
        sweep(dir.path(), &spec, &["--db", db])
            .code(1)
            .stderr(predicate::str::contains(&refused));
        for args in [&["runs"][..], &["query", "SELECT 1"], &["report"]] {
            runner()
                .current_dir(dir.path())
                .args(args)
                .args(["--db", db])
                .timeout(Duration::from_secs(60))
                .assert()
                .code(1)
                .stderr(predicate::str::contains(&refused));
        }
    }
    assert!(pipe.symlink_metadata().unwrap().file_type().is_fifo());
    // Another program's SQLite database is refused, byte for byte untouched, by writers and
    // readers alike; a file that is not SQLite at all is named.
    let other = dir.path().join("notes.sqlite");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE notes (x); INSERT INTO notes VALUES (1);")
        .unwrap();
    let before = std::fs::read(&other).unwrap();
    sweep(dir.path(), &spec, &["--db", "notes.sqlite"])
        .failure()
        .stderr(
            predicate::str::contains("not a ganrunner database")
                .and(predicate::str::contains("notes")),
        );
    for args in [&["runs"][..], &["query", "SELECT 1"], &["report"]] {
        runner()
            .current_dir(dir.path())
            .args(args)
            .args(["--db", "notes.sqlite"])
            .assert()
            .failure()
            .stderr(predicate::str::contains("not a ganrunner database"));
    }
    assert_eq!(std::fs::read(&other).unwrap(), before);
    std::fs::write(dir.path().join("noise.sqlite"), [7u8; 3000]).unwrap();
    sweep(dir.path(), &spec, &["--db", "noise.sqlite"])
        .failure()
        .stderr(predicate::str::contains(
            "noise.sqlite: file is not a database",
        ));
    // `train --out` a directory of the user's own writes nothing into it.
    let mine = dir.path().join("mine");
    std::fs::create_dir_all(mine.join("best")).unwrap();
    std::fs::write(mine.join("config.toml"), "my own").unwrap();
    train(dir.path(), &spec, &fixture_dir(), &["--out", "mine"])
        .failure()
        .stderr(predicate::str::contains("is not a run directory"));
    assert_eq!(
        std::fs::read_to_string(mine.join("config.toml")).unwrap(),
        "my own"
    );
    assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 2);
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    train(
        dir.path(),
        &spec,
        &fixture_dir(),
        &["--out", "empty", "--steps", "2"],
    )
    .success();
    // An OS error is printed once.
    let out = runner()
        .current_dir(dir.path())
        .args(["train", "nowhere.toml"])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("No such file").count(), 1, "{text}");
    // Rerunning `train --out` with fewer steps says so and still names the files.
    let rerun = |steps| {
        train(
            dir.path(),
            &spec,
            &fixture_dir(),
            &["--out", "results/tiny/train", "--steps", steps],
        )
    };
    rerun("20").success();
    rerun("10")
        .success()
        .stdout(
            predicate::str::contains("already at step 20")
                .and(predicate::str::contains("checkpoints/step-00000020")),
        )
        .stdout(predicate::str::is_match("samples: \\S+step-00000020.png").unwrap());
    // Sweeping what does not change training is refused before anything runs.
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text + "\"log.sample_every\" = [5, 10]\n").unwrap();
    sweep(dir.path(), &spec, &["--dry-run"])
        .failure()
        .stderr(predicate::str::contains("sweep.log.sample_every"));
    runner()
        .args(["generate", "--checkpoint"])
        .arg(dir.path().join("results/tiny/train"))
        .args(["--n", "18446744073709551615", "--out"])
        .arg(dir.path().join("x.png"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("--n"));
}

#[test]
fn an_experiment_never_takes_the_databases_place() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny", 10, "[0]");
    sweep(dir.path(), &spec, &[]).success();
    let before = dump(&db(dir.path()));
    // `runs.sqlite-wal` as a directory is where SQLite makes its log: every later command
    // failed to open the database. `runs.sqlite` itself was a run failed for nothing.
    for name in [
        "runs.sqlite",
        "runs.sqlite-wal",
        "runs.sqlite-shm",
        "runs.sqlite-journal",
    ] {
        let clash = write_spec(dir.path(), name, 10, "[0]");
        sweep(dir.path(), &clash, &[]).failure().stderr(
            predicate::str::contains("companion files").and(predicate::str::contains(name)),
        );
        train(dir.path(), &clash, &fixture_dir(), &[])
            .failure()
            .stderr(predicate::str::contains("choose another experiment name"));
        assert!(!dir.path().join("results").join(name).is_dir(), "{name}");
    }
    // Another database, another results directory: the same rule for their names.
    let other = write_spec(dir.path(), "mine.db-wal", 10, "[0]");
    sweep(
        dir.path(),
        &other,
        &["--db", "out/mine.db", "--results", "out"],
    )
    .failure()
    .stderr(predicate::str::contains("companion files"));
    // A file where the experiment's directory would go is named, and no run is failed for it.
    std::fs::write(dir.path().join("results/notes"), "mine").unwrap();
    let notes = write_spec(dir.path(), "notes", 10, "[0]");
    sweep(dir.path(), &notes, &[])
        .failure()
        .stderr(predicate::str::contains("results/notes: is a file"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("results/notes")).unwrap(),
        "mine"
    );
    assert_eq!(dump(&db(dir.path())), before);
    runner()
        .current_dir(dir.path())
        .args(["runs"])
        .assert()
        .success()
        .stdout(predicate::str::contains("tiny"));
}

#[test]
fn a_generator_with_broken_weights_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("boom.toml");
    let model = common::tiny_gan_model_toml();
    std::fs::write(
        &spec,
        format!("name = \"boom\"\n{model}[train]\nsteps = 20\nbatch_size = 16\nlr = 1e30\n[log]\ncheckpoint_every = 1\nkeep_checkpoints = 100\neval_samples = 0\n"),
    )
    .unwrap();
    train(
        dir.path(),
        &spec,
        &fixture_dir(),
        &["--out", "results/boom/train"],
    )
    .code(predicate::ne(2));
    let checkpoints = dir.path().join("results/boom/train/checkpoints");
    let last = std::fs::read_dir(&checkpoints)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let out = dir.path().join("broken.png");
    runner()
        .args(["generate", "--checkpoint"])
        .arg(&last)
        .arg("--out")
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("NaN or infinite"));
    assert!(!out.exists());
}

#[test]
fn outputs_never_land_in_a_run_directory_or_on_the_data() {
    // `generate --out results/<exp>/<id>/samples/step-00000000.png` replaced the run's grid.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "kept", 10, "[0]");
    sweep(dir.path(), &spec, &[]).success();
    let conn = db(dir.path());
    let (id, run_dir): (String, String) = conn
        .query_row("SELECT id, run_dir FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let run_dir = dir.path().join(run_dir);
    let files_of = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<_> = walkdir(dir)
            .into_iter()
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    };
    let before = files_of(&run_dir);
    std::os::unix::fs::symlink(&run_dir, dir.path().join("link")).unwrap();
    let grid = "samples/step-00000000.png";
    let run = run_dir.strip_prefix(dir.path()).unwrap();
    for out in [
        run.join(grid),
        run.join("samples/new.png"),
        run.join("config.toml.png"),
        run.join("made/../samples/x.npy"),
        run.join(".lock.npy"),
        Path::new("link").join(grid),
    ] {
        let refused = !out.ends_with("config.toml.png");
        let assert = runner()
            .current_dir(dir.path())
            .args(["generate", "--n", "4", "--checkpoint", &id, "--out"])
            .arg(&out)
            .assert();
        if refused {
            assert
                .code(1)
                .stderr(predicate::str::contains("is the run's own"));
        } else {
            std::fs::remove_file(dir.path().join(&out)).unwrap();
        }
    }
    runner()
        .current_dir(dir.path())
        .args(["export", "--checkpoint", &id, "--out"])
        .arg(run.join("checkpoints/g.safetensors"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is the run's own"));
    let inner = run.join("inner").display().to_string();
    for flag in ["--results", "--db"] {
        sweep(dir.path(), &spec, &[flag, &inner])
            .code(1)
            .stderr(predicate::str::contains("lies inside the run directory"));
    }
    train(dir.path(), &spec, &fixture_dir(), &["--out", &inner])
        .code(1)
        .stderr(predicate::str::contains("lies inside the run directory"));
    assert_eq!(files_of(&run_dir), before, "the run's files changed");
    // Beside the run directory is fine.
    runner()
        .current_dir(dir.path())
        .args([
            "generate",
            "--n",
            "4",
            "--checkpoint",
            &id,
            "--out",
            "beside.png",
        ])
        .assert()
        .success();
    // A data set's images are not replaced by samples.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let images = data.join("train-images-idx3-ubyte");
    std::fs::write(&images, b"digits").unwrap();
    runner()
        .args(["generate", "--n", "4", "--checkpoint"])
        .arg(dir.path().join(run))
        .arg("--out")
        .arg(&images)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("is a data set's file"));
    assert_eq!(std::fs::read(&images).unwrap(), b"digits");
}

/// Every file under `dir`, recursively.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walkdir(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn a_reader_that_goes_away_stops_no_run() {
    // `runner sweep ... 2>&1 | head -1`: the pipes close before the first line is written.
    // Every line after that used to panic (`failed printing to stderr`) and kill the run.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "gone", 12, "[1, 2]");
    let mut child = spawn_sweep(dir.path(), &spec, &["--jobs", "1"]);
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let conn = db(dir.path());
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM runs WHERE status = 'finished'"),
        2
    );
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM metrics WHERE name = 'd_loss'"),
        24
    );

    // A query's reader leaving early (`| head`) is not an error either.
    let mut query = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(dir.path())
        .args(["query", "SELECT * FROM metrics, metrics AS again"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(query.stdout.take());
    let output = query.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rm_deletes_a_runs_rows_and_files_but_never_a_run_being_trained() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny", 12, "[0, 1]");
    sweep(dir.path(), &spec, &[]).success();
    let long = write_spec(dir.path(), "long", 1_000_000, "[0]");
    let mut child = spawn_sweep(dir.path(), &long, &[]);
    wait_for(
        dir.path(),
        "SELECT count(*) FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.experiment = 'long'",
        5,
    );
    let rm = |args: &[&str]| {
        runner()
            .current_dir(dir.path())
            .arg("rm")
            .args(args)
            .assert()
    };
    let ids = common::texts(
        &db(dir.path()),
        "SELECT id FROM runs WHERE experiment = 'tiny' ORDER BY id",
    );
    // Without a terminal to ask on, nothing goes unless --yes; --dry-run only lists.
    rm(&["--experiment", "tiny"])
        .failure()
        .stderr(predicate::str::contains("pass --yes"));
    // Files the user saved in a run's folder go with it, and the listing says so.
    let run_dir = |id: &str| -> String {
        db(dir.path())
            .query_row("SELECT run_dir FROM runs WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    };
    std::fs::write(dir.path().join(run_dir(&ids[1])).join("notes.txt"), "x").unwrap();
    rm(&["--experiment", "tiny", "--dry-run"]).success().stdout(
        predicate::str::contains(&ids[0])
            .and(predicate::str::contains(&ids[1]))
            .and(predicate::str::contains(
                "with what you saved in it: notes.txt",
            ))
            .and(predicate::str::contains("would delete 2 runs")),
    );
    assert_eq!(count(&db(dir.path()), "SELECT count(*) FROM runs"), 3);
    // The run being trained is left alone, and trains on.
    rm(&["--experiment", "long", "--yes"])
        .code(1)
        .stderr(predicate::str::contains("left alone"));
    let long_dir: String = db(dir.path())
        .query_row(
            "SELECT run_dir FROM runs WHERE experiment = 'long'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(dir.path().join(&long_dir).join("records.jsonl").is_file());
    // One run by a prefix of its id: every row of it and its directory go, nothing else.
    rm(&[&ids[0][..6], "--yes"]).success();
    for table in [
        "params",
        "metrics",
        "samples",
        "checkpoints",
        "evals",
        "events",
    ] {
        let sql = format!("SELECT count(*) FROM {table} WHERE run_id = '{}'", ids[0]);
        assert_eq!(count(&db(dir.path()), &sql), 0, "{table}");
    }
    let run_dir = |id: &str| dir.path().join("results/tiny").join(id);
    assert!(!run_dir(&ids[0]).exists());
    assert!(run_dir(&ids[1]).join("records.jsonl").is_file());
    assert_eq!(
        count(
            &db(dir.path()),
            &format!("SELECT count(*) FROM metrics WHERE run_id = '{}'", ids[1])
        ),
        12 * 2
    );
    // A row that names some other directory (here the working directory) deletes nothing.
    let set_dir = |to: &str| {
        db(dir.path())
            .execute("UPDATE runs SET run_dir = ?1 WHERE id = ?2", [to, &ids[1]])
            .unwrap()
    };
    let kept = db(dir.path())
        .query_row("SELECT run_dir FROM runs WHERE id = ?1", [&ids[1]], |r| {
            r.get::<_, String>(0)
        })
        .unwrap();
    set_dir(".");
    rm(&[&ids[1], "-y"])
        .code(1)
        .stderr(predicate::str::contains("is not named after it"));
    assert!(spec.is_file() && run_dir(&ids[1]).is_dir());
    set_dir(&kept);
    // The last run of an experiment takes the experiment and its directory with it.
    rm(&[&ids[1], "-y"]).success();
    assert!(!dir.path().join("results/tiny").exists());
    assert_eq!(
        count(
            &db(dir.path()),
            "SELECT count(*) FROM experiments WHERE name = 'tiny'"
        ),
        0
    );
    signal(&child, "INT");
    child.wait().unwrap();
    assert!(dir.path().join(&long_dir).join("checkpoints").is_dir());
    // Deleted runs are not remembered: the sweep trains them afresh.
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("2 finished"));
}

#[test]
fn a_finished_run_whose_final_checkpoint_is_damaged_is_rebuilt_by_the_next_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "tiny", 15, "[0]");
    sweep(dir.path(), &spec, &[]).success();
    let metrics = || common::texts(&db(dir.path()), "SELECT step || name || value FROM metrics");
    let before = metrics();
    let run_dir = dir
        .path()
        .join(&common::texts(&db(dir.path()), "SELECT run_dir FROM runs")[0]);
    let generator = run_dir.join("checkpoints/step-00000015/generator.bpk");
    let mut bytes = std::fs::read(&generator).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&generator, bytes).unwrap();
    runner()
        .current_dir(dir.path())
        .args(["generate", "--n", "4", "--out", "x.png", "--checkpoint"])
        .arg(&run_dir)
        .assert()
        .failure()
        .stderr(predicate::str::contains("checksum mismatch"));
    // The dry run says so, and what the sweep will resume from.
    sweep(dir.path(), &spec, &["--dry-run"])
        .success()
        .stdout(predicate::str::contains("checkpoint lost 10/15"))
        .stdout(predicate::str::contains("1 run: 1 checkpoint lost"));
    sweep(dir.path(), &spec, &["--estimate"])
        .success()
        .stdout(predicate::str::contains(" for 1 run "));
    // Not skipped as finished: resumed from step 10 to the same end.
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("1 finished"));
    assert_eq!(metrics(), before);
    runner()
        .current_dir(dir.path())
        .args(["generate", "--n", "4", "--out", "x.png", "--checkpoint"])
        .arg(&run_dir)
        .assert()
        .success();
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("1 skipped"));
}

#[test]
fn generate_and_eval_read_a_run_that_is_still_training() {
    // A run checkpointing every step and keeping one deletes each checkpoint a step after
    // writing it: `generate` used to fail now and then with "generator.bpk: missing", reading
    // a checkpoint as it was deleted file by file.
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_gan_model_toml();
    let spec = dir.path().join("busy.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"busy\"\n{model}[train]\nsteps = 1000000\nbatch_size = 16\n[log]\n\
             sample_every = 1000000\ncheckpoint_every = 1\nkeep_checkpoints = 1\neval_samples = 0\n"
        ),
    )
    .unwrap();
    let mut training = std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
        .current_dir(dir.path())
        .args(["train", "busy.toml", "--out", "run", "--data-dir"])
        .arg(fixture_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = dir.path().join("run");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ganrunner::train::checkpoint::list(&run).is_empty() {
        assert!(Instant::now() < deadline, "no checkpoint in a minute");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut failures = Vec::new();
    for i in 0..100 {
        let out = dir.path().join(format!("g{}.png", i % 2));
        let output = runner()
            .args(["generate", "--n", "4", "--checkpoint"])
            .arg(&run)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        if !output.status.success() {
            failures.push(String::from_utf8_lossy(&output.stderr).into_owned());
        }
    }
    let eval = runner()
        .args(["eval", "--samples", "50", "--data-dir"])
        .arg(fixture_dir())
        .arg(&run)
        .output()
        .unwrap();
    training.kill().unwrap();
    training.wait().unwrap();
    assert!(
        failures.is_empty(),
        "{} of 100 failed: {failures:?}",
        failures.len()
    );
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
}

#[test]
fn an_empty_or_short_run_id_names_no_run() {
    // `runner rm --yes "$ID"` with ID unset: the empty prefix matched every run, so it
    // deleted the only run of a database.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "one", 4, "[0]");
    sweep(dir.path(), &spec, &[]).success();
    let id = common::texts(&db(dir.path()), "SELECT id FROM runs").remove(0);
    let run = |args: &[&str]| runner().current_dir(dir.path()).args(args).assert();
    for short in ["", &id[..1], &id[..3]] {
        run(&["rm", "--yes", short])
            .failure()
            .stderr(predicate::str::contains("needs at least 4 characters"));
        run(&["show", short]).failure();
        run(&["eval", short]).failure();
    }
    assert_eq!(count(&db(dir.path()), "SELECT count(*) FROM runs"), 1);
    assert!(dir.path().join("results/one").join(&id).is_dir());
    run(&["show", &id[..4]])
        .success()
        .stdout(predicate::str::contains(&id));
    run(&["show", &id[..6].to_uppercase()])
        .success()
        .stdout(predicate::str::contains(&id));
    // A prefix of more than 50 000 bytes failed, as a LIKE pattern, with SQLite's "LIKE or
    // GLOB pattern too complex"; compared as text now, `_` must still be no wildcard.
    for not_a_prefix in [format!("{}_", &id[..4]), "a".repeat(60_000)] {
        run(&["show", &not_a_prefix])
            .failure()
            .stderr(predicate::str::contains("no run `"));
    }
    // A prefix that two runs share is ambiguous even where a directory bears its name: it was
    // taken for that directory, whose message hid the clash.
    db(dir.path())
        .execute_batch(&format!(
            "CREATE TEMP TABLE twin AS SELECT * FROM runs; UPDATE twin SET id = '{id}x';
         INSERT INTO runs SELECT * FROM twin;"
        ))
        .unwrap();
    std::fs::create_dir_all(dir.path().join(&id[..4]).join("checkpoints")).unwrap();
    run(&["show", &id[..4]])
        .failure()
        .stderr(predicate::str::contains("matches 2 runs"));
}

#[test]
fn a_sweep_pointed_at_another_results_directory_keeps_each_run_where_it_is() {
    // A second sweep with `--results other` (same database) trained the finished run again in
    // other/ and pointed its row there; with `--results` a file, it recorded the finished run
    // as failed.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "moved", 6, "[0]");
    sweep(dir.path(), &spec, &[]).success();
    let rows = |sql: &str| common::texts(&db(dir.path()), sql);
    let id = rows("SELECT id FROM runs").remove(0);
    let before = dump(&db(dir.path()));
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    for results in ["other", "a-file"] {
        sweep(dir.path(), &spec, &["--results", results])
            .success()
            .stdout(predicate::str::contains("1 skipped"))
            .stderr(predicate::str::contains(format!("results/moved/{id}")));
    }
    assert_eq!(
        dump(&db(dir.path())),
        before,
        "nothing trained or recorded again"
    );
    assert!(!dir.path().join("other/moved").join(&id).exists());
    // A new point goes to the results directory given; an unfinished run resumes where it is.
    std::fs::remove_file(
        dir.path()
            .join("results/moved")
            .join(&id)
            .join("checkpoints/step-00000006/checkpoint.json"),
    )
    .unwrap();
    sweep(
        dir.path(),
        &spec,
        &["--results", "other", "--set", "sweep.train.seed=[0,1]"],
    )
    .success();
    let dirs = rows("SELECT run_dir FROM runs ORDER BY run_dir");
    assert_eq!(dirs.len(), 2);
    assert!(dirs[0].starts_with("other/moved/"), "{dirs:?}");
    assert_eq!(dirs[1], format!("results/moved/{id}"));
    assert_eq!(rows("SELECT DISTINCT status FROM runs"), ["finished"]);
    assert!(!dir.path().join("other/moved").join(&id).exists());
}

#[test]
fn commands_run_from_another_directory_find_the_runs_files() {
    // Run directories are recorded relative to where the sweep ran: from a subdirectory,
    // `runner eval <id> --db ../results/runs.sqlite` found no checkpoint, and `runner rm`
    // deleted the rows and left the files (0 B), orphaned.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "elsewhere", 6, "[0]");
    sweep(dir.path(), &spec, &[]).success();
    let id = common::texts(&db(dir.path()), "SELECT id FROM runs").remove(0);
    let sub = dir.path().join("notebooks");
    std::fs::create_dir(&sub).unwrap();
    let run = |args: &[&str]| {
        runner()
            .current_dir(&sub)
            .args(args)
            .args(["--db", "../results/runs.sqlite", "--data-dir"])
            .arg(fixture_dir())
            .assert()
    };
    run(&["eval", &id, "--samples", "50"])
        .success()
        .stdout(predicate::str::contains(format!(
            "../results/elsewhere/{id}/checkpoints"
        )));
    runner()
        .current_dir(&sub)
        .args(["generate", "--checkpoint", &id[..6], "--out", "g.png"])
        .args(["--db", "../results/runs.sqlite"])
        .assert()
        .success();
    assert!(sub.join("g.png").is_file());
    // A sweep from there, given the results directory, skips the run (it is where recorded).
    sweep(
        &sub,
        &spec,
        &["--db", "../results/runs.sqlite", "--results", "../results"],
    )
    .success()
    .stdout(predicate::str::contains("1 skipped"));
    // The report goes beside the database, with the run's samples.
    runner()
        .current_dir(&sub)
        .args(["report", "--db", "../results/runs.sqlite"])
        .assert()
        .success();
    let samples = dir.path().join("results/report/elsewhere").join(&id);
    assert!(samples.join("step-00000006.png").is_file());
    assert!(!sub.join("results").exists());
    runner()
        .current_dir(&sub)
        .args(["rm", "--yes", &id, "--db", "../results/runs.sqlite"])
        .assert()
        .success();
    assert_eq!(count(&db(dir.path()), "SELECT count(*) FROM runs"), 0);
    assert!(
        !dir.path().join("results/elsewhere").join(&id).exists(),
        "its files went too"
    );
}

#[test]
fn a_results_tree_moved_elsewhere_keeps_its_runs() {
    // Trained on "a cluster" with absolute paths, copied back "home": the database records
    // the cluster's paths; the report, eval and a rerun must find the runs in the copy.
    let cluster = tempfile::tempdir().unwrap();
    let spec = write_spec(cluster.path(), "moved", 6, "[0]");
    let scratch = cluster.path().join("scratch/results");
    let scratch_arg = scratch.to_str().unwrap();
    let db_arg = format!("{scratch_arg}/runs.sqlite");
    sweep(
        cluster.path(),
        &spec,
        &["--results", scratch_arg, "--db", &db_arg],
    )
    .success();
    let home = tempfile::tempdir().unwrap();
    std::fs::rename(&scratch, home.path().join("results")).unwrap();
    let id = common::texts(&db(home.path()), "SELECT id FROM runs").remove(0);
    let run = |args: &[&str]| runner().current_dir(home.path()).args(args).assert();
    run(&["report"]).success();
    // Its files are listed where they are now; the JSON keeps the recorded paths beside.
    let sample = format!("results/moved/{id}/samples/step-00000006.png");
    run(&["show", &id]).success().stdout(
        predicate::str::contains(format!("(here: results/moved/{id})"))
            .and(predicate::str::contains(format!("6  {sample}")))
            .and(predicate::str::contains(format!(
                "6  results/moved/{id}/checkpoints/"
            ))),
    );
    let out = run(&["show", &id, "--format", "json"]).success();
    let shown: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let last = shown["samples"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["path_here"], sample.as_str(), "{last}");
    assert!(
        last["path"].as_str().unwrap().starts_with(scratch_arg),
        "{last}"
    );
    assert!(home.path().join(&sample).is_file());
    let page = home.path().join("results/report/moved").join(&id);
    assert!(
        page.join("step-00000006.png").is_file(),
        "samples found in the copy"
    );
    runner()
        .current_dir(home.path())
        .args(["eval", &id, "--samples", "50", "--data-dir"])
        .arg(fixture_dir())
        .assert()
        .success();
    sweep(home.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("1 skipped"));
    run(&["rm", "--yes", &id]).success();
    assert!(!home.path().join("results/moved").join(&id).exists());
}

#[test]
fn a_sweep_leaves_a_run_whose_directory_another_process_holds() {
    // A Slurm task or `runner train --out` training in a run's directory holds its `.lock`
    // but no claim in the database: the sweep opened the run's records (a fresh start
    // truncated them) before training found the directory taken.
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "locked", 6, "[0]");
    let out = sweep(dir.path(), &spec, &["--dry-run"]).success();
    let listing = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let id = listing
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let run_dir = dir.path().join("results/locked").join(&id);
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join("records.jsonl"), "theirs\n").unwrap();
    let lock = std::fs::File::create(run_dir.join(".lock")).unwrap();
    lock.try_lock().unwrap();
    sweep(dir.path(), &spec, &[])
        .success()
        .stderr(predicate::str::contains("another process is training in"))
        .stdout(predicate::str::contains("1 left to another"));
    assert_eq!(
        std::fs::read_to_string(run_dir.join("records.jsonl")).unwrap(),
        "theirs\n"
    );
    drop(lock);
    std::fs::remove_file(run_dir.join("records.jsonl")).unwrap();
    sweep(dir.path(), &spec, &[])
        .success()
        .stdout(predicate::str::contains("1 finished"));
}

/// A small file system of its own (tmpfs: mounting needs root, so where the test cannot
/// mount one it says so and checks nothing), unmounted on drop.
struct SmallDisk {
    path: PathBuf,
    filler: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallDisk {
            path: path.to_path_buf(),
            filler: path.join("filler"),
        })
    }

    /// Takes every free byte.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(&self.filler).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.flush();
    }

    fn free(&self) {
        std::fs::remove_file(&self.filler).unwrap();
    }

    /// Makes it read-only, as a copy of results on read-only media is.
    fn remount_read_only(&self) {
        let status = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn an_older_runners_database_on_read_only_media_is_read_without_tags() {
    // `runner runs` and `show` failed on it with "no such table: tags" (schema 6 added it).
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "4m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let db = disk.path.join("runs.sqlite");
    let conn = Connection::open(&db).unwrap();
    for migration in &ganrunner::track::MIGRATIONS[..5] {
        conn.execute_batch(migration).unwrap();
    }
    conn.execute_batch(
        "PRAGMA user_version = 5;
         INSERT INTO experiments VALUES ('old', '', 'old.toml', '2026-01-01T00:00:00Z');
         INSERT INTO runs (id, experiment, config, config_hash, status, run_dir)
           VALUES ('0123456789ab', 'old', '{}', '0123456789ab', 'finished', 'old/0123456789ab');",
    )
    .unwrap();
    drop(conn);
    disk.remount_read_only();
    let runner_on = |args: &[&str]| {
        runner()
            .current_dir(dir.path())
            .args(args)
            .arg("--db")
            .arg(&db)
            .assert()
    };
    runner_on(&["runs"])
        .success()
        .stdout(predicate::str::contains("0123456789ab"));
    runner_on(&["show", "0123"])
        .success()
        .stdout(predicate::str::contains("experiment   old"));
    runner_on(&["tag", "0123"])
        .success()
        .stdout(predicate::str::contains("tags: -"));
    runner_on(&["runs", "--tag", "good"])
        .failure()
        .stderr(predicate::str::contains("it has no tags"));
    // Nor training times (schema 7): none is shown, and the report is written.
    runner_on(&["runs", "--format", "csv"])
        .success()
        .stdout(predicate::str::contains("runtime,eta,"));
    let site = dir.path().join("site");
    runner_on(&["report", "--out", site.to_str().unwrap()]).success();
    assert!(site.join("old/0123456789ab/index.html").is_file());
    runner_on(&["tag", "0123", "--add", "good"])
        .failure()
        .stderr(
            predicate::str::contains("cannot be written here")
                .and(predicate::str::contains("Read-only file system")),
        );
    runner_on(&["rm", "--experiment", "old", "--dry-run"])
        .success()
        .stdout(predicate::str::contains("would delete 1 run,"));
    // Nor the runners that trained its runs (schema 8): a sweep plans against it.
    let spec = write_spec(dir.path(), "old", 10, "[0]");
    let data = common::fixture_dir();
    runner_on(&[
        "sweep",
        spec.to_str().unwrap(),
        "--dry-run",
        "--data-dir",
        data.to_str().unwrap(),
    ])
    .success()
    .stdout(predicate::str::contains("1 run: 1 new"));
}

#[test]
fn a_full_disk_stops_the_run_with_its_reason_and_the_rerun_resumes_it_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk"), "16m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let spec = write_spec(dir.path(), "tiny", 3000, "[0]");
    let reference = dir.path().join("reference");
    std::fs::create_dir(&reference).unwrap();
    sweep(&reference, &spec, &[]).success();

    // The disk fills while the run trains: results, records and the database all live there.
    let child = spawn_sweep(&disk.path, &spec, &[]);
    wait_for(&disk.path, "SELECT min(steps_done) FROM runs", 50);
    disk.fill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("No space left on device") || stderr.contains("disk is full"),
        "the reason is named: {stderr}"
    );
    assert!(
        !stderr.contains("writer has stopped") && !stderr.contains("Error code"),
        "named once, in every message: {stderr}"
    );
    let conn = db(&disk.path);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM runs WHERE status = 'finished'"),
        0
    );
    assert_eq!(common::texts(&conn, "PRAGMA integrity_check"), ["ok"]);
    drop(conn);

    // Once there is room again, the same command resumes it: the same losses as a run that
    // never stopped, and every step's row once.
    disk.free();
    sweep(&disk.path, &spec, &[])
        .success()
        .stdout(predicate::str::contains("1 finished"));
    let losses = |root: &Path| {
        let conn = db(root);
        let dir = common::texts(&conn, "SELECT run_dir FROM runs").remove(0);
        std::fs::read_to_string(root.join(dir).join("losses.csv")).unwrap()
    };
    assert_eq!(losses(&disk.path), losses(&reference));
    let metrics = |root: &Path| {
        let sql = "SELECT step || ' ' || name || ' ' || value FROM metrics ORDER BY step, name";
        common::texts(&db(root), sql)
    };
    assert_eq!(
        metrics(&disk.path),
        metrics(&reference),
        "every step's row once"
    );
}
