//! The config of one run: the `[data]`, `[model]`, `[train]` and `[log]` tables with their
//! defaults (the report's settings) and the checks of impossible values.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::DatasetName;
use crate::model::{ModelConfig, positive_f32};
use crate::train::loss::LossKind;

use super::flatten_params;

/// `[data]`: which data set, and where its IDX files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub dataset: DatasetName,
    /// A directory of standard IDX files; defaults to `data/<dataset>`.
    pub dir: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: DatasetName::Mnist,
            dir: None,
        }
    }
}

impl DataConfig {
    pub fn resolved_dir(&self) -> PathBuf {
        crate::data::dataset_dir(Path::new("data"), self.dataset, self.dir.as_deref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Rmsprop,
}

/// `[train]`: the training loop's knobs; defaults are the report's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Number of G steps; exclusive with `epochs`.
    pub steps: Option<u64>,
    /// Passes over the training set (of D's real batches); exclusive with `steps`.
    pub epochs: Option<u64>,
    pub batch_size: usize,
    pub lr: f64,
    #[serde(deserialize_with = "exactly")]
    pub betas: [f64; 2],
    /// D steps per G step.
    pub d_steps: usize,
    pub optimizer: OptimizerKind,
    pub seed: u64,
    /// The adversarial loss (see `train::loss`).
    pub loss: LossKind,
    /// G's and D's learning rates (two time-scale updates); each defaults to `lr`.
    pub g_lr: Option<f64>,
    pub d_lr: Option<f64>,
    /// How both learning rates change over the run.
    pub lr_decay: LrDecay,
    /// The target of real images for D (below 1: one-sided label smoothing).
    pub real_label: f64,
    /// `loss = "wgan"`: D's weights are clipped to [-clip, clip] after each D step (0.01).
    pub clip: Option<f64>,
    /// Decay of an exponential moving average of G's weights (see `train::ema`); 0 = off.
    pub g_ema: f64,
    /// Ramp the average's decay up from 0 to `g_ema` (see `train::ema::decay`), so that it
    /// never holds on to G's first, random weights.
    pub g_ema_warmup: bool,
    /// `loss = "wgan-gp"`: the gradient penalty's weight lambda (10).
    pub gp_weight: Option<f64>,
    /// The R1 penalty's gamma on real images (any loss); 0 = off.
    pub r1_gamma: f64,
}

/// WGAN-GP's penalty weight when `train.gp_weight` is not set (Gulrajani et al.).
pub const DEFAULT_GP_WEIGHT: f64 = 10.0;

/// `train.lr_decay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    #[default]
    None,
    /// From the full rate at the first step to 0 after the last.
    Linear,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: None,
            epochs: None,
            batch_size: 64,
            lr: 2e-4,
            betas: [0.5, 0.999],
            d_steps: 1,
            optimizer: OptimizerKind::Adam,
            seed: 0,
            loss: LossKind::Bce,
            g_lr: None,
            d_lr: None,
            lr_decay: LrDecay::None,
            real_label: 1.0,
            clip: None,
            g_ema: 0.0,
            g_ema_warmup: false,
            gp_weight: None,
            r1_gamma: 0.0,
        }
    }
}

impl TrainConfig {
    /// The gradient penalties D's loss carries.
    pub fn penalties(&self) -> Vec<crate::train::penalty::Penalty> {
        use crate::train::penalty::Penalty;
        let mut out = Vec::new();
        if self.loss == LossKind::WganGp {
            out.push(Penalty::WganGp {
                weight: self.gp_weight.unwrap_or(DEFAULT_GP_WEIGHT),
            });
        }
        if self.r1_gamma > 0.0 {
            out.push(Penalty::R1 {
                gamma: self.r1_gamma,
            });
        }
        out
    }

    /// G's and D's learning rates at `step` (from 1) of `total`.
    pub fn learning_rates(&self, step: u64, total: u64) -> (f64, f64) {
        let scale = match self.lr_decay {
            LrDecay::None => 1.0,
            LrDecay::Linear => 1.0 - (step - 1) as f64 / total.max(1) as f64,
        };
        (
            self.g_lr.unwrap_or(self.lr) * scale,
            self.d_lr.unwrap_or(self.lr) * scale,
        )
    }

    /// The number of G steps for a training set of `train_len` images: `steps`, or enough for
    /// `epochs` passes of D's real batches (200 epochs, the report's, when neither is set).
    pub fn total_steps(&self, train_len: usize) -> u64 {
        if let Some(steps) = self.steps {
            return steps;
        }
        let batches_per_epoch = train_len.div_ceil(self.batch_size) as u64;
        (self.epochs.unwrap_or(200).saturating_mul(batches_per_epoch)).div_ceil(self.d_steps as u64)
    }
}

/// `[log]`: what is written while training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Save the fixed-noise sample grid every N steps (and at the end).
    pub sample_every: u64,
    /// Save a checkpoint every N steps (and at the end).
    pub checkpoint_every: u64,
    /// Side of the square sample grid (5 gives the report's 5x5).
    pub grid: usize,
    /// How many periodic checkpoints to keep on disk (the final one is always kept).
    pub keep_checkpoints: usize,
    /// Record D and G losses in the database every N steps (and at the first and last).
    pub metrics_every: u64,
    /// Evaluate the generator (LeNet-FID, IS, precision/recall...) every N steps; 0 = only
    /// at the end.
    pub eval_every: u64,
    /// Samples per evaluation; 0 turns evaluation off.
    pub eval_samples: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            sample_every: 500,
            checkpoint_every: 2000,
            grid: 5,
            keep_checkpoints: 3,
            metrics_every: 10,
            eval_every: 0,
            eval_samples: 10_000,
        }
    }
}

