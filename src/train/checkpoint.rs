//! Checkpoints: G, D, both optimizers' state and the run's config, written atomically.
//!
//! A checkpoint is a directory `checkpoints/step-NNNNNNNN/` holding `generator.bpk`,
//! `discriminator.bpk`, `generator-optim.bpk`, `discriminator-optim.bpk` (burnpack) and
//! `checkpoint.json`. It is assembled under a temporary name, its files flushed to disk, and
//! renamed into place, so a directory with the final name is complete even after a power cut.
//! `checkpoint.json` holds each file's XXH3-128 (`checksums`; MD5s under `files` in checkpoints
//! of earlier releases), checked before loading: a checkpoint damaged afterwards is refused as
//! [`Corrupt`], and resuming sets it aside for the one before.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::data::fetch::md5_hex;
use crate::fsutil::temp_sibling;
use crate::model::{Discriminator, Generator};
use crate::spec::RunConfig;

const META: &str = "checkpoint.json";
const GENERATOR: &str = "generator.bpk";
/// The moving average of G's weights (`train.g_ema`), when the run keeps one.
const GENERATOR_EMA: &str = "generator-ema.bpk";
/// The power-iteration vectors of `model.spectral_norm`.
const SPECTRAL: &str = "spectral-norm.json";
const DISCRIMINATOR: &str = "discriminator.bpk";
const GENERATOR_OPTIM: &str = "generator-optim.bpk";
const DISCRIMINATOR_OPTIM: &str = "discriminator-optim.bpk";

/// What `checkpoint.json` records besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub step: u64,
    pub config: RunConfig,
    /// The LeNet-FID of this step, in the run's best checkpoint (`best/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fid: Option<f64>,
    /// The run's training time up to this checkpoint, in seconds over all its sessions (none
    /// in checkpoints written before it was kept: a run resumed from one counts from there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// The runner that wrote it ([`crate::VERSION`]; none in checkpoints of earlier releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// Each file beside it -> the hex of its XXH3-128, filled in by [`save`]. A field of its own:
    /// earlier releases, which know only `files`, read these checkpoints as written before
    /// checksums (checked by parsing them) rather than as damaged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
    /// Each file beside it -> its MD5, in checkpoints of earlier releases (both maps are empty
    /// in checkpoints written before checksums, which are then checked only by parsing them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// A checkpoint whose content is damaged or incomplete (as opposed to one that could not be
/// read at all, an I/O error): the error's message says which file and how.
#[derive(Debug)]
pub struct Corrupt(pub String);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Corrupt {}

/// Whether `err` says a checkpoint is damaged (rather than unreadable or incompatible).
pub fn is_corrupt(err: &anyhow::Error) -> bool {
    err.downcast_ref::<Corrupt>().is_some()
}

/// The training state a checkpoint holds.
pub struct TrainingState<'a> {
    pub generator: &'a Generator,
    pub generator_ema: Option<&'a Generator>,
    pub discriminator: &'a Discriminator,
    pub spectral: Option<&'a crate::train::spectral::SpectralNorm>,
    pub generator_optim: &'a ModuleOptimizer,
    pub discriminator_optim: &'a ModuleOptimizer,
}

/// The largest checkpoint file read: far beyond the largest model a run may train (a run
/// is refused before it starts when it would not fit in memory).
const MAX_FILE_BYTES: u64 = 16 << 30;

/// The directory that holds a run's checkpoints.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn step_dir(run_dir: &Path, step: u64) -> PathBuf {
    checkpoints_dir(run_dir).join(format!("step-{step:08}"))
}

/// The run's best checkpoint: the state at its lowest-FID evaluation (kept apart from the
/// periodic checkpoints, so pruning never removes it and resuming never starts from it).
pub fn best_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("best")
}

/// Writes a checkpoint for `step` and returns its directory.
pub fn save(
    run_dir: &Path,
    meta: &CheckpointMeta,
    state: TrainingState,
) -> anyhow::Result<PathBuf> {
    save_to(step_dir(run_dir, meta.step), meta, state)
}

