//! `--set KEY=VALUE`: one spec key changed for one command, leaving the file as it is.
//!
//! The value is TOML (`1e-4`, `[1, 2]`, `{ int = [1, 3] }`, `"text"`); a value that is not
//! TOML, or whose TOML type the key does not take, is the text itself (`model.arch=dcgan`,
//! `name=2024`). Keys under `sweep.` and `search.space.` name one swept or searched path
//! (`sweep.train.lr=[1e-4, 2e-4]`; in each `[[sweep]]` entry alike). Any other key sets the
//! spec's value and pins it: a sweep axis or searched key of that path is dropped (in each
//! entry), so `--set train.lr=1e-4` runs a swept spec at one learning rate. `train.steps` and
//! `train.epochs` say one thing two ways, so setting one drops the other. Overrides apply in
//! order; the last of a key wins.

use std::fmt;
use std::str::FromStr;

use super::Spec;
use super::grid::{remove_path, set_path, table_at};
use crate::console::clipped;

/// One `--set KEY=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    key: String,
    value: toml::Value,
    /// The value as given, tried as text when its TOML type does not fit.
    raw: String,
}

/// Longer than any spec key (the longest, under `search.space.`, is about 50 characters):
/// a longer key is refused before it is echoed in every message about it.
const MAX_KEY_LEN: usize = 100;

/// The tables whose keys are dotted paths of the config rather than nested tables.
const PATH_TABLES: [&str; 2] = ["sweep", "search.space"];

impl FromStr for Override {
    type Err = String;

    fn from_str(arg: &str) -> Result<Override, String> {
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| format!("`{}` is not KEY=VALUE (e.g. train.lr=1e-4)", clipped(arg)))?;
        let key = key.trim();
        let length = key.chars().count();
        if length > MAX_KEY_LEN {
            return Err(format!(
                "`{}` ({length} characters) is longer than any spec key",
                clipped(key)
            ));
        }
        let key_ok = key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if !key_ok {
            return Err(format!(
                "`{}` is not a dotted spec key (e.g. train.lr or sweep.train.seed)",
                clipped(key)
            ));
        }
        let raw = raw.trim();
        if raw.contains(['\n', '\r']) {
            return Err(format!("the value of `{key}` must be one line"));
        }
        // One `value = ...` line, so text that is not TOML stays text (and a value cannot
        // smuggle in other keys: the line break is refused above).
        let value = toml::from_str::<toml::Table>(&format!("value = {raw}"))
            .ok()
            .and_then(|mut table| table.remove("value"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        Ok(Override {
            key: key.to_string(),
            value,
            raw: raw.to_string(),
        })
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.raw)
    }
}

impl Override {
    /// Sets the key in a spec's TOML table and returns the spec it now makes, or why it
    /// makes none (an unknown key, a wrong type, a key below a value).
    pub(super) fn apply(&self, table: &mut toml::Table) -> Result<Spec, String> {
        let mut with_value = table.clone();
        self.set(&mut with_value, self.value.clone())?;
        let error = match Spec::from_table(&with_value) {
            Ok(spec) => {
                *table = with_value;
                return Ok(spec);
            }
            Err((_, message)) => format!("`{}`: {message}", self.key),
        };
        let digits = self.raw.strip_prefix(['-', '+']).unwrap_or(&self.raw);
        if self.value.is_str() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            // A number that TOML could not read: it took it for text.
            return Err(format!(
                "{error} ({} is beyond TOML's integers, {} to {})",
                self.raw,
                i64::MIN,
                i64::MAX
            ));
        }
        if !self.value.is_str() {
            let mut with_text = table.clone();
            self.set(&mut with_text, toml::Value::String(self.raw.clone()))?;
            if let Ok(spec) = Spec::from_table(&with_text) {
                *table = with_text;
                return Ok(spec);
            }
        }
        Err(error)
    }

    fn set(&self, table: &mut toml::Table, value: toml::Value) -> Result<(), String> {
        for prefix in PATH_TABLES {
            if let Some(path) = self
                .key
                .strip_prefix(prefix)
                .and_then(|p| p.strip_prefix('.'))
            {
                for paths in path_tables(table, prefix)? {
                    remove_path(paths, path);
                    paths.insert(path.to_string(), value.clone());
                }
                return Ok(());
            }
        }
        set_path(table, &self.key, value)?;
        for prefix in PATH_TABLES {
            for paths in path_tables(table, prefix).unwrap_or_default() {
                remove_path(paths, &self.key);
            }
        }
        let twin = match self.key.as_str() {
            "train.steps" => "epochs",
            "train.epochs" => "steps",
            _ => return Ok(()),
        };
        if let Some(train) = table.get_mut("train").and_then(toml::Value::as_table_mut) {
            train.remove(twin);
        }
        Ok(())
    }

    /// Whether a problem with `key` (a config path, or `sweep.<path>` and the like) is this
    /// override's: the same key, one inside it, or one it is inside.
    pub(super) fn touches(&self, key: &str) -> bool {
        let inside = |outer: &str, inner: &str| {
            inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        inside(&self.key, key) || inside(key, &self.key)
    }
}

