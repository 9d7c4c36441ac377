//! Training on burn: shapes, losses, determinism, checkpoints, resume and divergence.

use crate::common;

use common::{assert_same_checkpoints, tiny_models, tiny_run};
use ganrunner::export::Net;
use ganrunner::model::{GanOptions, ModelConfig};
use ganrunner::train::{
    self, Observer, Status,
    rng::{Stream, rng_for},
};
use predicates::prelude::*;

/// What `runner generate --n n --seed seed [--raw]` asks for.
fn draw(n: usize, seed: u64, raw: bool) -> ganrunner::generate::Draw<'static> {
    ganrunner::generate::Draw {
        n,
        seed,
        raw,
        class: None,
        arrangement: ganrunner::generate::Arrangement::Samples,
    }
}

fn losses_csv(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("losses.csv")).unwrap()
}

#[test]
fn every_model_maps_latents_to_images_and_images_to_logits() {
    let device = ganrunner::backend::device();
    for model in tiny_models() {
        let (g, d) = model.build(&mut rng_for(0, Stream::Init, 0), &device);
        let z = train::latents(
            &mut rng_for(0, Stream::Step, 0),
            3,
            model.latent_dim(),
            &device,
        );
        let images = g.forward(z, None, None);
        let side = model.image_side();
        assert_eq!(images.dims(), [3, 1, side, side], "{}", model.arch());
        let values = images.clone().into_data().try_to_vec::<f32>().unwrap();
        assert!(
            values.iter().all(|v| (-1.0..=1.0).contains(v)),
            "tanh output"
        );
        let verdict = d.forward(images, None, None);
        assert_eq!(verdict.logits.dims(), [3, 1], "{}", model.arch());
        assert!(verdict.class_logits.is_none());
    }
}

#[test]
fn the_reports_models_have_the_reports_sizes() {
    let device = ganrunner::backend::device();
    let count = |m: ModelConfig| {
        use burn::module::Module;
        let (g, d) = m.build(&mut rng_for(0, Stream::Init, 0), &device);
        (g.num_params(), d.num_params())
    };
    // PyTorch's counts for the report's models (BatchNorm running stats excluded there,
    // included in burn's count as 2 x channels each).
    let (g, d) = count(ModelConfig::Gan(GanOptions::default()));
    assert_eq!(
        (g, d),
        (3232 + 2112 + 8320 + 101136, 100480 + 8256 + 2080 + 33)
    );
    let (g, d) = count(ModelConfig::Dcgan(Default::default()));
    let bn = |c: usize| 2 * c; // gamma and beta
    let g_torch = (100 * 8192 + 8192)
        + bn(128)
        + (128 * 128 * 9 + 128)
        + bn(128)
        + (128 * 64 * 9 + 64)
        + bn(64)
        + (64 * 9 + 1);
    assert_eq!(g, g_torch + 2 * (128 + 128 + 64));
    let d_torch = (9 * 16 + 16)
        + (16 * 32 * 9 + 32)
        + bn(32)
        + (32 * 64 * 9 + 64)
        + bn(64)
        + (64 * 128 * 9 + 128)
        + bn(128)
        + 513;
    assert_eq!(d, d_torch + 2 * (32 + 64 + 128));
}

#[test]
fn first_losses_are_near_ln2_and_runs_are_deterministic() {
    for model in tiny_models() {
        let arch = model.arch();
        let config = tiny_run(model, 12);
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let out = train::train(&config, a.path(), &mut ()).unwrap();
        assert_eq!(out.status, Status::Finished);
        train::train(&config, b.path(), &mut ()).unwrap();
        let log = losses_csv(a.path());
        assert_eq!(
            log,
            losses_csv(b.path()),
            "{arch}: same config and seed, same losses"
        );
        let first: Vec<f32> = log
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        for loss in first {
            assert!(
                (0.4..1.2).contains(&loss),
                "{arch}: first loss {loss} should be near ln 2"
            );
        }
        assert_eq!(log.lines().count(), 13, "header + 12 steps");
        let mut other = config.clone();
        other.train.seed = 1;
        let c = tempfile::tempdir().unwrap();
        train::train(&other, c.path(), &mut ()).unwrap();
        assert_ne!(
            log,
            losses_csv(c.path()),
            "{arch}: another seed, other losses"
        );
    }
}

/// Stops a run after `at` steps, as Ctrl-C does.
struct StopAt {
    at: u64,
    done: u64,
}

