//! The evaluator on the real-digit fixture: its metrics behave as their definitions promise.

use crate::common;

use ganrunner::data::{Digits, Split};
use ganrunner::eval::{Evaluator, Metrics};
use ganrunner::images::ImageBatch;
use predicates::prelude::PredicateBooleanExt;

fn evaluator(side: usize) -> Evaluator {
    Evaluator::new(&common::fixture_dir(), side, &mut |line| {
        eprintln!("{line}")
    })
    .unwrap()
}

fn batch(digits: &Digits, keep: impl Fn(u8) -> bool) -> ImageBatch {
    let pixels = (0..digits.len())
        .filter(|&i| keep(digits.labels[i]))
        .flat_map(|i| digits.image(i).to_vec())
        .collect();
    ImageBatch {
        pixels,
        side: digits.side,
    }
}

fn score(evaluator: &Evaluator, images: &ImageBatch) -> Metrics {
    let m = evaluator.evaluate(images, None);
    eprintln!("{}", m.summary());
    m
}

#[test]
fn identical_sets_score_perfectly_and_noise_scores_far_worse() {
    let ev = evaluator(28);
    let test = Digits::load(&common::fixture_dir(), Split::Test).unwrap();
    let train = Digits::load(&common::fixture_dir(), Split::Train).unwrap();

    let same = score(&ev, &batch(&test, |_| true));
    assert!(
        same.fid.abs() < 1e-2,
        "FID of the test set with itself: {}",
        same.fid
    );
    assert_eq!(
        (same.precision, same.recall, same.coverage),
        (1.0, 1.0, 1.0)
    );

    let real = score(&ev, &batch(&train, |_| true));
    let noise_pixels: Vec<u8> = (0..600 * 28 * 28)
        .map(|i| ((i as u64).wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let noise = score(
        &ev,
        &ImageBatch {
            pixels: noise_pixels,
            side: 28,
        },
    );
    assert!(
        noise.fid > 10.0 * real.fid && noise.fid > 10.0,
        "noise FID {} vs real FID {}",
        noise.fid,
        real.fid
    );
    assert!(noise.precision < real.precision);
    assert!(real.inception_score > noise.inception_score);
    assert!(real.class_kl < 0.1, "real digits are roughly balanced");
}

#[test]
fn one_digit_repeated_has_no_diversity() {
    let ev = evaluator(28);
    let test = Digits::load(&common::fixture_dir(), Split::Test).unwrap();
    let one = ImageBatch {
        pixels: test.image(0).repeat(300),
        side: 28,
    };
    let m = score(&ev, &one);
    assert!(
        (m.inception_score - 1.0).abs() < 1e-3,
        "IS {}",
        m.inception_score
    );
    assert!(
        (m.class_kl - 10f64.ln()).abs() < 1e-9,
        "class KL {}",
        m.class_kl
    );
    assert!(m.class_histogram.iter().filter(|&&h| h > 0.0).count() == 1);
    assert!(m.recall < 0.1, "recall {}", m.recall);
}

#[test]
fn half_the_classes_keep_precision_but_lose_recall() {
    let ev = evaluator(28);
    let train = Digits::load(&common::fixture_dir(), Split::Train).unwrap();
    let all = score(&ev, &batch(&train, |_| true));
    let low = score(&ev, &batch(&train, |l| l < 5));
    assert!(
        low.precision > all.precision - 0.1,
        "precision {} vs {}",
        low.precision,
        all.precision
    );
    // The fixture's classifier sees 600 digits (71% accurate), so its classes overlap more
    // than the real one's: the drop is smaller than half, but clear.
    assert!(
        low.recall < all.recall - 0.1,
        "recall {} vs {}",
        low.recall,
        all.recall
    );
    assert!(low.coverage < all.coverage - 0.1);
    let missing: f64 = low.class_histogram[5..].iter().sum();
    assert!(
        missing < 0.2,
        "classes 5-9 predicted for {missing} of 0-4 digits"
    );
    assert!(low.class_kl > all.class_kl);
}

#[test]
fn the_32px_evaluator_compares_like_with_like() {
    // Digits put through the DCGANs' 28 -> 32 resize score as well at 32 as crisp digits at 28.
    let (ev28, ev32) = (evaluator(28), evaluator(32));
    let train = Digits::load(&common::fixture_dir(), Split::Train).unwrap();
    let real28 = score(&ev28, &batch(&train, |_| true));
    let real32 = score(&ev32, &batch(&train, |_| true).resized(32));
    assert!(
        (real32.fid - real28.fid).abs() < 0.5 * real28.fid.max(1.0),
        "FID at 32 {} vs at 28 {}",
        real32.fid,
        real28.fid
    );
    assert_eq!(ev32.side(), 32);
}

#[test]
fn the_classifier_is_cached_and_deterministic() {
    let first = evaluator(28);
    let path = first.classifier_path().to_path_buf();
    assert!(path.is_file(), "{} cached", path.display());
    let again = evaluator(28);
    assert_eq!(first.classifier_accuracy(), again.classifier_accuracy());
    assert!(
        first.classifier_accuracy() > 0.6,
        "fixture accuracy {}",
        first.classifier_accuracy()
    );
    // A corrupt cache is retrained into the same weights.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(common::fixture_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let cache = dir.path().join("evaluator");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::copy(
        path.with_extension("json"),
        cache.join(path.with_extension("json").file_name().unwrap()),
    )
    .unwrap();
    std::fs::write(cache.join(path.file_name().unwrap()), b"not a burnpack").unwrap();
    let mut lines = Vec::new();
    let rebuilt = Evaluator::new(dir.path(), 28, &mut |l| lines.push(l.to_string())).unwrap();
    assert!(lines.iter().any(|l| l.contains("retraining")), "{lines:?}");
    assert_eq!(rebuilt.classifier_accuracy(), first.classifier_accuracy());
    let test = Digits::load(&common::fixture_dir(), Split::Test).unwrap();
    let images = batch(&test, |l| l % 2 == 0);
    assert_eq!(
        first.evaluate(&images, None),
        rebuilt.evaluate(&images, None)
    );
}

/// The shipped MNIST classifier (the fixed yardstick) on the fixture's real MNIST digits.
#[test]
fn the_shipped_classifier_reproduces_its_accuracy_and_a_stored_fid() {
    use ganrunner::eval::classifier::Classifier;
    let shipped = Classifier::shipped_by_name("mnist-lenet-v2").unwrap();
    assert!((shipped.test_accuracy - 0.9905).abs() < 1e-9, "its record");
    let test = Digits::load(&common::fixture_dir(), Split::Test).unwrap();
    // 200 of the 10 000 test digits: the recorded 99.05% within three binomial errors.
    let accuracy = shipped.accuracy(&test);
    let error = (0.9905f64 * 0.0095 / test.len() as f64).sqrt();
    assert!(
        (accuracy - 0.9905).abs() <= 3.0 * error + 1e-9,
        "{accuracy}"
    );
    // The same sample set gets the same FID with these weights, on any machine (a stored
    // value; the tolerance allows for float summation order between CPUs).
    let ev = Evaluator::with_classifier(shipped, &common::fixture_dir(), 28).unwrap();
    let train = Digits::load(&common::fixture_dir(), Split::Train).unwrap();
    let fid = score(&ev, &batch(&train, |_| true)).fid;
    assert!(
        (fid - STORED_FID).abs() < 1e-3 * STORED_FID,
        "FID {fid}, stored {STORED_FID}"
    );
}

/// LeNet-FID of the fixture's 600 training digits against its 200 test digits, in the shipped
/// MNIST classifier's features.
const STORED_FID: f64 = 77.2230;

/// The shipped classifiers on their whole test sets give exactly their recorded accuracies
/// (needs `make data data-fashion`; `make test-full` runs it).
#[test]
#[ignore]
fn the_shipped_classifiers_score_their_recorded_accuracy_on_the_full_test_sets() {
    use ganrunner::eval::classifier::Classifier;
    for (dataset, name) in [
        ("mnist", "mnist-lenet-v2"),
        ("fashion-mnist", "fashion-mnist-lenet-v2"),
    ] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join(dataset);
        let test = Digits::load(&dir, Split::Test).unwrap();
        let shipped = Classifier::shipped_by_name(name).unwrap();
        assert_eq!(test.len(), 10_000);
        assert!(
            (shipped.accuracy(&test) - shipped.test_accuracy).abs() < 1e-9,
            "{name}"
        );
    }
}

