//! Conditional generation (`model.conditional`): labels reach G and D in every mode and arch,
//! every mode trains reproducibly and resumes exactly, grids have one row per class,
//! evaluations score the intended classes, and `generate --class` draws one class.

use crate::common;

use common::{tiny_models, tiny_run};
use ganrunner::data::{Digits, Split};
use ganrunner::eval::Evaluator;
use ganrunner::images::ImageBatch;
use ganrunner::model::conditional::one_hot;
use ganrunner::model::{CLASSES, Conditioning, ModelConfig};
use ganrunner::train::{
    self,
    rng::{Stream, rng_for},
};

const MODES: [Conditioning; 3] = [
    Conditioning::Concat,
    Conditioning::Projection,
    Conditioning::Acgan,
];

fn conditional(mut model: ModelConfig, mode: Conditioning) -> ModelConfig {
    match &mut model {
        ModelConfig::Gan(o) => o.conditional = mode,
        ModelConfig::Dcgan(o) => o.conditional = mode,
        ModelConfig::DcganClassic(o) => o.conditional = mode,
    }
    model
}

fn values<const D: usize>(t: burn::Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec().unwrap()
}

#[test]
fn the_label_changes_what_g_draws_and_what_d_says() {
    let device = ganrunner::backend::device();
    for mode in MODES {
        for model in tiny_models() {
            let model = conditional(model, mode);
            let what = format!("{} {mode:?}", model.arch());
            let (g, d) = model.build(&mut rng_for(0, Stream::Init, 0), &device);
            let z = train::latents(&mut rng_for(0, Stream::Step, 0), 4, 8, &device);
            let draw = |labels: &[u8]| g.forward(z.clone(), Some(&one_hot(labels, &device)), None);
            let (threes, sevens) = (draw(&[3; 4]), draw(&[7; 4]));
            assert_ne!(
                values(threes.clone()),
                values(sevens),
                "{what}: G ignores its label"
            );
            let side = model.image_side();
            assert_eq!(threes.dims(), [4, 1, side, side], "{what}");

            let judge =
                |labels: &[u8]| d.forward(threes.clone(), Some(&one_hot(labels, &device)), None);
            let (as_three, as_seven) = (judge(&[3; 4]), judge(&[7; 4]));
            assert_eq!(as_three.logits.dims(), [4, 1], "{what}");
            if mode == Conditioning::Acgan {
                let classes = as_three.class_logits.expect("an auxiliary classifier");
                assert_eq!(classes.dims(), [4, CLASSES], "{what}");
                assert_eq!(values(as_three.logits), values(as_seven.logits), "{what}");
            } else {
                assert!(as_three.class_logits.is_none(), "{what}");
                assert_ne!(
                    values(as_three.logits),
                    values(as_seven.logits),
                    "{what}: D ignores the label"
                );
            }
        }
    }
}

fn losses(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("losses.csv")).unwrap()
}

/// Every arch in every mode: two runs give the same losses, a run stopped at step 5 and
/// resumed gives the same losses as one straight run, and the losses are finite.
#[test]
fn every_mode_trains_reproducibly_and_resumes_exactly() {
    for mode in MODES {
        for model in tiny_models() {
            let what = format!("{} {mode:?}", model.arch());
            let config = tiny_run(conditional(model, mode), 10);
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            train::train(&config, a.path(), &mut ()).unwrap();
            let mut half = config.clone();
            half.train.steps = Some(5);
            train::train(&half, b.path(), &mut ()).unwrap();
            let outcome = train::train(&config, b.path(), &mut ()).unwrap();
            assert_eq!(outcome.resumed_from, Some(5), "{what}");
            assert_eq!(
                losses(a.path()),
                losses(b.path()),
                "{what}: resume is exact"
            );
            assert_eq!(outcome.status, train::Status::Finished, "{what}");
        }
    }
}

