//! Experiment specs: the TOML schema of a run and its validation.
//!
//! A spec file has `name`, `description` and the tables `[data]`, `[model]`, `[train]`, `[log]`.
//! Unknown keys, wrong types and impossible values are errors naming the file, the key and its
//! line, reported before anything runs or is written.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::DatasetName;
use crate::model::ModelConfig;

/// A spec that cannot be used, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}{}: `{key}` {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid { path: PathBuf, key: String, line: Option<usize>, message: String },
}

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
        DataConfig { dataset: DatasetName::Mnist, dir: None }
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
    pub betas: [f64; 2],
    /// D steps per G step.
    pub d_steps: usize,
    pub optimizer: OptimizerKind,
    pub seed: u64,
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
        }
    }
}

impl TrainConfig {
    /// The number of G steps for a training set of `train_len` images: `steps`, or enough for
    /// `epochs` passes of D's real batches (200 epochs, the report's, when neither is set).
    pub fn total_steps(&self, train_len: usize) -> u64 {
        if let Some(steps) = self.steps {
            return steps;
        }
        let batches_per_epoch = train_len.div_ceil(self.batch_size) as u64;
        (self.epochs.unwrap_or(200) * batches_per_epoch).div_ceil(self.d_steps as u64)
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
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { sample_every: 500, checkpoint_every: 2000, grid: 5, keep_checkpoints: 3 }
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
        let t = &self.train;
        if t.steps.is_some() && t.epochs.is_some() {
            bad("train.steps", "and `train.epochs` are exclusive: set one".into());
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
        if !(t.lr.is_finite() && t.lr > 0.0) {
            bad("train.lr", format!("must be > 0, got {}", t.lr));
        }
        if t.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            bad("train.betas", format!("must both be in [0, 1), got {:?}", t.betas));
        }
        if t.d_steps == 0 {
            bad("train.d_steps", "must be at least 1".into());
        }
        let l = &self.log;
        if l.sample_every == 0 {
            bad("log.sample_every", "must be at least 1".into());
        }
        if l.checkpoint_every == 0 {
            bad("log.checkpoint_every", "must be at least 1".into());
        }
        if l.grid == 0 || l.grid > 32 {
            bad("log.grid", format!("must be in 1..=32, got {}", l.grid));
        }
        out
    }
}

/// A spec file: a named, described run configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub log: LogConfig,
}

impl Spec {
    /// Reads, parses and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
        Spec::parse(&text, path)
    }

    /// Parses and validates spec text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        if let Some((key, message)) = spec.run_config().problems().into_iter().next() {
            let line = line_of(text, &key);
            return Err(SpecError::Invalid { path: path.to_path_buf(), key, line, message });
        }
        if spec.name.trim().is_empty() {
            let line = line_of(text, "name");
            return Err(SpecError::Invalid {
                path: path.to_path_buf(),
                key: "name".into(),
                line,
                message: "must not be empty".into(),
            });
        }
        Ok(spec)
    }

    pub fn run_config(&self) -> RunConfig {
        RunConfig {
            data: self.data.clone(),
            model: self.model.clone(),
            train: self.train.clone(),
            log: self.log.clone(),
        }
    }
}

/// The 1-based line where a dotted key (`train.lr`) is set in TOML text, if it can be found:
/// either `lr = ...` inside a `[train]` table or `train.lr = ...` at the top level.
pub fn line_of(text: &str, dotted: &str) -> Option<usize> {
    let (table, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            current = header.trim().to_string();
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else { continue };
        let lhs = lhs.trim().trim_matches('"');
        let full = if current.is_empty() { lhs.to_string() } else { format!("{current}.{lhs}") };
        if full == dotted || (current == table && lhs == key) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(text, Path::new("exp.toml"))
    }

    #[test]
    fn defaults_are_the_reports() {
        let spec = parse("name = \"x\"").unwrap();
        let c = spec.run_config();
        assert_eq!(c.train.lr, 2e-4);
        assert_eq!(c.train.betas, [0.5, 0.999]);
        assert_eq!(c.train.batch_size, 64);
        assert_eq!(c.model, ModelConfig::Dcgan(Default::default()));
        assert_eq!(c.train.total_steps(60_000), 200 * 938);
    }

    #[test]
    fn arch_options_parse_and_unknown_keys_fail_with_line() {
        let spec = parse("name = \"x\"\n[model]\narch = \"gan\"\ng_hidden = [8, 16]\n").unwrap();
        match spec.model {
            ModelConfig::Gan(o) => assert_eq!(o.g_hidden, vec![8, 16]),
            other => panic!("{other:?}"),
        }
        let err = parse("name = \"x\"\n[model]\narch = \"gan\"\nbn_eps = 0.1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exp.toml") && msg.contains("bn_eps"), "{msg}");
        let err = parse("name = \"x\"\n[train]\nlearning_rate = 1\n").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("learning_rate"), "{err}");
    }

    #[test]
    fn impossible_values_name_key_and_line() {
        let err = parse("name = \"x\"\n\n[train]\nsteps = 10\nlr = -1.0\n").unwrap_err().to_string();
        assert_eq!(err, "exp.toml:5: `train.lr` must be > 0, got -1");
        let err = parse("name = \"x\"\n[train]\nbetas = [0.5, 1.0]\n").unwrap_err().to_string();
        assert!(err.starts_with("exp.toml:3: `train.betas`"), "{err}");
        let err = parse("name = \"x\"\ntrain.d_steps = 0\n").unwrap_err().to_string();
        assert!(err.starts_with("exp.toml:2: `train.d_steps`"), "{err}");
    }
}
