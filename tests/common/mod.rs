//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use rusqlite::Connection;

use ganrunner::model::{ClassicOptions, DcganOptions, GanOptions, ModelConfig};
use ganrunner::spec::{DataConfig, RunConfig};

/// The small real-MNIST fixture: 600 training and 200 test digits as gzipped IDX.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mnist-mini")
}

/// Tiny versions of the three model families, fast enough for tests.
pub fn tiny_models() -> Vec<ModelConfig> {
    vec![
        ModelConfig::Gan(GanOptions {
            latent_dim: 8,
            g_hidden: vec![8, 16],
            d_hidden: vec![16, 8],
            ..Default::default()
        }),
        ModelConfig::Dcgan(DcganOptions {
            latent_dim: 8,
            g_channels: [8, 4],
            d_channels: vec![4, 4, 8, 8],
            ..Default::default()
        }),
        ModelConfig::DcganClassic(ClassicOptions {
            latent_dim: 8,
            g_channels: [16, 8, 4],
            d_channels: [4, 8, 16],
            ..Default::default()
        }),
    ]
}

/// The `[model]` table of the tiny vanilla GAN of [`tiny_models`], for spec files.
pub fn tiny_gan_model_toml() -> String {
    format!("[model]\n{}", toml::to_string(&tiny_models()[0]).unwrap())
}

/// A short run of `model` on the fixture.
pub fn tiny_run(model: ModelConfig, steps: u64) -> RunConfig {
    let mut config = RunConfig {
        data: DataConfig {
            dir: Some(fixture_dir()),
            ..Default::default()
        },
        model,
        ..Default::default()
    };
    config.train.steps = Some(steps);
    config.train.batch_size = 16;
    config.log.sample_every = 5;
    config.log.checkpoint_every = 5;
    config.log.eval_samples = 0;
    config
}

/// The latest checkpoints of the runs in `a` and `b` hold the same files with the same bytes,
/// but for the training time in `checkpoint.json`.
pub fn assert_same_checkpoints(a: &std::path::Path, b: &std::path::Path, what: &str) {
    let latest = |run: &std::path::Path| {
        let (_, dir) = ganrunner::train::checkpoint::list(run).pop().unwrap();
        let mut files: Vec<(String, Vec<u8>)> = (std::fs::read_dir(&dir).unwrap())
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let mut bytes = std::fs::read(&path).unwrap();
                if name == "checkpoint.json" {
                    let mut meta: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    meta["seconds"] = serde_json::Value::Null;
                    bytes = serde_json::to_vec(&meta).unwrap();
                }
                (name, bytes)
            })
            .collect();
        files.sort();
        files
    };
    let (a, b) = (latest(a), latest(b));
    let names = |files: &[(String, Vec<u8>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "{what}: the same files");
    let differ: Vec<&String> = (a.iter().zip(&b))
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, _)| &a.0)
        .collect();
    assert!(differ.is_empty(), "{what}: {differ:?} differ");
}

/// The `runner` binary.
pub fn runner() -> Command {
    Command::cargo_bin("runner").unwrap()
}

/// What a command that must succeed printed on stdout.
pub fn stdout_of(assert: assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.success().get_output().stdout.clone()).unwrap()
}

/// The Python that has torch: `$TORCH_PYTHON` (as `make bench` takes it), else `python3`;
/// None when it cannot import torch.
pub fn torch_python() -> Option<String> {
    let python = std::env::var("TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    std::process::Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(python)
}

/// The tracking database of a test's working directory.
pub fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("results/runs.sqlite")).unwrap()
}

/// The single integer a query returns.
pub fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// The first column of every row a query returns, as text.
pub fn texts(conn: &Connection, sql: &str) -> Vec<String> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Fake `sbatch` and `squeue` on PATH: sbatch keeps its script and answers job 42; squeue
/// lists the task ids in `queue.txt` (none by default).
pub fn fake_slurm(dir: &Path) -> String {
    let bin = dir.join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, body) in [
        (
            "sbatch",
            format!(
                "#!/bin/sh\necho \"$@\" > {0}/sbatch-args\necho 42\n",
                dir.display()
            ),
        ),
        (
            "squeue",
            format!(
                "#!/bin/sh\ncat {0}/queue.txt 2>/dev/null || true\n",
                dir.display()
            ),
        ),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

/// `runner sweep <spec> --executor slurm` on the fixture in `dir`, with the fake Slurm of
/// [`fake_slurm`] on `path`.
pub fn slurm_sweep(
    dir: &Path,
    spec: &Path,
    path: &str,
    extra: &[&str],
) -> assert_cmd::assert::Assert {
    runner()
        .current_dir(dir)
        .env("PATH", path)
        .arg("sweep")
        .arg(spec)
        .arg("--data-dir")
        .arg(fixture_dir())
        .args(["--executor", "slurm", "--no-report"])
        .args(extra)
        .assert()
}

/// The plan a fake-Slurm sweep of `experiment` submitted in `dir` (the first, by name).
pub fn slurm_plan(dir: &Path, experiment: &str) -> PathBuf {
    let mut plans: Vec<_> = std::fs::read_dir(dir.join("results").join(experiment).join("slurm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    plans.sort();
    plans.remove(0)
}

/// Runs task `index` of `plan` here, as Slurm's job 42 would.
pub fn run_slurm_task(dir: &Path, plan: &Path, index: usize) -> assert_cmd::assert::Assert {
    runner()
        .current_dir(dir)
        .env("SLURM_ARRAY_JOB_ID", "42")
        .arg("slurm-task")
        .arg(plan)
        .arg(index.to_string())
        .assert()
}

/// A `.npy` file: numpy's version 1.0 header for `descr` and `shape`, then `data`.
pub fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape: Vec<String> = shape.iter().map(usize::to_string).collect();
    let comma = if shape.len() == 1 { "," } else { "" };
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}{comma}), }}",
        shape.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// Trains `config` in a new directory and scores its generator as `runner eval <run>` does,
/// on `n` samples of the run's own evaluation noise against the fixture.
pub fn trained_and_scored(
    config: &RunConfig,
    n: usize,
) -> (tempfile::TempDir, ganrunner::score::Scored) {
    let run = tempfile::tempdir().unwrap();
    ganrunner::train::train(config, run.path(), &mut ()).unwrap();
    let mut log = |line: &str| eprintln!("{line}");
    let (scored, _) =
        ganrunner::score::score_checkpoint(run.path(), n, None, Some(&fixture_dir()), &mut log)
            .unwrap();
    (run, scored)
}

/// The report's compare page (one run beside the best) in the experiment folder `dir`.
pub fn compare_page(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".html") && name.contains("compare-")
        })
        .unwrap_or_else(|| panic!("no compare page in {}", dir.display()))
}

/// Makes a named pipe at `path`, for tests of what must never be opened.
pub fn make_fifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    assert!(made.unwrap().success(), "mkfifo {}", path.display());
}