/// Everything one run needs, fully resolved.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub log: LogConfig,
}

impl RunConfig {
    /// Impossible values as (dotted key, message) pairs; empty when valid.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .model
            .problems()
            .into_iter()
            .map(|(key, msg)| (format!("model.{key}"), msg))
            .collect();
        let mut bad = |key: &str, msg: String| out.push((key.to_string(), msg));
        let json = serde_json::to_value(self).expect("configs serialize to JSON");
        for (key, _) in flatten_params(&json).iter().filter(|(_, v)| too_big(v)) {
            bad(
                key,
                format!("must be at most {} (a signed 64-bit integer)", i64::MAX),
            );
        }
        let t = &self.train;
        if t.steps.is_some() && t.epochs.is_some() {
            bad(
                "train.steps",
                "and `train.epochs` are exclusive: set one".into(),
            );
        }
        if t.steps == Some(0) {
            bad("train.steps", "must be at least 1".into());
        }
        if t.epochs == Some(0) {
            bad("train.epochs", "must be at least 1".into());
        }
        if t.batch_size == 0 {
            bad("train.batch_size", "must be at least 1".into());
        }
        if let Err(msg) = positive_f32(t.lr) {
            bad("train.lr", msg);
        }
        if t.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            bad(
                "train.betas",
                format!("must both be in [0, 1), got {:?}", t.betas),
            );
        } else if t.optimizer == OptimizerKind::Rmsprop && t.betas != TrainConfig::default().betas {
            bad(
                "train.betas",
                "are Adam's: optimizer = \"rmsprop\" has none, and would ignore them".into(),
            );
        }
        if t.d_steps == 0 {
            bad("train.d_steps", "must be at least 1".into());
        }
        for (key, lr) in [("train.g_lr", t.g_lr), ("train.d_lr", t.d_lr)] {
            if let Some(Err(msg)) = lr.map(positive_f32) {
                bad(key, msg);
            }
        }
        if !(t.real_label > 0.0 && t.real_label <= 1.0) {
            bad(
                "train.real_label",
                format!("must be in (0, 1], got {}", t.real_label),
            );
        } else if t.real_label != 1.0 && !t.loss.has_real_label() {
            bad(
                "train.real_label",
                format!(
                    "has no meaning for loss = {:?} (no real target); use bce, minimax or lsgan",
                    t.loss
                ),
            );
        }
        if !(t.r1_gamma.is_finite() && t.r1_gamma >= 0.0) {
            bad(
                "train.r1_gamma",
                format!("must be >= 0 (0 = off), got {}", t.r1_gamma),
            );
        }
        if !(0.0..1.0).contains(&t.g_ema) {
            bad(
                "train.g_ema",
                format!("must be in [0, 1) (0 = off), got {}", t.g_ema),
            );
        }
        // Settings of one loss only: positive, and refused with any other loss.
        for (key, value, owner, name) in [
            ("train.clip", t.clip, LossKind::Wgan, "wgan"),
            ("train.gp_weight", t.gp_weight, LossKind::WganGp, "wgan-gp"),
        ] {
            match value {
                Some(_) if t.loss != owner => {
                    bad(key, format!("only applies to loss = \"{name}\""))
                }
                Some(v) => {
                    if let Err(msg) = positive_f32(v) {
                        bad(key, msg)
                    }
                }
                None => {}
            }
        }
        let l = &self.log;
        if l.sample_every == 0 {
            bad("log.sample_every", "must be at least 1".into());
        }
        if l.checkpoint_every == 0 {
            bad("log.checkpoint_every", "must be at least 1".into());
        }
        if l.metrics_every == 0 {
            bad("log.metrics_every", "must be at least 1".into());
        }
        if l.eval_samples == 1 {
            bad(
                "log.eval_samples",
                "must be 0 (no evaluation) or at least 2 (a covariance needs two samples)".into(),
            );
        }
        let per_class = 2 * crate::model::CLASSES;
        if self.model.conditional().is_conditional() && (1..per_class).contains(&l.eval_samples) {
            bad(
                "log.eval_samples",
                format!(
                    "a conditional run needs 0 or at least {per_class} (two per class, for \
                     intra_fid), got {}",
                    l.eval_samples
                ),
            );
        }
        if l.grid == 0 || l.grid > 32 {
            bad("log.grid", format!("must be in 1..=32, got {}", l.grid));
        }
        out
    }
}

/// A fixed-size array given as a list of exactly that many values (serde alone would drop
/// extra ones silently).
pub fn exactly<'de, D, T, const N: usize>(deserializer: D) -> Result<[T; N], D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let values = Vec::<T>::deserialize(deserializer)?;
    let got = values.len();
    values
        .try_into()
        .map_err(|_| serde::de::Error::custom(format!("expected exactly {N} values, got {got}")))
}

/// Whether a config value holds an integer too large for the database (which stores signed
/// 64-bit values).
fn too_big(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) => n.is_u64() && !n.is_i64(),
        serde_json::Value::Array(items) => items.iter().any(too_big),
        _ => false,
    }
}
