//! A spec's grid: its `[sweep]` lists checked and crossed (with `[search]` trials) into
//! validated run configs, each point with the values that made it. `[[sweep]]` entries are
//! grids of their own, one after the other: settings that apply to some values of another
//! (`train.clip` only with `loss = "wgan"`) go in the entry with those values.

use serde::{Deserialize, Serialize};

use super::{MAX_RUNS, RunConfig, Spec};

/// One point of a sweep grid: its resolved config and the swept values that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridPoint {
    pub config: RunConfig,
    pub swept: Vec<(String, toml::Value)>,
}

/// A spec's `[sweep]`: one grid (a table), or the union of grids (`[[sweep]]`, an array of
/// tables).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, try_from = "toml::Value")]
pub enum Sweep {
    Grid(toml::Table),
    Union(Vec<toml::Table>),
}

impl Default for Sweep {
    fn default() -> Self {
        Sweep::Grid(toml::Table::new())
    }
}

impl TryFrom<toml::Value> for Sweep {
    type Error = String;

    fn try_from(value: toml::Value) -> Result<Self, String> {
        const FORMS: &str = "a table ([sweep]) or tables of grids one after the other ([[sweep]])";
        match value {
            toml::Value::Table(table) => Ok(Sweep::Grid(table)),
            toml::Value::Array(items) if items.is_empty() => {
                Err(format!("is an empty list: it must be {FORMS}"))
            }
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::Table(table) => Ok(table),
                    other => Err(format!("lists {other}: it must be {FORMS}")),
                })
                .collect::<Result<_, _>>()
                .map(Sweep::Union),
            other => Err(format!("is {other}: it must be {FORMS}")),
        }
    }
}

impl Sweep {
    /// Each grid with the name its errors go by: `sweep`, or `sweep[N]` (from 1) for the
    /// N-th `[[sweep]]`.
    fn grids(&self) -> Vec<(String, &toml::Table)> {
        match self {
            Sweep::Grid(table) => vec![("sweep".to_string(), table)],
            Sweep::Union(tables) => tables
                .iter()
                .enumerate()
                .map(|(i, table)| (format!("sweep[{}]", i + 1), table))
                .collect(),
        }
    }
}

/// Keys that do not change what is trained (runs are identified without them): varying them in
/// `[sweep]` or `[search]` would collapse points into one run.
pub(super) fn is_untrained_key(path: &str) -> bool {
    path == "log" || path.starts_with("log.") || path == "data.dir"
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

/// Sets `path` (dotted) in a TOML table, creating the tables on the way.
pub(super) fn set_path(
    root: &mut toml::Table,
    path: &str,
    value: toml::Value,
) -> Result<(), String> {
    let (table, leaf) = match path.rsplit_once('.') {
        Some((parent, leaf)) => (table_at(root, parent)?, leaf),
        None => (root, path),
    };
    table.insert(leaf.to_string(), value);
    Ok(())
}

/// Removes a dotted path from a table, written either way: `"train.lr" = ...` or nested
/// (`train.lr = ...`, a `train` table holding `lr`), and the tables it leaves empty; whether
/// there was anything to remove.
pub(super) fn remove_path(table: &mut toml::Table, path: &str) -> bool {
    let mut removed = table.remove(path).is_some();
    if let Some((head, rest)) = path.split_once('.')
        && let Some(inner) = table.get_mut(head).and_then(toml::Value::as_table_mut)
    {
        removed |= remove_path(inner, rest);
        if inner.is_empty() {
            table.remove(head);
        }
    }
    removed
}

/// The table at a dotted path, created if missing.
pub(super) fn table_at<'a>(
    root: &'a mut toml::Table,
    dotted: &str,
) -> Result<&'a mut toml::Table, String> {
    let mut table = root;
    let mut walked = 0;
    for part in dotted.split('.') {
        walked += part.len() + 1;
        table = table
            .entry(part)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| format!("`{}` holds a value, not a table", &dotted[..walked - 1]))?;
    }
    Ok(table)
}