impl Observer for StopAt {
    fn step(&mut self, step: u64, _losses: ganrunner::train::Losses, _seconds: f64) {
        self.done = step;
    }

    fn should_stop(&self) -> bool {
        self.done >= self.at
    }
}

#[test]
fn resuming_from_a_checkpoint_equals_an_uninterrupted_run() {
    // With and without the moving average of G (which samples when kept), warmed up or not.
    for (model, g_ema, warmup) in tiny_models().into_iter().flat_map(|m| {
        [
            (m.clone(), 0.0, false),
            (m.clone(), 0.9, false),
            (m, 0.99, true),
        ]
    }) {
        let arch = format!("{} g_ema {g_ema} warmup {warmup}", model.arch());
        let mut config = tiny_run(model, 10);
        config.train.g_ema = g_ema;
        config.train.g_ema_warmup = warmup;
        // No sample at the step the run stops: a sample reads G through `valid()`, which
        // settles BatchNorm's pending running statistics, and would hide a checkpoint that
        // does not (burn keeps a forward's update pending).
        config.log.sample_every = 10;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        train::train(&config, a.path(), &mut ()).unwrap();
        let stopped = train::train(&config, b.path(), &mut StopAt { at: 3, done: 0 }).unwrap();
        assert_eq!(stopped.status, Status::Interrupted { step: 3 }, "{arch}");
        let resumed = train::train(&config, b.path(), &mut ()).unwrap();
        assert_eq!(resumed.resumed_from, Some(3), "{arch}");
        assert_eq!(
            losses_csv(a.path()),
            losses_csv(b.path()),
            "{arch}: resume is exact"
        );
        let png = |d: &std::path::Path| std::fs::read(d.join("samples/step-00000010.png")).unwrap();
        assert!(png(a.path()) == png(b.path()), "{arch}: same final samples");
        // Both networks' weights and running statistics, G's average, both optimizers' state:
        // the final checkpoints are the same bytes (all but the training time).
        assert_same_checkpoints(a.path(), b.path(), &arch);
    }
}

/// The training time the trainer reports at each step; stops after `stop_at` steps.
struct Clock {
    seconds: Vec<(u64, f64)>,
    stop_at: u64,
}

impl Observer for Clock {
    fn step(&mut self, step: u64, _losses: train::Losses, seconds: f64) {
        self.seconds.push((step, seconds));
    }

    fn should_stop(&self) -> bool {
        self.seconds.last().is_some_and(|s| s.0 >= self.stop_at)
    }
}

#[test]
fn a_runs_training_time_goes_on_from_its_checkpoint_when_resumed() {
    let config = tiny_run(tiny_models().remove(0), 6);
    let dir = tempfile::tempdir().unwrap();
    let train = |stop_at| {
        let mut clock = Clock {
            seconds: Vec::new(),
            stop_at,
        };
        train::train(&config, dir.path(), &mut clock).unwrap();
        clock.seconds
    };
    let first = train(3);
    assert_eq!(first.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(first.windows(2).all(|w| w[0].1 < w[1].1) && first[0].1 > 0.0);
    let meta = dir.path().join("checkpoints/step-00000003/checkpoint.json");
    let saved = train::checkpoint::read_meta(meta.parent().unwrap()).unwrap();
    let at_checkpoint = saved.seconds.expect("the checkpoint keeps the time");
    assert!(
        at_checkpoint >= first[2].1,
        "saved after the step it checkpoints"
    );
    // What a resume reads is the checkpoint's time (here set far ahead, as after hours of
    // training), counted on from there; a value that is no duration counts as none.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    let with = |seconds: f64| {
        let mut json = json.clone();
        json["seconds"] = seconds.into();
        std::fs::write(&meta, json.to_string()).unwrap();
    };
    with(3600.0);
    let resumed = train(4);
    assert_eq!(resumed[0].0, 4);
    assert!(
        resumed[0].1 > 3600.0 && resumed[0].1 < 3660.0,
        "{resumed:?}"
    );
    std::fs::remove_dir_all(dir.path().join("checkpoints/step-00000004")).unwrap();
    with(-5.0);
    let from_nothing = train(6);
    assert!(
        from_nothing[0].1 >= 0.0 && from_nothing[0].1 < 60.0,
        "{from_nothing:?}"
    );
}

