//! The evaluator's digit classifier: a LeNet, shipped with the runner for MNIST and
//! Fashion-MNIST, trained by the runner itself for other data.
//!
//! Two 5x5 conv layers (16 and 32 channels, ReLU, 2x2 max pooling) and two dense layers, the
//! first 128 wide: its ReLU output is the feature space of LeNet-FID, KID and precision/recall.
//!
//! The fixed yardstick: classifiers trained once are committed in `evaluators/` (weights, their
//! MD5, the training data's hash and the test accuracy) and compiled into the binary, so every
//! machine, cluster node and user scores identical samples identically. Data sets without a
//! shipped classifier get one trained here, deterministically (seeded init and shuffling), once:
//! its weights and test accuracy are cached in `<data dir>/evaluator/`, keyed by a hash of the
//! training files' contents, so a changed data set retrains (`runner eval --train-classifier`
//! does it up front).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::data::{Digits, Split, byte_to_unit};
use crate::model::kernels::pool::max_pool_2x2;
use crate::model::{conv, init};
use crate::train::rng::{Stream, rng_for};

/// The width of the feature layer.
pub const FEATURES: usize = 128;
/// The classifier's input side: MNIST's own.
pub const SIDE: usize = 28;
/// Bump when the architecture or the training recipe changes, so caches retrain.
const VERSION: u32 = 2;
const SEED: u64 = 20_260_101;
/// Adam's learning rate for each epoch: three at 1e-3, then two lower to settle (3 epochs at
/// 1e-3 alone stop at 98.7% test accuracy).
const LR_SCHEDULE: [f64; 5] = [1e-3, 1e-3, 1e-3, 3e-4, 1e-4];
const EPOCHS: usize = LR_SCHEDULE.len();
const BATCH: usize = 128;
/// Images per forward pass when only inferring (measured faster than 1000, whose layers
/// made buffers of 50 MB).
const INFER_BATCH: usize = 250;

#[derive(Module, Debug)]
pub struct LeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

/// A conv layer initialised as PyTorch's default: weight and bias U(-k, k), k = 1/sqrt(fan_in).
fn conv(rng: &mut rand::rngs::StdRng, c_in: usize, c_out: usize, device: &Device) -> Conv2d {
    let mut conv = Conv2dConfig::new([c_in, c_out], [5, 5])
        .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
        .init(device);
    let bound = 1.0 / ((c_in * 25) as f64).sqrt();
    conv.weight = Param::from_tensor(init::uniform(rng, [c_out, c_in, 5, 5], bound, device));
    conv.bias = Some(Param::from_tensor(init::uniform(
        rng,
        [c_out],
        bound,
        device,
    )));
    conv
}

impl LeNet {
    fn new(device: &Device) -> Self {
        let rng = &mut rng_for(SEED, Stream::Init, 0);
        LeNet {
            conv1: conv(rng, 1, 16, device),
            conv2: conv(rng, 16, 32, device),
            fc1: init::linear(rng, 32 * 7 * 7, FEATURES, device),
            fc2: init::linear(rng, FEATURES, 10, device),
        }
    }

    /// `[B, 1, 28, 28]` images in [-1, 1] -> (features `[B, 128]`, logits `[B, 10]`).
    fn forward(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let x = block(&self.conv1, x);
        let x = block(&self.conv2, x);
        let features = relu(self.fc1.forward(x.flatten(1, 3)));
        let logits = self.fc2.forward(features.clone());
        (features, logits)
    }
}

/// Convolution, ReLU and 2x2 max pooling. Training keeps burn's own operations, so that the
/// classifier trained for a data set is the same whichever release trains it; inference runs
/// the runner's CPU kernels, several times faster, with features equal to float rounding.
fn block(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if conv::is_trained(layer) {
        max_pool2d(relu(layer.forward(x)), MaxPoolOptions::new([2, 2]))
    } else {
        max_pool_2x2(relu(conv::forward(layer, x)))
    }
}

/// What the classifier sees of a set of images: features and class probabilities, row-major.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub features: Vec<f32>,
    pub probs: Vec<f32>,
}

impl Outputs {
    pub fn len(&self) -> usize {
        self.probs.len() / 10
    }

    pub fn is_empty(&self) -> bool {
        self.probs.is_empty()
    }

    /// The most probable class of each image.
    pub fn predictions(&self) -> Vec<u8> {
        self.probs
            .chunks(10)
            .map(|p| {
                (0..10)
                    .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                    .expect("ten classes") as u8
            })
            .collect()
    }
}

/// A trained classifier, in inference mode.
pub struct Classifier {
    model: LeNet,
    device: Device,
    /// Accuracy on the data set's test split.
    pub test_accuracy: f64,
    /// Where its weights are cached.
    pub path: PathBuf,
}

/// `classifier.json`: what the cached weights are.
#[derive(Debug, Serialize, Deserialize)]
struct CacheMeta {
    version: u32,
    train_md5: String,
    test_accuracy: f64,
    epochs: usize,
    train_seconds: f64,
}

