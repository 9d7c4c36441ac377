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
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}{}: `{key}` {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        key: String,
        line: Option<usize>,
        message: String,
    },
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
        if !(t.lr.is_finite() && t.lr > 0.0) {
            bad("train.lr", format!("must be > 0, got {}", t.lr));
        }
        if t.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            bad(
                "train.betas",
                format!("must both be in [0, 1), got {:?}", t.betas),
            );
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
        if l.metrics_every == 0 {
            bad("log.metrics_every", "must be at least 1".into());
        }
        if l.eval_samples == 1 {
            bad(
                "log.eval_samples",
                "must be 0 (no evaluation) or at least 2 (a covariance needs two samples)".into(),
            );
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
    /// Dotted config paths -> lists of values; the grid is their cartesian product.
    #[serde(default)]
    pub sweep: toml::Table,
}

/// One point of a sweep grid: its resolved config and the swept values that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridPoint {
    pub config: RunConfig,
    pub swept: Vec<(String, toml::Value)>,
}

impl GridPoint {
    /// The run's identity: a stable hash of its resolved config, without `[log]` (which
    /// changes what is written, not what is trained) and `data.dir` (where the same data
    /// set lies on this machine).
    pub fn run_id(&self) -> String {
        run_id(&self.config)
    }
}

/// A stable hash of a resolved config (keys sorted; `[log]` and `data.dir` left out):
/// 12 hex digits.
pub fn run_id(config: &RunConfig) -> String {
    let mut config = config.clone();
    config.data.dir = None;
    let mut value = serde_json::to_value(&config).expect("configs serialize");
    if let Some(map) = value.as_object_mut() {
        map.remove("log");
    }
    let hex = crate::data::fetch::md5_hex(canonical_json(&value).as_bytes());
    hex[..12].to_string()
}

/// JSON text with object keys sorted, whatever serde_json's map order.
fn canonical_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String(k.clone()),
                        canonical_json(&map[k])
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(canonical_json)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        other => other.to_string(),
    }
}

/// The sweep table flattened to (dotted path, values), accepting both `"train.lr" = [...]`
/// and `train.lr = [...]` (a nested table) under `[sweep]`.
fn flatten_sweep(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten_sweep(inner, &path, out),
            other => out.push((path, other.clone())),
        }
    }
}

/// Sets `path` (dotted) in a TOML table, creating the leaf.
fn set_path(root: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let leaf = parts.pop().expect("split yields one part");
    let mut table = root;
    for part in parts {
        table = table
            .entry(part)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or(format!("`{part}` is not a table"))?;
    }
    table.insert(leaf.to_string(), value);
    Ok(())
}