/// The tensors of `net` of the run in `run_dir` (its latest checkpoint), by name.
fn tensors(run_dir: &std::path::Path, net: Net, raw: bool) -> Vec<(String, Vec<u8>)> {
    let out = run_dir.join(format!("{net:?}-{raw}.safetensors"));
    ganrunner::export::export(run_dir, net, raw, &out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = (file.tensors().into_iter())
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect();
    tensors.sort();
    tensors
}

/// Records which checkpoints training found corrupt.
#[derive(Default)]
struct CorruptSeen(Vec<(u64, std::path::PathBuf)>);

impl Observer for CorruptSeen {
    fn checkpoint_corrupt(&mut self, step: u64, aside: &std::path::Path, why: &str) {
        assert!(why.contains("checkpoints/step-"), "names the file: {why}");
        self.0.push((step, aside.to_path_buf()));
    }
}

#[test]
fn damaged_checkpoints_are_set_aside_unfinished_ones_removed_and_the_resume_is_exact() {
    let mut model = tiny_models().remove(1);
    if let ModelConfig::Dcgan(o) = &mut model {
        o.spectral_norm = true;
    }
    let mut config = tiny_run(model, 10);
    config.train.g_ema = 0.9;
    config.log.checkpoint_every = 2;
    let mut first_six = config.clone();
    first_six.train.steps = Some(6);
    let (full, damaged) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    train::train(&config, full.path(), &mut ()).unwrap();
    train::train(&first_six, damaged.path(), &mut ()).unwrap();
    let step_dir = |step: u64| damaged.path().join(format!("checkpoints/step-{step:08}"));
    // Step 6: bytes overwritten in place (the same size; only the checksum can tell).
    let flip_a_bit = |name: &str| {
        let path = step_dir(6).join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        bytes
    };
    // Step 6 as an earlier release wrote it: MD5s under `files`, no XXH3s.
    let meta = step_dir(6).join("checkpoint.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let object = json.as_object_mut().unwrap();
    let checksums = object.remove("checksums").unwrap();
    let md5s: serde_json::Map<String, serde_json::Value> = checksums
        .as_object()
        .unwrap()
        .keys()
        .map(|name| {
            let bytes = std::fs::read(step_dir(6).join(name)).unwrap();
            (name.clone(), ganrunner::data::fetch::md5_hex(&bytes).into())
        })
        .collect();
    assert!(md5s.contains_key("generator-ema.bpk"), "{md5s:?}");
    object.insert("files".into(), md5s.into());
    std::fs::write(&meta, serde_json::to_vec(&json).unwrap()).unwrap();
    let bytes = flip_a_bit("discriminator.bpk");
    // Sampling reads only G (here its average), and checks only that.
    ganrunner::generate::load_generator(&step_dir(6), false).unwrap();
    flip_a_bit("generator-ema.bpk");
    // Steps 2 and 4: written before checkpoints had checksums; step 4 truncated since.
    for step in [2, 4] {
        let meta = step_dir(step).join("checkpoint.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        json.as_object_mut().unwrap().remove("checksums");
        std::fs::write(&meta, serde_json::to_vec(&json).unwrap()).unwrap();
    }
    let optim = step_dir(4).join("generator-optim.bpk");
    let kept = std::fs::read(&optim).unwrap();
    std::fs::write(&optim, &kept[..kept.len() / 3]).unwrap();

    let Err(err) = ganrunner::generate::load_generator(&step_dir(6), false) else {
        panic!("a damaged checkpoint loaded");
    };
    assert!(format!("{err:#}").contains("checksum mismatch"), "{err:#}");

    // A process killed while saving leaves its temporary directories behind.
    let unfinished = [
        damaged.path().join("checkpoints/.step-00000008.tmp-4242"),
        damaged.path().join(".best.tmp-4242"),
    ];
    for dir in &unfinished {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("generator.bpk"), b"half").unwrap();
    }

    let mut seen = CorruptSeen::default();
    let resumed = train::train(&config, damaged.path(), &mut seen).unwrap();
    assert!(unfinished.iter().all(|dir| !dir.exists()), "removed");
    assert_eq!(resumed.resumed_from, Some(2));
    assert_eq!(
        losses_csv(full.path()),
        losses_csv(damaged.path()),
        "resuming from step 2 gives the same run"
    );
    let steps: Vec<u64> = seen.0.iter().map(|(step, _)| *step).collect();
    assert_eq!(steps, [6, 4]);
    // Set aside, not deleted: the damaged files are still there to look at.
    let aside = &seen.0[0].1;
    assert_eq!(
        std::fs::read(aside.join("discriminator.bpk")).unwrap(),
        bytes
    );
    let listed: Vec<u64> = train::checkpoint::list(damaged.path())
        .into_iter()
        .map(|(step, _)| step)
        .collect();
    assert_eq!(
        listed,
        [6, 8, 10],
        "the set-aside copies are never resumed from"
    );
}

#[test]
fn a_checkpoint_file_that_is_not_a_regular_file_is_damage_not_a_hang() {
    let config = tiny_run(tiny_models().remove(0), 5);
    let dir = tempfile::tempdir().unwrap();
    train::train(&config, dir.path(), &mut ()).unwrap();
    let step = dir.path().join("checkpoints/step-00000005");
    for name in ["generator.bpk", "checkpoint.json"] {
        let path = step.join(name);
        let kept = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let Err(err) = ganrunner::generate::load_generator(&step, false) else {
            panic!("{name}: loaded from /dev/zero");
        };
        // A metadata file that is not a file leaves no checkpoint there; another file of
        // one is damage, which a resume sets aside.
        let said = format!("{err:#}");
        if name == "checkpoint.json" {
            assert!(said.contains("not a checkpoint"), "{said}");
        } else {
            assert!(train::checkpoint::is_corrupt(&err), "{said}");
            assert!(
                said.contains(&format!("{name}: not a regular file")),
                "{said}"
            );
        }
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, kept).unwrap();
    }
    ganrunner::generate::load_generator(&step, false).unwrap();
}

#[test]
fn a_resume_whose_loss_log_is_a_link_to_a_device_is_refused_naming_it() {
    let mut config = tiny_run(tiny_models().remove(0), 6);
    config.log.checkpoint_every = 2;
    let mut first_four = config.clone();
    first_four.train.steps = Some(4);
    let dir = tempfile::tempdir().unwrap();
    train::train(&first_four, dir.path(), &mut ()).unwrap();
    let log = dir.path().join("losses.csv");
    std::fs::remove_file(&log).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &log).unwrap();
    // Refused, naming the file (it was read until memory ran out), and left as it is.
    let Err(err) = train::train(&config, dir.path(), &mut ()) else {
        panic!("trained into a link to a device");
    };
    let said = format!("{err:#}");
    assert!(
        said.contains("losses.csv")
            && said.contains("links to /dev/zero, which is not a regular file"),
        "{said}"
    );
    assert!(std::fs::symlink_metadata(&log).unwrap().is_symlink());
}

