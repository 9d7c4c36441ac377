//! `[search.prune]` end to end: rung decisions, promotion and resume on a rerun, and pruning
//! sweeps sharing one database.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{count, db, fake_slurm, fixture_dir, runner};
use predicates::prelude::*;
use rusqlite::Connection;

/// A tiny vanilla-GAN spec over `lrs` (seed 1), 30 steps, evaluated every 10 and compared at
/// steps 10 and 20.
fn write_spec(dir: &Path, lrs: &str, keep: &str) -> PathBuf {
    let model = common::tiny_gan_model_toml();
    let spec = dir.join("pruned.toml");
    std::fs::write(
        &spec,
        format!(
            r#"name = "pruned"
{model}[train]
steps = 30
batch_size = 16
seed = 1
[log]
sample_every = 10
checkpoint_every = 10
metrics_every = 1
eval_every = 10
eval_samples = 100
[sweep]
"train.lr" = {lrs}
[search.prune]
metric = "fid"
rungs = [10, 20]
keep = "{keep}"
"#
        ),
    )
    .unwrap();
    spec
}

fn sweep_cmd(dir: &Path, spec: &Path, jobs: &str) -> assert_cmd::Command {
    let mut cmd = runner();
    cmd.current_dir(dir)
        .arg("sweep")
        .arg(spec)
        .arg("--data-dir")
        .arg(fixture_dir())
        .args(["--jobs", jobs, "--no-report"]);
    cmd
}

/// How many rung decisions (`kept` or `pruned`) were recorded at `step`.
fn rung_decisions(conn: &Connection, step: u64) -> i64 {
    count(
        conn,
        &format!("SELECT count(*) FROM events WHERE kind IN ('kept', 'pruned') AND step = {step}"),
    )
}