/// The same file with its header saying the array is in Fortran (column-major) order.
fn fortran(mut file: Vec<u8>) -> Vec<u8> {
    let at = file.windows(5).position(|w| w == b"False").unwrap();
    file[at..at + 5].copy_from_slice(b"True ");
    file
}

fn le_bytes<T: Copy, const N: usize>(values: &[T], bytes: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| bytes(v)).collect()
}

#[test]
fn images_from_another_program_score_as_the_runner_scores_its_own_samples() {
    use ganrunner::train::{self, rng::Stream};
    let mut config = common::tiny_run(common::tiny_models().remove(1), 5);
    config.train.seed = 3;
    let (fixture, n) = (common::fixture_dir(), 200);
    let (run, own) = common::trained_and_scored(&config, n);
    let mut log = |line: &str| eprintln!("{line}");

    // What a PyTorch script would save of the same generator's output (32x32, tanh).
    let loaded = ganrunner::generate::load_generator(run.path(), false).unwrap();
    let values = train::sample_values(&loaded.generator, &config.model, n, 3, Stream::Eval, None);
    assert_eq!(values.len(), n * 32 * 32);
    let unit: Vec<f64> = values.iter().map(|&v| (v as f64 + 1.0) / 2.0).collect();
    let pixels = ImageBatch::from_unit(&values, 32);
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let tanh = file(
        "tanh.npy",
        common::npy("<f4", &[n, 1, 32, 32], &le_bytes(&values, f32::to_le_bytes)),
    );
    let unit = file(
        "unit.npy",
        common::npy("<f8", &[n, 32 * 32], &le_bytes(&unit, f64::to_le_bytes)),
    );
    let bytes = file(
        "bytes.npy",
        common::npy("|u1", &[n, 32, 32, 1], &pixels.pixels),
    );
    let idx = dir.path().join("samples-idx3-ubyte");
    pixels.save(&idx, 1).unwrap();
    let folder = dir.path().join("pngs");
    ganrunner::images::write_folder(&pixels, None, &folder).unwrap();

    for path in [&tanh, &bytes, &idx, &folder] {
        let scored = ganrunner::score::score_file(path, None, &fixture, n, &mut log).unwrap();
        assert_eq!(scored.metrics.fid, own.metrics.fid, "{}", path.display());
        assert_eq!(scored.metrics.precision, own.metrics.precision);
    }
    // [0, 1] floats round to pixels their own way: a pixel may differ by one level.
    let scored = ganrunner::score::score_file(&unit, None, &fixture, n, &mut log).unwrap();
    assert!((scored.metrics.fid / own.metrics.fid - 1.0).abs() < 0.01);

    // The command line: the first --samples images, one row, not recorded anywhere.
    let fid_of = |samples: &str| {
        let out = common::runner()
            .args(["eval", "--format", "json", "--samples", samples, "--images"])
            .arg(&tanh)
            .arg("--data-dir")
            .arg(&fixture)
            .current_dir(dir.path())
            .assert()
            .success()
            .stderr(predicates::str::contains(
                "200 images of 32x32 (<f4 in [-1, 1])",
            ));
        let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
        let row = &rows[0];
        (
            row["samples"].as_u64().unwrap(),
            row["fid"].as_f64().unwrap(),
        )
    };
    let (samples, fid) = fid_of("200");
    assert_eq!(samples, 200);
    assert!(
        (fid - own.metrics.fid).abs() < 1e-3,
        "{fid} vs {}",
        own.metrics.fid
    );
    assert_eq!(fid_of("100").0, 100);
    assert_eq!(fid_of("5000").0, 200, "a short file is scored whole");
    // Several at once: a row each, in order.
    let out = common::runner()
        .args(["eval", "--format", "json", "--images"])
        .args([&tanh, &folder, &idx])
        .arg("--data-dir")
        .arg(&fixture)
        .assert()
        .success();
    let rows: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (row, path) in rows.iter().zip([&tanh, &folder, &idx]) {
        assert_eq!(row["set"], path.display().to_string());
        assert!((row["fid"].as_f64().unwrap() - own.metrics.fid).abs() < 1e-3);
    }
    assert!(!dir.path().join("results").exists(), "nothing recorded");
}

