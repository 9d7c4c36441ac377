//! Experiment specs: the TOML file, its validation, its grid and each run's identity.
//!
//! A spec file has `name`, `description`, the tables of one run's config (`[data]`, `[model]`,
//! `[train]`, `[log]`: `config`), and optionally `[sweep]` lists (or `[[sweep]]` grids one after
//! the other) and `[search]` trials (`search`), which expand into a grid of runs (`grid`), each
//! identified by what it trains (`identity`); `--set` edits it (`overrides`), and `base`
//! builds its run config on another spec's (`base`). Unknown keys,
//! wrong types and impossible values are errors naming the file, the key and its line (found
//! by `lines`), reported before anything runs or is written.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;

mod base;
mod config;
mod grid;
mod identity;
mod lines;
mod overrides;
pub mod search;
pub mod tpe;
pub use config::*;
pub use grid::{GridPoint, Sweep};
pub use identity::{flatten_params, run_id, with_defaults};
pub use overrides::Override;

use grid::is_untrained_key;
use lines::{line_of_written, plain_types, toml_error};

/// A spec that cannot be used, with where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {}", plain_types(message))]
    Parse { path: PathBuf, message: String },
    #[error("{path}{}: `{key}` {}", line.map(|l| format!(":{l}")).unwrap_or_default(), plain_types(message))]
    Invalid {
        path: PathBuf,
        key: String,
        line: Option<usize>,
        message: String,
    },
    /// A problem a `--set` brought (`set` is the argument as given).
    #[error(
        "{path} with --set {}: {}",
        crate::console::clipped(set),
        plain_types(message)
    )]
    Override {
        path: PathBuf,
        set: String,
        message: String,
    },
}

/// Experiment names that would put run directories where the runner writes its own files
/// (`results/report/` is replaced whole by every sweep).
pub const RESERVED_NAMES: &[&str] = &["report"];

/// The longest experiment name: it names directories, with room left under the file
/// system's 255-byte limit for the temporary names written beside them.
pub const MAX_NAME_LEN: usize = 100;

/// The most runs one spec may expand to: far beyond what a sweep trains, and small enough
/// that expanding and validating the grid takes seconds, not the machine's memory.
pub const MAX_RUNS: usize = 100_000;

/// A spec file: a named, described run configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The spec file whose run config this one's builds on, as written (relative to this
    /// file's folder); its keys are already in the tables below.
    #[serde(default, skip_serializing)]
    pub base: Option<String>,
    /// The base's keys this spec drops (dotted, e.g. `train.clip`); already gone from the
    /// tables below.
    #[serde(default, skip_serializing)]
    pub unset: Vec<String>,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Dotted config paths -> lists of values; the grid is their cartesian product (or the
    /// union of several such grids, `[[sweep]]`).
    #[serde(default)]
    pub sweep: grid::Sweep,
    /// Random or Sobol trials over distributions, crossed with the grid.
    #[serde(default)]
    pub search: search::Search,
}

/// The largest spec file read.
const MAX_SPEC_BYTES: u64 = 1 << 20;

