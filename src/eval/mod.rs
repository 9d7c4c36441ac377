//! Measuring what a generator draws: LeNet-FID, Inception Score, class coverage, precision and
//! recall, density and coverage, all in the feature space of the runner's own digit classifier
//! ([`classifier`]) against the data set's test split ([`metrics`] has the formulas).
//!
//! Resolution: the classifier reads 28x28 digits. A generator that draws 32x32 (the DCGANs) is
//! scored on its samples resized to 28, against test digits sent through the same 28 -> 32 -> 28
//! round trip, so both sides carry the same resampling blur: comparing blurred samples with
//! crisp digits would dominate every difference between runs.

pub mod classifier;
pub mod metrics;
pub mod reference;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use crate::data::{Digits, Split};
use crate::images::ImageBatch;
use classifier::{Classifier, FEATURES, SIDE};
use metrics::{FeatureSet, Gaussian, RealManifold};

/// The numbers one evaluation gives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub samples: usize,
    pub fid: f64,
    pub inception_score: f64,
    pub class_kl: f64,
    pub class_histogram: [f64; 10],
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
    /// Kernel distance: mean and standard deviation over subsets (`metrics::kernel_distance`).
    pub kid: f64,
    pub kid_std: f64,
    /// With `train.g_ema`: the raw G's FID (the others are the average's).
    pub fid_raw: Option<f64>,
    /// Conditional samples: the share the classifier gives the intended label.
    pub class_acc: Option<f64>,
    /// Conditional samples: the mean over classes of the FID between the samples drawn for a
    /// class and the test digits of that class.
    pub intra_fid: Option<f64>,
}

/// The names of the headline scores in the `evals` table, in the order tables show them.
pub const HEADLINE: [&str; 8] = [
    "fid",
    "kid",
    "is",
    "class_kl",
    "precision",
    "recall",
    "density",
    "coverage",
];

/// Whether a larger value of evaluation metric `name` is better; `None` for unknown names.
pub fn higher_is_better(name: &str) -> Option<bool> {
    match name {
        "fid" | "kid" | "class_kl" => Some(false),
        "is" | "precision" | "recall" | "density" | "coverage" => Some(true),
        _ => None,
    }
}

impl Metrics {
    /// The headline scores, named as in [`HEADLINE`].
    pub fn headline(&self) -> [(&'static str, f64); 8] {
        let values = [
            self.fid,
            self.kid,
            self.inception_score,
            self.class_kl,
            self.precision,
            self.recall,
            self.density,
            self.coverage,
        ];
        std::array::from_fn(|i| (HEADLINE[i], values[i]))
    }

    /// (name, value) pairs as stored in the `evals` table: the headline scores, the sample
    /// count and the share of each predicted class.
    pub fn named(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .headline()
            .into_iter()
            .chain([("kid_std", self.kid_std), ("samples", self.samples as f64)])
            .chain(self.fid_raw.map(|f| ("fid_raw", f)))
            .chain(self.class_acc.map(|a| ("class_acc", a)))
            .chain(self.intra_fid.map(|f| ("intra_fid", f)))
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        out.extend(
            self.class_histogram
                .iter()
                .enumerate()
                .map(|(c, &v)| (format!("class_{c}"), v)),
        );
        out
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        let conditional = match (self.class_acc, self.intra_fid) {
            (Some(acc), Some(intra)) => format!(", class acc {acc:.3}, intra-FID {intra:.2}"),
            _ => String::new(),
        };
        format!(
            "FID {:.2}, KID {:.3} ± {:.3}, IS {:.2}, class KL {:.3}, precision {:.3}, recall {:.3}, density {:.3}, coverage {:.3}{conditional}",
            self.fid,
            self.kid,
            self.kid_std,
            self.inception_score,
            self.class_kl,
            self.precision,
            self.recall,
            self.density,
            self.coverage
        )
    }
}

/// What identifies a shared [`Evaluator`]: the data set's folder, the image side, and the
/// size and modification time of its four files.
#[derive(PartialEq)]
struct SharedKey {
    dir: PathBuf,
    side: usize,
    files: Vec<(u64, Option<SystemTime>)>,
}

impl SharedKey {
    fn of(data_dir: &Path, side: usize) -> anyhow::Result<Self> {
        let mut files = Vec::new();
        for split in [Split::Train, Split::Test] {
            for name in split.file_names() {
                let meta = std::fs::metadata(crate::data::locate(data_dir, &name)?)?;
                files.push((meta.len(), meta.modified().ok()));
            }
        }
        Ok(SharedKey {
            dir: std::fs::canonicalize(data_dir)?,
            side,
            files,
        })
    }
}

/// A classifier and the test set's statistics at one generator resolution.
pub struct Evaluator {
    classifier: Classifier,
    reference: RealManifold,
    /// The test digits' features of each class, fitted (for `intra_fid`).
    class_references: Vec<Gaussian>,
    /// The side of the images it is given (28 or 32).
    side: usize,
}

impl Evaluator {
    /// The evaluator of the data set in `data_dir` for images of `side` pixels; trains and
    /// caches the classifier on first use (`log` gets its progress lines).
    pub fn new(data_dir: &Path, side: usize, log: &mut dyn FnMut(&str)) -> anyhow::Result<Self> {
        Evaluator::with_classifier(Classifier::load_or_train(data_dir, log)?, data_dir, side)
    }