/// The paths where labels meet the rest of the toolbox: penalties at fixed labels, spectral
/// norm over the class embedding, several D steps (fresh labelled batches), the moving average.
#[test]
fn labels_work_with_penalties_spectral_norm_d_steps_and_the_average() {
    for (mode, model) in MODES.into_iter().zip(tiny_models()) {
        let mut model = conditional(model, mode);
        match &mut model {
            ModelConfig::Gan(o) => o.spectral_norm = true,
            ModelConfig::Dcgan(o) => o.spectral_norm = true,
            ModelConfig::DcganClassic(o) => o.spectral_norm = true,
        }
        let mut config = tiny_run(model, 6);
        config.train.loss = ganrunner::train::loss::LossKind::WganGp;
        config.train.r1_gamma = 1.0;
        config.train.d_steps = 2;
        config.train.g_ema = 0.9;
        let dir = tempfile::tempdir().unwrap();
        let outcome = train::train(&config, dir.path(), &mut ()).unwrap();
        assert_eq!(outcome.status, train::Status::Finished, "{mode:?}");
        let again = tempfile::tempdir().unwrap();
        train::train(&config, again.path(), &mut ()).unwrap();
        assert_eq!(losses(dir.path()), losses(again.path()), "{mode:?}");
    }
}

#[test]
fn a_conditional_run_needs_two_evaluation_samples_per_class() {
    let mut config = tiny_run(conditional(tiny_models().remove(0), Conditioning::Acgan), 5);
    config.log.eval_samples = 19;
    let problems = config.problems();
    assert!(
        problems
            .iter()
            .any(|(k, m)| k == "log.eval_samples" && m.contains("two per class")),
        "{problems:?}"
    );
    config.log.eval_samples = 20;
    assert!(config.problems().is_empty());
}

#[test]
fn a_conditional_grid_has_one_row_per_class() {
    let mut config = tiny_run(
        conditional(tiny_models().remove(0), Conditioning::Concat),
        5,
    );
    config.log.grid = 3;
    let dir = tempfile::tempdir().unwrap();
    train::train(&config, dir.path(), &mut ()).unwrap();
    let grid = image::open(dir.path().join("samples/step-00000005.png")).unwrap();
    let cell = 28 + 2;
    let expected = ImageBatch {
        pixels: vec![0; 30 * 28 * 28],
        side: 28,
    }
    .grid(3);
    assert_eq!((grid.width(), grid.height()), expected.dimensions());
    assert_eq!(grid.height() as usize, CLASSES * cell + 2);
}