/// The tables of paths at `prefix` (created if missing): the one `[sweep]` or
/// `[search.space]`, or each `[[sweep]]` entry, which a set applies to alike.
fn path_tables<'a>(
    table: &'a mut toml::Table,
    prefix: &str,
) -> Result<Vec<&'a mut toml::Table>, String> {
    if !matches!(table.get(prefix), Some(toml::Value::Array(_))) {
        return Ok(vec![table_at(table, prefix)?]);
    }
    let grids = table.get_mut(prefix).and_then(toml::Value::as_array_mut);
    (grids.into_iter().flatten())
        .map(|grid| {
            grid.as_table_mut()
                .ok_or_else(|| format!("`{prefix}` lists a value that is not a table"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::spec::SpecError;

    const SPEC: &str = r#"
name = "x"
[model]
arch = "gan"
[train]
epochs = 2
lr = 2e-4
[sweep]
"train.lr" = [1e-4, 2e-4]
[sweep.train]
d_steps = [1, 2]
"#;

    fn sets(args: &[&str]) -> Vec<Override> {
        args.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn with(args: &[&str]) -> Result<Spec, SpecError> {
        Spec::parse_with(SPEC, Path::new("x.toml"), &sets(args))
    }

    fn parse(text: &str) -> Spec {
        Spec::parse(text, Path::new("x.toml")).unwrap()
    }

    #[test]
    fn sets_apply_to_every_sweep_entry() {
        let text = "name = \"x\"\n[[sweep]]\n\"train.lr\" = [1e-4, 2e-4]\n\
                    [[sweep]]\n\"train.loss\" = [\"hinge\"]\n\"train.lr\" = [4e-4]\n";
        let spec = |args: &[&str]| Spec::parse_with(text, Path::new("x.toml"), &sets(args));
        let lrs = |spec: Spec| -> Vec<f64> {
            spec.grid()
                .unwrap()
                .iter()
                .map(|p| p.config.train.lr)
                .collect()
        };
        assert_eq!(lrs(spec(&[]).unwrap()), [1e-4, 2e-4, 4e-4]);
        // Pinned: each entry's axis is dropped.
        assert_eq!(lrs(spec(&["train.lr=3e-4"]).unwrap()), [3e-4, 3e-4]);
        // An axis set is set in each entry.
        let seeded = spec(&["sweep.train.seed=[1, 2]"]).unwrap();
        assert_eq!(seeded.grid().unwrap().len(), 6);
        assert_eq!(lrs(spec(&["sweep={}"]).unwrap()), [2e-4]);
    }

    #[test]
    fn values_are_toml_or_else_text() {
        let value = |arg: &str| arg.parse::<Override>().unwrap().value;
        assert_eq!(value("train.lr=1e-4"), toml::Value::Float(1e-4));
        assert_eq!(value("train.seed = 3"), toml::Value::Integer(3));
        assert_eq!(
            value("model.arch=dcgan"),
            toml::Value::String("dcgan".into())
        );
        assert_eq!(
            value("model.arch=\"dcgan\""),
            toml::Value::String("dcgan".into())
        );
        assert_eq!(
            value("sweep.train.seed=[1, 2]").as_array().unwrap().len(),
            2
        );
        assert!(value("search.space.train.lr={ log_uniform = [1e-5, 1e-2] }").is_table());
        for bad in ["train.lr", "=1", "train..lr=1", "train.lr x=1", ".lr=1"] {
            assert!(bad.parse::<Override>().is_err(), "{bad}");
        }
        // A script's runaway argument comes back clipped, not whole.
        let long_key = format!("train.{}=1", "x".repeat(100_000));
        let err = long_key.parse::<Override>().unwrap_err();
        assert!(
            err.len() < 200 && err.contains("100006 characters"),
            "{err}"
        );
        let no_value = "y".repeat(100_000).parse::<Override>().unwrap_err();
        assert!(no_value.len() < 200, "{no_value}");
        // A line break could smuggle in a second key.
        let smuggled = "train.lr=1\nname = \"y\"".parse::<Override>();
        assert!(smuggled.unwrap_err().contains("one line"));
    }

    #[test]
    fn a_set_equals_the_same_edit_of_the_file_and_pins_a_swept_key() {
        let edited = SPEC
            .replace("lr = 2e-4", "lr = 5e-4")
            .replace("name = \"x\"", "name = \"y\"")
            .replace("\"train.lr\" = [1e-4, 2e-4]\n", "");
        let spec = with(&["train.lr=5e-4", "name=y"]).unwrap();
        assert_eq!(spec, parse(&edited));
        assert_eq!(spec.swept_keys(), ["train.d_steps"]);
        assert_eq!(spec.grid().unwrap().len(), 2);
    }

    #[test]
    fn sweep_keys_replace_axes_written_either_way() {
        // `train.d_steps` is nested in the file, `train.lr` quoted.
        let spec = with(&[
            "sweep.train.d_steps=[3]",
            "sweep.train.lr=[1e-3, 2e-3, 3e-3]",
        ])
        .unwrap();
        let edited = SPEC
            .replace("[1e-4, 2e-4]", "[1e-3, 2e-3, 3e-3]")
            .replace("d_steps = [1, 2]", "d_steps = [3]");
        assert_eq!(spec.grid().unwrap(), parse(&edited).grid().unwrap());
        let seeds = with(&["sweep.train.seed=[1, 2, 3]"]).unwrap();
        assert_eq!(seeds.grid().unwrap().len(), 12);
        // An empty sweep table is a spec of one run.
        assert_eq!(with(&["sweep={}"]).unwrap().grid().unwrap().len(), 1);
    }

    #[test]
    fn steps_replace_epochs_and_the_last_set_wins() {
        let spec = with(&["train.steps=10"]).unwrap();
        assert_eq!((spec.train.steps, spec.train.epochs), (Some(10), None));
        let spec = with(&["train.steps=10", "train.epochs=3"]).unwrap();
        assert_eq!((spec.train.steps, spec.train.epochs), (None, Some(3)));
        let spec = with(&["train.seed=1", "train.seed=2"]).unwrap();
        assert_eq!(spec.train.seed, 2);
    }

    #[test]
    fn a_value_of_the_wrong_type_is_tried_as_text() {
        assert_eq!(with(&["name=2024"]).unwrap().name, "2024");
        // Digits beyond TOML's integers are text too, fine for a name but not for a number.
        let huge = "18446744073709551615";
        assert_eq!(with(&[&format!("name={huge}")]).unwrap().name, huge);
        let error = with(&[&format!("train.seed={huge}")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("is beyond TOML's integers"), "{error}");
        assert_eq!(with(&["description=1.5"]).unwrap().description, "1.5");
        let error = with(&["train.lr=true"]).unwrap_err().to_string();
        assert!(
            error.contains("--set train.lr=true: `train.lr`: invalid type"),
            "{error}"
        );
    }

    #[test]
    fn problems_name_the_set_that_brought_them() {
        let message = |args: &[&str]| with(args).unwrap_err().to_string();
        assert_eq!(
            message(&["train.seed=1", "train.lr=-1"]),
            "x.toml with --set train.lr=-1: `train.lr` must be > 0, got -1"
        );
        assert!(
            message(&["train.lrr=1"])
                .contains("--set train.lrr=1: `train.lrr`: unknown field `lrr`")
        );
        assert!(
            message(&["train.lr.x=1"])
                .contains("--set train.lr.x=1: `train.lr` holds a value, not a table")
        );
        assert!(
            message(&["sweep.train.seed=4"])
                .contains("`sweep.train.seed` must be a non-empty list")
        );
        assert!(
            message(&["sweep.train.seed=[]"]).starts_with("x.toml with --set sweep.train.seed=[]")
        );
        // No single set holds the key at fault: the message names them all.
        assert_eq!(
            message(&["search.strategy=random", "search.trials=2"]),
            "x.toml with --set search.strategy=random --set search.trials=2: `search.space` needs \
             at least one key to search over"
        );
        // The file's own errors still name its line.
        let broken = SPEC.replace("lr = 2e-4", "lr = 0");
        let error = Spec::parse_with(&broken, Path::new("x.toml"), &sets(&["train.seed=1"]));
        assert!(
            matches!(error, Err(SpecError::Invalid { line: Some(7), .. })),
            "{error:?}"
        );
        // Named once, not as "`train.lr` `train.lr` must be".
        assert_eq!(
            error.unwrap_err().to_string(),
            "x.toml:7: `train.lr` must be > 0, got 0"
        );
        let garbled = SPEC.replace("lr = 2e-4", "lrr = 2e-4");
        let error = Spec::parse_with(&garbled, Path::new("x.toml"), &sets(&["train.lrr=1"]));
        assert!(matches!(error, Err(SpecError::Parse { .. })), "{error:?}");
    }
}