fn rows<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> Vec<(String, T)> {
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Each run's status and steps done, and that every run ended exactly as the rules say: a
/// pruned run has its `pruned` decision, a checkpoint and no metrics past the step it stopped
/// at; a finished run trained to the end; every step's losses are there once.
fn check_consistent(conn: &Connection) -> BTreeMap<String, (String, i64)> {
    let mut out = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT id, status, steps_done FROM runs")
        .unwrap();
    let runs: Vec<(String, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (id, status, steps) in runs {
        let q = |sql: &str| count(conn, &sql.replace("$id", &id));
        match status.as_str() {
            "finished" => assert_eq!(steps, 30, "{id}"),
            "pruned" => {
                assert!([10, 20].contains(&steps), "{id} pruned at {steps}");
                assert_eq!(
                    q(&format!(
                        "SELECT count(*) FROM events WHERE run_id = '$id' AND kind = 'pruned' AND step = {steps}"
                    )),
                    1,
                    "{id}: its decision"
                );
                assert_eq!(
                    q(&format!(
                        "SELECT count(*) FROM checkpoints WHERE run_id = '$id' AND step = {steps}"
                    )),
                    1,
                    "{id}: its rung checkpoint"
                );
            }
            other => panic!("{id} ended {other}"),
        }
        assert_eq!(
            q("SELECT count(*) FROM metrics WHERE run_id = '$id' AND name = 'd_loss'"),
            steps,
            "{id}: one loss row per step done, none past it"
        );
        assert_eq!(
            q("SELECT count(*) FROM evals WHERE run_id = '$id' AND metric = 'fid'"),
            steps / 10,
            "{id}: one evaluation per 10 steps"
        );
        out.insert(id, (status, steps));
    }
    out
}

/// The runs a rerun must promote, computed here from the database: a run pruned at a rung
/// whose FID is now among the best max(1, floor(n * keep)) of the n FIDs at that rung.
fn promotable(conn: &Connection, keep: f64) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let pruned: Vec<(String, i64)> = rows(
        conn,
        "SELECT id, steps_done FROM runs WHERE status = 'pruned'",
    );
    for (id, rung) in pruned {
        let at_rung: Vec<(String, f64)> = rows(
            conn,
            &format!("SELECT run_id, value FROM evals WHERE metric = 'fid' AND step = {rung}"),
        );
        let mut values: Vec<f64> = at_rung.iter().map(|(_, v)| *v).collect();
        values.sort_by(f64::total_cmp);
        let kept = ((values.len() as f64 * keep).floor() as usize).max(1);
        let mine = at_rung.iter().find(|(r, _)| *r == id).unwrap().1;
        if mine <= values[kept - 1] {
            out.insert(id);
        }
    }
    out
}

#[test]
fn runs_outside_a_rungs_best_fraction_are_pruned_and_a_rerun_promotes_and_resumes_them() {
    let dir = tempfile::tempdir().unwrap();
    // One good run first, then a middling one (pruned: of two, one goes on), then four that
    // barely learn: once the rung holds all six, three go on, and the middling one is promoted.
    let spec = write_spec(
        dir.path(),
        "[3e-3, 1e-3, 1e-7, 1.1e-7, 1.2e-7, 1.3e-7]",
        "1/2",
    );
    sweep_cmd(dir.path(), &spec, "1")
        .assert()
        .success()
        .stdout(predicate::str::contains("pruned"));
    let conn = db(dir.path());
    let first = check_consistent(&conn);
    assert!(first.values().filter(|(s, _)| s == "pruned").count() >= 3);
    let middling: String = conn
        .query_row(
            "SELECT run_id FROM params WHERE key = 'train.lr' AND value = 1e-3",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(first[&middling], ("pruned".to_string(), 10));
    let expected = promotable(&conn, 0.5);
    assert!(expected.contains(&middling), "{expected:?}");
    let before: Vec<(String, f64)> = rows(
        &conn,
        &format!(
            "SELECT run_id, value FROM metrics WHERE step <= 10 AND run_id = '{middling}' ORDER BY step, name"
        ),
    );
    drop(conn);

    // The dry run tells which runs the rerun promotes, and the estimate prices their steps.
    let dry = sweep_cmd(dir.path(), &spec, "1")
        .arg("--dry-run")
        .assert()
        .success();
    let table = String::from_utf8_lossy(&dry.get_output().stdout).to_string();
    for id in &expected {
        assert!(table.contains(&format!("{id}  promoted 10/")), "{table}");
    }
    assert!(
        table.contains(&format!("{} promoted", expected.len())),
        "{table}"
    );
    sweep_cmd(dir.path(), &spec, "1")
        .arg("--estimate")
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "for {} run",
            expected.len()
        )))
        .stdout(predicate::str::contains(
            "if each rung keeps 1/2 of the runs that reach it",
        ));

    let rerun = sweep_cmd(dir.path(), &spec, "1").assert().success();
    let stderr = String::from_utf8_lossy(&rerun.get_output().stderr).to_string();
    for id in &expected {
        assert!(stderr.contains(&format!("run {id} promoted")), "{stderr}");
    }
    let conn = db(dir.path());
    let promoted: BTreeSet<String> = rows::<i64>(
        &conn,
        "SELECT run_id, step FROM events WHERE kind = 'promoted'",
    )
    .into_iter()
    .map(|(id, step)| {
        assert_eq!(step, 10);
        id
    })
    .collect();
    assert_eq!(promoted, expected);
    let second = check_consistent(&conn);
    for id in &expected {
        assert!(second[id].1 > 10, "{id} trained on past its rung");
    }
    // Resumed from the rung checkpoint: the steps before it are the same rows, not retrained.
    let after: Vec<(String, f64)> = rows(
        &conn,
        &format!(
            "SELECT run_id, value FROM metrics WHERE step <= 10 AND run_id = '{middling}' ORDER BY step, name"
        ),
    );
    assert_eq!(before, after);
    let records = std::fs::read_to_string(
        dir.path()
            .join("results/pruned")
            .join(&middling)
            .join("records.jsonl"),
    )
    .unwrap();
    assert_eq!(records.matches("\"fresh\":true").count(), 1);
    assert_eq!(records.matches("\"fresh\":false").count(), 1);
    // Runs that were neither promoted nor changed stay as they were.
    for (id, ended) in &first {
        if !expected.contains(id) {
            assert_eq!(&second[id], ended);
        }
    }
}