#[test]
fn a_loaded_checkpoint_draws_the_same_samples() {
    let config = tiny_run(tiny_models().remove(1), 5);
    let dir = tempfile::tempdir().unwrap();
    train::train(&config, dir.path(), &mut ()).unwrap();
    let loaded = ganrunner::generate::load_generator(dir.path(), false).unwrap();
    let (generator, loaded_config, step) = (loaded.generator, loaded.config, loaded.step);
    assert_eq!((step, &loaded_config), (5, &config));
    let out = dir.path().join("again.png");
    ganrunner::generate::generate(dir.path(), draw(25, config.train.seed, false), &out).unwrap();
    assert_eq!(
        std::fs::read(out).unwrap(),
        std::fs::read(dir.path().join("samples/step-00000005.png")).unwrap(),
        "the training grid and a grid from the loaded checkpoint match"
    );
    let samples = train::sample(&generator, &config.model, 4, 9, Stream::Samples, None);
    assert_eq!(samples.len(), 4);
}

#[test]
fn an_exploding_run_stops_as_diverged() {
    let mut config = tiny_run(tiny_models().remove(0), 50);
    config.train.lr = 1e30;
    let dir = tempfile::tempdir().unwrap();
    let out = train::train(&config, dir.path(), &mut ()).unwrap();
    match out.status {
        Status::Diverged { step, losses } => {
            assert!(step <= 50);
            assert!(!(losses.d.is_finite() && losses.g.is_finite()));
        }
        other => panic!("expected divergence, got {other:?}"),
    }
}

/// Asks the run to stop once it has done the given number of steps.
struct StopAfter(u64);

impl Observer for StopAfter {
    fn step(&mut self, step: u64, _losses: train::Losses, _seconds: f64) {
        if step >= self.0 {
            self.0 = 0;
        }
    }

    fn should_stop(&self) -> bool {
        self.0 == 0
    }
}