#[test]
fn bad_image_files_are_refused_naming_the_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let image = vec![0u8; 28 * 28];
    let floats = |values: &[f32]| le_bytes(values, f32::to_le_bytes);
    let mut nan = vec![0.5f32; 2 * 784];
    nan[5] = f32::NAN;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "grid.png",
            vec![0; 10],
            "one PNG file (a grid?) is not split",
        ),
        ("samples.jpg", vec![0; 10], "unknown image file"),
        (
            "junk.npy",
            b"not an array at all".to_vec(),
            "not a .npy array",
        ),
        (
            "rgb.npy",
            common::npy("|u1", &[2, 3, 28, 28], &vec![0; 6 * 784]),
            "(N, S, S)",
        ),
        (
            "wide.npy",
            common::npy("|u1", &[2, 28, 30], &vec![0; 2 * 28 * 30]),
            "not a batch of square",
        ),
        (
            "tiny.npy",
            common::npy("|u1", &[2, 4, 4], &[0; 32]),
            "the evaluator takes 8 to 256",
        ),
        (
            "ints.npy",
            common::npy("<i8", &[2, 28, 28], &vec![0; 2 * 784 * 8]),
            "use uint8, float32 or float64",
        ),
        (
            "nan.npy",
            common::npy("<f4", &[2, 28, 28], &floats(&nan)),
            "value 5 is NaN",
        ),
        (
            "hot.npy",
            common::npy("<f4", &[2, 784], &floats(&[300.0; 2 * 784])),
            "values from 300 to 300",
        ),
        (
            "huge.npy",
            common::npy("|u1", &[1_000_000_000, 28, 28], &image),
            "more than the file's",
        ),
        (
            "fortran.npy",
            fortran(common::npy("|u1", &[2, 28, 28], &[0; 2 * 784])),
            "a Fortran-ordered array",
        ),
        (
            "one.npy",
            common::npy("|u1", &[1, 28, 28], &image),
            "1 image(s); scoring needs at least 2",
        ),
        ("missing.npy", Vec::new(), "missing.npy"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        if name != "missing.npy" {
            std::fs::write(&path, bytes).unwrap();
        }
        common::runner()
            .args(["eval", "--images"])
            .arg(&path)
            .arg("--data-dir")
            .arg(common::fixture_dir())
            .assert()
            .code(1)
            .stderr(
                predicates::str::contains(name)
                    .and(predicates::str::contains(expected))
                    .and(predicates::str::contains("panicked").not()),
            );
    }
    // A pipe, whose reading would wait for a writer forever.
    let pipe = dir.path().join("pipe.npy");
    common::make_fifo(&pipe);
    for flag in ["--images", "--labels"] {
        let mut command = common::runner();
        command.args(["eval", "--images"]);
        if flag == "--labels" {
            command.arg(dir.path().join("one.npy")).arg("--labels");
        }
        command
            .arg(&pipe)
            .arg("--data-dir")
            .arg(common::fixture_dir())
            .timeout(std::time::Duration::from_secs(60))
            .assert()
            .code(1)
            .stderr(predicates::str::contains("pipe.npy: not a regular file"));
    }
}