#[test]
fn pruning_sweeps_sharing_a_database_end_every_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(
        dir.path(),
        "[3e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 1e-7, 1e-6]",
        "1/3",
    );
    let spawn = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("runner"))
            .current_dir(dir.path())
            .arg("sweep")
            .arg(&spec)
            .arg("--data-dir")
            .arg(fixture_dir())
            .args(["--jobs", "2", "--no-report"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let children = [spawn(), spawn()];
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let conn = db(dir.path());
    let ended = check_consistent(&conn);
    assert_eq!(ended.len(), 8);
    assert!(ended.values().any(|(s, _)| s == "pruned"));
    assert!(ended.values().any(|(s, _)| s == "finished"));
    // Each run was trained by one process, once.
    for id in ended.keys() {
        let records = std::fs::read_to_string(
            dir.path()
                .join("results/pruned")
                .join(id)
                .join("records.jsonl"),
        )
        .unwrap();
        assert_eq!(records.matches("\"RunStarted\"").count(), 1, "{id}");
        assert_eq!(records.matches("\"RunEnded\"").count(), 1, "{id}");
    }
    assert_eq!(
        rung_decisions(&conn, 10),
        8,
        "every run was judged at the first rung"
    );
}

#[test]
fn slurm_tasks_prune_by_their_siblings_records_and_collect_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "[3e-3, 1e-3, 1e-7, 1.1e-7]", "1/2");
    let path = fake_slurm(dir.path());
    let slurm = |extra: &[&str]| common::slurm_sweep(dir.path(), &spec, &path, extra);
    slurm(&[])
        .success()
        .stdout(predicate::str::contains("4 queued"));
    let plan = common::slurm_plan(dir.path(), "pruned");
    assert!(
        std::fs::read_to_string(&plan)
            .unwrap()
            .contains("\"rungs\"")
    );
    // The array's tasks, one after another as `--max-parallel 1` would run them: a pruned
    // task is a task that did its job (exit 0).
    for i in 0..4 {
        common::run_slurm_task(dir.path(), &plan, i).success();
    }
    slurm(&["--collect"])
        .success()
        .stdout(predicate::str::contains("0 failed"));
    let conn = db(dir.path());
    let ended = check_consistent(&conn);
    let pruned = ended.values().filter(|(s, _)| s == "pruned").count();
    assert!(pruned >= 2, "{ended:?}");
    assert_eq!(rung_decisions(&conn, 10), 4);
    // A rerun submits only the pruned runs that their filled rung now promotes; the others
    // stay pruned, and so does one stopped by a failure detector (its records hold no rung
    // decision: simulated by dropping it), whatever its rung says.
    let stopped = ended.iter().find(|(_, (s, _))| s == "pruned").unwrap().0;
    let mut promoted = promotable(&conn, 0.5);
    promoted.remove(stopped);
    drop(conn);
    let records = dir
        .path()
        .join("results/pruned")
        .join(stopped)
        .join("records.jsonl");
    let kept: String = std::fs::read_to_string(&records)
        .unwrap()
        .lines()
        .filter(|l| !(l.contains("\"Flagged\"") && l.contains("\"pruned\"")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&records, kept).unwrap();
    slurm(&[]).success().stdout(
        predicate::str::contains(format!("{} pruned", pruned - promoted.len())).and(
            predicate::str::contains(format!("{} queued", promoted.len())),
        ),
    );
    // Without [search.prune] they are unfinished runs like any other: all submitted to resume
    // (the promoted ones' tasks never ran here).
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.split("[search.prune]").next().unwrap()).unwrap();
    slurm(&[])
        .success()
        .stdout(predicate::str::contains(format!("{pruned} queued")));
}