#[test]
fn every_loss_trains_every_model_and_resumes_exactly_with_schedules() {
    use ganrunner::spec::LrDecay;
    use ganrunner::train::loss::LossKind;
    for model in tiny_models() {
        let arch = model.arch();
        let mut seen = std::collections::HashSet::new();
        for (loss, r1_gamma) in [
            (LossKind::Bce, 0.0),
            (LossKind::Minimax, 0.0),
            (LossKind::Lsgan, 0.0),
            (LossKind::Hinge, 0.0),
            (LossKind::Wgan, 0.0),
            (LossKind::WganGp, 0.0),
            (LossKind::Bce, 1.0),
        ] {
            let mut full = tiny_run(model.clone(), 8);
            full.train.loss = loss;
            full.train.r1_gamma = r1_gamma;
            full.train.g_lr = Some(1e-4);
            full.train.d_lr = Some(4e-4);
            full.train.lr_decay = LrDecay::Linear;
            if loss.has_real_label() {
                full.train.real_label = 0.9;
            }
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let out = train::train(&full, a.path(), &mut ()).unwrap();
            assert_eq!(out.status, Status::Finished, "{arch} {loss:?}");
            let losses = out.last_losses.unwrap();
            assert!(losses.d.is_finite() && losses.g.is_finite());
            // The report's DCGAN D ends in BatchNorm (training statistics) before its linear
            // head, so the batch sum of its outputs does not depend on the input and neither
            // penalty's input gradient has anything to act on (README: penalties and BatchNorm):
            // R1 there changes the losses by rounding noise at most.
            let degenerate = arch == "dcgan" && r1_gamma > 0.0;
            assert!(
                seen.insert(losses_csv(a.path())) || degenerate,
                "{arch} {loss:?}: its own losses"
            );
            // Stopped after step 4 and resumed: the schedule goes on where it was.
            let stopped = train::train(&full, b.path(), &mut StopAfter(4)).unwrap();
            assert_eq!(stopped.status, Status::Interrupted { step: 4 });
            train::train(&full, b.path(), &mut ()).unwrap();
            assert_eq!(
                losses_csv(a.path()),
                losses_csv(b.path()),
                "{arch} {loss:?}: resume is exact"
            );
            assert_same_checkpoints(a.path(), b.path(), &format!("{arch} {loss:?}"));
        }
    }
}