impl Spec {
    /// Reads, parses and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Spec::parse(&text, path)
    }

    /// Parses and validates spec text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
        let spec: Spec = toml::from_str(text).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: String, message: String| SpecError::Invalid {
            path: path.to_path_buf(),
            line: line_of(text, &key),
            key,
            message,
        };
        if let Some((key, message)) = spec.run_config().problems().into_iter().next() {
            return Err(invalid(key, message));
        }
        let name_ok = !spec.name.is_empty()
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !spec.name.starts_with('.');
        if !name_ok {
            return Err(invalid(
                "name".into(),
                "must be non-empty letters, digits, `-`, `_` or `.` (it names a directory)".into(),
            ));
        }
        spec.grid()
            .map_err(|(key, message)| invalid(key, message))?;
        Ok(spec)
    }

    /// The swept paths and their value lists, sorted by path. A swept value that is not a
    /// non-empty list is an error (`sweep.<path>`, message).
    fn sweep_axes(&self) -> Result<Vec<(String, Vec<toml::Value>)>, (String, String)> {
        let mut flat = Vec::new();
        flatten_sweep(&self.sweep, "", &mut flat);
        flat.sort_by(|a, b| a.0.cmp(&b.0));
        flat.into_iter()
            .map(|(path, value)| match value {
                toml::Value::Array(items) if !items.is_empty() => Ok((path, items)),
                _ => Err((
                    format!("sweep.{path}"),
                    "must be a non-empty list of values".into(),
                )),
            })
            .collect()
    }

    /// Expands the sweep into its grid: the cartesian product of every swept list, each point
    /// a validated config. A spec without `[sweep]` is a grid of one. Errors are
    /// (`sweep.<path>`, message).
    pub fn grid(&self) -> Result<Vec<GridPoint>, (String, String)> {
        let axes = self.sweep_axes()?;
        let base = toml::Table::try_from(self.run_config()).expect("configs serialize");
        let mut points = vec![Vec::<(String, toml::Value)>::new()];
        for (path, values) in &axes {
            points = points
                .into_iter()
                .flat_map(|point| {
                    values.iter().map(move |v| {
                        let mut next = point.clone();
                        next.push((path.clone(), v.clone()));
                        next
                    })
                })
                .collect();
        }
        points
            .into_iter()
            .map(|swept| {
                let mut table = base.clone();
                for (path, value) in &swept {
                    set_path(&mut table, path, value.clone())
                        .map_err(|e| (format!("sweep.{path}"), e))?;
                }
                let config: RunConfig =
                    toml::Value::Table(table)
                        .try_into()
                        .map_err(|e: toml::de::Error| {
                            let key = swept.last().map(|(p, _)| p.as_str()).unwrap_or("");
                            (
                                format!("sweep.{key}"),
                                format!("gives an invalid config: {}", e.message().trim()),
                            )
                        })?;
                if let Some((key, message)) = config.problems().into_iter().next() {
                    let culprit = swept
                        .iter()
                        .find(|(p, _)| *p == key)
                        .map(|(p, _)| p.clone())
                        .unwrap_or(key.clone());
                    return Err((
                        format!("sweep.{culprit}"),
                        format!("gives `{key}` that {message}"),
                    ));
                }
                Ok(GridPoint { config, swept })
            })
            .collect()
    }

    pub fn run_config(&self) -> RunConfig {
        RunConfig {
            data: self.data.clone(),
            model: self.model.clone(),
            train: self.train.clone(),
            log: self.log.clone(),
        }
    }

    /// The swept paths, in the order grid points list them.
    pub fn swept_keys(&self) -> Vec<String> {
        let mut flat = Vec::new();
        flatten_sweep(&self.sweep, "", &mut flat);
        let mut keys: Vec<String> = flat.into_iter().map(|(k, _)| k).collect();
        keys.sort();
        keys
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
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        let lhs = lhs.trim().trim_matches('"').trim_matches('\'');
        let full = if current.is_empty() {
            lhs.to_string()
        } else {
            format!("{current}.{lhs}")
        };
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
        let err = parse("name = \"x\"\n[train]\nlearning_rate = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("learning_rate"),
            "{err}"
        );
    }

    #[test]
    fn impossible_values_name_key_and_line() {
        let err = parse("name = \"x\"\n\n[train]\nsteps = 10\nlr = -1.0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "exp.toml:5: `train.lr` must be > 0, got -1");
        let err = parse("name = \"x\"\n[train]\nbetas = [0.5, 1.0]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("exp.toml:3: `train.betas`"), "{err}");
        let err = parse("name = \"x\"\ntrain.d_steps = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("exp.toml:2: `train.d_steps`"), "{err}");
    }

    fn grid(text: &str) -> Vec<GridPoint> {
        parse(text).unwrap().grid().unwrap()
    }

    #[test]
    fn grids_expand_to_the_cartesian_product() {
        let single = grid("name = \"x\"");
        assert_eq!(single.len(), 1);
        assert!(single[0].swept.is_empty());
        let one = grid("name = \"x\"\n[sweep]\n\"train.lr\" = [1e-4]\n");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].config.train.lr, 1e-4);
        let multi = grid(
            "name = \"x\"\n[sweep]\n\"train.lr\" = [1e-4, 2e-4, 4e-4]\n\"train.betas\" = [[0.5, 0.999], [0.9, 0.999]]\n\"train.d_steps\" = [1, 2]\n",
        );
        assert_eq!(multi.len(), 12);
        let combos: std::collections::HashSet<String> = multi
            .iter()
            .map(|p| {
                format!(
                    "{} {:?} {}",
                    p.config.train.lr, p.config.train.betas, p.config.train.d_steps
                )
            })
            .collect();
        assert_eq!(combos.len(), 12, "every combination once");
        assert!(
            multi
                .iter()
                .any(|p| p.config.train.betas == [0.9, 0.999] && p.config.train.d_steps == 2)
        );
        // Unquoted dotted keys make nested tables; they sweep the same way.
        let nested = grid("name = \"x\"\n[sweep]\nmodel.bn_eps = [0.8, 1e-5]\n");
        assert_eq!(nested.len(), 2);
        assert!(matches!(&nested[1].config.model, ModelConfig::Dcgan(o) if o.bn_eps == 1e-5));
    }

    #[test]
    fn run_ids_are_stable_and_sensitive() {
        let a = grid("name = \"x\"\n[sweep]\n\"train.seed\" = [0, 1]\n");
        assert_ne!(a[0].run_id(), a[1].run_id());
        let again =
            grid("name = \"y\"\ndescription = \"other\"\n[sweep]\n\"train.seed\" = [0, 1]\n");
        assert_eq!(
            a[0].run_id(),
            again[0].run_id(),
            "the name and description are not the config"
        );
        assert_eq!(a[0].run_id(), run_id(&a[0].config.clone()));
        let mut logged = a[0].config.clone();
        logged.log.sample_every = 7;
        assert_eq!(
            run_id(&logged),
            a[0].run_id(),
            "logging does not change what is trained"
        );
        logged.data.dir = Some("/elsewhere".into());
        assert_eq!(
            run_id(&logged),
            a[0].run_id(),
            "nor does where the data lies"
        );
        let mut lr = a[0].config.clone();
        lr.train.lr = 2.0001e-4;
        assert_ne!(run_id(&lr), a[0].run_id());
        // Pinned, so an accidental change of the hash (which would orphan every result) fails.
        assert_eq!(a[0].run_id().len(), 12);
        assert_eq!(
            a[0].run_id(),
            run_id(&parse("name = \"z\"").unwrap().run_config())
        );
    }

    #[test]
    fn bad_sweeps_name_the_key_and_line() {
        let err = parse("name = \"x\"\n[sweep]\n\"train.lr\" = []\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "exp.toml:3: `sweep.train.lr` must be a non-empty list of values"
        );
        let err = parse("name = \"x\"\n\n[sweep]\n\"train.learning_rate\" = [1]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("exp.toml:4: `sweep.train.learning_rate` gives an invalid config"),
            "{err}"
        );
        let err = parse("name = \"x\"\n[sweep]\n\"train.lr\" = [1e-3, -1.0]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("exp.toml:3: `sweep.train.lr` gives `train.lr` that must be > 0"),
            "{err}"
        );
        let err = parse("name = \"x\"\n[sweep]\n\"train.batch_size\" = [\"big\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sweep.train.batch_size"), "{err}");
    }
}