#[test]
fn a_rung_at_the_last_step_decides_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "[3e-3, 1e-3, 1e-7]", "1/2");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("rungs = [10, 20]", "rungs = [10, 30]")).unwrap();
    sweep_cmd(dir.path(), &spec, "1").assert().success();
    let conn = db(dir.path());
    check_consistent(&conn);
    assert_eq!(
        rung_decisions(&conn, 30),
        0,
        "a finished run carries no rung decision at its end"
    );
}

/// A sweep of three lrs (one far too small) over 40 steps, evaluated every 5, stopped early by
/// `rule` instead of rungs.
fn early_stopping_spec(dir: &Path, rule: &str) -> PathBuf {
    let spec = write_spec(dir, "[3e-3, 1e-3, 1e-7]", "1/2");
    let text = std::fs::read_to_string(&spec).unwrap();
    let text = text
        .replace("rungs = [10, 20]", rule)
        .replace("steps = 30", "steps = 40")
        .replace("eval_every = 10", "eval_every = 5");
    std::fs::write(&spec, text).unwrap();
    spec
}

/// Each run's status and steps done, as "pruned 15".
fn ended(conn: &Connection) -> BTreeMap<String, String> {
    let sql = "SELECT id, status || ' ' || steps_done FROM runs";
    rows::<String>(conn, sql).into_iter().collect()
}

/// A run's LeNet-FIDs by step.
fn fids_by_step(conn: &Connection, id: &str) -> BTreeMap<u64, f64> {
    let sql = format!(
        "SELECT CAST(step AS TEXT), value FROM evals WHERE run_id = '{id}' AND metric = 'fid'"
    );
    (rows::<f64>(conn, &sql).into_iter())
        .map(|(step, fid)| (step.parse().unwrap(), fid))
        .collect()
}

/// Checks how run `id` ended (`ended`, as "pruned 15"): stopped at `stop` by `kind`, with one
/// such event and its error starting with `reason`, or, with no stop, finished at step 40 with
/// none. `fids` are its LeNet-FIDs by step, for the messages.
fn check_ending(
    conn: &Connection,
    id: &str,
    ended: &str,
    stop: Option<u64>,
    kind: &str,
    reason: &str,
    fids: &BTreeMap<u64, f64>,
) {
    let events = count(
        conn,
        &format!("SELECT count(*) FROM events WHERE run_id = '{id}' AND kind = '{kind}'"),
    );
    match stop {
        Some(step) => {
            assert_eq!(ended, format!("pruned {step}"), "{id}: {fids:?}");
            assert_eq!(events, 1, "{id}");
            let error: String = conn
                .query_row("SELECT error FROM runs WHERE id = ?1", [id], |r| r.get(0))
                .unwrap();
            assert!(error.starts_with(reason), "{error}");
        }
        None => {
            assert_eq!(ended, "finished 40", "{id}: {fids:?}");
            assert_eq!(events, 0, "{id}");
        }
    }
}

#[test]
fn patience_stops_a_run_whose_fid_stopped_improving_and_a_rerun_leaves_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let spec = early_stopping_spec(dir.path(), "patience = 1");
    sweep_cmd(dir.path(), &spec, "2").assert().success();
    let conn = db(dir.path());
    let before = ended(&conn);
    let mut stopped = 0;
    for (id, ended) in &before {
        let fids = fids_by_step(&conn, id);
        // Patience 1: the first evaluation before the end that does not beat the best.
        let mut best = f64::INFINITY;
        let mut stop = None;
        for (&step, fid) in &fids {
            if *fid < best {
                best = *fid;
            } else if step < 40 {
                stop = Some(step);
                break;
            }
        }
        check_ending(
            &conn,
            id,
            ended,
            stop,
            "plateau",
            "stopped on plateau: fid has not beaten",
            &fids,
        );
        stopped += usize::from(stop.is_some());
    }
    assert!(stopped > 0, "some run plateaued: {before:?}");
    // Stopped on a plateau is no rung decision: a rerun promotes nothing.
    sweep_cmd(dir.path(), &spec, "2").assert().success();
    assert_eq!(ended(&db(dir.path())), before);
}