/// A point that sweeps `model.arch` to another family than `base`'s keeps, of the base's
/// `[model]` keys, only those the spec changed from the base family's defaults (and the swept
/// ones): the others are the base family's defaults, which the other family may not take
/// (the DCGAN's `bn_eps` is no option of the vanilla GAN's), so `"model.arch" = ["gan",
/// "dcgan"]` trains each with its own defaults and the options both share.
fn keep_written_model_keys(
    table: &mut toml::Table,
    base: &toml::Table,
    swept: &[(String, toml::Value)],
) {
    let arch = |table: &toml::Table| {
        let model = table.get("model")?.as_table()?;
        Some(model.get("arch")?.as_str()?.to_string())
    };
    let Some(base_arch) = arch(base).filter(|base_arch| arch(table).as_ref() != Some(base_arch))
    else {
        return;
    };
    let Some(defaults) = (crate::model::ModelConfig::families().into_iter())
        .find(|family| family.arch() == base_arch)
        .and_then(|family| toml::Table::try_from(family).ok())
    else {
        return;
    };
    if let Some(model) = table.get_mut("model").and_then(toml::Value::as_table_mut) {
        model.retain(|key, value| {
            key == "arch"
                || defaults.get(key) != Some(value)
                || swept
                    .iter()
                    .any(|(path, _)| *path == format!("model.{key}"))
        });
    }
}

/// The message for a swept path that goes below a value (`train.seed.int`), with a pointer to
/// `[search.space]` when the last key names one of its distributions: `"train.seed" = { int =
/// [0, 9] }` under `[sweep]` reads as a nested table.
fn through_a_value(path: &str, message: String) -> String {
    let message = format!("is no config key: {message}");
    let leaf = path.rsplit('.').next().unwrap_or(path);
    if !super::search::DISTRIBUTIONS.contains(&leaf) {
        return message;
    }
    let key = &path[..path.len() - leaf.len() - 1];
    format!(
        "{message}; [sweep] takes lists of values (\"{key}\" = [...]); a distribution \
         ({{ {leaf} = ... }}) goes under [search.space], with a [search] strategy"
    )
}

