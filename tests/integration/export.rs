//! `runner export`: the report's PyTorch modules load the exported weights strictly and
//! compute what the runner's generator and discriminator compute.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Tensor, TensorData};
use common::{fixture_dir, runner, torch_python};
use ganrunner::export::Net;
use predicates::prelude::*;

/// Trains two steps of `arch` at the report's sizes (`model`: more `[model]` keys); returns
/// the run directory.
fn train_with(dir: &Path, arch: &str, model: &str) -> PathBuf {
    let spec = dir.join(format!("{arch}.toml"));
    std::fs::write(
        &spec,
        format!(
            "name = \"export-{arch}\"\n[model]\narch = \"{arch}\"\n{model}\n[train]\nsteps = 2\n\
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

fn train(dir: &Path, arch: &str) -> PathBuf {
    train_with(dir, arch, "")
}

/// `net` of the run on a fixed input (G: latents; D: images in [-1, 1]) and what it computes
/// for it (G: images; D: logits), both as raw little-endian f32 files.
fn outputs(run: &Path, net: Net, dir: &Path) -> (PathBuf, PathBuf) {
    let n = 8;
    let fixed = |len: usize| -> Vec<f32> { (0..len).map(|i| (i as f32 * 0.37).sin()).collect() };
    let device = ganrunner::backend::device();
    let (input, output) = match net {
        Net::G => {
            let loaded = ganrunner::generate::load_generator(run, false).unwrap();
            let latent = loaded.config.model.latent_dim();
            let z = fixed(n * latent);
            let z_tensor = Tensor::from_data(TensorData::new(z.clone(), [n, latent]), &device);
            let images = loaded.generator.forward(z_tensor, None, None);
            (z, images.into_data().try_to_vec().unwrap())
        }
        Net::D => {
            let (d, meta) = ganrunner::export::load_discriminator(run).unwrap();
            let config = meta.config;
            let side = config.model.image_side();
            let images = fixed(n * side * side);
            let shape = [n, 1, side, side];
            let verdict = d.forward(
                Tensor::from_data(TensorData::new(images.clone(), shape), &device),
                None,
                None,
            );
            (images, verdict.logits.into_data().try_to_vec().unwrap())
        }
    };
    let bytes = |values: &[f32]| {
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>()
    };
    let (in_path, out_path) = (dir.join("input.f32"), dir.join("expected.f32"));
    std::fs::write(&in_path, bytes(&input)).unwrap();
    std::fs::write(&out_path, bytes(&output)).unwrap();
    (in_path, out_path)
}

#[test]
fn export_refuses_other_formats_a_run_without_a_best_checkpoint_and_ds_it_cannot_name() {
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
    export(&["--net", "d", "--raw"], "d.safetensors")
        .failure()
        .stderr(predicate::str::contains("D has no average"));
    assert!(!dir.path().join("g.safetensors").exists() && !dir.path().join("g.pt").exists());
    // AC-GAN's D has a class head the report's modules lack; its G exports.
    let acgan_dir = tempfile::tempdir().unwrap();
    let acgan = train_with(acgan_dir.path(), "gan", "conditional = \"acgan\"");
    let export = |net: &str| {
        runner()
            .args(["export", "--checkpoint"])
            .arg(&acgan)
            .args(["--net", net, "--out"])
            .arg(dir.path().join(format!("acgan-{net}.safetensors")))
            .assert()
    };
    export("d")
        .failure()
        .stderr(predicate::str::contains("class head"));
    export("g").success();
    assert!(!dir.path().join("acgan-d.safetensors").exists());
}

#[test]
fn pytorch_loads_every_arch_strictly_and_computes_the_same_images_and_logits() {
    let python = torch_python();
    if python.is_none() {
        eprintln!(
            "python3 with torch is missing: the names and shapes are checked, not PyTorch's outputs"
        );
    }
    // D is written as the losses saw it: spectrally normalized weights load as plain ones.
    let cases = [
        ("gan", ""),
        ("dcgan", ""),
        ("dcgan-classic", ""),
        ("dcgan", "spectral_norm = true"),
    ];
    for (arch, model) in cases {
        let dir = tempfile::tempdir().unwrap();
        let run = train_with(dir.path(), arch, model);
        for net in [Net::G, Net::D] {
            let weights = dir.path().join(format!("{net:?}.safetensors"));
            let export = |out: &Path| {
                runner()
                    .args(["export", "--checkpoint"])
                    .arg(&run)
                    .args(["--net", &format!("{net:?}").to_lowercase(), "--out"])
                    .arg(out)
                    .assert()
                    .success()
                    .stdout(predicate::str::contains(format!("step-2 {}", net.noun())));
            };
            export(&weights);
            let bytes = std::fs::read(&weights).unwrap();
            // Byte for byte the same file from another process (safetensors' metadata came
            // out in a hash map's order, another in every process).
            let again = dir.path().join("again.safetensors");
            export(&again);
            assert!(bytes == std::fs::read(&again).unwrap(), "{arch} {net:?}");
            let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            assert!(
                tensors.names().iter().all(|n| !n.contains("gamma")),
                "{arch} {net:?}"
            );
            // The weights say which runner trained them.
            let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            let metadata = header.metadata().clone().unwrap();
            assert_eq!(metadata["ganrunner.trained_by"], ganrunner::VERSION);
            let Some(python) = &python else {
                continue;
            };
            let (input, expected) = outputs(&run, net, dir.path());
            let check = Command::new(python)
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pytorch/check_export.py"))
                .args([&weights, &input, &expected])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&check.stdout).to_string()
                + &String::from_utf8_lossy(&check.stderr);
            assert!(check.status.success(), "{arch} {model} {net:?}: {said}");
            assert!(said.contains("loaded strictly"), "{said}");
            eprintln!("{arch} {model}: {}", said.trim());
        }
    }
}