impl Spec {
    /// Reads, parses and validates a spec file.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        Spec::load_with(path, &[])
    }

    /// Reads a spec file, applies `--set` overrides in order, and validates the result.
    pub fn load_with(path: &Path, overrides: &[Override]) -> Result<Spec, SpecError> {
        Spec::parse_with(&read_text(path)?, path, overrides)
    }

    /// Parses and validates spec text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
        Spec::parse_with(text, path, &[])
    }

    /// Parses spec text, applies overrides and validates the result. The file must stand on
    /// its own as TOML of known keys and types (its errors name its lines); a problem the
    /// overrides bring is reported against the `--set` that brought it. A base it names is
    /// read relative to `path`'s folder.
    pub fn parse_with(text: &str, path: &Path, overrides: &[Override]) -> Result<Spec, SpecError> {
        Spec::parse_layers(text, path, overrides, &[]).map(|(spec, ..)| spec)
    }

    /// `parse_with` for a spec reached through `chain`'s bases (outermost first); also returns
    /// its table, its bases' keys in, and the files its keys come from, its own first.
    fn parse_layers(
        text: &str,
        path: &Path,
        overrides: &[Override],
        chain: &[PathBuf],
    ) -> Result<(Spec, toml::Table, Vec<base::Layer>), SpecError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: toml_error(text, &e),
        })?;
        let mut layers = vec![base::Layer {
            path: path.to_path_buf(),
            text: text.to_string(),
        }];
        let chain = [chain, &[path.to_path_buf()]].concat();
        match base::read_base(&table, path, text, &chain)? {
            Some(layer) => {
                let (base_spec, mut base_table, base_layers) =
                    Spec::parse_layers(&layer.text, &layer.path, &[], &chain)?;
                let base = Some((&mut base_table, layer.path.as_path()));
                base::unset(&table, base, path, text)?;
                base::inherit(&mut table, &base_table, base_spec.model.arch());
                layers.extend(base_layers);
            }
            None => base::unset(&table, None, path, text)?,
        }
        // A key's problem is named in the nearest file that writes it.
        let in_file = |key: String, mut message: String| {
            let (nearest, line) = (layers.iter().enumerate())
                .find_map(|(i, layer)| Some((i, Some(line_of_written(&layer.text, &key)?))))
                .unwrap_or((0, None));
            if nearest > 0 {
                message += &format!(
                    " (a key {0} takes from a base: write another value in {0}, or drop it \
                     with `unset = [\"{key}\"]` at its top, before any table)",
                    path.display()
                );
            }
            SpecError::Invalid {
                path: layers[nearest].path.clone(),
                line,
                key,
                message,
            }
        };
        let file = Spec::from_table(&table).map_err(|e| match e {
            (Some(key), message) => in_file(key, message),
            (None, _) => SpecError::Parse {
                path: path.to_path_buf(),
                // Reparsed from the text for the error's line and excerpt.
                message: toml::from_str::<Spec>(text)
                    .err()
                    .map_or(e.1, |e| toml_error(text, &e)),
            },
        })?;
        if overrides.is_empty() {
            file.check()
                .map_err(|(key, message)| in_file(key, message))?;
            return Ok((file, table, layers));
        }
        let overridden = |set: String, message: String| SpecError::Override {
            path: path.to_path_buf(),
            set,
            message,
        };
        let mut spec = file.clone();
        for set in overrides {
            if let Some(key) = ["base", "unset"].into_iter().find(|key| set.touches(key)) {
                return Err(overridden(
                    set.to_string(),
                    format!("`{key}` is read before any --set applies: write it in the file"),
                ));
            }
            spec = set
                .apply(&mut table)
                .map_err(|message| overridden(set.to_string(), message))?;
        }
        spec.check().map_err(|(key, message)| {
            let culprit = overrides.iter().rev().find(|set| set.touches(&key));
            match (culprit, file.check()) {
                (Some(set), _) => overridden(set.to_string(), format!("`{key}` {message}")),
                // The file's own problem, which no set touched: at its line.
                (None, Err((key, message))) => in_file(key, message),
                // Only the combination fails: name every --set.
                (None, Ok(())) => overridden(
                    overrides
                        .iter()
                        .map(Override::to_string)
                        .collect::<Vec<_>>()
                        .join(" --set "),
                    format!("`{key}` {message}"),
                ),
            }
        })?;
        Ok((spec, table, layers))
    }

    /// A spec from its TOML table; errors are (the key, when it can be named; message).
    fn from_table(table: &toml::Table) -> Result<Spec, (Option<String>, String)> {
        Spec::deserialize(table.clone()).map_err(|e| match model_key_error(table) {
            Some((key, message)) => (Some(key), message),
            None => (None, e.message().trim_end().to_string()),
        })
    }

    /// The spec's first problem as (dotted key, message): impossible values, its name, its
    /// `[search]`, and every point of its grid.
    fn check(&self) -> Result<(), (String, String)> {
        if let Some(problem) = self.run_config().problems().into_iter().next() {
            return Err(problem);
        }
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME_LEN
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            // `-x` read as an option: `runner runs --experiment -x` failed.
            && !self.name.starts_with(['.', '-']);
        if !name_ok {
            return Err((
                "name".into(),
                format!(
                    "must be 1 to {MAX_NAME_LEN} ASCII letters, digits, `-`, `_` or `.`, not \
                     starting with `.` or `-` (it names a directory, goes into URLs and is \
                     given to options such as `runs --experiment`)"
                ),
            ));
        }
        if RESERVED_NAMES.contains(&self.name.as_str()) {
            return Err((
                "name".into(),
                format!(
                    "`{}` is reserved: results/{} is the runner's own (choose another name)",
                    self.name, self.name
                ),
            ));
        }
        self.check_search()?;
        let points = self.grid()?;
        if let Some(prune) = &self.search.prune
            && let Some(&first) = prune.rungs.first()
            // (Runs counted in epochs take their length from the data: the sweep's to judge.)
            && let Some(longest) = (points.iter())
                .map(|point| point.config.train.steps)
                .collect::<Option<Vec<u64>>>()
                .and_then(|steps| steps.into_iter().max())
            && first >= longest
        {
            return Err((
                "search.prune.rungs".into(),
                format!(
                    "start at step {first}, where every run has ended (the longest trains \
                     {longest} steps): no run would be compared there, nor pruned"
                ),
            ));
        }
        Ok(())
    }

    /// `[search]` problems as (`search.<key>`, message).
    fn check_search(&self) -> Result<(), (String, String)> {
        use search::Strategy;
        let search = &self.search;
        if let Some(prune) = &search.prune
            && let Some((key, message)) = prune.problem(self.log.eval_every, self.log.eval_samples)
        {
            return Err((format!("search.prune.{key}"), message));
        }
        let searched = [
            ("trials", search.trials.is_some()),
            ("seed", search.seed.is_some()),
            ("space", !search.space.is_empty()),
        ];
        if search.strategy == Strategy::Grid
            && let Some((key, _)) = searched.iter().find(|(_, set)| *set)
        {
            return Err((
                format!("search.{key}"),
                "is for a search: set `search.strategy` to \"random\", \"sobol\" or \"tpe\" \
                 (a grid is `[sweep]`)"
                    .into(),
            ));
        }
        if search.strategy != Strategy::Tpe {
            let tpe_only = [
                ("startup", search.startup.is_some()),
                ("batch", search.batch.is_some()),
                ("metric", search.metric.is_some()),
                ("constant_liar", search.constant_liar.is_some()),
            ];
            if let Some((key, _)) = tpe_only.iter().find(|(_, set)| *set) {
                return Err((
                    format!("search.{key}"),
                    "is for strategy = \"tpe\" only".into(),
                ));
            }
        }
        if search.strategy == Strategy::Grid {
            return Ok(());
        }
        let trials = search.trial_count();
        if !(1..=100_000).contains(&trials) {
            return Err((
                "search.trials".into(),
                format!("must be in 1..=100000, got {trials}"),
            ));
        }
        if search.space.is_empty() {
            return Err((
                "search.space".into(),
                "needs at least one key to search over".into(),
            ));
        }
        if search.strategy == Strategy::Tpe {
            self.check_tpe()?;
        }
        let swept = self.swept_grid_keys();
        for (key, distribution) in &search.space {
            let fail = |message: String| Err((format!("search.space.{key}"), message));
            if let Some(problem) = distribution.problem() {
                return fail(problem);
            }
            if is_untrained_key(key) {
                return fail("does not change what is trained; set it outside [search]".into());
            }
            if swept.contains(key) {
                return fail(format!(
                    "is also swept in [sweep] (`sweep.{key}`); pick one"
                ));
            }
        }
        Ok(())
    }

    /// `strategy = "tpe"` problems: its trials need a score each, and one score per trial.
    fn check_tpe(&self) -> Result<(), (String, String)> {
        let search = &self.search;
        let fail = |key: &str, message: String| Err((format!("search.{key}"), message));
        // Each batch is proposed from every trial before it: quadratic in the trials.
        let trials = search.trial_count();
        if trials > 1000 {
            return fail(
                "trials",
                format!("must be at most 1000 for \"tpe\", got {trials}"),
            );
        }
        if search.startup == Some(0) {
            return fail(
                "startup",
                "must be at least 1 (TPE proposes from results)".into(),
            );
        }
        if !(1..=1000).contains(&search.batch_size()) {
            return fail(
                "batch",
                format!("must be in 1..=1000, got {}", search.batch_size()),
            );
        }
        let metric = search.objective_metric();
        if crate::eval::higher_is_better(metric).is_none() {
            return fail(
                "metric",
                format!(
                    "must be one of {}, got {metric:?}",
                    crate::eval::HEADLINE.join(", ")
                ),
            );
        }
        if self.log.eval_samples == 0 {
            return fail(
                "strategy",
                "\"tpe\" scores each trial by its evaluations: `log.eval_samples` must be above 0"
                    .into(),
            );
        }
        Ok(())
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

/// A spec file's text: UTF-8, at most [`MAX_SPEC_BYTES`].
fn read_text(path: &Path) -> Result<String, SpecError> {
    // std said "stream did not contain valid UTF-8" of a UTF-16 file; without its
    // byte-order mark, one is valid UTF-8 with a NUL after each ASCII letter.
    let not_text = || SpecError::Parse {
        path: path.to_path_buf(),
        message: "is not UTF-8 text, as TOML must be (saved as UTF-16, or not text)".into(),
    };
    let read = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::InvalidData => not_text(),
        _ => SpecError::Read {
            path: path.to_path_buf(),
            source,
        },
    };
    let mut text = String::new();
    // A spec is a page of TOML: a file far larger (a data file, /dev/zero) is not one,
    // and reading it whole could exhaust memory.
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SPEC_BYTES + 1).read_to_string(&mut text))
        .map_err(read)?;
    if text.contains('\0') {
        return Err(not_text());
    }
    if text.len() as u64 > MAX_SPEC_BYTES {
        return Err(SpecError::Parse {
            path: path.to_path_buf(),
            message: format!("larger than {} MiB: not a spec file", MAX_SPEC_BYTES >> 20),
        });
    }
    Ok(text)
}

