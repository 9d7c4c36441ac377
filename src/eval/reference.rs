//! The test digits' side of every evaluation (their LeNet features and k-NN radii), cached on
//! disk beside the classifier: `<data dir>/evaluator/reference-<side>.bin`.
//!
//! Computing it takes about 4 s for MNIST (the classifier over 10 000 digits, then every
//! digit's nearest neighbours), which every process paid: each `runner train` and `runner
//! eval`, each Slurm task. The file is keyed by a hash of all it depends on (this runner's
//! version, the classifier's weights, the image side, the test digits and labels), carries a
//! checksum of its content and is written under a temporary name and renamed: a file of
//! another runner, classifier or data set, or a damaged one, is computed again and replaced,
//! never read. It only saves time, so a data directory that cannot be written goes uncached.

use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{Xxh3, xxh3_128};

use super::classifier::FEATURES;
use super::metrics::{FeatureSet, RealManifold};

const MAGIC: &[u8] = b"ganrunner evaluation reference v1\n";

/// Where one evaluator's reference is cached, and the key its file must hold.
pub struct Cache {
    path: PathBuf,
    key: [u8; 16],
}

impl Cache {
    /// The cache of the reference of `side`-pixel images for the data set in `data_dir`, whose
    /// test digits are `pixels` and `labels`, seen through the classifier of `weights`.
    pub fn new(data_dir: &Path, side: usize, weights: &[u8], pixels: &[u8], labels: &[u8]) -> Self {
        let mut key = Xxh3::new();
        for part in [
            MAGIC,
            crate::VERSION.as_bytes(),
            &(side as u64).to_le_bytes(),
            &(weights.len() as u64).to_le_bytes(),
            weights,
            &(pixels.len() as u64).to_le_bytes(),
            pixels,
            labels,
        ] {
            key.update(part);
        }
        Cache {
            path: data_dir
                .join("evaluator")
                .join(format!("reference-{side}.bin")),
            key: key.digest128().to_le_bytes(),
        }
    }

    /// The cached reference of `n` test digits, if the file holds this key's, whole.
    pub fn read(&self, n: usize) -> Option<RealManifold> {
        let header = MAGIC.len() + self.key.len();
        let floats = n * FEATURES + 2 * n;
        let size = header + 4 * floats + 16;
        // Sized before it is read: any other file is not read whole.
        if std::fs::metadata(&self.path).ok()?.len() != size as u64 {
            return None;
        }
        let bytes = std::fs::read(&self.path).ok()?;
        let (content, checksum) = bytes.split_at_checked(size - 16)?;
        if content[..MAGIC.len()] != *MAGIC
            || content[MAGIC.len()..header] != self.key
            || xxh3_128(content).to_le_bytes() != checksum
        {
            return None;
        }
        let values: Vec<f32> = (content[header..].chunks_exact(4))
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let (features, radii) = values.split_at(n * FEATURES);
        let (pr_radii, dc_radii) = radii.split_at(n);
        Some(RealManifold::with_radii(
            FeatureSet::new(features, FEATURES),
            pr_radii.to_vec(),
            dc_radii.to_vec(),
        ))
    }

    /// Stores `reference` for later processes (best effort: see the module's docs). Whatever
    /// is at its path that is not a plain file (a link the user made, say) is left alone.
    pub fn write(&self, reference: &RealManifold) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|meta| !meta.is_file()) {
            return;
        }
        let (pr_radii, dc_radii) = reference.radii();
        let values = reference
            .features
            .values()
            .iter()
            .chain(pr_radii)
            .chain(dc_radii);
        let mut bytes: Vec<u8> = [MAGIC, &self.key].concat();
        bytes.extend(values.flat_map(|v| v.to_le_bytes()));
        bytes.extend(xxh3_128(&bytes).to_le_bytes());
        if let Some(dir) = self.path.parent() {
            let _ = crate::fsutil::create_dir_all(dir)
                .and_then(|()| crate::fsutil::write_atomic(&self.path, &bytes));
        }
    }
}