    /// [`Evaluator::new`], built once per process for each data set and side: the runs of a
    /// sweep share it instead of each reading the data, picking the classifier by the
    /// training digits' hash and reading the test digits' reference (computing it, about 4 s
    /// for MNIST, when [`mod@reference`] has no cached one). Rewritten data files make a new one.
    pub fn shared(
        data_dir: &Path,
        side: usize,
        log: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Arc<Self>> {
        static BUILT: Mutex<Vec<(SharedKey, Arc<Evaluator>)>> = Mutex::new(Vec::new());
        let key = SharedKey::of(data_dir, side)?;
        // Held while building, so that runs starting together build one, not one each.
        let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, evaluator)) = built.iter().find(|(k, _)| *k == key) {
            log(&evaluator.classifier.summary());
            return Ok(Arc::clone(evaluator));
        }
        let evaluator = Arc::new(Evaluator::new(data_dir, side, log)?);
        built.push((key, Arc::clone(&evaluator)));
        Ok(evaluator)
    }

    /// An evaluator reading features with `classifier`, against the test split in `data_dir`.
    pub fn with_classifier(
        classifier: Classifier,
        data_dir: &Path,
        side: usize,
    ) -> anyhow::Result<Self> {
        let test = Digits::load(data_dir, Split::Test)?;
        let labels = test.labels;
        let test = ImageBatch {
            pixels: test.pixels,
            side: test.side,
        };
        let cache = reference::Cache::new(
            data_dir,
            side,
            &classifier.weights()?,
            &test.pixels,
            &labels,
        );
        let reference = cache.read(labels.len()).unwrap_or_else(|| {
            let outputs = classifier.outputs(&round_trip(&test, side).pixels);
            let reference = RealManifold::new(FeatureSet::new(&outputs.features, FEATURES));
            cache.write(&reference);
            reference
        });
        Ok(Evaluator {
            class_references: by_class(reference.features.values(), &labels)
                .iter()
                .map(Gaussian::fit)
                .collect(),
            reference,
            classifier,
            side,
        })
    }

    /// Test accuracy of the classifier.
    pub fn classifier_accuracy(&self) -> f64 {
        self.classifier.test_accuracy
    }

    /// Where the classifier's weights are cached.
    pub fn classifier_path(&self) -> &Path {
        &self.classifier.path
    }

    /// The image side this evaluator expects.
    pub fn side(&self) -> usize {
        self.side
    }

    /// Scores `images` (of this evaluator's side) against the test set; with the `labels`
    /// they were drawn for (conditional samples), also `class_acc` and `intra_fid`.
    pub fn evaluate(&self, images: &ImageBatch, labels: Option<&[u8]>) -> Metrics {
        assert_eq!(images.side, self.side, "images of the evaluator's side");
        if let Some(labels) = labels {
            assert_eq!(labels.len(), images.len(), "one label per image");
        }
        let outputs = self.classifier.outputs(&images.resized(SIDE).pixels);
        let fake = FeatureSet::new(&outputs.features, FEATURES);
        let predictions = outputs.predictions();
        let histogram = metrics::class_histogram(&predictions);
        let fidelity = metrics::fidelity(&self.reference, &fake);
        let (kid, kid_std) = metrics::kernel_distance(&self.reference.features, &fake);
        let class_acc = labels.map(|labels| {
            let hits = predictions
                .iter()
                .zip(labels)
                .filter(|(p, l)| p == l)
                .count();
            hits as f64 / labels.len().max(1) as f64
        });
        // Defined when every class has the two samples a covariance needs.
        let intra_fid = labels.and_then(|labels| {
            let drawn = by_class(&outputs.features, labels);
            drawn.iter().all(|d| d.len() >= 2).then(|| {
                let distances = (drawn.iter().zip(&self.class_references))
                    .map(|(drawn, real)| metrics::frechet_distance(real, &Gaussian::fit(drawn)));
                distances.sum::<f64>() / drawn.len() as f64
            })
        });
        Metrics {
            samples: images.len(),
            fid: metrics::frechet_distance(&self.reference.gaussian, &Gaussian::fit(&fake)),
            inception_score: metrics::inception_score(&outputs.probs),
            class_kl: metrics::class_kl(&histogram),
            class_histogram: histogram,
            precision: fidelity.precision,
            recall: fidelity.recall,
            density: fidelity.density,
            coverage: fidelity.coverage,
            kid,
            kid_std,
            fid_raw: None,
            class_acc,
            intra_fid,
        }
    }
}

/// `features` (one row of [`FEATURES`] per image) split by the images' `labels`, one set per
/// class.
fn by_class(features: &[f32], labels: &[u8]) -> Vec<FeatureSet> {
    let mut rows = vec![Vec::new(); crate::model::CLASSES];
    for (row, &label) in features.chunks(FEATURES).zip(labels) {
        rows[label as usize].extend_from_slice(row);
    }
    rows.iter().map(|r| FeatureSet::new(r, FEATURES)).collect()
}

/// 28x28 digits as a generator of `side` would see them and the evaluator reads them back:
/// resized to `side` and back to 28 (unchanged when `side` is 28).
pub fn round_trip(digits: &ImageBatch, side: usize) -> ImageBatch {
    digits.resized(side).resized(SIDE)
}