/// The `[model]` key a parse error comes from, with its message: `[model]` is read through
/// its `arch`, which hides the key from the parser's own message, so each key is tried alone.
fn model_key_error(spec: &toml::Table) -> Option<(String, String)> {
    let model = spec.get("model")?.as_table()?;
    let arch = model.get("arch").cloned();
    model
        .iter()
        .filter(|(key, _)| *key != "arch")
        .find_map(|(key, value)| {
            let mut alone = toml::Table::new();
            alone.extend(arch.clone().map(|a| ("arch".to_string(), a)));
            alone.insert(key.clone(), value.clone());
            let error = ModelConfig::deserialize(alone).err()?;
            Some((format!("model.{key}"), error.message().to_string()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(text, Path::new("exp.toml"))
    }

    #[test]
    fn a_bad_model_key_is_named_with_its_line() {
        let model = |line: &str| {
            parse(&format!(
                "name = \"x\"\n[model]\narch = \"dcgan\"\n{line}\n"
            ))
            .unwrap_err()
            .to_string()
        };
        let err = model("conditional = \"acgn\"");
        assert!(err.starts_with("exp.toml:4: `model.conditional`"), "{err}");
        assert!(err.contains("projection"), "{err}");
        let err = model("spectral_norm = 3");
        assert!(
            err.starts_with("exp.toml:4: `model.spectral_norm`"),
            "{err}"
        );
        let err = model("dropout = 0.3");
        assert!(
            err.starts_with("exp.toml:4: `model.dropout` unknown field"),
            "{err}"
        );
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
    fn a_model_table_without_arch_is_the_dcgans() {
        let implicit = parse("name = \"x\"\n[model]\nlatent_dim = 64\n").unwrap();
        let explicit = parse("name = \"x\"\n[model]\narch = \"dcgan\"\nlatent_dim = 64\n").unwrap();
        assert_eq!(implicit.model, explicit.model);
        assert_eq!(implicit.model.latent_dim(), 64);
        assert_eq!(
            run_id("x", &implicit.run_config(), "data"),
            run_id("x", &explicit.run_config(), "data")
        );
        // As a --set on a spec without [model], and its errors are the DCGAN's.
        let set: Override = "model.bn_eps=1e-5".parse().unwrap();
        let spec = Spec::parse_with("name = \"x\"\n", Path::new("exp.toml"), &[set]).unwrap();
        match spec.model {
            ModelConfig::Dcgan(o) => assert_eq!(o.bn_eps, 1e-5),
            other => panic!("{other:?}"),
        }
        let err = parse("name = \"x\"\n[model]\ng_hidden = [8]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("exp.toml:3: `model.g_hidden`"), "{err}");
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

    #[test]
    fn wrong_types_are_named_in_a_spec_authors_words() {
        let overridden = |set: &str| {
            let set: Override = set.parse().unwrap();
            Spec::parse_with("name = \"x\"\n", Path::new("exp.toml"), &[set])
                .unwrap_err()
                .to_string()
        };
        for (err, says) in [
            // serde wrote 1e99 out in a hundred digits.
            (
                parse("name = \"x\"\n[train]\nsteps = 1e99\n")
                    .unwrap_err()
                    .to_string(),
                "floating point `1e99`, expected a whole number (0 or more)",
            ),
            (
                overridden("train.steps=1e99"),
                "floating point `1e99`, expected a whole number (0 or more)",
            ),
            (
                parse("name = \"x\"\n[sweep]\n\"train.steps\" = [10, 2.5e40]\n")
                    .unwrap_err()
                    .to_string(),
                "floating point `2.5e40`, expected a whole number",
            ),
            (
                overridden("model.latent_dim=-1"),
                "integer `-1`, expected a whole number (0 or more)",
            ),
            (overridden("train.lr=\"fast\""), "expected a number"),
            (
                parse("name = \"x\"\n[train]\nbatch_size = 99999999999999999999\n")
                    .unwrap_err()
                    .to_string(),
                "integer `99999999999999999999` is beyond TOML's integers, \
                 -9223372036854775808 to 9223372036854775807",
            ),
            // Short floats stay as written.
            (
                overridden("train.steps=2.5"),
                "floating point `2.5`, expected",
            ),
            // A long string (with an escaped quote inside) is quoted clipped.
            (
                parse(&format!(
                    "name = \"x\"\n[train]\nlr = \"\\\"{}\"\n",
                    "x".repeat(5_000)
                ))
                .unwrap_err()
                .to_string(),
                "string \"\\\"xxx",
            ),
        ] {
            assert!(err.contains(says), "{err}");
            assert!(!err.contains("000000000000"), "{err}");
            assert!(err.len() < 400, "{err}");
        }
    }

    #[test]
    fn files_that_are_no_toml_text_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        // As Windows editors save it: a byte-order mark, then UTF-16; without the mark, NULs.
        let utf16: Vec<u8> = "\u{feff}name = \"x\"\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let big = vec![b'#'; (MAX_SPEC_BYTES + 1) as usize];
        for (name, bytes, says) in [
            ("utf16.toml", &utf16[..], "utf16.toml: is not UTF-8 text"),
            ("nul.toml", &utf16[2..], "nul.toml: is not UTF-8 text"),
            ("big.toml", &big[..], "big.toml: larger than 1 MiB"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = Spec::load(&path).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn rungs_that_no_run_reaches_before_its_end_are_refused() {
        let spec = |rungs: &str| {
            parse(&format!(
                "name = \"x\"\n[train]\nsteps = 20\n[log]\neval_every = 10\n\
                 [search.prune]\nrungs = {rungs}\n[sweep]\ntrain.lr = [1e-4, 2e-4]\n"
            ))
        };
        for past in ["[20]", "[30, 40]"] {
            let err = spec(past).unwrap_err().to_string();
            assert!(
                err.contains("`search.prune.rungs` start at step")
                    && err.contains("the longest trains 20 steps"),
                "{err}"
            );
        }
        assert!(spec("[10, 30]").is_ok(), "a rung before the end prunes");
    }

    #[test]
    fn a_parse_error_on_a_long_line_quotes_the_line_around_it() {
        let seeds: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
        let text = format!(
            "name = \"x\"\n[sweep]\ntrain.seed = [{}, oops, 1]\n",
            seeds.join(", ")
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.len() < 400, "{err}");
        let column = text.lines().nth(2).unwrap().find("oops").unwrap() + 1;
        assert!(
            err.contains(&format!("line 3, column {column}")) && err.contains("4999, oops, 1]"),
            "{err}"
        );
        // A short line is quoted whole, as toml does.
        let err = parse("name = \"x\"\n[train]\nlr = oops\n").unwrap_err();
        assert!(err.to_string().contains("3 | lr = oops"), "{err}");
    }

    #[test]
    fn the_toolbox_keys_refuse_impossible_values() {
        let key_of = |train: &str| {
            parse(&format!("name = \"x\"\n[train]\n{train}\n"))
                .unwrap_err()
                .to_string()
        };
        assert!(key_of("real_label = 1.5").contains("`train.real_label` must be in (0, 1]"));
        assert!(key_of("real_label = 0.0").contains("`train.real_label`"));
        assert!(key_of("loss = \"hinge\"\nreal_label = 0.9").contains("no meaning"));
        assert!(key_of("clip = 0.1").contains("`train.clip` only applies"));
        assert!(key_of("loss = \"wgan\"\nclip = -1.0").contains("`train.clip` must be > 0"));
        assert!(key_of("g_lr = 0.0").contains("`train.g_lr` must be > 0"));
        assert!(key_of("d_lr = nan").contains("`train.d_lr`"));
        // Training computes in f32: a rate that rounds to 0 there, or to infinity, is refused.
        assert!(key_of("lr = inf").contains("`train.lr` must be finite, got inf"));
        assert!(key_of("lr = 1e-300").contains("`train.lr` must be between 1.1754944e-38"));
        assert!(key_of("d_lr = 1e39").contains("`train.d_lr` must be between"));
        assert!(parse("name = \"x\"\n[train]\nlr = 1e-30\n").is_ok());
        let err = parse("name = \"x\"\n[model]\narch = \"dcgan\"\nbn_eps = 1e-46\n").unwrap_err();
        assert!(
            err.to_string().contains("`model.bn_eps` must be between"),
            "{err}"
        );
        assert!(key_of("loss = \"wgan-pg\"").contains("unknown variant"));
        assert!(key_of("gp_weight = 5.0").contains("`train.gp_weight` only applies"));
        assert!(key_of("loss = \"wgan-gp\"\ngp_weight = 0.0").contains("must be > 0"));
        assert!(key_of("r1_gamma = -1.0").contains("`train.r1_gamma` must be >= 0"));
        assert!(key_of("lr_decay = \"cosine\"").contains("unknown variant"));
        assert!(key_of("g_ema = 1.0").contains("`train.g_ema` must be in [0, 1)"));
        assert!(key_of("g_ema = -0.5").contains("`train.g_ema`"));
        // RMSprop has no betas: set ones were silently ignored; the defaults stay harmless.
        let rmsprop = |betas: &str| format!("optimizer = \"rmsprop\"\nbetas = {betas}");
        assert!(key_of(&rmsprop("[0.9, 0.999]")).contains("`train.betas` are Adam's"));
        assert!(
            parse(&format!(
                "name = \"x\"\n[train]\n{}\n",
                rmsprop("[0.5, 0.999]")
            ))
            .is_ok()
        );
        let ok =
            parse("name = \"x\"\n[train]\nloss = \"wgan\"\nclip = 0.05\noptimizer = \"rmsprop\"\n");
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn learning_rates_follow_ttur_and_the_linear_decay() {
        let mut t = TrainConfig {
            lr: 2e-4,
            d_lr: Some(4e-4),
            ..Default::default()
        };
        assert_eq!(t.learning_rates(1, 100), (2e-4, 4e-4));
        assert_eq!(t.learning_rates(100, 100), (2e-4, 4e-4));
        t.lr_decay = LrDecay::Linear;
        assert_eq!(t.learning_rates(1, 100), (2e-4, 4e-4));
        let (g, d) = t.learning_rates(51, 100);
        assert!((g - 1e-4).abs() < 1e-12 && (d - 2e-4).abs() < 1e-12);
        let (g, _) = t.learning_rates(100, 100);
        assert!(
            (g - 2e-6).abs() < 1e-12,
            "the last step still learns a little"
        );
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
        let id = |c: &RunConfig| run_id("x", c, "data-a");
        let a = grid("name = \"x\"\n[sweep]\n\"train.seed\" = [0, 1]\n");
        assert_ne!(id(&a[0].config), id(&a[1].config));
        let mut logged = a[0].config.clone();
        logged.log.sample_every = 7;
        assert_eq!(
            id(&logged),
            id(&a[0].config),
            "logging does not change what is trained"
        );
        logged.data.dir = Some("/elsewhere".into());
        assert_eq!(
            id(&logged),
            id(&a[0].config),
            "nor does where the data lies"
        );
        let mut lr = a[0].config.clone();
        lr.train.lr = 2.0001e-4;
        assert_ne!(id(&lr), id(&a[0].config));
        assert_ne!(
            run_id("y", &a[0].config, "data-a"),
            id(&a[0].config),
            "a run belongs to its experiment"
        );
        assert_ne!(
            run_id("x", &a[0].config, "data-b"),
            id(&a[0].config),
            "other data is another run"
        );
        assert_eq!(id(&a[0].config).len(), 12);
        let mut hinge = a[0].config.clone();
        hinge.train.loss = crate::train::loss::LossKind::Hinge;
        assert_ne!(
            id(&hinge),
            id(&a[0].config),
            "a key added later counts when set"
        );
        let mut normalized = a[0].config.clone();
        if let ModelConfig::Dcgan(o) = &mut normalized.model {
            o.spectral_norm = true;
        }
        assert_ne!(id(&normalized), id(&a[0].config));
        let mut ttur = a[0].config.clone();
        ttur.train.d_lr = Some(4e-4);
        assert_ne!(id(&ttur), id(&a[0].config));
        // Pinned, so an accidental change of the hash (which would orphan every result) fails.
        assert_eq!(
            run_id("z", &parse("name = \"z\"").unwrap().run_config(), "d"),
            "ec87c54e2357"
        );
    }

    #[test]
    fn params_flatten_to_dotted_keys() {
        let value = serde_json::json!({"train": {"lr": 0.1, "betas": [0.5, 0.9], "steps": null}, "model": {"arch": "gan"}});
        let flat = flatten_params(&value);
        assert_eq!(
            flat.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["model.arch", "train.betas", "train.lr"]
        );
    }

    #[test]
    fn absurd_grids_are_refused_before_they_expand() {
        // `n` swept keys with `len` values each.
        let lists = |n: usize, len: usize| -> String {
            let keys = [
                "train.seed",
                "train.steps",
                "train.d_steps",
                "train.batch_size",
                "model.latent_dim",
                "train.lr",
                "train.g_lr",
            ];
            let mut text = String::from("[sweep]\n");
            for key in &keys[..n] {
                let values: Vec<String> = (1..=len).map(|v| v.to_string()).collect();
                text += &format!("\"{key}\" = [{}]\n", values.join(", "));
            }
            text
        };
        let refusal = |text: &str| {
            let err = parse(&format!("name = \"x\"\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("exp.toml:2: `sweep` expands to"), "{err}");
            err
        };
        let four = refusal(&lists(4, 100));
        assert!(
            four.contains("100 x 100 x 100 x 100 = 100000000 runs"),
            "{four}"
        );
        let overflow = refusal(&lists(7, 1000));
        assert!(overflow.contains("over 2^64 runs"), "{overflow}");
        let searched = refusal(
            "[sweep]\n\"train.seed\" = [0, 1]\n[search]\nstrategy = \"random\"\n\
             trials = 100000\n[search.space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n",
        );
        assert!(
            searched.contains("100000 trials x 2 = 200000 runs"),
            "{searched}"
        );
        assert_eq!(
            grid(&format!("name = \"x\"\n{}", lists(2, 100))).len(),
            10_000
        );
    }

    #[test]
    fn search_trials_cross_the_sweep_and_bad_searches_are_refused() {
        let text = "name = \"x\"\n[train]\nsteps = 3\n[sweep]\n\"train.seed\" = [0, 1]\n\
                    [search]\nstrategy = \"random\"\ntrials = 5\nseed = 1\n\
                    [search.space]\n\"train.lr\" = { log_uniform = [1e-5, 1e-2] }\n\
                    \"train.d_steps\" = { int = [1, 3] }\n";
        let points = grid(text);
        assert_eq!(points.len(), 10, "5 trials x 2 seeds");
        assert!(
            points
                .iter()
                .all(|p| (1e-5..1e-2).contains(&p.config.train.lr))
        );
        assert!(
            points
                .iter()
                .all(|p| (1..=3).contains(&p.config.train.d_steps))
        );
        assert_eq!(points, grid(text), "reproducible");
        let keys = parse(text).unwrap().swept_keys();
        assert_eq!(keys, ["train.d_steps", "train.lr", "train.seed"]);
        let refused = |search: &str, words: &str| {
            let err = parse(&format!(
                "name = \"x\"\n[sweep]\n\"train.seed\" = [0]\n[search]\n{search}"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(words), "{search}: {err}");
        };
        // Search keys without a search strategy, even at values that would do nothing.
        for (search, key) in [
            ("trials = 3\n", "search.trials"),
            ("trials = 0\n", "search.trials"),
            ("seed = 7\n", "search.seed"),
            (
                "[search.space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n",
                "search.space",
            ),
        ] {
            refused(
                search,
                &format!("`{key}` is for a search: set `search.strategy` to"),
            );
        }
        refused(
            "strategy = \"sobol\"\ntrials = 0\n[search.space]\n\"train.lr\" = { uniform = [0.1, 0.2] }\n",
            "search.trials",
        );
        refused("strategy = \"random\"\ntrials = 2\n", "search.space");
        refused(
            "strategy = \"random\"\ntrials = 2\n[search.space]\n\"train.lr\" = { log_uniform = [0.0, 1.0] }\n",
            "0 < low < high",
        );
        refused(
            "strategy = \"random\"\ntrials = 2\n[search.space]\n\"train.seed\" = { int = [0, 9] }\n",
            "also swept",
        );
        refused(
            "strategy = \"random\"\ntrials = 2\n[search.space]\n\"log.grid\" = { int = [2, 5] }\n",
            "does not change",
        );
        refused(
            "strategy = \"random\"\ntrials = 2\n[search.space]\n\"train.lr\" = { uniform = [-1.0, 1.0] }\n",
            "train.lr",
        );
        refused("strategy = \"annealing\"\n", "unknown variant");
    }

    #[test]
    fn tpe_searches_score_every_trial_and_stand_alone() {
        let space = "[search.space]\n\"train.lr\" = { log_uniform = [1e-5, 1e-2] }\n";
        let spec = |head: &str, search: &str| {
            parse(&format!(
                "name = \"x\"\n{head}[log]\neval_samples = 100\n[search]\n{search}{space}"
            ))
        };
        let ok = spec("", "strategy = \"tpe\"\ntrials = 20\n").unwrap();
        assert_eq!(ok.search.trials().len(), 10, "the startup trials only");
        assert_eq!(ok.search.objective_metric(), "fid");
        assert_eq!(ok.search.batch_size(), 4);
        let few = spec(
            "",
            "strategy = \"tpe\"\ntrials = 3\nmetric = \"coverage\"\n",
        )
        .unwrap();
        assert_eq!(
            few.search.trials().len(),
            3,
            "never more startup trials than trials"
        );
        assert_eq!(few.search.objective_metric(), "coverage");
        let refused = |head: &str, search: &str, key: &str, words: &str| {
            let err = spec(head, search).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(words), "{search}: {err}");
        };
        let tpe = "strategy = \"tpe\"\ntrials = 20\n";
        refused(
            "",
            "strategy = \"random\"\ntrials = 20\nbatch = 2\n",
            "search.batch",
            "\"tpe\" only",
        );
        refused(
            "",
            "strategy = \"sobol\"\ntrials = 20\nconstant_liar = true\n",
            "search.constant_liar",
            "\"tpe\" only",
        );
        refused(
            "",
            &format!("{tpe}startup = 0\n"),
            "search.startup",
            "at least 1",
        );
        refused("", &format!("{tpe}batch = 0\n"), "search.batch", "1..=1000");
        refused(
            "",
            "strategy = \"tpe\"\ntrials = 1001\n",
            "search.trials",
            "at most 1000",
        );
        refused(
            "",
            &format!("{tpe}metric = \"loss\"\n"),
            "search.metric",
            "must be one of",
        );
        // A trial crossed with seeds: its points are those the grid gives it.
        let seeded = spec("[sweep]\n\"train.seed\" = [0, 1]\n", tpe).unwrap();
        let grid = seeded.grid().unwrap();
        assert_eq!(grid.len(), 20, "10 startup trials x 2 seeds");
        let first = seeded.search.trials().remove(0);
        assert_eq!(seeded.trial_points(first).unwrap(), grid[..2]);
        let err = parse(&format!(
            "name = \"x\"\n[log]\neval_samples = 0\n[search]\n{tpe}{space}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("log.eval_samples"), "{err}");
    }

    #[test]
    fn a_file_too_large_for_a_spec_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.toml");
        let comment = "# padding\n".repeat((MAX_SPEC_BYTES as usize) / 10);
        std::fs::write(&path, format!("name = \"x\"\n{comment}")).unwrap();
        let err = Spec::load(&path).unwrap_err().to_string();
        assert!(err.contains("huge.toml: larger than 1 MiB"), "{err}");
        std::fs::write(
            &path,
            format!("name = \"x\"\n{}", &comment[..comment.len() / 2]),
        )
        .unwrap();
        assert_eq!(Spec::load(&path).unwrap().name, "x");
    }

    #[test]
    fn hostile_values_are_refused_not_panicked_on() {
        let err = parse("name = \"x\"\n[train]\nseed = 9223372036854775808\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.seed") || err.contains("seed"), "{err}");
        let err = parse("name = \"x\"\n[train]\nbetas = [0.5, 0.9, 0.99]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly 2 values, got 3"), "{err}");
        let err = parse("name = \"x\"\n[model]\narch = \"dcgan\"\ng_channels = [128, 64, 32]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid length 3, expected 2"), "{err}");
        let err = parse("name = \"report\"").unwrap_err().to_string();
        assert!(err.contains("`name`") && err.contains("reserved"), "{err}");
        // A name a file system cannot hold as a directory (it broke the report of every
        // experiment in the database).
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let err = parse(&format!("name = \"{long}\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`name` must be 1 to 100"), "{err}");
        assert!(parse(&format!("name = \"{}\"", &long[1..])).is_ok());
        for bad in [".hidden", "-x", "a/b", "a b", ""] {
            let err = parse(&format!("name = \"{bad}\"")).unwrap_err().to_string();
            assert!(err.contains("`name` must be 1 to 100"), "{bad}: {err}");
        }
        assert!(parse("name = \"x-1.2_b\"").is_ok());
    }

    /// The shipped specs, each mutated a few lines at a time (values swapped for hostile
    /// ones, lines deleted, cut or repeated, tables added), thousands of times from a fixed
    /// seed: every one is parsed and its grid expanded, or refused; none panics.
    #[test]
    fn mutated_specs_are_accepted_or_refused_never_panicked_on() {
        use rand::{RngExt, SeedableRng};
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
        // Parsed at their own paths, so that their bases are found beside them.
        let mut specs: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|path| (path.clone(), std::fs::read_to_string(path).unwrap()))
            .collect();
        specs.sort();
        let values = [
            "0",
            "-1",
            "1e309",
            "nan",
            "-inf",
            "\"\"",
            "\"x\"",
            "[]",
            "[[]]",
            "{}",
            "true",
            "18446744073709551616",
            "9223372036854775807",
            "1e-320",
            "\"\u{e9}\"",
            "[1, 2, 3]",
            "\"dcgan\"",
            "\"wgan\"",
            "\"linear\"",
            "\"projection\"",
            "\"tpe\"",
            "{ low = 1e-5, high = 1e-3, log = true }",
            "[0.5, 0.999]",
            "\"quickstart.toml\"",
        ];
        let tables = [
            "[search.prune]\nmetric = \"fid\"",
            "[search]\nstrategy = \"tpe\"\ntrials = 3",
            "[[sweep]]",
            "[sweep]\n\"train.lr\" = [1e-4, 2e-4]",
            "[search.space]\n\"train.lr\" = { low = 1e-5, high = 1e-3, log = true }",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..3000 {
            let (path, spec) = &specs[rng.random_range(0..specs.len())];
            let mut lines: Vec<String> = spec.lines().map(str::to_string).collect();
            for _ in 0..rng.random_range(1..=4) {
                let at = rng.random_range(0..lines.len());
                match rng.random_range(0..5) {
                    0 if lines[at].contains('=') => {
                        let key = lines[at].split('=').next().unwrap().to_string();
                        let value = values[rng.random_range(0..values.len())];
                        lines[at] = format!("{key}= {value}");
                    }
                    1 => drop(lines.remove(at)),
                    2 => lines.insert(at, tables[rng.random_range(0..tables.len())].into()),
                    3 if !lines[at].is_empty() => {
                        let cut = rng.random_range(0..lines[at].len());
                        lines[at] = lines[at].chars().take(cut).collect();
                    }
                    _ => {
                        let copy = lines[rng.random_range(0..lines.len())].clone();
                        lines.insert(at, copy);
                    }
                }
                if lines.is_empty() {
                    lines.push(String::new());
                }
            }
            let text = lines.join("\n");
            let outcome = std::panic::catch_unwind(|| {
                Spec::parse(&text, path).map(|spec| spec.grid().map(|points| points.len()))
            });
            match outcome {
                Ok(Ok(Ok(_))) => accepted += 1,
                Ok(_) => refused += 1,
                Err(_) => panic!("panicked on:\n{text}"),
            }
        }
        // Both kinds are common: the mutations reach past the parser.
        assert!(
            accepted > 150 && refused > 150,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn sweeps_that_would_not_train_what_dry_run_shows_are_refused() {
        let refused = |sweep: &str, key: &str, words: &str| {
            let err = parse(&format!(
                "name = \"x\"\n[train]\nsteps = 3\n[sweep]\n{sweep}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains(key) && err.contains(words), "{sweep}: {err}");
        };
        refused(
            "\"log.grid\" = [4, 5]",
            "sweep.log.grid",
            "does not change what is trained",
        );
        refused(
            "\"data.dir\" = [\"a\", \"b\"]",
            "sweep.data.dir",
            "does not change",
        );
        refused("\"train\" = [{lr = 1e-4}]", "sweep.train", "whole tables");
        refused(
            "\"train.seed\" = [1, 2]\ntrain = { seed = [3] }",
            "sweep.train.seed",
            "swept twice",
        );
        refused("\"train.lr\" = [1e-4, 1e-4]", "sweep.train.lr", "twice");
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

    #[test]
    fn a_sweep_over_model_families_gives_each_its_defaults_and_the_written_options() {
        let spec = parse(
            "name = \"x\"\n[model]\nlatent_dim = 64\n\
             [sweep]\n\"model.arch\" = [\"gan\", \"dcgan\", \"dcgan-classic\"]\n",
        )
        .unwrap();
        let models: Vec<ModelConfig> = (spec.grid().unwrap())
            .into_iter()
            .map(|point| point.config.model)
            .collect();
        let family = |arch: &str| {
            let written = format!("name = \"y\"\n[model]\narch = \"{arch}\"\nlatent_dim = 64\n");
            parse(&written).unwrap().model
        };
        assert_eq!(
            models,
            [family("gan"), family("dcgan"), family("dcgan-classic")]
        );
        // From another family, the swept options of both are kept, even at a default.
        let spec = parse(
            "name = \"x\"\n[model]\narch = \"gan\"\n[sweep]\n\
             \"model.arch\" = [\"dcgan\"]\n\"model.latent_dim\" = [100]\n",
        )
        .unwrap();
        assert_eq!(spec.grid().unwrap()[0].config.model, ModelConfig::default());
        // An option the spec wrote that the other family lacks is named.
        let err = parse(
            "name = \"x\"\n[model]\nbn_eps = 1e-5\n[sweep]\n\"model.arch\" = [\"dcgan\", \"gan\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "exp.toml:5: `sweep.model.arch` gives an invalid config: unknown field `bn_eps`"
            ),
            "{err}"
        );
    }

    #[test]
    fn sweep_entries_are_grids_one_after_the_other() {
        // Clipping is WGAN's alone: one grid over the other losses, one over the clip.
        let text = "name = \"x\"\n[train]\nsteps = 3\n\
                    [[sweep]]\n\"train.loss\" = [\"bce\", \"hinge\"]\n\
                    [[sweep]]\n\"train.loss\" = [\"wgan\"]\n\"train.clip\" = [0.01, 0.02]\n\
                    [[sweep]]\n";
        let spec = parse(text).unwrap();
        assert_eq!(spec.swept_keys(), ["train.clip", "train.loss"]);
        let grid = spec.grid().unwrap();
        let points: Vec<(String, Option<f64>)> = grid
            .iter()
            .map(|p| (format!("{:?}", p.config.train.loss), p.config.train.clip))
            .collect();
        let clip = RunConfig::default().train.clip;
        assert_eq!(
            points,
            [
                ("Bce".to_string(), clip),
                ("Hinge".to_string(), clip),
                ("Wgan".to_string(), Some(0.01)),
                ("Wgan".to_string(), Some(0.02)),
                // An empty entry is the base config.
                ("Bce".to_string(), clip),
            ]
        );
        assert_eq!(grid[2].swept.len(), 2);
        assert!(grid[4].swept.is_empty());

        // Errors name the entry and find its line, subtables included.
        let err = parse(&text.replace("0.01, 0.02", "0.01, -1.0"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("exp.toml:8: `sweep[2].train.clip` gives `train.clip` that must be"),
            "{err}"
        );
        let err = parse(&text.replace(
            "\"train.loss\" = [\"bce\", \"hinge\"]",
            "[sweep.train]\nclip = [0.1]",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("exp.toml:6: `sweep[1].train.clip` gives `train.clip` that only"),
            "{err}"
        );
        for (sweep, words) in [
            ("sweep = []", "is an empty list: it must be a table"),
            ("sweep = 3", "is 3: it must be a table ([sweep]) or tables"),
            ("sweep = [1]", "lists 1: it must be"),
        ] {
            let err = parse(&format!("name = \"x\"\n{sweep}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("line 2") && err.contains(words),
                "{sweep}: {err}"
            );
        }
        // The bound counts every entry.
        let big = |n: usize| {
            let seeds: Vec<String> = (0..n).map(|v| v.to_string()).collect();
            format!("[[sweep]]\n\"train.seed\" = [{}]\n", seeds.join(","))
        };
        let err = parse(&format!("name = \"x\"\n{}{}", big(60_000), big(50_000)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("60000 + 50000 = 110000 runs"), "{err}");
        let err = parse(&format!("name = \"x\"\n{}", "[[sweep]]\n".repeat(100_001)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 + 1 + 1 + ... (100001 grids) = 100001 runs"),
            "{err}"
        );
    }

    #[test]
    fn a_distribution_under_sweep_points_to_search_space() {
        // An inline table under [sweep] reads as nested keys: `train.seed.int`.
        let err = parse("name = \"x\"\n[sweep]\n\"train.seed\" = { int = [0, 9] }\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "exp.toml:3: `sweep.train.seed.int` is no config key: `train.seed` holds a value, \
             not a table; [sweep] takes lists of values (\"train.seed\" = [...]); a \
             distribution ({ int = ... }) goes under [search.space], with a [search] strategy"
        );
        // Any other key below a value names the value, without the pointer.
        let err = parse("name = \"x\"\n[sweep]\ntrain.lr.low = [1]\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "exp.toml:3: `sweep.train.lr.low` is no config key: `train.lr` holds a value, not \
             a table"
        );
    }
}