/// The axes of the grid `name` (`sweep`, `sweep[2]`), its paths sorted; errors are
/// (`<name>.<path>`, message), as [`Spec::sweep_grids`] lists them.
fn grid_axes(name: &str, table: &toml::Table) -> Result<Vec<SweepAxis>, (String, String)> {
    let mut flat = Vec::new();
    flatten_sweep(table, "", &mut flat);
    flat.sort_by(|a, b| a.0.cmp(&b.0));
    for pair in flat.windows(2) {
        let (a, b) = (&pair[0].0, &pair[1].0);
        if a == b || b.starts_with(&format!("{a}.")) {
            return Err((
                format!("{name}.{b}"),
                format!("is swept twice (also as `{a}`); sweep each key once"),
            ));
        }
    }
    flat.into_iter()
        .map(|(path, value)| {
            let fail = |message: String| Err((format!("{name}.{path}"), message));
            if is_untrained_key(&path) {
                return fail(
                    "does not change what is trained (runs are identified without [log] and \
                     data.dir), so its points would be one run; set it outside [sweep]"
                        .into(),
                );
            }
            let toml::Value::Array(items) = value else {
                return fail("must be a non-empty list of values".into());
            };
            if items.is_empty() {
                return fail("must be a non-empty list of values".into());
            }
            if items.iter().any(|v| v.is_table()) {
                return fail(format!(
                    "lists whole tables, which would replace [{path}] and drop its other keys; \
                     sweep its keys one by one (\"{path}.<key>\" = [...])"
                ));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(item) = items.iter().find(|item| !seen.insert(item.to_string())) {
                return fail(format!("lists {item} twice"));
            }
            Ok((path, items))
        })
        .collect()
}

/// One swept path and its values.
type SweepAxis = (String, Vec<toml::Value>);

/// One grid of the sweep: its name in errors (`sweep`, `sweep[2]`) and its axes.
type Grid = (String, Vec<SweepAxis>);

impl Spec {
    /// Each grid's swept paths and their value lists, sorted by path. Errors are
    /// (`sweep.<path>` or `sweep[N].<path>`, message) for anything that would make the grid
    /// differ from what `--dry-run` shows: a value that is not a non-empty list, a repeated
    /// value, a whole table (which would replace the spec's table), a path swept twice or
    /// inside another, and keys that do not change what is trained (`log.*`, `data.dir`:
    /// their points would collapse into one run).
    fn sweep_grids(&self) -> Result<Vec<Grid>, (String, String)> {
        self.sweep
            .grids()
            .into_iter()
            .map(|(name, table)| Ok((name.clone(), grid_axes(&name, table)?)))
            .collect()
    }

    /// Expands the sweep into its grid: the cartesian product of every swept list (of each
    /// `[[sweep]]` entry in turn), each point a validated config. A spec without `[sweep]` is
    /// a grid of one. Errors are (`sweep.<path>`, message).
    pub fn grid(&self) -> Result<Vec<GridPoint>, (String, String)> {
        let grids = self.sweep_grids()?;
        let trial_count = self.search.trial_count() as usize;
        let sizes: Vec<Vec<usize>> = grids
            .iter()
            .map(|(_, axes)| axes.iter().map(|(_, values)| values.len()).collect())
            .collect();
        let runs = sizes.iter().try_fold(0usize, |total, sizes| {
            let grid = sizes
                .iter()
                .try_fold(trial_count.max(1), |n, &size| n.checked_mul(size))?;
            total.checked_add(grid)
        });
        if runs.is_none_or(|n| n > MAX_RUNS) {
            let products: Vec<String> = sizes
                .iter()
                .map(|sizes| {
                    let mut factors: Vec<String> = sizes.iter().map(usize::to_string).collect();
                    if trial_count > 0 {
                        factors.insert(0, format!("{trial_count} trials"));
                    }
                    if factors.is_empty() {
                        "1".to_string()
                    } else {
                        factors.join(" x ")
                    }
                })
                .collect();
            let mut runs = runs.map_or("over 2^64".into(), |n| n.to_string());
            // A spec may hold a hundred thousand entries: the sum is shown, not written out.
            let written = match products.len() {
                ..=4 => products.join(" + "),
                n => format!("{} + ... ({n} grids)", products[..3].join(" + ")),
            };
            if written != runs {
                runs = format!("{written} = {runs}");
            }
            return Err((
                "sweep".into(),
                format!("expands to {runs} runs; a sweep may have at most {MAX_RUNS}"),
            ));
        }
        let mut trials = self.search.trials();
        if trials.is_empty() {
            trials.push(Vec::new());
        }
        self.cross_grids(trials, &grids)
    }

    /// The grid points of one search trial: its `values` crossed with the `[sweep]` lists
    /// (the points [`Spec::grid`] gives that trial; a proposed TPE trial's).
    pub fn trial_points(
        &self,
        values: Vec<(String, toml::Value)>,
    ) -> Result<Vec<GridPoint>, (String, String)> {
        self.cross_grids(vec![values], &self.sweep_grids()?)
    }

    /// Each of `trials` crossed with each grid in turn, as validated configs.
    fn cross_grids(
        &self,
        trials: Vec<Vec<(String, toml::Value)>>,
        grids: &[Grid],
    ) -> Result<Vec<GridPoint>, (String, String)> {
        let mut points = Vec::new();
        for (name, axes) in grids {
            points.extend(self.cross(trials.clone(), name, axes)?);
        }
        Ok(points)
    }

    /// Each of `points` crossed with every value of each axis of the grid `name`, in order,
    /// as validated configs.
    fn cross(
        &self,
        mut points: Vec<Vec<(String, toml::Value)>>,
        name: &str,
        axes: &[SweepAxis],
    ) -> Result<Vec<GridPoint>, (String, String)> {
        let base = toml::Table::try_from(self.run_config()).expect("configs serialize");
        for (path, values) in axes {
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
            .map(|swept| self.point_of(&base, name, swept))
            .collect()
    }

    /// The validated config of `base` with `swept` set, a point of the grid `name`.
    fn point_of(
        &self,
        base: &toml::Table,
        name: &str,
        swept: Vec<(String, toml::Value)>,
    ) -> Result<GridPoint, (String, String)> {
        let mut table = base.clone();
        for (path, value) in &swept {
            set_path(&mut table, path, value.clone())
                .map_err(|e| (self.origin(name, path), through_a_value(path, e)))?;
        }
        keep_written_model_keys(&mut table, base, &swept);
        let config: RunConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let key = swept.last().map(|(p, _)| p.as_str()).unwrap_or("");
                    (
                        self.origin(name, key),
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
                self.origin(name, &culprit),
                format!("gives `{key}` that {message}"),
            ));
        }
        Ok(GridPoint { config, swept })
    }

    /// Where a varied key of a point of the grid `grid` comes from, for errors:
    /// `search.space.<key>` or `<grid>.<key>` (`sweep.<key>`, `sweep[2].<key>`).
    fn origin(&self, grid: &str, key: &str) -> String {
        if self.search.space.contains_key(key) {
            format!("search.space.{key}")
        } else {
            format!("{grid}.{key}")
        }
    }

    /// The swept and searched paths, in the order grid points list them.
    pub fn swept_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.search.space.keys().cloned().collect();
        keys.extend(self.swept_grid_keys());
        keys
    }

    /// The `[sweep]` paths (of every grid), sorted.
    pub(super) fn swept_grid_keys(&self) -> Vec<String> {
        let mut flat = Vec::new();
        for (_, table) in self.sweep.grids() {
            flatten_sweep(table, "", &mut flat);
        }
        let mut keys: Vec<String> = flat.into_iter().map(|(k, _)| k).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}