/// Writes the run's best checkpoint (replacing the previous best) and returns its directory.
pub fn save_best(
    run_dir: &Path,
    meta: &CheckpointMeta,
    state: TrainingState,
) -> anyhow::Result<PathBuf> {
    save_to(best_dir(run_dir), meta, state)
}

/// The metadata of the run's best checkpoint (its step and FID), if it has one.
pub fn best_meta(run_dir: &Path) -> Option<CheckpointMeta> {
    read_meta(&best_dir(run_dir)).ok()
}

/// The FID of the run's best checkpoint, if it has one.
pub fn best_fid(run_dir: &Path) -> Option<f64> {
    best_meta(run_dir)?.fid
}

/// Makes the checkpoint in `dir`, which `runner eval` scored `fid` after training, the best
/// state of the run in `run_dir`: its files, checked against their checksums, written again
/// as `best/` with that FID, the way training keeps its best. Only the process holding the
/// run directory's lock may call it.
pub fn keep_as_best(run_dir: &Path, dir: &Path, fid: f64) -> anyhow::Result<PathBuf> {
    let opened = Opened::open(dir)?;
    let names = [
        GENERATOR,
        DISCRIMINATOR,
        GENERATOR_OPTIM,
        DISCRIMINATOR_OPTIM,
        SPECTRAL,
        GENERATOR_EMA,
    ];
    let files = (names.into_iter().filter(|name| opened.has(name)))
        .map(|name| Ok((name, opened.read(name)?.to_vec())))
        .collect::<anyhow::Result<_>>()?;
    let meta = CheckpointMeta {
        fid: Some(fid),
        ..opened.meta
    };
    write_checkpoint(best_dir(run_dir), &meta, files)
}

fn save_to(
    target: PathBuf,
    meta: &CheckpointMeta,
    state: TrainingState,
) -> anyhow::Result<PathBuf> {
    let module_bytes = |m: ModuleRecord| m.into_bytes().map_err(|e| anyhow::anyhow!("{e}"));
    let optim_bytes = |o: &ModuleOptimizer| {
        let bytes = o.into_bytes().map_err(|e| anyhow::anyhow!("{e}"))?;
        in_name_order(bytes).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let mut files: Vec<(&str, Vec<u8>)> = vec![
        (
            GENERATOR,
            module_bytes(state.generator.clone().into_record())?.to_vec(),
        ),
        (
            DISCRIMINATOR,
            module_bytes(state.discriminator.clone().into_record())?.to_vec(),
        ),
        (
            GENERATOR_OPTIM,
            optim_bytes(state.generator_optim)?.to_vec(),
        ),
        (
            DISCRIMINATOR_OPTIM,
            optim_bytes(state.discriminator_optim)?.to_vec(),
        ),
    ];
    if let Some(norm) = state.spectral {
        files.push((SPECTRAL, norm.to_bytes()));
    }
    if let Some(average) = state.generator_ema {
        files.push((
            GENERATOR_EMA,
            module_bytes(average.clone().into_record())?.to_vec(),
        ));
    }
    write_checkpoint(target, meta, files)
}

/// A burnpack file's bytes with its tensors in the order of their names. burn writes an
/// optimizer's state in the order of a hash map, another in every process; with the parameter
/// ids [`crate::model::ids`] fixes, sorting makes the same state the same bytes.
fn in_name_order(bytes: Bytes) -> Result<Bytes, burn_pack::Error> {
    let reader = burn_pack::Reader::from_bytes(bytes)?;
    let (scalars, metadata) = (reader.scalars().clone(), reader.metadata().clone());
    let mut tensors = reader.into_tensors()?;
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut writer = burn_pack::Writer::new(tensors);
    for (key, value) in scalars {
        writer = writer.with_scalar(&key, value);
    }
    for (key, value) in metadata {
        writer = writer.with_metadata(&key, &value);
    }
    writer.into_bytes()
}

/// Writes `files` and their checksums in `meta` as the checkpoint `target`: assembled under a
/// temporary name, flushed to disk and renamed into place (replacing what was there).
fn write_checkpoint(
    target: PathBuf,
    meta: &CheckpointMeta,
    mut files: Vec<(&str, Vec<u8>)>,
) -> anyhow::Result<PathBuf> {
    let tmp = temp_sibling(&target);
    let write = || -> anyhow::Result<()> {
        crate::fsutil::create_dir_all(&tmp)?;
        let mut meta = meta.clone();
        meta.files.clear();
        meta.checksums = files
            .iter()
            .map(|(name, bytes)| (name.to_string(), checksum(bytes)))
            .collect();
        files.push((META, serde_json::to_vec_pretty(&meta)?));
        for (name, bytes) in files {
            write_synced(&tmp.join(name), &bytes)?;
        }
        crate::fsutil::replace_dir(&tmp, &target)?;
        Ok(sync_dir(
            target
                .parent()
                .expect("a checkpoint directory has a parent"),
        )?)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })
        .with_context(|| format!("writing checkpoint {}", target.display()))?;
    Ok(target)
}