/// A classifier committed to the repository (`evaluators/`), compiled in.
struct Shipped {
    name: &'static str,
    meta: &'static str,
    weights: &'static [u8],
}

/// `evaluators/<name>.json`: what a shipped classifier is.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShippedMeta {
    pub version: u32,
    /// `train_md5` of the data set it was trained on (the training images and labels).
    pub train_md5: String,
    /// MD5 of the weights file, checked before use.
    pub weights_md5: String,
    pub test_accuracy: f64,
    /// Where and how it was trained.
    pub trained_on: String,
}

const SHIPPED: &[Shipped] = &[
    Shipped {
        name: "mnist-lenet-v2",
        meta: include_str!("../../evaluators/mnist-lenet-v2.json"),
        weights: include_bytes!("../../evaluators/mnist-lenet-v2.bpk"),
    },
    Shipped {
        name: "fashion-mnist-lenet-v2",
        meta: include_str!("../../evaluators/fashion-mnist-lenet-v2.json"),
        weights: include_bytes!("../../evaluators/fashion-mnist-lenet-v2.bpk"),
    },
];

fn train_md5(train: &Digits) -> String {
    crate::data::fetch::md5_hex_of([&train.pixels[..], &train.labels[..]])
}

impl Classifier {
    /// The shipped classifier for training data hashing to `md5`, if there is one; an error
    /// when its weights do not match their recorded checksum.
    fn shipped(md5: &str) -> anyhow::Result<Option<Self>> {
        for shipped in SHIPPED {
            let meta: ShippedMeta = serde_json::from_str(shipped.meta)
                .with_context(|| format!("evaluators/{}.json", shipped.name))?;
            if meta.train_md5 != md5 || meta.version != VERSION {
                continue;
            }
            let actual = crate::data::fetch::md5_hex(shipped.weights);
            anyhow::ensure!(
                actual == meta.weights_md5,
                "evaluators/{}.bpk: checksum {actual}, expected {}",
                shipped.name,
                meta.weights_md5
            );
            let device = crate::backend::device();
            let source = format!("evaluators/{}.bpk", shipped.name);
            let model = crate::train::checkpoint::load_module_bytes(
                LeNet::new(&device),
                burn::tensor::Bytes::from_bytes_vec(shipped.weights.to_vec()),
                &source,
            )?;
            return Ok(Some(Classifier {
                model,
                device,
                test_accuracy: meta.test_accuracy,
                path: PathBuf::from(format!("{source} (shipped)")),
            }));
        }
        Ok(None)
    }

    /// The shipped classifier `name` (as in `evaluators/`), whatever data is at hand.
    pub fn shipped_by_name(name: &str) -> anyhow::Result<Self> {
        let shipped = SHIPPED
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no shipped classifier `{name}`"))?;
        let meta: ShippedMeta = serde_json::from_str(shipped.meta)?;
        Classifier::shipped(&meta.train_md5)?.context("shipped classifier of another version")
    }

    /// The line a run logs about the classifier it scores with: where it is, how accurate.
    pub fn summary(&self) -> String {
        format!(
            "classifier: {} (test accuracy {:.2}%)",
            self.path.display(),
            100.0 * self.test_accuracy
        )
    }

    /// The classifier of the data set in `data_dir`: the shipped one when the runner ships one
    /// for this data, else the cached one, trained first if there is none (or the data
    /// changed; always with `retrain`). `log` receives one line per epoch while training.
    pub fn load_or_train(data_dir: &Path, log: &mut dyn FnMut(&str)) -> anyhow::Result<Self> {
        Classifier::load(data_dir, false, log)
    }