#[test]
fn a_warmed_up_average_lets_go_of_the_first_weights() {
    let model = ModelConfig::Gan(Default::default());
    let mut config = tiny_run(model, 10);
    config.train.g_ema = 0.999;
    let mut warmed = config.clone();
    warmed.train.g_ema_warmup = true;
    let (plain, warm) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    train::train(&config, plain.path(), &mut ()).unwrap();
    train::train(&warmed, warm.path(), &mut ()).unwrap();
    assert_eq!(
        losses_csv(plain.path()),
        losses_csv(warm.path()),
        "G trains the same"
    );
    let floats = |dir: &std::path::Path, raw: bool| -> Vec<f32> {
        (tensors(dir, Net::G, raw).into_iter())
            .flat_map(|(_, bytes)| {
                bytes
                    .chunks(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let generator = floats(plain.path(), true);
    assert_eq!(generator, floats(warm.path(), true));
    let distance = |average: Vec<f32>| -> f64 {
        (average.iter().zip(&generator))
            .map(|(a, g)| f64::from(a - g).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (from_plain, from_warm) = (
        distance(floats(plain.path(), false)),
        distance(floats(warm.path(), false)),
    );
    // After 10 steps at 0.999 the plain average is still 99% the first weights; the warmed
    // up one (decay 11/20 at step 10) spans the last few steps.
    assert!(
        from_warm < 0.5 * from_plain,
        "distance to G: warmed up {from_warm}, plain {from_plain}"
    );
}

#[test]
fn the_moving_average_samples_resumes_exactly_and_generate_can_skip_it() {
    for model in tiny_models() {
        let arch = model.arch();
        let mut config = tiny_run(model, 10);
        config.train.g_ema = 0.9;
        let (a, b, plain) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        train::train(&config, a.path(), &mut ()).unwrap();
        let stopped = train::train(&config, b.path(), &mut StopAfter(5)).unwrap();
        assert_eq!(stopped.status, Status::Interrupted { step: 5 });
        train::train(&config, b.path(), &mut ()).unwrap();
        let png = |d: &std::path::Path| std::fs::read(d.join("samples/step-00000010.png")).unwrap();
        assert_eq!(losses_csv(a.path()), losses_csv(b.path()), "{arch}");
        assert_eq!(
            png(a.path()),
            png(b.path()),
            "{arch}: the average resumes exactly"
        );
        let mut without = config.clone();
        without.train.g_ema = 0.0;
        train::train(&without, plain.path(), &mut ()).unwrap();
        assert_eq!(
            losses_csv(a.path()),
            losses_csv(plain.path()),
            "{arch}: G trains the same"
        );
        assert_ne!(
            png(a.path()),
            png(plain.path()),
            "{arch}: the grid is the average's"
        );
        let checkpoint = a.path().join("checkpoints/step-00000010");
        assert!(checkpoint.join("generator-ema.bpk").is_file());
        let (average, raw) = (a.path().join("avg.png"), a.path().join("raw.png"));
        let averaged = ganrunner::generate::generate(a.path(), draw(25, 0, false), &average)
            .unwrap()
            .averaged;
        let raw_averaged = ganrunner::generate::generate(a.path(), draw(25, 0, true), &raw)
            .unwrap()
            .averaged;
        assert!(averaged && !raw_averaged);
        // Evaluations score the average and record the raw G's FID beside it.
        struct Scores(Vec<(f64, Option<f64>)>);
        impl Observer for Scores {
            fn eval(&mut self, _step: u64, metrics: &ganrunner::eval::Metrics) {
                self.0.push((metrics.fid, metrics.fid_raw));
            }
        }
        let mut evaluated = config.clone();
        evaluated.log.eval_samples = 50;
        let mut scores = Scores(Vec::new());
        train::train(&evaluated, tempfile::tempdir().unwrap().path(), &mut scores).unwrap();
        let (fid, fid_raw) = scores.0[0];
        assert!(fid.is_finite() && fid_raw.is_some_and(|raw| raw.is_finite() && raw != fid));
        assert_eq!(
            std::fs::read(&raw).unwrap(),
            png(plain.path()),
            "{arch}: --raw samples G itself"
        );
    }
}

#[test]
fn spectral_normalization_trains_every_model_and_resumes_exactly() {
    for mut model in tiny_models() {
        let arch = model.arch();
        let plain = tiny_run(model.clone(), 8);
        match &mut model {
            ModelConfig::Gan(o) => o.spectral_norm = true,
            ModelConfig::Dcgan(o) => o.spectral_norm = true,
            ModelConfig::DcganClassic(o) => o.spectral_norm = true,
        }
        let mut config = tiny_run(model.clone(), 8);
        config.train.loss = ganrunner::train::loss::LossKind::Hinge;
        // With a gradient penalty too: its input-gradient pass must leave D's graph intact.
        let mut penalized = tiny_run(model, 4);
        penalized.train.loss = ganrunner::train::loss::LossKind::WganGp;
        penalized.train.r1_gamma = 1.0;
        let out = train::train(&penalized, tempfile::tempdir().unwrap().path(), &mut ()).unwrap();
        assert_eq!(
            out.status,
            Status::Finished,
            "{arch}: spectral norm with penalties"
        );
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        assert_eq!(
            train::train(&config, a.path(), &mut ()).unwrap().status,
            Status::Finished
        );
        let stopped = train::train(&config, b.path(), &mut StopAfter(4)).unwrap();
        assert_eq!(stopped.status, Status::Interrupted { step: 4 });
        assert!(
            b.path()
                .join("checkpoints/step-00000004/spectral-norm.json")
                .is_file()
        );
        train::train(&config, b.path(), &mut ()).unwrap();
        assert_eq!(
            losses_csv(a.path()),
            losses_csv(b.path()),
            "{arch}: resume is exact"
        );
        assert_same_checkpoints(a.path(), b.path(), arch);
        let mut unnormalized = plain;
        unnormalized.train.loss = ganrunner::train::loss::LossKind::Hinge;
        train::train(&unnormalized, c.path(), &mut ()).unwrap();
        assert_ne!(
            losses_csv(a.path()),
            losses_csv(c.path()),
            "{arch}: it changes training"
        );
    }
}

#[test]
fn rmsprop_and_several_d_steps_train_deterministically() {
    let mut config = tiny_run(tiny_models().remove(1), 6);
    config.train.optimizer = ganrunner::spec::OptimizerKind::Rmsprop;
    config.train.d_steps = 3;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let out = train::train(&config, a.path(), &mut ()).unwrap();
    assert_eq!(out.status, Status::Finished);
    train::train(&config, b.path(), &mut ()).unwrap();
    assert_eq!(losses_csv(a.path()), losses_csv(b.path()));
    assert_same_checkpoints(a.path(), b.path(), "rmsprop");
    let mut adam = config.clone();
    adam.train.optimizer = ganrunner::spec::OptimizerKind::Adam;
    let c = tempfile::tempdir().unwrap();
    train::train(&adam, c.path(), &mut ()).unwrap();
    assert_ne!(
        losses_csv(a.path()),
        losses_csv(c.path()),
        "the optimizer matters"
    );
}

#[test]
fn a_run_directory_refuses_a_different_config_and_keeps_its_files() {
    let config = tiny_run(tiny_models().remove(0), 5);
    let dir = tempfile::tempdir().unwrap();
    train::train(&config, dir.path(), &mut ()).unwrap();
    let before = std::fs::read(dir.path().join("config.toml")).unwrap();
    let mut other = config.clone();
    other.train.lr = 1e-3;
    let err = train::train(&other, dir.path(), &mut ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("different config"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("config.toml")).unwrap(),
        before
    );
    // Only a longer run of the same config continues it.
    let mut longer = config.clone();
    longer.train.steps = Some(7);
    assert_eq!(
        train::train(&longer, dir.path(), &mut ())
            .unwrap()
            .resumed_from,
        Some(5)
    );
}

#[test]
fn evaluations_come_every_eval_every_steps_and_at_the_end_reproducibly() {
    #[derive(Default)]
    struct Evals(Vec<(u64, ganrunner::eval::Metrics)>);
    impl Observer for Evals {
        fn eval(&mut self, step: u64, metrics: &ganrunner::eval::Metrics) {
            self.0.push((step, metrics.clone()));
        }
    }
    let mut config = tiny_run(tiny_models()[0].clone(), 12);
    (config.log.eval_every, config.log.eval_samples) = (5, 100);
    let run = |dir: &std::path::Path| {
        let mut evals = Evals::default();
        train::train(&config, dir, &mut evals).unwrap();
        evals.0
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = run(a.path());
    assert_eq!(first.iter().map(|e| e.0).collect::<Vec<_>>(), [5, 10, 12]);
    for (_, m) in &first {
        assert_eq!(m.samples, 100);
        assert!(m.fid.is_finite() && m.fid > 0.0, "{m:?}");
        assert!((1.0..=10.0).contains(&m.inception_score), "{m:?}");
        assert!((0.0..=1.0).contains(&m.precision) && (0.0..=1.0).contains(&m.recall));
    }
    assert_eq!(
        first,
        run(b.path()),
        "the same config and seed evaluate the same"
    );
}

/// Fails like a GPU that cannot allocate: burn reports that by panicking mid-step.
struct FailsAt(u64);

impl Observer for FailsAt {
    fn step(&mut self, step: u64, _: train::Losses, _: f64) {
        if step == self.0 {
            panic!("can't allocate buffer of size: 150994944");
        }
    }
}

#[test]
fn a_panic_inside_training_is_the_runs_error_and_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_run(tiny_models().remove(0), 10);
    let err = train::train(&config, dir.path(), &mut FailsAt(7)).unwrap_err();
    assert!(
        format!("{err:#}").contains("training panicked: can't allocate buffer"),
        "{err:#}"
    );
    // The run directory is unlocked and its checkpoint at step 5 continues the run exactly.
    let resumed = train::train(&config, dir.path(), &mut ()).unwrap();
    assert_eq!(resumed.resumed_from, Some(5));
    let straight = tempfile::tempdir().unwrap();
    train::train(&config, straight.path(), &mut ()).unwrap();
    assert_eq!(losses_csv(dir.path()), losses_csv(straight.path()));
}

#[test]
fn a_walk_of_the_vanilla_gan_keeps_one_dropout_mask() {
    use ganrunner::generate::{Arrangement, generate};
    let config = tiny_run(tiny_models().remove(0), 5);
    assert!(
        config.model.sample_dropout(),
        "the vanilla GAN samples with dropout on"
    );
    let dir = tempfile::tempdir().unwrap();
    train::train(&config, dir.path(), &mut ()).unwrap();
    let read = |name: &str| {
        ganrunner::data::idx::read(&dir.path().join(name))
            .unwrap()
            .data
    };
    let mean_difference = |a: &[u8], b: &[u8]| {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).abs())
            .sum::<f64>()
            / a.len() as f64
    };
    let steps = 40;
    let walks = ganrunner::generate::Draw {
        arrangement: Arrangement::Walks { steps },
        ..draw(2, 0, false)
    };
    generate(dir.path(), walks, &dir.path().join("walks-idx3-ubyte")).unwrap();
    generate(
        dir.path(),
        draw(40, 0, false),
        &dir.path().join("plain-idx3-ubyte"),
    )
    .unwrap();
    let (walks, plain) = (read("walks-idx3-ubyte"), read("plain-idx3-ubyte"));
    let image = |set: &[u8], i: usize| set[i * 784..(i + 1) * 784].to_vec();
    let step = (0..steps - 1)
        .map(|i| mean_difference(&image(&walks, i), &image(&walks, i + 1)))
        .sum::<f64>()
        / (steps - 1) as f64;
    let apart = (0..39)
        .map(|i| mean_difference(&image(&plain, i), &image(&plain, i + 1)))
        .sum::<f64>()
        / 39.0;
    // A new mask for each image would make each step as big as the gap between two samples.
    assert!(
        step < apart / 4.0,
        "a step of a walk {step}, two samples {apart}"
    );
}

/// `GANRUNNER_READ_EVERY` leaves up to that many steps' losses unread (on a GPU, queued behind
/// the running steps): the same runs come out, to the byte, as reading every step, and a run
/// that diverges inside a block of unread steps stops at the step it diverged.
#[test]
fn losses_read_every_few_steps_train_the_same_runs() {
    let model = common::tiny_models().remove(1);
    let model = toml::to_string(&model).unwrap();
    let sweep = |read_every: &str| {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("blocks.toml");
        // Samples, checkpoints and evaluations at steps no block of 7 ends on.
        std::fs::write(
            &spec,
            format!(
                "name = \"blocks\"\n[model]\n{model}[train]\nsteps = 24\nbatch_size = 16\n\
                 [log]\nsample_every = 5\ncheckpoint_every = 10\nmetrics_every = 1\n\
                 eval_every = 12\neval_samples = 100\n\
                 [sweep]\n\"train.lr\" = [2e-4, 1e30]\n"
            ),
        )
        .unwrap();
        common::runner()
            .current_dir(dir.path())
            .args(["sweep", "blocks.toml", "--no-report", "--data-dir"])
            .arg(common::fixture_dir())
            .env("GANRUNNER_READ_EVERY", read_every)
            .assert()
            .success()
            .stdout(
                predicate::str::contains("1 finished, ")
                    .and(predicate::str::contains("1 diverged")),
            );
        dir
    };
    let rows = |dir: &std::path::Path| {
        let conn = common::db(dir);
        [
            "SELECT id || ' ' || status || ' ' || steps_done || ' ' || ifnull(error, '') FROM runs ORDER BY id",
            "SELECT run_id || ' ' || step || ' ' || name || ' ' || value FROM metrics ORDER BY 1",
            "SELECT run_id || ' ' || step || ' ' || metric || ' ' || value FROM evals ORDER BY 1",
            "SELECT run_id || ' ' || step || ' ' || path FROM samples ORDER BY 1",
            "SELECT run_id || ' ' || step || ' ' || path FROM checkpoints ORDER BY 1",
        ]
        .map(|sql| common::texts(&conn, sql))
    };
    let (every, blocks) = (sweep("1"), sweep("7"));
    let (a, b) = (rows(every.path()), rows(blocks.path()));
    assert!(a[1].len() > 24 && a[2].len() > 2 && a[3].len() > 5, "{a:?}");
    assert!(
        a[0].iter().any(|run| run.contains(" diverged ")),
        "{:?}",
        a[0]
    );
    assert_eq!(a, b, "the same rows, whenever the losses were read");
    let run_dir = |dir: &std::path::Path| {
        let conn = common::db(dir);
        let path: String = conn
            .query_row(
                "SELECT run_dir FROM runs WHERE status = 'finished'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        dir.join(path)
    };
    let (a, b) = (run_dir(every.path()), run_dir(blocks.path()));
    assert_eq!(losses_csv(&a), losses_csv(&b));
    for step in [5, 20, 24] {
        let png = |d: &std::path::Path| {
            std::fs::read(d.join(format!("samples/step-{step:08}.png"))).unwrap()
        };
        assert!(png(&a) == png(&b), "the samples of step {step}");
    }
    assert_same_checkpoints(&a, &b, "read every 7 steps");
    // Not a number of steps: an error naming the variable, before anything runs.
    for value in ["0", "1001", "ten"] {
        common::runner()
            .args(["bench", "--steps", "1", "--model", "gan"])
            .env("GANRUNNER_READ_EVERY", value)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(format!(
                "GANRUNNER_READ_EVERY={value}: expected a number of steps from 1 to 1000"
            )));
    }
}