/// Writes `bytes` to a new file and flushes it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes a directory's entries (a rename into it) to disk.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The complete checkpoints of a run, oldest first.
pub fn list(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(checkpoints_dir(run_dir)) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(META).is_file().then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Whether the run's newest checkpoint is whole (every file as written): a finished run
/// whose final checkpoint is damaged is not done, and resuming it rebuilds that checkpoint.
pub fn newest_is_intact(run_dir: &Path) -> bool {
    list(run_dir)
        .pop()
        .is_some_and(|(_, dir)| verify(&dir).is_ok())
}

/// The step of the run's newest whole checkpoint, the one training resumes from.
pub fn resumable_step(run_dir: &Path) -> Option<u64> {
    list(run_dir)
        .into_iter()
        .rev()
        .find_map(|(step, dir)| verify(&dir).is_ok().then_some(step))
}

/// Deletes the temporary directories of checkpoints whose writer was killed while saving or
/// deleting them (they are never resumed from, and a checkpoint can take hundreds of
/// megabytes). Only the process holding the run directory's lock may call it: no other is
/// writing there.
pub fn remove_unfinished(run_dir: &Path) -> anyhow::Result<()> {
    crate::fsutil::remove_temp_dirs(&checkpoints_dir(run_dir), "step-")?;
    crate::fsutil::remove_temp_dirs(run_dir, "best.")
}

/// Deletes all but the newest `keep` checkpoints (always keeping `protect`); returns the
/// steps removed.
pub fn prune(run_dir: &Path, keep: usize, protect: u64) -> anyhow::Result<Vec<u64>> {
    let all = list(run_dir);
    let excess = all.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for (step, path) in all.into_iter().take(excess) {
        if step != protect {
            // At once: `generate` or `eval` on a run still training finds it whole or gone.
            crate::fsutil::remove_dir(&path)
                .with_context(|| format!("removing {}", path.display()))?;
            removed.push(step);
        }
    }
    Ok(removed)
}

/// Whether `path` names one checkpoint: its directory or its `checkpoint.json`.
pub fn is_checkpoint(path: &Path) -> bool {
    is_meta(path) || path.join(META).is_file()
}

fn is_meta(path: &Path) -> bool {
    path.is_file() && path.file_name().is_some_and(|n| n == META)
}

/// A checkpoint directory found from what a user names: a checkpoint directory, its
/// `checkpoint.json`, or a run directory (its latest checkpoint).
pub fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    if is_meta(path) {
        return Ok(path.parent().expect("a file has a parent").to_path_buf());
    }
    if path.join(META).is_file() {
        return Ok(path.to_path_buf());
    }
    // A run still training renames its newest checkpoint in and deletes the one before: one
    // listing of the directory taken in between can miss both, so an empty one is retaken.
    for _ in 0..20 {
        if let Some((_, latest)) = list(path).pop() {
            return Ok(latest);
        }
        if !checkpoints_dir(path).is_dir() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    bail!(
        "{}: not a checkpoint, nor a run directory with checkpoints (a run writes one every \
         `log.checkpoint_every` steps and when it ends)",
        path.display()
    )
}

pub fn read_meta(dir: &Path) -> anyhow::Result<CheckpointMeta> {
    let path = dir.join(META);
    let text = read_file(&path)?;
    serde_json::from_slice(&text).map_err(|e| {
        Corrupt(format!(
            "{}: corrupt checkpoint metadata: {e}",
            path.display()
        ))
        .into()
    })
}

/// A file's checksum as `checkpoint.json` records it: the hex of its XXH3-128. Damage, not
/// tampering, is what it guards against, and it hashes at memory speed.
fn checksum(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// Reads the checkpoint in `dir` and checks every file it lists against its checksum; returns its
/// metadata. A damaged or missing file is [`Corrupt`].
pub fn verify(dir: &Path) -> anyhow::Result<CheckpointMeta> {
    let opened = Opened::open(dir)?;
    for name in opened.meta.checksums.keys().chain(opened.meta.files.keys()) {
        opened.read(name)?;
    }
    Ok(opened.meta)
}

/// A checkpoint opened for loading: its metadata, and its files each read once, when loaded,
/// and checked against the checksum the metadata records (so loading reads a file once, and
/// checks only what it loads: `generate` does not read D).
pub struct Opened {
    pub dir: PathBuf,
    pub meta: CheckpointMeta,
}

impl Opened {
    pub fn open(dir: &Path) -> anyhow::Result<Opened> {
        Ok(Opened {
            dir: dir.to_path_buf(),
            meta: read_meta(dir)?,
        })
    }

    /// The bytes of the file `name`; [`Corrupt`] when missing or not as written.
    fn read(&self, name: &str) -> anyhow::Result<Bytes> {
        let path = self.dir.join(name);
        let bytes = read_file(&path)?;
        let intact = match (self.meta.checksums.get(name), self.meta.files.get(name)) {
            (Some(recorded), _) => checksum(&bytes) == *recorded,
            (None, Some(md5)) => md5_hex(&bytes) == *md5,
            (None, None) => true,
        };
        if !intact {
            return Err(Corrupt(format!(
                "{}: its content changed after it was written (checksum mismatch)",
                path.display()
            ))
            .into());
        }
        Ok(Bytes::from_bytes_vec(bytes))
    }

    /// Whether the checkpoint holds the file `name` (a listed file that went missing counts:
    /// reading it says so).
    fn has(&self, name: &str) -> bool {
        self.meta.checksums.contains_key(name)
            || self.meta.files.contains_key(name)
            || self.dir.join(name).is_file()
    }

    /// Loads the burnpack file `name` into `module`.
    fn module<M: Module>(&self, module: M, name: &str) -> anyhow::Result<M> {
        let source = self.dir.join(name).display().to_string();
        load_module_bytes(module, self.read(name)?, &source)
    }

    /// Loads the generator's weights into `generator` (built from the checkpoint's config):
    /// the moving average when the checkpoint has one, unless `raw`. Says which it loaded
    /// (`true`: the average).
    pub fn generator(&self, generator: Generator, raw: bool) -> anyhow::Result<(Generator, bool)> {
        if !raw && self.has(GENERATOR_EMA) {
            return Ok((self.module(generator, GENERATOR_EMA)?, true));
        }
        Ok((self.module(generator, GENERATOR)?, false))
    }

    /// The moving average of G, loaded into `template`.
    pub fn generator_ema(&self, template: Generator) -> anyhow::Result<Generator> {
        self.module(template, GENERATOR_EMA)
    }

    /// The discriminator's weights, loaded into `template`.
    pub fn discriminator(&self, template: Discriminator) -> anyhow::Result<Discriminator> {
        self.module(template, DISCRIMINATOR)
    }

    /// The spectral normalization vectors, for `discriminator`'s weights.
    pub fn spectral(
        &self,
        discriminator: &Discriminator,
    ) -> anyhow::Result<crate::train::spectral::SpectralNorm> {
        let bytes = self.read(SPECTRAL)?;
        crate::train::spectral::SpectralNorm::from_bytes(&bytes, discriminator).map_err(|e| {
            Corrupt(format!(
                "{}: corrupt: {e}",
                self.dir.join(SPECTRAL).display()
            ))
            .into()
        })
    }

    /// Everything needed to continue training.
    pub fn training(
        &self,
        generator: Generator,
        discriminator: Discriminator,
        generator_optim: ModuleOptimizer,
        discriminator_optim: ModuleOptimizer,
    ) -> anyhow::Result<(Generator, Discriminator, ModuleOptimizer, ModuleOptimizer)> {
        let optim = |o: ModuleOptimizer, name: &str| -> anyhow::Result<ModuleOptimizer> {
            Ok(o.from_bytes(self.read(name)?)
                .map_err(|e| Corrupt(format!("{}: {e}", self.dir.join(name).display())))?)
        };
        Ok((
            self.module(generator, GENERATOR)?,
            self.module(discriminator, DISCRIMINATOR)?,
            optim(generator_optim, GENERATOR_OPTIM)?,
            optim(discriminator_optim, DISCRIMINATOR_OPTIM)?,
        ))
    }
}

/// Moves a corrupt checkpoint out of the run's checkpoints (to `step-N.corrupt-<unix time>`
/// beside it: kept, never resumed from); returns where it went.
pub fn set_aside(dir: &Path) -> anyhow::Result<PathBuf> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let aside = dir.with_file_name(format!("{name}.corrupt-{now}"));
    std::fs::rename(dir, &aside)
        .with_context(|| format!("moving {} to {}", dir.display(), aside.display()))?;
    Ok(aside)
}

/// A checkpoint file's bytes; a missing file is [`Corrupt`] (the checkpoint is incomplete).
fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::ErrorKind;
    // Not a regular file (a link to /dev/zero would be read until memory ran out) is damage.
    crate::fsutil::read_regular_file(path, MAX_FILE_BYTES).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Corrupt(format!("{}: missing", path.display())).into(),
        ErrorKind::InvalidInput | ErrorKind::FileTooLarge => {
            Corrupt(format!("{}: {e}", path.display())).into()
        }
        _ => anyhow::anyhow!("reading {}: {e}", path.display()),
    })
}