/// A copy of the fixture, with its classifier (trained once, cached in `evaluator/`) but
/// none of the evaluators' cached references.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for from in [
        common::fixture_dir(),
        common::fixture_dir().join("evaluator"),
    ] {
        let to = dir
            .path()
            .join(from.strip_prefix(common::fixture_dir()).unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let path = entry.unwrap().path();
            let reference = path.to_string_lossy().contains("reference-");
            if path.is_file() && !reference {
                std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    dir
}

#[test]
fn the_test_digits_reference_is_cached_on_disk_and_never_read_when_it_is_not_theirs() {
    let dir = fixture_copy();
    let new = |side| Evaluator::new(dir.path(), side, &mut |_| {}).unwrap();
    let train = Digits::load(&common::fixture_dir(), Split::Train).unwrap();
    let images = |side| batch(&train, |label| label != 7).resized(side);
    let cached = |side: usize| dir.path().join(format!("evaluator/reference-{side}.bin"));
    let written = |side| std::fs::metadata(cached(side)).unwrap().modified().unwrap();

    // Computed, written, then read: the same scores, to the bit.
    let fresh = new(32).evaluate(&images(32), None);
    let file = std::fs::read(cached(32)).unwrap();
    let at = written(32);
    assert_eq!(new(32).evaluate(&images(32), None), fresh);
    assert_eq!(written(32), at, "read, not written again");
    let fresh_28 = new(28).evaluate(&images(28), None);
    assert_ne!(fresh_28, fresh);

    // Damaged (a flipped bit, a cut), or another side's (another key): computed again, the
    // same scores, the file made whole.
    let mut flipped = file.clone();
    flipped[file.len() / 2] ^= 1;
    for damaged in [flipped, file[..file.len() - 1].to_vec()] {
        std::fs::write(cached(32), damaged).unwrap();
        assert_eq!(new(32).evaluate(&images(32), None), fresh);
        assert_eq!(std::fs::read(cached(32)).unwrap(), file);
    }
    std::fs::copy(cached(32), cached(28)).unwrap();
    assert_eq!(new(28).evaluate(&images(28), None), fresh_28);
    assert_ne!(std::fs::read(cached(28)).unwrap(), file);

    // A link there is not written through.
    let theirs = dir.path().join("theirs.bin");
    std::fs::write(&theirs, b"the user's").unwrap();
    std::fs::remove_file(cached(28)).unwrap();
    std::os::unix::fs::symlink(&theirs, cached(28)).unwrap();
    assert_eq!(new(28).evaluate(&images(28), None), fresh_28);
    assert_eq!(std::fs::read(&theirs).unwrap(), b"the user's");

    // Other test digits (one pixel changed): another key.
    let test = Digits::load(dir.path(), Split::Test).unwrap();
    let mut pixels = test.pixels.clone();
    pixels[300] = pixels[300].wrapping_add(77);
    let array = ganrunner::data::idx::IdxArray {
        dims: vec![test.len(), 28, 28],
        data: pixels,
    };
    std::fs::remove_file(dir.path().join("t10k-images-idx3-ubyte.gz")).unwrap();
    std::fs::write(
        dir.path().join("t10k-images-idx3-ubyte"),
        ganrunner::data::idx::encode(&array),
    )
    .unwrap();
    assert_ne!(new(32).evaluate(&images(32), None), fresh);
    assert_ne!(std::fs::read(cached(32)).unwrap(), file);
}

#[test]
fn runs_share_one_evaluator_per_data_set_and_side_until_the_data_changes() {
    let dir = fixture_copy();
    let mut lines = Vec::new();
    let mut shared =
        |side| Evaluator::shared(dir.path(), side, &mut |l| lines.push(l.to_string())).unwrap();
    let first = shared(28);
    let again = shared(28);
    assert!(std::sync::Arc::ptr_eq(&first, &again));
    assert!(!std::sync::Arc::ptr_eq(&first, &shared(32)), "another side");
    // Rewritten test digits: a new evaluator, which scores against them.
    let test = dir.path().join("t10k-images-idx3-ubyte.gz");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&test)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let rebuilt = shared(28);
    assert!(!std::sync::Arc::ptr_eq(&first, &rebuilt));
    assert!(std::sync::Arc::ptr_eq(&rebuilt, &shared(28)));
    let cached = format!(
        "classifier: {} (test accuracy",
        dir.path().join("evaluator/lenet-v2.bpk").display()
    );
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with(&cached)),
        "every run logs its classifier: {lines:?}"
    );
}