#[test]
fn generate_draws_one_class_and_refuses_a_class_for_an_unconditional_run() {
    use ganrunner::generate::{Arrangement, Draw, generate};
    let config = tiny_run(conditional(tiny_models().remove(1), Conditioning::Acgan), 5);
    let dir = tempfile::tempdir().unwrap();
    train::train(&config, dir.path(), &mut ()).unwrap();
    let draw = |class| Draw {
        n: 12,
        seed: 0,
        raw: false,
        class,
        arrangement: Arrangement::Samples,
    };
    let out = |name: &str| dir.path().join(name);
    generate(dir.path(), draw(Some(7)), &out("sevens.npy")).unwrap();
    generate(dir.path(), draw(Some(2)), &out("twos.npy")).unwrap();
    generate(dir.path(), draw(None), &out("all.png")).unwrap();
    // A folder: one subfolder per class, image i of class i % 10 (or --class's).
    for (class, name) in [(None, "all/"), (Some(7), "sevens/")] {
        generate(dir.path(), draw(class), &out(name)).unwrap();
        let loaded = ImageBatch::load(&out(name)).unwrap();
        let expected: Vec<u8> = (0..12).map(|i| class.unwrap_or(i % 10)).collect();
        assert_eq!(loaded.labels, Some(expected), "{name}");
        assert_eq!((loaded.images.len(), loaded.images.side), (12, 32));
    }
    let read = |name: &str| std::fs::read(out(name)).unwrap();
    assert_ne!(read("sevens.npy"), read("twos.npy"), "the class matters");
    // Without --class: one grid column per class.
    let grid = image::open(out("all.png")).unwrap();
    assert_eq!(grid.width() as usize, CLASSES * (32 + 2) + 2);
    // Walks keep one class each: walk r shows class r % 10, or --class's.
    let walks = |class, name: &str| {
        let arrangement = Arrangement::Walks { steps: 3 };
        generate(
            dir.path(),
            Draw {
                arrangement,
                ..draw(class)
            },
            &out(name),
        )
        .unwrap();
        let images = ganrunner::data::idx::read(&out(name)).unwrap().data;
        move |r: usize| images[r * 3 * 784..(r + 1) * 3 * 784].to_vec()
    };
    let (cycling, sevens) = (
        walks(None, "walks-idx3-ubyte"),
        walks(Some(7), "w7-idx3-ubyte"),
    );
    assert_eq!(cycling(7), sevens(7), "walk 7 shows class 7");
    assert_ne!(cycling(2), sevens(2), "walk 2 shows class 2");

    let plain = tempfile::tempdir().unwrap();
    train::train(&tiny_run(tiny_models().remove(0), 5), plain.path(), &mut ()).unwrap();
    let err = generate(plain.path(), draw(Some(7)), &out("x.png")).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("--class 7") && message.contains("conditional"),
        "{message}"
    );
    assert!(!out("x.png").exists());

    common::runner()
        .args(["generate", "--checkpoint"])
        .arg(dir.path())
        .args(["--class", "10", "--out"])
        .arg(out("y.png"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("--class"));
}

/// Real test digits with their true labels: class_acc is the classifier's accuracy on them;
/// with every label wrong it is 0 and each class's digits are compared with another class's
/// (intra-FID far larger).
#[test]
fn class_accuracy_and_intra_fid_score_the_intended_labels() {
    let dir = common::fixture_dir();
    let evaluator = Evaluator::new(&dir, 28, &mut |_| {}).unwrap();
    let test = Digits::load(&dir, Split::Test).unwrap();
    let images = ImageBatch {
        pixels: test.pixels.clone(),
        side: 28,
    };
    let right = evaluator.evaluate(&images, Some(&test.labels));
    let wrong_labels: Vec<u8> = test.labels.iter().map(|l| (l + 1) % 10).collect();
    let wrong = evaluator.evaluate(&images, Some(&wrong_labels));
    let unlabelled = evaluator.evaluate(&images, None);

    let classifier = ganrunner::eval::classifier::Classifier::load_or_train(&dir, &mut |_| {})
        .unwrap()
        .accuracy(&test);
    assert_eq!(right.class_acc, Some(classifier));
    assert!(right.intra_fid.unwrap() < 1e-2, "{:?}", right.intra_fid);
    assert!(wrong.class_acc.unwrap() < 0.05, "{:?}", wrong.class_acc);
    assert!(
        wrong.intra_fid.unwrap() > 10.0 * right.fid.max(1.0),
        "{:?}",
        wrong.intra_fid
    );
    assert_eq!((unlabelled.class_acc, unlabelled.intra_fid), (None, None));
    // A class with under two samples has no covariance: no intra-FID rather than a wrong one.
    let few = ImageBatch {
        pixels: test.pixels[..15 * 28 * 28].to_vec(),
        side: 28,
    };
    let few_labels: Vec<u8> = (0..15).map(|i| i % 10).collect();
    let scored = evaluator.evaluate(&few, Some(&few_labels));
    assert!(scored.class_acc.is_some() && scored.intra_fid.is_none());
    assert_eq!(
        right.fid, unlabelled.fid,
        "labels change only the conditional scores"
    );
    let named: Vec<String> = right.named().into_iter().map(|(k, _)| k).collect();
    assert!(named.contains(&"class_acc".into()) && named.contains(&"intra_fid".into()));
}

