//! `base = "other.toml"`: a spec whose run config builds on another spec's.
//!
//! The base's `[data]`, `[model]`, `[train]` and `[log]` keys (its own base's under them) are
//! the spec's, under its own: a key the spec writes replaces the base's, one key at a time. Its
//! name, description, `[sweep]` and `[search]` stay its own (an experiment is what its file
//! says it trains). `train.steps` and `train.epochs` say one thing two ways, so writing one
//! drops the base's other; another `model.arch` takes none of the base's `[model]` (its keys
//! are another model's). `unset = ["train.clip"]` drops base keys the spec wants gone (a
//! WGAN base's clip under a BCE spec), each one the base must have. A base is a spec that
//! works alone: it is checked as one, so its own problems are named at its own lines. Its
//! path is relative to the spec's folder.

use std::path::{Path, PathBuf};

use toml::Value;

use super::SpecError;

/// The tables a base lends.
const LENT: [&str; 4] = ["data", "model", "train", "log"];

/// How deep bases may nest: far beyond any use, short of a stack overflow.
const MAX_DEPTH: usize = 16;

/// A file a spec's keys come from, the spec's own first.
pub(super) struct Layer {
    pub path: PathBuf,
    pub text: String,
}

/// The base file that `table`'s `base` (written in `path`, whose `text` it is) names, read,
/// checked for a cycle against `chain` (the specs this one was reached through, outermost
/// first, and `path` last). `None` without one.
pub(super) fn read_base(
    table: &toml::Table,
    path: &Path,
    text: &str,
    chain: &[PathBuf],
) -> Result<Option<Layer>, SpecError> {
    let Some(value) = table.get("base") else {
        return Ok(None);
    };
    let invalid = |message: String| SpecError::Invalid {
        path: path.to_path_buf(),
        key: "base".into(),
        line: super::lines::line_of(text, "base"),
        message,
    };
    let Some(name) = value.as_str().filter(|name| !name.is_empty()) else {
        return Err(invalid(
            "must be the path of the spec file this one builds on (a string)".into(),
        ));
    };
    let base = path.parent().unwrap_or(Path::new("")).join(name);
    let text = super::read_text(&base).map_err(|err| match err {
        SpecError::Read { source, .. } => invalid(format!("names {}: {source}", base.display())),
        other => other,
    })?;
    if let Some(first) = chain
        .iter()
        .position(|earlier| crate::fsutil::same_file(earlier, &base))
    {
        let cycle: Vec<String> = (chain[first..].iter().map(|p| p.display().to_string()))
            .chain([base.display().to_string()])
            .collect();
        return Err(invalid(format!(
            "makes a cycle of bases: {}",
            cycle.join(" -> ")
        )));
    }
    if chain.len() > MAX_DEPTH {
        return Err(invalid(format!(
            "would nest bases {} deep, beyond the {MAX_DEPTH} allowed",
            chain.len()
        )));
    }
    Ok(Some(Layer { path: base, text }))
}

/// Removes from `base` (the base's table, read from `base_path`) the keys that `table`'s
/// `unset` (written in `path`, whose `text` it is) names: dotted keys under the lent tables,
/// each one the base has and `table` does not write. An `unset` without a base is an error.
pub(super) fn unset(
    table: &toml::Table,
    base: Option<(&mut toml::Table, &Path)>,
    path: &Path,
    text: &str,
) -> Result<(), SpecError> {
    let Some(value) = table.get("unset") else {
        return Ok(());
    };
    let invalid = |message: String| SpecError::Invalid {
        path: path.to_path_buf(),
        key: "unset".into(),
        line: super::lines::line_of(text, "unset"),
        message,
    };
    let Some((base, base_path)) = base else {
        return Err(invalid(
            "drops keys a base lends, and this spec has no `base`".into(),
        ));
    };
    let keys = value.as_array().map(|keys| {
        keys.iter()
            .map(|key| key.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
    });
    let Some(Some(keys)) = keys else {
        return Err(invalid(
            "must be a list of dotted keys, e.g. [\"train.clip\"]".into(),
        ));
    };
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].contains(key) {
            continue;
        }
        let parts: Vec<&str> = key.split('.').collect();
        if parts.len() < 2 || !LENT.contains(&parts[0]) || parts.iter().any(|p| p.is_empty()) {
            return Err(invalid(format!(
                "`{key}`: only keys under [{}] come from a base, written dotted, e.g. \
                 \"train.clip\"",
                LENT.join("], [")
            )));
        }
        if get(table, &parts).is_some() {
            return Err(invalid(format!(
                "`{key}` is written in this spec too: unset it or write it, not both"
            )));
        }
        if !super::grid::remove_path(base, key) {
            return Err(invalid(format!(
                "`{key}`: the base ({}, with its own bases) has no such key",
                base_path.display()
            )));
        }
    }
    Ok(())
}