#[test]
fn data_the_evaluator_cannot_read_fails_a_run_before_it_trains() {
    use ganrunner::data::idx::{IdxArray, encode};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("digits32");
    std::fs::create_dir(&data).unwrap();
    for (split, n) in [("train", 64), ("t10k", 20)] {
        let images = IdxArray {
            dims: vec![n, 32, 32],
            data: (0..n * 1024).map(|i| (i % 251) as u8).collect(),
        };
        let labels = IdxArray {
            dims: vec![n],
            data: (0..n).map(|i| (i % 10) as u8).collect(),
        };
        std::fs::write(
            data.join(format!("{split}-images-idx3-ubyte")),
            encode(&images),
        )
        .unwrap();
        std::fs::write(
            data.join(format!("{split}-labels-idx1-ubyte")),
            encode(&labels),
        )
        .unwrap();
    }
    let spec = dir.path().join("spec.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"big\"\n{}[train]\nsteps = 100000\nbatch_size = 16\n[log]\neval_samples = 50\neval_every = 50000\n",
            common::tiny_gan_model_toml()
        ),
    )
    .unwrap();
    let run = dir.path().join("run");
    let started = std::time::Instant::now();
    common::runner()
        .arg("train")
        .arg(&spec)
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(&run)
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "the evaluator needs 28x28 digits, found 32x32",
        ));
    // Before its first step: nothing trained, nothing left behind.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(!run.exists());
}