#[test]
fn median_stops_a_run_worse_than_the_finished_runs_and_a_rerun_leaves_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let spec = early_stopping_spec(dir.path(), "median = true\nstartup_runs = 1");
    // One run at a time: each is judged against the runs that finished before it started.
    sweep_cmd(dir.path(), &spec, "1").assert().success();
    let conn = db(dir.path());
    let before = ended(&conn);
    // In training order (`started_at` has whole seconds; these runs take less).
    let order = rows::<String>(
        &conn,
        "SELECT run_id, run_id FROM metrics GROUP BY run_id ORDER BY min(wall_time)",
    );
    assert_eq!(order.len(), 3);
    let (mut finished, mut stopped) = (Vec::<BTreeMap<u64, f64>>::new(), 0);
    for (id, _) in &order {
        let own = fids_by_step(&conn, id);
        let mut best = f64::INFINITY;
        let mut stop = None;
        for (&step, &fid) in own.iter().filter(|(step, _)| **step < 40) {
            best = best.min(fid);
            let mut at: Vec<f64> = finished
                .iter()
                .filter_map(|f| f.get(&step).copied())
                .collect();
            at.sort_by(f64::total_cmp);
            let n = at.len();
            if n > 0 && best > (at[(n - 1) / 2] + at[n / 2]) / 2.0 {
                stop = Some(step);
                break;
            }
        }
        let reason = "stopped below the median: fid's best";
        check_ending(&conn, id, &before[id], stop, "median", reason, &own);
        stopped += usize::from(stop.is_some());
        if stop.is_none() {
            finished.push(own);
        }
    }
    assert!(
        stopped > 0,
        "some run was worse than the median: {before:?}"
    );
    // The median's stop is no rung decision: a rerun promotes nothing.
    sweep_cmd(dir.path(), &spec, "1").assert().success();
    assert_eq!(ended(&db(dir.path())), before);
}

#[test]
fn impossible_prune_rules_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "[1e-3]", "1/2");
    let text = std::fs::read_to_string(&spec).unwrap();
    for (from, to, key) in [
        ("rungs = [10, 20]", "rungs = [15]", "search.prune.rungs"),
        (
            "metric = \"fid\"",
            "metric = \"loss\"",
            "search.prune.metric",
        ),
        ("keep = \"1/2\"", "keep = 1.5", "search.prune.keep"),
        ("eval_every = 10", "eval_every = 0", "search.prune.rungs"),
        ("rungs = [10, 20]", "patience = 0", "search.prune.patience"),
        (
            "rungs = [10, 20]",
            "rungs = [10]\nmedian = true",
            "search.prune.median",
        ),
        (
            "rungs = [10, 20]",
            "rungs = [10]\nwarmup_steps = 10",
            "search.prune.warmup_steps",
        ),
        (
            "rungs = [10, 20]",
            "median = true\nstartup_runs = 0",
            "search.prune.startup_runs",
        ),
    ] {
        std::fs::write(&spec, text.replace(from, to)).unwrap();
        sweep_cmd(dir.path(), &spec, "1").assert().code(1).stderr(
            predicate::str::contains(format!("`{key}`"))
                .and(predicate::str::contains("pruned.toml:")),
        );
    }
    for (detector, expected) in [
        ("boredom", "unknown detector `boredom`, expected `collapse`"),
        ("plateau", "set `patience = N`"),
    ] {
        let stop_on = format!("stop_on = [\"{detector}\"]\nkeep =");
        std::fs::write(&spec, text.replace("keep =", &stop_on)).unwrap();
        sweep_cmd(dir.path(), &spec, "1").assert().code(1).stderr(
            predicate::str::contains(expected).and(predicate::str::contains("pruned.toml:")),
        );
    }
    let unevaluated = text
        .replace("rungs = [10, 20]", "patience = 3")
        .replace("eval_samples = 100", "eval_samples = 0");
    std::fs::write(&spec, unevaluated).unwrap();
    sweep_cmd(dir.path(), &spec, "1").assert().code(1).stderr(
        predicate::str::contains("`search.prune.patience`")
            .and(predicate::str::contains("needs evaluations")),
    );
}