#[test]
fn a_conditional_gans_images_with_their_labels_score_as_its_own_evaluation() {
    let mut config = tiny_run(
        conditional(tiny_models().remove(0), Conditioning::Concat),
        5,
    );
    config.train.seed = 4;
    let (fixture, n) = (common::fixture_dir(), 100);
    let (run, own) = common::trained_and_scored(&config, n);
    let mut log = |line: &str| eprintln!("{line}");
    let own_acc = own
        .metrics
        .class_acc
        .expect("a conditional run's score has class_acc");

    // What a script would save: the images and, as torch.long, the class each was drawn for.
    let loaded = ganrunner::generate::load_generator(run.path(), false).unwrap();
    let labels = train::eval_labels(&config.model, n).unwrap();
    let values = train::sample_values(
        &loaded.generator,
        &config.model,
        n,
        4,
        Stream::Eval,
        Some(&labels),
    );
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images-idx3-ubyte");
    ImageBatch::from_unit(&values, 28).save(&images, 1).unwrap();
    let longs: Vec<u8> = labels
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    let write = |name: &str, descr: &str, shape: &[usize], data: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, common::npy(descr, shape, data)).unwrap();
        path
    };
    let labels_file = write("labels.npy", "<i8", &[n], &longs);
    let scored =
        ganrunner::score::score_file(&images, Some(&labels_file), &fixture, n, &mut log).unwrap();
    assert_eq!(scored.metrics.fid, own.metrics.fid);
    assert_eq!(scored.metrics.class_acc, Some(own_acc));
    assert_eq!(scored.metrics.intra_fid, own.metrics.intra_fid);
    // The same images in class folders (torchvision's ImageFolder layout) carry their labels.
    let folder = dir.path().join("by-class");
    let batch = ImageBatch::from_unit(&values, 28);
    ganrunner::images::write_folder(&batch, Some(&labels), &folder).unwrap();
    let scored = ganrunner::score::score_file(&folder, None, &fixture, n, &mut log).unwrap();
    assert_eq!(scored.metrics.fid, own.metrics.fid);
    assert_eq!(scored.metrics.class_acc, Some(own_acc));
    assert_eq!(scored.metrics.intra_fid, own.metrics.intra_fid);
    let twice = ganrunner::score::score_file(&folder, Some(&labels_file), &fixture, n, &mut log);
    assert!(format!("{:#}", twice.err().unwrap()).contains("already label the images"));

    let eval = |labels: &std::path::Path| {
        let mut command = common::runner();
        command
            .args(["eval", "--format", "csv", "--images"])
            .arg(&images)
            .arg("--labels")
            .arg(labels)
            .arg("--data-dir")
            .arg(&fixture);
        command.assert()
    };
    eval(&labels_file)
        .success()
        .stdout(predicates::str::contains(",class_acc,intra_fid,"));
    common::runner()
        .args(["eval", "--images"])
        .args([&images, &folder])
        .arg("--labels")
        .arg(&labels_file)
        .assert()
        .code(1)
        .stderr(predicates::str::contains(
            "--labels goes with one --images, not 2",
        ));
    let short = write("short.npy", "<i8", &[3], &longs[..24]);
    eval(&short)
        .code(1)
        .stderr(predicates::str::contains("3 labels for the 100 images"));
    let mut eleven = longs.clone();
    eleven[8..16].copy_from_slice(&11i64.to_le_bytes());
    eval(&write("eleven.npy", "<i8", &[n], &eleven))
        .code(1)
        .stderr(predicates::str::contains(
            "label 1 is 11; labels are digits 0-9",
        ));
    eval(&write("floats.npy", "<f4", &[n], &vec![0; 4 * n]))
        .code(1)
        .stderr(predicates::str::contains("use uint8, int32 or int64"));
}