/// Loads the burnpack file `dir/name` into `module` (errors name the file).
pub(crate) fn load_module<M: Module>(module: M, dir: &Path, name: &str) -> anyhow::Result<M> {
    let path = dir.join(name);
    let bytes = Bytes::from_bytes_vec(read_file(&path)?);
    load_module_bytes(module, bytes, &path.display().to_string())
}

/// Loads burnpack bytes into `module`; errors name `source`.
pub(crate) fn load_module_bytes<M: Module>(
    module: M,
    bytes: Bytes,
    source: &str,
) -> anyhow::Result<M> {
    let corrupt = |e: &dyn std::fmt::Display| Corrupt(format!("{source}: {e}"));
    let record = ModuleRecord::from_bytes(bytes).map_err(|e| corrupt(&e))?;
    Ok(module.try_load_record(record).map_err(|e| corrupt(&e))?)
}

/// Whether two configs train the same, step for step: everything but the length of training
/// and the logging settings is the same.
pub fn same_training(a: &RunConfig, b: &RunConfig) -> bool {
    let essence = |c: &RunConfig| {
        let mut c = c.clone();
        (c.train.steps, c.train.epochs, c.log) = (None, None, Default::default());
        c
    };
    essence(a) == essence(b)
}

/// Makes sure a checkpoint can continue a run of `config` ([`same_training`]).
pub fn check_compatible(
    meta: &CheckpointMeta,
    config: &RunConfig,
    dir: &Path,
) -> anyhow::Result<()> {
    if !same_training(&meta.config, config) {
        bail!(
            "{}: the checkpoint was written by a different config; use a new run directory or \
             remove the old checkpoints",
            dir.display()
        );
    }
    Ok(())
}