/// The value at the dotted path `parts` of `table`.
fn get<'a>(table: &'a toml::Table, parts: &[&str]) -> Option<&'a Value> {
    let (first, rest) = parts.split_first()?;
    let value = table.get(*first)?;
    match rest {
        [] => Some(value),
        _ => get(value.as_table()?, rest),
    }
}

/// Writes `spec`'s own keys over its base's (`base`, the base's table with its own bases in,
/// of model `base_arch`), table by table, and keeps the result in `spec`.
pub(super) fn inherit(spec: &mut toml::Table, base: &toml::Table, base_arch: &str) {
    for name in LENT {
        let Some(lent) = base.get(name).and_then(Value::as_table) else {
            continue;
        };
        let mut merged = lent.clone();
        match spec.get(name) {
            None => {}
            Some(Value::Table(own)) => {
                if name == "train" && (own.contains_key("steps") || own.contains_key("epochs")) {
                    merged.remove("steps");
                    merged.remove("epochs");
                }
                if name == "model"
                    && (own.get("arch").and_then(Value::as_str)).is_some_and(|a| a != base_arch)
                {
                    merged.clear();
                }
                write_over(&mut merged, own);
            }
            // Not a table: its own error, at its line.
            Some(_) => continue,
        }
        spec.insert(name.to_string(), Value::Table(merged));
    }
}