    /// As [`Classifier::load_or_train`]; `retrain` trains a local classifier even when a
    /// cached one exists (a shipped one is still used for its own data).
    pub fn load(data_dir: &Path, retrain: bool, log: &mut dyn FnMut(&str)) -> anyhow::Result<Self> {
        let train = Digits::load(data_dir, Split::Train)?;
        anyhow::ensure!(
            train.side == SIDE,
            "{}: the evaluator needs 28x28 digits, found {}x{}",
            data_dir.display(),
            train.side,
            train.side
        );
        let cache = data_dir.join("evaluator");
        let weights_file = format!("lenet-v{VERSION}.bpk");
        let (weights, meta_path) = (
            cache.join(&weights_file),
            cache.join(format!("lenet-v{VERSION}.json")),
        );
        let md5 = train_md5(&train);
        if let Some(shipped) = Classifier::shipped(&md5)? {
            log(&shipped.summary());
            return Ok(shipped);
        }
        let device = crate::backend::device();
        if let Some(meta) = (!retrain)
            .then(|| std::fs::read(&meta_path).ok())
            .flatten()
            .and_then(|b| serde_json::from_slice::<CacheMeta>(&b).ok())
            .filter(|m| m.version == VERSION && m.train_md5 == md5)
        {
            match crate::train::checkpoint::load_module(LeNet::new(&device), &cache, &weights_file)
            {
                Ok(model) => {
                    let cached = Classifier {
                        model,
                        device,
                        test_accuracy: meta.test_accuracy,
                        path: weights,
                    };
                    log(&cached.summary());
                    return Ok(cached);
                }
                Err(e) => log(&format!("{e:#}; retraining the classifier")),
            }
        }
        let test = Digits::load(data_dir, Split::Test)?;
        let start = Instant::now();
        let model = train_lenet(&train, log);
        let mut classifier = Classifier {
            model,
            device,
            test_accuracy: 0.0,
            path: weights.clone(),
        };
        classifier.test_accuracy = classifier.accuracy(&test);
        log(&format!(
            "classifier: test accuracy {:.2}% after {EPOCHS} epochs ({:.0} s)",
            100.0 * classifier.test_accuracy,
            start.elapsed().as_secs_f64()
        ));
        let bytes = classifier.weights()?;
        let meta = CacheMeta {
            version: VERSION,
            train_md5: md5,
            test_accuracy: classifier.test_accuracy,
            epochs: EPOCHS,
            train_seconds: start.elapsed().as_secs_f64(),
        };
        // Weights first, then the metadata that vouches for them. A read-only data directory
        // costs a retraining next time, not this evaluation.
        let cached = crate::fsutil::write_atomic(&weights, &bytes[..]).and_then(|()| {
            crate::fsutil::write_atomic(&meta_path, &serde_json::to_vec_pretty(&meta)?)
        });
        if let Err(err) = cached {
            log(&format!(
                "warning: could not cache the classifier in {}: {err}",
                cache.display()
            ));
        }
        Ok(classifier)
    }

    /// Its weights, as its cache file holds them: what identifies it.
    pub fn weights(&self) -> anyhow::Result<Vec<u8>> {
        let bytes =
            (self.model.clone().into_record().into_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(bytes.to_vec())
    }

    /// Features and class probabilities of 28x28 images given as bytes, image after image.
    pub fn outputs(&self, pixels: &[u8]) -> Outputs {
        let image_len = SIDE * SIDE;
        let mut out = Outputs {
            features: Vec::with_capacity(pixels.len() / image_len * FEATURES),
            probs: Vec::with_capacity(pixels.len() / image_len * 10),
        };
        for chunk in pixels.chunks(INFER_BATCH * image_len) {
            let n = chunk.len() / image_len;
            let values: Vec<f32> = chunk.iter().map(|&p| byte_to_unit(p)).collect();
            let x = Tensor::from_data(TensorData::new(values, [n, 1, SIDE, SIDE]), &self.device);
            let (features, logits) = self.model.forward(x);
            let to_vec = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().expect("f32 outputs");
            out.features.extend(to_vec(features));
            out.probs.extend(to_vec(softmax(logits, 1)));
        }
        out
    }

    /// The fraction of `digits` classified correctly.
    pub fn accuracy(&self, digits: &Digits) -> f64 {
        let predicted = self.outputs(&digits.pixels).predictions();
        let correct = predicted
            .iter()
            .zip(&digits.labels)
            .filter(|(p, l)| p == l)
            .count();
        correct as f64 / digits.len().max(1) as f64
    }
}

/// Adam on cross-entropy, one pass over the training set per entry of [`LR_SCHEDULE`], each in
/// a seeded order.
fn train_lenet(train: &Digits, log: &mut dyn FnMut(&str)) -> LeNet {
    let device = crate::backend::device().autodiff();
    let mut model = LeNet::new(&device);
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let image_len = SIDE * SIDE;
    for (epoch, &lr) in LR_SCHEDULE.iter().enumerate() {
        let start = Instant::now();
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng_for(SEED, Stream::Shuffle, epoch as u64));
        let mut loss_sum = 0.0;
        let batches = order.chunks(BATCH).len();
        for batch in order.chunks(BATCH) {
            let mut pixels = Vec::with_capacity(batch.len() * image_len);
            for &i in batch {
                pixels.extend(train.image(i).iter().map(|&p| byte_to_unit(p)));
            }
            let labels: Vec<i64> = batch.iter().map(|&i| train.labels[i] as i64).collect();
            let x = Tensor::from_data(
                TensorData::new(pixels, [batch.len(), 1, SIDE, SIDE]),
                &device,
            );
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch.len()]), &device);
            let (_, logits) = model.forward(x);
            let loss = loss_fn.forward(logits, y);
            let mut grads = loss.backward();
            loss_sum += loss.into_scalar::<f32>() as f64;
            let grads = GradientsParams::from_module(&mut grads, &model);
            model = optim.step(lr, model, grads);
        }
        log(&format!(
            "classifier: epoch {}/{EPOCHS}, mean loss {:.4} ({:.0} s)",
            epoch + 1,
            loss_sum / batches as f64,
            start.elapsed().as_secs_f64()
        ));
    }
    model.valid()
}
