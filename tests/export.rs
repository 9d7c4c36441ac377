//! `runner export`: the report's PyTorch modules load the exported weights strictly and
//! compute what the runner's generator computes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Tensor, TensorData};
use common::{fixture_dir, runner};
use predicates::prelude::*;

/// Trains two steps of `arch` at the report's sizes; returns the run directory.
fn train(dir: &Path, arch: &str) -> PathBuf {
    let spec = dir.join(format!("{arch}.toml"));
    std::fs::write(
        &spec,
        format!(
            "name = \"export-{arch}\"\n[model]\narch = \"{arch}\"\n[train]\nsteps = 2\n\
             batch_size = 16\n[log]\nsample_every = 2\ncheckpoint_every = 2\neval_samples = 0\n"
        ),
    )
    .unwrap();
    let run = dir.join(arch);
    runner()
        .arg("train")
        .arg(&spec)
        .arg("--data-dir")
        .arg(fixture_dir())
        .arg("--out")
        .arg(&run)
        .assert()
        .success();
    run
}

/// The runner's G on a fixed z, both as raw little-endian f32 files.
fn outputs(run: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let loaded = ganrunner::generate::load_generator(run, false).unwrap();
    let latent = loaded.config.model.latent_dim();
    let n = 8;
    let z: Vec<f32> = (0..n * latent).map(|i| (i as f32 * 0.37).sin()).collect();
    let device = ganrunner::backend::device();
    let images = loaded.generator.forward(
        Tensor::from_data(TensorData::new(z.clone(), [n, latent]), &device),
        None,
        None,
    );
    let images: Vec<f32> = images.into_data().try_to_vec().unwrap();
    let bytes = |values: &[f32]| {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>()
    };
    let (z_path, out_path) = (dir.join("z.f32"), dir.join("expected.f32"));
    std::fs::write(&z_path, bytes(&z)).unwrap();
    std::fs::write(&out_path, bytes(&images)).unwrap();
    (z_path, out_path)
}

fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn export_refuses_other_formats_and_a_run_without_a_best_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "gan");
    let export = |args: &[&str], out: &str| {
        runner()
            .args(["export", "--checkpoint"])
            .arg(&run)
            .args(args)
            .arg("--out")
            .arg(dir.path().join(out))
            .assert()
    };
    export(&[], "g.pt")
        .failure()
        .stderr(predicate::str::contains(
            "g.pt: the weights are written as safetensors",
        ));
    export(&["--best"], "g.safetensors")
        .failure()
        .stderr(predicate::str::contains("no best checkpoint"));
    std::fs::create_dir(dir.path().join("d.safetensors")).unwrap();
    export(&[], "d.safetensors")
        .failure()
        .stderr(predicate::str::contains("writing"));
    assert!(!dir.path().join("g.safetensors").exists() && !dir.path().join("g.pt").exists());
}

#[test]
fn pytorch_loads_every_arch_strictly_and_draws_the_same_images() {
    let with_torch = torch_available();
    if !with_torch {
        eprintln!(
            "python3 with torch is missing: the names and shapes are checked, not PyTorch's outputs"
        );
    }
    for arch in ["gan", "dcgan", "dcgan-classic"] {
        let dir = tempfile::tempdir().unwrap();
        let run = train(dir.path(), arch);
        let weights = dir.path().join("g.safetensors");
        runner()
            .args(["export", "--checkpoint"])
            .arg(&run)
            .arg("--out")
            .arg(&weights)
            .assert()
            .success()
            .stdout(predicate::str::contains("step-2 generator"));
        let bytes = std::fs::read(&weights).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(
            tensors.names().iter().all(|n| !n.contains("gamma")),
            "{arch}"
        );
        if !with_torch {
            continue;
        }
        let (z, expected) = outputs(&run, dir.path());
        let check = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pytorch/check_export.py"))
            .args([&weights, &z, &expected])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&check.stdout).to_string()
            + &String::from_utf8_lossy(&check.stderr);
        assert!(check.status.success(), "{arch}: {said}");
        assert!(said.contains("loaded strictly"), "{said}");
        eprintln!("{arch}: {}", said.trim());
    }
}