/// `own`'s keys written over `table`'s; tables in both are merged the same way.
fn write_over(table: &mut toml::Table, own: &toml::Table) {
    for (key, value) in own {
        match (table.get_mut(key), value) {
            (Some(Value::Table(lent)), Value::Table(own)) => write_over(lent, own),
            _ => {
                table.insert(key.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::spec::{Override, Spec};

    /// Writes `files` (name, text) into a new folder and loads the first with `sets`.
    fn load(files: &[(&str, &str)], sets: &[&str]) -> (tempfile::TempDir, Result<Spec, String>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let file = dir.path().join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        let sets: Vec<Override> = sets.iter().map(|s| s.parse().unwrap()).collect();
        let spec = Spec::load_with(&dir.path().join(files[0].0), &sets).map_err(|e| {
            // Paths in errors, relative to the folder.
            e.to_string()
                .replace(&format!("{}/", dir.path().display()), "")
        });
        (dir, spec)
    }

    const QUICK: &str = r#"name = "quick"
description = "the base"
[model]
arch = "dcgan"
g_channels = [64, 32]
spectral_norm = true
[train]
steps = 800
lr = 8e-4
g_ema = 0.999
[log]
eval_every = 400
[sweep]
"train.seed" = [0, 1, 2]
"#;

    #[test]
    fn a_spec_takes_its_bases_run_config_key_by_key_and_keeps_its_own_experiment() {
        let child = "base = \"quick.toml\"\nname = \"child\"\n[train]\nlr = 2e-4\n";
        let (_dir, spec) = load(&[("child.toml", child), ("quick.toml", QUICK)], &[]);
        let spec = spec.unwrap();
        // The same spec written out in full trains the same config.
        let flat = QUICK
            .replace(
                "name = \"quick\"\ndescription = \"the base\"",
                "name = \"child\"",
            )
            .replace("lr = 8e-4", "lr = 2e-4");
        let flat = flat.split("[sweep]").next().unwrap();
        let flat = Spec::parse(flat, Path::new("flat.toml")).unwrap();
        assert_eq!(flat.train.lr, 2e-4);
        assert_eq!(spec.run_config(), flat.run_config());
        assert_eq!(spec.base.as_deref(), Some("quick.toml"));
        // Its name, description and grid are its own: one run, not the base's three.
        assert_eq!(
            (spec.name.as_str(), spec.description.as_str()),
            ("child", "")
        );
        assert_eq!(spec.grid().unwrap().len(), 1);
    }

    #[test]
    fn bases_chain_and_the_nearest_key_wins() {
        let files = [
            (
                "c.toml",
                "base = \"sub/b.toml\"\nname = \"c\"\n[train]\nseed = 7\n",
            ),
            // A base's own base is found beside it, not beside the spec.
            (
                "sub/b.toml",
                "base = \"a.toml\"\nname = \"b\"\n[train]\nlr = 1e-3\nseed = 5\n",
            ),
            (
                "sub/a.toml",
                "name = \"a\"\n[train]\nlr = 3e-4\nbatch_size = 32\nseed = 3\n",
            ),
        ];
        let train = load(&files, &[]).1.unwrap().train;
        assert_eq!((train.seed, train.lr, train.batch_size), (7, 1e-3, 32));
    }

    #[test]
    fn steps_replace_epochs_and_another_model_takes_none_of_the_bases() {
        let child =
            "base = \"quick.toml\"\nname = \"c\"\n[train]\nepochs = 2\n[model]\narch = \"gan\"\n";
        let (_dir, spec) = load(&[("c.toml", child), ("quick.toml", QUICK)], &[]);
        let spec = spec.unwrap();
        assert_eq!((spec.train.epochs, spec.train.steps), (Some(2), None));
        let default_gan =
            Spec::parse("name = \"x\"\n[model]\narch = \"gan\"", Path::new("x.toml")).unwrap();
        assert_eq!(spec.model, default_gan.model);
        // The same model keeps the base's keys under its own.
        let child =
            "base = \"quick.toml\"\nname = \"c\"\n[model]\narch = \"dcgan\"\nbn_eps = 1e-5\n";
        let (_dir, spec) = load(&[("c.toml", child), ("quick.toml", QUICK)], &[]);
        let model = toml::Table::try_from(spec.unwrap().model).unwrap();
        assert_eq!(
            model["g_channels"],
            toml::Value::try_from([64, 32]).unwrap()
        );
        assert_eq!(model["bn_eps"], toml::Value::Float(1e-5));
    }

    #[test]
    fn problems_are_named_in_the_file_that_writes_the_key() {
        let quick = ("quick.toml", QUICK);
        let err =
            |child: &str, sets: &[&str]| load(&[("c.toml", child), quick], sets).1.unwrap_err();
        // The spec's own value, at its line.
        let e = err(
            "base = \"quick.toml\"\nname = \"c\"\n[train]\nlr = -1\n",
            &[],
        );
        assert!(e.starts_with("c.toml:4: `train.lr` must be > 0"), "{e}");
        // A base's key that the spec's own makes wrong: at the base's line, saying so.
        let wgan = "name = \"w\"\n[train]\nloss = \"wgan\"\nclip = 0.01\n";
        let child = "base = \"w.toml\"\nname = \"c\"\n[train]\nloss = \"bce\"\n";
        let e = load(&[("c.toml", child), ("w.toml", wgan)], &[])
            .1
            .unwrap_err();
        assert!(e.starts_with("w.toml:4: `train.clip` only applies"), "{e}");
        assert!(e.contains("a key c.toml takes from a base"), "{e}");
        // Through a base between them too.
        let middle = "base = \"w.toml\"\nname = \"m\"\n";
        let child = "base = \"m.toml\"\nname = \"c\"\n[train]\nloss = \"bce\"\n";
        let files = [("c.toml", child), ("m.toml", middle), ("w.toml", wgan)];
        let e = load(&files, &[]).1.unwrap_err();
        assert!(e.starts_with("w.toml:4: `train.clip` only applies"), "{e}");
        // The base's own problem, at its own line, whatever the spec says.
        let bad = "name = \"b\"\n[train]\nbatch_size = 0\n";
        let e = load(
            &[
                ("c.toml", "base = \"b.toml\"\nname = \"c\"\n"),
                ("b.toml", bad),
            ],
            &[],
        )
        .1
        .unwrap_err();
        assert!(e.starts_with("b.toml:3: `train.batch_size`"), "{e}");
        // Where the base is, and what it is.
        let e = err("base = \"nope.toml\"\nname = \"c\"\n", &[]);
        assert!(
            e.starts_with("c.toml:1: `base` names nope.toml: No such file"),
            "{e}"
        );
        let e = err("name = \"c\"\nbase = 3\n", &[]);
        assert!(e.starts_with("c.toml:2: `base` must be the path"), "{e}");
        // A dotted key makes it a table, named at the line that writes into it.
        let e = err("name = \"c\"\n\nbase.x = 1\n", &[]);
        assert!(e.starts_with("c.toml:3: `base` must be the path"), "{e}");
        // It is read before --set applies, so a --set of it is refused, not ignored.
        let e = err(
            "base = \"quick.toml\"\nname = \"c\"\n",
            &["base=other.toml"],
        );
        assert!(
            e.contains("--set base=other.toml: `base` is read before"),
            "{e}"
        );
    }

    #[test]
    fn unset_drops_a_bases_keys_and_names_what_it_cannot_drop() {
        let wgan = "name = \"w\"\n[train]\nloss = \"wgan\"\nclip = 0.01\nlr = 5e-5\n";
        let child =
            "base = \"w.toml\"\nname = \"c\"\nunset = [\"train.clip\"]\n[train]\nloss = \"bce\"\n";
        let (_dir, spec) = load(&[("c.toml", child), ("w.toml", wgan)], &[]);
        let spec = spec.unwrap();
        // What the same spec written out in full, without the clip, trains.
        let flat = "name = \"c\"\n[train]\nloss = \"bce\"\nlr = 5e-5\n";
        let flat = Spec::parse(flat, Path::new("flat.toml")).unwrap();
        assert_eq!(spec.run_config(), flat.run_config());
        assert_eq!(spec.unset, ["train.clip"]);
        // Through a base between them, and a key inside a nested table of the base's.
        let middle = "base = \"w.toml\"\nname = \"m\"\n[model]\narch = \"dcgan\"\n";
        let child = "base = \"m.toml\"\nname = \"c\"\nunset = [\"train.clip\", \"model.arch\"]\n\
                     [train]\nloss = \"bce\"\n";
        let files = [("c.toml", child), ("m.toml", middle), ("w.toml", wgan)];
        let spec = load(&files, &[]).1.unwrap();
        assert_eq!(spec.run_config(), flat.run_config());

        let err = |child: &str, sets: &[&str]| {
            load(&[("c.toml", child), ("w.toml", wgan)], sets)
                .1
                .unwrap_err()
        };
        let with = |unset: &str| format!("base = \"w.toml\"\nname = \"c\"\nunset = {unset}\n");
        // A key the base lacks (a typo drops nothing), at the line of `unset`.
        let e = err(&with("[\"train.cilp\"]"), &[]);
        assert!(
            e.starts_with("c.toml:3: `unset` `train.cilp`: the base (w.toml"),
            "{e}"
        );
        // Not a lent table, not dotted, not strings.
        for (unset, says) in [
            (
                "[\"sweep.lr\"]",
                "only keys under [data], [model], [train], [log]",
            ),
            ("[\"train\"]", "only keys under"),
            ("[\"train..lr\"]", "only keys under"),
            ("\"train.clip\"", "must be a list of dotted keys"),
            ("[1]", "must be a list of dotted keys"),
        ] {
            let e = err(&with(unset), &[]);
            assert!(
                e.starts_with("c.toml:3: `unset`") && e.contains(says),
                "{unset}: {e}"
            );
        }
        // Named twice: dropped once.
        let twice = with("[\"train.clip\", \"train.clip\"]") + "[train]\nloss = \"bce\"\n";
        let spec = load(&[("c.toml", &twice), ("w.toml", wgan)], &[]).1;
        assert_eq!(spec.unwrap().run_config(), flat.run_config());
        // Both dropped and written.
        let e = err(&(with("[\"train.clip\"]") + "[train]\nclip = 0.02\n"), &[]);
        assert!(
            e.contains("`train.clip` is written in this spec too"),
            "{e}"
        );
        // Without a base.
        let e = load(
            &[("c.toml", "name = \"c\"\nunset = [\"train.clip\"]\n")],
            &[],
        )
        .1
        .unwrap_err();
        assert!(
            e.starts_with("c.toml:2: `unset` drops keys a base lends"),
            "{e}"
        );
        // Read before --set, like `base`.
        let e = err(&with("[\"train.clip\"]"), &["unset=[\"train.lr\"]"]);
        assert!(e.contains("`unset` is read before any --set"), "{e}");
        // A key the spec would keep wrong says how to drop it.
        let e = err(
            "base = \"w.toml\"\nname = \"c\"\n[train]\nloss = \"bce\"\n",
            &[],
        );
        assert!(
            e.contains("write another value in c.toml, or drop it with `unset = [\"train.clip\"]`"),
            "{e}"
        );
    }

    #[test]
    fn cycles_and_endless_chains_are_refused() {
        let files = [
            ("a.toml", "base = \"b.toml\"\nname = \"a\"\n"),
            ("b.toml", "base = \"c.toml\"\nname = \"b\"\n"),
            ("c.toml", "base = \"b.toml\"\nname = \"c\"\n"),
        ];
        let e = load(&files, &[]).1.unwrap_err();
        assert!(
            e.starts_with("c.toml:1: `base` makes a cycle of bases: b.toml -> c.toml -> b.toml"),
            "{e}"
        );
        let e = load(&[("a.toml", "base = \"a.toml\"\nname = \"a\"\n")], &[])
            .1
            .unwrap_err();
        assert!(e.contains("a.toml -> a.toml"), "{e}");
        let chain: Vec<(String, String)> = (0..=super::MAX_DEPTH + 1)
            .map(|i| {
                (
                    format!("s{i}.toml"),
                    format!("base = \"s{}.toml\"\nname = \"s{i}\"\n", i + 1),
                )
            })
            .chain([(
                format!("s{}.toml", super::MAX_DEPTH + 2),
                "name = \"last\"\n".into(),
            )])
            .collect();
        let files: Vec<(&str, &str)> = chain
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let e = load(&files, &[]).1.unwrap_err();
        assert!(e.contains("beyond the 16 allowed"), "{e}");
        // Sixteen deep is allowed.
        let e = load(&files[2..], &[]).1;
        assert!(e.is_ok(), "{e:?}");
    }
}
